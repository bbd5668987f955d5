"""Conversation windows read back from one entry of the whole window, or from parts of at most
``--part`` tokens each (issue 15: what decides whether an answer survives recall).

    python benchmarks/window_parts.py \
        --data ../shared/data/convmem/memorybank/memory_bank_en.json.gz \
        [--model DIR] [--windows 60] [--part 32] [--seed 1]

MemoryBank's conversations (no bench reports them) cut into turn windows as ``remember`` cuts
them (up to the model's segment length); a seeded draw of ``--windows`` windows of at least
three quarters of a segment. Each is written as one entry (``entry_tokens`` = the segment
length) and as parts of at most ``--part`` tokens (the shipped ``entry_tokens``), and read
back as ``recall(exact=False)`` reads a hit (guided by its entities and keywords). Judged by
token accuracy and by how many of the window's names (its entities and numbers) survive in
the text.
Writes OUT/window_parts.{json,md}.
"""

from __future__ import annotations

import argparse
import re

import numpy as np

from r3mem import Memory
from r3mem.memory import WRITE_BATCH
from r3mem.report import write_report
from r3mem.segment import ENTRY_TOKENS, Segment
from r3mem.sources import read_memorybank


def names(segment: Segment) -> set[str]:
    """What a reader asks for: the window's entities and its numbers, dates and times."""
    return set(segment.entities) | set(re.findall(r"\b\d[\d:./-]*\b", segment.text))


def windows(memory: Memory, data: str, count: int, seed: int) -> list[Segment]:
    """A seeded draw of ``count`` long windows from the first conversations that hold 4x."""
    length = memory.model.config.segment_length
    found: list[Segment] = []
    for conversation in read_memorybank(data):
        found += [s for s in memory.segments(conversation) if len(s.ids) >= 3 * length // 4]
        if len(found) >= 4 * count:
            break
    picked = np.random.default_rng(seed).choice(len(found), min(count, len(found)), replace=False)
    return [found[i] for i in sorted(picked)]


def measure(memory: Memory, cut: list[Segment]) -> dict:
    decoded, parts = [], []
    for start in range(0, len(cut), WRITE_BATCH):
        entries = memory.entries(cut[start : start + WRITE_BATCH])
        decoded += memory.read_tokens(entries, exact=False)
        parts += [entry.parts for entry in entries]
    accuracy = [np.mean(np.equal(d, s.ids)) for d, s in zip(decoded, cut, strict=True)]
    kept = total = 0
    for ids, segment in zip(decoded, cut, strict=True):
        text, wanted = memory.tokenizer.decode(ids), names(segment)
        kept += sum(name in text for name in wanted)
        total += len(wanted)
    return {
        "windows": len(cut),
        "tokens": round(float(np.mean([len(s.ids) for s in cut])), 1),
        "entry_tokens": memory.entry_tokens,
        "parts": round(float(np.mean(parts)), 2),
        "token_accuracy": round(float(np.mean(accuracy)), 4),
        "names": total,
        "names_survive": round(kept / max(total, 1), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="MemoryBank JSON (memory_bank_en)")
    parser.add_argument("--model", help="r3mem model directory or name (default: shipped)")
    parser.add_argument("--windows", type=int, default=60)
    parser.add_argument("--part", type=int, default=ENTRY_TOKENS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/window_parts")
    args = parser.parse_args()
    parts = Memory.load(args.model, entry_tokens=args.part, part_tokens=args.part)
    length = parts.model.config.segment_length
    whole = parts.fresh(entry_tokens=length, part_tokens=length)
    cut = windows(parts, args.data, args.windows, args.seed)
    rows = [measure(whole, cut), measure(parts, cut)]
    for row in rows:
        print(row, flush=True)
    notes = (
        "MemoryBank (en) turn windows of at least 3/4 of a segment, read back guided as "
        "recall(exact=False) reads a hit; entry_tokens = the segment length: one entry a "
        "window; less: in parts."
    )
    write_report(args.out, "window_parts", args.seed, rows, notes)


if __name__ == "__main__":
    main()
