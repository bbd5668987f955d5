"""The hierarchical memory bank behind ``Memory.remember`` / ``Memory.recall`` (DESIGN 2.4, 2.6).

Three levels: one recurrent **document** memory over everything written, one **paragraph**
entry per segment (its own compressed memory), and an **entity** index from entity names
to the entries that mention them; beside them, a **keyword** index (BM25 over the words of
each entry's exact recall, :mod:`r3mem.keywords`), and a **source** index: the entries
one source (one document a user remembered) was cut into, which recall scores together.

No raw text is kept. An entry holds its memory vectors and the few *corrections* that make
exact recall possible; :mod:`r3mem.entries` reads entries back to tokens with them.

Entries are kept in ``float16`` by default, half the bytes of ``float32`` (``float8``, e4m3,
halves them again); the corrections are found from the rounded memory, so exact recall
stays exact at any storage dtype.
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .bankfile import ENTRY_DTYPES, FORMAT, check_meta
from .keywords import KeywordIndex
from .model import R3MemModel
from .state import MemoryState, pooled
from .tensorfile import all_finite

# The entity bonus is the fraction of the query's entities an entry mentions times this
# weight; cosine similarity lies in [-1, 1], so naming an entry's entity counts for as
# much as a quarter of the cosine range.
ENTITY_WEIGHT = 0.5
# The keyword score is an entry's BM25 over the query's words divided by the best entry's,
# times this weight: the entry holding the query's rarest words gains up to this much. Chosen
# on a draw of questions the benches do not report (recall_scoring.py --seed 1: recall@5 with
# weight 0.5 / 1 / 2 / 4 was 0.88 / 0.88 / 0.88 / 0.88 on SQuAD, 0.65 / 0.68 / 0.71 / 0.71 on
# HotpotQA, 0.89 / 0.91 / 0.91 / 0.91 on NQ).
KEYWORD_WEIGHT = 2.0
# The entries of one source (a document a user remembered) are scored together: an entry
# moves by this share of how far the best score among its source's other entries lies
# above the mean score (down where it lies below). A passage cut into several entries is
# then found as a whole: the entry that holds the answer rises with the one that names the
# question's words. A source of one entry, and entries without a source, keep their score;
# within one source the order stays. Chosen on passages 500-999 (benchmarks/
# recall_weights.py, seed 1); more weight finds more answers and fewer distinct sources.
SOURCE_WEIGHT = 0.25
# Recall looks twice. The names the first look's best source holds (every entry of it) and the
# query does not cue the second: a question that needs two passages names only the first ("the
# title of the boxer who ..."), and the boxer's passage names the title. Every entry outside
# the best's source gains this weight times the share of those names it holds, each name
# weighted by its rarity; the first look's best stays first. Chosen on passages the benches
# do not report (benchmarks/recall_hops.py, seed 1, shipped model): weight 0 / 1 / 2 / 4
# found HotpotQA's gold passages 0.672 / 0.684 / 0.697 / 0.711 of the time (201 questions
# over 2,000 passages), SQuAD's 0.932 / 0.927 / 0.931 / 0.932 and NQ's 0.962 / 0.962 /
# 0.962 / 0.960; the answer in the top 5 units' text on NQ 0.579 / 0.581 / 0.575 / 0.562.
# Letting the second look move the best too lost SQuAD's passage more often (0.927 at 2,
# 0.915 at 4).
BRIDGE_WEIGHT = 2.0


@dataclass
class Entry:
    """One paragraph-level memory entry.

    memory:      ``[parts * m, width]`` the paragraph compressed alone (forward invocation)
                 in ``parts`` parts, each into its own ``m`` slots, in order; in the bank's
                 entry dtype.
    tokens:      how many tokens the paragraph had: the length to reconstruct.
    entities:    what the entity extractor found in the paragraph.
    corrections: ``(position, token)`` where greedy decoding fed the corrections missed the
                 original (:func:`r3mem.entries.guided_decode`).
    checksum:    CRC-32 of the original token ids, so a replay that diverges (another
                 device or dtype decodes differently) is reported instead of returned.
    keywords:    how often each indexed word occurs in the paragraph (its exact recall).
    meta:        where the paragraph came from (source, session id, turn ids, ...).
    parts:       how many parts it was compressed in: a paragraph longer than the memory's
                 part length (its entry length unless told: a conversation's turn window)
                 is cut into parts as even as can be (:func:`r3mem.segment.part_lengths`);
                 corrections count positions in the whole paragraph.
    """

    memory: torch.Tensor
    tokens: int
    entities: list[str]
    corrections: list[tuple[int, int]]
    checksum: int
    keywords: dict[str, int]
    meta: dict[str, Any] = field(default_factory=dict)
    parts: int = 1

    def record(self) -> dict[str, Any]:
        """The JSON-able fields a memory file and a service row keep beside the memory
        (``parts`` only above one: entries of one part are written as before parts were)."""
        return {
            "entities": self.entities,
            "corrections": [list(fix) for fix in self.corrections],
            "checksum": self.checksum,
            "keywords": self.keywords,
            "meta": self.meta,
            **({"parts": self.parts} if self.parts > 1 else {}),
        }


def checksum(ids: Sequence[int]) -> int:
    return zlib.crc32(b"".join(int(i).to_bytes(8, "little", signed=True) for i in ids))


def round_state(state: MemoryState, entry_dtype: str) -> MemoryState:
    """``state`` as entries keep it (rounded to ``entry_dtype``), back in its own dtype:
    corrections found from it hold for the stored memory."""
    dtype = ENTRY_DTYPES[entry_dtype]
    # float8 saturates where float16 overflows to inf: compare with the largest value kept.
    if not (all_finite(state.memory) and state.memory.abs().max() <= torch.finfo(dtype).max):
        raise ValueError(f"memory values overflow {entry_dtype} entries; use entry_dtype='float32'")
    return replace(state, memory=state.memory.to(dtype).to(state.memory.dtype))


def entry_nbytes(memory: torch.Tensor, entry_dtype: str) -> int:
    """Bytes ``memory`` takes once kept as entries in ``entry_dtype``."""
    return memory.numel() * ENTRY_DTYPES[entry_dtype].itemsize


class MemoryBank:
    """The document memory, the paragraph entries (by id, oldest first), and the entity,
    keyword and source indexes over them.

    Entry ids only grow, so an id keeps naming the same paragraph after evictions.
    ``budget_entries`` (None: unbounded) caps the entries; :meth:`Memory.remember` folds the
    ones it evicts into the document memory instead of dropping them.
    """

    def __init__(
        self, document: MemoryState, budget_entries: int | None = None, entry_dtype: str = "float16"
    ) -> None:
        self.document = document
        self.entries: dict[int, Entry] = {}
        self.entity_index: dict[str, set[int]] = {}
        self.keyword_index = KeywordIndex()
        self.source_index: dict[str, set[int]] = {}  # source -> the entries cut from it
        self.next_id = 0
        # ids, [n, width] float32 unit rows: cosine is then one product a query
        self._pooled: tuple[list[int], torch.Tensor] | None = None
        self.budget_entries = check_budget(budget_entries)
        self.entry_dtype = check_entry_dtype(entry_dtype)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Entry) -> int:
        entry_id = self.next_id
        self.next_id += 1
        self.entries[entry_id] = entry
        self._pooled = None
        for entity in entry.entities:
            self.entity_index.setdefault(entity.lower(), set()).add(entry_id)
        self.keyword_index.add(entry_id, entry.keywords)
        if isinstance(source := entry.meta.get("source"), str):
            self.source_index.setdefault(source, set()).add(entry_id)
        return entry_id

    def remove(self, entry_id: int) -> Entry:
        entry = self.entries.pop(entry_id)
        self._pooled = None
        for entity in entry.entities:
            ids = self.entity_index.get(entity.lower(), set())
            ids.discard(entry_id)
            if not ids:
                self.entity_index.pop(entity.lower(), None)
        self.keyword_index.remove(entry_id, entry.keywords)
        if isinstance(source := entry.meta.get("source"), str):
            ids = self.source_index.get(source, set())
            ids.discard(entry_id)
            if not ids:
                self.source_index.pop(source, None)
        return entry

    def over_budget(self, extra: int = 0) -> int:
        """How many of the oldest entries must go once ``extra`` more are added."""
        if self.budget_entries is None:
            return 0
        return max(0, len(self.entries) + extra - self.budget_entries)

    def scores(
        self, query: torch.Tensor, entities: Sequence[str], words: Sequence[str] = ()
    ) -> dict[int, float]:
        """Each entry's :meth:`own_scores`, moved by the other entries of its source
        (:func:`lifted`): the first look. Then the second: the entries outside the best
        entry's source move by the names that source holds (:meth:`bridge_shares`), and the
        sources are lifted again. The first look's best is given the second look's top
        score, so it stays first and its score may tie the next."""
        own = self.own_scores(query, entities, words)
        if not BRIDGE_WEIGHT:
            return lifted(own, self.source_index.values(), SOURCE_WEIGHT)
        best, second = self.looked_twice(own, entities, BRIDGE_WEIGHT)
        # Placed first, the best wins a tie too: the sorts of recall are stable.
        top = {best: max(second.values())}
        return top | {i: score for i, score in second.items() if i != best}

    def looked_twice(
        self, own: dict[int, float], entities: Sequence[str], weight: float
    ) -> tuple[int, dict[int, float]]:
        """The first look's best entry (``own`` lifted by source), and every entry's score
        after the second look at ``weight``, the best not yet kept first."""
        first = lifted(own, self.source_index.values(), SOURCE_WEIGHT)
        best = max(first, key=first.__getitem__)
        shares = self.bridge_shares(best, entities)
        moved = {i: score + weight * shares.get(i, 0.0) for i, score in own.items()}
        return best, lifted(moved, self.source_index.values(), SOURCE_WEIGHT)

    def bridge_shares(self, best: int, entities: Sequence[str]) -> dict[int, float]:
        """What each entry outside ``best``'s source gains in the second look. The names are
        those the source's entries hold and ``entities`` (the query's) do not; an entry's
        share is the part of them it holds, each name weighted by log(1 + entries / entries
        naming it), so a name most entries hold cues little."""
        source = self.entries[best].meta.get("source")
        home = self.source_index.get(source, {best}) if isinstance(source, str) else {best}
        asked = {entity.lower() for entity in entities}
        names = {name.lower() for i in home for name in self.entries[i].entities} - asked
        weights = {n: math.log1p(len(self.entries) / len(self.entity_index[n])) for n in names}
        total = sum(weights.values())
        shares: dict[int, float] = {}
        for name, weight in weights.items():
            for entry_id in self.entity_index[name] - home:
                shares[entry_id] = shares.get(entry_id, 0.0) + weight / total
        return shares

    def own_scores(
        self, query: torch.Tensor, entities: Sequence[str], words: Sequence[str] = ()
    ) -> dict[int, float]:
        """Cosine of the pooled ``query`` memory ``[m, width]`` with each entry's (pooled over
        every part's slots), plus
        ``ENTITY_WEIGHT`` times the fraction of ``entities`` the entry mentions, plus
        ``KEYWORD_WEIGHT`` times the entry's BM25 over ``words`` relative to the best."""
        normalize = torch.nn.functional.normalize
        if self._pooled is None:  # pooled once per change of the entries, not per query
            ids = list(self.entries)
            rows = torch.stack([pooled(self.entries[i].memory) for i in ids])
            self._pooled = (ids, normalize(rows, dim=-1))
        ids, matrix = self._pooled
        cosine = matrix.to(query.device) @ normalize(pooled(query), dim=-1)
        scores = dict(zip(ids, cosine.tolist(), strict=True))
        wanted = {entity.lower() for entity in entities}
        for entity in wanted:
            for entry_id in self.entity_index.get(entity, ()):
                scores[entry_id] += ENTITY_WEIGHT / len(wanted)
        found = self.keyword_index.scores(words)
        best = max(found.values(), default=0.0)
        for entry_id, score in found.items():
            scores[entry_id] += KEYWORD_WEIGHT * score / best
        return scores

    def best(
        self, query: torch.Tensor, entities: Sequence[str], words: Sequence[str], k: int
    ) -> list[tuple[int, float]]:
        """The ids and :meth:`scores` of the ``k`` best entries, best first."""
        scores = self.scores(query, entities, words)
        best = sorted(scores, key=lambda entry_id: -scores[entry_id])[:k]
        return [(entry_id, scores[entry_id]) for entry_id in best]

    # ------------------------------------------------------------------------- serialisation

    def to_file_parts(self) -> tuple[dict[str, list[torch.Tensor]], dict[str, Any]]:
        """Tensors for one safetensors file, each as the pieces stacked along its first
        dimension (``entries``: one ``[m, width]`` piece per part of each entry, never
        stacked in memory), and JSON-able metadata."""
        tensors = {
            "document": list(self.document.memory),
            "document_tokens_seen": list(self.document.tokens_seen),
        }
        if self.entries:
            tensors["entries"] = [
                part
                for e in self.entries.values()
                for part in e.memory.reshape(e.parts, -1, e.memory.shape[-1]).unbind()
            ]
        meta = {
            "format": FORMAT,
            "fingerprint": self.document.fingerprint,
            "budget_entries": self.budget_entries,
            "entry_dtype": self.entry_dtype,
            "next_id": self.next_id,
            "entries": [
                {"id": entry_id, "tokens": e.tokens, **e.record()}
                for entry_id, e in self.entries.items()
            ],
        }
        return tensors, meta

    @classmethod
    def from_file_parts(
        cls,
        tensors: dict[str, torch.Tensor],
        meta: dict[str, Any],
        model: R3MemModel,
        recall_keywords: Callable[[list[Entry]], list[dict[str, int]]],
    ) -> MemoryBank:
        """Rebuild a bank from a file's parts, every field checked against ``model`` first
        (:func:`~r3mem.bankfile.check_meta` raises ``BankFileError`` naming the first wrong
        one). Entries saved before the keyword index get their keywords from
        ``recall_keywords`` (their exact recall), once."""
        shape = tuple(model.init_memory(1, "document").memory.shape)  # [1, m, width]
        records = check_meta(meta, tensors, shape, model)
        dtype = model.write_embeddings.dtype
        document = MemoryState(
            tensors["document"].to(model.device, dtype),
            "document",
            tensors["document_tokens_seen"].to(model.device, torch.long),
            meta["fingerprint"],
        )
        bank = cls(document, meta["budget_entries"], meta["entry_dtype"])
        stacked = tensors.get("entries", torch.empty(0, *shape[1:])).to(model.device)
        parts = [record.get("parts", 1) for record in records]  # files before parts: one
        entries = [
            Entry(
                memory=memory.flatten(0, 1),
                tokens=record["tokens"],
                entities=list(record["entities"]),
                corrections=[(p, t) for p, t in record["corrections"]],
                checksum=record["checksum"],
                keywords=dict(record.get("keywords", {})),
                meta=dict(record["meta"]),
                parts=count,
            )
            for record, count, memory in zip(records, parts, stacked.split(parts), strict=True)
        ]
        older = [
            entry
            for entry, record in zip(entries, records, strict=True)
            if "keywords" not in record
        ]
        for entry, words in zip(older, recall_keywords(older), strict=True):
            entry.keywords = words
        for record, entry in zip(records, entries, strict=True):
            bank.next_id = record["id"]
            bank.add(entry)
        bank.next_id = meta["next_id"]
        return bank


def lifted(
    own: dict[int, float], sources: Iterable[Collection[int]], weight: float
) -> dict[int, float]:
    """``own`` scores, each entry's plus ``weight`` times how far the best own score among
    the other entries of its source lies above the mean own score (negative below it).
    Within one source the order stays as it was (``weight`` < 1); an entry alone in its
    source, or in none of ``sources``, keeps its score."""
    scores = dict(own)
    mean = sum(own.values()) / len(own) if own else 0.0
    for ids in sources:
        if len(ids) < 2:
            continue
        first, second = heapq.nlargest(2, ids, key=own.__getitem__)
        for entry_id in ids:
            best = own[second if entry_id == first else first]
            scores[entry_id] += weight * (best - mean)
    return scores


def check_budget(budget: int | None) -> int | None:
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget_entries must be an int or None, got {type(budget).__name__}")
    if budget < 1:
        raise ValueError(f"budget_entries must be at least 1, got {budget}")
    return budget


def check_entry_dtype(name: str) -> str:
    if name not in ENTRY_DTYPES:
        raise ValueError(f"entry_dtype must be one of {', '.join(ENTRY_DTYPES)}, got {name!r}")
    return name
