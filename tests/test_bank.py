"""The memory bank behind Memory.remember / recall / save / open (DESIGN 2.4, 2.6).

The test model is barely trained, so these tests check behaviour, not recall quality: the
exact-recall corrections must make recall lossless whatever the model has learned.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import r3mem.bankfile
import r3mem.memory
from r3mem.bank import ENTITY_WEIGHT, ENTRY_DTYPES, KEYWORD_WEIGHT
from r3mem.entries import Diverged
from r3mem.hierarchy import split_paragraphs
from r3mem.keywords import keywords
from r3mem.memory import Memory, Recalled

TEXT = """Alice Moreau keeps bees in Lyon.

Bob Tanaka sailed to Lisbon in 1890.

Carla Diaz plays chess on Sunday.

Dmitri Volkov counts 42 ships."""

MESSAGES = [
    {"speaker": "Alice", "text": "I moved to Oslo.", "time": "May"},
    {"speaker": "Bob", "text": "Oslo is cold."},
]


@pytest.fixture
def memory(adapter_dir) -> Memory:
    return Memory.load(adapter_dir)


@pytest.fixture(scope="module")
def full(adapter_dir) -> Memory:
    """TEXT remembered once; tests that change the bank use their own ``memory``."""
    memory = Memory.load(adapter_dir)
    memory.remember(TEXT, source="test")
    return memory


def paragraphs(memory: Memory) -> list[str]:
    return split_paragraphs(TEXT, memory.entry_tokens, memory.count_tokens)


def snapshot(memory: Memory) -> tuple:
    bank = memory.bank
    return (list(bank.entries), bank.document.memory.clone(), bank.document.tokens_seen.clone())


def assert_same(memory: Memory, before: tuple) -> None:
    ids, document, seen = snapshot(memory)
    assert ids == before[0]
    assert torch.equal(document, before[1]) and torch.equal(seen, before[2])


def test_remember_fills_every_level(memory):
    summary = memory.remember(TEXT, source="test")
    expected = paragraphs(memory)
    assert summary.entries_added == len(expected) == len(memory.bank) > 1
    assert summary.evicted == 0
    assert summary.tokens == sum(memory.count_tokens(p) for p in expected)
    assert memory.bank.document.tokens_seen.tolist() == [summary.tokens]
    assert {"alice moreau", "lisbon", "1890", "42"} <= set(memory.bank.entity_index)
    for entry in memory.bank.entries.values():
        assert entry.memory.shape == memory.bank.document.memory.shape[1:]
        assert entry.meta == {"source": "test"}


def test_recall_is_exact_by_default(full):
    results = full.recall("bees", k=len(full.bank))
    assert sorted(r.text for r in results) == sorted(paragraphs(full))
    assert all(r.exact for r in results)
    # The model is barely trained: the text comes back only thanks to the corrections.
    assert any(entry.corrections for entry in full.bank.entries.values())
    approximate = full.recall("bees", k=len(full.bank), exact=False)
    assert [r.entry_id for r in approximate] == [r.entry_id for r in results]
    assert not any(r.exact for r in approximate)
    assert sorted(r.text for r in approximate) != sorted(paragraphs(full))


def test_an_exact_read_that_diverges_names_its_entries_and_the_way_out(full, tmp_path):
    full.save(tmp_path / "m.r3mem")
    opened = Memory.open(tmp_path / "m.r3mem")
    changed = min(opened.bank.entries)
    entry = opened.bank.entries[changed]
    opened.bank.entries[changed] = dataclasses.replace(entry, checksum=entry.checksum + 1)
    with pytest.raises(
        Diverged, match=rf"for 1 of {len(full.bank)} entries.*\(#{changed}\).*exact=False"
    ):
        opened.recall("bees", k=len(full.bank))
    approximate = opened.recall("bees", k=len(full.bank), exact=False)
    assert approximate == full.recall("bees", k=len(full.bank), exact=False)


def test_recall_returns_k_best_first(full):
    results = full.recall("Who sailed to Lisbon?", k=3)
    assert len(results) == 3 and all(isinstance(r, Recalled) for r in results)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert len({r.entry_id for r in results}) == 3
    assert len(full.recall("bees", k=100)) == len(full.bank)


@pytest.mark.parametrize("exact", [False, True])
def test_recall_batch_is_recall_of_each_query(full, exact):
    queries = ["Who sailed to Lisbon?", "bees", "What happened in 1890?"]
    batch = full.recall_batch(queries, k=3, exact=exact)
    for query, found in zip(queries, batch, strict=True):
        alone = full.recall(query, k=3, exact=exact)
        assert [(r.entry_id, r.text, r.meta) for r in found] == [
            (r.entry_id, r.text, r.meta) for r in alone
        ]
        assert [r.score for r in found] == pytest.approx([r.score for r in alone], abs=1e-5)
    assert full.recall_batch([], k=3) == []
    with pytest.raises(TypeError, match="got one str"):
        full.recall_batch("bees", k=3)
    with pytest.raises(ValueError, match="empty query"):
        full.recall_batch(["bees", " "], k=3)


def cosine_misses(memory: Memory, candidates, monkeypatch) -> tuple[str, int, list[Recalled]]:
    """The first ``(query, entry_id)`` of ``candidates`` whose entry cosine alone (both
    bonuses and the source lift off, as they stay) does not rank first, and that ranking."""
    monkeypatch.setattr("r3mem.bank.ENTITY_WEIGHT", 0.0)
    monkeypatch.setattr("r3mem.bank.KEYWORD_WEIGHT", 0.0)
    monkeypatch.setattr("r3mem.bank.SOURCE_WEIGHT", 0.0)
    for query, entry_id in candidates:
        plain = memory.recall(query, k=len(memory.bank))
        if plain[0].entry_id != entry_id:
            return query, entry_id, plain
    pytest.fail("the fixture needs an entry that cosine alone does not rank first")


def test_entity_bonus_changes_the_ranking(full, monkeypatch):
    by_entity = {e.entities[0]: i for i, e in full.bank.entries.items() if e.entities}
    query, entry_id, plain = cosine_misses(full, by_entity.items(), monkeypatch)
    monkeypatch.setattr("r3mem.bank.ENTITY_WEIGHT", 10.0)
    assert full.recall(query, k=1)[0].entry_id == entry_id
    monkeypatch.setattr("r3mem.bank.ENTITY_WEIGHT", ENTITY_WEIGHT)
    bonus = {r.entry_id: r.score for r in full.recall(query, k=len(full.bank))}
    cosine = {r.entry_id: r.score for r in plain}
    assert bonus[entry_id] == pytest.approx(cosine[entry_id] + ENTITY_WEIGHT, abs=1e-5)


def test_budget_folds_evicted_entries_into_the_document(adapter_dir):
    unbounded = Memory.load(adapter_dir)
    bounded = Memory.load(adapter_dir, budget_entries=2)
    everything = unbounded.remember(TEXT)
    summary = bounded.remember(TEXT)
    assert len(bounded.bank) == 2 and summary.evicted == everything.entries_added - 2
    assert list(bounded.bank.entries) == list(unbounded.bank.entries)[-2:]
    assert bounded.bank.next_id == everything.entries_added
    # The evicted paragraphs were written again into the document memory, not dropped.
    kept = sum(e.tokens for e in bounded.bank.entries.values())
    folded = everything.tokens - kept
    assert bounded.bank.document.tokens_seen.item() == everything.tokens + folded
    assert not torch.equal(bounded.bank.document.memory, unbounded.bank.document.memory)
    assert set(bounded.bank.entity_index) < set(unbounded.bank.entity_index)
    texts = [r.text for r in bounded.recall("chess", k=5, exact=True)]
    assert sorted(texts) == sorted(paragraphs(bounded)[-2:])
    # Lowering the budget evicts at once.
    unbounded.budget_entries = 1
    assert len(unbounded.bank) == 1
    assert unbounded.bank.document.tokens_seen.item() > everything.tokens


def test_messages_become_one_session(memory):
    summary = memory.remember(MESSAGES)
    assert summary.entries_added == len(memory.bank) >= 1
    entry = next(iter(memory.bank.entries.values()))
    assert entry.meta["session_id"] == "1" and entry.meta["time"] == "May"
    assert {"alice", "oslo"} <= set(memory.bank.entity_index)
    texts = [r.text for r in memory.recall("Oslo", k=len(memory.bank), exact=True)]
    # The tiny test tokenizer cuts turns into short windows, each with the session header.
    assert all(text.startswith(("[May]\nAlice: ", "[May]\nBob: ")) for text in texts)
    assert "[May]\nAlice: I" in texts


def test_keyword_bonus_finds_the_entry_that_holds_the_word(full, monkeypatch):
    """A word only one entry holds gives that entry the whole KEYWORD_WEIGHT."""
    holders = {}
    for entry_id, entry in full.bank.entries.items():
        for word in entry.keywords:
            holders.setdefault(word, []).append(entry_id)
    alone = ((word, ids[0]) for word, ids in holders.items() if len(ids) == 1)
    word, entry_id, plain = cosine_misses(full, alone, monkeypatch)
    monkeypatch.setattr("r3mem.bank.KEYWORD_WEIGHT", KEYWORD_WEIGHT)
    found = {r.entry_id: r.score for r in full.recall(word, k=len(full.bank))}
    cosine = {r.entry_id: r.score for r in plain}
    assert found[entry_id] == pytest.approx(cosine[entry_id] + KEYWORD_WEIGHT, abs=1e-5)
    assert all(found[i] == pytest.approx(cosine[i], abs=1e-5) for i in found if i != entry_id)
    monkeypatch.setattr("r3mem.bank.KEYWORD_WEIGHT", 10.0)
    assert full.recall(word, k=1)[0].entry_id == entry_id


def test_keywords_are_those_of_the_exact_recall(full):
    texts = {r.entry_id: r.text for r in full.recall("bees", k=len(full.bank), exact=True)}
    assert {i: e.keywords for i, e in full.bank.entries.items()} == {
        i: keywords(text) for i, text in texts.items()
    }


def test_save_and_open_round_trip(full, tmp_path):
    path = tmp_path / "memory.r3mem"
    full.save(path)
    # The file, and the lock file writers take turns on: no temporary left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.r3mem", "memory.r3mem.lock"]
    opened = Memory.open(path)
    for exact in (False, True):
        assert opened.recall("Lisbon", k=3, exact=exact) == full.recall("Lisbon", k=3, exact=exact)
    assert opened.bank.entity_index == full.bank.entity_index
    assert opened.bank.keyword_index.postings == full.bank.keyword_index.postings
    assert opened.bank.next_id == full.bank.next_id
    assert torch.equal(opened.bank.document.memory, full.bank.document.memory)
    assert Memory.open(path, model_dir=full.model_dir).recall("bees", k=1)
    reopened = full.fresh().reopen(path)  # on the model already loaded
    assert reopened.model is full.model and reopened is not full
    assert reopened.recall("Lisbon", k=3, exact=True) == full.recall("Lisbon", k=3, exact=True)


def test_entries_are_kept_in_their_dtype_and_exact_recall_survives_the_rounding(
    adapter_dir, tmp_path
):
    sizes = {}
    for dtype, kept in ENTRY_DTYPES.items():
        memory = Memory.load(adapter_dir, entry_dtype=dtype)
        memory.remember(TEXT)
        assert {e.memory.dtype for e in memory.bank.entries.values()} == {kept}
        path = tmp_path / f"{dtype}.r3mem"
        memory.save(path)
        sizes[dtype] = load_file(str(path))["entries"].nbytes
        opened = Memory.open(path)
        assert opened.bank.entry_dtype == dtype and opened.fresh().bank.entry_dtype == dtype
        texts = [r.text for r in opened.recall("bees", k=len(opened.bank), exact=True)]
        assert sorted(texts) == sorted(paragraphs(memory))
    assert sizes["float16"] == sizes["bfloat16"] == sizes["float32"] // 2 == sizes["float8"] * 2
    with pytest.raises(ValueError, match="entry_dtype must be one of"):
        Memory.load(adapter_dir, entry_dtype="float64")


@pytest.mark.parametrize(("dtype", "scale"), [("float16", 1e9), ("float8", 1e6)])
def test_memory_that_overflows_its_entry_dtype_is_refused(adapter_dir, monkeypatch, dtype, scale):
    """float16 would round it to inf, float8 would clip it to 448 without a word: both refuse."""
    memory = Memory.load(adapter_dir, entry_dtype=dtype)
    memory.remember("A first paragraph.")
    before = snapshot(memory)
    write = memory.model.write_alone

    def huge(ids):
        state = write(ids)
        return dataclasses.replace(state, memory=state.memory * scale)

    monkeypatch.setattr(memory.model, "write_alone", huge)
    with pytest.raises(ValueError, match=f"overflow {dtype} entries; use entry_dtype='float32'"):
        memory.remember(TEXT)
    assert_same(memory, before)


def test_empty_memory_round_trips_and_recalls_nothing(memory, tmp_path):
    memory.save(tmp_path / "empty.r3mem")
    opened = Memory.open(tmp_path / "empty.r3mem")
    assert len(opened.bank) == 0 and opened.recall("anything", k=2) == []


def rewrite(src, dst, **changes) -> None:
    """Copy a memory file with fields of its JSON metadata changed."""
    with safe_open(str(src), framework="pt") as handle:
        meta = json.loads(handle.metadata()["r3mem"])
    save_file(load_file(str(src)), str(dst), metadata={"r3mem": json.dumps({**meta, **changes})})


def test_memory_from_another_model_is_refused(full, tmp_path):
    full.save(tmp_path / "a.r3mem")
    rewrite(tmp_path / "a.r3mem", tmp_path / "b.r3mem", fingerprint="0" * 64)
    with pytest.raises(ValueError, match=r"b\.r3mem: .*another base model"):
        Memory.open(tmp_path / "b.r3mem")
    with pytest.raises(ValueError, match=r"b\.r3mem: .*another base model"):
        full.reopen(tmp_path / "b.r3mem")


def test_memory_from_other_adapter_weights_is_refused(full, tmp_path):
    full.save(tmp_path / "a.r3mem")
    other = Memory.load(full.model_dir)
    with torch.no_grad():
        next(iter(other.model.trainable_parameters().values())).add_(1e-3)
    other.model.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match=r"a\.r3mem: .*other adapter weights"):
        Memory.open(tmp_path / "a.r3mem", model_dir=tmp_path / "other")
    assert len(Memory.open(tmp_path / "a.r3mem", model_dir=full.model_dir).bank) == len(full.bank)


@pytest.mark.parametrize(
    "damage", ["garbage", "truncated", "no_metadata", "entries", "dtype", "unknown_dtype"]
)
def test_corrupt_file_is_one_clear_error(full, tmp_path, damage):
    good, bad = tmp_path / "good.r3mem", tmp_path / "bad.r3mem"
    full.save(good)
    if damage == "garbage":
        bad.write_bytes(b"not a safetensors file at all")
    elif damage == "truncated":
        bad.write_bytes(good.read_bytes()[:-40])
    elif damage == "no_metadata":
        save_file(load_file(str(good)), str(bad))
    elif damage == "entries":
        rewrite(good, bad, entries=[])
    else:  # the records name another dtype than the tensors hold, or none we know
        rewrite(good, bad, entry_dtype="float32" if damage == "dtype" else "float8")
    with pytest.raises(ValueError, match=r"bad\.r3mem: not a valid r3mem memory file"):
        Memory.open(bad)
    with pytest.raises(FileNotFoundError, match="missing"):
        Memory.open(tmp_path / "missing.r3mem")


def test_a_failed_save_leaves_the_old_file_and_no_tmp(full, tmp_path, monkeypatch):
    path = tmp_path / "memory.r3mem"
    full.save(path)
    before = path.read_bytes()

    def broken(filename, tensors, metadata):
        with open(filename, "wb") as file:
            file.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(r3mem.bankfile, "write_tensors", broken)
    with pytest.raises(OSError, match="disk full"):
        full.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.r3mem", "memory.r3mem.lock"]


@pytest.mark.parametrize(
    ("query", "k", "error"),
    [
        ("", 3, ValueError),
        ("   \n", 3, ValueError),
        ("bees", 0, ValueError),
        ("bees", -1, ValueError),
        ("bees", 1.5, ValueError),
        ("bees", True, ValueError),
        (3, 3, TypeError),
    ],
)
def test_bad_recall_is_refused(full, query, k, error):
    with pytest.raises(error):
        full.recall(query, k=k)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("", ValueError),
        (" \n\n ", ValueError),
        (5, TypeError),
        ([], ValueError),
        (["hello"], TypeError),
        ([{"speaker": "A"}], ValueError),
        ([{"speaker": "A", "text": 3}], TypeError),
        ([{"speaker": "A", "text": "hi", "mood": "ok"}], ValueError),
        ([*MESSAGES, {"speaker": "B", "text": " "}], ValueError),
    ],
)
def test_bad_remember_leaves_the_bank_unchanged(full, content, error):
    before = snapshot(full)
    with pytest.raises(error):
        full.remember(content)
    assert_same(full, before)


def test_bad_budget_is_refused(full):
    before = snapshot(full)
    for budget, error in ((0, ValueError), ("2", TypeError), (True, TypeError)):
        with pytest.raises(error):
            full.budget_entries = budget
    assert full.budget_entries is None
    assert_same(full, before)


def crafted(src, dst, change) -> None:
    """Copy a memory file through ``change(meta, tensors)``, which edits both in place."""
    with safe_open(str(src), framework="pt") as handle:
        meta = json.loads(handle.metadata()["r3mem"])
    tensors = load_file(str(src))
    change(meta, tensors)
    save_file(tensors, str(dst), metadata={"r3mem": json.dumps(meta)})


def test_a_file_saved_before_the_keyword_index_gets_them_from_exact_recall(full, tmp_path):
    good, old = tmp_path / "good.r3mem", tmp_path / "old.r3mem"
    full.save(good)
    crafted(good, old, lambda meta, tensors: [e.pop("keywords") for e in meta["entries"]])
    opened = Memory.open(old)
    assert [e.keywords for e in opened.bank.entries.values()] == [
        e.keywords for e in full.bank.entries.values()
    ]
    assert opened.recall("Lisbon", k=3) == full.recall("Lisbon", k=3)


def _entry(index: int, **changes):
    return lambda meta, tensors: meta["entries"][index].update(changes)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (_entry(0, tokens=10**9), r"entries\[0\]\.tokens"),
        (_entry(0, tokens=0), r"entries\[0\]\.tokens"),
        (_entry(1, id=0), r"entries\[1\]\.id: 0 appears twice"),
        (lambda meta, tensors: meta.update(next_id=0), r"entries\[0\]\.id"),
        (lambda meta, tensors: meta.update(next_id=-1), "next_id"),
        (_entry(0, corrections=[[999, 1]]), r"entries\[0\]\.corrections"),
        (_entry(0, corrections=[[0, 10**6]]), r"entries\[0\]\.corrections"),
        (_entry(0, checksum="x"), r"entries\[0\]\.checksum"),
        (_entry(0, entities="Lyon"), r"entries\[0\]\.entities"),
        (_entry(0, meta=[]), r"entries\[0\]\.meta"),
        (_entry(0, keywords=["bees"]), r"entries\[0\]\.keywords"),
        (_entry(0, keywords={"bees": 0}), r"entries\[0\]\.keywords"),
        (lambda meta, tensors: meta["entries"][0].pop("tokens"), r"entries\[0\]: keys"),
        (lambda meta, tensors: meta.update(budget_entries=0), "budget_entries"),
        (lambda meta, tensors: meta.update(entry_tokens=0), "entry_tokens"),
        (lambda meta, tensors: meta.update(entry_tokens=10**6), "entry_tokens"),
        (lambda meta, tensors: meta.update(entry_tokens="32"), "entry_tokens"),
        (
            lambda meta, tensors: tensors.update(entries=tensors["entries"][:, :-1].clone()),
            "entries: shape",
        ),
        (
            lambda meta, tensors: tensors.update(document=tensors["document"][:, :, :-1].clone()),
            "document: shape",
        ),
        (lambda meta, tensors: tensors.pop("document_tokens_seen"), "document_tokens_seen"),
        (lambda meta, tensors: tensors["entries"].fill_(float("nan")), "entries: holds"),
    ],
)
def test_every_field_is_checked_on_open(full, tmp_path, change, field):
    """A crafted or damaged file is refused at once, naming the file and the field, instead
    of hanging recall (a huge token count) or overwriting entries (a low next_id) later."""
    good, bad = tmp_path / "good.r3mem", tmp_path / "bad.r3mem"
    full.save(good)
    crafted(good, bad, change)
    before = bad.read_bytes()
    with pytest.raises(ValueError, match=rf"bad\.r3mem: not a valid r3mem memory file: {field}"):
        Memory.open(bad)
    assert bad.read_bytes() == before


def test_remember_writes_a_long_text_in_batches_as_in_one(adapter_dir, monkeypatch):
    """Batching is the working set's bound, not a change of what is stored."""
    text = "\n\n".join([TEXT] * 6)
    whole = Memory.load(adapter_dir)
    whole.remember(text)
    monkeypatch.setattr(r3mem.memory, "WRITE_BATCH", 3)
    batched = Memory.load(adapter_dir)
    done = batched.remember(text)
    assert done.entries_added == len(whole.bank) == len(batched.bank) > 3
    for a, b in zip(whole.bank.entries.values(), batched.bank.entries.values(), strict=True):
        assert (a.tokens, a.checksum, a.entities) == (b.tokens, b.checksum, b.entities)
        torch.testing.assert_close(a.memory.float(), b.memory.float(), atol=2e-3, rtol=0)
    torch.testing.assert_close(batched.bank.document.memory, whole.bank.document.memory)
    assert [h.text for h in batched.recall("bees", k=3, exact=True)] == [
        h.text for h in whole.recall("bees", k=3, exact=True)
    ]


def test_a_budgeted_long_text_drops_as_it_goes_and_folds_what_it_dropped(adapter_dir, monkeypatch):
    """Over budget, remember keeps no more pending entries than the budget (its memory stays
    bounded) and folds the rest as before: the text, then the old entries, then the
    oldest new ones, into the document memory; the newest stay as entries."""
    from r3mem.bank import checksum
    from r3mem.entries import exact_tokens

    monkeypatch.setattr(r3mem.memory, "WRITE_BATCH", 3)
    memory = Memory.load(adapter_dir, budget_entries=2)
    memory.remember(TEXT)
    document = memory.bank.document
    old = exact_tokens(memory.model, list(memory.bank.entries.values()))
    text = "\n\n".join([TEXT] * 3)
    new = [segment.ids for segment in memory.segments(text)]
    done = memory.remember(text)
    assert (done.entries_added, done.evicted) == (len(new), len(new))
    expected = memory.model.write_in_order(document, [*new, *old, *new[:-2]])
    torch.testing.assert_close(memory.bank.document.memory, expected.memory)
    kept = list(memory.bank.entries.values())
    assert [entry.checksum for entry in kept] == [checksum(ids) for ids in new[-2:]]
    assert memory.bank.next_id == len(paragraphs(memory)) + len(new)


def test_guided_decode_is_the_step_by_step_decode(adapter_dir):
    """The fixed-point decode gives what choosing one token per pass gives, for any choose
    (here: greedy, and greedy with forced tokens, as exact recall replays corrections)."""
    from r3mem.entries import _greedy_after, _width, guided_decode

    from .conftest import randomize

    memory = Memory.load(adapter_dir)
    model = memory.model
    randomize(model)  # a decoder whose guesses depend on the prefix
    torch.manual_seed(0)
    lengths = [5, 0, 17, 64]
    state = model.write(
        model.init_memory(len(lengths), level="paragraph"), torch.randint(5, 90, (4, 12))
    )
    forced = {(0, 2): 7, (2, 0): 11, (2, 9): 3, (3, 40): 5}

    def choose(row: int, i: int, guess: int) -> int:
        return forced.get((row, i), guess)

    width = _width(model, lengths)
    expected = []
    for row, length in enumerate(lengths):  # one token per pass, as exact recall did before
        ids = torch.zeros(1, width, dtype=torch.long)
        sub = dataclasses.replace(
            state, memory=state.memory[row : row + 1], tokens_seen=state.tokens_seen[row : row + 1]
        )
        for i in range(length):
            ids[0, i] = choose(row, i, int(_greedy_after(model, sub, ids)[0, i]))
        expected.append(ids[0, :length].tolist())
    assert guided_decode(model, state, lengths, choose) == expected
    assert len(set(expected[3])) > 1  # the decode is not one repeated token
    guesses = torch.randint(5, 90, (len(lengths), max(lengths))).tolist()
    assert guided_decode(model, state, lengths, choose, guesses) == expected  # any start


def test_exact_recall_drafts_the_replay_and_confirms_it_in_one_pass(adapter_dir, monkeypatch):
    """Exact recall drafts its replay with the KV cache, fed the corrections, and one
    fixed-width pass confirms it: the remembered tokens, in far fewer passes than from
    nothing (where a decoder the prefix steers needs a pass per run of tokens)."""
    import r3mem.entries
    from r3mem.entries import exact_tokens

    from .conftest import randomize

    memory = Memory.load(adapter_dir)
    randomize(memory.model)  # guesses depend on the prefix: many corrections, many passes
    memory.remember(TEXT)
    entries = list(memory.bank.entries.values())
    passes, decode, greedy_after = [], r3mem.entries.guided_decode, r3mem.entries._greedy_after
    monkeypatch.setattr(
        r3mem.entries, "_greedy_after", lambda *args: passes.append(1) or greedy_after(*args)
    )
    remembered = [segment.ids for segment in memory.segments(TEXT)]
    assert exact_tokens(memory.model, entries) == remembered
    drafted, passes[:] = len(passes), []
    monkeypatch.setattr(
        r3mem.entries,
        "guided_decode",
        lambda model, state, n, choose, _: decode(model, state, n, choose),
    )
    assert exact_tokens(memory.model, entries) == remembered
    assert drafted == 1 < len(passes)
