"""WikiText's raw release as plain text files, one per article, for ``r3mem train``.

WikiText (Merity et al., 2016) keeps Wikipedia articles spaced as tokens ("1 @,@ 000 people ,
a well @-@ known actor 's role"): :func:`detokenize` undoes the spacing, and :func:`articles`
cuts the file at its "= Title =" headings, its "= = Section = =" headings becoming paragraph
breaks. ``configs/r3mem-tiny-books-wikipedia.toml``, the shipped default's second run, trains
on them.

    python -m r3mem.wikitext wikitext-2-raw-v1.test.raw.gz OUT_DIR
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .sources import read_texts

TITLE = re.compile(r"^ ?= ([^=].*?) = ?$")
SECTION = re.compile(r"^ ?= =.* = = ?$")
_JOINED = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))


def detokenize(line: str) -> str:
    """A WikiText line spaced as plain text: no space before punctuation or after an opening
    bracket, numbers and hyphenated words joined."""
    for spaced, joined in _JOINED:
        line = line.replace(spaced, joined)
    line = re.sub(r" ([,.;:!?)\]%]|'s\b|n't\b|')", r"\1", line)
    line = re.sub(r"([(\[$]) ", r"\1", line)
    return " ".join(line.split())


def articles(text: str) -> list[tuple[str, str]]:
    """``(title, body)`` of each article, its paragraphs separated by blank lines. A line of
    a formula shaped as a title ("= 1 henry and capacitance C =", twice in WikiText-2's test
    file, which keeps no blank lines to tell them apart) starts an article too."""
    found: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if not line.strip() or SECTION.match(line):
            continue
        if title := TITLE.match(line):
            found.append((detokenize(title.group(1)), []))
        elif found:  # text before the first title belongs to no article
            found[-1][1].append(detokenize(line))
    return [(title, "\n\n".join(body)) for title, body in found if body]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a WikiText raw file (wiki.*.raw, optionally .gz)")
    parser.add_argument("out", help="folder for the articles, one .txt each")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    [(_, text)] = read_texts(args.source)
    found = articles(text)
    if not found:
        raise SystemExit(f"{args.source}: no '= Title =' article heading found")
    for number, (title, body) in enumerate(found):
        slug = re.sub(r"\W+", "-", title).strip("-")[:60]
        (out / f"{number:04d}-{slug}.txt").write_text(f"{title}\n\n{body}\n", encoding="utf-8")
    print(f"{len(found)} articles -> {out}")


if __name__ == "__main__":
    main()
