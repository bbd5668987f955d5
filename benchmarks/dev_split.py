"""The split the recall scripts tune on: passages ``bench rag`` never reads (it reads the
first 500) and the questions asked of them, so no reported figure chose a setting."""

from __future__ import annotations

import argparse

from r3mem.bench.rag import QASet
from r3mem.bench.retrieval import Question, Unit, contains, draw, recall_at
from r3mem.memory import Memory


def add_arguments(parser: argparse.ArgumentParser, last: int, questions: int) -> None:
    """The data, the split FIRST..LAST-1, the draw of questions, the units and the model."""
    parser.add_argument("--data", nargs="+", required=True, help="QA files or folders (rag's)")
    parser.add_argument("--first", type=int, default=500, help="first passage of the split")
    parser.add_argument("--last", type=int, default=last, help="passage after the split")
    parser.add_argument("--questions", type=int, default=questions)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--entry-tokens", type=int, help="units of at most N tokens")
    parser.add_argument("--model", help="r3mem model directory (default: the shipped one)")


def load_memory(args: argparse.Namespace) -> Memory:
    """The model, its units of at most ``--entry-tokens`` each written in one part: these
    scripts measure a unit's length, whatever parts the adapters write by default."""
    loaded = Memory.load(args.model, entry_tokens=args.entry_tokens)
    return loaded.fresh(part_tokens=loaded.entry_tokens)


def questions_in(qa: QASet, args: argparse.Namespace) -> list[Question]:
    """A seeded draw of ``args.questions`` of the questions whose gold passages all lie in
    the split."""
    asked = [q for q in qa.questions if all(args.first <= int(g) < args.last for g in q.gold)]
    return draw(asked, args.questions, args.seed)


K = 5  # the units a question's top holds, as bench rag judges them


def judge(
    units: list[Unit], order: list[int], gold: list[str], answers: list[str]
) -> tuple[float, float]:
    """recall@5 of ``gold`` and whether an answer is in the text of the top 5 units."""
    top = [units[j] for j in order[:K]]
    return recall_at(top, gold, K), contains([u.text for u in top], answers)
