"""What memory costs: write and reconstruct throughput, bytes per 1k history tokens, peak RSS,
and the time to read one more segment as the history grows, beside full attention over the
same history (a KV cache of every past token) until that becomes impractical."""

from __future__ import annotations

import copy
import resource
import sys
import time

import torch
from tqdm import tqdm

from ..bank import entry_nbytes
from ..generation import CACHE
from ..model import R3MemModel
from ..segment import entry_length

# Full attention stops being measured once its KV cache would pass this size.
FULL_ATTENTION_CACHE_LIMIT = 2 * 2**30
# The history is written this many segments per call.
WRITE_SEGMENTS = 256


def _timed(fn, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls: the least disturbed by other work on the machine."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


@torch.no_grad()
def throughput(model: R3MemModel, tokens: int, seed: int) -> dict[str, float]:
    """Write ``tokens`` random tokens segment by segment; reconstruct 8 paragraphs."""
    generator = torch.Generator().manual_seed(seed)
    vocab, length = model.spec["vocab_size"], model.config.segment_length
    ids = torch.randint(0, vocab, (1, tokens), generator=generator).to(model.device)
    state = model.init_memory(1)
    write_s = _timed(lambda: model.write(state, ids))
    paragraphs = model.write(model.init_memory(8, "paragraph"), ids[:, :length].expand(8, -1))
    read_s = _timed(lambda: model.reconstruct(paragraphs, max_new_tokens=length))
    return {"write_tokens_per_s": tokens / write_s, "reconstruct_tokens_per_s": 8 * length / read_s}


@torch.no_grad()
def memory_bytes_per_1k(model: R3MemModel, history: int, entry_dtype: str) -> dict[str, float]:
    """Document memory is constant; the paragraph bank holds one entry per entry of a text
    (``entry_length``, in ``entry_dtype``); full attention keeps every past token's keys and
    values."""
    memory = model.init_memory(1)  # the document memory, in the model's dtype
    size, entry = memory.nbytes(), entry_nbytes(memory.memory, entry_dtype)
    with model.bare():
        cache = _cache_bytes_per_token(model.base, model.device)
    return {
        "document_bytes_per_1k_tokens": size / (history / 1000),
        "bank_bytes_per_1k_tokens": entry * 1000 / entry_length(None, model.config.segment_length),
        "full_attention_bytes_per_1k_tokens": cache * 1000,
    }


@torch.no_grad()
def time_per_token(
    model: R3MemModel, histories: list[int], seed: int, full_attention: bool
) -> list[dict]:
    """Seconds per token to read one more segment after ``h`` tokens of history.

    R³Mem reads a segment against its fixed-size memory; full attention (the bare base model)
    reads it against a KV cache of all ``h`` past tokens, built chunk by chunk.
    """
    generator = torch.Generator().manual_seed(seed)
    vocab, length = model.spec["vocab_size"], model.config.segment_length
    segment = torch.randint(0, vocab, (1, length), generator=generator).to(model.device)
    rows = []
    state = model.init_memory(1)
    written = 0
    progress = tqdm(total=histories[-1], desc="cost: history", unit="tok", unit_scale=True)
    for history in histories:
        while written < history:  # in pieces, so the bar moves through a million tokens
            n = min(WRITE_SEGMENTS * length, history - written)
            chunk = torch.randint(0, vocab, (1, n), generator=generator)
            state = model.write(state, chunk.to(model.device))
            written += n
            progress.update(n)
        r3mem = _timed(lambda memory=state: model(input_ids=segment, memory=memory), 5) / length
        rows.append({"method": "r3mem", "history_tokens": history, "s_per_token": r3mem})
        full = _full_attention(model, segment, history, generator) if full_attention else None
        if full is not None:
            rows.append(
                {"method": "full_attention", "history_tokens": history, "s_per_token": full}
            )
    progress.close()
    return rows


def _cache_bytes_per_token(base: torch.nn.Module, device: torch.device) -> int:
    """Bytes one token adds to the base model's KV cache, read off one cached step."""
    out = base(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device), use_cache=True)
    layers = getattr(out, CACHE).layers
    return sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values))


def _full_attention(
    model: R3MemModel, segment: torch.Tensor, history: int, generator: torch.Generator
) -> float | None:
    """Per-token time of the bare base model reading ``segment`` after a cache of ``history``
    tokens, or None when that cache would pass FULL_ATTENTION_CACHE_LIMIT."""
    base, step = model.base, 1024
    with model.bare():
        if _cache_bytes_per_token(base, model.device) * history > FULL_ATTENTION_CACHE_LIMIT:
            return None
        past = None
        for start in range(0, history, step):
            n = min(step, history - start)
            ids = torch.randint(0, model.spec["vocab_size"], (1, n), generator=generator)
            out = base(input_ids=ids.to(model.device), use_cache=True, **{CACHE: past})
            past = getattr(out, CACHE)
        copies = iter([copy.deepcopy(past) for _ in range(5)])  # a read appends to its cache
        seconds = _timed(lambda: base(input_ids=segment, **{CACHE: next(copies)}), 5)
    return seconds / segment.shape[1]
