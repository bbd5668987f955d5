"""WikiText raw -> one plain-text file per article, for a training run's train_data."""

import gzip
import subprocess
import sys

from r3mem.wikitext import articles, detokenize

# WikiText-2 raw as shared/data keeps it: CRLF, every line after a space, no blank lines.
RAW = "\r\n".join(
    [
        " = Robert Boulter = ",
        " Robert Boulter is an English film , television and theatre actor . He had a guest "
        "@-@ starring role in 2,000 @,@ 000 homes ( 2000 ) . ",
        " = = Career = = ",
        " In 2006 , Boulter 's role was 3 @.@ 5 % longer . ",
        " = Du Fu = ",
        " Du Fu was a Chinese poet . ",
    ]
)


def test_detokenize_undoes_wikitext_spacing():
    assert detokenize(" a guest @-@ starring role , in 1 @,@ 000 ( 2000 ) . ") == (
        "a guest-starring role, in 1,000 (2000)."
    )
    assert detokenize(" Boulter 's role wasn't 3 @.@ 5 % ; ok : yes ! ") == (
        "Boulter's role wasn't 3.5%; ok: yes!"
    )


def test_articles_cut_at_titles_with_sections_as_paragraph_breaks():
    found = articles(RAW)
    assert [title for title, _ in found] == ["Robert Boulter", "Du Fu"]
    body = found[0][1]
    assert body.split("\n\n") == [
        "Robert Boulter is an English film, television and theatre actor. He had a "
        "guest-starring role in 2,000,000 homes (2000).",
        "In 2006, Boulter's role was 3.5% longer.",
    ]
    assert found[1] == ("Du Fu", "Du Fu was a Chinese poet.")


def test_cli_writes_one_file_per_article_and_refuses_a_file_without_titles(tmp_path):
    source = tmp_path / "wiki.test.raw.gz"
    source.write_bytes(gzip.compress(RAW.encode()))
    run = [sys.executable, "-m", "r3mem.wikitext", str(source), str(tmp_path / "out")]
    subprocess.run(run, check=True, capture_output=True)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["0000-Robert-Boulter.txt", "0001-Du-Fu.txt"]
    assert (
        tmp_path / "out" / "0001-Du-Fu.txt"
    ).read_text() == "Du Fu\n\nDu Fu was a Chinese poet.\n"
    (tmp_path / "plain.txt").write_text("no headings here\n")
    bad = subprocess.run(
        [*run[:3], str(tmp_path / "plain.txt"), str(tmp_path / "x")], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "no '= Title =' article heading" in bad.stderr
