"""Entity-guided recall (r3mem.guide): the entity level steers greedy reconstruction."""

from __future__ import annotations

from functools import partial

import pytest
import torch

import r3mem.memory
from r3mem.bank import entry_states
from r3mem.guide import CONTINUE_BONUS, START_BONUS, EntityGuide, bonuses, spellings
from r3mem.memory import Memory

from .test_bank import TEXT

NAME = "Zqxvyl Okonkwo"  # spelled in several tokens by the tiny tokenizer


@pytest.fixture(scope="module")
def memory(adapter_dir) -> Memory:
    memory = Memory.load(adapter_dir)
    memory.remember(TEXT, source="test")
    return memory


def test_bonuses_begin_a_name_and_go_on_with_it():
    names = [[5, 6, 7], [9]]
    assert bonuses([], names) == {5: START_BONUS, 9: START_BONUS}
    assert bonuses([1, 5], names) == {5: START_BONUS, 6: CONTINUE_BONUS, 9: START_BONUS}
    assert bonuses([5, 6], names) == {5: START_BONUS, 7: CONTINUE_BONUS, 9: START_BONUS}
    assert bonuses([5, 6, 7], names) == {5: START_BONUS, 9: START_BONUS}  # finished
    assert bonuses([6, 7], names) == {5: START_BONUS, 9: START_BONUS}  # never begun
    assert bonuses([5], [[5, 5]]) == {5: CONTINUE_BONUS}  # the larger bonus wins
    # begun twice over (at its first token and at its first three): it goes on from the longer
    assert bonuses([0, 1, 0], [[0, 1, 0, 2]]) == {0: START_BONUS, 2: CONTINUE_BONUS}
    assert bonuses([5], names, start=0.5, go_on=3.0) == {5: 0.5, 6: 3.0, 9: 0.5}


def test_spellings_after_a_space_and_at_the_start(memory):
    tokenizer = memory.tokenizer
    found = spellings(tokenizer, [NAME, NAME, "Lyon"])
    assert tokenizer.encode(f" {NAME}", add_special_tokens=False) in found
    assert tokenizer.encode(NAME, add_special_tokens=False) in found
    assert len(found) == len({tuple(ids) for ids in found})  # no repeats
    assert spellings(tokenizer, []) == []


def test_the_guide_tips_close_choices_only(memory):
    tokenizer = memory.tokenizer
    guide = EntityGuide(tokenizer, [[NAME], []])
    names = spellings(tokenizer, [NAME])
    starts = {ids[0] for ids in names}
    other = next(t for t in range(len(tokenizer)) if t not in starts)
    scores = torch.zeros(2, len(tokenizer))
    nothing = torch.zeros(2, 0, dtype=torch.long)
    scores[:, other] = START_BONUS / 2  # the memory prefers another token, a little
    picked = guide(nothing, scores.clone()).argmax(-1).tolist()
    assert picked[0] in starts and picked[1] == other  # a row without entities: as it was
    scores[:, other] = START_BONUS * 2  # ... or clearly: the memory decides
    assert guide(nothing, scores.clone()).argmax(-1).tolist() == [other, other]
    # a name begun goes on, against a lead the start bonus alone would not overturn
    (begun,) = [ids for ids in names if len(ids) > 1][:1]
    scores[:, other] = CONTINUE_BONUS / 2
    chosen = torch.tensor([begun[:1], begun[:1]])
    assert guide(chosen, scores.clone()).argmax(-1).tolist() == [begun[1], other]
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


def test_recall_is_guided_by_default_and_greedy_on_request(memory, monkeypatch):
    entries = list(memory.bank.entries.values())
    state = entry_states(memory.model, entries)
    alone = memory.model.reconstruct(state, max(e.tokens for e in entries))
    expected = [memory.tokenizer.decode(alone[r, : e.tokens]) for r, e in enumerate(entries)]
    assert memory.read(entries, guided=False) == expected
    bare = [e for e in entries if e.entities]
    assert bare and memory.read([replace_entities(e) for e in bare]) == memory.read(
        bare, guided=False
    )  # nothing to steer towards: the memory alone
    # bonuses that outweigh any logit: the text begins with one of its entry's entities
    # (or is all of its start, where the entry is shorter than the name's spelling)
    monkeypatch.setattr(r3mem.memory, "EntityGuide", partial(EntityGuide, start=1e3, go_on=2e3))
    for found in memory.recall("Lisbon", k=len(memory.bank)):
        text, names = found.text.strip(), memory.bank.entries[found.entry_id].entities
        assert any(text.startswith(n) or n.startswith(text) for n in names), found.text
    for found in memory.recall("Lisbon", k=len(memory.bank), guided=False):
        assert found.text == memory.read([memory.bank.entries[found.entry_id]], guided=False)[0]


def replace_entities(entry):
    import dataclasses

    return dataclasses.replace(entry, entities=[])
