"""A safetensors file written part by part, so that a tensor stored as many pieces (a memory
bank's entries) is never stacked into one more copy in memory first.

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header size,
a JSON header naming each tensor's dtype, shape and byte range, then the bytes, in order.
``safetensors.safe_open`` / ``load_file`` read what this writes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import torch

DTYPES = {
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.int64: "I64",
    torch.int32: "I32",
}


def all_finite(tensor: torch.Tensor) -> bool:
    """No inf or NaN in ``tensor`` (float8 has no ``isfinite`` of its own: checked widened)."""
    return bool(torch.isfinite(tensor.float() if tensor.element_size() == 1 else tensor).all())


def write_tensors(
    path: str | Path, tensors: dict[str, Sequence[torch.Tensor]], metadata: dict[str, str]
) -> None:
    """Write each named tensor, given as the pieces ``torch.stack`` would join (all of one
    shape and dtype, at least one), to the safetensors file ``path``."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, pieces in tensors.items():
        first = pieces[0]
        if any(p.shape != first.shape or p.dtype != first.dtype for p in pieces):
            raise ValueError(f"{name}: pieces of different shapes or dtypes")
        size = len(pieces) * first.numel() * first.element_size()
        shape = [len(pieces), *first.shape]
        span = [offset, offset + size]
        header[name] = {"dtype": DTYPES[first.dtype], "shape": shape, "data_offsets": span}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for pieces in tensors.values():
            for piece in pieces:
                flat = piece.detach().cpu().contiguous().reshape(-1)  # 0-dim pieces too
                handle.write(flat.view(torch.uint8).numpy().data)
