"""The service's database: tenants' API keys and their users' memory entries.

One interface over two engines: SQLite in WAL mode (one file, the embedded default) and
PostgreSQL through a ``postgresql://`` URL. The SQL is written once (``?`` placeholders,
rewritten for psycopg); only the column types differ, in the migrations. A memory entry's
tensor is kept as a safetensors blob that records its shape, dtype and the model's fingerprint,
so a blob that does not belong to the model serving it is refused, not decoded.

Every change is one transaction: a write the service acknowledged is committed (SQLite with
``synchronous=FULL``), so it survives the process being killed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..tensorfile import all_finite

BLOB_FORMAT = "r3mem.entry/1"
KEY_PREFIX = "r3m_"
IN_CHUNK = 500  # ids per ``IN (...)`` query
POOL_SIZE = 8  # connections one Store opens at most
POOL_WAIT = 60.0  # seconds to wait for a free connection

# Migration N brings the schema from version N to N + 1; each dialect has its own DDL.
MIGRATIONS: list[dict[str, list[str]]] = [
    {
        "sqlite": [
            "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, key_id TEXT NOT NULL UNIQUE, "
            "tenant TEXT NOT NULL, created_at REAL NOT NULL)",
            "CREATE TABLE users (tenant TEXT NOT NULL, user_id TEXT NOT NULL, "
            "version INTEGER NOT NULL, PRIMARY KEY (tenant, user_id))",
            "CREATE TABLE memories (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, "
            "user_id TEXT NOT NULL, level TEXT NOT NULL, created_at REAL NOT NULL, "
            "tokens INTEGER NOT NULL, record TEXT NOT NULL, memory BLOB NOT NULL)",
            "CREATE INDEX memories_user ON memories (tenant, user_id, id)",
        ],
        "postgresql": [
            "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, key_id TEXT NOT NULL UNIQUE, "
            "tenant TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE users (tenant TEXT NOT NULL, user_id TEXT NOT NULL, "
            "version BIGINT NOT NULL, PRIMARY KEY (tenant, user_id))",
            "CREATE TABLE memories (id BIGSERIAL PRIMARY KEY, tenant TEXT NOT NULL, "
            "user_id TEXT NOT NULL, level TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
            "tokens INTEGER NOT NULL, record TEXT NOT NULL, memory BYTEA NOT NULL)",
            "CREATE INDEX memories_user ON memories (tenant, user_id, id)",
        ],
    },
]
SCHEMA_VERSION = len(MIGRATIONS)


class CorruptEntry(Exception):
    """A stored entry that cannot be read back; the message names the entry and why."""


@dataclass(frozen=True)
class StoredEntry:
    """One row of ``memories``; ``blob`` is None where the listing did not read it."""

    id: int
    user_id: str
    level: str
    created_at: float
    tokens: int
    record: dict[str, Any]  # entities, corrections, checksum, keywords, meta, parts
    blob: bytes | None = None


def encode_memory(memory: torch.Tensor, fingerprint: str) -> bytes:
    """One entry's memory ``[parts * m, width]`` as safetensors bytes naming the model that
    wrote it."""
    meta = {"format": BLOB_FORMAT, "fingerprint": fingerprint}
    return save_tensors({"memory": memory.detach().cpu().contiguous()}, metadata=meta)


def decode_memory(
    entry_id: int, blob: bytes, fingerprint: str, shape: tuple, dtype
) -> torch.Tensor:
    """The tensor of ``blob``, once it is found to be this model's ``shape`` and ``dtype``."""
    try:
        tensors = load_tensors(blob)
        # safetensors.torch.load drops the header's metadata: read it from the header itself.
        header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
        meta = header.get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as err:
        raise CorruptEntry(f"memory {entry_id}: its stored blob is corrupt ({err})") from err
    memory = tensors.get("memory")
    problem = None
    if meta.get("format") != BLOB_FORMAT or set(tensors) != {"memory"}:
        problem = "not an r3mem entry blob"
    elif meta.get("fingerprint") != fingerprint:
        problem = "written by another model"
    elif tuple(memory.shape) != shape or memory.dtype != dtype:
        problem = f"shape {tuple(memory.shape)} {memory.dtype}, expected {shape} {dtype}"
    elif not all_finite(memory):
        problem = "holds values that are not finite"
    if problem:
        raise CorruptEntry(f"memory {entry_id}: its stored blob is corrupt ({problem})")
    return memory


def hash_key(key: str) -> str:
    # Keys are 256 random bits: a plain SHA-256 stores them safely (no dictionary to try).
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _is_postgres(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


class Store:
    """The database at ``target``: a file path (SQLite) or a ``postgresql://`` URL.

    Opening it migrates the schema to :data:`SCHEMA_VERSION` (refusing a newer one). Safe to
    use from many threads, which share a pool of at most ``connections`` connections.
    """

    def __init__(self, target: str | Path, connections: int = POOL_SIZE) -> None:
        self.target = str(target)
        self.dialect = "postgresql" if _is_postgres(self.target) else "sqlite"
        if self.dialect == "sqlite":
            if sqlite3.sqlite_version_info < (3, 35):  # INSERT ... RETURNING
                raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old; r3mem needs 3.35")
            folder = Path(self.target).resolve().parent
            if not folder.is_dir():
                raise FileNotFoundError(f"{self.target}: no folder {folder} for the database")
            if Path(self.target).is_dir():
                raise IsADirectoryError(f"{self.target}: is a folder; the database is one file")
        self._slots = threading.BoundedSemaphore(connections)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self.migrate()

    def __repr__(self) -> str:
        where = self.target if self.dialect == "sqlite" else self.target.split("@")[-1]
        return f"Store({self.dialect}: {where})"  # a URL's password never shown

    # ----------------------------------------------------------------------------- connections

    def _connect(self) -> Any:
        if self.dialect == "postgresql":
            import psycopg

            try:
                return psycopg.connect(self.target, autocommit=True)
            except psycopg.OperationalError as err:
                where = self.target.split("@")[-1]
                raise ConnectionError(f"PostgreSQL at {where}: {err}".strip()) from err
        try:
            connection = sqlite3.connect(
                self.target, isolation_level=None, timeout=60, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")  # a committed write is on disk
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{self.target}: not a usable SQLite database ({err})") from err
        return connection

    @contextmanager
    def _borrow(self) -> Iterator[Any]:
        """A connection from the pool (at most ``connections`` open, whatever the number of
        threads); one the server broke is closed, and the next borrower opens a new one."""
        if not self._slots.acquire(timeout=POOL_WAIT):
            raise TimeoutError(f"{self!r}: every connection busy for {POOL_WAIT:g} s")
        connection = None
        try:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            connection = connection or self._connect()
            yield connection
        finally:
            if connection is not None:
                if getattr(connection, "closed", False) or getattr(connection, "broken", False):
                    connection.close()
                else:
                    with self._lock:
                        self._idle.append(connection)
            self._slots.release()

    def close(self) -> None:
        """Close the idle connections (those in use close when given back, if broken)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction on a pooled connection: committed when the block ends, rolled back
        when it raises. SQLite takes the write lock at once (no upgrade races)."""
        with self._borrow() as connection:
            if self.dialect == "postgresql":
                with connection.transaction():
                    yield connection
                return
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _run(self, db: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        cursor = db.execute(sql, tuple(params))
        return cursor.fetchall() if cursor.description else []

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """A read outside any transaction."""
        with self._borrow() as connection:
            return self._run(connection, sql, params)

    # ----------------------------------------------------------------------------- schema

    def migrate(self) -> int:
        """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found."""
        with self.transaction() as db:
            if self.dialect == "postgresql":  # two servers starting at once migrate once
                self._run(db, "SELECT pg_advisory_xact_lock(3317)")
            self._run(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            rows = self._run(db, "SELECT version FROM schema_version")
            found = rows[0][0] if rows else 0
            if found > SCHEMA_VERSION:
                raise ValueError(
                    f"{self!r}: schema version {found} is newer than this r3mem's "
                    f"({SCHEMA_VERSION}); upgrade r3mem"
                )
            for migration in MIGRATIONS[found:]:
                for statement in migration[self.dialect]:
                    self._run(db, statement)
            if not rows:
                self._run(db, "INSERT INTO schema_version (version) VALUES (?)", [SCHEMA_VERSION])
            elif found < SCHEMA_VERSION:
                self._run(db, "UPDATE schema_version SET version = ?", [SCHEMA_VERSION])
        return found

    def bind_model(self, fingerprint: str, adapter_digest: str) -> None:
        """Record the model that writes this database, or refuse another one: entries are
        memories only that model can read."""
        wanted = {"fingerprint": fingerprint, "adapter_digest": adapter_digest}
        with self.transaction() as db:
            stored = dict(self._run(db, "SELECT name, value FROM settings"))
            for name, value in wanted.items():
                if name not in stored:
                    self._run(db, "INSERT INTO settings (name, value) VALUES (?, ?)", [name, value])
                elif stored[name] != value:
                    raise ValueError(
                        f"{self!r}: its memories were written by another model ({name} "
                        f"{stored[name][:12]} != {value[:12]}); serve it with that model"
                    )

    # ----------------------------------------------------------------------------- keys

    def add_key(self, tenant: str) -> tuple[str, str]:
        """A new API key for ``tenant``: ``(key, key_id)``; only its hash is stored, so the
        key is shown once."""
        if not isinstance(tenant, str) or not tenant.strip() or len(tenant) > 128:
            raise ValueError(f"tenant must be a name of 1..128 characters, got {tenant!r}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(key)
        with self.transaction() as db:
            self._run(
                db,
                "INSERT INTO api_keys (key_hash, key_id, tenant, created_at) VALUES (?, ?, ?, ?)",
                [digest, digest[:12], tenant, time.time()],
            )
        return key, digest[:12]

    def tenant_of(self, key: str) -> str | None:
        rows = self.query("SELECT tenant FROM api_keys WHERE key_hash = ?", [hash_key(key)])
        return rows[0][0] if rows else None

    def list_keys(self) -> list[tuple[str, str, float]]:
        """``(key_id, tenant, created_at)`` of every key."""
        return self.query("SELECT key_id, tenant, created_at FROM api_keys ORDER BY created_at")

    def revoke_key(self, key_id: str) -> bool:
        with self.transaction() as db:
            found = self._run(db, "SELECT key_id FROM api_keys WHERE key_id = ?", [key_id])
            self._run(db, "DELETE FROM api_keys WHERE key_id = ?", [key_id])
        return bool(found)

    # ----------------------------------------------------------------------------- entries

    def _bump(self, db: Any, tenant: str, user_id: str) -> None:
        """A user's version grows with every change, so a cache knows it is stale. The row
        stays when the user is deleted, so versions never repeat. One statement: two
        writers of a new user cannot both insert it."""
        self._run(
            db,
            "INSERT INTO users (tenant, user_id, version) VALUES (?, ?, 1) ON CONFLICT "
            "(tenant, user_id) DO UPDATE SET version = users.version + 1",
            [tenant, user_id],
        )

    def add_entries(
        self, tenant: str, user_id: str, rows: Sequence[tuple[str, int, dict, bytes]]
    ) -> list[int]:
        """Store ``(level, tokens, record, blob)`` rows for one user in one transaction;
        returns their ids in order."""
        now = time.time()
        ids = []
        with self.transaction() as db:
            for level, tokens, record, blob in rows:
                found = self._run(
                    db,
                    "INSERT INTO memories (tenant, user_id, level, created_at, tokens, record, "
                    "memory) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    [tenant, user_id, level, now, tokens, json.dumps(record), blob],
                )
                ids.append(int(found[0][0]))
            self._bump(db, tenant, user_id)
        return ids

    def version(self, tenant: str, user_id: str) -> int:
        rows = self.query(
            "SELECT version FROM users WHERE tenant = ? AND user_id = ?", [tenant, user_id]
        )
        return int(rows[0][0]) if rows else 0

    def entries(
        self, tenant: str, user_id: str, after: int = -1, limit: int | None = None
    ) -> list[StoredEntry]:
        """A user's entries, oldest first, without their blobs."""
        sql = (
            "SELECT id, user_id, level, created_at, tokens, record FROM memories "
            "WHERE tenant = ? AND user_id = ? AND id > ? ORDER BY id"
        )
        params: list[Any] = [tenant, user_id, after]
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, limit]
        return [_entry(row) for row in self.query(sql, params)]

    def with_blobs(self, tenant: str, ids: Sequence[int]) -> list[StoredEntry]:
        """The entries of ``tenant`` among ``ids``, blobs included (missing ids left out)."""
        found = []
        for start in range(0, len(ids), IN_CHUNK):
            chunk = list(ids[start : start + IN_CHUNK])
            marks = ", ".join("?" * len(chunk))
            found += self.query(
                "SELECT id, user_id, level, created_at, tokens, record, memory FROM memories "
                f"WHERE tenant = ? AND id IN ({marks}) ORDER BY id",
                [tenant, *chunk],
            )
        return [_entry(row) for row in found]

    def set_records(self, tenant: str, records: Sequence[tuple[int, dict]]) -> None:
        """Rewrite the records of ``tenant``'s entries ``(id, record)`` in one transaction,
        for what is derived from an entry (its keywords), so the users' versions stay: a
        cache holding those entries is still current."""
        with self.transaction() as db:
            for entry_id, record in records:
                self._run(
                    db,
                    "UPDATE memories SET record = ? WHERE tenant = ? AND id = ?",
                    [json.dumps(record), tenant, entry_id],
                )

    def delete_entry(self, tenant: str, entry_id: int) -> bool:
        with self.transaction() as db:
            rows = self._run(
                db, "SELECT user_id FROM memories WHERE tenant = ? AND id = ?", [tenant, entry_id]
            )
            if not rows:
                return False
            self._run(db, "DELETE FROM memories WHERE tenant = ? AND id = ?", [tenant, entry_id])
            self._bump(db, tenant, rows[0][0])
        return True

    def delete_user(self, tenant: str, user_id: str) -> int:
        with self.transaction() as db:
            rows = self._run(
                db,
                "SELECT COUNT(*) FROM memories WHERE tenant = ? AND user_id = ?",
                [tenant, user_id],
            )
            count = int(rows[0][0])
            if count:  # a user with nothing stored gets no row
                self._run(
                    db, "DELETE FROM memories WHERE tenant = ? AND user_id = ?", [tenant, user_id]
                )
                self._bump(db, tenant, user_id)
        return count


def _entry(row: tuple) -> StoredEntry:
    blob = bytes(row[6]) if len(row) > 6 else None
    try:
        record = json.loads(row[5])
    except json.JSONDecodeError:
        record = None
    record = record if isinstance(record, dict) else {}  # the engine names what is missing
    return StoredEntry(int(row[0]), row[1], row[2], float(row[3]), int(row[4]), record, blob)
