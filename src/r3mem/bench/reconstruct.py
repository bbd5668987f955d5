"""Reconstruction from memory beyond paragraphs: the rest of a segment recalled from the
document memory and a cue, and what lossless recall costs."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import torch

from ..bank import entry_nbytes, round_state
from ..data import Segments
from ..entries import find_corrections
from ..eval import batch_starts, reconstruction_scores
from ..model import R3MemModel


@torch.no_grad()
def document_recall(
    model: R3MemModel,
    segments: Segments,
    starts: np.ndarray,
    batch_size: int = 32,
    desc: str | None = None,
) -> dict[str, float]:
    """L_doc's task, greedily: write segments ``s`` and ``s + 1`` into the document memory,
    then from it and the first ``doc_cue_length`` tokens of segment ``s`` recall the rest."""
    cue = model.config.doc_cue_length
    restored, targets, masks = [], [], []
    for start in batch_starts(len(starts), batch_size, desc):
        batch = segments.batch(starts[start : start + batch_size, None] + np.arange(2))
        ids, mask = batch["ids"].to(model.device), batch["mask"].to(model.device)  # [B, 2, L]
        state = model.init_memory(len(ids))
        for t in range(2):
            state = model.write(state, ids[:, t], mask[:, t])
        rest = ids.shape[2] - cue
        restored.append(model.reconstruct(state, rest, cue_ids=ids[:, 0, :cue]).cpu())
        targets.append(ids[:, 0, cue:].cpu())
        masks.append(mask[:, 0, cue:].cpu())
    return reconstruction_scores(torch.cat(restored), torch.cat(targets), torch.cat(masks))


@torch.no_grad()
def exact_recall_cost(
    model: R3MemModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    decode: Callable[[list[int]], str],
    batch_size: int = 64,
    entry_dtype: str = "float16",
    desc: str | None = None,
) -> dict[str, float]:
    """DESIGN 2.6: lossless recall stores each paragraph's memory (in the memory bank's
    entry dtype) plus the corrections (position, token) that guided greedy decoding needs,
    as the memory bank does (the corrections as JSON); per 1k tokens, beside the same text
    as UTF-8."""
    stored = corrections = tokens = utf8 = 0
    for start in batch_starts(len(ids), batch_size, desc):
        rows, rows_mask = ids[start : start + batch_size], mask[start : start + batch_size]
        targets = [
            row[:n].tolist() for row, n in zip(rows, rows_mask.sum(-1).tolist(), strict=True)
        ]
        written = model.write(
            model.init_memory(len(rows), "paragraph"),
            rows.to(model.device),
            rows_mask.to(model.device),
        )
        state = round_state(written, entry_dtype)
        fixes = find_corrections(model, state, targets)
        stored += entry_nbytes(state.memory, entry_dtype)
        stored += sum(len(json.dumps(fix)) for fix in fixes)
        corrections += sum(map(len, fixes))
        tokens += sum(map(len, targets))
        utf8 += sum(len(decode(target).encode("utf-8")) for target in targets)
    per_1k = 1000 / tokens
    return {
        "corrections_per_1k_tokens": corrections * per_1k,
        "exact_bytes_per_1k_tokens": stored * per_1k,
        "utf8_bytes_per_1k_tokens": utf8 * per_1k,
    }
