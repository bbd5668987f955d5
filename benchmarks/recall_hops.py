"""Recall's second look (``r3mem.bank.BRIDGE_WEIGHT``) on a split no bench reports (issue 15).

    python benchmarks/recall_hops.py --data ../shared/data/qa/hotpotqa_dev_distractor_ircot500 \
        [--first 500] [--last 1000] [--questions N] [--seed 1] [--model NAME] \
        [--memories SAVED.r3mem ...]

Per dataset, passages FIRST..LAST-1 (``bench rag`` reads the first 500) are written into one
memory as ``bench rag`` writes them (saved to ``--memories``, one file a set, and opened
from there when it exists), and a seeded draw of the questions whose gold passages all lie
among them is asked. Each bridge weight ranks the entries as ``MemoryBank.scores`` does at
that weight: the first look's best entry first, then the others by their own scores plus that
weight times the share of the best source's names they hold (``MemoryBank.looked_twice``),
lifted by source again; and once more without keeping the first look's best first
(``first not kept``, measured and not adopted). BM25 over the same units beside them.
Judged by recall@5 (gold passages among the top 5 units) and answer@5 (an answer in the top
5 units' text: what exact recall reads back). Writes OUT/recall_hops.{json,md}.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from dev_split import K, add_arguments, judge, questions_in
from recall_scoring import opened_or_written
from tqdm import tqdm

from r3mem import Memory
from r3mem.bank import BRIDGE_WEIGHT
from r3mem.bench.rag import QASet, passage_units, read_qa, written
from r3mem.bench.retrieval import BM25Index, Question, Unit
from r3mem.keywords import keywords
from r3mem.report import write_report

BRIDGE_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


def split(qa: QASet, args: argparse.Namespace) -> QASet:
    """Passages FIRST..LAST-1 as a set of their own, numbered from 0 as ``bench rag``
    numbers its passages, with the drawn questions' gold ids moved to match."""
    questions = [
        Question(q.text, q.answers, [str(int(g) - args.first) for g in q.gold], q.group)
        for q in questions_in(qa, args)
    ]
    return replace(qa, passages=qa.passages[args.first : args.last], questions=questions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, last=1000, questions=100)
    parser.add_argument("--memories", nargs="*", default=[], help="saved memories, per set")
    parser.add_argument("--out", default="benchmarks/results/recall_hops")
    args = parser.parse_args()
    if args.entry_tokens is not None:
        parser.error("--entry-tokens: the memory is written as bench rag writes it")
    memory = Memory.load(args.model)
    sets = [split(qa, args) for data in args.data for qa in read_qa(data)]
    if args.memories and len(args.memories) != len(sets):
        parser.error(f"--memories: {len(args.memories)} files for {len(sets)} QA sets")
    rows = []
    for number, qa in enumerate(sets):
        if args.memories:
            bank, cut = opened_or_written(memory, args.memories[number], qa)
        else:
            cut = [memory.segments(text) for text in qa.passages]
            bank = written(memory, cut, qa.name)
        rows += measure(bank, qa, passage_units(cut))
    notes = (
        f"Passages {args.first}-{args.last - 1} of each set, written as bench rag writes "
        f"them; shipped bridge weight {BRIDGE_WEIGHT:g}."
    )
    write_report(args.out, "recall_hops", args.seed, rows, notes)


def measure(bank: Memory, qa: QASet, units: list[Unit]) -> list[dict]:
    """One row per bridge weight, and BM25's, over ``qa``'s questions."""
    ids = list(bank.bank.entries)  # in the order written: entry ids[j] holds units[j]
    bm25 = BM25Index(units)
    where = {id(unit): j for j, unit in enumerate(units)}
    where_id = {entry_id: j for j, entry_id in enumerate(ids)}
    found: dict[str, list[tuple[float, float]]] = {}
    for question in tqdm(qa.questions, desc=f"{qa.name}: questions"):
        ranked = {"bm25": [where[id(unit)] for unit in bm25.search(question.text, K)]}
        for name, order in orders(bank, question.text).items():
            ranked[name] = [where_id[i] for i in order]
        for name, order in ranked.items():
            judged = judge(units, order, question.gold, question.answers)
            found.setdefault(name, []).append(judged)
    rows = []
    for name, judged in found.items():
        rows.append(
            {
                "dataset": qa.name,
                "entries": len(ids),
                "questions": len(judged),
                "score": name,
                "shipped": name == f"bridge {BRIDGE_WEIGHT:g}",
                "recall@5": round(sum(r for r, _ in judged) / len(judged), 4),
                "answer@5": round(sum(a for _, a in judged) / len(judged), 4),
            }
        )
        print(rows[-1], flush=True)
    return rows


def orders(bank: Memory, question: str) -> dict[str, list[int]]:
    """Per bridge weight, the entry ids best first, as ``MemoryBank.scores`` ranks them at
    that weight, and the same with the first look's best not kept first."""
    pooled = bank.query_memories([question])[0]
    entities = bank.extractor(question)
    own = bank.bank.own_scores(pooled, entities, keywords(question))
    found = {}
    for weight in BRIDGE_WEIGHTS:
        best, lift = bank.bank.looked_twice(own, entities, weight)
        order = sorted(lift, key=lambda i: -lift[i])  # stable, in Python floats as recall sorts
        found[f"bridge {weight:g}"] = [best] + [i for i in order if i != best]
        found[f"bridge {weight:g}, first not kept"] = order
    return found


if __name__ == "__main__":
    main()
