"""Entries in parts: a segment longer than the memory's entry length (a conversation's turn
window, or a segment cut by the caller) is written as parts of at most ``entry_tokens``, each
compressed alone into its own slots, and read back part by part as one entry."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import r3mem.entries
from r3mem.bank import round_state
from r3mem.bankfile import read_file
from r3mem.bench.tasks import _progress
from r3mem.entries import exact_tokens, greedy_tokens
from r3mem.guide import EntityGuide
from r3mem.memory import Memory
from r3mem.segment import Segment, part_lengths, parts_needed, split
from r3mem.serve.engine import Engine
from r3mem.serve.store import CorruptEntry, Store

from .test_bank import crafted
from .test_entry_tokens import TEXT

MESSAGES = [
    {"speaker": "Alice", "text": "I moved my bees from Lyon to Lisbon last spring."},
    {"speaker": "Bob", "text": "Then the harbour master in Lisbon must know your honey."},
]


@pytest.mark.parametrize(
    ("tokens", "most", "lengths"),
    [(64, 32, [32, 32]), (41, 32, [21, 20]), (32, 32, [32]), (1, 32, [1]), (65, 32, [22, 22, 21])],
)
def test_parts_are_as_few_and_as_even_as_can_be(tokens, most, lengths):
    assert part_lengths(tokens, parts_needed(tokens, most)) == lengths
    assert split(list(range(tokens)), lengths)[-1][-1] == tokens - 1


@pytest.fixture(scope="module")
def memory(wide_adapter_dir) -> Memory:
    return Memory.load(wide_adapter_dir)  # segments of 64, entries of 32


@pytest.fixture(scope="module")
def segments(memory) -> list:
    """Segments cut to the whole segment length (over 32 tokens each), then a short one."""
    return [*memory.segments(TEXT, max_tokens=64), *memory.segments("Alice keeps bees.")]


@pytest.fixture(scope="module")
def whole(memory, segments) -> Memory:
    written = memory.fresh()
    written.remember(segments)
    return written


def test_a_long_segment_is_written_in_parts_each_compressed_alone(memory, whole, segments):
    entries = list(whole.bank.entries.values())
    assert {entry.parts for entry in entries} == {1, 2}
    slots = memory.model.config.num_memory_tokens
    for segment, entry in zip(segments, entries, strict=True):
        assert entry.parts == parts_needed(len(segment.ids), 32)
        assert entry.memory.shape[0] == entry.parts * slots
        pieces = split(segment.ids, part_lengths(len(segment.ids), entry.parts))
        alone = round_state(memory.model.write_alone(pieces), "float16").memory.half()
        assert torch.equal(entry.memory, alone.flatten(0, 1))


@pytest.mark.parametrize("length", [0, 65])
def test_entries_refuses_a_segment_of_no_tokens_or_over_the_segment_length(memory, length):
    made = Segment("x", [7] * length, [])  # cut by hand, not by remember
    with pytest.raises(ValueError, match=f"a segment must hold 1 to 64 tokens, got {length}"):
        memory.entries([made])


def test_an_entry_in_parts_reads_back_exactly_and_at_its_length(memory, whole, segments):
    entries = list(whole.bank.entries.values())
    assert exact_tokens(whole.model, entries) == [s.ids for s in segments]
    greedy = greedy_tokens(whole.model, entries)
    assert [len(ids) for ids in greedy] == [e.tokens for e in entries]
    assert len(whole.read(entries, exact=False)) == len(entries)
    hits = whole.recall("Lisbon barrels", k=len(entries), exact=True)
    assert sorted(hit.text for hit in hits) == sorted(s.text for s in segments)


def test_the_guide_steers_every_part_by_its_entry_s_names(whole, monkeypatch):
    rows = []

    class Recording(EntityGuide):
        def __init__(self, tokenizer, names, *args):
            rows.append([list(n) for n in names])
            super().__init__(tokenizer, names, *args)

    monkeypatch.setattr(r3mem.entries, "EntityGuide", Recording)
    entries = list(whole.bank.entries.values())
    whole.read(entries, exact=False)
    expected = [[*e.entities] for e in entries for _ in range(e.parts)]
    assert [names[: len(want)] for names, want in zip(rows[0], expected, strict=True)] == expected
    assert len(rows[0]) == sum(e.parts for e in entries) > len(entries)


def test_parts_survive_save_and_open(whole, tmp_path):
    path = tmp_path / "parts.r3mem"
    whole.save(path)
    opened = Memory.open(path)
    before, after = list(whole.bank.entries.values()), list(opened.bank.entries.values())
    assert [e.parts for e in after] == [e.parts for e in before]
    assert all(torch.equal(a.memory, b.memory) for a, b in zip(after, before, strict=True))
    assert opened.read(after, exact=True) == whole.read(before, exact=True)


def test_a_file_whose_parts_disagree_with_its_tensors_is_refused(whole, tmp_path):
    good, bad = tmp_path / "good.r3mem", tmp_path / "bad.r3mem"
    whole.save(good)
    crafted(good, bad, lambda meta, tensors: meta["entries"][0].pop("parts"))
    with pytest.raises(ValueError, match=r"bad\.r3mem: not a valid r3mem memory file: entries"):
        Memory.open(bad)


def test_a_file_before_parts_keeps_its_windows_whole_and_takes_new_ones_in_parts(
    memory, segments, tmp_path
):
    """A file written before parts holds 64-token windows as one part each while it keeps
    32-token entries: it opens, reads back exactly, and what it adds now comes in parts."""
    before = Memory(memory.model, memory.tokenizer, memory.model_dir, entry_tokens=64)
    before.remember(segments)
    good, old = tmp_path / "good.r3mem", tmp_path / "old.r3mem"
    before.save(good)
    crafted(good, old, lambda meta, tensors: meta.update(entry_tokens=32))
    opened = Memory.open(old)
    assert opened.entry_tokens == 32 and {e.parts for e in opened.bank.entries.values()} == {1}
    assert opened.read(list(opened.bank.entries.values()), exact=True) == [
        memory.tokenizer.decode(s.ids) for s in segments
    ]
    opened.remember(segments[:1])
    assert [e.parts for e in opened.bank.entries.values()][-1] == 2
    opened.save(old)
    mixed = list(Memory.open(old).bank.entries.values())
    assert [e.parts for e in mixed] == [*([1] * len(segments)), 2]
    assert exact_tokens(memory.model, mixed) == [s.ids for s in [*segments, segments[0]]]


def test_evicted_entries_in_parts_are_folded_whole_into_the_document(memory, segments):
    bank = memory.fresh()
    bank.remember(segments)
    document = bank.bank.document
    bank.budget_entries = 1
    folded = memory.model.write_in_order(document, [s.ids for s in segments[:-1]])
    assert torch.equal(bank.bank.document.memory, folded.memory)
    assert bank.bank.document.tokens_seen.item() == folded.tokens_seen.item()


@pytest.mark.parametrize("parts", [True, "2", 0])
def test_parts_that_are_not_a_count_are_refused(whole, tmp_path, parts):
    good, bad = tmp_path / "good.r3mem", tmp_path / "bad.r3mem"
    whole.save(good)
    crafted(good, bad, lambda meta, tensors: meta["entries"][0].update(parts=parts))
    with pytest.raises(ValueError, match=r"entries\.parts: not all integers of at least 1"):
        Memory.open(bad)


def test_parts_moved_between_entries_are_refused(whole, tmp_path):
    """The total still matches the tensor, but no entry was cut so."""
    good, bad = tmp_path / "good.r3mem", tmp_path / "bad.r3mem"
    whole.save(good)

    def move(meta, tensors):
        first, second = meta["entries"][:2]
        first["parts"], second["parts"] = 3, 1

    crafted(good, bad, move)
    with pytest.raises(ValueError, match=r"entries\[0\]\.parts: 3 parts of \d+ tokens"):
        Memory.open(bad)


@pytest.fixture
def engine(adapter_dir, tmp_path):
    """An engine whose memory keeps entries of 8 tokens: its turn windows of up to 16 (the
    test model's segment length) are written in parts."""
    made = Engine(Memory.load(adapter_dir, entry_tokens=8), Store(tmp_path / "parts.db"))
    yield made
    made.stop()


def test_the_service_stores_and_reads_back_entries_in_parts(engine):
    ids = engine.submit("add", "acme", MESSAGES, "eve", {}).result()
    rows = engine.store.entries("acme", "eve")
    assert max(row.record["parts"] for row in rows) > 1
    texts = [engine.submit("reconstruct", "acme", i, True).result() for i in ids]
    windows = engine.memory.segments(MESSAGES)
    assert texts == [engine.memory.tokenizer.decode(s.ids) for s in windows]


@pytest.mark.parametrize("parts", [1, 0, True, "2", 10**6])
def test_a_stored_row_with_bad_parts_fails_its_own_entry(engine, parts):
    ids = engine.submit("add", "acme", MESSAGES, "eve", {}).result()
    row = next(r for r in engine.store.entries("acme", "eve") if r.record["parts"] > 1)
    with engine.store.transaction() as db:
        record = {**row.record, "parts": parts}
        engine.store._run(
            db, "UPDATE memories SET record = ? WHERE id = ?", [json.dumps(record), row.id]
        )
    with pytest.raises(CorruptEntry, match=f"memory {row.id}: its stored (blob|record) is corrupt"):
        engine.submit("reconstruct", "acme", row.id, False).result()
    others = [i for i in ids if i != row.id]
    assert all(engine.submit("reconstruct", "acme", i, True).result() for i in others)


def test_the_window_parts_benchmark_compares_one_entry_with_parts(wide_adapter_dir, tmp_path):
    script = Path(__file__).parents[1] / "benchmarks" / "window_parts.py"
    data = Path(__file__).parent / "fixtures" / "memorybank_mini.json"
    args = ["--data", str(data), "--model", str(wide_adapter_dir), "--windows", "2"]
    subprocess.run([sys.executable, script, *args, "--out", tmp_path], check=True)
    rows = json.loads((tmp_path / "window_parts.json").read_text())["results"]
    assert [(r["entry_tokens"], r["parts"]) for r in rows] == [(64, 1.0), (32, 2.0)]
    assert all(0 <= r["token_accuracy"] <= 1 and r["windows"] == 2 for r in rows)


# ------------------------------------------------------------------ parts shorter than an entry


@pytest.fixture(scope="module")
def halves(memory) -> Memory:
    """Texts cut at 32 tokens as ever, each entry compressed in parts of at most 16."""
    written = Memory(memory.model, memory.tokenizer, memory.model_dir, part_tokens=16)
    written.remember(TEXT)
    return written


def test_part_tokens_cut_an_entry_s_parts_and_not_its_units(memory, halves):
    entries = list(halves.bank.entries.values())
    assert halves.entry_tokens == 32 and halves.part_tokens == 16
    assert [e.tokens for e in entries] == [len(s.ids) for s in memory.segments(TEXT)]
    assert [e.parts for e in entries] == [parts_needed(e.tokens, 16) for e in entries]
    assert max(e.parts for e in entries) == 2
    texts = [memory.tokenizer.decode(s.ids) for s in memory.segments(TEXT)]
    assert halves.read(entries, exact=True) == texts
    read = halves.read_tokens(entries, exact=False)
    assert [len(ids) for ids in read] == [e.tokens for e in entries]


def test_part_tokens_survive_save_and_open_and_files_without_them_are_as_before(
    memory, halves, whole, tmp_path
):
    path, plain = tmp_path / "halves.r3mem", tmp_path / "plain.r3mem"
    halves.save(path)
    whole.save(plain)
    assert read_file(path)[1]["part_tokens"] == 16
    assert "part_tokens" not in read_file(plain)[1]  # the part length is the entry length
    opened = Memory.open(path)
    assert (opened.entry_tokens, opened.part_tokens) == (32, 16)
    assert opened.fresh().part_tokens == 16
    assert (
        opened.fresh(part_tokens=32).entry_tokens,
        opened.fresh(part_tokens=32).part_tokens,
    ) == (32, 32)
    entries = list(opened.bank.entries.values())
    assert opened.read(entries, exact=True) == halves.read(entries, exact=True)


def test_a_file_whose_part_length_disagrees_with_its_parts_is_refused(halves, tmp_path):
    good, bad = tmp_path / "good.r3mem", tmp_path / "bad.r3mem"
    halves.save(good)
    crafted(good, bad, lambda meta, tensors: meta.pop("part_tokens"))
    with pytest.raises(ValueError, match=r"bad\.r3mem: not a valid r3mem memory file: entries"):
        Memory.open(bad)
    crafted(good, bad, lambda meta, tensors: meta.update(part_tokens=0))
    with pytest.raises(ValueError, match="part_tokens"):
        Memory.open(bad)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [(0, ValueError, "part_tokens must be 1 to the segment length 64, got 0"),
     (65, ValueError, "part_tokens must be 1 to the segment length 64, got 65"),
     ("16", TypeError, "part_tokens must be an int, got str")],
)  # fmt: skip
def test_a_bad_part_length_is_refused(memory, value, error, message):
    with pytest.raises(error, match=message):
        Memory(memory.model, memory.tokenizer, part_tokens=value)


@pytest.fixture(scope="module")
def parted_adapter_dir(wide_adapter_dir, tmp_path_factory) -> Path:
    """The wide adapters, their config naming parts of 16 as their memories' default."""
    adapter = tmp_path_factory.mktemp("parted") / "adapter"
    shutil.copytree(wide_adapter_dir, adapter)
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["r3mem_config"]["part_tokens"] = 16
    config_file.write_text(json.dumps(config))
    return adapter


def test_adapters_may_name_their_memories_default_part_length(parted_adapter_dir, whole, tmp_path):
    """R3MemConfig.part_tokens: what a Memory on those adapters writes in, unless asked; a
    file keeps the length it was made at, and bench's resume key names the length used."""
    parted = Memory.load(parted_adapter_dir)
    assert (parted.entry_tokens, parted.part_tokens) == (32, 16)
    parted.remember(TEXT)
    entries = list(parted.bank.entries.values())
    assert [e.parts for e in entries] == [parts_needed(e.tokens, 16) for e in entries]
    assert Memory.load(parted_adapter_dir, part_tokens=32).part_tokens == 32  # asked
    assert parted.fresh().part_tokens == 16
    path = tmp_path / "one_part.r3mem"
    whole.save(path)  # the same weights, written in entries of 32
    opened = Memory.open(path, parted_adapter_dir)
    assert opened.part_tokens == 32 and opened.fresh().part_tokens == 32
    keys = [
        _progress("rag", str(tmp_path), False, model=str(parted_adapter_dir), methods=["bm25"],
                  data=str(tmp_path), entry_tokens=None, part_tokens=tokens).run
        for tokens in (None, 32)
    ]  # fmt: skip
    assert keys[0]["part_tokens"] == 16 and "part_tokens" not in keys[1]


def test_the_adapters_default_parts_are_no_longer_than_an_entry_and_spare_old_files(
    parted_adapter_dir, whole, tmp_path
):
    short = Memory.load(parted_adapter_dir, entry_tokens=8)
    assert short.part_tokens == 8  # parts of 16 would be one part: the entry length
    path = tmp_path / "short.r3mem"
    short.remember("Alice keeps bees in Lyon.")
    short.save(path)
    assert "part_tokens" not in read_file(path)[1]
    old = tmp_path / "old.r3mem"
    whole.save(old)  # one part of 32 a text's entry, on the same weights
    with Memory.editing(old, parted_adapter_dir) as memory:
        memory.remember("Bob repairs clocks.")
    assert "part_tokens" not in read_file(old)[1]  # edited, still the file's own parts
