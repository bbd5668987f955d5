"""Recall's weights (``r3mem.bank.ENTITY_WEIGHT``, ``KEYWORD_WEIGHT``, ``SOURCE_WEIGHT``) on
a split no bench reports (issue 15).

    python benchmarks/recall_weights.py --data ../shared/data/qa/squad_v2_dev_cs224n \
        [--first 500] [--last 1000] [--questions 100] [--seed 1] [--entry-tokens N] [--model DIR]

Per dataset, passages FIRST..LAST-1 (``bench rag`` reads the first 500) are written into one
memory as ``bench rag`` writes them, and a seeded draw of the questions whose gold passages
all lie among them is asked. Every pair of entity and keyword weights (at the shipped
source weight), and every source weight (at the shipped pair), ranks the same entries by
cosine + entity weight x the share of the query's entities an entry names + keyword weight
x its BM25 relative to the best entry's, moved by source weight x how far the best score
among the other entries of its passage lies above the mean (``MemoryBank.scores``); BM25 over
the same units beside them. Judged by recall@5 (gold passages among the top 5 units) and
answer@5 (an answer in the top 5 units' text: what exact recall reads back). Writes
OUT/recall_weights.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools

import torch
from dev_split import K, add_arguments, judge, load_memory, questions_in
from tqdm import tqdm

from r3mem import Memory
from r3mem.bank import ENTITY_WEIGHT, KEYWORD_WEIGHT, SOURCE_WEIGHT, lifted
from r3mem.bench.rag import QASet, read_qa
from r3mem.bench.retrieval import BM25Index, Unit
from r3mem.keywords import keywords
from r3mem.report import write_report

ENTITY_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
KEYWORD_WEIGHTS = (1.0, 2.0, 4.0, 8.0)
SOURCE_WEIGHTS = (0.0, 0.15, 0.25, 0.35, 0.5)
WEIGHTS = [
    *((e, w, SOURCE_WEIGHT) for e, w in itertools.product(ENTITY_WEIGHTS, KEYWORD_WEIGHTS)),
    *((ENTITY_WEIGHT, KEYWORD_WEIGHT, d) for d in SOURCE_WEIGHTS if d != SOURCE_WEIGHT),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, last=1000, questions=100)
    parser.add_argument("--out", default="benchmarks/results/recall_weights")
    args = parser.parse_args()
    memory = load_memory(args)
    rows = []
    for data in args.data:
        for qa in read_qa(data):
            rows += measure(memory, qa, args)
    notes = (
        f"Passages {args.first}-{args.last - 1} of each set, units of "
        f"{memory.entry_tokens} tokens at most; "
        f"shipped: entity weight {ENTITY_WEIGHT:g}, keyword weight {KEYWORD_WEIGHT:g}, "
        f"source weight {SOURCE_WEIGHT:g}."
    )
    write_report(args.out, "recall_weights", args.seed, rows, notes)


def measure(memory: Memory, qa: QASet, args: argparse.Namespace) -> list[dict]:
    """One row per (entity, keyword, source) weights, and BM25's, over ``qa``'s passages in
    the split."""
    span = range(args.first, min(args.last, len(qa.passages)))
    questions = questions_in(qa, args)
    bank = memory.fresh()
    units = []
    for pid in span:
        segments = bank.segments(qa.passages[pid])
        bank.remember(segments, source=str(pid))
        units += [Unit(s.text, [str(pid)]) for s in segments]
    ids = list(bank.bank.entries)  # in the order written: entry ids[j] holds units[j]
    bm25 = BM25Index(units)
    where = {id(unit): j for j, unit in enumerate(units)}
    found: dict[tuple, list[tuple]] = {}
    for question in tqdm(questions, desc=f"{qa.name}: questions"):
        hits = bm25.search(question.text, K)
        order = [where[id(unit)] for unit in hits]
        found.setdefault(("bm25",), []).append(judge(units, order, question.gold, question.answers))
        pooled = bank.query_memories([question.text])[0]
        cosine = bank.bank.own_scores(pooled, [])
        entities = bank.bank.own_scores(pooled, bank.extractor(question.text))
        lexical = bank.bank.keyword_index.scores(keywords(question.text))
        cos, ent, lex = (
            torch.tensor([d.get(i, 0.0) for i in ids]) for d in (cosine, entities, lexical)
        )
        share = (ent - cos) / ENTITY_WEIGHT  # the share of the query's entities an entry names
        relative = lex / lex.max().clamp(min=1e-9)
        for e, w, d in WEIGHTS:
            own = dict(zip(ids, (cos + e * share + w * relative).tolist(), strict=True))
            scores = lifted(own, bank.bank.source_index.values(), d)
            order = torch.argsort(-torch.tensor([scores[i] for i in ids]), stable=True).tolist()
            found.setdefault((e, w, d), []).append(
                judge(units, order, question.gold, question.answers)
            )
    rows = []
    for key, judged in found.items():
        rows.append(
            {
                "dataset": qa.name,
                "entries": len(ids),
                "questions": len(judged),
                "score": "bm25"
                if key == ("bm25",)
                else f"entities {key[0]:g}, keywords {key[1]:g}, sources {key[2]:g}",
                "shipped": key == (ENTITY_WEIGHT, KEYWORD_WEIGHT, SOURCE_WEIGHT),
                "recall@5": round(sum(r for r, _ in judged) / len(judged), 3),
                "answer@5": round(sum(a for _, a in judged) / len(judged), 3),
            }
        )
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()
