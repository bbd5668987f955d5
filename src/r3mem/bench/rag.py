"""RAG: passages written into memory, questions answered from what each method retrieves.

Data (``shared/data/qa``, any file in the same formats): SQuAD 2.0 JSON (answerable
questions; gold = the question's paragraph), HotpotQA distractor JSONL as IRCoT processed
it (every question's 10 contexts pooled; gold = its supporting ones), and NQ-Open JSONL
with gold passages (``ctxs``, the Lost-in-the-Middle oracle file). NQ-Open files without
passages are skipped. A passage is ``title: text`` where it has a title.

Per dataset and method: recall@1/@5 (fraction of gold passages among the passages of the
top units), answer_contains@5, the reader's EM/F1 and the positions it read
(``context_tokens``), and the bytes stored: R³Mem's memory file (no raw text) against raw
text plus index for the baselines. ``gold`` hands the reader each question's gold passages
themselves: the ceiling of every retriever. ``r3mem-slots`` ranks as ``r3mem`` does, and the
memory's own model reads the hits as one memory written of them, in place of their text
(the paper's use of the memory in RAG), whatever reader the others use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..memory import Memory
from ..reader import Reader
from ..segment import Segment
from ..sources import DataError, _load_json, _read_jsonl
from .progress import Progress
from .retrieval import (
    Index,
    Question,
    Unit,
    baselines,
    draw,
    r3mem_indexes,
    score_questions,
    summarize,
)

logger = logging.getLogger(__name__)

QUICK_PASSAGES, QUICK_QUESTIONS = 30, 20
# The methods in the order of their rows: R³Mem's readings, the raw-text indexes, the ceiling.
METHODS = ("r3mem", "r3mem-greedy", "r3mem-exact", "r3mem-slots", "bm25", "dense", "gold")


@dataclass(frozen=True)
class QASet:
    """Passages (their id is their index, as a str) and questions whose gold ids name them."""

    name: str
    passages: list[str]
    questions: list[Question]


class _Pool:
    """Passages deduplicated in order of first appearance."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def add(self, text: str, title: str | None = None) -> str:
        text = f"{title}: {text}" if title else text
        return self.ids.setdefault(" ".join(text.split()), str(len(self.ids)))


def _squad(path: Path, data: Any) -> QASet:
    pool, questions = _Pool(), []
    try:
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                pid = pool.add(paragraph["context"])
                for qa in paragraph["qas"]:
                    answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
                    if answers and not qa.get("is_impossible", False):
                        questions.append(Question(qa["question"], answers, [pid]))
    except (KeyError, TypeError) as error:
        raise DataError(f"{path}: not in SQuAD format (missing or bad {error})") from error
    return QASet("squad", list(pool.ids), questions)


def _jsonl(path: Path) -> QASet | None:
    """HotpotQA (IRCoT) or NQ-Open with passages; None for NQ-Open without passages."""
    pool, questions, name = _Pool(), [], "nq"
    for number, record in _read_jsonl(path):
        try:
            if "contexts" in record:
                name = "hotpotqa"
                contexts = record["contexts"]
                ids = [pool.add(c["paragraph_text"], c["title"]) for c in contexts]
                gold = [i for i, c in zip(ids, contexts, strict=True) if c["is_supporting"]]
                spans = [s for a in record["answers_objects"] for s in a["spans"]]
                questions.append(Question(record["question_text"], spans, gold))
            elif "ctxs" in record:
                gold = [pool.add(c["text"], c.get("title")) for c in record["ctxs"]]
                questions.append(Question(record["question"], list(record["answers"]), gold))
            else:
                logger.info("%s: no passages (ctxs or contexts), skipped", path)
                return None
        except (KeyError, TypeError) as error:
            raise DataError(f"{path}: line {number}: missing or bad field {error}") from error
    kept = [q for q in questions if q.answers and q.gold and q.text.strip()]
    return QASet(name, list(pool.ids), kept)


def read_qa(path: str | Path) -> list[QASet]:
    """The QA sets of a file, or of every .json/.jsonl (optionally .gz) under a directory."""
    path = Path(path)
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    sets = []
    for file in files:
        name = file.name.removesuffix(".gz")
        if name.endswith(".json"):
            data = _load_json(file)
            if not isinstance(data, dict) or "data" not in data:
                raise DataError(f"{file}: not in SQuAD format (no 'data' list)")
            sets.append(_squad(file, data))
        elif name.endswith(".jsonl") and (found := _jsonl(file)) is not None:
            sets.append(found)
    if not sets:
        raise DataError(f"{path}: no QA data with passages (SQuAD, HotpotQA or NQ with ctxs)")
    return sets


def take(qa: QASet, passages: int | None, questions: int | None, seed: int) -> QASet:
    """The first ``passages`` passages, and up to ``questions`` (a seeded draw) of the
    questions whose gold passages all lie among them."""
    passages = len(qa.passages) if passages is None else passages
    kept = [q for q in qa.questions if all(int(g) < passages for g in q.gold)]
    return replace(qa, passages=qa.passages[:passages], questions=draw(kept, questions, seed))


def written(memory: Memory, cut: list[list[Segment]], name: str) -> Memory:
    """A fresh memory holding every passage's segments, each entry's source its passage id."""
    fresh = memory.fresh()
    for pid, segments in enumerate(tqdm(cut, desc=f"rag {name} r3mem: writing")):
        fresh.remember(segments, source=str(pid))
    return fresh


class GoldIndex(Index):
    """Each question's gold passages, whole: what a perfect retriever would hand the reader."""

    def __init__(self, qa: QASet) -> None:
        self.passages, self.gold = qa.passages, {}
        for question in qa.questions:  # a question asked of two passages has both as gold
            self.gold.setdefault(question.text, []).extend(question.gold)

    def search_batch(self, queries: Sequence[str], k: int) -> list[list[Unit]]:
        gold = [list(dict.fromkeys(self.gold[query]))[:k] for query in queries]
        return [[Unit(self.passages[int(pid)], [pid]) for pid in ids] for ids in gold]

    def nbytes(self) -> int:
        return sum(len(passage.encode("utf-8")) for passage in self.passages)


def passage_units(cut: list[list[Segment]]) -> list[Unit]:
    """Every passage's segments as the units every method ranks, each keyed by its passage."""
    return [Unit(s.text, [str(pid)]) for pid, segments in enumerate(cut) for s in segments]


def passage_id(meta: dict[str, Any]) -> list[str]:
    """A hit's gold id: the passage its entry came from."""
    return [meta["source"]]


def bench_rag(
    memory: Memory,
    data: str,
    methods: list[str],
    quick: bool,
    seed: int,
    reader: Reader | None,
    questions: int | None = None,
    passages: int | None = None,
    progress: Progress | None = None,
) -> list[dict]:
    """One row per dataset and method (dense absent when its model is not installed).
    Per dataset, the first ``passages`` passages (None: all) and a seeded draw of at most
    ``questions`` of the questions whose gold passages lie among them. Rows ``progress``
    holds from an interrupted run are reused; each new row is put there as it ends. The
    passages are cut as ``memory`` remembers (its ``entry_tokens``), the same units for every
    method."""
    if quick:
        passages, questions = QUICK_PASSAGES, QUICK_QUESTIONS
    progress = progress or Progress()
    rows = []
    for number, qa in enumerate(read_qa(data)):
        qa = take(qa, passages, questions, seed)
        key = f"{number} {qa.name}"  # two files may hold sets of one name
        todo = [method for method in methods if progress.get(key, method) is None]
        cut = [memory.segments(text) for text in qa.passages]  # for every method
        units = passage_units(cut)
        indexes = baselines(todo, units)
        write = partial(written, memory, cut, qa.name)
        write = partial(progress.memory, write, memory.reopen, key)
        indexes = {**r3mem_indexes(todo, write, passage_id), **indexes}
        if "gold" in todo:
            indexes["gold"] = GoldIndex(qa)
        text_bytes = sum(len(p.encode("utf-8")) for p in qa.passages)
        for method, index in indexes.items():
            slots = method == "r3mem-slots" and reader is not None
            answerer = Reader.of_memory_slots(memory) if slots else reader
            scored = score_questions(index, qa.questions, answerer, f"rag {qa.name} {method}")
            row = {
                "method": method,
                "dataset": qa.name,
                "passages": len(qa.passages),
                **summarize(scored),
                "stored_bytes": index.nbytes(),
                "text_bytes": text_bytes,
            }
            progress.put(row, key, method)
        done = [progress.get(key, method) for method in METHODS]
        rows.extend(row for row in done if row is not None)
    return rows
