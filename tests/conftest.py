"""Shared helpers: tiny models from local configs (no download) and random adapter weights."""

from __future__ import annotations

import pytest
import torch

from r3mem.tiny import ARCHITECTURES, tiny_base

VOCAB = 64


def make_base(arch: str, **kwargs):
    return tiny_base(arch, vocab=kwargs.pop("vocab", VOCAB), **kwargs)


@pytest.fixture(params=ARCHITECTURES)
def arch(request) -> str:
    return request.param


def randomize(module: torch.nn.Module, scale: float = 0.5, seed: int = 1) -> None:
    """Give every trainable weight a random value, so tests don't pass only because the
    zero-initialised adapters are identities. Matrices get std ``scale / sqrt(fan_in)``: at
    scale 1 each layer keeps the size of its input, as a trained layer roughly does."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.requires_grad:
                fan_in = param.shape[-1] if param.dim() > 1 else 100
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.copy_(noise * scale / fan_in**0.5)
