"""bench rag and bench conv on the small fixtures: the JSON contract, every method, and the
rows per dataset and category. The tiny models are untrained: behaviour, not quality."""

import json
from pathlib import Path

import pytest
import torch

from r3mem import Memory
from r3mem.bench.retrieval import find_dense_model
from r3mem.bench.tasks import _progress, run_bench
from r3mem.cli import main
from r3mem.reader import ANSWER_TOKENS, Reader

FIXTURES = Path(__file__).parent / "fixtures"
# dense runs only where its local model is installed (pip install ".[dense]")
METHODS = ("r3mem", "r3mem-greedy", "r3mem-exact", "bm25") + (
    ("dense",) if find_dense_model()[0] else ()
)
CONV_KEYS = ("evidence_recall@1", "evidence_recall@5", "answer_contains@5", "f1")


def _saved(out: Path, task: str) -> dict:
    saved = json.loads((out / f"{task}.json").read_text())
    assert set(saved) == {"task", "git_rev", "seed", "command", "hardware", "packages", "results"}
    table = (out / f"{task}.md").read_text()
    assert all(f"| {row['method']} |" in table for row in saved["results"])
    return saved


def test_rag_rows_per_dataset_and_method(wide_adapter_dir, tmp_path):
    model, data, out = str(wide_adapter_dir), str(FIXTURES / "qa"), str(tmp_path)
    report = run_bench("rag", model=model, data=data, quick=True, out=out, entry_tokens=64)
    assert _saved(tmp_path, "rag") == report
    rows = {(row["dataset"], row["method"]): row for row in report["results"]}
    methods = (*METHODS, "r3mem-slots", "gold")
    assert set(rows) == {(d, m) for d in ("squad", "hotpotqa", "nq") for m in methods}
    for row in rows.values():
        for key in ("recall@1", "recall@5", "answer_contains@5", "em", "f1"):
            assert 0 <= row[key] <= 1, key
        assert row["recall@1"] <= row["recall@5"]
        assert row["stored_bytes"] > 0 and row["text_bytes"] > 0
    assert all(rows[d, "gold"]["recall@5"] == 1.0 for d in ("squad", "hotpotqa", "nq"))
    # the same ranking, its hits read back guided, greedily or exactly
    for d in ("squad", "hotpotqa", "nq"):
        for method in ("r3mem-greedy", "r3mem-exact", "r3mem-slots"):
            assert rows[d, method]["recall@5"] == rows[d, "r3mem"]["recall@5"]
        # read as memory, the same hits take a few slots where their text takes every token
        slots, text = (rows[d, m]["context_tokens"] for m in ("r3mem-slots", "r3mem-exact"))
        assert 0 < slots < text
    # the toy questions share words with their gold passage only: BM25 finds every one
    assert all(rows[d, "bm25"]["recall@5"] == 1.0 for d in ("squad", "nq"))
    assert rows["squad", "bm25"]["answer_contains@5"] == 1.0  # whole passages in 64 tokens
    assert rows["squad", "r3mem"]["questions"] == 4 and rows["hotpotqa", "r3mem"]["passages"] == 5


def test_rag_with_a_reader_and_a_method_subset(adapter_dir, base_dir, tmp_path):
    data = str(FIXTURES / "qa" / "nq_oracle_mini.jsonl")
    report = run_bench("rag", str(adapter_dir), ["bm25"], data, out=str(tmp_path), reader=base_dir)
    (row,) = report["results"]
    assert row["method"] == "bm25" and row["dataset"] == "nq" and row["questions"] == 3


def test_rag_without_a_reader_judges_retrieval_alone(adapter_dir, tmp_path):
    data = str(FIXTURES / "qa" / "nq_oracle_mini.jsonl")
    report = run_bench("rag", str(adapter_dir), ["bm25"], data, out=str(tmp_path), reader="none")
    (row,) = report["results"]
    assert row["em"] is None and row["f1"] is None and row["context_tokens"] is None
    assert row["recall@5"] == 1.0 and row["answer_contains@5"] is not None


def test_exact_and_slots_decode_each_question_once(adapter_dir, tmp_path, monkeypatch):
    """r3mem-exact and r3mem-slots read the same hits: one exact decode serves both; r3mem
    reads them guided, r3mem-greedy from the memory alone; the questions' hits are decoded
    together, not one question at a time."""
    recall_batch, calls, batches = Memory.recall_batch, [], []

    def counted(self, queries, k, exact, guided):
        calls.extend([(exact, guided)] * len(queries))
        batches.append(len(queries))
        return recall_batch(self, queries, k, exact, guided)

    monkeypatch.setattr(Memory, "recall_batch", counted)
    data = str(FIXTURES / "qa" / "nq_oracle_mini.jsonl")
    methods = ["r3mem", "r3mem-greedy", "r3mem-exact", "r3mem-slots"]
    rows = run_bench("rag", str(adapter_dir), methods, data, out=str(tmp_path), reader="none")
    questions = rows["results"][0]["questions"]
    assert questions > 0
    assert (
        calls
        == [(False, True)] * questions + [(False, False)] * questions + [(True, True)] * questions
    )
    assert batches == [questions] * 3  # fewer than SEARCH_BATCH: one batch each


def test_a_reader_of_memory_slots_reads_the_passages_as_one_memory(adapter_dir):
    memory = Memory.load(adapter_dir)
    model, tokenizer = memory.model, memory.tokenizer
    passages = ["Alice lives in Lisbon by the sea.", "Bob keeps bees in his garden."]
    prompt = "Question: Where does Alice live?\nAnswer:"
    answer, read = Reader.of_memory_slots(memory).respond("Where does Alice live?", passages)
    best_last = torch.cat([memory.encode(passages[1]), memory.encode(passages[0])], dim=1)
    state = model.write(model.init_memory(1), best_last)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    out = model.generate(state, ids, ANSWER_TOKENS, eos_token_id=tokenizer.eos_token_id)
    assert answer == tokenizer.decode(out[0], skip_special_tokens=True).strip().split("\n")[0]
    assert read == state.memory.shape[1] + ids.shape[1]
    as_text = "\n\n".join(reversed(passages)) + "\n\n" + prompt
    _, read_text = Reader.of_memory(memory).respond("Where does Alice live?", passages)
    assert read_text == len(tokenizer(as_text, add_special_tokens=False).input_ids) > read


def test_questions_draws_a_seeded_subset_over_every_passage(adapter_dir, tmp_path):
    data = str(FIXTURES / "qa" / "squad_mini.json")
    args = ("rag", str(adapter_dir), ["bm25"], data, 0)
    (row,) = run_bench(*args, out=str(tmp_path), questions=2)["results"]
    assert row["questions"] == 2 and row["passages"] == 4  # the pool is left whole
    assert run_bench(*args, out=str(tmp_path), questions=2)["results"] == [row]
    (whole,) = run_bench(*args, out=str(tmp_path), questions=99)["results"]
    assert whole["questions"] == 4
    # a smaller pool keeps the questions its passages answer
    (small,) = run_bench(*args, out=str(tmp_path), passages=2)["results"]
    assert small["passages"] == 2 and 0 < small["questions"] < 4


def test_entry_tokens_cut_every_method_s_units_shorter(adapter_dir, tmp_path):
    """--entry-tokens: the passages cut into shorter units (more entries to store), as
    Memory.segments cuts them at that length, refusing one past the model's."""
    data = str(FIXTURES / "qa" / "squad_mini.json")
    args = ("rag", str(adapter_dir), ["r3mem-exact", "bm25"], data, 0)
    whole = run_bench(*args, out=str(tmp_path / "whole"), reader="none")["results"]
    short = run_bench(*args, out=str(tmp_path / "short"), reader="none", entry_tokens=4)
    assert short["results"][0]["stored_bytes"] > whole[0]["stored_bytes"]  # more entries
    with pytest.raises(ValueError, match="entry_tokens must be 1 to the segment length 16"):
        run_bench(*args, out=str(tmp_path / "long"), reader="none", entry_tokens=999)
    memory = Memory.load(adapter_dir)
    passage = "Alice lives in Paris with her two cats, who sleep all day long."
    cut = memory.segments(passage, max_tokens=4)
    assert all(len(segment.ids) <= 4 for segment in cut) and len(cut) > 1
    assert "".join(segment.text for segment in cut).replace(" ", "") == passage.replace(" ", "")
    for bad, error in ((0, ValueError), (10_000, ValueError), (True, TypeError)):
        with pytest.raises(error, match="max_tokens"):
            memory.segments(passage, max_tokens=bad)


def test_part_tokens_keep_every_method_s_units_and_key_the_resume(adapter_dir, tmp_path):
    """--part-tokens: R³Mem's entries compressed in shorter parts (more slots to store), the
    units and BM25's rows the same; a run asking for parts is resumed only by the same ask."""
    data = str(FIXTURES / "qa" / "squad_mini.json")
    args = ("rag", str(adapter_dir), ["r3mem-exact", "bm25"], data, 0)
    whole = run_bench(*args, out=str(tmp_path / "whole"), reader="none")["results"]
    parts = run_bench(*args, out=str(tmp_path / "parts"), reader="none", part_tokens=4)
    parts = parts["results"]
    assert parts[1] == whole[1]  # BM25 over the same units
    assert parts[0]["stored_bytes"] > whole[0]["stored_bytes"]
    same = run_bench(*args, out=str(tmp_path / "same"), reader="none", part_tokens=16)
    assert same["results"] == whole  # parts of the entry length: as without
    keys = [
        _progress("rag", str(tmp_path), False, model=str(adapter_dir), methods=["bm25"],
                  data=data, entry_tokens=None, part_tokens=tokens).run
        for tokens in (None, 16, 4)
    ]  # fmt: skip
    assert keys[0] == keys[1] and "part_tokens" not in keys[0] and keys[2]["part_tokens"] == 4


@pytest.mark.parametrize(
    ("task", "option", "count"),
    [
        ("rag", "part_tokens", 0),
        ("lm", "part_tokens", 4),
        ("rag", "questions", 0),
        ("lm", "questions", 5),
        ("rag", "passages", -1),
        ("conv", "passages", 3),
        ("lm", "entry_tokens", 32),
        ("conv", "entry_tokens", 0),
        ("rag", "entry_tokens", 0),
    ],
)
def test_sample_sizes_are_positive_counts_for_their_tasks(task, option, count, tmp_path):
    with pytest.raises(ValueError, match=f"--{option.replace('_', '-')} is a positive count"):
        run_bench(task, out=str(tmp_path / "out"), **{option: count})
    assert not (tmp_path / "out").exists()


def test_conv_locomo_per_category_and_overall(wide_adapter_dir, tmp_path):
    data = str(FIXTURES / "conv" / "locomo_tiny.json")
    report = run_bench("conv", model=str(wide_adapter_dir), data=data, out=str(tmp_path))
    _saved(tmp_path, "conv")
    rows = {(row["method"], row["category"]): row for row in report["results"]}
    categories = ["1 multi-hop", "2 temporal", "3 open-domain", "4 single-hop", "5 adversarial"]
    assert {m for m, _ in rows} == set(METHODS)
    for method in METHODS:
        assert [c for m, c in rows if m == method] == [*categories, "overall"]
        assert rows[method, "overall"]["questions"] == 5  # adversarial left out
        assert rows[method, "5 adversarial"]["questions"] == 1
        assert rows[method, "5 adversarial"]["f1"] is None
        assert rows[method, "overall"]["stored_bytes"] > 0
        for key in CONV_KEYS:
            assert 0 <= rows[method, "overall"][key] <= 1
    # every conversation fits in the top 5 windows, so all evidence is found
    assert rows["bm25", "overall"]["evidence_recall@5"] == 1.0
    assert rows["bm25", "4 single-hop"]["evidence_recall@1"] == 1.0


def test_conv_entry_tokens_cut_the_windows_into_parts(wide_adapter_dir, tmp_path):
    """The same windows for every method; R³Mem keeps more slots for shorter parts."""
    data = str(FIXTURES / "conv" / "locomo_tiny.json")
    rows = {}
    for tokens in (64, 16):
        out = str(tmp_path / str(tokens))
        report = run_bench(
            "conv", str(wide_adapter_dir), ["r3mem", "bm25"], data, out=out, entry_tokens=tokens
        )
        rows[tokens] = {(r["method"], r["category"]): r for r in report["results"]}
    assert rows[64]["bm25", "overall"] == rows[16]["bm25", "overall"]
    stored = [rows[t]["r3mem", "overall"]["stored_bytes"] for t in (64, 16)]
    assert stored[1] > stored[0]
    out = str(tmp_path / "parts")  # --part-tokens: the same parts, whatever the entry length
    report = run_bench("conv", str(wide_adapter_dir), ["r3mem"], data, out=out, part_tokens=16)
    (overall,) = [r for r in report["results"] if r["category"] == "overall"]
    # the same slots; only the file's metadata differs (its entry and part lengths)
    assert abs(overall["stored_bytes"] - stored[1]) < 64 < stored[1] - stored[0]


def test_conv_memorybank_has_no_references(wide_adapter_dir, tmp_path):
    data = str(FIXTURES / "conv" / "memory_bank_mini.json")
    report = run_bench("conv", str(wide_adapter_dir), ["r3mem", "bm25"], data, out=str(tmp_path))
    assert [(r["method"], r["category"], r["questions"]) for r in report["results"]] == [
        ("r3mem", "probing", 2),
        ("r3mem", "overall", 2),
        ("bm25", "probing", 2),
        ("bm25", "overall", 2),
    ]
    assert all(row[key] is None for row in report["results"] for key in CONV_KEYS)


def test_malformed_locomo_is_one_clear_error(wide_adapter_dir, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"sample_id": "x"}]))
    args = ["bench", "conv", "--data", str(broken), "--model", str(wide_adapter_dir)]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert line.startswith("r3mem bench: error: ")
    assert line.endswith("broken.json: sample 0: field 'conversation' missing or not an object")
    assert not (tmp_path / "out").exists()
