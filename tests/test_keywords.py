"""The bank's keyword level: BM25 as the bench's BM25 baseline scores it, kept up to date."""

from __future__ import annotations

import bm25s
import numpy as np
import pytest

from r3mem.keywords import KeywordIndex, keywords

TEXTS = [
    "The harbour master of Lisbon counted the ships twice.",
    "Ships, ships and more ships sailed into the harbour at dawn.",
    "A beekeeper in Lyon sold honey to the harbour master.",
    "Nobody in the village had ever seen the sea.",
    "The sea was grey; the sea was cold; the ships stayed home.",
]


def test_keywords_are_the_words_bm25s_indexes():
    assert keywords("The Ships, the ships: 1890 a I!") == {"ships": 2, "1890": 1}
    assert keywords("the a of") == {}


@pytest.mark.parametrize("query", ["harbour master", "ships sea", "honey Lyon", "dawn village"])
def test_scores_are_bm25s_scores(query):
    index = KeywordIndex()
    for entry_id, text in enumerate(TEXTS):
        index.add(entry_id, keywords(text))
    reference = bm25s.BM25()
    reference.index(bm25s.tokenize(TEXTS, stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)[0]
    expected = reference.get_scores(tokens)
    found = index.scores(keywords(query))
    got = np.array([found.get(i, 0.0) for i in range(len(TEXTS))])
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_removing_an_entry_leaves_the_index_as_if_it_never_came():
    grown, fresh = KeywordIndex(), KeywordIndex()
    for entry_id, text in enumerate(TEXTS):
        grown.add(entry_id, keywords(text))
        if entry_id != 1:
            fresh.add(entry_id, keywords(text))
    grown.remove(1, keywords(TEXTS[1]))
    assert grown.postings == fresh.postings and grown.lengths == fresh.lengths
    assert grown.total == fresh.total
    assert grown.scores(["ships", "harbour"]) == fresh.scores(["ships", "harbour"])


def test_no_entry_or_no_known_word_scores_nothing():
    index = KeywordIndex()
    assert index.scores(["ships"]) == {}
    index.add(0, keywords(TEXTS[0]))
    assert index.scores(["zebra"]) == {}
