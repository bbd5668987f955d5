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


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> str:
    """A tiny base model and tokenizer trained for a few steps on the packaged sample."""
    from r3mem.training.base import train_base

    from .test_train_base import tiny_config

    return str(train_base(tiny_config(tmp_path_factory.mktemp("base"), steps=3, save_every=3)))


@pytest.fixture(scope="session")
def adapter_dir(base_dir, tmp_path_factory):
    """R³Mem adapters trained for two steps on that base: a whole model directory to load."""
    from r3mem.training.train import train

    from .test_train import adapter_config

    out = tmp_path_factory.mktemp("adapter") / "run"
    train(adapter_config(base_dir, out, steps=2))
    return out / "adapter"


@pytest.fixture(scope="session")
def wide_adapter_dir(base_dir, tmp_path_factory):
    """Like ``adapter_dir`` with 64-token segments: room for a dated conversation header."""
    import dataclasses

    from r3mem.training.train import train

    from .test_train import adapter_config

    out = tmp_path_factory.mktemp("wide") / "run"
    config = adapter_config(base_dir, out, steps=2)
    train(dataclasses.replace(config, r3mem={**config.r3mem, "segment_length": 64}))
    return out / "adapter"


@pytest.fixture(autouse=True)
def tiny_reader(request, monkeypatch):
    """Tests answer with their tiny local models; SmolLM2, the users' default reader when
    installed, is tested in test_pretrained alone (loading it takes seconds a test)."""
    if not request.module.__name__.endswith("test_pretrained"):
        monkeypatch.setattr("r3mem.reader.available", lambda name: False)
