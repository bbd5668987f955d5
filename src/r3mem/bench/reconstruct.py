"""Paragraph reconstruction: write each segment alone into memory, then decode it back greedily."""

from __future__ import annotations

import sacrebleu
import torch

from ..model import R3MemModel


@torch.no_grad()
def reconstruct_segments(
    model: R3MemModel, ids: torch.Tensor, mask: torch.Tensor, batch_size: int = 32
) -> torch.Tensor:
    """Greedy reconstructions ``[N, L]`` of right-padded segments ``ids`` ``[N, L]``."""
    outputs = []
    for start in range(0, len(ids), batch_size):
        rows, rows_mask = ids[start : start + batch_size], mask[start : start + batch_size]
        rows, rows_mask = rows.to(model.device), rows_mask.to(model.device)
        memory = model.write(model.init_memory(len(rows), "paragraph"), rows, rows_mask)
        outputs.append(model.reconstruct(memory, max_new_tokens=rows.shape[1]).cpu())
    return torch.cat(outputs)


def reconstruction_scores(
    restored: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, decode=None
) -> dict[str, float]:
    """Token accuracy (position by position over real tokens), exact-match rate, and BLEU of
    the decoded texts when ``decode`` (ids -> str) is given."""
    hits = (restored == ids) & (mask == 1)
    scores = {
        "token_acc": hits.sum().item() / mask.sum().item(),
        "exact_match": ((restored == ids) | (mask == 0)).all(-1).float().mean().item(),
    }
    if decode is not None:
        lengths = mask.sum(-1).tolist()
        hypotheses = [decode(row[:n].tolist()) for row, n in zip(restored, lengths, strict=True)]
        references = [decode(row[:n].tolist()) for row, n in zip(ids, lengths, strict=True)]
        scores["bleu"] = sacrebleu.corpus_bleu(hypotheses, [references]).score
    return scores
