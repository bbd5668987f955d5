"""The ``kv`` memory form: memory slots held as every layer's keys and values (DESIGN 2.2).

A slot is packed as one row of width ``layers x 2 x kv_heads x head_dim``, so a ``kv`` memory
has the same ``[batch, m, width]`` shape as an ``embedding`` one, ``2 x layers`` times wider
for multi-head attention, and can be stored, batched and compared the same way.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache, PretrainedConfig


def heads(base_model: nn.Module) -> int:
    """Key/value heads per layer, read off one cached step (no per-architecture table)."""
    device = base_model.get_input_embeddings().weight.device
    with torch.no_grad():
        cache = base_model(
            input_ids=torch.zeros(1, 1, dtype=torch.long, device=device)
        ).past_key_values
    return cache.layers[0].keys.shape[1]


def pack(cache: DynamicCache, slots: int) -> torch.Tensor:
    """The last ``slots`` positions of every layer's keys and values -> ``[B, slots, width]``."""
    rows = []
    for layer in cache.layers:
        for tensor in (layer.keys, layer.values):  # [B, heads, seq, head_dim]
            rows.append(tensor[:, :, -slots:].transpose(1, 2).flatten(2))  # [B, slots, h*hd]
    return torch.cat(rows, dim=-1)


def unpack(memory: torch.Tensor, layers: int, heads: int, config: PretrainedConfig) -> DynamicCache:
    """A fresh cache holding ``memory`` ``[B, m, width]`` at positions 0..m-1 of every layer."""
    batch, slots, width = memory.shape
    parts = memory.view(batch, slots, layers, 2, heads, width // (layers * 2 * heads))
    cache = DynamicCache(config=config)
    for index in range(layers):
        keys = parts[:, :, index, 0].transpose(1, 2)  # [B, heads, m, head_dim]
        values = parts[:, :, index, 1].transpose(1, 2)
        cache.update(keys, values, index)
    return cache
