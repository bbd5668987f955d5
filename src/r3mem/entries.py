"""A paragraph entry's way in and out: written in parts (each compressed alone, rounded as
kept, with its corrections) and read back to tokens, greedily from its memory (steered by its
entities and keywords, or not) or exactly, from memory plus corrections (DESIGN 2.4).

An entry keeps no raw text, only its memory and the few *corrections* that make exact
recall possible: the paragraph is decoded greedily from its memory, one token at a time, and
wherever the model's choice differs from the original token the correction
``(position, token)`` is fed instead (:func:`guided_decode`). Remembering finds the
corrections in one teacher-forced pass (:func:`find_corrections`: the corrected prefix is
always the original); exact recall solves the same decode as a fixed point at the same
width. The number of corrections is an honest measure of what the memory lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .bank import Entry, checksum, round_state
from .bankfile import ENTRY_DTYPES
from .generation import Processor
from .guide import EntityGuide, guide_names
from .keywords import keywords
from .model import R3MemModel
from .segment import Segment, part_lengths, parts_needed, split, starts
from .state import MemoryState


def joined(entries: Sequence[Entry], rows: Sequence[list[int]]) -> list[list[int]]:
    """``rows`` (one per part of ``entries``, in order) joined back into one per entry."""
    out, at = [], 0
    for entry in entries:
        out.append([token for row in rows[at : at + entry.parts] for token in row])
        at += entry.parts
    return out


def entry_states(model: R3MemModel, entries: Sequence[Entry]) -> MemoryState:
    """Every part of ``entries`` as one paragraph-level batch ``[parts, m, width]`` (each
    entry's parts in order; an entry of one part is one row), ``tokens_seen`` each part's
    length."""
    dtype = model.write_embeddings.dtype
    rows = [e.memory.reshape(e.parts, -1, e.memory.shape[-1]) for e in entries]
    memory = torch.cat(rows).to(model.device, dtype)
    lengths = [n for e in entries for n in part_lengths(e.tokens, e.parts)]
    seen = torch.tensor(lengths, device=model.device)
    return MemoryState(memory, "paragraph", seen, model.fingerprint)


def _greedy_after(model: R3MemModel, state: MemoryState, prefixes: torch.Tensor) -> torch.Tensor:
    """``[rows, width]``: the greedy token after each prefix ``prefixes[:, :i]``, all read in
    one teacher-forced pass at the fixed width of the rows."""
    return model.decode_logits(state, prefixes).argmax(-1)


def _width(model: R3MemModel, lengths: Sequence[int]) -> int:
    """Every decode of an entry runs at this width, so a position's logits come from the
    same computation at remembering and at recall (later positions are masked, not absent)."""
    return max([model.config.segment_length, *lengths])


@torch.no_grad()
def guided_decode(
    model: R3MemModel,
    state: MemoryState,
    lengths: Sequence[int],
    choose: Callable[[int, int, int], int],
    start: Sequence[Sequence[int]] | None = None,
) -> list[list[int]]:
    """Decode each row of ``state`` for ``lengths[row]`` tokens: token ``i`` is
    ``choose(row, i, g)`` where ``g`` is the greedy token after tokens ``0..i-1``.

    Solved as a fixed point (Jacobi decoding) rather than one token per pass: every pass
    reads each row's current guess at the fixed width and re-chooses all its tokens at once;
    a row is done when a pass changes none of them. Token ``i`` depends only on the tokens
    before it, so a pass fixes at least one more token and the fixed point is exactly what
    step-by-step decoding gives (each position's logits come from the same prefix at the
    same width, later positions masked), in far fewer passes when the memory, not the
    prefix, decides most tokens. ``choose`` must be a function of its arguments.

    ``start`` (a first guess per row, at least ``lengths[row]`` tokens) changes how many
    passes it takes, never the result: from a guess that is already the answer, one pass
    confirms it.
    """
    width = _width(model, lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long, device=model.device)
    for row, guess in enumerate(start or []):
        ids[row, : lengths[row]] = torch.tensor(list(guess[: lengths[row]]), dtype=torch.long)
    open_rows = [row for row, length in enumerate(lengths) if length > 0]
    for _ in range(max(lengths, default=0)):
        if not open_rows:
            break
        index = torch.tensor(open_rows, device=state.memory.device)
        sub = MemoryState(
            state.memory[index], state.level, state.tokens_seen[index], state.fingerprint
        )
        predicted = _greedy_after(model, sub, ids[index]).tolist()
        still_open = []
        for row, guess in zip(open_rows, predicted, strict=True):
            chosen = [choose(row, i, guess[i]) for i in range(lengths[row])]
            if chosen != ids[row, : lengths[row]].tolist():
                ids[row, : lengths[row]] = torch.tensor(chosen, device=ids.device)
                still_open.append(row)
        open_rows = still_open
    return [ids[row, :length].tolist() for row, length in enumerate(lengths)]


@torch.no_grad()
def find_corrections(
    model: R3MemModel, state: MemoryState, targets: Sequence[Sequence[int]]
) -> list[list[tuple[int, int]]]:
    """For each row, where greedy decoding of its memory, fed the corrections, misses
    ``targets[row]``.

    That decoding feeds the original token wherever it corrects one, so its prefix is
    always the original's: every step of it is one position of a single teacher-forced pass
    over the targets, the same computation :func:`guided_decode` replays step by step.
    """
    width = _width(model, [len(t) for t in targets])
    ids = torch.zeros(len(targets), width, dtype=torch.long, device=model.device)
    for row, target in enumerate(targets):
        ids[row, : len(target)] = torch.tensor(list(target), dtype=torch.long)
    predicted = _greedy_after(model, state, ids).tolist()
    return [
        [(i, int(t)) for i, t in enumerate(target) if predicted[row][i] != int(t)]
        for row, target in enumerate(targets)
    ]


@torch.no_grad()
def greedy_tokens(
    model: R3MemModel, entries: Sequence[Entry], processor: Processor | None = None
) -> list[list[int]]:
    """The token ids of ``entries`` decoded greedily from their memories in one batch, part
    by part; ``processor`` rescores each step of every part's row (one row per part, as
    :func:`entry_states` orders them: :class:`r3mem.guide.EntityGuide`)."""
    state = entry_states(model, entries)
    lengths = state.tokens_seen.tolist()
    out = model.reconstruct(state, max(lengths), processor=processor)
    return joined(entries, [out[row, :n].tolist() for row, n in enumerate(lengths)])


class Diverged(ValueError):
    """Exact recall gave other text than was remembered (its checksum differs) for the
    entries at ``rows`` of those asked: the stored entry was changed, or this device or dtype
    decodes differently from the writer's. The others were read back exactly: ``tokens``
    holds every entry's ids as decoded, so a caller keeps those without decoding again."""

    def __init__(self, rows: list[int], tokens: list[list[int]], more: str = "") -> None:
        super().__init__(
            f"exact recall diverged from the remembered text (checksum mismatch) for {len(rows)} "
            f"of {len(tokens)} entries: the stored entry was changed, or this device or dtype "
            f"decodes differently from the writer's{more}"
        )
        self.rows, self.tokens = rows, tokens


class Corrected:
    """A processor for :func:`r3mem.generation.generate` that feeds row ``r`` the token
    ``fixes[r][i]`` at each step ``i`` it corrects: greedy decoding with the KV cache, fed
    the corrections, drafts exact recall."""

    def __init__(self, fixes: Sequence[dict[int, int]]) -> None:
        self.fixes = fixes

    def __call__(self, chosen: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = chosen.shape[1]
        for row, fixes in enumerate(self.fixes):
            if step in fixes:
                scores[row] = float("-inf")
                scores[row, fixes[step]] = 0.0
        return scores


def exact_tokens(model: R3MemModel, entries: Sequence[Entry]) -> list[list[int]]:
    """The original token ids of ``entries``, replayed from memory plus corrections.

    The replay is drafted token by token with the KV cache (:class:`Corrected`), then
    confirmed as :func:`guided_decode`'s fixed point at the fixed width, where remembering
    found the corrections: the draft usually is that point already (one pass confirms it),
    and where the cached decode rounds a near tie the other way, the passes that follow fix
    it. Without the draft, a decoder the prefix steers needs a pass per run of tokens."""
    fixes: list[dict[int, int]] = []
    for entry in entries:
        lengths = part_lengths(entry.tokens, entry.parts)
        for at, n in zip(starts(lengths), lengths, strict=True):
            fixes.append({i - at: t for i, t in entry.corrections if at <= i < at + n})
    state = entry_states(model, entries)
    lengths = state.tokens_seen.tolist()
    draft = model.reconstruct(state, max(lengths), processor=Corrected(fixes)).tolist()
    rows = guided_decode(model, state, lengths, lambda row, i, p: fixes[row].get(i, p), draft)
    tokens = joined(entries, rows)
    sums = [entry.checksum for entry in entries]
    diverged = [row for row, ids in enumerate(tokens) if checksum(ids) != sums[row]]
    if diverged:
        raise Diverged(diverged, tokens)
    return tokens


@torch.no_grad()
def write_entries(
    model: R3MemModel,
    tokenizer: PreTrainedTokenizerBase,
    segments: Sequence[Segment],
    most: int,
    entry_dtype: str,
    meta: dict[str, Any],
) -> list[Entry]:
    """One entry per segment, in parts of at most ``most`` tokens (a turn window longer than
    that in two or more, :func:`part_lengths`): every part compressed alone in one batch,
    rounded to ``entry_dtype`` as kept, with its corrections; ``meta`` added to each's."""
    lengths = [part_lengths(len(s.ids), parts_needed(len(s.ids), most)) for s in segments]
    pieces = [piece for s, n in zip(segments, lengths, strict=True) for piece in split(s.ids, n)]
    states = round_state(model.write_alone(pieces), entry_dtype)
    found = find_corrections(model, states, pieces)
    kept = states.memory.to(ENTRY_DTYPES[entry_dtype])  # one block a batch
    entries, at = [], 0
    for segment, n in zip(segments, lengths, strict=True):
        fixes = [(a + i, t) for row, a in enumerate(starts(n)) for i, t in found[at + row]]
        entries.append(
            Entry(
                kept[at : at + len(n)].flatten(0, 1),
                len(segment.ids),
                list(segment.entities),
                fixes,
                checksum(segment.ids),
                keywords(tokenizer.decode(segment.ids)),
                {**segment.meta, **meta},
                len(n),
            )
        )
        at += len(n)
    return entries


def read(
    model: R3MemModel,
    tokenizer: PreTrainedTokenizerBase,
    entries: Sequence[Entry],
    exact: bool = True,
    guided: bool = True,
) -> list[list[int]]:
    """The token ids of ``entries`` decoded in one batch: ``exact``ly with their corrections,
    or greedily (every part steered by its entry's entities and keywords when ``guided``)."""
    if not entries:
        return []
    if exact:
        return exact_tokens(model, entries)
    guide = None
    if guided:
        names = [guide_names(e.entities, e.keywords) for e in entries for _ in range(e.parts)]
        guide = EntityGuide(tokenizer, names)
    return greedy_tokens(model, entries, guide)
