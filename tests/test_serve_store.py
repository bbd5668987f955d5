"""The service's store on SQLite and on PostgreSQL (where ``R3MEM_TEST_POSTGRES_URL`` names a
server, as CI's does): schema and migrations, keys kept hashed, entries scoped to their
tenant, versions that move with every change, blobs checked on the way back, and writers
from many threads at once."""

from __future__ import annotations

import os
import secrets
import threading

import pytest
import torch

from r3mem.serve.store import (
    SCHEMA_VERSION,
    CorruptEntry,
    Store,
    decode_memory,
    encode_memory,
)

POSTGRES = os.environ.get("R3MEM_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """A new, empty database of each kind (PostgreSQL: a schema of its own, dropped after)."""
    if request.param == "sqlite":
        yield str(tmp_path / "memories.db")
        return
    if not POSTGRES:
        pytest.skip("no PostgreSQL: set R3MEM_TEST_POSTGRES_URL (CI starts one)")
    import psycopg

    schema = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    joiner = "&" if "?" in POSTGRES else "?"
    yield f"{POSTGRES}{joiner}options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


def row(tokens: int = 3, meta: dict | None = None) -> tuple[str, int, dict, bytes]:
    record = {"entities": [], "corrections": [], "checksum": 0, "meta": meta or {}}
    return "paragraph", tokens, record, encode_memory(torch.ones(2, 4), "fp")


def test_a_new_database_is_migrated_and_reopens_with_its_data(target):
    store = Store(target)
    assert store.query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    ids = store.add_entries("acme", "alice", [row(), row(5)])
    store.close()
    reopened = Store(target)
    assert reopened.migrate() == SCHEMA_VERSION  # nothing left to do
    assert [e.id for e in reopened.entries("acme", "alice")] == ids
    reopened.close()


def test_records_are_rewritten_for_their_tenant_only_and_keep_the_version(target):
    store = Store(target)
    mine = store.add_entries("acme", "alice", [row(), row(5)])
    theirs = store.add_entries("other", "alice", [row()])
    version = store.version("acme", "alice")
    record = {**row()[2], "keywords": {"bees": 2}}
    store.set_records("acme", [(mine[1], record), (theirs[0], record)])
    assert [e.record.get("keywords") for e in store.entries("acme", "alice")] == [None, {"bees": 2}]
    assert "keywords" not in store.entries("other", "alice")[0].record  # not acme's to change
    assert store.version("acme", "alice") == version
    store.close()


def test_a_newer_schema_is_refused(target):
    store = Store(target)
    with store.transaction() as db:
        store._run(db, "UPDATE schema_version SET version = ?", [SCHEMA_VERSION + 1])
    store.close()
    with pytest.raises(ValueError, match="newer than this r3mem"):
        Store(target)


def test_keys_are_stored_hashed_shown_once_and_revocable(target):
    store = Store(target)
    key, key_id = store.add_key("acme")
    assert store.tenant_of(key) == "acme" and store.tenant_of(key + "x") is None
    stored = store.query("SELECT key_hash, key_id, tenant FROM api_keys")
    assert len(stored) == 1 and key not in str(stored)
    assert [k[:2] for k in store.list_keys()] == [(key_id, "acme")]
    assert store.revoke_key(key_id) and not store.revoke_key(key_id)
    assert store.tenant_of(key) is None
    with pytest.raises(ValueError, match="tenant"):
        store.add_key("  ")


def test_entries_are_scoped_to_their_tenant_and_versions_move(target):
    store = Store(target)
    assert store.version("acme", "alice") == 0
    first = store.add_entries("acme", "alice", [row(meta={"n": 1}), row(7)])
    other = store.add_entries("globex", "alice", [row()])
    assert first[0] < first[1] < other[0]
    assert store.version("acme", "alice") == 1
    listed = store.entries("acme", "alice")
    assert [(e.id, e.tokens, e.record["meta"]) for e in listed] == [
        (first[0], 3, {"n": 1}),
        (first[1], 7, {}),
    ]
    assert all(e.blob is None for e in listed)
    assert [e.id for e in store.entries("acme", "alice", after=first[0], limit=5)] == [first[1]]
    assert [e.id for e in store.with_blobs("acme", [*first, *other])] == first  # not globex's
    blob = store.with_blobs("acme", first)[0].blob
    assert torch.equal(decode_memory(first[0], blob, "fp", (2, 4), torch.float32), torch.ones(2, 4))
    assert not store.delete_entry("acme", other[0])  # another tenant's id: not found
    assert store.delete_entry("acme", first[0]) and store.version("acme", "alice") == 2
    assert store.delete_user("acme", "alice") == 1 and store.version("acme", "alice") == 3
    assert store.delete_user("acme", "nobody") == 0 and store.version("acme", "nobody") == 0
    assert store.entries("acme", "alice") == []
    assert [e.id for e in store.entries("globex", "alice")] == other
    again = store.add_entries("acme", "alice", [row()])
    assert again[0] > other[0] and store.version("acme", "alice") == 4  # never repeats


def test_the_database_is_bound_to_the_model_that_writes_it(target):
    store = Store(target)
    store.bind_model("fingerprint-a", "digest-a")
    store.bind_model("fingerprint-a", "digest-a")
    with pytest.raises(ValueError, match="another model"):
        store.bind_model("fingerprint-a", "digest-b")


def test_writers_in_many_threads_all_land(target):
    store = Store(target, connections=3)  # 8 threads share 3 connections
    done: list[int] = []

    def write(worker: int) -> None:
        for n in range(10):
            done.extend(store.add_entries("acme", f"user{worker % 3}", [row(meta={"n": n})]))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = [e.id for user in range(3) for e in store.entries("acme", f"user{user}")]
    assert sorted(stored) == sorted(done) and len(done) == 80
    assert sum(store.version("acme", f"user{u}") for u in range(3)) == 80
    assert len(store._idle) <= 3
    store.close()


def test_blobs_round_trip_and_a_bad_one_is_named():
    memory = torch.randn(8, 16).half()
    blob = encode_memory(memory, "fp")
    assert torch.equal(decode_memory(3, blob, "fp", (8, 16), torch.float16), memory)
    cases = {
        "corrupt": blob[:40],
        "another model": encode_memory(memory, "other"),
        "expected": encode_memory(memory.float(), "fp"),
        "not finite": encode_memory(torch.full((8, 16), float("nan")).half(), "fp"),
    }
    for why, bad in cases.items():
        with pytest.raises(CorruptEntry, match=f"memory 3: .*{why}"):
            decode_memory(3, bad, "fp", (8, 16), torch.float16)


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, not SQLite\n" * 100)
    with pytest.raises(ValueError, match="not a usable SQLite database"):
        Store(path)
    with pytest.raises(FileNotFoundError, match="no folder"):
        Store(tmp_path / "missing" / "db.sqlite")


def test_cli_keys_add_list_revoke(tmp_path, capsys):
    from r3mem.cli import main

    db = str(tmp_path / "memories.db")
    assert main(["keys", "add", "acme", "--db", db]) == 0
    key, note = capsys.readouterr().out.splitlines()
    key_id = note.split()[1]
    assert Store(db).tenant_of(key) == "acme" and "shown once" in note
    assert main(["keys", "list", "--db", db]) == 0
    assert capsys.readouterr().out.split() == [key_id, "acme"]
    assert main(["keys", "revoke", key_id, "--db", db]) == 0
    assert Store(db).tenant_of(key) is None
    assert main(["keys", "revoke", key_id, "--db", db]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_serve_and_chat_refuse_bad_options_in_one_line(tmp_path, capsys):
    from r3mem.cli import main

    assert main(["serve", "--db", str(tmp_path / "missing" / "memories.db")]) == 2
    assert main(["chat"]) == 2
    assert main(["chat", "--memory", "a.r3mem", "--server", "http://127.0.0.1:9"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and "no folder" in lines[0]
    assert all("give one of --memory FILE or --server URL" in line for line in lines[1:])


def test_cli_serve_cuts_texts_at_the_entry_length_asked(adapter_dir, tmp_path, monkeypatch, capsys):
    import uvicorn

    from r3mem.cli import main
    from r3mem.serve import app

    made = []

    class Recorded(app.Engine):
        def __init__(self, memory, *args, **kwargs):
            made.append(memory)
            super().__init__(memory, *args, **kwargs)

    monkeypatch.setattr(app, "Engine", Recorded)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)  # answers nothing
    db = str(tmp_path / "memories.db")
    lengths = ["--entry-tokens", "8", "--part-tokens", "4"]
    assert main(["serve", "--db", db, "--model", str(adapter_dir), *lengths]) == 0
    assert (made[0].entry_tokens, made[0].part_tokens) == (8, 4)
    assert max(len(s.ids) for s in made[0].segments("one two three " * 20)) <= 8
    assert main(["serve", "--db", db, "--model", str(adapter_dir), "--entry-tokens", "0"]) == 2
    assert "entry_tokens" in capsys.readouterr().err and len(made) == 1
    assert main(["serve", "--db", db, "--model", str(adapter_dir), "--part-tokens", "0"]) == 2
    assert "part_tokens must be 1 to the segment length" in capsys.readouterr().err
    assert len(made) == 1
