"""MemoryState: what a write returns and a reconstruct reads, with its own safe save/load."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .config import LEVELS
from .files import atomic_path


def pooled(memory: torch.Tensor) -> torch.Tensor:
    """Mean over the memory slots, in float32: ``[..., m, width] -> [..., width]``; what
    recall compares (and L_ret trains)."""
    return memory.float().mean(dim=-2)


@dataclass(frozen=True)
class MemoryState:
    """A batch of memories.

    memory:      ``[batch, slots, width]``: in the embedding form m vectors of the embedding
                 width; in the kv form m slots of every layer's keys and values; a growing
                 mode's slots (accumulated summaries, a window's past tokens) as many as it
                 keeps (:mod:`r3mem.forms`).
    level:       one of ``LEVELS``: what the memory holds (a document's history, one
                 paragraph); what the decoder is asked for is said where it reads it.
    tokens_seen: how many tokens each row has absorbed (``[batch]``, int64).
    fingerprint: identifies the base model and config that wrote it; reading a memory
                 with another model is refused.
    """

    memory: torch.Tensor
    level: str
    tokens_seen: torch.Tensor
    fingerprint: str

    def __post_init__(self) -> None:
        if self.memory.dim() != 3:
            raise ValueError(
                f"MemoryState.memory must be [batch, m, d], got {tuple(self.memory.shape)}"
            )
        if self.level not in LEVELS:
            raise ValueError(
                f"MemoryState.level must be one of {', '.join(LEVELS)}; got {self.level!r}"
            )
        if self.tokens_seen.shape != (self.memory.shape[0],):
            raise ValueError(
                f"MemoryState.tokens_seen must be [batch={self.memory.shape[0]}], "
                f"got {tuple(self.tokens_seen.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return self.memory.shape[0]

    def detach(self) -> MemoryState:
        """Cut the graph: gradients stop here (truncated BPTT)."""
        return replace(self, memory=self.memory.detach())

    def to(self, *args, **kwargs) -> MemoryState:
        return replace(self, memory=self.memory.to(*args, **kwargs))

    def nbytes(self) -> int:
        return self.memory.numel() * self.memory.element_size()

    def save(self, path: str | Path) -> None:
        """Write to one safetensors file (tensors + JSON metadata); atomic: write, then rename."""
        tensors = {
            "memory": self.memory.detach().contiguous().cpu(),
            "tokens_seen": self.tokens_seen.cpu(),
        }
        meta = {
            "level": self.level,
            "fingerprint": self.fingerprint,
            "format": "r3mem.MemoryState/1",
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"r3mem": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path) -> MemoryState:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such memory file")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {})["r3mem"])
            return cls(
                memory=tensors["memory"],
                level=meta["level"],
                tokens_seen=tensors["tokens_seen"],
                fingerprint=meta["fingerprint"],
            )
        except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as err:
            raise ValueError(f"{path}: not a valid r3mem memory file ({err})") from err
