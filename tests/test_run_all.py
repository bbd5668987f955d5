"""benchmarks/run_all.sh --quick: every bench config trains, every task runs, RESULTS.md is
assembled; on the tiny fixtures, nothing from shared data."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from r3mem.training.common import load_config
from r3mem.training.train import TrainConfig

from .test_train_base import SAMPLE

ROOT = Path(__file__).resolve().parents[1]
ALICE = str(ROOT / "tests" / "fixtures" / "texts" / "alice.txt")
CONFIGS = sorted((ROOT / "configs" / "bench").glob("*.toml"))


STAGED = ("r3mem", "r3mem-aelm", "icae", "rmt", "none")  # the staged budget; the rest: older


def test_bench_configs_are_valid_and_share_their_budget():
    configs = {path.stem: load_config(TrainConfig, path, {}) for path in CONFIGS}
    assert {"none", "window2", "window4", "rmt", "icae", "autocompressor", "r3mem"} <= set(configs)
    assert {name for name, config in configs.items() if config.stage} == set(STAGED)
    shared = ("steps", "batch_size", "grad_accum", "lr", "warmup", "seed", "train_data")
    for budget in (STAGED, [name for name in configs if name not in STAGED]):
        for key in shared:
            assert len({repr(getattr(configs[name], key)) for name in budget}) == 1, key
    # The staged methods: the same stages, steps, batches and lengths; only the terms differ.
    shapes = {
        name: [(s.name, s.steps, s.batch_size, s.segment_length, s.bptt_segments, s.lr)
               for s in configs[name].stages]
        for name in STAGED
    }  # fmt: skip
    assert len(shapes["r3mem"]) > 1 and all(s == shapes["r3mem"] for s in shapes.values())
    model_configs = {name: config.model_config for name, config in configs.items()}
    assert {(c.segment_length, c.bptt_segments) for c in model_configs.values()} == {(64, 2)}
    shipped = load_config(TrainConfig, ROOT / "configs" / "r3mem-tiny-books.toml", {})
    assert configs["r3mem"].steps < shipped.steps
    modes = {name: c.memory_mode for name, c in model_configs.items()}
    assert modes["none"] == "none" and modes["autocompressor"] == "accumulate"
    assert [model_configs[f"window{k}"].window_segments for k in (2, 4)] == [2, 4]
    assert model_configs["icae"].decoder == "separate" and not model_configs["rmt"].reversible


@pytest.mark.slow
def test_quick_run_all_regenerates_the_results_page(base_dir, tmp_path):
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "R3MEM": f"{sys.executable} -m r3mem.cli",
        "PYTHON": sys.executable,
        "BASE": base_dir,
        "TRAIN": SAMPLE,
        "VALID": SAMPLE,
        "TEST": ALICE,
        "RUNS": str(runs),
        "CACHE": str(tmp_path / "cache"),
    }
    script = str(ROOT / "benchmarks" / "run_all.sh")
    subprocess.run(["bash", script, "--quick"], env=env, check=True, timeout=1200)
    names = [path.stem for path in CONFIGS]
    for name in names:  # each trained for the quick 2 steps
        metrics = (runs / name / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in metrics] == [1, 2], name
    results = runs / "results"
    lm = json.loads((results / "lm.json").read_text())
    assert set(lm) == {"task", "git_rev", "seed", "command", "hardware", "packages", "results"}
    assert {(row["method"], row["data"]) for row in lm["results"]} == {
        (name, Path(split).name) for name in ["base", *names] for split in (SAMPLE, ALICE)
    }
    for split in (SAMPLE, ALICE):  # identical tokens for every method, in each reading
        for reading in ("paragraphs", "chunks"):
            scored = {
                r["tokens_scored"]
                for r in lm["results"]
                if r["data"] == Path(split).name and r["reading"] == reading
            }
            assert len(scored) == 1 and scored.pop() > 0
    rec = json.loads((results / "reconstruct.json").read_text())
    assert {row["method"] for row in rec["results"]} == {
        n for n in names if n.startswith(("r3mem", "icae"))
    }
    assert {row["compression"] for row in rec["results"]} == {2.0, 4.0, 8.0, 16.0}
    page = (runs / "RESULTS.md").read_text()
    for task in ("lm", "reconstruct", "cost"):
        report = json.loads((results / f"{task}.json").read_text())
        assert f"### {task}" in page and f"rev {report['git_rev']}" in page
        assert f"`{report['command']}` — seed {report['seed']}" in page
    for png in ("lm_position-alice.txt", "reconstruct_ratio", "cost_history"):
        assert f"({os.path.relpath(results / png, runs)}.png)" in page


def _results_md():
    spec = importlib.util.spec_from_file_location("results_md", ROOT / "benchmarks/results_md.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_page_gives_each_subdirectory_of_reports_a_section(tmp_path):
    results_md = _results_md()
    results, default = tmp_path / "results", tmp_path / "results" / "default"
    default.mkdir(parents=True)
    for folder, table in ((results, "### lm budget"), (default, "### lm shipped")):
        (folder / "lm.json").write_text(json.dumps({"task": "lm"}))
        (folder / "lm.md").write_text(f"{table}\n")
    (default / "lm_position-test.png").write_bytes(b"png")
    (results / "notes.json").write_text("[]")  # not a report: left out
    (results / "NOTES.md").write_text("Budgets and wall times.\n")
    page = results_md.assemble(results, tmp_path / "RESULTS.md")
    order = [
        "# r3mem benchmark results",
        "Budgets and wall times.",
        "### lm budget",
        "## The shipped default, r3mem-tiny-books",
        "### lm shipped",
        "![lm_position-test](results/default/lm_position-test.png)",
    ]
    assert [page.index(part) for part in order] == sorted(page.index(part) for part in order)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "NOTES.md").write_text("notes alone are no results\n")
    with pytest.raises(SystemExit, match="no bench reports"):
        results_md.assemble(tmp_path / "empty", tmp_path / "RESULTS.md")
