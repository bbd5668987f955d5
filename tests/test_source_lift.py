"""Recall scores the entries of one source together (``r3mem.bank.lifted``, SOURCE_WEIGHT)."""

from __future__ import annotations

import pytest

from r3mem.bank import SOURCE_WEIGHT, lifted
from r3mem.keywords import keywords
from r3mem.memory import Memory

ARTICLE = """Alice Moreau keeps bees in Lyon.

Her hives give forty jars of honey a year.

She sells them at the market by the river."""

OTHER = """Bob Tanaka sailed to Lisbon in 1890.

Carla Diaz plays chess on Sunday."""


def test_lift_is_the_best_sibling_above_the_mean():
    own = {0: 3.0, 1: 1.0, 2: 0.0, 3: 2.0, 4: -2.0, 5: -1.0}
    scores = lifted(own, [{0, 1, 2}, {3}, {4, 5}], 0.5)
    mean = sum(own.values()) / 6  # 0.5
    assert scores[0] == pytest.approx(3.0 + 0.5 * (1.0 - mean))  # its best sibling is 1
    assert scores[1] == pytest.approx(1.0 + 0.5 * (3.0 - mean))
    assert scores[2] == pytest.approx(0.0 + 0.5 * (3.0 - mean))
    assert scores[3] == 2.0  # alone in its source
    assert scores[4] == pytest.approx(-2.0 + 0.5 * (-1.0 - mean))  # a poor source: down
    assert scores[5] == pytest.approx(-1.0 + 0.5 * (-2.0 - mean))
    assert scores[1] > scores[3]  # lifted by entry 0 past an entry of its own score higher
    assert scores[0] > scores[1] > scores[2] and scores[5] > scores[4]  # order within a source
    assert lifted(own, [{0, 1, 2}], 0.0) == own
    assert lifted({}, [], 0.5) == {}
    assert 0 < SOURCE_WEIGHT < 1  # what keeps the order within a source


def test_one_source_keeps_its_order_and_ties_stay_tied():
    own = {0: 0.9, 1: 0.9, 2: 0.4, 3: -0.3}
    scores = lifted(own, [set(own)], SOURCE_WEIGHT)
    assert scores[0] == scores[1]  # each lifted by the other
    assert sorted(own, key=own.__getitem__) == sorted(scores, key=scores.__getitem__)


@pytest.fixture
def memory(adapter_dir) -> Memory:
    memory = Memory.load(adapter_dir)
    memory.remember(ARTICLE, source="bees.txt")
    memory.remember(OTHER, source="sea.txt")
    memory.remember("Dmitri Volkov counts 42 ships.")  # no source: a document of its own
    return memory


def test_sources_index_their_entries_through_eviction_and_reopening(memory, tmp_path):
    by_source = {}
    for entry_id, entry in memory.bank.entries.items():
        by_source.setdefault(entry.meta.get("source"), set()).add(entry_id)
    assert len(by_source["bees.txt"]) > 1
    assert memory.bank.source_index == {k: v for k, v in by_source.items() if k is not None}
    path = tmp_path / "m.r3mem"
    memory.save(path)
    assert Memory.open(path).bank.source_index == memory.bank.source_index
    memory.budget_entries = len(memory.bank) - len(by_source["bees.txt"])  # the article goes
    assert memory.bank.source_index == {"sea.txt": by_source["sea.txt"]}


def test_the_entry_beside_the_words_rises_with_them(memory, monkeypatch):
    """Words only one of the article's entries holds lift the article's other entries over
    entries of another source, or of none, that score higher on their own."""
    monkeypatch.setattr("r3mem.bank.KEYWORD_WEIGHT", 10.0)
    article = sorted(memory.bank.source_index["bees.txt"])
    query, words = "Who keeps bees?", keywords("Who keeps bees?")
    query_memory, entities = memory.query_memories([query])[0], memory.extractor(query)
    own = memory.bank.own_scores(query_memory, entities, words)
    holder = max(own, key=own.__getitem__)
    assert holder in article
    others = [i for i in memory.bank.entries if i not in article]
    assert min(own[i] for i in article) < max(own[i] for i in others)  # a case to lift
    ranked = [r.entry_id for r in memory.recall(query, k=len(memory.bank))]
    assert ranked[0] == holder and set(ranked[: len(article)]) == set(article)
    monkeypatch.setattr("r3mem.bank.SOURCE_WEIGHT", 0.0)
    monkeypatch.setattr("r3mem.bank.BRIDGE_WEIGHT", 0.0)  # the first look alone
    assert memory.bank.scores(query_memory, entities, words) == own
