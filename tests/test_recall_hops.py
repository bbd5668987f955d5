"""``benchmarks/recall_hops.py``: its order at the shipped bridge weight is the order
``recall`` finds, its rows are judged from it, and a memory it saved scores as the memory
written again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from r3mem.bank import BRIDGE_WEIGHT
from r3mem.bench.rag import read_qa, take
from r3mem.bench.retrieval import Unit, recall_at
from r3mem.memory import Memory

from .test_bridge import QUERY, TEXTS
from .test_recall_scoring import SQUAD, save

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "recall_hops.py"


def test_the_shipped_order_is_recalls_and_the_other_is_not_kept_first(adapter_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from recall_hops import orders

    memory = Memory.load(adapter_dir)
    for source, text in TEXTS.items():
        memory.remember(text, source=source)
    found = orders(memory, QUERY)
    recalled = [r.entry_id for r in memory.recall(QUERY, k=len(memory.bank))]
    assert found[f"bridge {BRIDGE_WEIGHT:g}"] == recalled
    assert found["bridge 0"] == found["bridge 0, first not kept"]  # no second look to undo
    assert found["bridge 8"][0] == recalled[0] != found["bridge 8, first not kept"][0]


def hops(model: str, out: Path, *args: str) -> list[dict]:
    command = [sys.executable, SCRIPT, "--data", str(SQUAD), "--model", model, "--out", out]
    done = subprocess.run(
        [*command, "--first", "0", "--last", "4", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads((out / "recall_hops.json").read_text())["results"]


def test_the_shipped_row_is_what_recall_finds(wide_adapter_dir, tmp_path):
    model, saved = str(wide_adapter_dir), tmp_path / "squad.r3mem"
    written = hops(model, tmp_path / "written", "--memories", str(saved))
    assert saved.is_file()  # kept for the next run, which opens it
    assert hops(model, tmp_path / "opened", "--memories", str(saved)) == written
    (shipped,) = [row for row in written if row["shipped"]]
    assert shipped["score"] == f"bridge {BRIDGE_WEIGHT:g}"
    assert written[0]["score"] == "bm25"
    (qa,) = read_qa(SQUAD)
    questions = take(qa, 4, None, 0).questions
    (tmp_path / "again").mkdir()
    memory = Memory.open(save(model, tmp_path / "again"))
    found = []
    for question in questions:
        units = [Unit("", [hit.meta["source"]]) for hit in memory.recall(question.text, k=5)]
        found.append(recall_at(units, question.gold, 5))
    assert shipped["questions"] == len(questions) > 1
    assert shipped["recall@5"] == pytest.approx(sum(found) / len(found), abs=5e-4)
