"""Guided recall's bonuses and names, measured on questions no bench reports (issue 15).

    python benchmarks/guide_dev.py --data ../shared/data/qa/squad_v2_dev_cs224n \
        [--first 500] [--last 1500] [--questions 60] [--seed 1] [--entry-tokens 64] [--model DIR] \
        [--keywords]

Per dataset: a seeded draw of the questions whose gold passages all lie at passages
FIRST..LAST-1 (``bench rag`` reads the first 500); for each, the first unit of its gold
passages (cut as ``bench rag`` cuts them) that holds an answer, written as one entry. Every
setting decodes the same entries greedily, steered by the entry's entities with bonuses
``start`` / ``go_on`` (:class:`r3mem.guide.EntityGuide`; 0 / 0 is the memory alone), and
with ``--keywords`` by its keywords too (the words the bank's keyword level keeps, as
written and capitalised); each is judged by its token accuracy against the unit and by how
often an answer survives in it (retrieval taken as perfect). Writes OUT/guide_dev.{json,md}.
"""

from __future__ import annotations

import argparse

import numpy as np
from dev_split import add_arguments, load_memory, questions_in

from r3mem.bench.rag import read_qa
from r3mem.bench.retrieval import contains
from r3mem.entries import greedy_tokens
from r3mem.guide import CONTINUE_BONUS, START_BONUS, EntityGuide, guide_names
from r3mem.report import write_report

SETTINGS = ((0.0, 0.0), (0.5, 2.0), (1.0, 2.0), (1.0, 4.0), (2.0, 4.0), (2.0, 8.0))
BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, last=1500, questions=60)
    parser.add_argument("--out", default="benchmarks/results/guide_dev")
    parser.add_argument("--keywords", action="store_true", help="guide by keywords too")
    args = parser.parse_args()
    memory = load_memory(args)
    rows = []
    for data in args.data:
        for qa in read_qa(data):
            units, answers = [], []
            for question in questions_in(qa, args):
                cut = [s for g in question.gold for s in memory.segments(qa.passages[int(g)])]
                found = [s for s in cut if contains([s.text], question.answers)]
                if found:
                    units.append(found[0])
                    answers.append(question.answers)
            entries = []
            for start in range(0, len(units), BATCH):
                entries += memory.entries(units[start : start + BATCH])
            for start_bonus, go_on in SETTINGS:
                decoded = []
                for start in range(0, len(entries), BATCH):
                    batch = entries[start : start + BATCH]
                    names = [
                        guide_names(e.entities, e.keywords if args.keywords else ()) for e in batch
                    ]
                    guide = EntityGuide(memory.tokenizer, names, start_bonus, go_on)
                    decoded += greedy_tokens(memory.model, batch, guide)
                pairs = list(zip(decoded, units, answers, strict=True))
                accuracy = [np.mean(np.equal(d, u.ids)) for d, u, _ in pairs]
                survived = [contains([memory.tokenizer.decode(d)], a) for d, _, a in pairs]
                shipped = (start_bonus, go_on) == (START_BONUS, CONTINUE_BONUS) and args.keywords
                rows.append(
                    {
                        "dataset": qa.name,
                        "units": len(units),
                        "start": start_bonus,
                        "go_on": go_on,
                        "keywords": args.keywords,
                        "shipped": shipped,
                        "token_accuracy": round(float(np.mean(accuracy)), 4),
                        "answer_survives": round(float(np.mean(survived)), 4),
                    }
                )
                print(rows[-1], flush=True)
    notes = (
        f"Questions whose gold passages lie at passages {args.first}-{args.last - 1}; one "
        "answer-bearing unit each, decoded greedily from its entry (start / go_on 0 / 0: the "
        "memory alone); keywords: steered by the entry's keywords as well as its entities. "
        "shipped: r3mem.guide's bonuses and names (keywords too)."
    )
    write_report(args.out, "guide_dev", args.seed, rows, notes)


if __name__ == "__main__":
    main()
