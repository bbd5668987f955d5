"""``benchmarks/read_back.py``: bench rag's retrieval-alone rows on every question, from a
memory a ``bench rag`` run saved, equal to what bench rag itself measures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from r3mem import Memory
from r3mem.bench.tasks import run_bench

from .test_recall_scoring import SQUAD, save

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "read_back.py"
METHODS = ["r3mem", "r3mem-exact", "bm25"]


def read_back(model: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, SCRIPT, "--data", str(SQUAD), "--model", model, "--out", out]
    return subprocess.run([*command, "--passages", "4", *args], capture_output=True, text=True)


def test_a_saved_memory_reads_back_as_bench_rag_on_every_question(wide_adapter_dir, tmp_path):
    model = str(wide_adapter_dir)
    saved = save(model, tmp_path, part_tokens=16)
    done = read_back(
        model, tmp_path / "out", "--memories", str(saved), "--methods", ",".join(METHODS)
    )
    assert done.returncode == 0, done.stderr
    found = json.loads((tmp_path / "out" / "read_back.json").read_text())["results"]
    assert [row["method"] for row in found] == METHODS
    assert {(row["entry_tokens"], row["part_tokens"]) for row in found} == {(32, 16)}
    bench = run_bench("rag", model, METHODS, str(SQUAD), 0, out=str(tmp_path / "bench"),
                      reader="none", passages=4, part_tokens=16)["results"]  # fmt: skip
    drop = ("text_bytes", "entries", "entry_tokens", "part_tokens")  # not bench's columns
    assert [{k: v for k, v in row.items() if k not in drop} for row in found] == [
        {k: v for k, v in row.items() if k not in drop} for row in bench
    ]
    assert found[0]["questions"] > 1 and found[0]["answer_contains@5"] is not None


def test_a_memory_not_saved_yet_is_written_as_bench_rag_writes_it(wide_adapter_dir, tmp_path):
    """Where no bench rag run saved the set's memory, read_back writes it there first: the
    file holds what bench rag saves, and the rows are those of reading it back."""
    model, fresh = str(wide_adapter_dir), tmp_path / "fresh.r3mem"
    first = read_back(model, tmp_path / "first", "--memories", str(fresh), "--methods", "r3mem")
    assert first.returncode == 0, first.stderr
    saved = save(model, tmp_path)
    again = read_back(model, tmp_path / "again", "--memories", str(saved), "--methods", "r3mem")
    assert again.returncode == 0, again.stderr
    rows = [json.loads((tmp_path / d / "read_back.json").read_text())["results"] for d in
            ("first", "again")]  # fmt: skip
    assert rows[0] == rows[1] and rows[0][0]["questions"] > 1
    assert Memory.open(fresh).bank.to_file_parts()[1] == Memory.open(saved).bank.to_file_parts()[1]


def test_memories_must_match_the_sets_and_methods_be_known(wide_adapter_dir, tmp_path):
    model = str(wide_adapter_dir)
    saved = save(model, tmp_path)
    two = read_back(model, tmp_path / "out", "--memories", str(saved), str(saved))
    assert two.returncode == 2 and "2 files for 1 QA sets" in two.stderr
    unknown = read_back(model, tmp_path / "out", "--memories", str(saved), "--methods", "gold")
    assert (
        unknown.returncode == 2 and "choose from r3mem, r3mem-greedy, r3mem-exact" in unknown.stderr
    )
    other = read_back(model, tmp_path / "out", "--memories", str(saved), "--passages", "3")
    assert other.returncode == 1 and "does not hold these passages' segments" in other.stderr
    assert not (tmp_path / "out").exists()
