"""Whether the text recall reads back holds an answer, on every question of the passages:
``bench rag``'s retrieval-alone rows, from the memories a ``bench rag`` run saved (issue 15).

    python benchmarks/read_back.py --model smollm2-135m --data ../shared/data/qa/nq_open \
        --memories SAVED/…_nq.r3mem [--passages 500] [--methods r3mem,bm25]

``bench rag`` decodes every hit of every question it scores, so it scores a seeded draw of
100 questions a set, where one question moves a figure by 0.01. Writing the memory is most
of its time, and the memory does not depend on the draw: here the memory that run saved is
opened (once found to hold exactly those passages' segments, ``recall_scoring.opened``) and
every question whose gold passages lie among the passages is scored, by the same indexes,
loop and metrics as ``bench rag`` (``reader none``). A finished ``bench rag`` run removes
``OUT/rag.partial/``, its memories with it: copy a set's ``.r3mem`` file out once it is
there (written whole, after the set's last passage). A ``--memories`` file that does not
exist yet is written first, as ``bench rag`` writes it, and kept there for the next read.
Writes ``OUT/read_back.{json,md}``.
"""

from __future__ import annotations

import argparse

from recall_scoring import opened_or_written

from r3mem import Memory
from r3mem.bench.rag import passage_id, passage_units, read_qa, take
from r3mem.bench.retrieval import baselines, r3mem_indexes, score_questions, summarize
from r3mem.report import write_report

METHODS = ("r3mem", "r3mem-greedy", "r3mem-exact", "bm25", "dense")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="QA files or folders (rag's)")
    parser.add_argument("--memories", nargs="+", required=True, help="bench rag's, per set")
    parser.add_argument("--passages", type=int, default=500)
    parser.add_argument("--methods", default="r3mem,bm25", help=f"of {', '.join(METHODS)}")
    parser.add_argument("--model", help="r3mem model directory or name (default: shipped)")
    parser.add_argument("--out", default="benchmarks/results/read_back")
    args = parser.parse_args()
    methods = args.methods.split(",")
    if not set(methods) <= set(METHODS):
        parser.error(f"--methods: choose from {', '.join(METHODS)}")
    memory = Memory.load(args.model)
    sets = [take(qa, args.passages, None, 0) for data in args.data for qa in read_qa(data)]
    if len(args.memories) != len(sets):
        parser.error(f"--memories: {len(args.memories)} files for {len(sets)} QA sets")
    rows = []
    for qa, path in zip(sets, args.memories, strict=True):
        bank, cut = opened_or_written(memory, path, qa)
        indexes = r3mem_indexes(methods, lambda held=bank: held, passage_id)
        indexes |= baselines(methods, passage_units(cut))
        kept = {"entries": len(bank.bank), "entry_tokens": bank.entry_tokens}
        kept["part_tokens"] = bank.part_tokens
        for method in [method for method in methods if method in indexes]:
            scored = score_questions(indexes[method], qa.questions, None, f"{qa.name} {method}")
            row = {"method": method, "dataset": qa.name, "passages": len(qa.passages)}
            row |= {**summarize(scored), "stored_bytes": indexes[method].nbytes(), **kept}
            rows.append(row)
            print(row, flush=True)
    notes = (
        "Every question whose gold passages lie among the passages (no draw), over the "
        "memories bench rag saved (entries and parts of at most entry_tokens and part_tokens)."
    )
    write_report(args.out, "read_back", 0, rows, notes)


if __name__ == "__main__":
    main()
