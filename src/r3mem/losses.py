"""The five terms of R³Mem's objective (DESIGN 2.5), each a plain function.

    L = L_lm + λ_rec·L_rec + λ_doc·L_doc + λ_ent·L_ent + λ_cyc·L_cyc (+ λ_ret·L_ret, DESIGN 2.6)

The training loop decides which memories and targets feed each term; these functions only
say what each term measures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .state import MemoryState, pooled

if TYPE_CHECKING:
    from .cell import MemoryCell

__all__ = [
    "IGNORE",
    "cycle_loss",
    "distillation_loss",
    "document_recall_loss",
    "entity_loss",
    "lm_loss",
    "reconstruction_loss",
    "retrieval_loss",
    "token_loss",
]


IGNORE = -100  # the label of a token that is not scored


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy with Hugging Face alignment: ``logits[:, i]`` predicts
    ``labels[:, i + 1]``; label -100 is ignored."""
    return token_loss(logits[:, :-1], labels[:, 1:])


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy where ``logits[:, i]`` predicts ``targets[:, i]``; -100 is ignored."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE
    )


def _masked(ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    return ids if attention_mask is None else ids.masked_fill(attention_mask == 0, IGNORE)


def reconstruction_loss(
    model: MemoryCell,
    memory: MemoryState,
    target_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    entities: bool = False,
) -> torch.Tensor:
    """L_rec: the backward invocation must give back the text the memory was written from
    (with ``entities``: its entity list)."""
    logits = model.decode_logits(memory, target_ids, entities=entities)
    return token_loss(logits, _masked(target_ids, attention_mask))


def distillation_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """KL(teacher ‖ model) over the next-token distributions of a segment ``[B, T, V]`` (each
    position predicts the next token; only positions followed by a real token count). With the
    frozen base reading the raw text before the segment as the teacher, the memory learns to
    give what that text gave (L_lm's context distillation), and the whole distribution teaches
    more per token than the one token the text chose."""
    keep = attention_mask[:, 1:].bool()
    if not keep.any():
        raise ValueError("distillation_loss has no position to score (every row under 2 tokens)")
    student = logits[:, :-1][keep].float().log_softmax(-1)
    teacher = teacher_logits[:, :-1][keep].float().log_softmax(-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean")


def document_recall_loss(
    model: MemoryCell,
    document_memory: MemoryState,
    segment_ids: torch.Tensor,
    cue_length: int,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_doc: from the recurrent document memory and the first ``cue_length`` tokens of an
    earlier segment, recall the rest of that segment (long-range recall)."""
    if not 0 < cue_length < segment_ids.shape[1]:
        raise ValueError(
            f"cue_length must be in (0, {segment_ids.shape[1]}) for this segment, got {cue_length}"
        )
    cue, rest = segment_ids[:, :cue_length], segment_ids[:, cue_length:]
    logits = model.decode_logits(document_memory, rest, cue_ids=cue)
    mask = None if attention_mask is None else attention_mask[:, cue_length:]
    return token_loss(logits, _masked(rest, mask))


def entity_loss(
    model: MemoryCell,
    paragraph_memory: MemoryState,
    entity_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_ent: from a paragraph's memory, list its entities ("entities: A; B; C")."""
    return reconstruction_loss(model, paragraph_memory, entity_ids, attention_mask, entities=True)


def cycle_loss(
    model: MemoryCell,
    memory: MemoryState,
    logits: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_cyc: re-compress the decoder's soft reconstruction and match the memory it came from.

    ``logits`` are the decoder's teacher-forced logits over the text (``model.decode_logits``,
    the same pass L_rec scores, so training runs it once). The soft reconstruction is each
    position's predicted distribution times the embedding table, so the gradient reaches the
    decoder; the target memory is held fixed (stop-gradient), so the term cannot be met by
    collapsing both sides. Returns mean (1 - cosine similarity).
    """
    table = model.embed_tokens.weight
    soft = logits.float().softmax(-1).to(table.dtype) @ table  # [B, T, d]
    start = model.init_memory(memory.batch_size, level=memory.level)  # a paragraph's, as written
    again = model(inputs_embeds=soft, memory=start, attention_mask=attention_mask).memory
    cosine = F.cosine_similarity(again.memory.float(), memory.memory.detach().float(), dim=-1)
    return (1 - cosine).mean()


def retrieval_loss(
    cue_memory: MemoryState, paragraph_memory: MemoryState, temperature: float
) -> torch.Tensor:
    """L_ret: row i's cue (a span cut from paragraph i, written like a query) must find
    paragraph i's memory among the batch's, and the paragraph its cue: InfoNCE both ways over
    the cosine of slot-averaged memories, the first term of the score ``Memory.recall``
    ranks with."""
    if cue_memory.batch_size != paragraph_memory.batch_size or cue_memory.batch_size < 2:
        raise ValueError(
            "retrieval_loss needs as many cues as paragraphs, at least 2 (in-batch negatives); "
            f"got {cue_memory.batch_size} and {paragraph_memory.batch_size}"
        )
    cues = F.normalize(pooled(cue_memory.memory), dim=-1)
    paragraphs = F.normalize(pooled(paragraph_memory.memory), dim=-1)
    logits = cues @ paragraphs.T / temperature  # [B, B]
    match = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, match) + F.cross_entropy(logits.T, match)) / 2
