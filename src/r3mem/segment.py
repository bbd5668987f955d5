"""Segmentation, once: a text or a conversation cut into the segments the memory writes, each
with its token ids, its entities and where it came from (DESIGN 1, 2.4).

Every path that cuts text calls :func:`cut`: training data, ``Memory.remember``, ``bench lm``,
``rag`` and ``conv``. Packing measures candidate segments with the tokenizer; :class:`Tokens`
keeps the ids of the texts it measured last, so a kept segment is never tokenised again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from .hierarchy import BLANK_LINE, EntityExtractor, build_document
from .sources import Conversation, check_text, conversation_to_document, messages_conversation

# A long text is cut a block of about this many characters at a time (cut_stream).
BLOCK_CHARS = 1 << 16

# The most tokens an entry of a text holds, and one part of any entry, unless the memory is
# told otherwise (at most the model's segment length): 4 a slot on 8 slots. The shipped model
# gives back 99% of a 32-token paragraph greedily against 96% of a 64-token one, and its recall
# finds the evidence at least as often as BM25 there (benchmarks/results/NOTES.md, *Entries of
# 32 tokens by default*); the price is twice the entries for a text. A conversation's turn
# windows fill whole segments (each repeats its time and speaker, 23 tokens on LoCoMo, which
# would crowd a short window) and are written in parts of at most this many tokens
# (NOTES.md, *Conversation windows in parts*).
ENTRY_TOKENS = 32


def entry_length(entry_tokens: int | None, segment_length: int) -> int:
    """The most tokens an entry of a text holds on a model of ``segment_length``:
    ``entry_tokens`` once checked, or ``ENTRY_TOKENS`` at most the segment length."""
    length = min(ENTRY_TOKENS, segment_length) if entry_tokens is None else entry_tokens
    check_length(length, segment_length, "entry_tokens")
    return length


def part_length(
    part_tokens: int | None, entry_tokens: int, segment_length: int, default: int | None = None
) -> int:
    """The most tokens one part of an entry holds, each part compressed alone:
    ``part_tokens`` once checked, else the adapters' ``default`` (``R3MemConfig.part_tokens``)
    up to ``entry_tokens``, else ``entry_tokens`` (a text's entry is then one part, and only a
    longer segment, a conversation's turn window, comes in parts)."""
    if part_tokens is None:
        return entry_tokens if default is None else min(default, entry_tokens)
    check_length(part_tokens, segment_length, "part_tokens")
    return part_tokens


# Packing measures a segment, then the segment with the next piece (too long): the segment it
# keeps was measured a few calls back. A short memory of recent texts holds it.
_RECENT = 64


class Tokens:
    """A tokenizer's ids of texts (no special tokens), the last few remembered."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self._backend = getattr(tokenizer, "backend_tokenizer", None)  # Rust: ~5x faster a call
        self._recent: OrderedDict[str, list[int]] = OrderedDict()

    def ids(self, text: str) -> list[int]:
        found = self._recent.get(text)
        if found is None:
            if self._backend is not None:
                found = self._backend.encode(text, add_special_tokens=False).ids
            else:
                found = self.tokenizer(text, add_special_tokens=False).input_ids
            self._recent[text] = found
            if len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(text)
        return list(found)

    def count(self, text: str) -> int:
        return len(self.ids(text))


@dataclass(frozen=True)
class Segment:
    """One segment: its text, token ids, entities (empty when none were asked for) and where
    it came from (a conversation's session, time and turn ids)."""

    text: str
    ids: list[int]
    entities: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def cut(
    content: str | Conversation,
    tokens: Tokens,
    length: int,
    extractor: EntityExtractor | None = None,
) -> list[Segment]:
    """``content`` in segments of at most ``length`` tokens: a text by blank-line paragraphs
    (merged while they fit, cut at sentences when too long); a conversation by session
    windows of whole turns. ``extractor`` (None: no entities) lists each one's entities."""
    if isinstance(content, Conversation):
        document = conversation_to_document(content, length, tokens.count, extractor)
    else:
        document = build_document("text", content, length, tokens.count, extractor)
    return [Segment(p.text, tokens.ids(p.text), p.entities, p.meta) for p in document.paragraphs]


def part_lengths(tokens: int, parts: int) -> list[int]:
    """The lengths of the ``parts`` parts an entry of ``tokens`` tokens is cut into: as even
    as can be, the longer first (64 in 2: 32 + 32; 41 in 2: 21 + 20)."""
    return [tokens // parts + (i < tokens % parts) for i in range(parts)]


def parts_needed(tokens: int, most: int) -> int:
    """The fewest parts of at most ``most`` tokens that hold ``tokens``."""
    return -(-tokens // most)


def starts(lengths: Sequence[int]) -> list[int]:
    """Where each of consecutive pieces of ``lengths`` begins."""
    return list(accumulate(lengths, initial=0))[:-1]


def split(ids: Sequence[int], lengths: Sequence[int]) -> list[list[int]]:
    """``ids`` cut into consecutive pieces of ``lengths``."""
    return [list(ids[at : at + n]) for at, n in zip(starts(lengths), lengths, strict=True)]


def check_segments(segments: Sequence[Segment], longest: int) -> list[Segment]:
    """``segments`` cut already (by :func:`cut` or by hand), each found to hold 1 to
    ``longest`` tokens."""
    for segment in segments:
        if not 0 < len(segment.ids) <= longest:
            raise ValueError(f"a segment must hold 1 to {longest} tokens, got {len(segment.ids)}")
    return list(segments)


def check_length(value: Any, limit: int, name: str) -> None:
    """``value`` must be a token count from 1 to ``limit`` (a model's segment length)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 < value <= limit:
        raise ValueError(f"{name} must be 1 to the segment length {limit}, got {value}")


def segment_stream(
    content: str | Conversation | Sequence[Any],
    tokens: Tokens,
    length: int,
    extractor: EntityExtractor | None,
    longest: int,
) -> tuple[Iterator[tuple[Segment, int]], int]:
    """What ``Memory.remember`` writes of ``content`` (a text, a conversation, chat messages
    ``{speaker, text[, time]}`` or segments already cut): its segments, each with how far
    into ``content`` it reaches, and the whole length (characters of a text, else
    segments). What is cut here holds at most ``length`` tokens a segment; segments already
    cut at most ``longest``. The content is checked now; a text is cut as
    it is read (:func:`cut_stream`)."""
    if isinstance(content, str):
        if not content or content.isspace():
            raise ValueError("empty text: nothing to remember")
        check_text(content, "the text")
        return cut_stream(content, tokens, length, extractor), len(content)
    if isinstance(content, Conversation):
        segments = cut(content, tokens, length, extractor)
    elif not isinstance(content, list | tuple):
        raise TypeError(
            "remember takes a str, a Conversation, a list of messages or of segments; "
            f"got {type(content).__name__}"
        )
    elif not content:
        raise ValueError("no messages: nothing to remember")
    elif all(isinstance(item, Segment) for item in content):
        segments = check_segments(content, longest)
    else:
        segments = cut(messages_conversation(content), tokens, length, extractor)
    return ((segment, row + 1) for row, segment in enumerate(segments)), len(segments)


def cut_stream(
    text: str,
    tokens: Tokens,
    length: int,
    extractor: EntityExtractor | None = None,
    block_chars: int = BLOCK_CHARS,
) -> Iterator[tuple[Segment, int]]:
    """:func:`cut` of a text, one block of about ``block_chars`` characters at a time: each
    segment with how many characters of ``text`` were read when it came, so time and memory
    do not grow with the text before the first segment. The segments are :func:`cut`'s
    wherever the text has a blank line at least every ``block_chars`` characters (packing
    is greedy, so the last segment of a block, carried into the next, packs as it would
    have); elsewhere a block ends at a line end or a space, which may cut a paragraph."""
    carry, start = "", 0
    while start < len(text):
        end = _block_end(text, start, block_chars)
        block = text[start:end]
        segments = cut(f"{carry}\n\n{block}" if carry else block, tokens, length, extractor)
        carry = segments.pop().text if end < len(text) and segments else ""
        start = end
        yield from ((segment, end) for segment in segments)
    if carry:
        yield from ((segment, len(text)) for segment in cut(carry, tokens, length, extractor))


def _block_end(text: str, start: int, size: int) -> int:
    """Where the block of ``text`` from ``start`` ends: after the last blank line, else line
    end, else space, of the next ``size`` characters (or the text's end)."""
    if len(text) - start <= size:
        return len(text)
    window = text[start : start + size]
    blanks = [match for match in BLANK_LINE.finditer(window) if match.start() > 0]
    if blanks:
        return start + blanks[-1].end()
    for mark in ("\n", " "):
        found = window.rfind(mark)
        if found > 0:
            return start + found + 1
    return start + size


def batched(
    stream: Iterable[tuple[Segment, int]], size: int
) -> Iterator[tuple[list[Segment], int]]:
    """The stream's segments ``size`` at a time, each batch with how far its last reaches."""
    batch: list[Segment] = []
    done = 0
    for segment, done in stream:
        batch.append(segment)
        if len(batch) == size:
            yield batch, done
            batch = []
    if batch:
        yield batch, done


def pad_rows(
    rows: list[list[int]], pad: int = 0, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids ``[N, width]`` (default: the longest row) and their mask."""
    width = width or max(map(len, rows))
    lengths = torch.tensor([len(row) for row in rows])
    ids = torch.from_numpy(pad_ids(rows, width, pad).astype(np.int64))
    return ids, (torch.arange(width) < lengths[:, None]).long()


def pad_ids(rows: list[list[int]], width: int, pad: int) -> np.ndarray:
    out = np.full((len(rows), width), pad, dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
