"""Long-context language modelling: perplexity of books read segment by segment.

A book is read two ways (``READINGS``): in the segments the hierarchy cuts (paragraphs of at
most ``segment_length`` tokens, as ``Memory.remember`` writes them), and in fixed chunks of
``segment_length`` tokens that start wherever the last one stopped, mid-sentence, as a user
streams text as it comes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..losses import IGNORE
from ..model import R3MemModel, recur
from ..segment import cut, pad_rows

if TYPE_CHECKING:
    from ..memory import Memory

# Characters of a book segmented per token asked for at first; doubled until enough.
_CHARS_PER_TOKEN = 8
READINGS = ("paragraphs", "chunks")


def read_book(memory: Memory, text: str, reading: str, tokens: int | None = None):
    """The first ``tokens`` tokens of ``text`` (None: all) as 1-D segments, cut as
    ``reading`` says: ``paragraphs`` (:func:`book_segments`) or ``chunks``."""
    if reading not in READINGS:
        raise ValueError(f"reading must be one of {', '.join(READINGS)}; got {reading!r}")
    if reading == "paragraphs":
        return book_segments(memory, text, tokens)
    return book_chunks(memory, text, tokens)


def book_chunks(memory: Memory, text: str, tokens: int | None = None) -> list[torch.Tensor]:
    """The first ``tokens`` tokens of ``text`` (None: all) in chunks of ``segment_length``.

    Only a prefix is tokenised, long enough to hold one token more than asked for, so the
    last token kept is never one that the cut split."""
    if tokens is not None and tokens < 1:
        raise ValueError(f"tokens must be None (the whole text) or at least 1, got {tokens}")
    size = (tokens or 0) * _CHARS_PER_TOKEN
    while True:
        whole = tokens is None or size >= len(text)
        ids = memory.encode(text if whole else text[:size])[0].cpu()
        if whole or len(ids) > tokens:
            break
        size *= 2
    return list(ids[:tokens].split(memory.model.config.segment_length))


def book_segments(memory: Memory, text: str, tokens: int | None = None) -> list[torch.Tensor]:
    """The first ``tokens`` tokens of ``text`` (None: all) as the segments ``remember`` writes,
    the last one cut to make the count exact.

    Only a prefix is segmented (sentence splitting a whole book takes a minute): the hierarchy
    packs blank-line paragraphs greedily from the start, so a prefix cut at a blank line gives
    the same segments except its last, which is never used.
    """
    if tokens is not None and tokens < 1:
        raise ValueError(f"tokens must be None (the whole text) or at least 1, got {tokens}")
    limit = memory.model.config.segment_length
    size = (tokens or 0) * _CHARS_PER_TOKEN
    while True:
        end = text.find("\n\n", size) if tokens else -1
        pieces = cut(text if end < 0 else text[:end], memory.tokens, limit)  # no entities: faster
        segments = [torch.tensor(piece.ids) for piece in pieces]
        if end >= 0:
            segments = segments[:-1]  # the prefix's last segment may differ from the book's
        if tokens is None or end < 0 or sum(map(len, segments)) >= tokens:
            break
        size *= 2
    out, total = [], 0
    for segment in segments:
        if tokens is not None and total + len(segment) >= tokens:
            out.append(segment[: tokens - total])
            break
        out.append(segment)
        total += len(segment)
    return out


@torch.no_grad()
def stream_perplexity(
    model: R3MemModel, books: list[list[torch.Tensor]], use_memory: bool, adapters: bool = True
) -> dict[str, float]:
    """Perplexity of ``books`` (each a list of 1-D segments of at most ``segment_length``
    tokens) read side by side, one segment per step, one batch row per book.

    With memory, each row carries the model's memory across its book (whatever its
    ``memory_mode`` keeps); without, each segment is read alone. Every method scores the same
    tokens (all but the first of each segment), so the figures compare like with like.
    ``adapters=False`` scores them with the frozen base alone (LoRA and couplings off), which
    is what the adapters are measured against. ``by_segment`` holds (summed NLL, tokens) per
    segment index, summed over the books.
    """
    width = model.config.segment_length
    for segments in books:
        if not segments or any(s.dim() != 1 or not 0 < len(s) <= width for s in segments):
            raise ValueError(
                f"stream_perplexity needs books of 1-D segments of 1 to {width} token ids"
            )
    if sum(len(s) - 1 for segments in books for s in segments) < 1:
        raise ValueError("stream_perplexity has no token to score (every segment is 1 token)")
    if use_memory and not adapters:
        raise ValueError("the memory needs the adapters: use_memory=True with adapters=False")
    books = sorted(books, key=len, reverse=True)  # the rows still reading are a prefix
    batches = [_batch(books, index, width, model.device) for index in range(len(books[0]))]
    if use_memory:
        state = model.init_memory(len(books))
        passes = (step.logits for step in recur(model, state, batches, score=True))
    elif adapters:
        passes = (model(input_ids=ids, attention_mask=mask).logits for ids, mask in batches)
    else:
        passes = (_bare(model, ids, mask) for ids, mask in batches)
    by_segment = []
    for (chunk, chunk_mask), logits in zip(batches, passes, strict=True):
        targets = chunk[:, 1:].masked_fill(chunk_mask[:, 1:] == 0, IGNORE)  # [rows, T - 1]
        logits = logits[:, :-1].float()
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        by_segment.append((nll, int(chunk_mask[:, 1:].sum())))
    nll, scored = (sum(column) for column in zip(*by_segment, strict=True))
    return {"ppl": math.exp(nll / scored), "tokens_scored": scored, "by_segment": by_segment}


def _batch(
    books: list[list[torch.Tensor]], index: int, width: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment ``index`` of every book that has one (a prefix of the rows), right-padded."""
    rows = [segments[index].tolist() for segments in books if len(segments) > index]
    ids, mask = pad_rows(rows, width=width)
    return ids.to(device), mask.to(device)


def _bare(model: R3MemModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with model.bare():
        return model.base(input_ids=ids, attention_mask=mask).logits
