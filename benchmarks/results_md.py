"""Assemble RESULTS.md from the reports ``r3mem bench`` wrote (``TASK.json`` + ``TASK.md``),
with each task's plots; every table keeps the command, seed and git revision it came from.

    python benchmarks/results_md.py benchmarks/results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ORDER = ("lm", "reconstruct", "cost")  # then any other task, by name
HEADER = """# r3mem benchmark results

Made by `bash benchmarks/run_all.sh` (do not edit by hand). Every method is an adapter
trained by `r3mem train` from its own `configs/bench/NAME.toml` on the same frozen base
model, the same books and the same budget: 150 steps × batch 8 × 2 segments of 64 tokens,
smaller than the shipped default's 2000 steps. Baselines: `none` (the segment alone),
`window2` / `window4` (full attention over the last 2 / 4 segments), `rmt`, `icae`,
`autocompressor`; ablations of `r3mem`: `-separate` (no reversibility), `-nohier` (no L_doc,
L_ent), `-nocycle`, `-m4` / `-m16` (memory tokens; m = 8 otherwise), `-kv` (memory form).

- **lm**: perplexity of the books of each split, streamed 64 tokens at a time with each
  method's memory carried across the book (the first 16,384 tokens of each book unless
  `--book-tokens 0`); every method scores the same tokens (`tokens_scored`).
- **reconstruct**: paragraphs written alone and decoded back greedily (`token_acc`,
  `exact_match`, `bleu`) at compression = segment tokens ÷ memory tokens; `doc_*`: the rest
  of a segment recalled from the document memory written over it and the next one, given
  its first 8 tokens; `exact_bytes_per_1k_tokens`: memory + corrections for lossless recall
  (DESIGN 2.6) beside the text as UTF-8.
- **cost**: throughput, bytes of memory, peak RSS and seconds per token against history.
"""


def assemble(results: Path, page: Path) -> str:
    """The page's Markdown: the header, then each task's table and plots."""
    reports = {}
    for path in sorted(results.glob("*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(report, dict) and report.get("task") == path.stem:
            reports[path.stem] = report
    if not reports:
        raise SystemExit(f"{results}: no bench reports (TASK.json) to assemble")
    tasks = sorted(reports, key=lambda task: (ORDER.index(task) if task in ORDER else 99, task))
    parts = [HEADER]
    for task in tasks:
        parts.append((results / f"{task}.md").read_text(encoding="utf-8"))
        for png in sorted(results.glob(f"{task}_*.png")):
            parts.append(f"![{png.stem}]({os.path.relpath(png, page.parent)})\n")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="directory of TASK.json / TASK.md files")
    parser.add_argument("page", type=Path, help="the RESULTS.md to write")
    args = parser.parse_args()
    args.page.write_text(assemble(args.results, args.page), encoding="utf-8")


if __name__ == "__main__":
    main()
