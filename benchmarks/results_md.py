"""Assemble RESULTS.md from the reports ``r3mem bench`` wrote (``TASK.json`` + ``TASK.md``),
with each task's plots; every table keeps the command, seed and git revision it came from.

    python benchmarks/results_md.py benchmarks/results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ORDER = ("lm", "reconstruct", "cost", "rag", "conv")  # then any other task, by name
HEADER = """# r3mem benchmark results

Made by `bash benchmarks/run_all.sh` (do not edit by hand). Every method is an adapter
trained by `r3mem train` from its own `configs/bench/NAME.toml` on the same frozen base
model and the same books. `r3mem`, `r3mem-aelm` (L_lm beside L_rec in its autoencoding
stages), `icae`, `rmt` and `none` share the staged budget
(autoencoding-length stages of 750, 1250 and 1000 steps × batch 16 at 16, 32 and 64
tokens, then 300 steps of the whole objective × batch 8 × 2 segments of 64 tokens; each
method trains its own terms in each stage); the other baselines and ablations keep the
older budget (150 steps × batch 8 × 2 segments of 64 tokens, the whole objective from the
first step). Baselines: `none` (the segment alone),
`window2` / `window4` (full attention over the last 2 / 4 segments), `rmt`, `icae`,
`autocompressor`; ablations of `r3mem`: `-separate` (no reversibility), `-nohier` (no L_doc,
L_ent), `-nocycle`, `-m4` / `-m16` (memory tokens; m = 8 otherwise), `-kv` (memory form).
Retrieval (`rag`) and conversations (`conv`) are measured with the shipped default.

- **lm**: perplexity of the books of each split, read two ways (`reading`): in the segments
  the hierarchy cuts (`paragraphs` of at most 64 tokens, as training reads them) and in
  fixed 64-token `chunks` that start wherever the last one stopped (as a user streams text),
  with each method's memory carried across the book
  (the first 16,384 tokens of each book unless `--book-tokens 0`); every method scores the
  same tokens (`tokens_scored`: all but the first of each segment); `base` is the frozen
  base model they all share, alone (adapters off); `base-text` is that base reading the
  `segment_length` tokens of text before each segment first, the uncompressed reference a
  memory written from them stands in for.
- **reconstruct**: paragraphs written alone and decoded back greedily (`token_acc`,
  `exact_match`, `bleu`) at compression = segment tokens ÷ memory tokens, and the same
  paragraphs' first halves (`text_tokens` 32: half the compression); `doc_*`: the rest
  of a segment recalled from the document memory written over it and the next one, given
  its first 8 tokens; `exact_bytes_per_1k_tokens`: memory + corrections for lossless recall
  (DESIGN 2.6) beside the text as UTF-8.
- **cost**: seconds per token of one more segment against history, led by ratios
  (`vs_1k_history`: to the method's own time at 1k tokens; `full_attention_over_r3mem`:
  full attention's time over R³Mem's at the same history); then write / reconstruct
  throughput, bytes per 1k history tokens (the document memory at 1M tokens, the bank's
  float16 entries, full attention's KV cache) and peak RSS.
- **rag** / **conv**: `recall@k` / `evidence_recall@k` are the fraction of gold passages /
  evidence dialog ids covered by the top k retrieved units (the memory's segments, the same
  for every method); `answer_contains@5`: a reference answer, SQuAD-normalised, occurs in
  the top 5 units (reconstructed greedily for `r3mem`, steered by each hit's entities and
  keywords, rev b8436e0 on; from the memory alone for `r3mem-greedy`; by exact recall for
  `r3mem-exact`; the same ranking; a table without an `r3mem-greedy` row predates the
  entity guide, rev c046a74, and its `r3mem` row is the memory alone;
  raw text for `bm25` and `dense`; `gold`: each question's gold passages, the ceiling);
  `em` / `f1`: SQuAD exact match and token F1 of the reader's greedy answer
  (null with `--reader none`), `context_tokens` the positions it read (prompt tokens;
  `r3mem-slots`: the same hits written into one memory that the memory's own model reads
  in place of their text, its slots plus the question); `stored_bytes`: what each method
  keeps (R³Mem: its memory file, no raw text). LoCoMo categories: 1 multi-hop, 2 temporal,
  3 open-domain, 4 single-hop, 5 adversarial (apart, out of `overall`).
- **recall_scoring** / **recall_speed**: which of recall's scores finds the gold passage
  (recall@5 over the entries `rag` retrieves), and what writing and searching cost.
"""
# Reports in a subdirectory of the results get a section of their own.
SECTIONS = {
    "default": "The shipped default, r3mem-tiny-books (staged: its MODEL_CARD.md has the recipe)",
    "older-budget": "The older budget, every baseline and ablation (150 steps each)",
    "memorybank": "Conversations: MemoryBank (probing questions carry no references)",
    "recall_dev": "Recall scoring on the seed-1 draw of questions (the keyword weight's choice)",
    "retrieve_stage": "Recall scoring after an L_ret stage on the books run (not adopted)",
    "smollm2": "R³Mem on SmolLM2-135M-Instruct (scripts/train_smollm2.sh; its MODEL_CARD.md)",
    "smollm2_recall": "R³Mem on SmolLM2-135M-Instruct: recall at the default's 32-token entries",
    "train_speed_bf16": "Training speed in bfloat16 autocast, emulated on this CPU",
    "wikipedia_stage": "The default's Wikipedia stage alone (its second run, before read-again)",
    "wikipedia_stage_lm": "The Wikipedia stage with L_lm on the Wikipedia text (not adopted)",
    "read_again_mix": "Read-again with the Wikipedia articles drawn beside the books (not adopted)",
    "entry64": "The former default's 64-token entries, every method's units (--entry-tokens 64)",
    "guide_dev": "Entity-guided recall's bonuses, on questions at passages 500-1,499",
    "guide_keywords": "Recall guided by entities and keywords, on the same questions (64 tokens)",
    "smollm2_guide_keywords": "SmolLM2's recall guided by entities and keywords (64 tokens)",
    "speed_keywords": "Recall's speed with the keyword guide (a slower hour of this host)",
    "recall_weights": "Recall's weights on passages 500-999, their questions (64-token units)",
    "recall_weights_32": "Recall's weights on passages 500-999, their questions (32-token units)",
    "window_parts": "Conversation windows read back from one entry or from parts (MemoryBank)",
    "recall_all": "Recall on every question of the 500 passages, not a draw (shipped default)",
    "smollm2_recall_all_hotpotqa_nq": "SmolLM2's recall on every question: HotpotQA and NQ",
    "smollm2_recall_all_squad": "SmolLM2's recall on every question: SQuAD",
    "smollm2_parts16": "SmolLM2 read back from 16-token units (the case for --part-tokens 16)",
    "smollm2_read_back_nq": "SmolLM2's read-back on every NQ question, parts of 16 (read_back.py)",
    "smollm2_read_back_nq32": "SmolLM2's read-back on every NQ question, one part of 32",
    "smollm2_read_back_squad": "SmolLM2's read-back on every SQuAD question, parts of 16",
    "smollm2_read_back_squad32": "SmolLM2's read-back on every SQuAD question, one part of 32",
    "smollm2_read_back_squad32_exact": "SmolLM2's exact recall on every SQuAD question",
    "smollm2_read_back_nq32_exact": "SmolLM2's exact recall on every NQ question",
    "recall_hops": "Recall's second look on SQuAD's and NQ's passages 500 on (its weight's choice)",
    "recall_hops_hotpotqa": "Recall's second look on HotpotQA's passages 500-2,499",
    "smollm2_recall_hops": "SmolLM2's recall with a second look, every question of 500 passages",
    "smollm2_recall_hops_squad": "SmolLM2's second look on SQuAD to four digits (a tie with BM25)",
    "smollm2_read_back_hotpotqa": "SmolLM2's read-back on every HotpotQA question, second look",
    "smollm2_conv_all": "SmolLM2 on LoCoMo, every question: evidence recall and read-back",
}


def _reports(results: Path, page: Path) -> list[str]:
    """Each task's table, then its plots, for the ``TASK.json`` reports in one directory."""
    reports = {}
    for path in sorted(results.glob("*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(report, dict) and report.get("task") == path.stem:
            reports[path.stem] = report
    tasks = sorted(reports, key=lambda task: (ORDER.index(task) if task in ORDER else 99, task))
    parts = []
    for task in tasks:
        parts.append((results / f"{task}.md").read_text(encoding="utf-8"))
        for png in sorted(results.glob(f"{task}_*.png")):
            parts.append(f"![{png.stem}]({os.path.relpath(png, page.parent)})\n")
    return parts


def assemble(results: Path, page: Path) -> str:
    """The page's Markdown: the header, the bench-budget tables, then one section per
    subdirectory holding reports (the shipped default's, MemoryBank's)."""
    notes = results / "NOTES.md"  # the reading of the figures by whoever ran them
    parts = [HEADER, *([notes.read_text(encoding="utf-8")] if notes.is_file() else [])]
    parts += _reports(results, page)
    for sub in sorted(p for p in results.iterdir() if p.is_dir()):
        if found := _reports(sub, page):
            parts += [f"## {SECTIONS.get(sub.name, sub.name)}\n", *found]
    if not any(part.startswith("### ") for part in parts):
        raise SystemExit(f"{results}: no bench reports (TASK.json) to assemble")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="directory of TASK.json / TASK.md files")
    parser.add_argument("page", type=Path, help="the RESULTS.md to write")
    args = parser.parse_args()
    args.page.write_text(assemble(args.results, args.page), encoding="utf-8")


if __name__ == "__main__":
    main()
