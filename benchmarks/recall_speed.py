"""Is R³Mem's memory fast and small enough for an agent? (issue 15, items 3 and 4)

    python benchmarks/recall_speed.py [--model DIR] [--data locomo7.json.gz] [--text FILE]
        [--entries 10000]

1. ``remember``: the first LoCoMo conversation's sessions written in order, as ``bench conv``
   writes them (tokens/s, seconds), and what it stores: the memory file against the raw text
   of the same segments (UTF-8) and BM25's index over them (text + sparse matrix); with
   float16 entries and with float8 ones (their corrections per 1,000 tokens: what the
   rounding costs greedy recall). The same for a text (``--text``, default the packaged
   sample) cut into entries of ``ENTRY_TOKENS`` (the default) and of the segment length.
2. ``recall`` over a bank of ``--entries`` entries: the conversation's entries added again
   (fresh ids) up to that count, so that scoring sees a bank that size while every entry is
   one the model wrote; ms per query over ``--queries`` of the conversation's questions:
   scoring alone, and ``recall`` (score + reconstruct the top 5) exactly (as it reads by
   default), guided by the hits' entities and keywords, and from the memory alone; BM25 over
   the same number of units beside it.

Writes ``recall_speed.{json,md}`` under ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from r3mem.assets import SAMPLE_TEXT, asset_path  # noqa: E402
from r3mem.bench.conv import _spoken, read_conversations, written  # noqa: E402
from r3mem.bench.retrieval import BM25Index, Unit, draw  # noqa: E402
from r3mem.keywords import keywords  # noqa: E402
from r3mem.memory import Memory  # noqa: E402
from r3mem.report import write_report  # noqa: E402
from r3mem.segment import ENTRY_TOKENS  # noqa: E402
from r3mem.sources import read_texts  # noqa: E402

LOCOMO = ROOT.parent / "shared" / "data" / "convmem" / "locomo" / "locomo7.json.gz"


def per_query_ms(fn, queries: list[str]) -> dict[str, float]:
    """Median and mean milliseconds of ``fn(query)`` over ``queries`` (after one warm-up)."""
    fn(queries[0])
    times = []
    for query in queries:
        clock = time.perf_counter()
        fn(query)
        times.append(1000 * (time.perf_counter() - clock))
    median, mean = statistics.median(times), statistics.mean(times)
    return {"ms_median": round(median, 1), "ms_mean": round(mean, 1)}


def remembered(name: str, memory: Memory, segments: list, seconds: float) -> dict:
    """What writing ``segments`` into ``memory`` took and stored, beside their text and BM25."""
    tokens = sum(len(s.ids) for s in segments)
    units = [Unit(s.text, []) for s in segments]
    with tempfile.TemporaryDirectory() as tmp:
        memory.save(Path(tmp) / "memory.r3mem")
        file_bytes = (Path(tmp) / "memory.r3mem").stat().st_size
    fixes = sum(len(e.corrections) for e in memory.bank.entries.values())
    return {
        "measure": name,
        "entries": len(memory.bank),
        "tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds),
        "corrections_per_1k_tokens": round(1000 * fixes / tokens, 1),
        "stored_bytes": file_bytes,
        "text_bytes": sum(len(u.text.encode("utf-8")) for u in units),
        "bm25_bytes": BM25Index(units).nbytes(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="adapter dir (default: the shipped model)")
    parser.add_argument("--data", default=str(LOCOMO))
    parser.add_argument("--text", default=str(asset_path(SAMPLE_TEXT)), help="a text to remember")
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()

    rows, memories = [], {}
    for dtype in ("float16", "float8"):
        memory = Memory.load(args.model, entry_dtype=dtype)
        conversation, questions = read_conversations(args.data)[0]
        conversation = _spoken(conversation, None)
        segments = memory.segments(conversation)
        clock = time.perf_counter()
        memories[dtype] = written(memory, conversation, segments)
        seconds = time.perf_counter() - clock
        name = f"remember {conversation.conv_id} ({dtype} entries)"
        rows.append(remembered(name, memories[dtype], segments, seconds))
    grown = memories["float16"]
    units = [Unit(s.text, s.meta["turn_ids"]) for s in segments]
    (title, text), *_ = read_texts(Path(args.text))
    for length in (ENTRY_TOKENS, grown.model.config.segment_length):
        memory = Memory.load(args.model, entry_tokens=length)
        clock = time.perf_counter()
        memory.remember(text)
        seconds = time.perf_counter() - clock
        parts = f" in parts of {memory.part_tokens}" if memory.part_tokens < length else ""
        name = f"remember {Path(title).name} ({length}-token entries{parts})"
        rows.append(remembered(name, memory, memory.segments(text), seconds))

    entries = list(grown.bank.entries.values())
    while len(grown.bank) < args.entries:
        grown.bank.add(replace(entries[len(grown.bank) % len(entries)]))
    queries = [q.text for q in draw(questions, args.queries, args.seed)]
    bm25 = BM25Index([units[i % len(units)] for i in range(len(grown.bank))])
    searches = {
        "score only": lambda q: grown.bank.scores(
            grown.query_memories([q])[0], grown.extractor(q), keywords(q)
        ),
        "recall k=5 (guided)": lambda q: grown.recall(q, k=5, exact=False),
        "recall k=5 (greedy)": lambda q: grown.recall(q, k=5, exact=False, guided=False),
        "recall k=5 (exact)": lambda q: grown.recall(q, k=5),
        "bm25 k=5": lambda q: bm25.search(q, 5),
    }
    for name, search in searches.items():
        row = {"measure": name, "entries": len(grown.bank), "queries": len(queries)}
        rows.append(row | per_query_ms(search, queries))
    write_report(args.out, "recall_speed", args.seed, rows)
    print((Path(args.out) / "recall_speed.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
