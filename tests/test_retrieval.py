"""Retrieval metrics on hand-computed examples, the raw-text baselines, the QA and
conversation readers of bench rag / conv. No model needed."""

import json
import logging
from pathlib import Path

import pytest

from r3mem.bench import retrieval
from r3mem.bench.conv import CATEGORIES, read_conversations
from r3mem.bench.rag import read_qa, take
from r3mem.bench.retrieval import (
    BM25Index,
    DenseIndex,
    Unit,
    baselines,
    contains,
    exact_match,
    find_dense_model,
    mean,
    recall_at,
    token_f1,
)
from r3mem.sources import DataError

FIXTURES = Path(__file__).parent / "fixtures"

UNITS = [
    Unit("Mount Etna is an active volcano in Sicily.", ["0"]),
    Unit("The Golden Gate Bridge opened in 1937 in San Francisco.", ["1"]),
    Unit("Krakatoa exploded in 1883; the blast was heard in Australia.", ["2"]),
    Unit("Tower Bridge crosses the River Thames in London.", ["3"]),
]


def test_answer_metrics_by_hand():
    assert exact_match("The  Sicily!", ["sicily"]) == 1.0
    assert exact_match("Sicily island", ["Sicily"]) == 0.0
    # prediction {cat, sat} against {cat, sat, down}: precision 1, recall 2/3, F1 0.8
    assert token_f1("the cat sat", ["a cat sat down"]) == pytest.approx(0.8)
    assert token_f1("dog", ["cat", "dog"]) == 1.0
    assert token_f1("", ["cat"]) == 0.0
    assert contains(["Paris is the capital.", "x"], ["paris"]) == 1.0
    assert contains(["Parisian food"], ["Paris"]) == 0.0  # whole words only
    assert contains(["anything"], ["the"]) == 0.0  # an answer that normalises to nothing


def test_recall_counts_the_fraction_of_gold_in_the_top_k():
    units = [Unit("a", ["1"]), Unit("b", ["7", "2"]), Unit("c", ["3"])]
    assert recall_at(units, ["1", "2"], 1) == 0.5
    assert recall_at(units, ["1", "2"], 2) == 1.0
    assert recall_at(units, ["9"], 3) == 0.0
    assert mean([1.0, None, 0.0]) == 0.5
    assert mean([None]) is None


def test_bm25_ranks_the_gold_unit_first():
    index = BM25Index(UNITS)
    assert index.search("Which river does Tower Bridge cross?", 1)[0].keys == ["3"]
    assert index.search("When did Krakatoa explode?", 2)[0].keys == ["2"]
    assert len(index.search("volcano", 10)) == len(UNITS)  # k larger than the corpus
    assert index.nbytes() > sum(len(u.text) for u in UNITS)
    queries = ["Tower Bridge river", "volcano Sicily", "blast heard in Australia"]
    assert index.search_batch(queries, 2) == [index.search(q, 2) for q in queries]


@pytest.mark.skipif(find_dense_model()[0] is None, reason="no local all-MiniLM-L6-v2")
def test_dense_ranks_a_paraphrase_first():
    index = DenseIndex(UNITS, find_dense_model()[0])
    assert index.search("an eruption on an Italian island", 1)[0].keys == ["0"]
    assert index.nbytes() >= index.vectors.nbytes
    queries = ["a volcano in Italy", "a bridge over the Thames"]
    assert [[u.keys for u in units] for units in index.search_batch(queries, 4)] == [
        [u.keys for u in index.search(q, 4)] for q in queries
    ]


def test_dense_is_skipped_with_a_logged_reason_when_absent(monkeypatch, caplog):
    monkeypatch.setattr(retrieval, "find_dense_model", lambda: (None, "not installed here"))
    with caplog.at_level(logging.WARNING):
        indexes = baselines(["bm25", "dense"], UNITS)
    assert list(indexes) == ["bm25"]
    assert "dense retrieval skipped: not installed here" in caplog.text


def test_read_qa_formats():
    sets = {qa.name: qa for qa in read_qa(FIXTURES / "qa")}
    assert set(sets) == {"squad", "hotpotqa", "nq"}  # NQ-Open without passages is skipped
    squad = sets["squad"]
    assert len(squad.passages) == 4
    assert [q.text for q in squad.questions][:2] == [
        "On which island is Mount Etna?",
        "In what year did Krakatoa explode?",
    ]  # the impossible question is left out, repeated answers kept once
    assert squad.questions[1].answers == ["1883"] and squad.questions[1].gold == ["1"]
    hotpot = sets["hotpotqa"]
    assert len(hotpot.passages) == 5  # the shared "Tea" context is stored once
    assert hotpot.passages[0].startswith("Bolero: ")
    assert [q.gold for q in hotpot.questions] == [["0", "1"], ["3", "4"]]
    assert sets["nq"].questions[2].answers == ["eight"]


def test_take_keeps_questions_answerable_from_the_kept_passages():
    (hotpot,) = [qa for qa in read_qa(FIXTURES / "qa") if qa.name == "hotpotqa"]
    small = take(hotpot, passages=3, questions=10, seed=0)
    assert small.passages == hotpot.passages[:3]
    assert [q.gold for q in small.questions] == [["0", "1"]]


def test_read_qa_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}))
    with pytest.raises(DataError, match=r"bad\.json: not in SQuAD format"):
        read_qa(bad)
    lines = tmp_path / "h.jsonl"
    lines.write_text(json.dumps({"contexts": [{"title": "x"}]}) + "\n")
    with pytest.raises(DataError, match=r"h\.jsonl: line 1: missing or bad field"):
        read_qa(lines)
    with pytest.raises(DataError, match="no QA data with passages"):
        read_qa(FIXTURES / "qa" / "nq_open_mini.jsonl")


def test_locomo_questions_and_category_mapping():
    (first, questions), (second, more) = read_conversations(FIXTURES / "conv" / "locomo_tiny.json")
    assert first.conv_id == "conv-a" and second.conv_id == "conv-b"
    assert [q.group for q in questions] == [
        "4 single-hop",
        "1 multi-hop",
        "2 temporal",
        "5 adversarial",
    ]
    assert questions[1].gold == ["D1:2", "D2:2"]  # "D1:2; D2:2" split
    assert questions[3].answers == []  # adversarial: no answer to contain
    assert more[1].group == "3 open-domain"
    assert CATEGORIES[5] == "adversarial"
    # the older fixture, another file in the same format: an int answer becomes a string
    _, mini = read_conversations(FIXTURES / "locomo_mini.json")[0]
    assert mini[1].answers == ["2022"]


def test_memorybank_questions_come_from_the_file_beside_it():
    ((user, questions),) = read_conversations(FIXTURES / "conv" / "memory_bank_mini.json")
    assert user.conv_id == "Ana" and [s.session_id for s in user.sessions] == [
        "2023-05-01",
        "2023-05-02",
    ]
    assert [q.text for q in questions] == ["Who visited me from Riga?", "What classes did I start?"]
    assert all(q.answers == [] and q.gold == [] for q in questions)


@pytest.mark.parametrize(
    ("qa", "message"),
    [
        ({"answer": "x", "evidence": [], "category": 1}, "field 'question' missing"),
        ({"question": " ", "answer": "x", "evidence": [], "category": 1}, "empty question"),
        ({"question": "q", "answer": "x", "evidence": [], "category": 7}, "category 7 is not"),
        (
            {"question": "q", "answer": "x", "evidence": "D1:1", "category": 1},
            "field 'evidence' is not",
        ),
    ],
)
def test_malformed_locomo_is_one_error_naming_the_file(tmp_path, qa, message):
    data = json.loads((FIXTURES / "conv" / "locomo_tiny.json").read_text())
    data[1]["qa"][0] = qa
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"broken\.json: conv-b qa 0: {message}"):
        read_conversations(path)
    path.write_text(json.dumps(data)[:-20])
    with pytest.raises(DataError, match=r"broken\.json: malformed JSON"):
        read_conversations(path)
    with pytest.raises(DataError, match=r"missing\.json: no such file"):
        read_conversations(tmp_path / "missing.json")
