"""r3mem remember / recall: a memory file that grows across calls and is never left broken."""

import io
from pathlib import Path

from r3mem.assets import SAMPLE_TEXT, asset_path
from r3mem.cli import main
from r3mem.memory import Memory


def test_remember_then_recall_exactly(adapter_dir, tmp_path, capsys):
    store = str(tmp_path / "notes.r3mem")
    sample = str(asset_path(SAMPLE_TEXT))
    assert main(["remember", sample, "--memory", store, "--model", str(adapter_dir)]) == 0
    first = capsys.readouterr().out
    assert "entries in all" in first
    assert main(["recall", "Dover mail", "--memory", store, "-k", "2", "--exact"]) == 0
    blocks = capsys.readouterr().out.strip().split("\n\n[")
    assert len(blocks) == 2
    header, text = blocks[0].split("\n", 1)
    assert header.startswith("[") and " #" in header
    # Exact recall gives a paragraph of the sample back, word for word.
    words = " ".join(Path(sample).read_text(encoding="utf-8").split())
    assert " ".join(text.split()) in words


def test_bad_requests_leave_the_file_unchanged(adapter_dir, tmp_path, capsys):
    store = tmp_path / "notes.r3mem"
    sample = str(asset_path(SAMPLE_TEXT))
    assert main(["remember", sample, "--memory", str(store), "--model", str(adapter_dir)]) == 0
    before = store.read_bytes()
    assert main(["recall", "  ", "--memory", str(store)]) == 2
    assert "empty query" in capsys.readouterr().err
    assert main(["recall", "Dover", "--memory", str(store), "-k", "0"]) == 2
    assert "k must be a positive integer" in capsys.readouterr().err
    assert main(["remember", str(tmp_path / "missing.txt"), "--memory", str(store)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert store.read_bytes() == before


def test_each_text_piped_in_is_a_source_of_its_own(adapter_dir, tmp_path, monkeypatch):
    """Recall scores a source's entries together: notes piped in one at a time stay apart."""
    store = str(tmp_path / "notes.r3mem")
    for note in ("Alice keeps bees.\n\nShe sells honey.", "Bob repairs clocks."):
        stdin = io.TextIOWrapper(io.BytesIO(note.encode()))
        monkeypatch.setattr("sys.stdin", stdin)
        assert main(["remember", "-", "--memory", store, "--model", str(adapter_dir)]) == 0
    sources = {e.meta["source"] for e in Memory.open(store).bank.entries.values()}
    assert len(sources) == 2 and all(s.startswith("standard input ") for s in sources)


def test_entry_tokens_are_a_new_file_s_and_kept(wide_adapter_dir, tmp_path, capsys):
    store, model = tmp_path / "notes.r3mem", str(wide_adapter_dir)
    sample = str(asset_path(SAMPLE_TEXT))
    remember = ["remember", sample, "--memory", str(store), "--model", model]
    assert main([*remember, "--entry-tokens", "64"]) == 0
    assert Memory.open(store).entry_tokens == 64
    assert max(e.tokens for e in Memory.open(store).bank.entries.values()) > 32
    before = store.read_bytes()
    assert main([*remember, "--entry-tokens", "32"]) == 2
    assert "keeps entries of at most 64 tokens" in capsys.readouterr().err
    assert store.read_bytes() == before
    assert main(remember) == 0  # the file's own length
    assert Memory.open(store).entry_tokens == 64
    fresh = tmp_path / "fresh.r3mem"
    assert main(["remember", sample, "--memory", str(fresh), "--model", model]) == 0
    assert Memory.open(fresh).entry_tokens == 32
    bad = tmp_path / "bad.r3mem"
    assert main([*remember[:3], str(bad), *remember[4:], "--entry-tokens", "0"]) == 2
    assert "entry_tokens must be 1 to the segment length 64, got 0" in capsys.readouterr().err
    assert not bad.exists()


def test_part_tokens_are_a_new_file_s_and_kept(wide_adapter_dir, tmp_path, capsys):
    store = tmp_path / "parts.r3mem"
    remember = ["remember", str(asset_path(SAMPLE_TEXT)), "--memory", str(store)]
    remember += ["--model", str(wide_adapter_dir)]
    assert main([*remember, "--part-tokens", "16"]) == 0
    opened = Memory.open(store)
    assert (opened.entry_tokens, opened.part_tokens) == (32, 16)
    assert {e.parts for e in opened.bank.entries.values()} == {1, 2}
    before = store.read_bytes()
    assert main([*remember, "--part-tokens", "32"]) == 2
    assert "keeps parts of at most 16 tokens" in capsys.readouterr().err
    assert store.read_bytes() == before
