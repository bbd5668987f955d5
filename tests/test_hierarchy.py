"""Splitting into paragraphs, sentences and entities (DESIGN 2.4)."""

import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r3mem.hierarchy import (
    Document,
    RuleEntityExtractor,
    SpacyEntityExtractor,
    build_document,
    default_entity_extractor,
    format_entities,
    pack,
    split_paragraphs,
    split_sentences,
)

ALICE = Path(__file__).parent / "fixtures" / "texts" / "alice.txt"


def words(text: str) -> int:
    return len(text.split())


def test_short_paragraphs_merge_while_they_fit() -> None:
    text = "a b\n\nc d\n\n\n  \ne f g"
    assert split_paragraphs(text, 4, words) == ["a b\n\nc d", "e f g"]
    assert split_paragraphs(text, 7, words) == ["a b\n\nc d\n\ne f g"]


def test_hard_wrapped_lines_are_joined_and_whitespace_normalised() -> None:
    text = "It was the best\nof times,  it was\r\nthe worst.\r\n\r\nNext\tparagraph."
    assert split_paragraphs(text, 50, words) == [
        "It was the best of times, it was the worst.\n\nNext paragraph."
    ]


def test_long_paragraph_is_cut_at_sentence_boundaries() -> None:
    text = "One two three. Four five six. Seven eight nine. Ten."
    assert split_paragraphs(text, 7, words) == [
        "One two three. Four five six.",
        "Seven eight nine. Ten.",
    ]


def test_sentence_cut_only_when_it_alone_is_too_long() -> None:
    text = "Hi there. One two three four five six seven. End."
    assert split_paragraphs(text, 3, words) == [
        "Hi there.",
        "One two three",
        "four five six",
        "seven. End.",
    ]


def test_word_too_long_is_cut_by_characters() -> None:
    assert split_paragraphs("abcdefghij klm", 4, len) == ["abcd", "efgh", "ij", "klm"]


def test_count_tokens_is_measured_on_the_joined_text() -> None:
    # A counter that charges for the separator: merged text costs more than its parts.
    def chars(text: str) -> int:
        return len(text)

    assert split_paragraphs("aaaa\n\nbbbb", 9, chars) == ["aaaa", "bbbb"]
    assert split_paragraphs("aaaa\n\nbbbb", 10, chars) == ["aaaa\n\nbbbb"]


def test_empty_text_gives_no_paragraphs_and_max_tokens_must_be_positive() -> None:
    assert split_paragraphs(" \n\n \t\n", 5, words) == []
    with pytest.raises(ValueError, match="max_tokens"):
        split_paragraphs("text", 0, words)


def test_pack_drops_blank_pieces() -> None:
    assert pack(["a b", "  ", "c"], "\n", 10, words) == ["a b\nc"]


def test_alice_fixture_merges_whole_paragraphs_and_cuts_the_long_sentence() -> None:
    text = ALICE.read_text(encoding="utf-8")
    merged = split_paragraphs(text, 200, words)
    assert [p.count("\n\n") for p in merged] == [2, 1]
    assert merged[0].startswith("CHAPTER I. Down the Rabbit-Hole\n\nAlice was beginning")
    assert merged[1].startswith("There was nothing so _very_ remarkable")
    assert merged[1].endswith(
        "\n\nIn another moment down went Alice after it, never once "
        "considering how in the world she was to get out again."
    )
    # The third paragraph is one 162-word sentence: at 60 tokens it alone is cut by words.
    cut = split_paragraphs(text, 60, words)
    assert [words(p) for p in cut] == [5, 57, 55, 60, 60, 42]
    assert cut[1].endswith('conversations?"') and cut[2].endswith("close by her.")
    assert " ".join(cut).split() == text.split()


sentence = st.lists(
    st.sampled_from(["river", "stone", "light", "Anna", "walked", "home", "42", "slowly"]),
    min_size=1,
    max_size=6,
).map(lambda ws: ws[0].capitalize() + " " + " ".join(ws[1:]) if len(ws) > 1 else ws[0])


@settings(max_examples=150, deadline=None)
@given(
    # A sentence never opens with a bare numeral: "42. River ..." reads as a numbered list
    # item, which pysbd (rightly) does not end at the number.
    sentences=st.lists(
        sentence.filter(lambda s: not s[0].isdigit()).map(lambda s: s.rstrip() + "."),
        min_size=1,
        max_size=12,
    ),
    max_tokens=st.integers(min_value=6, max_value=30),
)
def test_never_cut_mid_sentence_when_sentences_fit(sentences: list[str], max_tokens: int) -> None:
    chunks = split_paragraphs(" ".join(sentences), max_tokens, words)
    position = 0
    for chunk in chunks:
        assert words(chunk) <= max_tokens
        # Each chunk is a run of whole consecutive sentences.
        end = position + 1
        while " ".join(sentences[position:end]) != chunk:
            end += 1
            assert end <= len(sentences), chunk
        position = end
    assert position == len(sentences)


text_strategy = st.text(
    alphabet=st.sampled_from(list("abcXYZ .!?,'\"\n\t-:;0123456789é")) | st.characters(),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(text=text_strategy, max_tokens=st.integers(min_value=1, max_value=20))
def test_every_word_is_kept_in_order(text: str, max_tokens: int) -> None:
    chunks = split_paragraphs(text, max_tokens, words)
    assert all(chunk.strip() == chunk and chunk for chunk in chunks)
    assert all(words(chunk) <= max_tokens for chunk in chunks)
    assert " ".join(chunks).split() == text.split()


@settings(max_examples=200, deadline=None)
@given(text=text_strategy, max_tokens=st.integers(min_value=1, max_value=40))
def test_every_character_is_kept_in_order_when_cutting_words(text: str, max_tokens: int) -> None:
    chunks = split_paragraphs(text, max_tokens, len)
    assert all(chunk and (len(chunk) <= max_tokens) for chunk in chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())


def test_split_sentences_cuts_only_at_spaces() -> None:
    # pysbd splits "prison?--Come"; cutting there would break the word.
    text = "Never in a debtors' prison?--Come, once again. Never? Yes."
    assert split_sentences(text) == [
        "Never in a debtors' prison?--Come, once again.",
        "Never?",
        "Yes.",
    ]


@settings(max_examples=200, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(["Mr.", "e.g.", "...", "U.S.", "?--", "!\u201d", "\u201c", "a", "B"])
        | st.sampled_from(list(" \n.!?\"'()-:;,09é")),
        max_size=60,
    ).map("".join)
)
def test_sentences_join_back_to_the_text(text: str) -> None:
    assert " ".join(split_sentences(text)) == " ".join(text.split())


def test_split_sentences_knows_abbreviations() -> None:
    assert split_sentences("Mr. Darcy arrived. He sat.") == ["Mr. Darcy arrived.", "He sat."]
    assert split_sentences("It was 3.5 p.m. on a\nTuesday. Dr. Who left!") == [
        "It was 3.5 p.m. on a Tuesday.",
        "Dr. Who left!",
    ]
    assert split_sentences("  \n ") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "On 12 March 1890 Mr. Darcy met Elizabeth Bennet in the Bank of England at 10:30.",
            ["12 March 1890", "Mr. Darcy", "Elizabeth Bennet", "Bank of England", "10:30"],
        ),
        (
            "The war ended in the 1890s. They met on Monday, March 12, and paid 300 pounds.",
            ["1890s", "Monday", "March 12", "300"],
        ),
        ("However, it rained. Then we left. When? Yes.", []),
        ("I'm sure Alice's cat didn't like Paris. It's fine. Don't go.", ["Alice", "Paris"]),
        ("Alice saw Alice and the White Rabbit's watch.", ["Alice", "White Rabbit"]),
        ("Dear me! Dear, dear! To think of it.", []),
        ("CHAPTER I THE PERIOD CHAPTER II THE MAIL. Then came Jarvis Lorry.", ["Jarvis Lorry"]),
        (
            "[1:56 pm on 8 May, 2023] Caroline met Jack the Ripper at 3 p.m. with 3.5% of 1,000.",
            ["1:56 pm", "8 May, 2023", "Caroline", "Jack the Ripper", "3 p.m.", "3.5%", "1,000"],
        ),
        ("On 2023-05-01 the Duke of York sailed.", ["2023-05-01", "Duke of York"]),
    ],
)
def test_rule_entities(text: str, expected: list[str]) -> None:
    assert RuleEntityExtractor()(text) == expected


def test_rule_entities_split_on_punctuation_and_line_breaks() -> None:
    assert RuleEntityExtractor()("Paris, France\nLondon") == ["Paris", "France", "London"]


class FakeDoc:
    def __init__(self, names: list[str]) -> None:
        self.ents = [SimpleNamespace(text=name) for name in names]


def test_spacy_extractor_uses_the_pipeline_ents() -> None:
    seen: list[str] = []

    def nlp(text: str) -> FakeDoc:
        seen.append(text)
        return FakeDoc(["Darcy", "Pemberley", " Darcy ", "1811"])

    extractor = SpacyEntityExtractor(nlp, name="spacy:fake")
    assert extractor("Darcy went to Pemberley in 1811.") == ["Darcy", "Pemberley", "1811"]
    assert seen == ["Darcy went to Pemberley in 1811."]
    assert extractor.name == "spacy:fake"


def test_default_extractor_picks_spacy_when_a_pipeline_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = types.ModuleType("spacy")
    fake.load = lambda model: lambda text: FakeDoc([f"{model}:{text}"])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "spacy", fake)
    extractor = default_entity_extractor("en_core_web_sm")
    assert extractor.name == "spacy:en_core_web_sm"
    assert extractor("x") == ["en_core_web_sm:x"]


def test_default_extractor_falls_back_to_rules_visibly(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing_model(model: str) -> None:
        raise OSError(f"[E050] Can't find model '{model}'")

    fake = types.ModuleType("spacy")
    fake.load = missing_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "spacy", fake)
    assert default_entity_extractor().name == "rules"
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy raises ImportError
    assert default_entity_extractor().name == "rules"


def test_format_entities() -> None:
    assert format_entities(["Alice", "White Rabbit", "1865"]) == (
        "entities: Alice; White Rabbit; 1865"
    )
    assert format_entities([]) == "entities:"


def test_build_document() -> None:
    text = "Alice met the White Rabbit.\n\nOn Monday she saw Dinah. Then she slept."
    document = build_document("alice", text, 6, words, RuleEntityExtractor())
    assert isinstance(document, Document)
    assert document.doc_id == "alice"
    assert [p.text for p in document.paragraphs] == [
        "Alice met the White Rabbit.",
        "On Monday she saw Dinah.",
        "Then she slept.",
    ]
    assert [p.entities for p in document.paragraphs] == [
        ["Alice", "White Rabbit"],
        ["Monday", "Dinah"],
        [],
    ]
    assert all(p.meta == {} for p in document.paragraphs)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_text_cut_block_by_block_gives_the_whole_text_s_segments(newline) -> None:
    """cut_stream reads a long text a block at a time (bounded work before the first
    segment) and, where blank lines come at least every block, cuts it as cut does."""
    from transformers import AutoTokenizer

    from r3mem.assets import DEFAULT_MODEL, SAMPLE_TEXT, asset_path
    from r3mem.segment import Tokens, cut, cut_stream

    tokens = Tokens(AutoTokenizer.from_pretrained(asset_path(DEFAULT_MODEL) / "base"))
    text = asset_path(SAMPLE_TEXT).read_text(encoding="utf-8").replace("\n", newline)
    whole = cut(text, tokens, 64)
    streamed = list(cut_stream(text, tokens, 64, block_chars=2000))
    assert [s.ids for s, _ in streamed] == [s.ids for s in whole]
    reached = [done for _, done in streamed]
    assert reached == sorted(reached) and reached[-1] == len(text) and reached[0] < len(text) / 4
