"""``r3mem serve`` for real: the server in a child process on a loopback port, spoken to over
HTTP. Every endpoint authenticated and scoped to its tenant; limits and validation answered in
one line; 32 clients at once lose nothing; a kill -9 mid-write loses nothing acknowledged;
a corrupt blob fails its own entry only; the chat works through the service."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from r3mem.chat import chat
from r3mem.reader import Reader
from r3mem.serve.client import Client, Server, ServiceError, ServiceNotes
from r3mem.serve.store import Store

from .test_chat import scripted

TEXT = "Alice keeps bees in Lisbon.\n\nBob repairs old clocks in Porto."


@pytest.fixture(scope="module")
def segments(adapter_dir) -> list[str]:
    """TEXT as the model cuts it: one entry, and one exact reconstruction, per segment."""
    from r3mem.memory import Memory

    memory = Memory.load(adapter_dir)
    return [memory.tokenizer.decode(segment.ids) for segment in memory.segments(TEXT)]


def keys(db: str, *tenants: str) -> list[str]:
    store = Store(db)
    found = [store.add_key(tenant)[0] for tenant in tenants]
    store.close()
    return found


@pytest.fixture(scope="module")
def service(adapter_dir, tmp_path_factory):
    """One server for the module: its URL, and keys of two tenants."""
    db = str(tmp_path_factory.mktemp("serve") / "memories.db")
    acme, globex = keys(db, "acme", "globex")
    with Server(db, acme, str(adapter_dir)) as server:
        yield server.url, acme, globex, db
        log = server.output()
    assert "POST /v1/memories" in log  # the access log is on, and it never holds a key
    assert acme not in log and globex not in log and "Traceback" not in log


def call(url: str, key: str | None, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    headers |= {"Content-Type": "application/json"} if "content" in kwargs else {}
    return httpx.request(method, url + path, headers=headers, timeout=120, **kwargs)


ENDPOINTS = [
    ("GET", "/v1/health", {}),
    ("POST", "/v1/memories", {"json": {"user_id": "u", "text": "hi"}}),
    ("POST", "/v1/memories/search", {"json": {"user_id": "u", "query": "hi"}}),
    ("GET", "/v1/memories?user_id=u", {}),
    ("GET", "/v1/memories/1/reconstruct", {}),
    ("DELETE", "/v1/memories/1", {}),
    ("DELETE", "/v1/users/u", {}),
]


def test_every_endpoint_needs_a_valid_key(service):
    url, *_ = service
    for method, path, kwargs in ENDPOINTS:
        for key in (None, "r3m_not-a-key"):
            response = call(url, key, method, path, **kwargs)
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"] == "Bearer"
    assert call(url, None, "GET", "/docs").status_code == 200  # the API's documentation


def test_add_list_search_reconstruct_delete(service, segments):
    url, acme, _, _ = service
    client = Client(url, acme)
    ids = client.add("alice", TEXT, metadata={"source": "notes"})
    turn = client.add("alice", messages=[{"role": "user", "content": "My cat is Tom."}])
    listed = client.entries("alice")
    assert [e["id"] for e in listed] == [*ids, *turn]
    assert listed[0]["metadata"]["source"] == "notes" and listed[0]["level"] == "paragraph"
    assert listed[0]["created_at"].endswith("+00:00") and listed[0]["tokens"] > 0
    assert len(ids) == len(segments) > 1
    # Read back exactly unless asked otherwise: the bare request names no `exact`.
    assert [client._call("GET", f"/v1/memories/{i}/reconstruct")["text"] for i in ids] == segments
    body = {"user_id": "alice", "query": "Where does Alice keep bees?", "k": 5}
    hits = client._call("POST", "/v1/memories/search", json=body)["results"]
    assert {hit["id"] for hit in hits} == {*ids, *turn}
    assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits), reverse=True)
    assert set(segments) <= {hit["text"] for hit in hits} and all(hit["exact"] for hit in hits)
    approximate = client.search("alice", "Where does Alice keep bees?", k=5, exact=False)
    assert not any(hit["exact"] for hit in approximate)
    assert {hit["text"] for hit in approximate} != {hit["text"] for hit in hits}
    client.delete(turn[0])
    assert [e["id"] for e in client.entries("alice")] == ids
    assert client.delete_user("alice") == len(ids) and client.entries("alice") == []
    assert client.search("alice", "bees") == []


def test_a_tenant_never_reaches_another_tenant_s_users(service, segments):
    url, acme, globex, _ = service
    mine, theirs = Client(url, acme), Client(url, globex)
    ids = mine.add("carol", TEXT)
    assert theirs.entries("carol") == [] and theirs.search("carol", "bees") == []
    for method, path in (
        ("GET", f"/v1/memories/{ids[0]}/reconstruct"),
        ("DELETE", f"/v1/memories/{ids[0]}"),
    ):
        response = call(url, globex, method, path)
        assert response.status_code == 404 and response.json() == {"detail": f"no memory {ids[0]}"}
    assert theirs.delete_user("carol") == 0
    theirs.add("carol", "Their own carol.")  # another tenant's user of the same name
    assert len(theirs.entries("carol")) >= 1
    assert [e["id"] for e in mine.entries("carol")] == ids  # untouched by all of the above
    assert mine.reconstruct(ids[0], exact=True) == segments[0]


def test_bad_requests_get_one_line_and_no_traceback(service):
    url, acme, _, _ = service
    cases = [
        ({"user_id": "u"}, 422, "give one of text or messages"),
        ({"user_id": "u", "text": ""}, 422, "text: String should have at least 1 character"),
        ({"user_id": "", "text": "x"}, 422, "user_id: String should have at least 1 character"),
        ({"user_id": "u", "text": "   "}, 422, "empty text"),
        ({"user_id": "u", "messages": [{"role": "user"}]}, 422, "give one of content or text"),
        ({"user_id": "u", "text": "x" * 1_100_000}, 413, "request body over 1000000 bytes"),
    ]
    for body, status, message in cases:
        response = call(url, acme, "POST", "/v1/memories", json=body)
        assert response.status_code == status, body
        detail = response.json()["detail"]
        assert message in detail and "\n" not in detail and "Traceback" not in detail
    search = {"user_id": "u", "query": "q", "k": 0}
    response = call(url, acme, "POST", "/v1/memories/search", json=search)
    assert (
        response.status_code == 422
        and "k: Input should be greater than or equal to 1" in (response.json()["detail"])
    )
    lone = b'{"user_id": "u", "text": "a\\ud800b"}'  # JSON may escape a lone surrogate
    response = call(url, acme, "POST", "/v1/memories", content=lone)
    assert (
        response.status_code == 422
        and "text: Input should be a valid string" in (response.json()["detail"])
    )
    response = call(url, acme, "POST", "/v1/memories", content=b"{not json")
    assert response.status_code == 422
    assert call(url, acme, "GET", "/v1/memories/abc/reconstruct").status_code == 422
    for method, path in (
        ("GET", f"/v1/memories/{2**64}/reconstruct"),
        ("DELETE", f"/v1/memories/{2**64}"),
        ("GET", f"/v1/memories?user_id=u&after={2**64}"),
        ("GET", "/v1/memories?user_id=%00"),
        ("DELETE", "/v1/users/%00"),
    ):
        response = call(url, acme, method, path)
        assert response.status_code == 422, path
        assert "\n" not in response.json()["detail"]
    response = call(url, acme, "POST", "/v1/memories", content=b'{"user_id": ')
    assert response.json()["detail"].startswith("body: invalid JSON")


def test_32_concurrent_clients_lose_no_acknowledged_write(service):
    url, acme, _, _ = service
    acknowledged: list[int] = []
    requests: list[list[int]] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        client = Client(url, acme)
        user = f"crowd{worker % 4}"
        for n in range(3):
            ids = client.add(user, f"Client {worker} wrote note {n} about the harbour.")
            with lock:
                acknowledged.extend(ids)
                requests.append(ids)
            client.search(user, f"note {n}", k=3)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(work, range(32)))
    client = Client(url, acme)
    stored = [e["id"] for user in range(4) for e in client.entries(f"crowd{user}")]
    assert len(requests) == 96 and all(requests)
    assert sorted(stored) == sorted(acknowledged)


def test_kill_9_mid_write_loses_nothing_acknowledged(adapter_dir, tmp_path):
    db = str(tmp_path / "memories.db")
    (key,) = keys(db, "acme")
    server = Server(db, key, str(adapter_dir)).start()
    acknowledged: list[int] = []
    stop = threading.Event()

    def write(worker: int) -> None:
        client = Client(server.url, key, timeout=30)
        n = 0
        while not stop.is_set():
            try:
                acknowledged.extend(client.add("dana", f"Writer {worker}, note {n}."))
            except (ConnectionError, ServiceError):
                return
            n += 1

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in writers:
        thread.start()
    deadline = time.monotonic() + 120
    while len(acknowledged) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()  # mid-write: requests in flight die with it
    server.close()
    stop.set()
    for thread in writers:
        thread.join()
    with Server(db, key, str(adapter_dir)) as restarted:
        stored = {e["id"] for e in Client(restarted.url, key).entries("dana")}
    assert set(acknowledged) <= stored and len(acknowledged) >= 12


def test_a_corrupt_blob_fails_its_entry_and_nothing_else(service):
    url, acme, _, db = service
    client = Client(url, acme)
    ids = client.add("erin", TEXT + "\n\nCarol grows lemons.\n\nDave sells maps.")
    with sqlite3.connect(db) as raw:  # a disk error, or a hand that edited the database
        raw.execute("UPDATE memories SET memory = ? WHERE id = ?", (b"\x00" * 40, ids[0]))
    response = call(url, acme, "GET", f"/v1/memories/{ids[0]}/reconstruct")
    assert response.status_code == 500
    assert response.json()["detail"].startswith(f"memory {ids[0]}: its stored blob is corrupt")
    hits = client.search("erin", "lemons", k=10)
    assert {hit["id"] for hit in hits} == set(ids[1:])
    assert client.reconstruct(ids[-1], exact=True)  # the rest read back
    assert call(url, acme, "GET", "/v1/health").json()["status"] == "ok"


def test_the_chat_keeps_its_notes_in_the_service(service, adapter_dir):
    url, acme, _, _ = service
    from r3mem.memory import Memory

    notes = ServiceNotes(Client(url, acme), "frank")
    reader = Reader.of_memory(Memory.load(adapter_dir))
    said: list[str] = []
    chat(notes, reader, scripted(["My cat is Tom.", "I like tea.", "/forget"]), said.append)
    assert said[0].startswith("0 entries in memory") and said[-1] == "forgot exchange 2"
    texts = [hit.text for hit in notes.recall("cat", 5, exact=True)]
    assert any("My cat is Tom." in text for text in texts) and len(notes) == 1
    assert not any("tea" in text for text in texts)
    chat(notes, reader, scripted(["/forget all"]), said.append)
    assert said[-1] == "memory emptied" and len(notes) == 0


def test_cli_chat_through_the_service(service, adapter_dir, monkeypatch, capsys):
    from r3mem.cli import main

    url, acme, _, _ = service
    monkeypatch.setattr("builtins.input", scripted(["Rain again today.", "/recall rain"]))
    argv = ["chat", "--server", url, "--key", acme, "--user", "gina", "--model", str(adapter_dir)]
    assert main([*argv, "--exact"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("0 entries in memory") and "] user: Rain again" in out
    assert len(Client(url, acme).entries("gina")) > 0
    assert main([*argv[:-4], "--key", "r3m_wrong"]) == 2
    assert "the memory service answered 401: invalid API key" in capsys.readouterr().err
