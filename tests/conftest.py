"""Tiny causal LMs built from local configs: no download, a few thousand parameters each."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 64


def make_base(arch: str, *, hidden: int = 32, layers: int = 2, vocab: int = VOCAB, seed: int = 0):
    """A freshly initialised tiny model of the given architecture, in eval mode."""
    torch.manual_seed(seed)
    # A wider init than the 0.02 default: with the base frozen, a random 0.02 LM head caps every
    # logit near 0.6, and no adapter could move a loss far from log(vocab).
    common = dict(vocab_size=vocab, num_attention_heads=4, max_position_embeddings=256)
    common |= dict(initializer_range=0.2)
    decoder = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers)
    decoder |= dict(num_key_value_heads=2, **common)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**decoder))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**decoder))
    elif arch == "mistral":
        model = MistralForCausalLM(MistralConfig(**decoder))
    elif arch == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab,
                n_embd=hidden,
                n_layer=layers,
                n_head=4,
                n_positions=256,
                bos_token_id=0,
                eos_token_id=0,
            )
        )
    else:
        raise ValueError(arch)
    return model.eval()


ARCHS = ["llama", "qwen2", "mistral", "gpt2"]


@pytest.fixture(params=ARCHS)
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
