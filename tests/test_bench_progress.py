"""Resumable rag and conv benches: an interrupted run, resumed, reports what an
uninterrupted one does, and recomputes only the units it had not finished."""

import json
from pathlib import Path

import pytest

from r3mem.bench import conv, rag
from r3mem.bench.progress import Progress
from r3mem.bench.tasks import run_bench

FIXTURES = Path(__file__).parent / "fixtures"
RUN = {"task": "rag", "methods": ["bm25", "gold"], "seed": 0}


def test_units_come_back_only_for_the_same_run(tmp_path):
    path = tmp_path / "rag.partial.jsonl"
    progress = Progress(path, RUN)
    progress.put({"recall@5": 0.5}, "0 squad", "bm25")
    progress.put({"recall@5": None}, "0 squad", "gold")
    resumed = Progress(path, dict(RUN, methods=("bm25", "gold")), resume=True)  # tuples: lists
    assert resumed.get("0 squad", "bm25") == {"recall@5": 0.5}
    assert resumed.get("0 squad", "gold") == {"recall@5": None}
    assert resumed.get("1 nq", "bm25") is None
    with pytest.raises(ValueError, match=r"made by another run \(it differs in seed\)"):
        Progress(path, dict(RUN, seed=1), resume=True)
    assert Progress(path, RUN).get("0 squad", "bm25") is None  # without --resume: anew
    assert not path.exists()  # until a unit ends
    progress = Progress(path, RUN)
    progress.put([1, 2], "1 nq", "gold")
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"run": RUN},
        {"key": ["1 nq", "gold"], "value": [1, 2]},
    ]
    progress.finish()
    assert not path.exists()


def test_a_line_cut_by_the_interruption_is_dropped_and_a_corrupt_one_refused(tmp_path):
    path = tmp_path / "rag.partial.jsonl"
    Progress(path, RUN).put({"recall@5": 1.0}, "0 squad", "bm25")
    with open(path, "a") as handle:
        handle.write('{"key": ["0 squad", "gold"], "val')
    resumed = Progress(path, RUN, resume=True)
    assert resumed.get("0 squad", "bm25") == {"recall@5": 1.0}
    assert resumed.get("0 squad", "gold") is None
    path.write_text(path.read_text().replace('"val', '"value": 1}\n{oops}\n'))
    with pytest.raises(ValueError, match="not a partial bench file"):
        Progress(path, RUN, resume=True)


class Interrupted(Exception):
    """The run stopped (a kill, a lost session)."""


def _interrupted(monkeypatch, module, after: int) -> list[str]:
    """Make ``module``'s scoring stop the run once ``after`` units finished; returns the
    units it scored."""
    monkeypatch.undo()
    score, ran = module.score_questions, []

    def scoring(index, questions, reader, desc):
        if len(ran) == after:
            raise Interrupted
        ran.append(desc)
        return score(index, questions, reader, desc)

    monkeypatch.setattr(module, "score_questions", scoring)
    return ran


@pytest.mark.parametrize(
    ("task", "module", "model", "data", "units"),
    [
        ("rag", rag, "adapter_dir", "qa", 3 * 3),  # squad, hotpotqa, nq x three methods
        ("conv", conv, "wide_adapter_dir", "conv/locomo_tiny.json", 2 * 2),  # 2 conversations
    ],
)
def test_an_interrupted_bench_resumes_where_it_stopped(
    task, module, model, data, units, request, tmp_path, monkeypatch
):
    args = dict(
        model=str(request.getfixturevalue(model)),
        methods=["r3mem", "bm25"] + (["gold"] if task == "rag" else []),
        data=str(FIXTURES / data),
        reader="none",
    )
    whole = run_bench(task, out=str(tmp_path / "whole"), **args)["results"]
    out = tmp_path / "cut"
    ran = _interrupted(monkeypatch, module, after=units // 2)
    with pytest.raises(Interrupted):
        run_bench(task, out=str(out), **args)
    partial = out / f"{task}.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 1 + units // 2
    with pytest.raises(ValueError, match="differs in questions"):
        run_bench(task, out=str(out), questions=1, resume=True, **args)
    ran = _interrupted(monkeypatch, module, after=units)
    assert run_bench(task, out=str(out), resume=True, **args)["results"] == whole
    assert len(ran) == units - units // 2
    assert not partial.exists()


def test_resume_is_for_rag_and_conv(tmp_path):
    with pytest.raises(ValueError, match="--resume is for rag and conv"):
        run_bench("lm", out=str(tmp_path / "out"), resume=True)
    assert not (tmp_path / "out").exists()
