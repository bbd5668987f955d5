"""Conversations: sessions written in time order, each question recalled and answered.

Data: a LoCoMo-format JSON list (``shared/data/convmem/locomo``) or a MemoryBank JSON
object of users (``shared/data/convmem/memorybank``; its questions come from the
``probing_questions*.jsonl`` beside it). A conversation gets a memory of its own; every
method retrieves the same session windows (:func:`r3mem.sources.session_windows`).

Metrics per LoCoMo category and overall: ``evidence_recall@1`` / ``@5`` (fraction of the
annotated ``evidence`` dialog ids inside the top units), ``answer_contains@5`` and the
reader's token ``f1``. The LoCoMo release does not name its categories; the mapping below
is read off the data (locomo7: category 1 averages 2.9 evidence turns, 97% of them across
sessions; 168 of 214 category-2 questions ask "When"; category 3 asks what someone "would
likely" do; category 4 has one evidence turn; category 5 questions carry an
``adversarial_answer`` and no answer). Category 5 is reported on its own row, with
evidence recall only, and is left out of ``overall``. MemoryBank's probing questions have
no reference answers or evidence, so its metrics are null: only the question count is real.
"""

from __future__ import annotations

import gzip
import logging
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..memory import Memory
from ..reader import Reader
from ..segment import Segment
from ..sources import (
    Conversation,
    DataError,
    Session,
    read_locomo,
    read_memorybank,
)
from .progress import Progress
from .retrieval import (
    Question,
    Unit,
    baselines,
    draw,
    r3mem_indexes,
    score_questions,
    summarize,
)

logger = logging.getLogger(__name__)

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
ADVERSARIAL = 5
QUICK_SESSIONS, QUICK_QUESTIONS = 3, 20
RENAMED = {"recall@1": "evidence_recall@1", "recall@5": "evidence_recall@5"}
# The methods in the order of their rows: R³Mem's readings, then the raw-text indexes.
METHODS = ("r3mem", "r3mem-greedy", "r3mem-exact", "bm25", "dense")
REPORTED = ("questions", "evidence_recall@1", "evidence_recall@5", "answer_contains@5", "f1")


def _first_char(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as file:
            return file.read(4096).lstrip()[:1]
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise DataError(f"{path}: cannot read ({error})") from error


def _questions_beside(path: Path) -> Path | None:
    """MemoryBank's ``probing_questions_en.jsonl`` for ``memory_bank_en.json(.gz)``."""
    stem = path.name.split(".")[0].replace("memory_bank", "probing_questions")
    found = path.with_name(f"{stem}.jsonl")
    return found if found.is_file() else None


def _locomo_question(where: str, item: Any) -> Question:
    """A LoCoMo ``qa`` item; ``evidence`` entries like ``"D8:6; D9:17"`` are split."""
    if not isinstance(item, dict) or not isinstance(item.get("question"), str):
        raise DataError(f"{where}: field 'question' missing or not a string")
    if not item["question"].strip():
        raise DataError(f"{where}: empty question")
    category = item.get("category")
    if category not in CATEGORIES:
        raise DataError(f"{where}: category {category!r} is not one of 1-5")
    evidence = item.get("evidence", [])
    if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
        raise DataError(f"{where}: field 'evidence' is not a list of dialog ids")
    gold = [part.strip() for e in evidence for part in e.split(";") if part.strip()]
    answer = item.get("answer")
    answers = [] if category == ADVERSARIAL or answer is None else [str(answer)]
    return Question(item["question"], answers, gold, f"{category} {CATEGORIES[category]}")


def read_conversations(path: str | Path) -> list[tuple[Conversation, list[Question]]]:
    """Each conversation of a LoCoMo or MemoryBank file with its questions."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if _first_char(path) == "{":
        questions = _questions_beside(path)
        if questions is None:
            logger.warning("%s: no probing_questions*.jsonl beside it, so no questions", path)
        return [
            (c, [Question(q["question"], [], [], "probing") for q in c.questions])
            for c in read_memorybank(path, questions)
        ]
    return [
        (c, [_locomo_question(f"{path}: {c.conv_id} qa {i}", q) for i, q in enumerate(c.questions)])
        for c in read_locomo(path)
    ]


def _spoken(conversation: Conversation, sessions: int | None) -> Conversation:
    """The first ``sessions`` sessions (None: all) without blank turns, which hold nothing
    to remember."""
    kept = [
        Session(s.session_id, s.time, [t for t in s.turns if t.text.strip() and t.speaker.strip()])
        for s in conversation.sessions[:sessions]
    ]
    return Conversation(conversation.conv_id, [s for s in kept if s.turns], [])


def written(memory: Memory, conversation: Conversation, segments: list[Segment]) -> Memory:
    """A fresh memory holding the conversation's segments, session by session in order."""
    fresh = memory.fresh()
    sessions: dict[str, list[Segment]] = {}
    for segment in segments:
        sessions.setdefault(segment.meta["session_id"], []).append(segment)
    for session_id, cut in tqdm(sessions.items(), desc=f"conv {conversation.conv_id}: writing"):
        fresh.remember(cut, source=session_id)
    return fresh


def _turn_ids(meta: dict[str, Any]) -> list[str]:
    """A hit's gold ids: the dialog ids its turns carry."""
    return list(meta["turn_ids"])


def bench_conv(
    memory: Memory,
    data: str,
    methods: list[str],
    quick: bool,
    seed: int,
    reader: Reader | None,
    questions_each: int | None = None,
    progress: Progress | None = None,
) -> list[dict]:
    """Rows per method: one per category, then ``overall`` (category 5 left out).
    ``questions_each``: a seeded draw of at most that many per conversation. Conversations
    ``progress`` holds from an interrupted run are reused; each new one is put there."""
    progress = progress or Progress()
    scored: dict[str, list[tuple[str, dict]]] = {}
    stored: dict[str, int] = {}
    conversations = read_conversations(data)
    for number, (conversation, questions) in enumerate(conversations[: 1 if quick else None]):
        conversation = _spoken(conversation, QUICK_SESSIONS if quick else None)
        if quick:
            turns = {t.turn_id for s in conversation.sessions for t in s.turns}
            questions = draw([q for q in questions if set(q.gold) <= turns], QUICK_QUESTIONS, seed)
        questions = draw(questions, questions_each, seed)
        unit, categories = f"{number} {conversation.conv_id}", [q.group for q in questions]
        todo = [method for method in methods if progress.get(unit, method) is None]
        segments = memory.segments(conversation)  # once, for every method
        units = [Unit(s.text, s.meta["turn_ids"]) for s in segments]
        indexes = baselines(todo, units)
        write = partial(written, memory, conversation, segments)
        write = partial(progress.memory, write, memory.reopen, unit)
        indexes = {**r3mem_indexes(todo, write, _turn_ids), **indexes}
        for method, index in indexes.items():
            desc = f"conv {conversation.conv_id} {method}"
            rows = zip(categories, score_questions(index, questions, reader, desc), strict=True)
            progress.put({"rows": list(rows), "bytes": index.nbytes()}, unit, method)
        for method in METHODS:
            done = progress.get(unit, method)
            if done is not None:
                scored.setdefault(method, []).extend((group, row) for group, row in done["rows"])
                stored[method] = stored.get(method, 0) + done["bytes"]
    name = Path(data).name.split(".")[0]
    results = []
    for method, pairs in scored.items():
        groups = sorted({group for group, _ in pairs})
        for group in [*groups, "overall"]:
            rows = [
                row
                for g, row in pairs
                if g == group or (group == "overall" and g != f"{ADVERSARIAL} adversarial")
            ]
            summary = {RENAMED.get(key, key): value for key, value in summarize(rows).items()}
            extra = {"stored_bytes": stored[method]} if group == "overall" else {}
            kept = {key: summary.get(key) for key in REPORTED}
            results.append({"method": method, "data": name, "category": group, **kept, **extra})
    return results
