"""``r3mem bench TASK``: each task measures every method it knows on the same tokens.

lm:          perplexity of whole books streamed segment by segment; ``r3mem`` carries the
             recurrent memory across the book, ``none`` reads each segment alone, ``base``
             reads each segment alone with the frozen base model (adapters off).
reconstruct: paragraph segments written alone into memory and decoded back greedily.
cost:        throughput, bytes per 1k history tokens, peak RSS, and seconds per token as the
             history grows, R³Mem beside full attention (ratios to 1k history lead).
rag:         QA passages written into memory; recall of the gold passage, answer
             containment, a reader's EM/F1, bytes stored; R³Mem beside BM25 and dense.
conv:        LoCoMo / MemoryBank conversations; evidence recall, answer containment and F1
             per question category, R³Mem beside BM25 and dense.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..data import load_segments
from ..memory import Memory
from ..reader import Reader
from ..readers import read_texts
from .conv import bench_conv
from .cost import memory_bytes_per_1k, peak_rss_mib, throughput, time_per_token
from .lm import stream_perplexity
from .plots import position_curve
from .rag import bench_rag
from .reconstruct import reconstruct_segments, reconstruction_scores
from .report import write_report

DEFAULT_DATA = {
    "lm": "../shared/data/books/validation",
    "reconstruct": "../shared/data/books/validation",
    "rag": "../shared/data/qa",
    "conv": "../shared/data/convmem/locomo/locomo7.json.gz",
}
METHODS = {
    "lm": ("r3mem", "none", "base"),
    "reconstruct": ("r3mem",),
    "cost": ("r3mem", "full_attention"),
    "rag": ("r3mem", "bm25", "dense"),
    "conv": ("r3mem", "bm25", "dense"),
}


def bench_lm(memory: Memory, data: str, methods: list[str], quick: bool, out: Path) -> list[dict]:
    """Whole books streamed; also perplexity by position (segment index buckets 1, 2-3, 4-7,
    ...), plotted to ``out/lm_position.png``."""
    books = list(read_texts(data))[: 2 if quick else None]
    totals = {method: [0.0, 0] for method in methods}  # summed NLL, tokens scored
    buckets: dict[str, dict[int, list[float]]] = {method: {} for method in methods}
    for _, text in tqdm(books, desc="lm: books"):
        ids = memory.encode(text)[0][: 2048 if quick else None]
        for method in methods:
            use_memory, adapters = method == "r3mem", method != "base"
            scored = stream_perplexity(memory.model, ids, use_memory, adapters)
            for index, (nll, count) in enumerate(scored["by_segment"]):
                bucket = buckets[method].setdefault(2 ** int(np.log2(index + 1)), [0.0, 0])
                bucket[0] += nll
                bucket[1] += count
                totals[method][0] += nll
                totals[method][1] += count
    curves = {
        method: [(start, float(np.exp(nll / n))) for start, (nll, n) in sorted(b.items())]
        for method, b in buckets.items()
    }
    position_curve(curves, out / "lm_position.png")
    return [
        {"method": m, "ppl": float(np.exp(nll / n)), "tokens_scored": n, "books": len(books)}
        for m, (nll, n) in totals.items()
    ]


def bench_reconstruct(
    memory: Memory, data: str, methods: list[str], quick: bool, seed: int, cache_dir: str
) -> list[dict]:
    config = memory.model.config
    segments = load_segments(data, memory.tokenizer, config.segment_length, 24, cache_dir)
    rng = np.random.default_rng(seed)
    rows = np.sort(
        rng.choice(len(segments), size=min(32 if quick else 256, len(segments)), replace=False)
    )
    batch = segments.batch(rows)
    restored = reconstruct_segments(memory.model, batch["ids"], batch["mask"])
    scores = reconstruction_scores(restored, batch["ids"], batch["mask"], memory.tokenizer.decode)
    ratio = config.segment_length / config.num_memory_tokens
    return [{"method": "r3mem", "compression": ratio, "segments": len(rows), **scores}]


def bench_cost(memory: Memory, methods: list[str], quick: bool, seed: int) -> list[dict]:
    """Throughput and bytes for R³Mem, then seconds per token against history length for
    each method (full attention until its KV cache passes the limit of bench.cost)."""
    model = memory.model
    histories = [1_000, 10_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    rows = [
        {
            "method": "r3mem",
            **throughput(model, 1_000 if quick else 10_000, seed),
            **memory_bytes_per_1k(model, histories[-1]),
        }
    ]
    timings = time_per_token(model, histories, seed, "full_attention" in methods)
    timings = [row for row in timings if row["method"] in methods]
    first = {
        row["method"]: row["s_per_token"]
        for row in timings
        if row["history_tokens"] == histories[0]
    }
    for row in timings:
        row["vs_1k_history"] = row["s_per_token"] / first[row["method"]]
    rows += timings
    rows.append({"method": "process", "peak_rss_mib": peak_rss_mib()})
    return rows


def run_bench(
    task: str,
    model: str | None = None,
    methods: list[str] | None = None,
    data: str | None = None,
    seed: int = 0,
    quick: bool = False,
    out: str = "benchmarks/results",
    reader: str | None = None,
) -> dict[str, Any]:
    """Run one task and write ``out/TASK.json`` and ``out/TASK.md``. ``reader`` (rag, conv):
    the causal LM directory that answers from what was retrieved; default the memory's own."""
    if task not in METHODS:
        raise ValueError(f"unknown bench task {task!r}; choose from {', '.join(METHODS)}")
    methods = methods or list(METHODS[task])
    unknown = sorted(set(methods) - set(METHODS[task]))
    if unknown:
        raise ValueError(f"bench {task}: unknown method(s) {', '.join(unknown)}")
    data = data or DEFAULT_DATA.get(task, "")
    if task != "cost" and not Path(data).exists():
        raise FileNotFoundError(f"{data}: no such data file or directory")
    torch.manual_seed(seed)
    memory = Memory.load(model)
    if task == "lm":
        Path(out).mkdir(parents=True, exist_ok=True)
        results = bench_lm(memory, data, methods, quick, Path(out))
    elif task == "cost":
        results = bench_cost(memory, methods, quick, seed)
    elif task in ("rag", "conv"):
        answerer = Reader.of_memory(memory) if reader is None else Reader.load(reader)
        bench = bench_rag if task == "rag" else bench_conv
        results = bench(memory, data, methods, quick, seed, answerer)
    else:
        results = bench_reconstruct(memory, data, methods, quick, seed, str(Path(out) / "cache"))
    return write_report(out, task, seed, results)
