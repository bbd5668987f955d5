"""The model card is assembled from the files the commands wrote, with targets judged."""

import json

import pytest

from r3mem.card import model_card, stage_rows


def _run(path, state, rows):
    (path / "checkpoint").mkdir(parents=True)
    (path / "checkpoint" / "state.json").write_text(json.dumps(state))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _report(path, task, results):
    report = {"task": task, "git_rev": "abc1234", "seed": 0, "command": f"r3mem bench {task}"}
    report |= {"hardware": "cpu", "results": results}
    path.write_text(json.dumps(report))


@pytest.fixture
def runs(tmp_path):
    config = {"train_data": "books/train", "valid_data": "books/validation", "seed": 0}
    _run(
        tmp_path / "base",
        {"step": 10, "elapsed": 7200.0, "params": 5_000_000, "config": config | {"seq_len": 256}},
        [{"step": 10, "tokens": 40960, "tokens_per_s": 1300.0, "valid_ppl": 73.5}],
    )
    rows = [
        {"step": 1, "stage": "ae", "tokens": 5120, "step_tokens_per_s": 200.0, "loss_rec": 2.0,
         "rec_token_acc": 0.1, "rec_exact": 0.0, "rec_stage_token_acc": 0.5},
        {"step": 2, "stage": "full", "tokens": 10240, "step_tokens_per_s": 100.0, "loss_lm": 3.0,
         "loss_rec": 1.0, "rec_token_acc": 0.2, "rec_exact": 0},
    ]  # fmt: skip
    stages = [{"name": "ae", "steps": 1, "segment_length": 16}, {"name": "full", "steps": 1}]
    adapter = config | {"r3mem": {"num_memory_tokens": 8, "segment_length": 64}, "stage": stages}
    _run(tmp_path / "adapter", {"step": 2, "elapsed": 3600.0, "config": adapter}, rows)
    results = tmp_path / "results"
    results.mkdir()
    lm = [
        {
            "method": m,
            "data": split,
            "reading": reading,
            "ppl": ppl * (1 if split == "validation" else 2),
        }
        for split in ("validation", "test")
        for reading in ("paragraphs", "chunks")
        for m, ppl in (("r3mem", 90.0), ("none", 100.0), ("base", 110.0), ("base-text", 95.0))
    ]
    lm = [row | {"tokens_scored": 1000} for row in lm]
    _report(results / "lm.json", "lm", lm)
    rec = [{"method": "r3mem", "compression": 8.0, "segments": 256, "token_acc": 0.25},
           {"method": "r3mem", "compression": 4.0, "segments": 256, "token_acc": 0.95}]  # fmt: skip
    rec = [row | {"exact_match": 0.01, "bleu": 12.5, "text_tokens": 64, "data": "validation"}
           for row in rec]  # fmt: skip
    _report(results / "reconstruct.json", "reconstruct", rec)
    return tmp_path


def test_card_reports_measured_figures_and_judges_targets(runs):
    out = runs / "packed"
    out.mkdir()
    card = model_card("tiny", runs / "base", runs / "adapter", runs / "results", out, "r3mem x")
    text = card.read_text()
    assert "r3mem x" in text and "5,000,000 parameters" in text and "40,960 training tokens" in text
    assert "validation, read in chunks: 90.00 with memory vs 100.00 without" in text
    assert "(10.0% lower, ratio 0.900; target ≤ 0.90: met); frozen base alone 110.00" in text
    assert "frozen base alone 110.00, reading the raw text before 95.00" in text
    assert "test, read in paragraphs: 180.00 with memory vs 200.00" in text
    assert (
        "- validation: reconstruction at 8x (64 tokens), greedy, 256 paragraphs: token "
        "accuracy 25.0% (target ≥ 90%: **missed**), exact match 1.0%" in text
    )
    assert "at 4x (64 tokens), greedy, 256 paragraphs: token accuracy 95.0%, exact" in text
    # One row per stage: its curriculum, the terms it trained, its throughput, where it ended.
    assert "| ae | 1 | 16 → 8 (2×) | rec | 5,120 | 0.01 | 200 | 10.0% |" in text
    assert "| full | 1 | 64 → 8 (8×) | lm, rec | 5,120 | 0.01 | 100 | 20.0% |" in text
    assert "BLEU 12.5" in text and "2.00 h" in text
    assert (out / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "| r3mem | test | chunks | 180 | 1000 |" in text  # the bench tables, as written
    assert "## What limits it" not in text


def test_card_reads_a_base_record_when_the_run_was_not_kept(runs):
    record = {"params": 7, "steps": 3, "tokens": 99, "hours": 1.5, "tokens_per_s": 12.0}
    record |= {"valid_ppl": 70.0, "config": {"train_data": "t", "valid_data": "v", "seed": 1,
                                             "seq_len": 32}}  # fmt: skip
    (runs / "base.json").write_text(json.dumps(record))
    card = model_card("tiny", runs / "base.json", runs / "adapter", runs / "results", runs, "")
    assert "- base: 7 parameters, 3 steps, 99 training tokens, 1.50 h" in card.read_text()


def test_card_copies_the_notes_beside_the_results(runs):
    (runs / "results" / "NOTES.md").write_text("## What limits it\n\nThe budget.\n")
    card = model_card("tiny", runs / "base", runs / "adapter", runs / "results", runs, "")
    text = card.read_text()
    assert text.index("## What limits it\n\nThe budget.") < text.index("### lm")


def test_card_says_when_memory_raises_perplexity(runs):
    path = runs / "results" / "lm.json"
    report = json.loads(path.read_text())
    for row in report["results"]:
        row["ppl"] = 105.0 if row["method"] == "r3mem" else row["ppl"]
    path.write_text(json.dumps(report))
    card = model_card("tiny", runs / "base", runs / "adapter", runs / "results", runs, "")
    assert (
        "105.00 with memory vs 100.00 without, same 1,000 tokens (5.0% higher, ratio 1.050; "
        "target ≤ 0.90: **missed**)" in card.read_text()
    )


def test_card_tells_the_runs_the_adapters_started_from(runs):
    """init_adapter: each earlier run (a JSON record, or a run directory) and its curve come
    first, in order."""
    curve = runs / "first_curve.png"
    curve.write_bytes(b"\x89PNG first run")
    stage = {"name": "books", "steps": 8800, "segment_length": 64, "terms": ["lm", "rec"]}
    stage |= {"tokens": 8_246_609, "hours": 7.09, "tokens_per_s": 323.0, "greedy": 0.947}
    config = {"train_data": "books/train", "r3mem": {"num_memory_tokens": 8}}
    record = {"source": "from its card", "curve": curve.name, "steps": 8800, "tokens": 8_246_609}
    record |= {"hours": 7.09, "stages": [stage], "config": config}
    (runs / "first.json").write_text(json.dumps(record))
    state = json.loads((runs / "adapter" / "checkpoint" / "state.json").read_text())
    state["config"] |= {"train_data": "wiki", "mix_data": "more", "mix_repeat": 3}
    rows = (runs / "adapter" / "metrics.jsonl").read_text().splitlines()
    _run(runs / "wiki", state, [json.loads(row) for row in rows])
    out = runs / "packed"
    out.mkdir()
    card = model_card("tiny", runs / "base", runs / "adapter", runs / "results", out, "",
                      earlier_runs=[runs / "first.json", runs / "wiki"])  # fmt: skip
    text = card.read_text()
    first = "- adapters, first run: 8,800 steps on `books/train`, 8,246,609 training tokens"
    assert first + ", 7.09 h (from its card), in stages:" in text
    assert "| books | 8,800 | 64 → 8 (8×) | lm, rec | 8,246,609 | 7.09 | 323 | 94.7% |" in text
    second = "- adapters, run 2, from those: 2 steps on `wiki` and `more` ×3, 10,240 training"
    assert second + " tokens, 1.00 h (its run directory, wiki), in stages:" in text
    assert "| full | 1 | 64 → 8 (8×) | lm, rec | 5,120 | 0.01 | 100 | 20.0% |" in text
    assert "- adapters, then from those: 2 steps on `books/train`, 10,240" in text
    assert text.index(first) < text.index(second) < text.index("then from those")
    assert text.index("then from those") < text.rindex("| ae | 1 |")
    assert (out / curve.name).read_bytes() == curve.read_bytes()
    assert (out / "training_curve-wiki.png").read_bytes().startswith(b"\x89PNG")


def test_card_carries_the_other_reports_its_runs_wrote(runs):
    """rag / conv / recall_speed beside lm and reconstruct: their tables follow, in order."""
    card = model_card("tiny", runs / "base", runs / "adapter", runs / "results", runs, "")
    assert "### rag" not in card.read_text()
    _report(runs / "results" / "recall_speed.json", "recall_speed", [{"measure": "score", "ms": 3}])
    _report(runs / "results" / "rag.json", "rag", [{"method": "r3mem", "recall@5": 0.74}])
    text = model_card(
        "tiny", runs / "base", runs / "adapter", runs / "results", runs, ""
    ).read_text()
    assert "| r3mem | 0.74 |" in text and "| score | 3 |" in text
    assert text.index("### reconstruct") < text.index("### rag") < text.index("### recall_speed")


def test_card_names_a_missing_result(runs):
    (runs / "results" / "lm.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"lm\.json: missing"):
        model_card("tiny", runs / "base", runs / "adapter", runs / "results", runs, "")


def test_card_needs_the_validation_rows(runs):
    path = runs / "results" / "lm.json"
    report = json.loads(path.read_text())
    report["results"] = [r for r in report["results"] if r["data"] == "test"]
    path.write_text(json.dumps(report))
    with pytest.raises(ValueError, match="needs r3mem and none on validation"):
        model_card("tiny", runs / "base", runs / "adapter", runs / "results", runs, "")


def test_card_of_adapters_on_a_named_base(runs):
    """A pretrained base known by name: described, not measured; the target as given."""
    out = runs / "named"
    out.mkdir()
    card = model_card("r3mem-smollm2-135m", "smollm2-135m", runs / "adapter", runs / "results",
                      out, "r3mem train", greedy_target=0.5)  # fmt: skip
    text = card.read_text()
    assert "for the pretrained base `smollm2-135m`: SmolLM2-135M-Instruct" in text
    assert 'Memory.load("smollm2-135m")' in text and "base model perplexity" not in text
    assert "- data: `books/train` (train), `books/validation` (validation)" in text
    assert "token accuracy 25.0% (target ≥ 50%: **missed**)" in text
    assert "in parts of at most" not in text  # the config names no part length
    adapter = json.loads((runs / "adapter" / "checkpoint" / "state.json").read_text())
    adapter["config"]["r3mem"]["part_tokens"] = 16
    (runs / "adapter" / "checkpoint" / "state.json").write_text(json.dumps(adapter))
    card = model_card("r3mem-smollm2-135m", "smollm2-135m", runs / "adapter", runs / "results",
                      out, "r3mem train")  # fmt: skip
    assert "write each entry in parts of at most 16 tokens" in card.read_text()


def test_a_stage_of_drawn_lengths_shows_its_range():
    rows = [{"stage": "lengths", "tokens": 1000, "step_tokens_per_s": 100.0, "loss_rec": 1.0}]
    rows[0]["rec_token_acc"] = 0.5
    config = {"r3mem": {"segment_length": 64, "num_memory_tokens": 8}}
    config["stage"] = [{"name": "lengths", "steps": 1, "min_segment_length": 16}]
    assert "| lengths | 1 | 16–64 → 8 (2–8×) | rec | 1,000 | 0.00 | 100 | 50.0% |" in stage_rows(
        rows, config
    )
