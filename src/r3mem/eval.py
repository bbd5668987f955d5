"""What training, the demo, the card and the benchmarks all measure: greedy reconstruction
of paragraphs from their memories, and the perplexity of books streamed through the memory.

A book is read two ways (``READINGS``): in the segments the hierarchy cuts (paragraphs of at
most ``segment_length`` tokens, as training reads them), and in fixed chunks of
``segment_length`` tokens that start wherever the last one stopped, mid-sentence, as a user
streams text as it comes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import sacrebleu
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .losses import IGNORE
from .model import R3MemModel, recur
from .segment import cut, pad_rows

if TYPE_CHECKING:
    from .memory import Memory


def batch_starts(count: int, batch_size: int, desc: str | None = None) -> Iterable[int]:
    """The first row of each batch of ``count`` rows, with a progress bar named ``desc`` when
    given (a bench shows one; the training log's evaluation does not)."""
    return tqdm(range(0, count, batch_size), desc=desc, disable=desc is None)


@torch.no_grad()
def reconstruct_segments(
    model: R3MemModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    batch_size: int = 32,
    desc: str | None = None,
) -> torch.Tensor:
    """Greedy reconstructions ``[N, L]`` of right-padded segments ``ids`` ``[N, L]``; a
    progress bar named ``desc`` when given."""
    outputs = []
    for start in batch_starts(len(ids), batch_size, desc):
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
    """The first ``tokens`` tokens of ``text`` (None: all) in the hierarchy's paragraphs of at
    most ``segment_length`` tokens (as training reads them), the last one cut to make the
    count exact.

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
    model: R3MemModel,
    books: list[list[torch.Tensor]],
    use_memory: bool,
    adapters: bool = True,
    text_before: int = 0,
) -> dict[str, float]:
    """Perplexity of ``books`` (each a list of 1-D segments of at most ``segment_length``
    tokens) read side by side, one segment per step, one batch row per book.

    With memory, each row carries the model's memory across its book (whatever its
    ``memory_mode`` keeps); without, every segment reads the initial memory, as the first
    segment of a book does: the same adapters on the inputs they were trained on, with nothing
    carried from the segments before (reading no memory at all, adapters trained always to
    read one score 10x worse, which says nothing about the memory). Every method scores the same
    tokens (all but the first of each segment), so the figures compare like with like.
    ``adapters=False`` scores them with the frozen base alone (LoRA and couplings off), which
    is what the adapters are measured against. ``text_before=K`` (frozen base only) lets it
    read the K tokens of the book before each segment as plain text first: the uncompressed
    reference for a memory written from them. ``by_segment`` holds (summed NLL, tokens) per
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
    if text_before < 0 or (text_before and adapters):
        raise ValueError(
            f"text_before={text_before}: the text before is read by the frozen base alone "
            "(adapters=False), as a count of tokens >= 0"
        )
    books = sorted(books, key=len, reverse=True)  # the rows still reading are a prefix
    batches = [_batch(books, index, width, model.device) for index in range(len(books[0]))]
    if use_memory:
        state = model.init_memory(len(books))
        passes = (step.logits for step in recur(model, state, batches, score=True))
    elif adapters:
        passes = (
            model(input_ids=ids, attention_mask=mask, memory=model.init_memory(len(ids))).logits
            for ids, mask in batches
        )
    elif text_before:
        passes = (_after_text(model, books, index, text_before) for index in range(len(batches)))
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


def _after_text(
    model: R3MemModel, books: list[list[torch.Tensor]], index: int, text_before: int
) -> torch.Tensor:
    """The bare base's logits over segment ``index`` of each book that has one, read after
    (up to) ``text_before`` tokens of the book before it: ``[rows, segment_length, vocab]``."""
    width = model.config.segment_length
    rows, starts = [], []
    for segments in books:
        if len(segments) <= index:
            break  # books are sorted longest first: the rows still reading are a prefix
        earlier = segments[max(0, index - text_before) : index]  # each holds >= 1 token
        before = torch.cat([*earlier, segments[index][:0]])[-text_before:]
        rows.append(torch.cat([before, segments[index]]).tolist())
        starts.append(len(before))
    ids, mask = pad_rows(rows, width=text_before + width)
    logits = _bare(model, ids.to(model.device), mask.to(model.device))
    return torch.stack([logits[row, start : start + width] for row, start in enumerate(starts)])
