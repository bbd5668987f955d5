"""Memory forms: what a segment reads before its text, and how its memory renews.

One strategy per valid (``memory_form``, ``memory_mode``) of R3MemConfig (DESIGN 2.2, and the
baselines of DESIGN 4); the cell (:class:`r3mem.cell.MemoryCell`) asks its strategy and
branches on neither setting (L: segment length, k: window segments, m: memory tokens):

    strategy            the memory                               read before a segment
    RecurrentEmbedding  m vectors, rewritten (R³Mem, RMT, ICAE)   the vectors, as embeddings
    RecurrentKV         m slots of every layer's keys and values  the document tag, over them
    Accumulate          every segment's m vectors, at most        the vectors, as embeddings
                        summary_segments of them (AutoCompressor)
    Window              the raw past (k-1)·L token embeddings     the embeddings
    NoMemory            nothing                                   nothing

A ``kv`` slot is packed as one row of width ``layers × 2 × kv_heads × head_dim``, so every
memory has the shape ``[batch, slots, width]`` and is stored, batched and compared alike. A
window's padding slots are zero vectors: no token embedding or written vector is exactly
zero, so :func:`slot_mask` tells them apart with no mask carried beside the memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from .config import R3MemConfig
from .generation import CACHE


class Cell(Protocol):
    """What a strategy uses of the memory cell (:class:`r3mem.cell.MemoryCell`)."""

    config: R3MemConfig
    initial_memory: torch.Tensor
    embed_norm: torch.Tensor

    def run(self, direction: str, **inputs: Any) -> Any: ...

    def tag(self, level: str, batch: int) -> torch.Tensor: ...


@dataclass
class Context:
    """What the cell reads before a segment's text: embeddings ``[B, n, d]`` with their mask
    ``[B, n]``, after a KV cache ``past`` (None: no cache)."""

    embeds: torch.Tensor
    mask: torch.Tensor
    past: DynamicCache | None = None

    @property
    def cached(self) -> int:
        """Positions held in ``past``."""
        return 0 if self.past is None else self.past.get_seq_length()


class MemoryForm:
    """The embedding form of a recurrent memory: m vectors fed back as input embeddings, the
    last hidden states at the write positions rescaled to the embeddings' norm."""

    writes = True  # the cell appends the m write tokens and renews from what they hold
    caches = False  # what the write tokens hold is read off the pass's KV cache

    def initial(self, cell: Cell, batch: int) -> torch.Tensor:
        """The memory before any text ``[B, n, width]``."""
        return cell.initial_memory.unsqueeze(0).expand(batch, -1, -1)

    def context(self, cell: Cell, memory: torch.Tensor, dtype: torch.dtype) -> Context:
        """What a segment's compression reads before its text (``dtype``: the text's)."""
        return Context(memory.to(dtype), slot_mask(memory))

    def written(
        self, cell: Cell, hidden: torch.Tensor, past: DynamicCache, dtype: torch.dtype
    ) -> torch.Tensor:
        """What the write positions hold ``[B, m, width]``, from their last hidden states
        ``hidden`` ``[B, m, d]`` (and the pass's cache ``past``)."""
        written = F.normalize(hidden.float(), dim=-1) * cell.embed_norm  # the embeddings' scale
        return written.to(dtype)

    def renew(
        self, memory: torch.Tensor, written: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The memory after one segment, from the old one, what was written and the segment's
        embeddings ``[B, T, d]`` with their mask."""
        return written

    def reading(self, cell: Cell, memory: torch.Tensor, tag: torch.Tensor) -> Context:
        """What the decoder reads before the text it expands: ``[M] ⊕ [level tag]``."""
        embeds = torch.cat([memory, tag], dim=1)
        return Context(embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=tag.device))


RecurrentEmbedding = MemoryForm


class RecurrentKV(MemoryForm):
    """The kv form: the write tokens' keys and values at every layer, attended to directly
    (500xCompressor, Activation Beacon). A segment reads ``[document tag] ⊕ x ⊕ [W]`` over
    the cache that holds M; the initial memory is what the encoder computes for the learned
    initial vectors, so both forms train the same parameters.

    Its reach is bounded: a layer's slots come from hidden states that read the past only
    through the layers below, and layer 0's from the write embeddings alone, so the memory
    holds the last ``layers - 1`` segments, not an unbounded history (tested)."""

    caches = True

    def __init__(self, base: nn.Module, layers: int) -> None:
        self.layers = layers
        self.heads = kv_heads(base)
        self.config = base.config

    def initial(self, cell: Cell, batch: int) -> torch.Tensor:
        vectors = super().initial(cell, batch)
        out = cell.run("compress", inputs_embeds=vectors, use_cache=True)
        return pack(getattr(out, CACHE), vectors.shape[1])

    def context(self, cell: Cell, memory: torch.Tensor, dtype: torch.dtype) -> Context:
        return self.reading(cell, memory, cell.tag("document", memory.shape[0]))

    def written(self, cell, hidden, past, dtype):
        return pack(past, hidden.shape[1])

    def reading(self, cell: Cell, memory: torch.Tensor, tag: torch.Tensor) -> Context:
        mask = torch.ones(tag.shape[:2], dtype=torch.long, device=tag.device)
        return Context(tag, mask, unpack(memory, self.layers, self.heads, self.config))


class Accumulate(MemoryForm):
    """AutoCompressor: every segment's m summary vectors kept side by side, the oldest
    dropped past ``summary_segments`` of them: M_t = (M_{t-1} ⊕ written)[-cap·m:]."""

    def __init__(self, config: R3MemConfig) -> None:
        self.slots = config.summary_segments * config.num_memory_tokens

    def renew(self, memory, written, embeds, mask):
        return _last(torch.cat([memory, written], dim=1), self.slots)


class Window(MemoryForm):
    """Full attention over the raw past: M_t = (M_{t-1} ⊕ embed(x_t))[-(k-1)·L:], padding
    dropped and the kept tokens in order; no write tokens, nothing to decode."""

    writes = False

    def __init__(self, config: R3MemConfig) -> None:
        self.slots = (config.window_segments - 1) * config.segment_length

    def initial(self, cell: Cell, batch: int) -> torch.Tensor:
        return cell.initial_memory.new_zeros(batch, 0, cell.initial_memory.shape[-1])

    def renew(self, memory, written, embeds, mask):
        tokens = torch.cat([memory, embeds * mask[..., None].to(embeds.dtype)], dim=1)
        order = slot_mask(tokens).argsort(dim=1, stable=True)  # padding first, tokens in order
        packed = tokens.gather(1, order[..., None].expand_as(tokens))  # [B, n + T, d]
        return _last(packed, self.slots)

    def reading(self, cell, memory, tag):
        mode = cell.config.memory_mode
        raise ValueError(f"memory_mode='{mode}' keeps no written memory to read back")


class NoMemory(Window):
    """Each segment alone: the memory stays empty."""

    def renew(self, memory, written, embeds, mask):
        return memory


def memory_form(config: R3MemConfig, base: nn.Module, layers: int) -> MemoryForm:
    """The strategy for ``config``'s memory form and mode."""
    if config.memory_mode == "recurrent":
        return RecurrentKV(base, layers) if config.memory_form == "kv" else RecurrentEmbedding()
    return {"accumulate": Accumulate, "window": Window, "none": NoMemory}[config.memory_mode](
        config
    )


def slot_mask(memory: torch.Tensor) -> torch.Tensor:
    """``[B, n]``: 1 where a slot holds a vector, 0 for a window's zero padding."""
    return memory.ne(0).any(-1).long()


def _last(memory: torch.Tensor, slots: int) -> torch.Tensor:
    """The last ``slots`` slots (all of them when fewer; none when ``slots`` is 0)."""
    return memory[:, max(memory.shape[1] - slots, 0) :]


def kv_heads(base_model: nn.Module) -> int:
    """Key/value heads per layer, read off one cached step (no per-architecture table)."""
    device = base_model.get_input_embeddings().weight.device
    with torch.no_grad():
        out = base_model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device))
        cache = getattr(out, CACHE)
    return cache.layers[0].keys.shape[1]


def pack(cache: DynamicCache, slots: int) -> torch.Tensor:
    """The last ``slots`` positions of every layer's keys and values -> ``[B, slots, width]``."""
    rows = []
    for layer in cache.layers:
        for tensor in (layer.keys, layer.values):  # [B, heads, seq, head_dim]
            rows.append(tensor[:, :, -slots:].transpose(1, 2).flatten(2))  # [B, slots, h*hd]
    return torch.cat(rows, dim=-1)


def unpack(memory: torch.Tensor, layers: int, heads: int, config) -> DynamicCache:
    """A fresh cache holding ``memory`` ``[B, m, width]`` at positions 0..m-1 of every layer."""
    batch, slots, width = memory.shape
    parts = memory.view(batch, slots, layers, 2, heads, width // (layers * 2 * heads))
    cache = DynamicCache(config=config)
    for index in range(layers):
        keys = parts[:, :, index, 0].transpose(1, 2)  # [B, heads, m, head_dim]
        values = parts[:, :, index, 1].transpose(1, 2)
        cache.update(keys, values, index)
    return cache
