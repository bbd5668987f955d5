"""Tiny causal LMs built from local configs, for tests, benchmarks and quick experiments.

No download: each architecture is instantiated from a small config with random weights.
"""

from __future__ import annotations

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

ARCHITECTURES = ("llama", "qwen2", "mistral", "gpt2")


def tiny_base(
    arch: str,
    *,
    hidden: int = 32,
    layers: int = 2,
    vocab: int = 64,
    seed: int = 0,
    initializer_range: float = 0.2,
) -> PreTrainedModel:
    """A freshly initialised tiny model of ``arch``, in eval mode.

    The default init is wider than Hugging Face's 0.02: with the base frozen, a random 0.02 LM
    head caps every logit near 0.6, and no adapter could move a loss far from log(vocab).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}; got {arch!r}")
    torch.manual_seed(seed)
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=4, n_positions=256,
            bos_token_id=0, eos_token_id=0, initializer_range=initializer_range,
        )  # fmt: skip
        return GPT2LMHeadModel(config).eval()
    config_class, model_class = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
    }[arch]
    config = config_class(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, initializer_range=initializer_range,
    )  # fmt: skip
    return model_class(config).eval()
