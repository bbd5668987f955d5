"""Readers that turn files into the hierarchy's input: texts and conversations.

Texts come out as ``(doc_id, text)``. Conversations map onto the same levels as texts
(DESIGN 2.4): a conversation is a document, a window of a session's turns is a
paragraph, and the speakers are entities. Bad input fails at once with one
:class:`DataError` that names the file, and the line or field where there is one.
"""

from __future__ import annotations

import datetime
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from r3mem.hierarchy import CountTokens, Document, EntityExtractor, Paragraph, pack, unique


class DataError(ValueError):
    """Input data that cannot be read; the message names the file and the place."""


@dataclass(frozen=True)
class Turn:
    """One message. ``turn_id`` is the dataset's id (LoCoMo ``dia_id``) for evidence recall."""

    speaker: str
    text: str
    time: str | None = None
    turn_id: str | None = None


@dataclass(frozen=True)
class Session:
    """Consecutive turns held at one time: a paragraph-level unit of a conversation."""

    session_id: str
    time: str | None
    turns: list[Turn]


@dataclass(frozen=True)
class Conversation:
    """A whole conversation (a document) with the questions asked about it, as given."""

    conv_id: str
    sessions: list[Session]
    questions: list[dict[str, Any]]


def _read_text(path: Path) -> str:
    """The UTF-8 text of ``path`` (gzip when it ends in .gz); empty files are an error."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as file:
                data = file.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read ({error})") from error
    return decode_text(data, str(path))


def check_text(text: str, what: str) -> str:
    """``text`` if it can be written as UTF-8; lone surrogates (bytes a shell passed that were
    not UTF-8) are an error naming ``what``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise DataError(f"{what} is not valid UTF-8 text (at character {error.start})") from None
    return text


def check_queries(queries: Any, k: Any) -> None:
    """What recall is asked: a list of non-empty UTF-8 strings and a positive integer ``k``
    (one clear error for the first thing wrong, before any model work)."""
    if isinstance(queries, str):
        raise TypeError("queries must be a list of str, got one str (recall takes one)")
    for query in queries:
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if not query.strip():
            raise ValueError("empty query: nothing to recall")
        check_text(query, "the query")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def decode_text(data: bytes, name: str) -> str:
    """``data`` as text: UTF-8 (a byte-order mark dropped), not empty, no NUL bytes (binary
    data that happens to be valid UTF-8); ``name`` says where it came from in errors."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{name}: not UTF-8 text (byte 0x{data[error.start]:02x} on line {line})"
        ) from error
    if "\x00" in text:
        raise DataError(f"{name}: binary data (NUL bytes), not text")
    if not text.strip():
        raise DataError(f"{name}: empty, no text to read")
    return text


def _doc_id(path: Path) -> str:
    name = path.name
    for suffix in (".txt.gz", ".txt", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_texts(path: str | Path) -> Iterator[tuple[str, str]]:
    """``(doc_id, text)`` for a .txt or .gz file, or for every *.txt and *.txt.gz under a
    directory (recursive, sorted). Paths are checked now; each file is read when reached.
    """
    path = Path(path)
    if path.is_dir():
        return (
            (file.relative_to(path).with_name(_doc_id(file)).as_posix(), _read_text(file))
            for file in text_files(path)
        )
    return iter([(_doc_id(path), _read_text(text_files(path)[0]))])


def text_files(path: str | Path) -> list[Path]:
    """``path`` itself, or every *.txt and *.txt.gz file under the folder ``path`` (recursive,
    sorted); a missing path or a folder without one is an error."""
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise DataError(f"{path}: no such file or directory")
        return [path]
    suffixes = (".txt", ".txt.gz")
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.name.endswith(suffixes))
    if not files:
        raise DataError(f"{path}: directory holds no .txt or .txt.gz files")
    return files


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: malformed JSON on line {error.lineno} column {error.colno}: {error.msg}"
        ) from error


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON-lines file."""
    # Split on "\n" only: JSON strings may hold U+2028, which str.splitlines would cut at.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: line {number}: malformed JSON: {error.msg}") from error
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object")
        yield number, record


def _field(record: dict[str, Any], key: str, where: str) -> str:
    """``record[key]`` as a string; a missing or non-string value is a DataError."""
    value = record.get(key)
    if not isinstance(value, str):
        problem = "missing" if value is None else f"not a string ({type(value).__name__})"
        raise DataError(f"{where}: field {key!r} {problem}")
    return value


_LOCOMO_SESSION = re.compile(r"session_(\d+)")


def read_locomo(path: str | Path) -> list[Conversation]:
    """LoCoMo samples (``locomo10.json`` layout), sessions in numeric order.

    ``dia_id`` becomes ``turn_id``; a shared image's caption is appended to the turn's
    text as ``[shares <caption>]`` (questions may be about it); ``qa`` items are kept as is.
    """
    path = Path(path)
    samples = _load_json(path)
    if not isinstance(samples, list):
        raise DataError(f"{path}: expected a JSON list of LoCoMo samples")
    conversations = []
    for index, sample in enumerate(samples):
        where = f"{path}: sample {index}"
        if not isinstance(sample, dict) or not isinstance(sample.get("conversation"), dict):
            raise DataError(f"{where}: field 'conversation' missing or not an object")
        conv_id = _field(sample, "sample_id", where)
        conversation = sample["conversation"]
        numbers = sorted(
            int(match.group(1))
            for key, value in conversation.items()
            if (match := _LOCOMO_SESSION.fullmatch(key)) and isinstance(value, list)
        )
        sessions = []
        for number in numbers:
            turns = []
            for position, raw in enumerate(conversation[f"session_{number}"]):
                at = f"{where} ({conv_id}) session_{number} turn {position}"
                if not isinstance(raw, dict):
                    raise DataError(f"{at}: expected a JSON object")
                text = _field(raw, "text", at)
                if isinstance(raw.get("blip_caption"), str):
                    text = f"{text} [shares {raw['blip_caption']}]"
                turns.append(Turn(_field(raw, "speaker", at), text, None, raw.get("dia_id")))
            time = conversation.get(f"session_{number}_date_time")
            sessions.append(Session(str(number), time, turns))
        if not sessions:
            raise DataError(f"{where} ({conv_id}): conversation has no session_N turn lists")
        conversations.append(Conversation(conv_id, sessions, list(sample.get("qa", []))))
    return conversations


def read_memorybank(
    path: str | Path, questions_path: str | Path | None = None
) -> list[Conversation]:
    """MemoryBank users (``memory_bank_en.json`` layout): one conversation per user, one
    session per dated day in date order; each ``query``/``response`` pair becomes a user
    turn and an ``AI`` turn. Probing questions (JSONL of ``{user: [question, ...]}``)
    become ``{"question": ...}`` items; the file has no reference answers.
    """
    path = Path(path)
    users = _load_json(path)
    if not isinstance(users, dict):
        raise DataError(f"{path}: expected a JSON object of users")
    questions: dict[str, list[dict[str, Any]]] = {}
    if questions_path is not None:
        questions_path = Path(questions_path)
        names = {name.strip() for name in users}
        for number, record in _read_jsonl(questions_path):
            for name, asked in record.items():
                if name.strip() not in names:
                    raise DataError(f"{questions_path}: line {number}: unknown user {name!r}")
                if not isinstance(asked, list):
                    raise DataError(f"{questions_path}: line {number}: expected a list")
                questions[name.strip()] = [{"question": question} for question in asked]
    conversations = []
    for key, user in users.items():
        name = key.strip()
        where = f"{path}: user {name!r}"
        history = user.get("history") if isinstance(user, dict) else None
        if not isinstance(history, dict):
            raise DataError(f"{where}: field 'history' missing or not an object")
        try:
            days = sorted(history, key=datetime.date.fromisoformat)
        except ValueError as error:
            raise DataError(f"{where}: history date is not YYYY-MM-DD ({error})") from error
        sessions = []
        for day in days:
            turns = []
            for position, pair in enumerate(history[day]):
                at = f"{where} {day} item {position}"
                if not isinstance(pair, dict):
                    raise DataError(f"{at}: expected a JSON object")
                for speaker, field_name in ((name, "query"), ("AI", "response")):
                    turn_id = f"{day}:{len(turns)}"
                    turns.append(Turn(speaker, _field(pair, field_name, at), day, turn_id))
            sessions.append(Session(day, day, turns))
        conversations.append(Conversation(name, sessions, questions.get(name, [])))
    return conversations


def read_chat_jsonl(path: str | Path) -> Conversation:
    """A chat log, one JSON message per line: ``speaker``, ``text``, optional ``time`` and
    ``session``. Consecutive lines with the same ``session`` form a session (all lines
    without one form a single session); ``turn_id`` is the line number.
    """
    path = Path(path)
    sessions: list[Session] = []
    current: object = None
    for number, record in _read_jsonl(path):
        at = f"{path}: line {number}"
        turn = Turn(
            speaker=_field(record, "speaker", at),
            text=_field(record, "text", at),
            time=None if record.get("time") is None else str(record["time"]),
            turn_id=str(number),
        )
        session = record.get("session")
        if not sessions or session != current:
            session_id = str(len(sessions) + 1) if session is None else str(session)
            sessions.append(Session(session_id, turn.time, []))
            current = session
        sessions[-1].turns.append(turn)
    if not sessions:
        raise DataError(f"{path}: empty file")
    return Conversation(path.name.removesuffix(".gz").removesuffix(".jsonl"), sessions, [])


def conversation_to_text(session: Session) -> str:
    """A session as text to write into memory: a ``[time]`` header line when the time is
    known, then one ``Speaker: text`` line per turn (whitespace in a turn normalised).
    """
    lines = [f"[{session.time}]"] if session.time else []
    lines.extend(f"{turn.speaker}: {' '.join(turn.text.split())}" for turn in session.turns)
    return "\n".join(lines)


def session_windows(session: Session, max_tokens: int, count_tokens: CountTokens) -> list[Session]:
    """Consecutive turn windows of ``session`` whose text fits in ``max_tokens``.

    Each window keeps the session's id and time. A turn too long for a window by itself
    is cut at sentence boundaries (see :func:`r3mem.hierarchy.pack`) into parts that keep
    its speaker and ``turn_id``, each given ``max_tokens`` less the count of its header
    and speaker prefix (exact for additive counts, within a token or two for tokenizers).
    """
    windows: list[Session] = []
    for turn in session.turns:
        if windows and count_tokens(conversation_to_text(_extend(windows[-1], turn))) <= max_tokens:
            windows[-1] = _extend(windows[-1], turn)
            continue
        alone = Session(session.session_id, session.time, [turn])
        if count_tokens(conversation_to_text(alone)) <= max_tokens:
            windows.append(alone)
            continue
        prefix = count_tokens(conversation_to_text(replace(alone, turns=[replace(turn, text="")])))
        if prefix >= max_tokens:
            raise ValueError(f"max_tokens={max_tokens} leaves no room after the turn header")
        for part in pack([turn.text], " ", max_tokens - prefix, count_tokens):
            windows.append(replace(alone, turns=[replace(turn, text=part)]))
    return windows


def _extend(session: Session, turn: Turn) -> Session:
    return replace(session, turns=[*session.turns, turn])


def conversation_to_document(
    conversation: Conversation,
    max_tokens: int,
    count_tokens: CountTokens,
    extractor: EntityExtractor | None,
) -> Document:
    """A conversation as a document: one paragraph per session window, its entities the
    speakers then what ``extractor`` finds; ``meta`` keeps session id, time and turn ids.
    """
    paragraphs = []
    for session in conversation.sessions:
        for window in session_windows(session, max_tokens, count_tokens):
            text = conversation_to_text(window)
            speakers = [turn.speaker for turn in window.turns]
            meta = {
                "session_id": window.session_id,
                "time": window.time,
                "turn_ids": unique(turn.turn_id for turn in window.turns if turn.turn_id),
            }
            found = extractor(text) if extractor else []
            paragraphs.append(Paragraph(text, unique([*speakers, *found]), meta))
    return Document(conversation.conv_id, paragraphs)


def messages_conversation(messages: list | tuple) -> Conversation:
    """Chat messages ``{speaker, text[, time]}`` as a one-session conversation whose turn ids
    are the messages' indices; a malformed message is an error naming it."""
    turns = [_turn(message, index) for index, message in enumerate(messages)]
    return Conversation("messages", [Session("1", turns[0].time, turns)], [])


def _turn(message: object, index: int) -> Turn:
    """A chat message ``{speaker, text[, time]}`` as a Turn whose id is its index."""
    if not isinstance(message, dict):
        raise TypeError(f"message {index} must be a dict, got {type(message).__name__}")
    unknown = set(message) - {"speaker", "text", "time"}
    if unknown:
        raise ValueError(f"message {index}: unknown keys {sorted(unknown)}")
    for key in ("speaker", "text"):
        if key not in message:
            raise ValueError(f"message {index}: missing {key!r}")
        if not isinstance(message[key], str):
            raise TypeError(f"message {index}: {key!r} must be a str")
        if not message[key].strip():
            raise ValueError(f"message {index}: empty {key!r}")
        check_text(message[key], f"message {index}: {key!r}")
    time = message.get("time")
    if time is not None and not isinstance(time, str):
        raise TypeError(f"message {index}: 'time' must be a str or None")
    return Turn(message["speaker"], message["text"], time, str(index))
