"""r3mem bench: the JSON contract, the Markdown table, identical tokens across methods."""

import json
from pathlib import Path

import pytest

from r3mem.assets import SAMPLE_TEXT, asset_path
from r3mem.bench.tasks import run_bench
from r3mem.cli import main

SAMPLE = str(asset_path(SAMPLE_TEXT))


@pytest.mark.parametrize("task", ["lm", "reconstruct"])
def test_quick_bench_writes_json_and_markdown(adapter_dir, tmp_path, task):
    report = run_bench(task, model=str(adapter_dir), data=SAMPLE, quick=True, out=str(tmp_path))
    saved = json.loads((tmp_path / f"{task}.json").read_text())
    assert saved == report
    assert set(saved) == {"task", "git_rev", "seed", "command", "hardware", "results"}
    table = (tmp_path / f"{task}.md").read_text()
    for row in saved["results"]:
        assert f"| {row['method']} |" in table
    if task == "lm":
        by_method = {row["method"]: row for row in saved["results"]}
        assert by_method["r3mem"]["tokens_scored"] == by_method["none"]["tokens_scored"] > 0
        assert by_method["r3mem"]["ppl"] != by_method["none"]["ppl"]
        png = tmp_path / f"lm_position-{Path(SAMPLE).name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
    else:
        (row,) = saved["results"]
        assert row["compression"] == 8.0 and 0 <= row["token_acc"] <= 1 and "bleu" in row


def test_quick_cost_bench(adapter_dir, tmp_path):
    report = run_bench("cost", model=str(adapter_dir), quick=True, out=str(tmp_path))
    rows = report["results"]
    (summary,) = [r for r in rows if "write_tokens_per_s" in r]
    assert summary["write_tokens_per_s"] > 0 and summary["reconstruct_tokens_per_s"] > 0
    assert summary["bank_bytes_per_1k_tokens"] > summary["document_bytes_per_1k_tokens"]
    timed = [r for r in rows if "s_per_token" in r]
    assert {(r["method"], r["history_tokens"]) for r in timed} == {
        (m, h) for m in ("r3mem", "full_attention") for h in (1_000, 10_000)
    }
    assert all(r["s_per_token"] > 0 for r in timed)
    assert next(r for r in rows if r["method"] == "process")["peak_rss_mib"] > 0


def test_bad_requests(adapter_dir, tmp_path, capsys):
    assert main(["bench", "speed", "--model", str(adapter_dir)]) == 2
    assert "unknown bench task" in capsys.readouterr().err
    assert main(["bench", "lm", "--methods", "rmt", "--model", str(adapter_dir)]) == 2
    assert "unknown method(s) rmt" in capsys.readouterr().err
    assert main(["bench", "lm", "--data", str(tmp_path / "none"), "--model", str(adapter_dir)]) == 2
    assert "no such data" in capsys.readouterr().err


def test_training_curve_plot(tmp_path):
    from r3mem.bench.plots import training_curve

    metrics = tmp_path / "metrics.jsonl"
    rows = [
        {"step": 1, "tokens": 100},
        {"step": 2, "tokens": 200, "rec_token_acc": 0.3, "rec_exact": 0.0},
        {"step": 4, "tokens": 400, "rec_token_acc": 0.5, "rec_exact": 0.1},
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    png = training_curve(metrics, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(ValueError, match="no evaluation rows"):
        training_curve(metrics, tmp_path / "none.png")
