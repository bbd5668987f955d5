"""``r3mem demo``: write a text into memory and show what comes back, offline, in under a minute."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from .assets import SAMPLE_TEXT, asset_path
from .eval import book_segments, reconstruct_segments, reconstruction_scores, stream_perplexity
from .memory import Memory
from .model import one_row, recur
from .segment import pad_rows
from .sources import read_texts

WIDTH = 48


def _side_by_side(left: str, right: str) -> str:
    a, b = textwrap.wrap(left, WIDTH), textwrap.wrap(right, WIDTH)
    rows = max(len(a), len(b))
    a, b = a + [""] * (rows - len(a)), b + [""] * (rows - len(b))
    return "\n".join(f"  {x:<{WIDTH}} | {y}" for x, y in zip(a, b, strict=True))


@torch.no_grad()
def run_demo(
    model: str | Path | None = None, text: str | Path | None = None, show: Callable = print
) -> dict[str, float]:
    """Run the demo on ``text`` (default: the packaged public-domain sample) with ``model``
    (default: the shipped model); returns the figures it printed."""
    started = time.perf_counter()
    memory = Memory.load(model)
    tokenizer, r3 = memory.tokenizer, memory.model
    source = Path(text) if text is not None else asset_path(SAMPLE_TEXT)
    (_, document), *_ = read_texts(source)
    segments = book_segments(memory, document)  # paragraphs of whole segments, as trained
    m, length = r3.config.num_memory_tokens, r3.config.segment_length
    tokens = sum(map(len, segments))
    show(f"text: {source.name}, {len(document.encode()):,} bytes of UTF-8, {tokens:,} tokens")

    state = r3.init_memory(1)
    stream = one_row(segments, r3.device)
    for step in tqdm(recur(r3, state, stream), total=len(stream), desc="writing", unit="segment"):
        state = step.memory
    show(
        f"document memory: {m} slots x {state.memory.shape[-1]} values = {state.nbytes():,} bytes "
        f"({r3.config.memory_form} form), after absorbing {int(state.tokens_seen[0]):,} tokens"
    )

    rows = [s.tolist() for s in segments if len(s) >= length // 2][:3]  # the longer paragraphs
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch, mask = pad_rows(rows, pad, width=length)
    restored = reconstruct_segments(r3, batch, mask)
    show(f"\nparagraph reconstruction ({length} tokens -> {m} memory slots each):")
    for i, row in enumerate(rows):
        one = reconstruction_scores(restored[i : i + 1], batch[i : i + 1], mask[i : i + 1])
        show(f"\n[{i + 1}] token accuracy {one['token_acc']:.1%}")
        show(_side_by_side("ORIGINAL", "FROM MEMORY"))
        show(_side_by_side(tokenizer.decode(row), tokenizer.decode(restored[i, : len(row)])))

    scores = reconstruction_scores(restored, batch, mask)
    with_memory = stream_perplexity(r3, [segments], use_memory=True)
    without = stream_perplexity(r3, [segments], use_memory=False)
    base = stream_perplexity(r3, [segments], use_memory=False, adapters=False)
    show(
        f"\nperplexity over the text ({with_memory['tokens_scored']:,} tokens scored): "
        f"{with_memory['ppl']:.2f} with memory, {without['ppl']:.2f} with the same adapters "
        f"and no memory, {base['ppl']:.2f} with the frozen base model alone"
    )
    seconds = time.perf_counter() - started
    show(f"done in {seconds:.1f} s")
    return {
        "token_acc": scores["token_acc"],
        "ppl_memory": with_memory["ppl"],
        "ppl_no_memory": without["ppl"],
        "ppl_base": base["ppl"],
        "memory_bytes": state.nbytes(),
        "seconds": seconds,
    }
