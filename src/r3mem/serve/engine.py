"""The model's side of the service: one thread runs every job that needs the model or
changes the store, in the order the jobs arrived.

One thread because the model is one (a second would only contend for the same cores), and
because it orders every user's writes for free: a write is applied after every job that
came before it. Jobs of one kind that wait together run as one batch through the model (the
segments of several ``add`` requests written at once; several queries compressed and their
results decoded at once), which is where concurrency buys throughput on one model.

Search reads each user's entries from a small cache, refreshed when the store says that
user's version moved (another server on the same PostgreSQL included).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from ..bank import ENTRY_DTYPES, Entry, MemoryBank
from ..bankfile import is_int
from ..checkpoint import adapter_digest
from ..entries import Diverged
from ..keywords import keywords
from ..memory import WRITE_BATCH, Memory
from .store import CorruptEntry, Store, StoredEntry, decode_memory, encode_memory

log = logging.getLogger(__name__)
LEVEL = "paragraph"  # the level of every entry the service stores


class NotFound(LookupError):
    """No such memory for this tenant (another tenant's ids are not found either)."""


class BadInput(ValueError):
    """What a request asked for cannot be done (an empty text, say): the client's error."""


@dataclass
class Job:
    kind: str  # "add", "search", "reconstruct", "delete_entry", "delete_user"
    tenant: str
    args: tuple
    future: Future = field(default_factory=Future)


@dataclass
class _UserBank:
    version: int
    bank: MemoryBank
    corrupt: set[int]


class Engine:
    """Runs jobs on the model and the store; :meth:`submit` returns a future of the result.

    ``max_batch`` jobs at most run as one batch (1: none batched); ``cache_users`` users'
    entries are kept decoded, the least recently searched dropped first.
    """

    def __init__(
        self, memory: Memory, store: Store, max_batch: int = 16, cache_users: int = 64
    ) -> None:
        for name, value in (("max_batch", max_batch), ("cache_users", cache_users)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.memory, self.store = memory, store
        self.max_batch, self.cache_users = max_batch, cache_users
        self.fingerprint = memory.model.fingerprint
        store.bind_model(self.fingerprint, adapter_digest(memory.model.trainable_parameters()))
        shape = memory.model.init_memory(1, "paragraph").memory.shape[1:]
        self.entry_shape, self.entry_dtype = tuple(shape), ENTRY_DTYPES[memory.bank.entry_dtype]
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition()
        self._cache: OrderedDict[tuple[str, str], _UserBank] = OrderedDict()
        self._handlers: dict[str, Callable[[list[Job]], None]] = {
            "add": self._add,
            "search": self._search,
            "reconstruct": self._reconstruct,
            "delete_entry": self._delete_entry,
            "delete_user": self._delete_user,
        }
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="r3mem-engine", daemon=True)
        self._thread.start()

    def submit(self, kind: str, tenant: str, *args: Any) -> Future:
        job = Job(kind, tenant, args)
        with self._ready:
            if not self._running:
                raise RuntimeError("the engine is stopped")
            self._jobs.append(job)
            self._ready.notify()
        return job.future

    def stop(self) -> None:
        """Finish the jobs already queued, then end the thread."""
        with self._ready:
            self._running = False
            self._ready.notify()
        self._thread.join()

    def _take(self) -> list[Job] | None:
        """The oldest job and the jobs of its kind right behind it (order kept); None once
        stopped with nothing left."""
        with self._ready:
            while not self._jobs and self._running:
                self._ready.wait()
            if not self._jobs:
                return None
            batch: list[Job] = []
            while self._jobs and len(batch) < self.max_batch:
                if batch and self._jobs[0].kind != batch[0].kind:
                    break
                job = self._jobs.popleft()
                if job.future.set_running_or_notify_cancel():  # False: its caller gave up
                    batch.append(job)
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            if batch:
                self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        """Run a batch; if it fails as a whole, its unanswered jobs again one by one, so one
        request's failure is its own and never another tenant's."""
        try:
            self._handlers[batch[0].kind](batch)
        except Exception as err:
            waiting = [job for job in batch if not job.future.done()]
            if len(batch) > 1:
                for job in waiting:
                    self._run([job])
                return
            log.exception("engine: a %s job failed", batch[0].kind)
            for job in waiting:
                job.future.set_exception(err)

    # ----------------------------------------------------------------------------- writes

    def _add(self, jobs: list[Job]) -> None:
        """Cut every job's content, write all segments in batches, then store each job's
        entries in its own transaction, in arrival order."""
        cut: list[tuple[Job, list]] = []
        for job in jobs:
            try:
                cut.append((job, self.memory.segments(job.args[0])))
            except (ValueError, TypeError) as err:
                job.future.set_exception(BadInput(str(err)))
        segments = [segment for _, found in cut for segment in found]
        entries: list[Entry] = []
        with torch.no_grad():
            for start in range(0, len(segments), WRITE_BATCH):
                entries += self.memory.entries(segments[start : start + WRITE_BATCH])
        for job, found in cut:
            _, user_id, metadata = job.args
            mine, entries = entries[: len(found)], entries[len(found) :]
            rows = [self._row(entry, metadata) for entry in mine]
            job.future.set_result(self.store.add_entries(job.tenant, user_id, rows))

    def _row(self, entry: Entry, metadata: dict) -> tuple[str, int, dict, bytes]:
        record = {**entry.record(), "meta": {**entry.meta, **metadata}}
        return LEVEL, entry.tokens, record, encode_memory(entry.memory, self.fingerprint)

    def _delete_entry(self, jobs: list[Job]) -> None:
        for job in jobs:
            (entry_id,) = job.args
            if self.store.delete_entry(job.tenant, entry_id):
                job.future.set_result(True)
            else:
                job.future.set_exception(NotFound(f"no memory {entry_id}"))

    def _delete_user(self, jobs: list[Job]) -> None:
        for job in jobs:
            job.future.set_result(self.store.delete_user(job.tenant, job.args[0]))

    # ----------------------------------------------------------------------------- reads

    def _entry(self, stored: StoredEntry) -> Entry:
        """A stored row as the bank's entry; :class:`CorruptEntry` when its blob is bad.
        Rows stored before the keyword index get their keywords from their exact recall
        (:meth:`_user_bank` stores them, so that happens once a row)."""
        assert stored.blob is not None
        record = stored.record
        parts = record.get("parts", 1)  # rows stored before parts: one
        if not is_int(parts, 1, stored.tokens + 1):
            raise CorruptEntry(
                f"memory {stored.id}: its stored record is corrupt (parts {parts!r})"
            )
        slots, width = self.entry_shape
        shape = (parts * slots, width)
        memory = decode_memory(stored.id, stored.blob, self.fingerprint, shape, self.entry_dtype)
        try:
            fixes = [(int(p), int(t)) for p, t in record["corrections"]]
            entities = [str(entity) for entity in record["entities"]]
            words = record.get("keywords")
            entry = Entry(
                memory,
                stored.tokens,
                entities,
                fixes,
                int(record["checksum"]),
                {} if words is None else {str(w): int(n) for w, n in words.items()},
                dict(record["meta"]),
                parts,
            )
            if words is None:
                entry.keywords = self.memory.recall_keywords([entry])[0]
            return entry
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CorruptEntry(
                f"memory {stored.id}: its stored record is corrupt ({err!r})"
            ) from err

    def _user_bank(self, tenant: str, user_id: str) -> _UserBank:
        """The user's entries, decoded, as of the store's current version of the user."""
        key = (tenant, user_id)
        version = self.store.version(tenant, user_id)
        cached = self._cache.get(key)
        if cached is not None and cached.version == version:
            self._cache.move_to_end(key)
            return cached
        if cached is None:
            cached = _UserBank(version, self.memory.fresh().bank, set())
        listed = {entry.id: entry for entry in self.store.entries(tenant, user_id)}
        for gone in [i for i in cached.bank.entries if i not in listed]:
            cached.bank.remove(gone)
        cached.corrupt &= set(listed)
        new = [i for i in listed if i not in cached.bank.entries and i not in cached.corrupt]
        recovered = []
        for stored in self.store.with_blobs(tenant, new):
            try:
                entry = self._entry(stored)
            except CorruptEntry as err:
                log.warning("%s; search leaves it out", err)
                cached.corrupt.add(stored.id)
                continue
            if stored.record.get("keywords") is None:  # as _entry decides to recover them
                recovered.append((stored.id, {**stored.record, "keywords": entry.keywords}))
            cached.bank.next_id = stored.id
            cached.bank.add(entry)
        if recovered:
            self.store.set_records(tenant, recovered)
        cached.bank.next_id = max(listed, default=-1) + 1
        cached.version = version
        self._cache[key] = cached
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_users:
            self._cache.popitem(last=False)
        return cached

    def _search(self, jobs: list[Job]) -> None:
        """Queries compressed in one batch; every job's best entries decoded in one batch
        per ``exact`` setting."""
        for job in jobs:
            try:
                self.memory.encode(job.args[1])
            except ValueError as err:
                job.future.set_exception(BadInput(str(err)))
        jobs = [job for job in jobs if not job.future.done()]
        if not jobs:
            return
        queries = self.memory.query_memories([job.args[1] for job in jobs])
        chosen: list[tuple[Job, list[tuple[int, float, Entry]]]] = []
        for job, query_memory in zip(jobs, queries, strict=True):
            user_id, query, k, _ = job.args
            bank = self._user_bank(job.tenant, user_id).bank
            if not bank.entries:
                chosen.append((job, []))
                continue
            words = keywords(query)
            hits = bank.best(query_memory, self.memory.extractor(query), words, k)
            chosen.append((job, [(i, score, bank.entries[i]) for i, score in hits]))
        for exact in (False, True):
            picked = [(job, hits) for job, hits in chosen if job.args[3] == exact]
            read = iter(
                self._read_hits([(i, entry) for _, hits in picked for i, _, entry in hits], exact)
            )
            for job, hits in picked:
                job.future.set_result(
                    [
                        {"id": i, "score": score, "meta": entry.meta} | next(read)
                        for i, score, entry in hits
                    ]
                )

    def _read_hits(self, hits: list[tuple[int, Entry]], exact: bool) -> list[dict[str, Any]]:
        """Each hit's text and whether it was read exactly. A hit whose exact replay diverges
        (a changed row, or a device that decodes differently from the writer's) comes back
        decoded from memory, marked ``exact: false``, and the log names it; the others stay
        exact."""
        entries = [entry for _, entry in hits]
        try:
            return [{"text": text, "exact": exact} for text in self.memory.read(entries, exact)]
        except Diverged as err:
            bad, tokens = err.rows, err.tokens
        log.warning("search: read back approximately: memories %s", [hits[r][0] for r in bad])
        read_again = self.memory.read([entries[r] for r in bad], exact=False)
        approximate = dict(zip(bad, read_again, strict=True))
        return [
            {"text": approximate[r], "exact": False}
            if r in approximate
            else {"text": self.memory.tokenizer.decode(ids), "exact": True}
            for r, ids in enumerate(tokens)
        ]

    def _reconstruct(self, jobs: list[Job]) -> None:
        found: dict[bool, list[tuple[Job, Entry]]] = {False: [], True: []}
        for job in jobs:
            entry_id, exact = job.args
            stored = self.store.with_blobs(job.tenant, [entry_id])
            if not stored:
                job.future.set_exception(NotFound(f"no memory {entry_id}"))
                continue
            try:
                found[exact].append((job, self._entry(stored[0])))
            except CorruptEntry as err:
                job.future.set_exception(err)
        for exact, pairs in found.items():
            try:
                texts = self.memory.read([entry for _, entry in pairs], exact)
            except Diverged as err:  # those that diverged fail alone; the rest are read
                for row, ((job, _), ids) in enumerate(zip(pairs, err.tokens, strict=True)):
                    if row in err.rows:
                        why = f"memory {job.args[0]}: {err}; ?exact=false reads it approximately"
                        job.future.set_exception(CorruptEntry(why))
                    else:
                        job.future.set_result(self.memory.tokenizer.decode(ids))
                continue
            for (job, _), text in zip(pairs, texts, strict=True):
                job.future.set_result(text)
