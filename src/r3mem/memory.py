"""``Memory``: the user-facing handle on a trained R³Mem model and its tokenizer.

``Memory.load()`` with no argument opens the default model shipped inside the package, with
no network. ``remember`` / ``recall`` write to and read from the hierarchical bank of
:mod:`r3mem.bank`; ``save`` / ``Memory.open`` keep it in one safetensors file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .bank import (
    Entry,
    MemoryBank,
    check_budget,
    check_entry_dtype,
)
from .bankfile import (
    BankFileError,
    check_target,
    check_written_by,
    model_meta,
    read_file,
    stored_entry_tokens,
    stored_part_tokens,
    write_file,
)
from .checkpoint import load_base, locate_model, model_source
from .entries import Diverged, exact_tokens, read, write_entries
from .files import LOCK_TIMEOUT, locked
from .hierarchy import EntityExtractor, default_entity_extractor
from .keywords import keywords
from .model import R3MemModel
from .segment import (
    Segment,
    Tokens,
    batched,
    check_length,
    check_segments,
    entry_length,
    part_length,
    segment_stream,
)
from .sources import Conversation, check_queries
from .state import MemoryState

# Segments written, compressed and corrected at once by ``remember``: what its working memory
# holds beside the entries it keeps, whatever the length of the text.
WRITE_BATCH = 64


@dataclass(frozen=True)
class Remembered:
    """What one ``remember`` call did: entries added, tokens written, entries evicted."""

    entries_added: int
    tokens: int
    evicted: int


@dataclass(frozen=True)
class Recalled:
    """One recalled passage, reconstructed from its memory entry."""

    text: str
    score: float
    entry_id: int
    meta: dict[str, Any]
    exact: bool  # False: decoded greedily (steered by its entities and keywords), may differ

    @property
    def label(self) -> str:
        """How to read ``text``: as stored, or decoded from memory and perhaps not equal."""
        return "exact" if self.exact else "approximate: decoded from memory"


class Memory:
    """An R3MemModel with its tokenizer and a hierarchical memory bank.

    ``model_dir`` is the directory the model was loaded from; saved memories record it so
    :meth:`open` finds the model again.
    """

    def __init__(
        self,
        model: R3MemModel,
        tokenizer: PreTrainedTokenizerBase,
        model_dir: str | Path | None = None,
        budget_entries: int | None = None,
        entry_dtype: str = "float16",
        entry_tokens: int | None = None,
        part_tokens: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.tokens = Tokens(tokenizer)
        self.model_dir = None if model_dir is None else Path(model_dir).resolve()
        with torch.no_grad():
            document = model.init_memory(1, "document").detach()
        self.bank = MemoryBank(document, budget_entries, entry_dtype)
        self._lengths(entry_tokens, part_tokens)
        self._extractor: EntityExtractor | None = None

    def _lengths(self, entry_tokens: int | None, part_tokens: int | None) -> None:
        config = self.model.config
        self._entry_tokens = entry_length(entry_tokens, config.segment_length)
        self._part_tokens = part_length(
            part_tokens, self._entry_tokens, config.segment_length, config.part_tokens
        )

    @property
    def entry_tokens(self) -> int:
        """The most tokens in an entry of a text; fixed, as a file keeps one length."""
        return self._entry_tokens

    @property
    def part_tokens(self) -> int:
        """The most tokens in one part of an entry, each part compressed alone; fixed."""
        return self._part_tokens

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        budget_entries: int | None = None,
        entry_dtype: str = "float16",
        entry_tokens: int | None = None,
        part_tokens: int | None = None,
    ) -> Memory:
        """Open a model: a folder holding ``base/`` and ``adapter/`` (the shipped default when
        ``path`` is None), an adapter folder whose config names its base, or the name of a base
        whose adapters ship in the package (``smollm2-135m``): :func:`.checkpoint.locate_model`.
        Nothing is downloaded for a local path. ``entry_dtype`` is the dtype paragraph entries
        are kept and saved in (``float16``, ``bfloat16``, ``float32`` or ``float8``);
        ``entry_tokens`` the most tokens ``remember`` puts in an entry of a text
        (:func:`entry_length`); ``part_tokens`` the most in one part of an entry, each
        compressed alone (:func:`part_length`; None: the adapters' ``part_tokens`` up to
        ``entry_tokens``, else ``entry_tokens``). A saved memory keeps
        all three."""
        check_entry_dtype(entry_dtype)  # before the model is loaded, not after
        root, adapter_dir, base_dir = locate_model(path)
        tokenizer = AutoTokenizer.from_pretrained(model_source(base_dir))
        base = load_base(base_dir)
        model = R3MemModel.from_pretrained(adapter_dir, base_model=base).eval()
        return cls(model, tokenizer, root, budget_entries, entry_dtype, entry_tokens, part_tokens)

    def fresh(self, *, entry_tokens: int | None = None, part_tokens: int | None = None) -> Memory:
        """An empty memory on the same model, tokenizer and entity extractor: one per
        document set or conversation in a benchmark; lengths not given are this memory's."""
        memory = Memory(
            self.model,
            self.tokenizer,
            self.model_dir,
            self.budget_entries,
            self.bank.entry_dtype,
            self.entry_tokens if entry_tokens is None else entry_tokens,
            self.part_tokens if part_tokens is None else part_tokens,
        )
        memory._extractor = self._extractor
        return memory

    def encode(self, text: str):
        """Token ids ``[1, T]`` of ``text``; empty text is an error."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            raise ValueError("empty text: nothing to remember")
        return ids.to(self.model.device)

    @property
    def extractor(self) -> EntityExtractor:
        """The entity extractor, made once (spaCy when installed, else the rules)."""
        if self._extractor is None:
            self._extractor = default_entity_extractor()
        return self._extractor

    def count_tokens(self, text: str) -> int:
        return self.tokens.count(text)

    # ----------------------------------------------------------------------------- remember

    @property
    def budget_entries(self) -> int | None:
        """The most paragraph entries kept (None: unbounded). Lowering it evicts at once."""
        return self.bank.budget_entries

    @budget_entries.setter
    def budget_entries(self, budget: int | None) -> None:
        budget = check_budget(budget)
        old = self.bank.budget_entries
        self.bank.budget_entries = budget
        try:
            self._commit(self.bank.document, [])
        except BaseException:
            self.bank.budget_entries = old
            raise

    def remember(
        self,
        content: str | Sequence[dict[str, Any]] | Sequence[Segment],
        source: str | None = None,
        *,
        progress: bool = False,
    ) -> Remembered:
        """Write ``content`` into every level: the document memory (recurrently), one paragraph
        entry per segment (compressed alone, in parts of at most ``part_tokens``, with its
        exact-recall corrections) and the entity index. ``content`` is a text, chat messages
        ``{speaker, text[, time]}`` (one session), or segments already cut by
        :meth:`segments`. Over budget, the oldest entries are folded into the document memory.

        A text is cut and written ``WRITE_BATCH`` segments at a time, so the work beside the
        entries kept does not grow with the text; ``progress`` shows a bar from the start.
        The bank changes only once all of it is written: an error leaves it as it was.
        """
        if source is not None and not isinstance(source, str):
            raise TypeError(f"source must be a str or None, got {type(source).__name__}")
        stream, total = self._segment_stream(content)
        budget = self.bank.budget_entries
        document, tokens = self.bank.document, 0
        pending: list[tuple[Entry, list[int] | None]] = []  # ids kept only to fold, if budgeted
        dropped: list[torch.Tensor] = []  # ids of new entries over budget on their own
        with tqdm(total=total, desc="remembering", unit="char", disable=not progress) as bar:
            for batch, done in batched(stream, WRITE_BATCH):
                ids = [segment.ids for segment in batch]
                with torch.no_grad():
                    document = self.model.write_in_order(document, ids)
                    entries = self.entries(batch, source)
                tokens += sum(map(len, ids))
                pending += zip(entries, ids if budget else [None] * len(ids), strict=True)
                over = 0 if budget is None else max(0, len(pending) - budget)
                dropped += [torch.tensor(row) for _, row in pending[:over]]
                del pending[:over]
                bar.update(done - bar.n)
        entries = [entry for entry, _ in pending]
        evicted = self._commit(document, entries, dropped)
        return Remembered(len(dropped) + len(entries), tokens, evicted)

    def entries(self, segments: Sequence[Segment], source: str | None = None) -> list[Entry]:
        """One entry per segment (:func:`r3mem.entries.write_entries`): what ``remember``
        adds to the bank, for a store of its own (``r3mem serve``)."""
        check_segments(segments, self.model.config.segment_length)
        extra = {"source": source} if source is not None else {}
        return write_entries(
            self.model, self.tokenizer, segments, self.part_tokens, self.bank.entry_dtype, extra
        )

    def segments(
        self,
        content: str | Conversation | Sequence[dict[str, Any]] | Sequence[Segment],
        max_tokens: int | None = None,
    ) -> list[Segment]:
        """``content`` cut into the segments ``remember`` writes (:func:`r3mem.segment.cut`),
        with token ids, entities and meta: a text, a conversation, or chat messages (one
        session); segments are checked and returned as they are. ``max_tokens`` is the most
        a segment holds, up to the model's segment length (None: ``entry_tokens`` for a text,
        the segment length for a conversation's turn windows): fewer tokens a slot give back
        more of the text, at more entries."""
        if max_tokens is not None:
            check_length(max_tokens, self.model.config.segment_length, "max_tokens")
        stream, _ = self._segment_stream(content, max_tokens)
        return [segment for segment, _ in stream]

    def _segment_stream(
        self,
        content: str | Conversation | Sequence[dict[str, Any]] | Sequence[Segment],
        max_tokens: int | None = None,
    ) -> tuple[Iterator[tuple[Segment, int]], int]:
        """Segments of at most ``max_tokens`` (None: ``entry_tokens`` for a text, else the
        segment length); segments already cut may hold up to the segment length."""
        longest = self.model.config.segment_length
        if max_tokens is None:
            max_tokens = self.entry_tokens if isinstance(content, str) else longest
        return segment_stream(content, self.tokens, max_tokens, self.extractor, longest)

    def _commit(
        self, document: MemoryState, new: list[Entry], dropped: Sequence[torch.Tensor] = ()
    ) -> int:
        """Add ``new`` and fold the oldest entries over budget into ``document``: every old
        entry that must go, then the new ones ``remember`` already dropped (their token ids:
        the oldest of the new, over budget on their own). The bank changes only once every
        model call has succeeded. Returns how many were evicted."""
        count = self.bank.over_budget(len(new) + len(dropped))
        old = list(self.bank.entries)[: count - len(dropped)]
        with torch.no_grad():
            folded = exact_tokens(self.model, [self.bank.entries[i] for i in old]) if old else []
            document = self.model.write_in_order(document, [*folded, *dropped])
        self.bank.document = document
        for entry_id in old:
            self.bank.remove(entry_id)
        self.bank.next_id += len(dropped)  # ids as if the dropped had been added, then evicted
        for entry in new:
            self.bank.add(entry)
        return count

    # ----------------------------------------------------------------------------- recall

    def recall(
        self, query: str, k: int = 3, exact: bool = True, guided: bool = True
    ) -> list[Recalled]:
        """The ``k`` entries that best match ``query``, reconstructed from memory, best first.

        The query is compressed by the same forward invocation as a paragraph; the score is
        the cosine of the slot-averaged memories plus the entity and keyword bonuses, moved
        by the best of the other entries remembered with the same ``source``, then by the
        names the best source holds and the query does not; the best hit keeps the first
        place with the top score (:meth:`MemoryBank.scores`).
        The hits are read back ``exact``ly: decoded from their memories, fed the stored
        corrections, so the text comes back as remembered (for about what a greedy decode
        costs). ``exact=False`` decodes greedily without them, steered by their entities and
        keywords (``guided``, :mod:`r3mem.guide`; False: from the memory alone), which may
        differ from the text. Fewer than ``k`` come back when fewer are stored.
        """
        return self.recall_batch([query], k, exact, guided)[0]

    def recall_batch(
        self, queries: Sequence[str], k: int = 3, exact: bool = True, guided: bool = True
    ) -> list[list[Recalled]]:
        """:meth:`recall` of each query, at once: the queries compressed in one batch and
        every hit decoded in one batch. A decoding step reads every weight once however many
        rows it decodes, so on a CPU several queries cost a fraction of their cost one by
        one."""
        check_queries(queries, k)
        if not self.bank.entries or not queries:
            return [[] for _ in queries]
        memories = self.query_memories(queries)
        chosen = [
            self.bank.best(memory, self.extractor(query), keywords(query), k)
            for query, memory in zip(queries, memories, strict=True)
        ]
        ids = [entry_id for hits in chosen for entry_id, _ in hits]
        try:
            texts = iter(self.read([self.bank.entries[i] for i in ids], exact, guided))
        except Diverged as err:
            named = ", ".join(f"#{ids[row]}" for row in err.rows)
            more = f" ({named}); exact=False (r3mem recall --no-exact) reads them approximately"
            raise Diverged(err.rows, err.tokens, more) from err
        return [
            [
                Recalled(next(texts), score, i, dict(self.bank.entries[i].meta), exact)
                for i, score in hits
            ]
            for hits in chosen
        ]

    @torch.no_grad()
    def query_memories(self, queries: Sequence[str]) -> torch.Tensor:
        """``[len(queries), m, width]``: each query compressed by the same forward invocation
        as a paragraph, all in one batch."""
        return self.model.write_alone([self.encode(query)[0].tolist() for query in queries]).memory

    def read(self, entries: Sequence[Entry], exact: bool = True, guided: bool = True) -> list[str]:
        """The texts of ``entries`` (:meth:`read_tokens`)."""
        return [self.tokenizer.decode(ids) for ids in self.read_tokens(entries, exact, guided)]

    def read_tokens(
        self, entries: Sequence[Entry], exact: bool = True, guided: bool = True
    ) -> list[list[int]]:
        """The token ids of ``entries`` decoded from their memories (:func:`r3mem.entries.read`)."""
        return read(self.model, self.tokenizer, entries, exact, guided)

    def recall_keywords(self, entries: Sequence[Entry]) -> list[dict[str, int]]:
        """The keywords of ``entries``' exact recall, for entries stored before the keyword
        index (as ``remember`` counts them)."""
        texts = []
        for start in range(0, len(entries), WRITE_BATCH):
            texts += self.read(entries[start : start + WRITE_BATCH], exact=True)
        return [keywords(text) for text in texts]

    # ----------------------------------------------------------------------------- save / open

    def save(self, path: str | Path, *, timeout: float = LOCK_TIMEOUT) -> None:
        """Write the bank to one safetensors file (tensors + JSON metadata with the model's
        fingerprint and directory) under the file's lock, atomically: written whole or not
        at all, with the old file's permissions; it replaces what the file held (use
        :meth:`editing` to add to a file other processes write). Temporaries that writers
        killed mid-save left beside it are removed."""
        tensors, meta = self.bank.to_file_parts()
        meta.update(model_meta(self.model, self.model_dir, self.entry_tokens, self.part_tokens))
        write_file(path, tensors, meta, timeout)

    @classmethod
    @contextmanager
    def editing(
        cls,
        path: str | Path,
        model_dir: str | Path | None = None,
        *,
        timeout: float = LOCK_TIMEOUT,
        entry_tokens: int | None = None,
        part_tokens: int | None = None,
    ) -> Iterator[Memory]:
        """The memory file at ``path`` (a new memory on ``model_dir`` when there is none yet,
        of ``entry_tokens``-token entries in ``part_tokens``-token parts), read, changed by the
        block and saved when it ends normally, all under the file's lock: a second writer
        waits (up to ``timeout`` seconds) and then changes what the first saved, so no
        writer's entries are lost. A file that keeps other lengths than asked is refused."""
        path = check_target(path)
        with locked(path, timeout):
            if not path.exists():
                memory = cls.load(model_dir, entry_tokens=entry_tokens, part_tokens=part_tokens)
            else:
                memory = cls.open(path, model_dir)
                memory._check_kept(path, entry_tokens=entry_tokens, part_tokens=part_tokens)
            yield memory
            memory.save(path, timeout=timeout)

    def _check_kept(self, path: Path, **asked: int | None) -> None:
        """A file keeps the entry and part lengths it was made with: others are refused."""
        for name, value in asked.items():
            if value is None:
                continue
            check_length(value, self.model.config.segment_length, name)
            if value != getattr(self, name):
                noun = "entries" if name == "entry_tokens" else "parts"
                raise ValueError(
                    f"{path} keeps {noun} of at most {getattr(self, name)} tokens; "
                    f"{name}={value!r} is for a new memory file"
                )

    @classmethod
    def open(cls, path: str | Path, model_dir: str | Path | None = None) -> Memory:
        """Open a memory saved by :meth:`save`, with the model it recorded (or ``model_dir``).

        A memory written by another base model, config or adapter is refused (ValueError)."""
        tensors, meta = read_file(path)
        if model_dir is None and meta["model_dir"] is None:
            raise ValueError(f"{path}: records no model directory; pass model_dir")
        memory = cls.load(meta["model_dir"] if model_dir is None else model_dir)
        return memory._with_file(path, tensors, meta)

    def reopen(self, path: str | Path) -> Memory:
        """The memory saved at ``path`` on this memory's model, without loading the model
        again (a benchmark resuming a memory it wrote); this memory is left as it is."""
        return self.fresh()._with_file(path, *read_file(path))

    def _with_file(self, path: str | Path, tensors: dict, meta: dict) -> Memory:
        """This memory holding the bank of the file ``read_file`` read, once the file is
        found written by this base model, config and adapter."""
        check_written_by(path, meta, self.model, self.model_dir)
        try:
            self.bank = MemoryBank.from_file_parts(tensors, meta, self.model, self.recall_keywords)
        except BankFileError as err:
            raise ValueError(f"{path}: not a valid r3mem memory file: {err}") from err
        entry_tokens = stored_entry_tokens(meta, self.model.config.segment_length)
        self._lengths(entry_tokens, stored_part_tokens(meta, entry_tokens))
        return self
