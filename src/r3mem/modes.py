"""How a segment reads and renews its memory in each ``memory_mode`` (``config.MEMORY_MODES``).

The cell reads ``[M_{t-1}] ⊕ x_t ⊕ [W]`` in every mode; the modes differ in what M is and
how the cell's output becomes the next one (L: segment length, k: window segments):

    recurrent:  M_t = written                             m vectors (R³Mem, RMT, ICAE)
    accumulate: M_t = (M_{t-1} ⊕ written)[-cap·m:]        summaries side by side (AutoCompressor)
    window:     M_t = (M_{t-1} ⊕ embed(x_t))[-(k-1)·L:]   raw past tokens, no write tokens
    none:       M_t = M_{t-1} = []                        the segment alone, no write tokens

A window's padding slots are zero vectors: no token embedding or written vector is exactly
zero, so :func:`slot_mask` tells them apart with no mask carried beside the memory.
"""

from __future__ import annotations

import torch

from .config import R3MemConfig


def writes(config: R3MemConfig) -> bool:
    """Whether the cell appends write tokens: only the modes that keep what they write do."""
    return config.memory_mode in ("recurrent", "accumulate")


def initial(config: R3MemConfig, learned: torch.Tensor, batch: int) -> torch.Tensor:
    """The memory before any text ``[B, n, d]``: the learned vectors, or empty for raw modes."""
    if writes(config):
        return learned.unsqueeze(0).expand(batch, -1, -1)
    return learned.new_zeros(batch, 0, learned.shape[-1])


def slot_mask(memory: torch.Tensor) -> torch.Tensor:
    """``[B, n]``: 1 where a slot holds a vector, 0 for a window's zero padding."""
    return memory.ne(0).any(-1).long()


def renew(
    config: R3MemConfig,
    memory: torch.Tensor,
    written: torch.Tensor,
    embeds: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """The memory after one segment, from the old one ``[B, n, d]``, the vectors written at the
    write positions ``[B, m, d]`` and the segment's embeddings ``[B, T, d]`` with their mask."""
    mode = config.memory_mode
    if mode == "recurrent":
        return written
    if mode == "accumulate":
        grown = torch.cat([memory, written], dim=1)  # [B, n + m, d]
        return _last(grown, config.summary_segments * config.num_memory_tokens)
    if mode == "window":
        tokens = torch.cat([memory, embeds * mask[..., None].to(embeds.dtype)], dim=1)
        order = slot_mask(tokens).argsort(dim=1, stable=True)  # padding first, tokens in order
        packed = tokens.gather(1, order[..., None].expand_as(tokens))  # [B, n + T, d]
        return _last(packed, (config.window_segments - 1) * config.segment_length)
    return memory


def _last(memory: torch.Tensor, slots: int) -> torch.Tensor:
    """The last ``slots`` slots (all of them when fewer; none when ``slots`` is 0)."""
    return memory[:, max(memory.shape[1] - slots, 0) :]
