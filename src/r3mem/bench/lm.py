"""Long-context language modelling: perplexity of streams read segment by segment."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..data import pad_rows
from ..losses import IGNORE
from ..model import R3MemModel


@torch.no_grad()
def stream_perplexity(
    model: R3MemModel, streams: list[torch.Tensor], use_memory: bool, adapters: bool = True
) -> dict[str, float]:
    """Perplexity of token ``streams`` (1-D each) read side by side, ``segment_length`` tokens
    at a time, one batch row per stream.

    With memory, each row carries the model's memory across its stream (whatever its
    ``memory_mode`` keeps); without, each segment is read alone. Every method scores the same
    tokens (all but the first of each segment), so the figures compare like with like.
    ``adapters=False`` scores them with the frozen base alone (LoRA and couplings off), which
    is what the adapters are measured against. ``by_segment`` holds (summed NLL, tokens) per
    segment index, summed over the streams.
    """
    if not streams or any(s.dim() != 1 or len(s) < 2 for s in streams):
        raise ValueError("stream_perplexity needs 1-D tensors of at least 2 token ids each")
    if use_memory and not adapters:
        raise ValueError("the memory needs the adapters: use_memory=True with adapters=False")
    streams = sorted(streams, key=len, reverse=True)  # the rows still reading are a prefix
    ids, mask = pad_rows([s.tolist() for s in streams])
    step = model.config.segment_length
    state = model.init_memory(len(streams)) if use_memory else None
    by_segment = []
    for start in range(0, ids.shape[1], step):
        chunk_mask = mask[:, start : start + step]
        rows = int((chunk_mask.sum(-1) >= 2).sum())  # a one-token chunk scores nothing
        if rows == 0:
            break
        chunk = ids[:rows, start : start + step].to(model.device)
        chunk_mask = chunk_mask[:rows].to(model.device)
        if state is not None:
            state = replace(state, memory=state.memory[:rows], tokens_seen=state.tokens_seen[:rows])
        if adapters:
            out = model(input_ids=chunk, memory=state, attention_mask=chunk_mask)
            logits = out.logits[:, :-1].float()
        else:
            with model.bare():
                logits = model.base(input_ids=chunk, attention_mask=chunk_mask).logits[:, :-1]
            logits = logits.float()
        targets = chunk[:, 1:].masked_fill(chunk_mask[:, 1:] == 0, IGNORE)  # [rows, T - 1]
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        by_segment.append((nll, int(chunk_mask[:, 1:].sum())))
        state = out.memory if use_memory else None
    nll, scored = (sum(column) for column in zip(*by_segment, strict=True))
    return {"ppl": math.exp(nll / scored), "tokens_scored": scored, "by_segment": by_segment}
