"""``r3mem train``: R³Mem's adapters on a frozen base, with the full objective of DESIGN 2.5.

Each sample is a window of ``bptt_segments`` consecutive segments of one document. Per
segment: the LM loss given the recurrent document memory (L_lm), and the segment's own
paragraph memory decoded back to its text (L_rec), to its entity list (L_ent) and
re-compressed from the soft reconstruction (L_cyc). After the window: the document memory
plus a cue recalls the rest of the first segment (L_doc). A term whose λ is 0 is not computed,
so the baselines of ``configs/bench/`` (LM-only, other memory modes) train through the same
loop. Gradients are averaged across processes by ``accelerate``, so one process or many train
the same model.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from ..bench.reconstruct import reconstruct_segments, reconstruction_scores
from ..checkpoint import load_base, load_trainable
from ..checkpointing import enable_gradient_checkpointing
from ..config import R3MemConfig
from ..data import Segments, load_segments
from ..losses import cycle_loss, document_recall_loss, entity_loss, token_loss
from ..model import R3MemModel
from .common import (
    Checkpoint,
    MetricsLog,
    RunConfig,
    check_positive,
    make_accelerator,
    make_optimizer,
    make_schedule,
)


@dataclass
class TrainConfig(RunConfig):
    """One adapter run; the ``[r3mem]`` table of the TOML file holds the R3MemConfig fields."""

    base_model: str = "runs/base-tiny-books"
    out_dir: str = "runs/r3mem-tiny-books"
    r3mem: dict[str, Any] = field(default_factory=dict)
    entity_length: int = 24
    steps: int = 2000
    lr: float = 2e-3
    eval_segments: int = 64
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.model_config = R3MemConfig.from_dict(self.r3mem)
        check_positive(self, "entity_length", "eval_segments")
        if self.gradient_checkpointing and self.model_config.memory_form == "kv":
            raise ValueError(
                "gradient_checkpointing needs memory_form = 'embedding' (the kv form keeps "
                "the memory in the KV cache, which checkpointed layers do not fill)"
            )


def window_loss(
    model: R3MemModel, batch: dict[str, torch.Tensor], config: R3MemConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective on one batch of windows ``[B, S, L]``; returns (loss, each term's value)."""
    ids, mask = batch["ids"], batch["mask"]
    size, span = ids.shape[:2]
    terms: dict[str, torch.Tensor] = {}

    def add(name: str, value: torch.Tensor) -> None:
        terms[name] = terms.get(name, 0.0) + value / span

    document = model.init_memory(size)
    for t in range(span):
        segment, segment_mask = ids[:, t], mask[:, t]
        labels = segment.masked_fill(segment_mask == 0, -100)
        out = model(input_ids=segment, memory=document, labels=labels, attention_mask=segment_mask)
        add("lm", out.loss)
        document = out.memory
        if not (config.lambda_rec or config.lambda_ent or config.lambda_cyc):
            continue  # the LM-only baselines: no paragraph memory to write
        paragraph = model.write(model.init_memory(size, "paragraph"), segment, segment_mask)
        if config.lambda_rec > 0 or config.lambda_cyc > 0:
            logits = model.decode_logits(paragraph, segment)  # one pass for L_rec and L_cyc
            if config.lambda_rec > 0:
                add("rec", token_loss(logits, labels))
            if config.lambda_cyc > 0:
                add("cyc", cycle_loss(model, paragraph, logits, segment_mask))
        if config.lambda_ent > 0:
            add(
                "ent",
                entity_loss(model, paragraph, batch["entities"][:, t], batch["entity_mask"][:, t]),
            )
    cue = config.doc_cue_length
    if config.lambda_doc > 0 and span > 1 and 0 < cue < ids.shape[2]:
        terms["doc"] = document_recall_loss(model, document, ids[:, 0], cue, mask[:, 0])
    weights = {"lm": 1.0, "rec": config.lambda_rec, "ent": config.lambda_ent}
    weights |= {"cyc": config.lambda_cyc, "doc": config.lambda_doc}
    loss = sum(weights[name] * value for name, value in terms.items())
    return loss, {name: float(value.detach()) for name, value in terms.items()}


def evaluate(model: R3MemModel, segments: Segments, count: int) -> dict[str, float]:
    """Greedy reconstruction of fixed validation segments from their paragraph memories."""
    model.eval()
    rows = np.linspace(0, len(segments) - 1, num=min(count, len(segments))).astype(np.int64)
    batch = segments.batch(rows)
    restored = reconstruct_segments(model, batch["ids"], batch["mask"])
    scores = reconstruction_scores(restored, batch["ids"], batch["mask"])
    model.train()
    return {"rec_token_acc": scores["token_acc"], "rec_exact": scores["exact_match"]}


def train(config: TrainConfig, resume: bool = False, stop_after: int | None = None) -> R3MemModel:
    """Train (or resume) the adapters; writes ``out_dir/adapter`` (PEFT layout) at the end and
    returns the trained model."""
    out = Path(config.out_dir)
    accelerator = make_accelerator(config.mixed_precision)
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    model_config = config.model_config
    segment_length = model_config.segment_length
    train_set = load_segments(
        config.train_data, tokenizer, segment_length, config.entity_length, config.cache_dir
    )
    valid_set = load_segments(
        config.valid_data, tokenizer, segment_length, config.entity_length, config.cache_dir
    )
    starts = train_set.window_starts(model_config.bptt_segments)
    if len(starts) == 0:
        raise ValueError(
            f"{config.train_data}: no document has {model_config.bptt_segments} segments"
        )

    base = load_base(config.base_model)
    torch.manual_seed(config.seed)
    model = R3MemModel.from_base(base, model_config).to(accelerator.device)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    params = list(model.trainable_parameters().values())
    optimizer = make_optimizer(params, config.lr, config.weight_decay)
    checkpoint = Checkpoint(out / "checkpoint")
    step, elapsed = 0, 0.0
    if resume and checkpoint.exists():
        weights, optimizer_state, state = checkpoint.load()
        load_trainable(model, weights, checkpoint.directory)
        optimizer.load_state_dict(optimizer_state)
        step, elapsed = state["step"], state["elapsed"]
    schedule = make_schedule(optimizer, config, step)
    main = accelerator.is_main_process
    log = MetricsLog(out / "metrics.jsonl", resume_step=step if resume else None) if main else None
    span, rank, world = (
        model_config.bptt_segments,
        accelerator.process_index,
        accelerator.num_processes,
    )
    tokens_per_step = config.batch_size * config.grad_accum * span * segment_length * world
    last = config.steps if stop_after is None else min(stop_after, config.steps)
    progress = tqdm(total=config.steps, initial=step, desc="train", disable=not main)
    while step < last:
        started = time.perf_counter()
        optimizer.zero_grad()
        terms: dict[str, float] = {}
        for micro in range(config.grad_accum):
            # Batches depend only on (seed, step, micro, rank): a resumed run sees the same ones.
            rng = np.random.default_rng([config.seed, step, micro, rank])
            rows = rng.choice(starts, size=config.batch_size)[:, None] + np.arange(span)
            batch = {k: v.to(accelerator.device) for k, v in train_set.batch(rows).items()}
            with accelerator.autocast():
                loss, values = window_loss(model, batch, model_config)
            accelerator.backward(loss / config.grad_accum)
            for name, value in values.items():
                terms[name] = terms.get(name, 0.0) + value / config.grad_accum
        for param in params:  # average across processes: all stay identical
            if param.grad is not None and world > 1:
                param.grad = accelerator.reduce(param.grad, reduction="mean")
        torch.nn.utils.clip_grad_norm_(params, config.clip)
        optimizer.step()
        schedule.step()
        step += 1
        elapsed += time.perf_counter() - started
        record = {"step": step, **{f"loss_{k}": v for k, v in terms.items()}}
        record |= {"lr": schedule.get_last_lr()[0], "tokens": step * tokens_per_step}
        record["tokens_per_s"] = record["tokens"] / elapsed
        evaluating = step % config.eval_every == 0 or step == config.steps
        if evaluating and model_config.lambda_rec > 0:  # nothing else was taught to reconstruct
            record |= evaluate(model, valid_set, config.eval_segments)
        progress.update(1)
        progress.set_postfix(lm=f"{terms.get('lm', 0):.3f}", rec=f"{terms.get('rec', 0):.3f}")
        if log is not None:
            log.write(record)
            if step % config.save_every == 0 or step == last:
                state = {"step": step, "elapsed": elapsed, "config": asdict(config)}
                checkpoint.save(model.trainable_parameters(), optimizer, state)
    progress.close()
    if main:
        model.save_pretrained(out / "adapter")
    accelerator.wait_for_everyone()
    return model
