"""What a training step reads: the run's segments and token stream (``train_data`` with
``mix_data`` beside it), and each step's batch, a function of its draw alone so that
``--resume`` continues exactly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from ..data import Corpus, Segments, load_corpus, load_segments, mix_corpora, mix_segments
from .stages import Stage

if TYPE_CHECKING:
    from .train import TrainConfig


def training_data(
    config: TrainConfig, tokenizer: PreTrainedTokenizerFast
) -> tuple[Segments, Corpus | None]:
    """The training segments, and the token stream chunked rows draw from (None if no stage
    chunks), with ``mix_data`` laid beside ``train_data``."""
    segment_length = config.model_config.segment_length

    def segments(source: str) -> Segments:
        return load_segments(
            source, tokenizer, segment_length, config.entity_length, config.cache_dir
        )

    train_set = segments(config.train_data)
    if config.mix_data:
        train_set = mix_segments(train_set, segments(config.mix_data), config.mix_repeat)
    for stage in config.stages:
        if len(train_set.window_starts(stage.bptt_segments)) == 0:
            raise ValueError(
                f"{config.train_data}: no document has {stage.bptt_segments} segments "
                f"(stage '{stage.name}')"
            )
    if not any(stage.chunk_fraction > 0 for stage in config.stages):
        return train_set, None
    corpus = load_corpus(config.train_data, tokenizer, config.cache_dir)
    if config.mix_data:
        mix = load_corpus(config.mix_data, tokenizer, config.cache_dir)
        corpus = mix_corpora(corpus, mix, config.mix_repeat)
    return train_set, corpus


def draw_batch(
    segments: Segments,
    corpus: Corpus | None,
    stage: Stage,
    draw: list[int],
) -> dict[str, torch.Tensor]:
    """The stage's ``batch_size`` windows ``[B, S, L]``; they depend only on ``draw``.

    Most rows are ``bptt_segments`` consecutive segments of one document, each cut to the
    stage's ``segment_length``; ``chunk_fraction`` of them are cut at fixed length from the
    running text (entity lists empty). With ``min_segment_length``, each segment of the
    document rows is cut to a length drawn evenly from ``min_segment_length`` to
    ``segment_length`` (segments already shorter stay as they are)."""
    size, span, length = stage.batch_size, stage.bptt_segments, stage.segment_length
    chunks = round(stage.chunk_fraction * size)
    starts = segments.window_starts(span)
    rng = np.random.default_rng(draw)
    rows = rng.choice(starts, size=size - chunks)[:, None] + np.arange(span)
    # where L_ret's cues start, and which decoder inputs rec_sampling swaps
    cue_at = torch.from_numpy(rng.random((size, span), dtype=np.float32))
    sample_at = torch.from_numpy(rng.random((size, span, length), dtype=np.float32))
    batch = segments.batch(rows)
    batch["ids"], batch["mask"] = batch["ids"][..., :length], batch["mask"][..., :length]
    if stage.min_segment_length is not None:  # drawn last: runs without it draw as before
        cut = rng.integers(stage.min_segment_length, length + 1, size=(size - chunks, span, 1))
        batch["mask"] = batch["mask"] * torch.from_numpy(np.arange(length) < cut)
    if chunks:
        text = corpus.windows(span * length, chunks, draw[0], [*draw[1:], 1])
        empty = torch.zeros(chunks, span, batch["entities"].shape[-1], dtype=torch.long)
        parts = {
            "ids": text.view(chunks, span, length),
            "mask": torch.ones(chunks, span, length, dtype=torch.long),
            "entities": empty,
            "entity_mask": empty,
        }
        batch = {key: torch.cat([batch[key], parts[key]]) for key in batch}
    return batch | {"cue_at": cue_at, "sample_at": sample_at}
