"""Every user error anywhere in the CLI: one line on stderr, exit 2, no traceback (unless
--debug), and the memory file byte for byte as it was."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from r3mem.assets import SAMPLE_TEXT, asset_path
from r3mem.checkpoint import CONFIG_NAME
from r3mem.cli import main

from .test_bank import crafted


@pytest.fixture(scope="module")
def stored(adapter_dir, tmp_path_factory) -> Path:
    """A memory file written by the CLI, the original every case copies."""
    path = tmp_path_factory.mktemp("stored") / "notes.r3mem"
    text = tmp_path_factory.mktemp("text") / "notes.txt"
    text.write_text(Path(asset_path(SAMPLE_TEXT)).read_text(encoding="utf-8")[:1500])
    assert main(["remember", str(text), "--memory", str(path), "--model", str(adapter_dir)]) == 0
    return path


def _adapter_without(adapter_dir: Path, where: Path, section: str, key: str) -> Path:
    copy = where / f"no-{key}"
    shutil.copytree(adapter_dir, copy)
    meta = json.loads((copy / CONFIG_NAME).read_text())
    del meta[section][key]
    (copy / CONFIG_NAME).write_text(json.dumps(meta))
    return copy


def _set_entry(index: int, **changes):
    return lambda meta, tensors: meta["entries"][index].update(changes)


# name: (argv with M for the memory file copy, stdin bytes or None, the error's words)
CASES = {
    "binary stdin": (["remember", "-", "--memory", "M"], Path("/bin/ls").read_bytes(), "UTF-8"),
    "NUL bytes": (["remember", "-", "--memory", "M"], b"text\x00with NUL", "binary data"),
    "empty stdin": (["remember", "-", "--memory", "M"], b"", "empty"),
    "non-UTF-8 query": (["recall", "\udcff\udcfe", "--memory", "M"], None, "UTF-8"),
    "memory in a missing folder": (
        ["remember", "T", "--memory", "D/nodir/x.r3mem"],
        None,
        "no folder",
    ),
    "memory is a folder": (["remember", "T", "--memory", "D"], None, "is a folder"),
    "recall from a missing file": (["recall", "the", "--memory", "D/gone.r3mem"], None, "no such"),
    "missing text": (["remember", "D/gone.txt", "--memory", "M"], None, "no such file"),
    "k = 0": (["recall", "the", "--memory", "M", "-k", "0"], None, "positive integer"),
    "bad checksum, exact": (
        ["recall", "the", "--memory", "M", "--exact", "-k", "100"],
        None,
        "checksum mismatch",
    ),
    "huge token count": (["recall", "the", "--memory", "M", "--exact"], None, "tokens"),
    "duplicate entry id": (["remember", "T", "--memory", "M"], None, "appears twice"),
    "next_id below an id": (["remember", "T", "--memory", "M"], None, r"\.id"),
    "garbage memory file": (["recall", "the", "--memory", "M"], None, "not a valid"),
    "adapter without vocab_size": (
        ["recall", "the", "--memory", "M", "--model", "V"],
        None,
        "vocab",
    ),
    "adapter without memory_form": (
        ["recall", "the", "--memory", "M", "--model", "F"],
        None,
        "memory_form",
    ),
    "r3mem = 5 in a train config": (["train", "--config", "D/bad.toml"], None, "r3mem must be"),
    "batch_size = 2.5": (["train-base", "--config", "D/bs.toml"], None, "batch_size must be"),
    "min_lr_ratio = -3": (["train-base", "--config", "D/lr.toml"], None, "min_lr_ratio"),
    "weight_decay = -1": (["train-base", "--config", "D/wd.toml"], None, "weight_decay"),
    "missing base model": (["train", "--config", "D/base.toml"], None, "no such model folder"),
}

DAMAGE = {
    "bad checksum, exact": lambda meta, tensors: [e.update(checksum=1) for e in meta["entries"]],
    "huge token count": _set_entry(0, tokens=10**9),
    "duplicate entry id": _set_entry(1, id=0),
    "next_id below an id": lambda meta, tensors: meta.update(next_id=0),
}

CONFIGS = {
    "bad.toml": "r3mem = 5\n",
    "bs.toml": "batch_size = 2.5\n",
    "lr.toml": "min_lr_ratio = -3\n",
    "wd.toml": "weight_decay = -1\n",
    "base.toml": 'base_model = "/nowhere/base"\n',
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_are_one_line(case, stored, adapter_dir, tmp_path, monkeypatch, capsys):
    argv, stdin, words = CASES[case]
    memory = tmp_path / "notes.r3mem"
    shutil.copy(stored, memory)
    if case in DAMAGE:
        crafted(stored, memory, DAMAGE[case])
    elif case == "garbage memory file":
        memory.write_bytes(b"\x00" * 64)
    text = tmp_path / "more.txt"
    text.write_text("Madame Defarge knitted.\n\nThe mail coach climbed the hill.\n")
    for name, content in CONFIGS.items():
        (tmp_path / name).write_text(content)
    swap = {
        "M": str(memory),
        "T": str(text),
        "V": str(_adapter_without(adapter_dir, tmp_path, "base_model", "vocab_size")),
        "F": str(_adapter_without(adapter_dir, tmp_path, "r3mem_config", "memory_form")),
    }
    argv = [
        swap.get(arg, arg.replace("D", str(tmp_path), 1) if arg.startswith("D") else arg)
        for arg in argv
    ]
    if "--model" not in argv and argv[0] in ("remember", "recall"):
        argv += ["--model", str(adapter_dir)]
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    before = memory.read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("r3mem")]
    assert len(lines) == 1 and lines[0].startswith(f"r3mem {argv[0]}: error: "), err
    assert "Traceback" not in err
    assert re.search(words, lines[0]), lines[0]
    assert memory.read_bytes() == before


def test_debug_shows_the_traceback(stored, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such memory file"):
        main(["recall", "the", "--memory", str(tmp_path / "gone.r3mem"), "--debug"])


def test_a_folder_of_texts_is_remembered_whole(adapter_dir, tmp_path, capsys):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("Alice Moreau keeps bees in Lyon.")
    (folder / "b.txt").write_text("Bob Tanaka sailed to Lisbon in 1890.")
    memory = tmp_path / "notes.r3mem"
    assert (
        main(["remember", str(folder), "--memory", str(memory), "--model", str(adapter_dir)]) == 0
    )
    assert "2 texts" in capsys.readouterr().out
    from r3mem.memory import Memory

    sources = {entry.meta["source"] for entry in Memory.open(memory).bank.entries.values()}
    assert sources == {str(folder / "a.txt"), str(folder / "b.txt")}


def test_recall_is_exact_unless_asked(stored, tmp_path, capsys):
    memory = tmp_path / "notes.r3mem"
    shutil.copy(stored, memory)
    for flags in ([], ["--exact"]):
        assert main(["recall", "the", "--memory", str(memory), "-k", "1", *flags]) == 0
        out = capsys.readouterr().out
        assert "approximate" not in out and "exact" in out
    assert main(["recall", "the", "--memory", str(memory), "-k", "1", "--no-exact"]) == 0
    out = capsys.readouterr().out
    assert "approximate" in out and "drop --no-exact" in out
