"""How long a paragraph entry is: ``Memory(entry_tokens=...)``, kept by a saved memory.

The wide test model's segment length is 64, so the default (``ENTRY_TOKENS``, 32) cuts a text
into shorter entries than a whole segment; a conversation's turn windows, which repeat their
header, and segments already cut may still fill a whole one.
"""

from __future__ import annotations

import pytest

from r3mem.cli import build_parser
from r3mem.memory import Memory
from r3mem.segment import ENTRY_TOKENS

TEXT = "\n\n".join(
    f"Paragraph {n}: Alice Moreau keeps {n} hives of bees in Lyon, and Bob Tanaka sails "
    f"to Lisbon every spring with {n} barrels of wine for the harbour master."
    for n in range(6)
)


@pytest.fixture(scope="module")
def memory(wide_adapter_dir) -> Memory:
    return Memory.load(wide_adapter_dir)


def lengths(memory: Memory, content=TEXT, **kwargs) -> list[int]:
    return [len(segment.ids) for segment in memory.segments(content, **kwargs)]


def test_the_default_entry_is_entry_tokens_long_at_most(memory):
    assert memory.model.config.segment_length == 64 > ENTRY_TOKENS
    assert memory.entry_tokens == ENTRY_TOKENS
    short, whole = lengths(memory), lengths(memory, max_tokens=64)
    assert max(short) <= ENTRY_TOKENS < max(whole)  # the text's paragraphs are over 32 tokens
    assert sum(short) >= sum(whole) and len(short) > len(whole)
    done = memory.fresh().remember(TEXT)
    assert done.entries_added == len(short)


def test_the_default_is_at_most_the_segment_length(wide_adapter_dir, monkeypatch):
    monkeypatch.setattr("r3mem.segment.ENTRY_TOKENS", 1000)
    assert Memory.load(wide_adapter_dir).entry_tokens == 64


def test_a_memory_cuts_at_its_own_length_and_keeps_it(wide_adapter_dir, tmp_path):
    long = Memory.load(wide_adapter_dir, entry_tokens=64)
    assert lengths(long) == lengths(long, max_tokens=64)
    assert long.fresh().entry_tokens == 64
    long.remember(TEXT)
    long.save(tmp_path / "long.r3mem")
    opened = Memory.open(tmp_path / "long.r3mem")
    assert opened.entry_tokens == 64 and opened.reopen(tmp_path / "long.r3mem").entry_tokens == 64
    assert Memory.load(wide_adapter_dir).reopen(tmp_path / "long.r3mem").entry_tokens == 64


def test_segments_cut_to_a_whole_segment_are_written_by_a_shorter_memory(memory):
    whole = memory.segments(TEXT, max_tokens=64)
    bank = memory.fresh()
    assert bank.remember(whole).entries_added == len(whole)
    assert [e.tokens for e in bank.bank.entries.values()] == [len(s.ids) for s in whole]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, "entry_tokens must be 1 to the segment length 64, got 0"),
        (65, ValueError, "entry_tokens must be 1 to the segment length 64, got 65"),
        ("32", TypeError, "entry_tokens must be an int, got str"),
        (True, TypeError, "entry_tokens must be an int, got bool"),
    ],
)
def test_a_bad_entry_length_is_refused(wide_adapter_dir, value, error, message):
    with pytest.raises(error, match=message):
        Memory.load(wide_adapter_dir, entry_tokens=value)


def test_turn_windows_fill_whole_segments(memory):
    """Each window repeats its time and speaker: a header over 32 tokens still fits."""
    time = "2024-05-08T13:56:00.123456+00:00"
    messages = [
        {"speaker": "assistant", "text": f"note {n} about the bees in Lyon", "time": time}
        for n in range(4)
    ]
    windows = lengths(memory, messages)
    assert ENTRY_TOKENS < max(windows) <= 64
    assert memory.fresh().remember(messages).entries_added == len(windows)
    with pytest.raises(ValueError, match="no room after the turn header"):
        memory.segments(messages, max_tokens=ENTRY_TOKENS)  # asked for: cut as asked


def test_editing_an_existing_file_checks_the_length_asked_for(wide_adapter_dir, tmp_path):
    path = tmp_path / "notes.r3mem"
    with Memory.editing(path, wide_adapter_dir) as memory:
        memory.remember(TEXT)
    before = path.read_bytes()
    refused = [
        (0, ValueError, "1 to the segment length 64, got 0"),
        ("32", TypeError, "an int, got str"),
        (64, ValueError, "keeps entries of at most 32 tokens; entry_tokens=64 is for a new"),
    ]
    for bad, error, message in refused:
        with pytest.raises(error, match=message), Memory.editing(path, entry_tokens=bad):
            pass
        assert path.read_bytes() == before
    with Memory.editing(path, entry_tokens=ENTRY_TOKENS) as memory:  # the file's own: fine
        assert memory.entry_tokens == ENTRY_TOKENS and len(memory.bank) > 1


def test_editing_keeps_a_file_s_part_length_and_lengths_are_not_reassigned(
    wide_adapter_dir, tmp_path
):
    path = tmp_path / "parts.r3mem"
    with Memory.editing(path, wide_adapter_dir, part_tokens=16) as memory:
        memory.remember(TEXT)
    before = path.read_bytes()
    assert max(e.parts for e in Memory.open(path).bank.entries.values()) == 2
    refused = [
        (8, ValueError, "keeps parts of at most 16 tokens; part_tokens=8 is for a new"),
        (65, ValueError, "part_tokens must be 1 to the segment length 64, got 65"),
    ]
    for bad, error, message in refused:
        with pytest.raises(error, match=message), Memory.editing(path, part_tokens=bad):
            pass
        assert path.read_bytes() == before
    with Memory.editing(path, part_tokens=16) as memory:  # the file's own
        assert (memory.entry_tokens, memory.part_tokens) == (ENTRY_TOKENS, 16)
        for name in ("entry_tokens", "part_tokens"):  # a file keeps one of each
            with pytest.raises(AttributeError):
                setattr(memory, name, 8)


def test_the_command_line_names_the_default():
    helps = [
        action.help
        for sub in build_parser()._subparsers._group_actions[0].choices.values()
        for action in sub._actions
        if "--entry-tokens" in action.option_strings
    ]
    # remember, serve and bench
    assert len(helps) == 3 and all(f"default: {ENTRY_TOKENS}," in h for h in helps)
