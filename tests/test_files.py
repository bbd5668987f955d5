"""Files written whole, with their permissions, by one writer at a time; nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from r3mem.files import LockTimeout, atomic_path, atomic_write, locked, remove_stale_temps
from r3mem.memory import Memory
from r3mem.tensorfile import write_tensors

CLI = [sys.executable, "-m", "r3mem.cli"]
HOLD = """
import sys, time
from pathlib import Path
from r3mem.files import locked, atomic_write
path = Path(sys.argv[1])
with locked(path):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    atomic_write(path, "first")
"""


def test_atomic_write_keeps_permissions_and_leaves_nothing(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write(path, b"one")
    path.chmod(0o640)
    atomic_write(path, "two")
    assert path.read_text() == "two"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_stale_temps_of_killed_writers_are_removed_on_save(adapter_dir, tmp_path):
    path = tmp_path / "notes.r3mem"
    stale = tmp_path / ".notes.r3mem.99999999.deadbeef.tmp"  # a writer killed mid-save
    stale.write_bytes(b"x" * 1000)
    others = [  # another file's, and a live writer's: never touched
        tmp_path / ".notes.r3mem.bak.99999999.deadbeef.tmp",
        tmp_path / f".notes.r3mem.{os.getppid()}.0123abcd.tmp",
    ]
    for other in others:
        other.write_bytes(b"y")
    memory = Memory.load(adapter_dir)
    memory.remember("Alice keeps bees in Lyon.")
    memory.save(path)
    assert not stale.exists() and all(other.exists() for other in others)
    assert remove_stale_temps(path) == 0


def test_a_second_writer_waits_for_the_first(tmp_path):
    path = tmp_path / "file.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD), str(path), "3"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert first.stdout.readline().strip() == "held"
        start = time.monotonic()
        with (
            pytest.raises(LockTimeout, match="another r3mem process is writing"),
            locked(path, timeout=0.2),
        ):
            pass
        assert time.monotonic() - start < 2
        with locked(path, timeout=30):
            assert path.read_text() == "first"  # it waited for the whole write
    finally:
        first.wait(timeout=30)
    assert first.returncode == 0


def test_two_cli_writers_keep_both_texts(adapter_dir, tmp_path):
    """Two `r3mem remember` into one memory file at once: both wait while the file is held,
    say so, then both succeed and both texts stay."""
    path = tmp_path / "notes.r3mem"
    texts = {
        "a": "Alice Moreau keeps bees in Lyon.\n\nShe sells honey on Fridays.",
        "b": "Bob Tanaka sailed to Lisbon in 1890.\n\nHe never came back.",
    }
    for name, text in texts.items():
        (tmp_path / f"{name}.txt").write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    options = ["--memory", str(path), "--model", str(adapter_dir)]
    with locked(path):  # both start while the file is held: they must overlap
        runs = [
            subprocess.Popen(
                [*CLI, "remember", str(tmp_path / f"{name}.txt"), *options],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for name in texts
        ]
        for run in runs:  # each says it waits, before anything else
            assert "another process is writing it; waiting" in run.stderr.readline()
    for run in runs:
        err = run.communicate(timeout=300)[1]
        assert run.returncode == 0, err
    sources = [entry.meta["source"] for entry in Memory.open(path).bank.entries.values()]
    assert sorted(set(sources)) == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    alone = Memory.load(adapter_dir)
    assert len(sources) == sum(len(alone.segments(text)) for text in texts.values())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_save_into_a_missing_folder_or_onto_a_folder_is_refused_first(adapter_dir, tmp_path):
    missing = tmp_path / "nowhere" / "x.r3mem"
    with pytest.raises(FileNotFoundError, match="no folder"), Memory.editing(missing, adapter_dir):
        raise AssertionError("the block must not run")
    folder = tmp_path
    with pytest.raises(IsADirectoryError, match="is a folder"), Memory.editing(folder, adapter_dir):
        raise AssertionError("the block must not run")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_tensors_written_piece_by_piece_read_back_stacked(tmp_path, dtype):
    pieces = [torch.randn(3, 5).to(dtype) for _ in range(4)]
    parts = {"entries": pieces, "count": list(torch.tensor([7])), "one": [torch.ones(2)]}
    write_tensors(tmp_path / "t.safetensors", parts, {"note": "hi"})
    loaded = load_file(str(tmp_path / "t.safetensors"))
    assert torch.equal(loaded["entries"], torch.stack(pieces))
    assert torch.equal(loaded["count"], torch.tensor([7])) and loaded["one"].shape == (1, 2)
    with safe_open(str(tmp_path / "t.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"note": "hi"}
    with pytest.raises(ValueError, match="different shapes"):
        write_tensors(tmp_path / "u.safetensors", {"x": [torch.ones(2), torch.ones(3)]}, {})
