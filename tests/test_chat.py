"""r3mem chat: every turn remembered and saved, /recall, /forget, and a restart that finds
what was said before. Input and output are plain callables, so a script plays the user."""

import dataclasses

import pytest

from r3mem.chat import FileNotes, chat, prompt
from r3mem.cli import main
from r3mem.memory import Memory
from r3mem.reader import Reader

from .test_bank import rewrite


def scripted(lines):
    """An ``input`` stand-in that plays ``lines`` then ends the input."""
    pending = iter(lines)

    def read(_prompt: str) -> str:
        try:
            return next(pending)
        except StopIteration:
            raise EOFError from None

    return read


def run(memory, path, lines, exact=True):
    said: list[str] = []
    notes = FileNotes(memory, path)
    chat(notes, Reader.of_memory(memory), scripted(lines), said.append, exact)
    return notes.memory, said


def test_prompt_puts_the_best_recall_nearest_the_message():
    assert prompt(["best", "second"], "hi") == "second\nbest\nuser: hi\nassistant:"
    system, user = prompt(["best", "second"], "hi", chats=True)
    notes = system["content"]
    assert system["role"] == "system" and notes.index("\nsecond\n") < notes.index("\nbest\n")
    assert user == {"role": "user", "content": "hi"}
    assert "notes" not in prompt([], "hi", chats=True)[0]["content"]


def test_only_the_user_s_words_are_remembered(adapter_dir, tmp_path):
    memory, _ = run(Memory.load(adapter_dir), tmp_path / "chat.r3mem", ["My cat is Tom."])
    texts = [hit.text for hit in memory.recall("cat", k=5, exact=True)]
    assert texts and all("assistant" not in text for text in texts)
    assert any("My cat is Tom." in text for text in texts)


def test_an_exact_read_that_diverges_is_said_and_the_chat_goes_on(adapter_dir, tmp_path):
    memory, _ = run(Memory.load(adapter_dir), tmp_path / "chat.r3mem", ["My cat is Tom."])
    for entry_id, entry in list(memory.bank.entries.items()):  # as if another device wrote it
        memory.bank.entries[entry_id] = dataclasses.replace(entry, checksum=entry.checksum + 1)
    before = len(memory.bank)
    memory, said = run(memory, tmp_path / "chat.r3mem", ["/recall cat", "I like tea."])
    assert sum("read approximately this time" in line for line in said) == 2
    assert any("(approximate" in line and line.startswith("[") for line in said)
    assert len(memory.bank) > before  # the message after it was still remembered


def test_turns_survive_a_restart_and_forget_removes_them(adapter_dir, tmp_path):
    path = tmp_path / "chat.r3mem"
    memory, said = run(Memory.load(adapter_dir), path, ["My cat is Tom.", "", "/quit", "never"])
    assert said[0].startswith("0 entries in memory") and len(said) == 2  # greeting, reply
    assert path.is_file() and len(memory.bank) > 0
    first = len(memory.bank)

    # A new process: the file holds the first exchange, and recall gives it back exactly.
    reopened = Memory.open(path)
    assert len(reopened.bank) == first
    reopened, said = run(reopened, path, ["/recall cat Tom", "I like tea.", "/recall tea"])
    recalled = [line for line in said[1:] if line.startswith("[")]
    assert any("user: My cat is Tom." in line for line in recalled)
    assert len(Memory.open(path).bank) > first

    # /forget drops the latest exchange still in the bank, and it stays forgotten.
    reopened, said = run(reopened, path, ["/forget"])
    assert said[-1] == "forgot exchange 2"
    assert len(Memory.open(path).bank) == first
    _, said = run(Memory.open(path), path, ["/forget all", "/forget", "/recall cat"])
    assert said[1:] == ["memory emptied", "nothing to forget"]
    assert len(Memory.open(path).bank) == 0


def test_bad_commands_are_answered_and_change_nothing(adapter_dir, tmp_path):
    path = tmp_path / "chat.r3mem"
    memory, said = run(Memory.load(adapter_dir), path, ["/recall   ", "/forget some", "/sing"])
    assert said[1:] == [
        "usage: /recall QUERY",
        "usage: /forget, or /forget all",
        "unknown command /sing; commands: /recall QUERY, /forget, /forget all, /quit",
    ]
    assert not path.exists() and len(memory.bank) == 0


def test_a_failed_reply_leaves_the_file_as_it_was(adapter_dir, tmp_path, monkeypatch):
    path = tmp_path / "chat.r3mem"
    run(Memory.load(adapter_dir), path, ["Hello there."])
    before = path.read_bytes()

    def broken(self, text, max_new_tokens=0):
        raise RuntimeError("the reader failed")

    monkeypatch.setattr(Reader, "generate", broken)
    with pytest.raises(RuntimeError, match="the reader failed"):
        run(Memory.open(path), path, ["Another message."])
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_cli_chat_refuses_a_memory_of_another_model(adapter_dir, tmp_path, capsys):
    run(Memory.load(adapter_dir), tmp_path / "mine.r3mem", ["Hello there."])
    path = tmp_path / "theirs.r3mem"
    rewrite(tmp_path / "mine.r3mem", path, fingerprint="0" * 64)  # as another base writes it
    before = path.read_bytes()
    assert main(["chat", "--memory", str(path), "--model", str(adapter_dir)]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert "theirs.r3mem: this memory was written by another base model or config" in line
    assert path.read_bytes() == before


def test_cli_chat_remembers_into_a_new_file(adapter_dir, tmp_path, monkeypatch, capsys):
    path = tmp_path / "new.r3mem"
    lines = ["Rain again today.", "/recall rain"]
    monkeypatch.setattr("builtins.input", scripted(lines))
    assert main(["chat", "--memory", str(path), "--model", str(adapter_dir)]) == 0
    out = capsys.readouterr().out  # read back exactly by default: no label
    assert out.startswith("0 entries in memory") and "] user: Rain again" in out
    assert "approximate" not in out and len(Memory.open(path).bank) > 0
    monkeypatch.setattr("builtins.input", scripted(lines[1:]))
    assert main(["chat", "--memory", str(path), "--model", str(adapter_dir), "--no-exact"]) == 0
    assert "(approximate: decoded from memory)" in capsys.readouterr().out


def test_cli_chat_keeps_what_follows_forget_all(adapter_dir, tmp_path, monkeypatch):
    """The file the CLI saves on leaving is the memory the chat went on with."""
    path = tmp_path / "chat.r3mem"
    lines = ["My cat is Tom.", "/forget all", "I like tea.", "/quit"]
    monkeypatch.setattr("builtins.input", scripted(lines))
    assert main(["chat", "--memory", str(path), "--model", str(adapter_dir)]) == 0
    texts = [hit.text for hit in Memory.open(path).recall("tea cat", k=9, exact=True)]
    assert any("I like tea." in text for text in texts)
    assert not any("Tom" in text for text in texts)
