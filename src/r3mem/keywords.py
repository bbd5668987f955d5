"""The keyword level of the memory bank: BM25 over the words each paragraph entry holds.

Beside the entity index (names, places, numbers), the bank keeps each entry's words, as
BM25 (Okapi, Lucene's idf) weighs them: a query's rare words find the paragraphs that hold
them. The words are those of the exact recall (the text the memory and its corrections give
back); they are counted when the entry is written, so search never decodes. Words are
what ``bm25s`` indexes by default: lower-cased runs of two or more word characters,
English stop words left out, so this level ranks as the BM25 baseline of the benches does.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from bm25s.stopwords import STOPWORDS_EN

WORD = re.compile(r"(?u)\b\w\w+\b")
STOPWORDS = frozenset(STOPWORDS_EN)
K1, B = 1.5, 0.75  # BM25's term saturation and length normalisation (bm25s' defaults)


def keywords(text: str) -> dict[str, int]:
    """How often each indexed word occurs in ``text``."""
    return dict(Counter(w for w in WORD.findall(text.lower()) if w not in STOPWORDS))


class KeywordIndex:
    """BM25 over entries' word counts, updated as entries come and go."""

    def __init__(self) -> None:
        self.postings: dict[str, dict[int, int]] = {}  # word -> entry id -> count
        self.lengths: dict[int, int] = {}  # entry id -> words indexed
        self.total = 0

    def add(self, entry_id: int, counts: dict[str, int]) -> None:
        for word, count in counts.items():
            self.postings.setdefault(word, {})[entry_id] = count
        self.lengths[entry_id] = sum(counts.values())
        self.total += self.lengths[entry_id]

    def remove(self, entry_id: int, counts: dict[str, int]) -> None:
        for word in counts:
            posting = self.postings.get(word, {})
            posting.pop(entry_id, None)
            if not posting:
                self.postings.pop(word, None)
        self.total -= self.lengths.pop(entry_id, 0)

    def scores(self, words: Iterable[str]) -> dict[int, float]:
        """BM25 of every entry that holds one of ``words`` (each counted once)."""
        n = len(self.lengths)
        average = self.total / n if n else 0.0
        found: dict[int, float] = {}
        for word in set(words):
            posting = self.postings.get(word)
            if not posting:
                continue
            idf = math.log(1 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
            for entry_id, count in posting.items():
                norm = K1 * (1 - B + B * self.lengths[entry_id] / max(average, 1e-9))
                found[entry_id] = found.get(entry_id, 0.0) + idf * count / (count + norm)
        return found
