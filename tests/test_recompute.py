"""Gradient checkpointing: the recomputation replays the forward pass's coupling modes and
LoRA adapter, so gradients match those of the plain model."""

import pytest
import torch

from r3mem import R3MemConfig, R3MemModel
from r3mem.recompute import enable_gradient_checkpointing
from r3mem.training.stages import objective
from r3mem.training.train import window_loss

from .conftest import VOCAB, make_base, randomize

SMALL = dict(num_memory_tokens=4, segment_length=8, adapter_rank=4, lora_rank=4)


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 2, 8), generator=generator)
    entities = torch.randint(0, VOCAB, (2, 2, 5), generator=generator)
    return {
        "ids": ids,
        "mask": torch.ones_like(ids),
        "entities": entities,
        "entity_mask": torch.ones_like(entities),
    }


def gradients(config: R3MemConfig, checkpoint: str) -> dict[str, torch.Tensor]:
    model = R3MemModel.from_base(make_base("llama"), config)
    randomize(model)
    if checkpoint == "r3mem":
        enable_gradient_checkpointing(model)
    elif checkpoint == "plain":  # what a user enabling it on the base would get
        model.base.activation_checkpointing_enable()
    model.train()
    loss, _ = window_loss(model, batch(), objective(config))
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("decoder", ["inverse", "separate"])
def test_checkpointed_gradients_equal_plain_ones(decoder):
    config = R3MemConfig(**SMALL, decoder=decoder, doc_cue_length=3)
    expected, got = gradients(config, "none"), gradients(config, "r3mem")
    assert expected.keys() == got.keys() and len(got) > 10
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_plain_checkpointing_would_give_wrong_gradients():
    """The control: without the replay, the separate decoder's read path is recomputed with
    the encoder's LoRA live, and its gradients differ."""
    config = R3MemConfig(**SMALL, decoder="separate", doc_cue_length=3)
    expected, plain = gradients(config, "none"), gradients(config, "plain")
    assert any(not torch.allclose(plain[n], g, rtol=1e-3, atol=1e-5) for n, g in expected.items())


def test_checkpointing_is_on_and_refused_for_kv():
    model = R3MemModel.from_base(make_base("llama"), R3MemConfig(**SMALL))
    enable_gradient_checkpointing(model)
    assert all(layer.gradient_checkpointing for layer in model.base.model.layers)
    kv = R3MemModel.from_base(make_base("llama"), R3MemConfig(**SMALL, memory_form="kv"))
    with pytest.raises(ValueError, match="memory_form='embedding'"):
        enable_gradient_checkpointing(kv)
