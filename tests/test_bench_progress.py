"""Resumable rag and conv benches: an interrupted run, resumed, reports what an
uninterrupted one does, and recomputes only the units it had not finished."""

import json
from pathlib import Path

import pytest

from r3mem.bench import conv, rag, tasks
from r3mem.bench.progress import Progress
from r3mem.bench.retrieval import score_questions
from r3mem.bench.tasks import run_bench

FIXTURES = Path(__file__).parent / "fixtures"
RUN = {"task": "rag", "methods": ["bm25", "gold"], "seed": 0}
WRITTEN = {rag: rag.written, conv: conv.written}


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
    # a field one run lacks is a difference, even when the other holds None there
    with pytest.raises(ValueError, match=r"\(it differs in entry_tokens\)"):
        Progress(path, dict(RUN, entry_tokens=None), resume=True)
    progress = Progress(path, RUN, revision="abc1234")  # without --resume: anew
    assert progress.get("0 squad", "bm25") is None
    assert len(path.read_text().splitlines()) == 3  # the old units stay until a unit ends
    progress.put([1, 2], "1 nq", "gold")
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"run": RUN},
        {"key": ["1 nq", "gold"], "value": [1, 2], "git_rev": "abc1234"},
    ]
    progress.finish()
    assert not path.exists()


def test_units_keep_the_revision_that_made_them(tmp_path):
    path = tmp_path / "rag.partial.jsonl"
    Progress(path, RUN, revision="aaa").put({"recall@5": 0.5}, "0 squad", "bm25")
    resumed = Progress(path, RUN, resume=True, revision="bbb")
    assert resumed.revisions() == "aaa (resumed)"  # every unit reused: none made at bbb
    resumed.put({"recall@5": 1.0}, "0 squad", "gold")
    assert resumed.revisions() == "aaa, bbb (resumed)"
    again = Progress(path, RUN, resume=True, revision="ccc")
    assert again.made_at == {("0 squad", "bm25"): "aaa", ("0 squad", "gold"): "bbb"}
    assert Progress(path, RUN, revision="ccc").revisions() == "ccc"  # started over


def test_a_line_cut_by_the_interruption_is_dropped_and_a_corrupt_one_refused(tmp_path):
    path = tmp_path / "rag.partial.jsonl"
    Progress(path, RUN).put({"recall@5": 1.0}, "0 squad", "bm25")
    with open(path, "a") as handle:
        handle.write('{"key": ["0 squad", "gold"], "val')
    resumed = Progress(path, RUN, resume=True)
    assert resumed.get("0 squad", "bm25") == {"recall@5": 1.0}
    assert resumed.get("0 squad", "gold") is None
    resumed.put({"recall@5": 0.0}, "0 squad", "gold")  # cut again: resumes a second time
    again = Progress(path, RUN, resume=True)
    assert again.done == {
        ("0 squad", "bm25"): {"recall@5": 1.0},
        ("0 squad", "gold"): {"recall@5": 0.0},
    }
    path.write_text('{"ru')  # cut in its first line: nothing had finished
    assert Progress(path, RUN, resume=True).done == {} and not path.exists()
    for corrupt in ('{"run": {}}\n{oops}\n', '{"run": 5}\n', '{"key": []}\n'):
        path.write_text(corrupt)
        with pytest.raises(ValueError, match="not a partial bench file"):
            Progress(path, RUN, resume=True)


class Interrupted(Exception):
    """The run stopped (a kill, a lost session)."""


def _interrupted(monkeypatch, module, after: int) -> tuple[list[str], list[int]]:
    """Make ``module``'s scoring stop the run once ``after`` units finished; returns the
    units it scored and the memories it wrote."""
    ran, wrote = [], []

    def scoring(index, questions, reader, desc):
        if len(ran) == after:
            raise Interrupted
        ran.append(desc)
        return score_questions(index, questions, reader, desc)

    def writing(*args):
        wrote.append(1)
        return WRITTEN[module](*args)

    monkeypatch.setattr(module, "score_questions", scoring)
    monkeypatch.setattr(module, "written", writing)
    return ran, wrote


@pytest.mark.parametrize(
    ("task", "module", "model", "data", "units", "finished", "writes"),
    [
        # squad, hotpotqa, nq x three methods; stopped in hotpotqa's third: nq's to write
        ("rag", rag, "adapter_dir", "qa", 3 * 3, 5, 1),
        # stopped in hotpotqa's first, once its memory was written: reopened, not written again
        ("rag", rag, "adapter_dir", "qa", 3 * 3, 3, 1),
        # two conversations x two methods; stopped in the second's bm25 (nothing left to write)
        ("conv", conv, "wide_adapter_dir", "conv/locomo_tiny.json", 2 * 2, 3, 0),
        # stopped in the second's r3mem, its memory written: reopened
        ("conv", conv, "wide_adapter_dir", "conv/locomo_tiny.json", 2 * 2, 2, 0),
    ],
)
def test_an_interrupted_bench_resumes_where_it_stopped(
    task, module, model, data, units, finished, writes, request, tmp_path, monkeypatch
):
    args = dict(
        model=str(request.getfixturevalue(model)),
        methods=["r3mem", "bm25"] + (["gold"] if task == "rag" else []),
        data=str(FIXTURES / data),
        reader="none",
    )
    whole = run_bench(task, out=str(tmp_path / "whole"), **args)
    out = tmp_path / "cut"
    _interrupted(monkeypatch, module, after=finished)
    with pytest.raises(Interrupted):
        run_bench(task, out=str(out), **args)
    partial = out / f"{task}.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 1 + finished
    kept = list((out / f"{task}.partial").glob("*.r3mem"))  # every case cut in its second set
    assert len(kept) == 2
    with pytest.raises(ValueError, match="differs in questions"):
        run_bench(task, out=str(out), questions=1, resume=True, **args)
    if task == "rag":  # the entry length it cut at is part of the request
        with pytest.raises(ValueError, match="differs in entry_tokens"):
            run_bench(task, out=str(out), entry_tokens=8, resume=True, **args)
        args["entry_tokens"] = 16  # the length it ran at by default (segment length 16)
    ran, wrote = _interrupted(monkeypatch, module, after=units)
    monkeypatch.setattr(tasks, "git_revision", lambda out: "later")  # resumed after a commit
    resumed = run_bench(task, out=str(out), resume=True, **args)
    assert resumed["results"] == whole["results"]
    assert resumed["git_rev"] == f"{whole['git_rev']}, later (resumed)"
    assert (len(ran), len(wrote)) == (units - finished, writes)
    assert not partial.exists() and not (out / f"{task}.partial").exists()


def test_resume_is_for_rag_and_conv(tmp_path):
    with pytest.raises(ValueError, match="--resume is for rag and conv"):
        run_bench("lm", out=str(tmp_path / "out"), resume=True)
    assert not (tmp_path / "out").exists()
