"""Recall's second look: the names of the first look's best source cue the entries that hold
them (``MemoryBank.bridge_shares``, BRIDGE_WEIGHT)."""

from __future__ import annotations

import math

import pytest

from r3mem.bank import BRIDGE_WEIGHT, SOURCE_WEIGHT, lifted
from r3mem.keywords import keywords
from r3mem.memory import Memory

QUERY = "Who recognized the title that Vince Phillips held?"
TEXTS = {  # the best source last: its ids are the highest, so a tie would not favour it
    "ibf.txt": "The IBF is recognized by the Boxing Hall of Fame.",  # the second hop
    "chess.txt": "Carla Diaz plays chess in Lisbon in 1997.",  # shares only the year
    "gym.txt": "Vince Phillips trained in Lisbon.",  # names only what the query names
    "boxer.txt": "Vince Phillips held the IBF title in 1997.",  # names IBF, 1997
}


@pytest.fixture(scope="module")
def memory(adapter_dir) -> Memory:
    memory = Memory.load(adapter_dir)
    for source, text in TEXTS.items():
        memory.remember(text, source=source)
    return memory


def entries_of(memory: Memory, source: str) -> set[int]:
    return memory.bank.source_index[source]


def best_share(shares: dict[int, float], memory: Memory, source: str) -> float:
    return max(shares.get(i, 0.0) for i in entries_of(memory, source))


def first_look(memory: Memory) -> tuple[int, dict[int, float]]:
    """The best entry of recall's first look at QUERY, and the own scores behind it."""
    bank = memory.bank
    pooled, entities = memory.query_memories([QUERY])[0], memory.extractor(QUERY)
    own = bank.own_scores(pooled, entities, keywords(QUERY))
    first = lifted(own, bank.source_index.values(), SOURCE_WEIGHT)
    return max(first, key=first.__getitem__), own


def test_the_best_sources_new_names_cue_the_entries_that_hold_them(memory):
    best, _ = first_look(memory)
    assert best in entries_of(memory, "boxer.txt")  # the query names Vince Phillips
    assert "IBF" not in memory.bank.entries[best].entities  # its source's other entry does
    shares = memory.bank.bridge_shares(best, memory.extractor(QUERY))
    cued = {memory.bank.entries[i].meta["source"] for i in shares}
    assert cued == {"ibf.txt", "chess.txt"}  # not the best source, not what the query names
    # IBF and 1997 are each held by two entries, so each cues with half the weight, from
    # whichever of its source's entries holds the name.
    assert best_share(shares, memory, "ibf.txt") == pytest.approx(0.5)
    assert best_share(shares, memory, "chess.txt") == pytest.approx(0.5)


def test_a_name_more_entries_hold_cues_less_than_a_rarer_one(adapter_dir):
    memory = Memory.load(adapter_dir)
    for source, text in TEXTS.items():
        memory.remember(text, source=source)
    memory.remember("In 1997 Dana Reyes won.", source="more.txt")  # 1997 grows common
    best, _ = first_look(memory)
    shares = memory.bank.bridge_shares(best, memory.extractor(QUERY))
    ibf, chess = (best_share(shares, memory, s) for s in ("ibf.txt", "chess.txt"))
    assert ibf > 0.5 > chess and ibf + chess == pytest.approx(1)
    weights = [math.log1p(len(memory.bank) / n) for n in (2, 3)]  # IBF's, 1997's
    assert ibf == pytest.approx(weights[0] / sum(weights))


def test_recall_adds_the_second_look_to_the_first_and_keeps_its_best_first(memory, monkeypatch):
    bank = memory.bank
    pooled, entities = memory.query_memories([QUERY])[0], memory.extractor(QUERY)
    words = keywords(QUERY)
    best, own = first_look(memory)
    shares = bank.bridge_shares(best, entities)
    moved = {i: score + BRIDGE_WEIGHT * shares.get(i, 0.0) for i, score in own.items()}
    lift = lifted(moved, bank.source_index.values(), SOURCE_WEIGHT)
    second = bank.scores(pooled, entities, words)
    assert BRIDGE_WEIGHT > 0 and second[best] == max(lift.values())
    assert {i: s for i, s in second.items() if i != best} == pytest.approx(
        {i: s for i, s in lift.items() if i != best}
    )
    ranked = [r.entry_id for r in memory.recall(QUERY, k=len(bank))]
    assert ranked == sorted(second, key=lambda i: -second[i]) and ranked[0] == best
    monkeypatch.setattr("r3mem.bank.BRIDGE_WEIGHT", 100.0)  # the cued entries outscore it
    assert max(bank.scores(pooled, entities, words).values()) > lift[best] + 10
    ranked = [r.entry_id for r in memory.recall(QUERY, k=2)]
    cued = entries_of(memory, "ibf.txt") | entries_of(memory, "chess.txt")
    assert ranked[0] == best and ranked[1] in cued  # still first, a cued entry next
    monkeypatch.setattr("r3mem.bank.BRIDGE_WEIGHT", 0.0)
    assert bank.scores(pooled, entities, words) == lifted(
        own, bank.source_index.values(), SOURCE_WEIGHT
    )


def test_an_entry_without_a_source_bridges_from_itself(adapter_dir):
    memory = Memory.load(adapter_dir)
    memory.remember("Vince Phillips held the IBF title.")
    memory.remember("The IBF is recognized by the Hall of Fame.")
    holder = next(i for i, e in memory.bank.entries.items() if "IBF" in e.entities)
    cued = memory.bank.bridge_shares(holder, ["Vince Phillips"])
    assert cued and all("IBF" in memory.bank.entries[i].entities for i in cued)
    assert holder not in cued
    assert memory.bank.bridge_shares(holder, ["IBF"]) == {}
