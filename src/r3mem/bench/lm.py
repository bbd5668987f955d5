"""Long-context language modelling: perplexity of a stream, segment by segment."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..model import R3MemModel


@torch.no_grad()
def stream_perplexity(
    model: R3MemModel, ids: torch.Tensor, use_memory: bool, adapters: bool = True
) -> dict[str, float]:
    """Perplexity of ``ids`` (1-D) read ``segment_length`` tokens at a time.

    With memory, the recurrent document memory is carried across segments; without, each
    segment is read alone. Both score the same tokens (all but the first of each segment),
    so the two figures compare like with like. ``adapters=False`` scores them with the
    frozen base alone (LoRA and couplings off), which is what the adapters are measured
    against. ``by_segment`` holds (summed NLL, tokens) per segment, for perplexity by
    position in the stream.
    """
    if ids.dim() != 1 or len(ids) < 2:
        raise ValueError("stream_perplexity needs a 1-D tensor of at least 2 token ids")
    if use_memory and not adapters:
        raise ValueError("the memory needs the adapters: use_memory=True with adapters=False")
    step = model.config.segment_length
    state = model.init_memory(1) if use_memory else None
    nll, scored, by_segment = 0.0, 0, []
    for start in range(0, len(ids), step):
        chunk = ids[start : start + step].unsqueeze(0).to(model.device)
        if chunk.shape[1] < 2:
            break
        if adapters:
            out = model(input_ids=chunk, memory=state)
            logits = out.logits[0, :-1].float()
        else:
            with model.bare():
                logits = model.base(input_ids=chunk).logits[0, :-1].float()
        segment_nll = F.cross_entropy(logits, chunk[0, 1:], reduction="sum").item()
        by_segment.append((segment_nll, chunk.shape[1] - 1))
        nll += segment_nll
        scored += chunk.shape[1] - 1
        state = out.memory if use_memory else None
    return {"ppl": math.exp(nll / scored), "tokens_scored": scored, "by_segment": by_segment}
