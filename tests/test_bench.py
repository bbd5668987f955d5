"""r3mem bench: the JSON contract, the Markdown table, identical tokens across methods."""

import json
import math
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from r3mem import R3MemConfig, R3MemModel
from r3mem.assets import SAMPLE_TEXT, asset_path
from r3mem.bank import round_state
from r3mem.bench.baselines import Method, parse_methods
from r3mem.bench.reconstruct import exact_recall_cost
from r3mem.bench.tasks import run_bench
from r3mem.cli import main
from r3mem.eval import book_chunks, book_segments, read_book, stream_perplexity
from r3mem.memory import Memory
from r3mem.report import git_revision

from .conftest import make_base, randomize
from .test_model import ids, wrapped

SAMPLE = str(asset_path(SAMPLE_TEXT))
ALICE = str(Path(__file__).with_name("fixtures") / "texts" / "alice.txt")


@pytest.mark.parametrize("task", ["lm", "reconstruct"])
def test_quick_bench_writes_json_and_markdown(adapter_dir, tmp_path, task):
    report = run_bench(task, model=str(adapter_dir), data=SAMPLE, quick=True, out=str(tmp_path))
    saved = json.loads((tmp_path / f"{task}.json").read_text())
    assert saved == report
    assert set(saved) == {"task", "git_rev", "seed", "command", "hardware", "packages", "results"}
    table = (tmp_path / f"{task}.md").read_text()
    assert saved["packages"]["bm25s"] == version("bm25s")  # figures move with its version
    assert f", bm25s {version('bm25s')}" in table.splitlines()[2]
    for row in saved["results"]:
        assert f"| {row['method']} |" in table
    if task == "lm":
        assert {row["reading"] for row in saved["results"]} == {"paragraphs", "chunks"}
        for reading, suffix in (("paragraphs", ""), ("chunks", "-chunks")):
            rows = [row for row in saved["results"] if row["reading"] == reading]
            by_method = {row["method"]: row for row in rows}
            assert by_method["r3mem"]["tokens_scored"] == by_method["none"]["tokens_scored"] > 0
            for frozen in ("base", "base-text"):
                assert by_method[frozen]["tokens_scored"] == by_method["none"]["tokens_scored"]
            assert by_method["base-text"]["ppl"] != by_method["base"]["ppl"]
            assert by_method["r3mem"]["ppl"] != by_method["none"]["ppl"]
            png = tmp_path / f"lm_position-{Path(SAMPLE).name}{suffix}.png"
            assert png.read_bytes()[:4] == b"\x89PNG"
    else:
        row, half = saved["results"]  # the paragraphs, then their first halves
        assert (row["compression"], row["text_tokens"]) == (8.0, 16)
        assert (half["compression"], half["text_tokens"]) == (4.0, 8)
        assert 0 <= row["token_acc"] <= 1 and "bleu" in row and "bleu" in half
        assert 0 <= row["doc_token_acc"] <= 1 and 0 <= row["doc_exact_match"] <= 1
        assert 0 <= row["corrections_per_1k_tokens"] <= 1000
        assert row["exact_bytes_per_1k_tokens"] > 0 and row["utf8_bytes_per_1k_tokens"] > 0
        assert (tmp_path / "reconstruct_ratio.png").read_bytes()[:4] == b"\x89PNG"


def test_quick_cost_bench(adapter_dir, tmp_path):
    report = run_bench("cost", model=str(adapter_dir), quick=True, out=str(tmp_path))
    rows = report["results"]
    (summary,) = [r for r in rows if "write_tokens_per_s" in r]
    assert summary["write_tokens_per_s"] > 0 and summary["reconstruct_tokens_per_s"] > 0
    assert summary["bank_bytes_per_1k_tokens"] > summary["document_bytes_per_1k_tokens"]
    assert summary["full_attention_bytes_per_1k_tokens"] > summary["document_bytes_per_1k_tokens"]
    timed = [r for r in rows if "s_per_token" in r]
    assert rows[: len(timed)] == timed  # the table leads with the timings and their ratios
    assert {(r["method"], r["history_tokens"]) for r in timed} == {
        (m, h) for m in ("r3mem", "full_attention") for h in (1_000, 10_000)
    }
    assert all(r["s_per_token"] > 0 for r in timed)
    seconds = {(r["method"], r["history_tokens"]): r["s_per_token"] for r in timed}
    for row in timed:
        method, history = row["method"], row["history_tokens"]
        own = seconds[method, history] / seconds[method, 1000]
        assert row["vs_1k_history"] == pytest.approx(own)
        if method == "r3mem":
            full = seconds["full_attention", history]
            assert row["full_attention_over_r3mem"] == pytest.approx(full / row["s_per_token"])
    assert (tmp_path / "cost_history.png").stat().st_size > 0
    assert next(r for r in rows if r["method"] == "process")["peak_rss_mib"] > 0


def test_lm_compares_trained_peers_on_identical_tokens(adapter_dir, tmp_path):
    methods = [f"a={adapter_dir}", f"b={adapter_dir}", "none"]
    data = f"{SAMPLE},{ALICE}"
    report = run_bench("lm", model=str(adapter_dir), methods=methods, data=data, quick=True,
                       out=str(tmp_path))  # fmt: skip
    rows = {(row["method"], row["data"]): row for row in report["results"]
            if row["reading"] == "paragraphs"}  # fmt: skip
    assert set(rows) == {(m, Path(d).name) for m in ("a", "b", "none") for d in (SAMPLE, ALICE)}
    for split in (Path(SAMPLE).name, Path(ALICE).name):
        assert rows["a", split]["ppl"] == rows["b", split]["ppl"]  # the same model twice
        assert rows["a", split]["ppl"] != rows["none", split]["ppl"]
        assert rows["a", split]["tokens_scored"] == rows["none", split]["tokens_scored"] > 0
        assert (tmp_path / f"lm_position-{split}.png").is_file()


def test_books_read_side_by_side_score_as_read_alone():
    model = wrapped()
    randomize(model)
    # segment_length 8: segments of any length up to 8, one-token ones that score nothing
    books = [list(ids(1, n, seed=n)[0].split(size)) for n, size in ((29, 8), (17, 5), (9, 1))]
    for use_memory in (True, False):
        together = stream_perplexity(model, books, use_memory)
        alone = [stream_perplexity(model, [book], use_memory) for book in books[:2]]
        assert together["tokens_scored"] == sum(a["tokens_scored"] for a in alone) == 25 + 13
        nll = sum(n for a in alone for n, _ in a["by_segment"])
        assert sum(n for n, _ in together["by_segment"]) == pytest.approx(nll, rel=1e-5)
    with pytest.raises(ValueError, match="1 to 8 token ids"):
        stream_perplexity(model, [[ids(1, 9)[0]]], use_memory=True)
    with pytest.raises(ValueError, match="1 to 8 token ids"):
        stream_perplexity(model, [[]], use_memory=True)
    with pytest.raises(ValueError, match="no token to score"):
        stream_perplexity(model, [books[2]], use_memory=True)


def test_without_memory_every_segment_reads_what_a_book_starts_from():
    """The same adapters, nothing carried: each segment scores as the first of a book."""
    model = wrapped()
    randomize(model)
    book = list(ids(1, 24, seed=3)[0].split(8))
    without = stream_perplexity(model, [book], use_memory=False)["by_segment"]
    first = [stream_perplexity(model, [[s]], use_memory=True)["by_segment"][0] for s in book]
    assert [n for n, _ in without] == pytest.approx([n for n, _ in first], rel=1e-5)
    carried = stream_perplexity(model, [book], use_memory=True)["by_segment"]
    assert carried[1][0] != pytest.approx(without[1][0], rel=1e-4)  # memory changes the rest


def test_books_are_cut_where_remember_cuts_them(adapter_dir):
    memory = Memory.load(adapter_dir)
    text = asset_path(SAMPLE_TEXT).read_text(encoding="utf-8")
    whole = book_segments(memory, text)
    remembered = [torch.tensor(p.ids) for p in memory.segments(text)]
    assert len(whole) == len(remembered) > 1  # the paragraphs remember writes, not chunks
    assert all(torch.equal(a, b) for a, b in zip(whole, remembered, strict=True))
    assert len({len(s) for s in whole}) > 1
    for tokens in (1, 100, 1000):  # a prefix is segmented, with the whole text's segments
        prefix = book_segments(memory, text, tokens)
        assert sum(map(len, prefix)) == tokens
        assert all(torch.equal(a, b) for a, b in zip(prefix[:-1], whole, strict=False))
        assert torch.equal(prefix[-1], whole[len(prefix) - 1][: len(prefix[-1])])
    everything = sum(map(len, whole))
    assert sum(map(len, book_segments(memory, text, 10 * everything))) == everything
    with pytest.raises(ValueError, match="at least 1"):
        book_segments(memory, text, 0)


def test_books_are_read_in_chunks_as_a_stream(adapter_dir):
    memory = Memory.load(adapter_dir)
    text = asset_path(SAMPLE_TEXT).read_text(encoding="utf-8")
    stream = memory.encode(text)[0].cpu()
    width = memory.model.config.segment_length
    for tokens in (1, 100, 1000, None):
        chunks = book_chunks(memory, text, tokens)
        assert torch.equal(torch.cat(chunks), stream[:tokens])  # a prefix of the whole stream
        assert all(len(c) == width for c in chunks[:-1]) and 0 < len(chunks[-1]) <= width
    assert read_book(memory, text, "chunks", 100)[0].tolist() == stream[:width].tolist()
    with pytest.raises(ValueError, match="reading must be one of"):
        read_book(memory, text, "sentences", 100)
    with pytest.raises(ValueError, match="at least 1"):
        book_chunks(memory, text, 0)


@pytest.mark.parametrize(("entry_dtype", "itemsize"), [("float16", 2), ("float32", 4)])
def test_exact_recall_costs_memory_plus_one_correction_per_missed_token(entry_dtype, itemsize):
    model = wrapped()
    randomize(model)
    text, mask = ids(3, 8), torch.ones(3, 8, dtype=torch.long)
    mask[2, 5:] = 0
    cost = exact_recall_cost(model, text, mask, lambda row: "x" * len(row), entry_dtype=entry_dtype)
    with torch.no_grad():  # the corrections are those of the memory as the bank stores it
        state = round_state(model.write(model.init_memory(3, "paragraph"), text, mask), entry_dtype)
        missed = (model.decode_logits(state, text).argmax(-1) != text) & (mask == 1)
    tokens = int(mask.sum())
    fixes = [[[i, int(text[r, i])] for i in range(8) if missed[r, i]] for r in range(3)]
    stored = state.memory.numel() * itemsize + sum(len(json.dumps(f)) for f in fixes)
    assert cost["corrections_per_1k_tokens"] == pytest.approx(1000 * int(missed.sum()) / tokens)
    assert cost["utf8_bytes_per_1k_tokens"] == pytest.approx(1000)
    assert cost["exact_bytes_per_1k_tokens"] == pytest.approx(1000 * stored / tokens)


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        (["rmt"], "unknown method"),
        (["=runs/x"], "must be NAME=DIR"),
        (["a="], "must be NAME=DIR"),
        (["a=x", "a=y"], "given twice"),
    ],
)
def test_method_specs_are_checked(specs, match):
    with pytest.raises(ValueError, match=match):
        parse_methods(specs, "lm", ("r3mem", "none"))
    assert parse_methods(["none", "rmt = runs/rmt"], "lm", ("r3mem", "none")) == [
        Method("none", None, use_memory=False),
        Method("rmt", "runs/rmt"),
    ]
    assert parse_methods(["base-text"], "lm", ("base", "base-text")) == [
        Method("base-text", None, use_memory=False, adapters=False, text_before=True)
    ]


def test_bad_requests(adapter_dir, tmp_path, capsys):
    assert main(["bench", "speed", "--model", str(adapter_dir)]) == 2
    assert "unknown bench task" in capsys.readouterr().err
    assert main(["bench", "lm", "--methods", "rmt", "--model", str(adapter_dir)]) == 2
    assert "unknown method(s) rmt" in capsys.readouterr().err
    assert main(["bench", "lm", "--data", str(tmp_path / "none"), "--model", str(adapter_dir)]) == 2
    assert "no such data" in capsys.readouterr().err


def test_training_curve_plot(tmp_path):
    from r3mem.plots import training_curve

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


def test_base_perplexity_is_the_frozen_base_on_the_same_tokens():
    base = make_base("llama")
    tokens = torch.randint(
        0, base.config.vocab_size, (50,), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():  # the bare base, segment by segment, tokens 2..T of each
        nll = sum(
            F.cross_entropy(base(input_ids=c[None]).logits[0, :-1], c[1:], reduction="sum").item()
            for c in tokens.split(16)
        )
    model = R3MemModel.from_base(base, R3MemConfig(num_memory_tokens=4, segment_length=16))
    randomize(model)  # adapters that change the LM: "base" must switch them off
    book = list(tokens.split(16))
    frozen = stream_perplexity(model, [book], use_memory=False, adapters=False)
    adapted = stream_perplexity(model, [book], use_memory=False)
    assert frozen["tokens_scored"] == adapted["tokens_scored"] == 50 - 4
    assert frozen["ppl"] == pytest.approx(math.exp(nll / 46), rel=1e-5)
    assert adapted["ppl"] != pytest.approx(frozen["ppl"], rel=1e-3)
    with pytest.raises(ValueError, match="needs the adapters"):
        stream_perplexity(model, [book], use_memory=True, adapters=False)


def test_base_text_reads_the_tokens_before_each_segment_as_plain_text():
    base = make_base("llama")
    tokens = torch.randint(
        0, base.config.vocab_size, (70,), generator=torch.Generator().manual_seed(1)
    )
    short = list(tokens[:20].split(16))  # a second book, shorter: rows drop out of the batch
    book = [tokens[:5], *tokens[5:].split(16)]  # segments shorter than the 12 tokens before
    nll = count = 0.0
    with torch.no_grad():
        for segments in (book, short):
            start = 0
            for segment in segments:
                before = tokens[max(0, start - 12) : start]
                logits = base(input_ids=torch.cat([before, segment])[None]).logits[0]
                logits = logits[len(before) : -1]
                nll += F.cross_entropy(logits, segment[1:], reduction="sum").item()
                count += len(segment) - 1
                start += len(segment)
    model = R3MemModel.from_base(base, R3MemConfig(num_memory_tokens=4, segment_length=16))
    randomize(model)  # the text is read by the frozen base: adapters must be off
    scored = stream_perplexity(model, [short, book], False, adapters=False, text_before=12)
    assert scored["tokens_scored"] == count == 70 - 6 + 20 - 2
    assert scored["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    alone = stream_perplexity(model, [short, book], False, adapters=False)
    assert scored["ppl"] != pytest.approx(alone["ppl"], rel=1e-3)
    assert scored["by_segment"][0] == pytest.approx(alone["by_segment"][0])  # nothing before
    for bad in ({"text_before": -1}, {"text_before": 4, "adapters": True}):
        with pytest.raises(ValueError, match="frozen base alone"):
            stream_perplexity(model, [book], False, **{"adapters": False, **bad})


def test_reports_written_beside_a_run_do_not_make_it_dirty(tmp_path, monkeypatch):
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    for name in ("code.py", "results/lm.json", "benchmarks/results/NOTES.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    monkeypatch.chdir(tmp_path)
    clean = git_revision(tmp_path / "results")
    assert len(clean) >= 7 and "dirty" not in clean
    (tmp_path / "results" / "lm.json").write_text("1")  # another bench job's report
    assert git_revision("results") == clean
    assert git_revision() == clean + "+dirty"
    (tmp_path / "results" / "lm.json").write_text("0")
    (tmp_path / "benchmarks" / "results" / "NOTES.md").write_text("1")  # notes, not code
    assert git_revision() == clean
    (tmp_path / "code.py").write_text("1")
    assert git_revision("results") == clean + "+dirty"
