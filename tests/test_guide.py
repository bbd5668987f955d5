"""Guided recall (r3mem.guide): the entity and keyword levels steer greedy reconstruction."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
import torch

import r3mem.entries
from r3mem.entries import entry_states
from r3mem.guide import (
    CONTINUE_BONUS,
    START_BONUS,
    EntityGuide,
    Spelling,
    bonuses,
    guide_names,
    spellings,
)
from r3mem.memory import Memory

from .test_bank import TEXT

NAME = "Zqxvyl Okonkwo"  # spelled in several tokens by the tiny tokenizer


@pytest.fixture(scope="module")
def memory(adapter_dir) -> Memory:
    memory = Memory.load(adapter_dir)
    memory.remember(TEXT, source="test")
    return memory


def spelled(*ids: int, glued: bool = False) -> Spelling:
    return Spelling(tuple(ids), glued)


def space(token: int) -> bool:
    return token == 0  # token 0 stands for a space or a bracket, every other for a letter


def test_bonuses_begin_a_name_and_go_on_with_it():
    names = [spelled(5, 6, 7), spelled(9)]
    assert bonuses([], names, space) == {5: START_BONUS, 9: START_BONUS}
    assert bonuses([1, 5], names, space) == {5: START_BONUS, 6: CONTINUE_BONUS, 9: START_BONUS}
    assert bonuses([5, 6], names, space) == {5: START_BONUS, 7: CONTINUE_BONUS, 9: START_BONUS}
    assert bonuses([5, 6, 7], names, space) == {5: START_BONUS, 9: START_BONUS}  # finished
    assert bonuses([6, 7], names, space) == {5: START_BONUS, 9: START_BONUS}  # never begun
    assert bonuses([5], [spelled(5, 5)], space) == {5: CONTINUE_BONUS}  # the larger wins
    # begun twice over (at its first token and at its first three): it goes on from the longer
    assert bonuses([0, 1, 0], [spelled(0, 1, 0, 2)], space) == {0: START_BONUS, 2: CONTINUE_BONUS}
    assert bonuses([5], names, space, start=0.5, go_on=3.0) == {5: 0.5, 6: 3.0, 9: 0.5}


def test_a_glued_spelling_begins_only_where_a_word_may():
    year = [spelled(1, 9, 9, 9, glued=True)]
    assert bonuses([], year, space) == {1: START_BONUS}  # the text's start
    assert bonuses([2, 3], year, space) == {}  # inside a word: not even its first token
    assert bonuses([0], year, space) == {1: START_BONUS}  # after a space or a bracket
    assert bonuses([2, 3, 1], year, space) == {}  # "201" does not begin "1999"
    assert bonuses([0, 1], year, space) == {9: CONTINUE_BONUS}
    assert bonuses([1], year, space) == {9: CONTINUE_BONUS}


def test_spellings_after_a_space_and_glued(memory):
    tokenizer = memory.tokenizer
    found = spellings(tokenizer, [NAME, NAME, "Lyon"])
    encode = partial(tokenizer.encode, add_special_tokens=False)
    assert spelled(*encode(f" {NAME}")) in found
    assert spelled(*encode(NAME), glued=True) in found
    assert len(found) == len({s.ids for s in found}) == 4  # no repeats
    assert spellings(tokenizer, []) == []


def test_an_entry_is_steered_by_its_entities_then_its_keywords_as_a_sentence_may_begin_them():
    assert guide_names(["Lisbon", "1999"], {"harbour": 2, "wine": 1}) == [
        "Lisbon",
        "1999",
        "harbour",
        "Harbour",
        "wine",
        "Wine",
    ]
    assert guide_names([], {}) == []


def test_the_guide_reads_word_boundaries_off_the_tokenizer(memory):
    tokenizer = memory.tokenizer
    guide = EntityGuide(tokenizer, [["1999"]])
    (names,) = guide.names
    nine = tokenizer.encode("1999", add_special_tokens=False)[1]
    for text, goes_on in (("In 201", False), ("In (1", True), ("In 1", True)):
        prefix = tokenizer.encode(text, add_special_tokens=False)
        found = bonuses(prefix, names, guide.boundary)
        assert (found.get(nine) == CONTINUE_BONUS) is goes_on, text


def test_the_guide_tips_close_choices_only(memory):
    tokenizer = memory.tokenizer
    guide = EntityGuide(tokenizer, [[NAME], []])
    names = spellings(tokenizer, [NAME])
    starts = {s.ids[0] for s in names}
    other = next(t for t in range(len(tokenizer)) if all(t not in s.ids for s in names))
    scores = torch.zeros(2, len(tokenizer))
    nothing = torch.zeros(2, 0, dtype=torch.long)
    scores[:, other] = START_BONUS / 2  # the memory prefers another token, a little
    picked = guide(nothing, scores.clone()).argmax(-1).tolist()
    assert picked[0] in starts and picked[1] == other  # a row without entities: as it was
    scores[:, other] = START_BONUS * 2  # ... or clearly: the memory decides
    assert guide(nothing, scores.clone()).argmax(-1).tolist() == [other, other]
    # a name begun goes on, against a lead the start bonus alone would not overturn
    begun = next(s.ids for s in names if not s.glued)
    scores[:, other] = CONTINUE_BONUS / 2
    chosen = torch.tensor([begun[:2], begun[:2]])
    assert guide(chosen, scores.clone()).argmax(-1).tolist() == [begun[2], other]
    unguided = EntityGuide(tokenizer, [[], []])
    assert torch.equal(unguided(nothing, scores), scores)  # nothing to add: the scores as given
    with pytest.raises(ValueError, match="guide holds 2 rows"):
        guide(nothing[:1], scores[:1])


def test_reconstruct_passes_each_step_the_ids_chosen_so_far(memory):
    entries = list(memory.bank.entries.values())[:2]
    seen = []

    def count_up(chosen: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen.append(chosen.clone())
        forced = torch.full_like(scores, -1e9)
        forced[:, chosen.shape[1] + 3] = 0.0
        return forced

    out = memory.model.reconstruct(entry_states(memory.model, entries), 4, processor=count_up)
    assert out.tolist() == [[3, 4, 5, 6]] * 2
    assert [s.tolist() for s in seen] == [out[:, :i].tolist() for i in range(4)]


def test_rows_that_met_eos_stay_there_whatever_the_processor_adds(memory):
    entries = list(memory.bank.entries.values())[:2]
    eos = 7

    def push(chosen: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(scores, -1e9)
        forced[0, eos if chosen.shape[1] == 0 else 3] = 0.0  # row 0 ends, then is pushed on
        forced[1, 3] = 0.0
        return forced

    state = entry_states(memory.model, entries)
    out = memory.model.reconstruct(state, 3, eos_token_id=eos, processor=push)
    assert out.tolist() == [[eos] * 3, [3] * 3]


def test_approximate_recall_is_guided_and_greedy_on_request(memory, monkeypatch):
    entries = list(memory.bank.entries.values())
    state = entry_states(memory.model, entries)
    alone = memory.model.reconstruct(state, max(e.tokens for e in entries))
    expected = [memory.tokenizer.decode(alone[r, : e.tokens]) for r, e in enumerate(entries)]
    assert memory.read(entries, exact=False, guided=False) == expected
    bare = [replace(e, entities=[], keywords={}) for e in entries]
    assert memory.read(bare, exact=False) == expected  # nothing to steer towards: the memory alone
    # bonuses that outweigh any logit: the text begins with one of its entry's names
    # (or is all of its start, where the entry is shorter than the name's spelling) ...
    monkeypatch.setattr(r3mem.entries, "EntityGuide", partial(EntityGuide, start=1e3, go_on=2e3))
    for found in memory.recall("Lisbon", k=len(memory.bank), exact=False):
        entry = memory.bank.entries[found.entry_id]
        names, text = guide_names(entry.entities, entry.keywords), found.text.strip()
        assert any(text.startswith(n) or n.startswith(text) for n in names), found.text
    # ... a keyword as well as an entity: a word the text never held, its only name, begins it
    words = [replace(e, entities=[], keywords={"zqxvyl": 1}) for e in entries]
    for text in memory.read(words, exact=False):
        assert text.strip() and any(s.startswith(text.strip()[:6]) for s in ("zqxvyl", "Zqxvyl"))
    for found in memory.recall("Lisbon", len(memory.bank), exact=False, guided=False):
        assert found.text == memory.read([memory.bank.entries[found.entry_id]], False, False)[0]
