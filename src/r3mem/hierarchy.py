"""Split a document into the levels of the memory: document → paragraph → sentence → entity.

A paragraph here is a memory segment: blank-line paragraphs are merged while they fit in
``max_tokens`` and cut, at sentence boundaries first, when they do not (DESIGN 2.4). Token
counts come from the caller (a tokenizer's length), because only the model's tokenizer
knows what fits in a segment.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import pysbd

logger = logging.getLogger(__name__)

CountTokens = Callable[[str], int]

BLANK_LINE = re.compile(r"\n\s*\n")


def _normalise(text: str) -> str:
    """Collapse every run of whitespace (hard-wrapped lines included) to one space."""
    return " ".join(text.split())


def _blocks(text: str) -> list[str]:
    """Blank-line separated paragraphs, whitespace normalised, empty ones dropped."""
    blocks = (_normalise(block) for block in BLANK_LINE.split(text))
    return [block for block in blocks if block]


@lru_cache(maxsize=1)
def _segmenter() -> pysbd.Segmenter:
    # clean=False: pysbd segments the text as written instead of rewriting it first.
    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` by pysbd, which knows abbreviations ("Mr.", "p.m.", "3.5").

    Whitespace is normalised and a cut is made only where pysbd's boundary falls on a
    space ("prison?--Come" stays whole), so joining the sentences with single spaces
    gives the normalised text back even where pysbd alters or drops characters.
    """
    text = _normalise(text)
    sentences: list[str] = []
    start = searched = 0
    for segment in _segmenter().segment(text) if text else []:
        segment = segment.strip()
        found = text.find(segment, searched) if segment else -1
        if found < 0:
            continue
        searched = found + len(segment)
        if searched == len(text) or text[searched] == " ":
            sentences.append(text[start:searched].strip())
            start = searched
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence]


# From coarse to fine: how a piece that is too long is cut, and how its parts are rejoined.
_LEVELS: tuple[tuple[Callable[[str], list[str]], str], ...] = (
    (split_sentences, " "),
    (str.split, " "),
    (list, ""),
)


def pack(pieces: Iterable[str], sep: str, max_tokens: int, count_tokens: CountTokens) -> list[str]:
    """Join consecutive ``pieces`` with ``sep`` into chunks of at most ``max_tokens``.

    A piece too long on its own starts a new chunk and is cut at sentence boundaries,
    then (a sentence too long) at words, then (a word too long) at characters. A single
    character is never cut, so it is the one chunk that may exceed ``max_tokens``.
    Whitespace-only pieces are dropped.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    return _pack([piece for piece in pieces if piece.strip()], sep, 0, max_tokens, count_tokens)


def _pack(
    pieces: Iterable[str], sep: str, level: int, max_tokens: int, count_tokens: CountTokens
) -> list[str]:
    chunks: list[str] = []
    buf = ""
    for piece in pieces:
        candidate = f"{buf}{sep}{piece}" if buf else piece
        if count_tokens(candidate) <= max_tokens:
            buf = candidate
            continue
        if buf:
            chunks.append(buf)
        if level == len(_LEVELS) or count_tokens(piece) <= max_tokens:
            buf = piece
            continue
        split, inner_sep = _LEVELS[level]
        parts = _pack(split(piece), inner_sep, level + 1, max_tokens, count_tokens)
        # The last part may share its chunk with the pieces that follow.
        chunks.extend(parts[:-1])
        buf = parts[-1]
    if buf:
        chunks.append(buf)
    return chunks


def split_paragraphs(text: str, max_tokens: int, count_tokens: CountTokens) -> list[str]:
    """Segments of ``text`` that fit in ``max_tokens`` (as measured by ``count_tokens``).

    Paragraphs are separated by blank lines; short consecutive ones are merged (joined by
    a blank line) while they fit, long ones are cut at sentence boundaries. Inside a
    paragraph, whitespace is normalised to single spaces. No segment is empty.
    """
    return pack(_blocks(text), "\n\n", max_tokens, count_tokens)


def unique(items: Iterable[str]) -> list[str]:
    """Whitespace-normalised, non-empty items without repeats, in order of first appearance."""
    seen: dict[str, None] = {}
    for item in items:
        item = _normalise(item)
        if item:
            seen.setdefault(item)
    return list(seen)


class EntityExtractor(Protocol):
    """Turns a text into its entities (names, places, numbers, dates); ``name`` says which."""

    name: str

    def __call__(self, text: str) -> list[str]: ...


_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November"
    r"|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
_DATE_OR_TIME = re.compile(
    "|".join(
        (
            rf"\b{_DAY}\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}})?(?!\w)",  # 12 March 1890
            rf"\b{_MONTH}\s+{_DAY}(?:,?\s+\d{{4}})?(?!\w)",  # March 12, 1890
            rf"\b{_MONTH},?\s+\d{{4}}(?!\w)",  # March 1890
            r"\b\d{4}-\d{2}-\d{2}\b",  # 1890-03-12
            r"\b(?:\d{2})?\d0s\b",  # 1890s, 90s
            r"\b(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)s?\b",
            r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s*[aApP]\.?[mM]\b\.?)?",  # 10:30, 1:56 pm
            r"\b\d{1,2}\s*[aApP]\.?[mM]\b\.?",  # 10 am, 3 p.m.
        )
    )
)
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)*%?")
_WORD = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*")
_CONTRACTION = re.compile(r"(?:n['’]t|['’](?:m|ll|re|ve|d))$", re.IGNORECASE)
_POSSESSIVE = re.compile(r"['’]s$")
_HONORIFICS = frozenset({"Mr", "Mrs", "Ms", "Dr", "Prof", "St", "Mt", "Capt", "Col", "Gen"})
# Lower-case words that may join capitalised ones into one name: "Bank of England".
_CONNECTORS = frozenset({"of", "the", "de", "la", "le", "du", "da", "del", "van", "von"})
# Function words that are capitalised only because they start a sentence (or are "I").
_STOPWORD_TEXT = """a an the this that these those there here some any all every each no not nor
    i me my we us our you your he him his she her it its they them their
    and but or so yet for if then than when while where what which who whom whose why how
    because as though although after before once since until unless whether
    in on at to of by with from into onto upon about over under through during
    is are was were be been being do does did done have has had will would shall should
    can could might must let oh ah yes well hey hi hello thanks thank ok okay please
    sure wow now just also still even very too only perhaps indeed however maybe really
    again never always sometimes anyway good great nice sorry yeah wait look"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# Longer capitalised runs are headings or title lists ("CHAPTER I THE PERIOD ..."), not names.
_MAX_NAME_WORDS = 6


def _cap_spans(text: str, covered: list[tuple[int, int]]) -> list[tuple[int, str]]:
    """Runs of capitalised words (with connectors) outside ``covered``, stopwords trimmed.

    A lone capitalised word that also occurs in lower case in ``text`` ("Dear me! ...
    dear") is taken for a common word capitalised by its position, not a name.
    """
    spans: list[tuple[int, str]] = []
    run: list[re.Match[str]] = []
    lower_words = {match.group() for match in _WORD.finditer(text) if match.group().islower()}

    def trimmable(match: re.Match[str]) -> bool:
        word = _POSSESSIVE.sub("", match.group())
        return word.lower() in _STOPWORDS or word in _CONNECTORS

    def close() -> None:
        while run and trimmable(run[0]):
            run.pop(0)
        while run and trimmable(run[-1]):
            run.pop()
        common = len(run) == 1 and _POSSESSIVE.sub("", run[0].group()).lower() in lower_words
        if run and not common and len(run) <= _MAX_NAME_WORDS:
            span = _POSSESSIVE.sub("", text[run[0].start() : run[-1].end()])
            spans.append((run[0].start(), span))
        run.clear()

    for match in _WORD.finditer(text):
        word = match.group()
        if run:
            gap = text[run[-1].end() : match.start()]
            rest = gap.replace(" ", "")
            joined = rest == "" or (rest == "." and run[-1].group() in _HONORIFICS)
            if not joined or _POSSESSIVE.search(run[-1].group()):
                close()
        inside_date = any(start <= match.start() < end for start, end in covered)
        is_name = word[0].isupper() and not inside_date and not _CONTRACTION.search(word)
        if is_name or (run and word in _CONNECTORS):
            run.append(match)
        else:
            close()
    close()
    return spans


class RuleEntityExtractor:
    """Entities by rules, no model download: capitalised names, numbers, dates and times.

    A capitalised run loses its leading and trailing function words ("The", "When", "I"),
    which drops words capitalised only because they start a sentence.
    """

    name = "rules"

    def __call__(self, text: str) -> list[str]:
        found: list[tuple[int, str]] = []
        covered: list[tuple[int, int]] = []
        for match in _DATE_OR_TIME.finditer(text):
            found.append((match.start(), match.group()))
            covered.append(match.span())
        for match in _NUMBER.finditer(text):
            if not any(start <= match.start() < end for start, end in covered):
                found.append((match.start(), match.group()))
        found.extend(_cap_spans(text, covered))
        found.sort(key=lambda item: item[0])
        return unique(entity for _, entity in found)


class SpacyEntityExtractor:
    """Entities from a spaCy pipeline's named-entity recogniser (``nlp(text).ents``)."""

    def __init__(self, nlp: Callable[[str], Any], name: str = "spacy") -> None:
        self.nlp = nlp
        self.name = name

    @classmethod
    def load(cls, model: str = "en_core_web_sm") -> SpacyEntityExtractor:
        """Load an installed pipeline; raises ImportError or OSError when there is none."""
        import spacy

        return cls(spacy.load(model), name=f"spacy:{model}")

    def __call__(self, text: str) -> list[str]:
        return unique(ent.text for ent in self.nlp(text).ents)


def default_entity_extractor(model: str = "en_core_web_sm") -> EntityExtractor:
    """spaCy's ``model`` when spaCy and that pipeline are installed, else the rules.

    The choice is in the returned extractor's ``name`` and in the log.
    """
    extractor: EntityExtractor
    try:
        extractor = SpacyEntityExtractor.load(model)
    except (ImportError, OSError) as error:
        logger.info("entity extractor: rules (spaCy pipeline %r unavailable: %s)", model, error)
        extractor = RuleEntityExtractor()
    else:
        logger.info("entity extractor: %s", extractor.name)
    return extractor


def format_entities(entities: list[str]) -> str:
    """The entity-level training target of DESIGN 2.5 (L_ent): ``"entities: A; B; C"``."""
    return f"entities: {'; '.join(entities)}" if entities else "entities:"


@dataclass(frozen=True)
class Paragraph:
    """One paragraph-level memory entry: its text, its entities, and where it came from."""

    text: str
    entities: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Document:
    """A document split into paragraph-level entries, in reading order."""

    doc_id: str
    paragraphs: list[Paragraph]


def build_document(
    doc_id: str,
    text: str,
    max_tokens: int,
    count_tokens: CountTokens,
    extractor: EntityExtractor | None,
) -> Document:
    """Split ``text`` into segments of at most ``max_tokens`` and extract their entities
    (none when ``extractor`` is None)."""
    paragraphs = [
        Paragraph(text=segment, entities=extractor(segment) if extractor else [])
        for segment in split_paragraphs(text, max_tokens, count_tokens)
    ]
    return Document(doc_id=doc_id, paragraphs=paragraphs)
