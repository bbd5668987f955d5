"""Readers for texts and conversations, and their errors (one clear DataError each)."""

import gzip
import json
import re
from pathlib import Path

import pytest

from r3mem.hierarchy import RuleEntityExtractor
from r3mem.sources import (
    Conversation,
    DataError,
    Session,
    Turn,
    conversation_to_document,
    conversation_to_text,
    read_chat_jsonl,
    read_locomo,
    read_memorybank,
    read_texts,
    session_windows,
)

FIXTURES = Path(__file__).parent / "fixtures"
TEXTS = FIXTURES / "texts"


def words(text: str) -> int:
    return len(text.split())


def test_read_plain_text_file() -> None:
    [(doc_id, text)] = read_texts(TEXTS / "alice.txt")
    assert doc_id == "alice"
    assert text.startswith("CHAPTER I.\nDown the Rabbit-Hole")


def test_read_gzip_file() -> None:
    [(doc_id, text)] = read_texts(TEXTS / "nested" / "rabbit.txt.gz")
    assert doc_id == "rabbit"
    assert text.startswith("The rabbit-hole went straight on like a tunnel")


def test_read_directory_sorted_and_recursive(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("bee", encoding="utf-8")
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / "deep" / "z.txt.gz").write_bytes(gzip.compress(b"zed"))
    (tmp_path / "a" / "notes.md").write_text("skipped", encoding="utf-8")
    assert list(read_texts(tmp_path)) == [("a/deep/z", "zed"), ("b", "bee")]
    assert [doc_id for doc_id, _ in read_texts(TEXTS)] == ["alice", "nested/rabbit"]


def test_missing_path_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.txt: no such file or directory"):
        read_texts(tmp_path / "nope.txt")


def test_directory_without_texts_fails(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataError, match=r"holds no \.txt or \.txt\.gz files"):
        read_texts(tmp_path)


def test_empty_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text(" \n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.txt: empty, no text"):
        list(read_texts(path))


def test_non_utf8_file_fails_with_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt: not UTF-8 text \(byte 0xe9 on line 2\)"):
        list(read_texts(path))
    assert issubclass(DataError, ValueError)


def test_corrupt_gzip_fails(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"bad\.txt\.gz: cannot read"):
        list(read_texts(path))


def test_locomo_sessions_in_numeric_order_with_dia_ids() -> None:
    first, second = read_locomo(FIXTURES / "locomo_mini.json")
    assert first.conv_id == "conv-mini-1"
    # session_11 has a date but no turns; session_10 comes after session_2.
    assert [s.session_id for s in first.sessions] == ["1", "2", "10"]
    assert [s.time for s in first.sessions] == [
        "1:56 pm on 8 May, 2023",
        "7:00 pm on 25 May, 2023",
        "10:00 am on 2 July, 2023",
    ]
    turns = first.sessions[0].turns
    assert turns[0] == Turn(
        "Caroline", "Hey Mel! I went to a support group yesterday.", None, "D1:1"
    )
    assert turns[2].text == "Look at this! [shares a photo of a rainbow flag]"
    assert [q["category"] for q in first.questions] == [2, 1, 5]
    assert first.questions[0]["evidence"] == ["D1:1"]
    assert second.conv_id == "conv-mini-2"
    assert second.questions == []


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_locomo_malformed_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "locomo.json"
    path.write_text('[\n{"sample_id": "x",\n}', encoding="utf-8")
    with pytest.raises(DataError, match=r"locomo\.json: malformed JSON on line 3 column 1"):
        read_locomo(path)


def test_locomo_without_conversation_fails(tmp_path: Path) -> None:
    path = write_json(tmp_path / "locomo.json", [{"sample_id": "conv-1", "qa": []}])
    with pytest.raises(DataError, match=r"locomo\.json: sample 0: field 'conversation' missing"):
        read_locomo(path)


def test_locomo_turn_without_text_fails(tmp_path: Path) -> None:
    conversation = {"session_1": [{"speaker": "A", "dia_id": "D1:1"}]}
    path = write_json(tmp_path / "l.json", [{"sample_id": "c", "conversation": conversation}])
    with pytest.raises(DataError, match=r"sample 0 \(c\) session_1 turn 0: field 'text' missing"):
        read_locomo(path)


def test_locomo_must_be_a_list(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected a JSON list"):
        read_locomo(write_json(tmp_path / "l.json", {"sample_id": "c"}))


def test_memorybank_days_in_date_order_with_questions() -> None:
    emily, jason = read_memorybank(
        FIXTURES / "memorybank_mini.json", FIXTURES / "probing_mini.jsonl"
    )
    assert emily.conv_id == "Emily"
    assert [s.session_id for s in emily.sessions] == ["2023-04-27", "2023-04-28"]
    first_day = emily.sessions[0]
    assert first_day.time == "2023-04-27"
    assert [(t.speaker, t.turn_id) for t in first_day.turns] == [
        ("Emily", "2023-04-27:0"),
        ("AI", "2023-04-27:1"),
        ("Emily", "2023-04-27:2"),
        ("AI", "2023-04-27:3"),
    ]
    assert first_day.turns[1].text == "Hello, Emily. I'm your AI companion."
    assert emily.questions == [
        {"question": "What park did I visit on April 28th?"},
        {"question": "What are my hobbies?"},
    ]
    assert jason.conv_id == "Jason"  # the key " Jason " is stripped
    assert jason.questions == [{"question": "How far did I run?"}]


def test_memorybank_without_questions_file() -> None:
    users = read_memorybank(FIXTURES / "memorybank_mini.json")
    assert all(user.questions == [] for user in users)


def test_memorybank_errors(tmp_path: Path) -> None:
    bad_date = write_json(tmp_path / "m.json", {"Ann": {"history": {"May 1": []}}})
    with pytest.raises(DataError, match=r"user 'Ann': history date is not YYYY-MM-DD"):
        read_memorybank(bad_date)
    no_response = write_json(
        tmp_path / "m.json", {"Ann": {"history": {"2023-05-01": [{"query": "hi"}]}}}
    )
    with pytest.raises(DataError, match=r"2023-05-01 item 0: field 'response' missing"):
        read_memorybank(no_response)
    probing = tmp_path / "p.jsonl"
    probing.write_text('{"Emily": []}\n{"Bob": ["?"]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"p\.jsonl: line 2: unknown user 'Bob'"):
        read_memorybank(FIXTURES / "memorybank_mini.json", probing)


def test_chat_jsonl_groups_consecutive_sessions() -> None:
    chat = read_chat_jsonl(FIXTURES / "chat.jsonl")
    assert chat.conv_id == "chat"
    assert [(s.session_id, s.time, len(s.turns)) for s in chat.sessions] == [
        ("s1", "2024-03-02 09:00", 2),
        ("s2", "2024-03-09 18:30", 2),
        ("s1", None, 1),
    ]
    assert chat.sessions[1].turns[1] == Turn("Ben", "Send me a photo.", None, "5")


def test_chat_jsonl_keeps_line_separator_characters_inside_text(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"speaker": "A", "text": "one\u2028two"}\n', encoding="utf-8")
    assert read_chat_jsonl(path).sessions[0].turns[0].text == "one\u2028two"


def test_chat_jsonl_without_sessions_is_one_session(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"speaker": "A", "text": "hi"}\n{"speaker": "B", "text": "yo"}\n')
    [session] = read_chat_jsonl(path).sessions
    assert session == Session("1", None, [Turn("A", "hi", None, "1"), Turn("B", "yo", None, "2")])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"speaker": "A", "text": "hi"}\n{"text": "no speaker"}\n', "line 2: field 'speaker'"),
        ('{"speaker": "A"}\n', "line 1: field 'text' missing"),
        ('{"speaker": "A", "text": 3}\n', "line 1: field 'text' not a string"),
        ('{"speaker": "A", "text": "hi"}\n{oops\n', "line 2: malformed JSON"),
        ('["speaker", "text"]\n', "line 1: expected a JSON object"),
        ("\n\n", "empty, no text"),
    ],
)
def test_chat_jsonl_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=rf"chat\.jsonl: {re.escape(message)}"):
        read_chat_jsonl(path)


def test_conversation_to_text() -> None:
    session = Session("1", "8 May, 2023", [Turn("Ann", "Hi\n  there.", None, "D1:1")])
    assert conversation_to_text(session) == "[8 May, 2023]\nAnn: Hi there."
    assert conversation_to_text(Session("2", None, session.turns)) == "Ann: Hi there."


def test_session_windows_keep_whole_turns_and_cut_a_long_one() -> None:
    turns = [
        Turn("A", "one two three.", None, "t1"),
        Turn("B", "four five.", None, "t2"),
        Turn("A", "Six seven eight nine. Ten eleven twelve.", None, "t3"),
        Turn("B", "ok.", None, "t4"),
    ]
    windows = session_windows(Session("s", "Monday", turns), 8, words)
    assert [conversation_to_text(w) for w in windows] == [
        "[Monday]\nA: one two three.\nB: four five.",
        "[Monday]\nA: Six seven eight nine.",
        "[Monday]\nA: Ten eleven twelve.\nB: ok.",
    ]
    assert [[t.turn_id for t in w.turns] for w in windows] == [["t1", "t2"], ["t3"], ["t3", "t4"]]
    assert all(words(conversation_to_text(w)) <= 8 for w in windows)
    with pytest.raises(ValueError, match="no room"):
        session_windows(Session("s", "Monday", turns), 2, words)


def test_conversation_to_document_maps_sessions_to_paragraphs() -> None:
    [conversation, _] = read_locomo(FIXTURES / "locomo_mini.json")
    document = conversation_to_document(conversation, 40, words, RuleEntityExtractor())
    assert document.doc_id == "conv-mini-1"
    assert [p.meta["session_id"] for p in document.paragraphs] == ["1", "2", "10"]
    first = document.paragraphs[0]
    assert first.meta["turn_ids"] == ["D1:1", "D1:2", "D1:3"]
    assert first.meta["time"] == "1:56 pm on 8 May, 2023"
    assert first.text.startswith("[1:56 pm on 8 May, 2023]\nCaroline: Hey Mel!")
    assert first.entities[:2] == ["Caroline", "Melanie"]  # speakers first
    assert "8 May, 2023" in first.entities and "Mel" in first.entities
    assert isinstance(conversation, Conversation)
