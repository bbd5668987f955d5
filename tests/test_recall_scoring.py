"""``benchmarks/recall_scoring.py``: every score ranks the same entries, over a draw or over
every question, from a memory it writes or one a ``bench rag`` run saved."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from r3mem.bench.rag import read_qa, take
from r3mem.memory import Memory

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "recall_scoring.py"
SQUAD = Path(__file__).parent / "fixtures" / "qa" / "squad_mini.json"


def scoring(model: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, SCRIPT, "--data", str(SQUAD), "--model", model, "--out", out]
    return subprocess.run([*command, "--passages", "4", *args], capture_output=True, text=True)


def save(model: str, folder: Path, **lengths: int) -> Path:
    """The memory ``bench rag`` would save of the first 4 passages: each its own source."""
    memory = Memory.load(model, **lengths)
    (qa,) = read_qa(SQUAD)
    for pid, text in enumerate(take(qa, 4, None, 0).passages):
        memory.remember(text, source=str(pid))
    memory.save(folder / "squad.r3mem")
    return folder / "squad.r3mem"


@pytest.fixture(scope="module")
def saved(wide_adapter_dir, tmp_path_factory) -> Path:
    return save(wide_adapter_dir, tmp_path_factory.mktemp("saved"))


def rows(out: Path) -> dict[str, dict]:
    found = json.loads((out / "recall_scoring.json").read_text())["results"]
    return {row["score"]: row for row in found}


def test_a_saved_memory_scores_as_the_memory_written_again(wide_adapter_dir, saved, tmp_path):
    model = str(wide_adapter_dir)
    for name, extra in [("written", []), ("opened", ["--memories", str(saved)])]:
        done = scoring(model, tmp_path / name, "--questions", "all", "--no-rerank", *extra)
        assert done.returncode == 0, done.stderr
    written, opened = rows(tmp_path / "written"), rows(tmp_path / "opened")
    drop = "ms/question"
    assert {k: {**v, drop: 0} for k, v in written.items()} == {
        k: {**v, drop: 0} for k, v in opened.items()
    }
    assert {"bm25", "cosine", "keywords"} <= set(written)
    assert not any("pmi" in score for score in written)  # --no-rerank
    (qa,) = read_qa(SQUAD)
    assert {row["questions"] for row in written.values()} == {len(take(qa, 4, None, 0).questions)}


def test_a_saved_memory_of_other_passages_is_refused(wide_adapter_dir, saved, tmp_path):
    done = scoring(str(wide_adapter_dir), tmp_path, "--passages", "3", "--memories", str(saved))
    assert done.returncode != 0
    assert "does not hold these passages' segments" in done.stderr


def test_one_memory_file_per_qa_set(wide_adapter_dir, saved, tmp_path):
    done = scoring(str(wide_adapter_dir), tmp_path, "--memories", str(saved), str(saved))
    assert done.returncode != 0 and "2 files for 1 QA sets" in done.stderr


def test_a_memory_of_other_lengths_is_cut_as_it_was_and_re_ranked_by_its_best_part(
    wide_adapter_dir, tmp_path
):
    """A memory of 16-token entries in parts of 8 is cut at its own entry length, and the
    query-likelihood re-ranker scores each entry in parts once."""
    path = save(wide_adapter_dir, tmp_path, entry_tokens=16, part_tokens=8)
    assert max(e.parts for e in Memory.open(path).bank.entries.values()) == 2
    done = scoring(str(wide_adapter_dir), tmp_path, "--memories", str(path))
    assert done.returncode == 0, done.stderr
    found = rows(tmp_path)
    reranked = [row for score, row in found.items() if "pmi" in score]
    assert len(reranked) == 4 and all(0 <= row["recall@5"] <= 1 for row in reranked)
    (qa,) = read_qa(SQUAD)
    assert found["bm25"]["entries"] > len(take(qa, 4, None, 0).passages)


@pytest.mark.parametrize("count", ["0", "-3", "some"])
def test_questions_are_a_positive_count_or_all(wide_adapter_dir, tmp_path, count):
    done = scoring(str(wide_adapter_dir), tmp_path, "--questions", count)
    assert done.returncode == 2 and "a positive count or all" in done.stderr
