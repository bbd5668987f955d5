"""Token-by-token decoding with the KV cache: the loop behind ``R3MemModel.reconstruct``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, LlamaModel

# What a model's forward calls its KV cache, in and out: ``cache`` since transformers 5.x
# renamed it (``past_key_values`` is deprecated there, and warns on every call).
_RENAMED = "cache" in inspect.signature(LlamaModel.forward).parameters
CACHE = "cache" if _RENAMED else "past_key_values"

# What may change the scores before each pick (as a Hugging Face ``LogitsProcessor``, but
# given only the ids generated so far ``[B, i]``, not the prefix read before them) and the
# next token's scores ``[B, vocab]``; it returns the scores to pick from.
Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Sampling:
    """Greedy by default; ``do_sample`` draws from the softmax at ``temperature``, ``top_k``."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    eos_token_id: int | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")

    def pick(self, scores: torch.Tensor) -> torch.Tensor:
        """One token per row from ``scores`` ``[B, vocab]``."""
        if not self.do_sample:
            return scores.argmax(-1)
        scores = scores / self.temperature
        if self.top_k is not None:
            kth = scores.topk(min(self.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        return torch.multinomial(scores.softmax(-1), 1, generator=self.generator).squeeze(1)


@torch.no_grad()
def generate(
    model: nn.Module,
    prefix: torch.Tensor,
    past: DynamicCache | None,
    max_new_tokens: int,
    sampling: Sampling,
    processor: Processor | None = None,
) -> torch.Tensor:
    """Read ``prefix`` embeddings (after ``past``, if any), then emit up to ``max_new_tokens``
    ids per row ``[B, n]``; rows that met EOS are padded with it. ``processor`` rescores each
    step's logits from the ids chosen so far before ``sampling`` picks."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise TypeError(f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    eos = sampling.eos_token_id
    done = torch.zeros(prefix.shape[0], dtype=torch.bool, device=prefix.device)
    out = model(inputs_embeds=prefix, use_cache=True, **{CACHE: past})
    chosen = torch.zeros(prefix.shape[0], 0, dtype=torch.long, device=prefix.device)
    for _ in range(max_new_tokens):
        scores = out.logits[:, -1].float()
        token = sampling.pick(scores if processor is None else processor(chosen, scores))
        if eos is not None:
            token = torch.where(done, torch.full_like(token, eos), token)
            done = done | (token == eos)
        chosen = torch.cat([chosen, token[:, None]], dim=1)
        if bool(done.all()):
            break
        out = model(input_ids=token[:, None], use_cache=True, **{CACHE: getattr(out, CACHE)})
    return chosen
