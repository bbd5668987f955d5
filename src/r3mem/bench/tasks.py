"""``r3mem bench TASK``: each task measures every method it knows on the same tokens.

lm:          perplexity of books (validation and test) streamed in the paragraph segments
             the hierarchy cuts (as ``remember`` writes them) and in fixed chunks (as text
             streams in), each method carrying its own memory across the book; ``none``
             reads each segment alone, ``base`` reads it alone with the frozen base model
             (adapters off), ``base-text`` with the frozen base after the segment_length
             tokens of text before it (what one segment's memory stands in for).
reconstruct: paragraph segments written alone into memory and decoded back greedily, against
             compression ratio; document-level recall; the cost of exact recall.
cost:        throughput, bytes per 1k history tokens, peak RSS, and seconds per token as the
             history grows, R³Mem beside full attention (ratios to 1k history lead).
rag:         QA passages written into memory; recall of the gold passage, answer
             containment, a reader's EM/F1, bytes stored; R³Mem beside BM25 and dense.
conv:        LoCoMo / MemoryBank conversations; evidence recall, answer containment and F1
             per question category, R³Mem beside BM25 and dense.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoint import (
    adapter_digest,
    locate_model,
    read_adapter_config,
    read_adapter_weights,
)
from ..data import ENTITY_LENGTH, load_segments
from ..eval import (
    READINGS,
    read_book,
    reconstruct_segments,
    reconstruction_scores,
    stream_perplexity,
)
from ..memory import Memory
from ..plots import history_curve, position_curve, ratio_curve
from ..reader import Reader
from ..report import git_revision, write_report
from ..segment import entry_length, part_length
from ..sources import read_texts
from .baselines import Method, load_methods, parse_methods
from .conv import METHODS as CONV_METHODS
from .conv import bench_conv
from .cost import memory_bytes_per_1k, peak_rss_mib, throughput, time_per_token
from .progress import Progress
from .rag import METHODS as RAG_METHODS
from .rag import bench_rag
from .reconstruct import document_recall, exact_recall_cost
from .retrieval import find_dense_model

BOOKS = "../shared/data/books"
DEFAULT_DATA = {
    "lm": f"{BOOKS}/validation,{BOOKS}/test",
    "reconstruct": f"{BOOKS}/validation",
    "rag": "../shared/data/qa",
    "conv": "../shared/data/convmem/locomo/locomo7.json.gz",
}
METHODS = {
    "lm": ("r3mem", "none", "base", "base-text"),
    "reconstruct": ("r3mem",),
    "cost": ("r3mem", "full_attention"),
    "rag": RAG_METHODS,
    "conv": CONV_METHODS,
}
# lm reads this many tokens of each book unless told otherwise (book_tokens=0: whole books):
# whole books for every baseline and ablation take hours on a 2-core CPU.
BOOK_TOKENS = 16_384


def bench_lm(
    methods: list[Method],
    model: str | None,
    data: list[str],
    quick: bool,
    book_tokens: int,
    out: Path,
    readings: tuple[str, ...] = READINGS,
) -> list[dict]:
    """Books streamed in each of ``readings``, one row per method, split and reading; also
    perplexity by position (segment index buckets 1, 2-3, 4-7, ...), plotted to
    ``out/lm_position-SPLIT[-chunks].png``."""
    texts = {Path(path).name: [text for _, text in read_texts(path)] for path in data}
    texts = {split: books[: 2 if quick else None] for split, books in texts.items()}
    limit = 2048 if quick else book_tokens or None
    streams: dict[tuple[str, str], list[list[torch.Tensor]]] = {}  # cut once, by the first
    vocab = None
    rows, curves = [], {}
    for method, memory in tqdm(load_methods(methods, model), total=len(methods), desc="lm"):
        if vocab is None:
            vocab = memory.tokenizer.get_vocab()
            for split, books in texts.items():
                for reading in readings:
                    cut = [read_book(memory, text, reading, limit) for text in books]
                    streams[split, reading] = cut
        elif memory.tokenizer.get_vocab() != vocab:
            raise ValueError(f"{method.name}: another tokenizer; lm compares identical tokens")
        for (split, reading), books in streams.items():
            before = memory.model.config.segment_length if method.text_before else 0
            scored = stream_perplexity(
                memory.model, books, method.use_memory, method.adapters, before
            )
            curve = curves.setdefault((split, reading), {})
            curve[method.name] = _by_position(scored["by_segment"])
            rows.append(
                {
                    "method": method.name,
                    "data": split,
                    "reading": reading,
                    "ppl": scored["ppl"],
                    "tokens_scored": scored["tokens_scored"],
                    "segments": sum(map(len, books)),
                    "books": len(books),
                }
            )
    for (split, reading), curve in curves.items():
        suffix = "" if reading == "paragraphs" else f"-{reading}"
        position_curve(curve, out / f"lm_position-{split}{suffix}.png")
    return rows


def _by_position(by_segment: list[tuple[float, int]]) -> list[tuple[int, float]]:
    """(bucket start, perplexity) over segment index buckets 1, 2-3, 4-7, ..."""
    buckets: dict[int, list[float]] = {}
    for index, (nll, count) in enumerate(by_segment):
        bucket = buckets.setdefault(2 ** int(np.log2(index + 1)), [0.0, 0])
        bucket[0] += nll
        bucket[1] += count
    return [(start, float(np.exp(nll / n))) for start, (nll, n) in sorted(buckets.items())]


def bench_reconstruct(
    methods: list[Method],
    model: str | None,
    data: list[str],
    quick: bool,
    seed: int,
    cache_dir: str,
    out: Path,
) -> list[dict]:
    """Per method and data path: paragraphs (greedy exact match, token accuracy, BLEU) at its
    compression ratio, document-level recall and the bytes of exact recall, on the same
    segments; then the same paragraphs' first halves (half the ratio). The ratio curve of the
    first data path goes to ``out/reconstruct_ratio.png``."""
    rows = []
    for method, memory in load_methods(methods, model):
        for path in data:
            rows += _reconstruct_rows(method.name, memory, path, quick, seed, cache_dir)
    name = Path(data[0]).name
    ratio_curve([row for row in rows if row["data"] == name], out / "reconstruct_ratio.png")
    return rows


def _reconstruct_rows(
    name: str, memory: Memory, path: str, quick: bool, seed: int, cache_dir: str
) -> list[dict]:
    config = memory.model.config
    segments = load_segments(
        path, memory.tokenizer, config.segment_length, ENTITY_LENGTH, cache_dir
    )
    rng = np.random.default_rng(seed)
    count = 32 if quick else 256
    picked = np.sort(rng.choice(len(segments), size=min(count, len(segments)), replace=False))
    batch = segments.batch(picked)
    bar = f"reconstruct {name}"
    restored = reconstruct_segments(memory.model, batch["ids"], batch["mask"], desc=bar)
    decode = memory.tokenizer.decode
    scores = reconstruction_scores(restored, batch["ids"], batch["mask"], decode)
    starts = segments.window_starts(2)
    starts = starts[segments.lengths[starts] > config.doc_cue_length]
    starts = np.sort(rng.choice(starts, size=min(count, len(starts)), replace=False))
    recall = document_recall(memory.model, segments, starts, desc=f"{bar}: document")
    m, length = config.num_memory_tokens, config.segment_length
    head = {"method": name, "data": Path(path).name}
    full = head | {"compression": length / m, "text_tokens": length, "segments": len(picked)}
    full |= scores | {
        "doc_token_acc": recall["token_acc"],
        "doc_exact_match": recall["exact_match"],
    }
    full |= exact_recall_cost(
        memory.model, batch["ids"], batch["mask"], decode, desc=f"{bar}: exact recall"
    )
    half = length // 2  # the same paragraphs' first halves: half the ratio
    ids, mask = batch["ids"][:, :half], batch["mask"][:, :half]
    restored = reconstruct_segments(memory.model, ids, mask, desc=f"{bar}: {half} tokens")
    short = head | {"compression": half / m, "text_tokens": half, "segments": len(picked)}
    return [full, short | reconstruction_scores(restored, ids, mask, decode)]


def bench_cost(memory: Memory, methods: list[str], quick: bool, seed: int, out: Path) -> list[dict]:
    """Seconds per token against history length for each method (full attention until its
    KV cache passes the limit of bench.cost), led by ratios: to the method's own time at 1k
    tokens of history and, for R³Mem, full attention's time over its own at the same
    history; then R³Mem's throughput and bytes. The curve goes to ``out/cost_history.png``."""
    model = memory.model
    histories = [1_000, 10_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    timings = time_per_token(model, histories, seed, "full_attention" in methods)
    timings = [row for row in timings if row["method"] in methods]
    seconds = {(row["method"], row["history_tokens"]): row["s_per_token"] for row in timings}
    rows = []
    for row in timings:
        method, history = row["method"], row["history_tokens"]
        ratios = {"vs_1k_history": row["s_per_token"] / seconds[method, histories[0]]}
        if method == "r3mem" and ("full_attention", history) in seconds:
            ratios["full_attention_over_r3mem"] = (
                seconds["full_attention", history] / row["s_per_token"]
            )
        rows.append({"method": method, "history_tokens": history, **ratios, **row})
    history_curve(timings, out / "cost_history.png")
    rows.append(
        {
            "method": "r3mem",
            **throughput(model, 1_000 if quick else 10_000, seed),
            **memory_bytes_per_1k(model, histories[-1], memory.bank.entry_dtype),
        }
    )
    rows.append({"method": "process", "peak_rss_mib": peak_rss_mib()})
    return rows


def _progress(task: str, out: str, resume: bool, **asked: Any) -> Progress:
    """Where a rag or conv run keeps its finished units, under what its rows depend on: the
    request, the adapter weights (a training run may replace them) and whether dense can
    run; each unit keeps the code revision that made it."""
    adapter_dir = locate_model(asked.pop("model"))[1].resolve()
    part = asked.pop("part_tokens", None)
    if "entry_tokens" in asked:  # the length itself: a later default is another request
        config = read_adapter_config(adapter_dir)["r3mem_config"]
        length = config["segment_length"]
        asked["entry_tokens"] = entry_length(asked["entry_tokens"], length)
        part = part_length(part, asked["entry_tokens"], length, config.get("part_tokens"))
        if part != asked["entry_tokens"]:  # runs before part_tokens keep their key
            asked["part_tokens"] = part
    run = {"task": task, **asked, "data": str(Path(asked["data"]).resolve())}
    weights = adapter_digest(read_adapter_weights(adapter_dir))
    run |= {"adapter": str(adapter_dir), "weights": weights}
    if "dense" in asked["methods"]:
        run["dense"] = find_dense_model()[0] is not None
    return Progress(Path(out) / f"{task}.partial.jsonl", run, resume, git_revision(out))


def run_bench(
    task: str,
    model: str | None = None,
    methods: list[str] | None = None,
    data: str | None = None,
    seed: int = 0,
    quick: bool = False,
    out: str = "benchmarks/results",
    book_tokens: int | None = None,
    reader: str | None = None,
    questions: int | None = None,
    passages: int | None = None,
    resume: bool = False,
    entry_tokens: int | None = None,
    part_tokens: int | None = None,
) -> dict[str, Any]:
    """Run one task and write ``out/TASK.json`` and ``out/TASK.md``. ``methods``: names or
    ``NAME=DIR`` specs (:mod:`r3mem.bench.baselines`); ``data``: comma-separated paths;
    ``book_tokens``: lm's tokens per book (None: BOOK_TOKENS, 0: whole books); ``reader``
    (rag, conv): the causal LM that answers from what was retrieved (default: SmolLM2 when
    installed, else the memory's own base model; ``"none"``: retrieval alone, em and f1
    null); ``questions`` (rag, conv): a seeded draw of at most that many
    questions per dataset or conversation (None: all); ``passages`` (rag): the first that
    many passages of each dataset (None: all); ``entry_tokens`` (rag, conv): the memory's
    entry length (None: ``Memory``'s default): rag's units for every method, conv's parts of
    a turn window (:class:`r3mem.bank.Entry`); ``part_tokens`` (rag, conv): the parts every
    entry is compressed in (None: the adapters' ``part_tokens`` up to the entry length, else
    the entry length), the units unchanged; ``resume`` (rag,
    conv): reuse what an interrupted run of the same request left in
    ``out/TASK.partial.jsonl``."""
    if task not in METHODS:
        raise ValueError(f"unknown bench task {task!r}; choose from {', '.join(METHODS)}")
    parsed = parse_methods(methods, task, METHODS[task])
    paths = (data or DEFAULT_DATA.get(task, "")).split(",")
    if task not in ("lm", "reconstruct") and any(method.model for method in parsed):
        raise ValueError(f"bench {task} measures --model only; NAME=DIR is for lm, reconstruct")
    sizes = (("questions", questions, "rag conv"), ("passages", passages, "rag"))
    sizes += (("entry-tokens", entry_tokens, "rag conv"), ("part-tokens", part_tokens, "rag conv"))
    for option, value, tasks in sizes:
        if value is not None and (task not in tasks.split() or value < 1):
            raise ValueError(f"--{option} is a positive count, for {tasks} (got {value})")
    if resume and task not in ("rag", "conv"):
        raise ValueError("--resume is for rag and conv")
    if task not in ("lm", "reconstruct") and len(paths) > 1:
        raise ValueError(f"bench {task} reads one data path")
    for path in paths if task != "cost" else []:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such data file or directory")
    torch.manual_seed(seed)
    if task in ("lm", "reconstruct"):  # their plots go there; bad input leaves no folder
        Path(out).mkdir(parents=True, exist_ok=True)
    if task == "lm":
        tokens = BOOK_TOKENS if book_tokens is None else book_tokens
        results = bench_lm(parsed, model, paths, quick, tokens, Path(out))
    elif task == "cost":
        results = bench_cost(Memory.load(model), [m.name for m in parsed], quick, seed, Path(out))
    elif task in ("rag", "conv"):
        names = [m.name for m in parsed]
        progress = _progress(  # first: a refused --resume loads no model
            task, out, resume, model=model, reader=reader or Reader.default_name(),
            methods=names, data=paths[0], seed=seed, quick=quick, questions=questions,
            passages=passages, entry_tokens=entry_tokens, part_tokens=part_tokens,
        )  # fmt: skip
        memory = Memory.load(model, entry_tokens=entry_tokens, part_tokens=part_tokens)
        if reader == "none":
            answerer = None
        else:
            answerer = Reader.default(memory) if reader is None else Reader.load(reader)
        rag = partial(bench_rag, passages=passages)
        run = rag if task == "rag" else bench_conv
        results = run(memory, paths[0], names, quick, seed, answerer, questions, progress=progress)
        report = write_report(out, task, seed, results, git_rev=progress.revisions())
        progress.finish()
        return report
    else:
        cache = str(Path(out) / "cache")
        results = bench_reconstruct(parsed, model, paths, quick, seed, cache, Path(out))
    return write_report(out, task, seed, results)
