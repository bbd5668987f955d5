"""The service's engine without HTTP: one user's writes applied in the order they came,
batched work equal to the same work one job at a time, and a cache that follows the store."""

from __future__ import annotations

import json

import pytest

import r3mem.entries
from r3mem.guide import EntityGuide
from r3mem.keywords import keywords
from r3mem.memory import Memory
from r3mem.serve.engine import Engine, NotFound
from r3mem.serve.store import Store

NOTES = [
    "Alice keeps bees in Lisbon.",
    "Bob repairs old clocks in Porto.",
    "Carol grows lemons near Faro.",
    "Dave sells maps of the harbour.",
]


@pytest.fixture
def engines(adapter_dir, tmp_path):
    """An engine that batches and one that does not, on one model, each with its store."""
    memory = Memory.load(adapter_dir)
    made = []
    for name, batch in (("batched", 16), ("alone", 1)):
        made.append(Engine(memory, Store(tmp_path / f"{name}.db"), max_batch=batch))
    yield made
    for engine in made:
        engine.stop()


def test_one_user_s_writes_apply_in_the_order_they_came(engines):
    engine = engines[0]
    first = engine.submit("add", "acme", NOTES[0], "alice", {})
    wiped = engine.submit("delete_user", "acme", "alice")
    last = engine.submit("add", "acme", NOTES[1], "alice", {"n": 2})
    assert wiped.result() == len(first.result())  # the delete came after the first add
    added = last.result()
    assert [entry.id for entry in engine.store.entries("acme", "alice")] == added


def test_batched_jobs_give_what_each_job_alone_gives(engines):
    batched, alone = engines
    results = []
    for engine in (batched, alone):
        adds = [engine.submit("add", "acme", note, "alice", {}) for note in NOTES]
        ids = [future.result() for future in adds]
        searches = [
            engine.submit("search", "acme", "alice", note, 2, exact)
            for note in NOTES
            for exact in (False, True)
        ]
        texts = [engine.submit("reconstruct", "acme", i[0], False) for i in ids]
        results.append((ids, [f.result() for f in searches], [f.result() for f in texts]))
    (ids_b, found_b, texts_b), (ids_a, found_a, texts_a) = results
    assert ids_b == ids_a and texts_b == texts_a
    for hits_b, hits_a in zip(found_b, found_a, strict=True):
        assert [(h["id"], h["text"]) for h in hits_b] == [(h["id"], h["text"]) for h in hits_a]
        assert [h["score"] for h in hits_b] == pytest.approx([h["score"] for h in hits_a], abs=1e-4)


def test_the_search_cache_follows_the_store(engines):
    engine = engines[0]
    ids = [i for note in NOTES[:2] for i in engine.submit("add", "acme", note, "bob", {}).result()]
    assert {
        h["id"] for h in engine.submit("search", "acme", "bob", "bees", 9, False).result()
    } == set(ids)
    engine.store.delete_entry("acme", ids[0])  # another server on the same database
    hits = engine.submit("search", "acme", "bob", "bees", 9, False).result()
    assert {hit["id"] for hit in hits} == set(ids[1:])
    with pytest.raises(NotFound, match=f"no memory {ids[0]}"):
        engine.submit("reconstruct", "acme", ids[0], False).result()
    with pytest.raises(NotFound):
        engine.submit("delete_entry", "globex", ids[1]).result()  # not globex's


def test_a_failing_job_fails_alone(engines):
    engine = engines[0]
    good = engine.submit("add", "acme", NOTES[0], "carol", {})
    bad = engine.submit("add", "acme", "   ", "carol", {})
    with pytest.raises(ValueError, match="empty"):
        bad.result()
    assert len(good.result()) >= 1


def test_a_cancelled_request_leaves_the_others_in_its_batch_alone(engines):
    engine = engines[0]
    with engine._ready:  # hold the engine so that the three wait together
        jobs = [engine.submit("add", "acme", note, "dora", {}) for note in NOTES[:3]]
        assert jobs[0].cancel()  # its caller gave up before it ran
    assert all(job.result() for job in jobs[1:])
    stored = [entry.id for entry in engine.store.entries("acme", "dora")]
    assert stored == jobs[1].result() + jobs[2].result()


def test_a_corrupt_record_fails_its_own_entry(engines):
    from r3mem.serve.store import CorruptEntry

    engine = engines[0]
    ids = [i for note in NOTES for i in engine.submit("add", "acme", note, "eve", {}).result()]
    with engine.store.transaction() as db:
        engine.store._run(db, "UPDATE memories SET record = ? WHERE id = ?", ["{}", ids[0]])
    with pytest.raises(CorruptEntry, match=f"memory {ids[0]}: its stored record is corrupt"):
        engine.submit("reconstruct", "acme", ids[0], False).result()
    hits = engine.submit("search", "acme", "eve", "bees", 99, False).result()
    assert {hit["id"] for hit in hits} == set(ids[1:])


def test_a_row_whose_exact_replay_diverges_is_searched_approximately_and_says_so(engines):
    from r3mem.serve.store import CorruptEntry

    engine = engines[0]
    ids = [i for note in NOTES for i in engine.submit("add", "acme", note, "ida", {}).result()]
    with engine.store.transaction() as db:
        (record,) = engine.store._run(db, "SELECT record FROM memories WHERE id = ?", [ids[0]])[0]
        changed = {**json.loads(record), "checksum": json.loads(record)["checksum"] + 1}
        engine.store._run(
            db, "UPDATE memories SET record = ? WHERE id = ?", [json.dumps(changed), ids[0]]
        )
    hits = {
        hit["id"]: hit for hit in engine.submit("search", "acme", "ida", "bees", 99, True).result()
    }
    assert set(hits) == set(ids) and not hits[ids[0]]["exact"]
    assert all(hits[i]["exact"] for i in ids[1:])
    assert [hits[i]["text"] for i in ids[1:]] == [
        engine.submit("reconstruct", "acme", i, True).result() for i in ids[1:]
    ]
    assert hits[ids[0]]["text"] == engine.submit("reconstruct", "acme", ids[0], False).result()
    with pytest.raises(CorruptEntry, match=r"checksum mismatch.*\?exact=false"):
        engine.submit("reconstruct", "acme", ids[0], True).result()
    # Together in one batch: the diverging entry fails alone, the others are read exactly.
    jobs = [engine.submit("reconstruct", "acme", i, True) for i in ids]
    with pytest.raises(CorruptEntry, match=rf"memory {ids[0]}: .*checksum mismatch"):
        jobs[0].result()
    assert [job.result() for job in jobs[1:]] == [hits[i]["text"] for i in ids[1:]]


def test_a_row_stored_before_the_keyword_index_gets_them_from_exact_recall(engines):
    engine = engines[0]
    ids = [i for note in NOTES for i in engine.submit("add", "acme", note, "fay", {}).result()]
    with engine.store.transaction() as db:
        rows = engine.store._run(db, "SELECT id, record FROM memories WHERE user_id = 'fay'")
        for entry_id, record in rows:
            old = {k: v for k, v in json.loads(record).items() if k != "keywords"}
            engine.store._run(
                db, "UPDATE memories SET record = ? WHERE id = ?", [json.dumps(old), entry_id]
            )
    hits = engine.submit("search", "acme", "fay", "bees", 1, True).result()
    assert "bees" in hits[0]["text"]
    bank = engine._user_bank("acme", "fay").bank
    texts = [engine.submit("reconstruct", "acme", i, True).result() for i in ids]
    assert [bank.entries[i].keywords for i in ids] == [keywords(text) for text in texts]
    stored = engine.store.entries("acme", "fay")  # kept, so it happens once a row
    assert [row.record["keywords"] for row in stored] == [keywords(text) for text in texts]
    assert engine._user_bank("acme", "fay").bank is bank  # derived data: the cache stays


def test_the_engine_refuses_a_batch_size_that_would_run_nothing(adapter_dir, tmp_path):
    memory = Memory.load(adapter_dir)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_batch must be a positive integer"):
            Engine(memory, Store(tmp_path / "db.sqlite"), max_batch=bad)


def test_the_service_reads_back_guided_by_the_entities_and_keywords_it_stored(engines, monkeypatch):
    """The entities and keywords go through the store with each row, and non-exact search
    and reconstruct read with them: bonuses that outweigh any logit make the text begin with
    one."""
    steered = []

    def guide(tokenizer, names):
        steered.extend(names)
        return EntityGuide(tokenizer, names, start=1e3, go_on=2e3)

    monkeypatch.setattr(r3mem.entries, "EntityGuide", guide)
    engine = engines[0]
    ids = engine.submit("add", "acme", NOTES[0], "erin", {}).result()
    stored = engine.store.entries("acme", "erin")
    assert {"Alice", "Lisbon"} <= {name for row in stored for name in row.record["entities"]}
    row = next(row for row in stored if row.record["entities"])
    text = engine.submit("reconstruct", "acme", row.id, False).result().strip()
    (given,) = steered  # the stored keywords reach the guide, after the entities
    entities = row.record["entities"]
    assert given[: len(entities)] == entities and set(row.record["keywords"]) <= set(given)
    assert any(text.startswith(n) or n.startswith(text) for n in given), text
    hits = engine.submit("search", "acme", "erin", "bees", len(ids), False).result()
    assert next(hit["text"] for hit in hits if hit["id"] == row.id).strip() == text


def test_a_metadata_source_groups_a_user_s_entries_through_deletes(engines):
    """``metadata.source`` names the document recall scores together; a source that is not a
    string groups nothing; a deleted entry leaves its source's group."""
    engine = engines[0]
    grouped = [
        i
        for note in NOTES[:2]
        for i in engine.submit("add", "acme", note, "gus", {"source": "a.txt"}).result()
    ]
    odd = engine.submit("add", "acme", NOTES[2], "gus", {"source": ["a.txt"]}).result()
    engine.submit("add", "acme", NOTES[3], "gus", {"source": 7}).result()
    hits = engine.submit("search", "acme", "gus", "bees", 9, False).result()
    assert {hit["id"] for hit in hits} >= set(grouped) | set(odd)
    assert engine._user_bank("acme", "gus").bank.source_index == {"a.txt": set(grouped)}
    engine.store.delete_entry("acme", grouped[0])
    hits = engine.submit("search", "acme", "gus", "bees", 9, False).result()
    assert grouped[0] not in {hit["id"] for hit in hits}
    assert engine._user_bank("acme", "gus").bank.source_index == {"a.txt": set(grouped[1:])}
