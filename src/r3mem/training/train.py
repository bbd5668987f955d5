"""``r3mem train``: R³Mem's adapters on a frozen base, with the objective of DESIGN 2.5, in
stages (:mod:`r3mem.training.stages`: autoencoding with a length curriculum, then the whole
objective).

Each sample is a window of ``bptt_segments`` consecutive segments of one document. Per
segment: the LM loss given the recurrent document memory (L_lm), and the segment's own
paragraph memory decoded back to its text (L_rec), to its entity list (L_ent) and
re-compressed from the soft reconstruction (L_cyc). After the window: the document memory
plus a cue recalls the rest of the first segment (L_doc). A term whose weight is 0 is not
computed, so the baselines of ``configs/bench/`` (LM-only, other memory modes) and the
autoencoding stage train through the same loop. Gradients are averaged across processes by
``accelerate``, so one process or many train the same model.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from ..checkpoint import (
    PACKAGED_ADAPTER,
    load_adapter_into,
    load_base,
    load_trainable,
    model_source,
)
from ..config import R3MemConfig
from ..data import ENTITY_LENGTH, Segments, load_segments
from ..eval import reconstruct_segments, reconstruction_scores
from ..losses import (
    IGNORE,
    cycle_loss,
    distillation_loss,
    document_recall_loss,
    entity_loss,
    retrieval_loss,
    token_loss,
)
from ..model import R3MemModel, recur
from ..recompute import enable_gradient_checkpointing
from ..state import MemoryState
from .batches import draw_batch, training_data
from .common import (
    Checkpoint,
    MetricsLog,
    RunConfig,
    check_finite,
    check_positive,
    check_types,
    make_accelerator,
    make_optimizer,
    run_steps,
)
from .stages import OBJECTIVE_FIELDS, Stage, build_stages, stage_at

# OUT/stages/NAME: the adapters as each stage left them, loadable like OUT/adapter.
STAGES = "stages"


@dataclass
class TrainConfig(RunConfig):
    """One adapter run; the ``[r3mem]`` table of the TOML file holds the R3MemConfig fields and
    each ``[[stage]]`` table one stage (none: one stage of ``steps`` steps)."""

    base_model: str = "runs/base-tiny-books"
    out_dir: str = "runs/r3mem-tiny-books"
    r3mem: dict[str, Any] = field(default_factory=dict)
    stage: list[dict[str, Any]] = field(default_factory=list)
    entity_length: int = ENTITY_LENGTH
    steps: int | None = None  # with stages: their sum (leave it out); without: default 2000
    lr: float = 2e-3
    eval_segments: int = 64
    gradient_checkpointing: bool = False
    # Adapters a fresh run starts from (a folder save_pretrained wrote: the shipped default's,
    # or a run's OUT/adapter): their weights and a new optimizer, to go on with other data or
    # terms. The [r3mem] table must describe the same adapters; a stage's fields may differ.
    init_adapter: str | None = None
    # A second source laid beside train_data, drawn as if it were mix_repeat times its size:
    # a few domain documents among the books (Wikipedia articles: benchmarks/results/NOTES.md).
    mix_data: str | None = None
    mix_repeat: int = 1

    def __post_init__(self) -> None:
        check_types(self)  # before the [r3mem] and [[stage]] tables are read
        if self.stage and self.steps is not None:
            total = sum(t.get("steps", 0) for t in self.stage if isinstance(t, dict))
            if self.steps != total:
                raise ValueError(
                    f"TrainConfig.steps={self.steps} but the stages sum to {total}: with "
                    "[[stage]] tables, steps is their sum (leave it out)"
                )
        if not self.stage and self.steps is None:
            self.steps = 2000
        self.model_config = R3MemConfig.from_dict(self.r3mem)
        run = {"steps": self.steps or 1, "batch_size": self.batch_size, "lr": self.lr}
        run |= {"warmup": self.warmup, "min_lr_ratio": self.min_lr_ratio}
        self.stages = build_stages(self.stage, self.model_config, run)
        self.steps = sum(stage.steps for stage in self.stages)
        super().__post_init__()
        check_positive(self, "entity_length", "eval_segments", "mix_repeat")
        if self.mix_repeat != 1 and not self.mix_data:
            raise ValueError("TrainConfig.mix_repeat repeats mix_data: name mix_data too")
        if self.mixed_precision == "fp16":
            raise ValueError(
                "mixed_precision = 'fp16' needs loss scaling, which r3mem train does not run "
                "(its optimizer steps on the adapters' own gradients); use 'bf16' (GPUs "
                "since Ampere, CPUs with bfloat16 instructions) or 'no'"
            )
        if self.gradient_checkpointing and self.model_config.memory_form == "kv":
            raise ValueError(
                "gradient_checkpointing needs memory_form = 'embedding' (the kv form keeps "
                "the memory in the KV cache, which checkpointed layers do not fill)"
            )


def window_loss(
    model: R3MemModel, batch: dict[str, torch.Tensor], stage: Stage
) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective on one batch of windows ``[B, S, L]``; returns (loss, each term's value)."""
    ids, mask = batch["ids"], batch["mask"]
    size, span = ids.shape[:2]
    weights = stage.weights()
    decoding = any(weights[term] > 0 for term in ("rec", "ent", "cyc", "ret"))
    carry = weights["lm"] > 0 or (weights["doc"] > 0 and span > 1)  # the document memory
    terms: dict[str, torch.Tensor] = {}

    def add(name: str, value: torch.Tensor) -> None:
        terms[name] = terms.get(name, 0.0) + value / span

    document = model.init_memory(size)
    segments = [(ids[:, t], mask[:, t]) for t in range(span)]
    teacher = base_reading(model, ids, mask) if weights["lm"] and stage.lm_distill else None
    steps = recur(model, document, segments, score=weights["lm"] > 0) if carry else None
    for t, (segment, segment_mask) in enumerate(segments):
        labels = segment.masked_fill(segment_mask == 0, IGNORE)
        paragraph = None
        if steps is not None:
            step = next(steps)
            if teacher is not None:
                distilled = distillation_loss(step.logits, teacher[:, t], segment_mask)
                add("lm", (1 - stage.lm_distill) * step.loss + stage.lm_distill * distilled)
            elif weights["lm"] > 0:
                add("lm", step.loss)
            document = step.memory
            if t == 0:  # the cell read the initial memory, as a paragraph write does
                paragraph = replace(document, level="paragraph")
        if not decoding:
            continue  # the LM-only baselines: no paragraph memory to write
        if paragraph is None:
            paragraph = model.write(model.init_memory(size, "paragraph"), segment, segment_mask)
        if weights["rec"] > 0 or weights["cyc"] > 0:
            read = segment
            if stage.rec_sampling > 0:
                swap = batch["sample_at"][:, t] < stage.rec_sampling
                read = own_guesses(model, paragraph, segment, swap)
            logits = model.decode_logits(paragraph, read)  # one pass for L_rec and L_cyc
            if weights["rec"] > 0:
                add("rec", token_loss(logits, labels))
            if weights["cyc"] > 0:
                add("cyc", cycle_loss(model, paragraph, logits, segment_mask))
        if weights["ret"] > 0:
            cue, cue_mask = cut_cues(segment, segment_mask, batch["cue_at"][:, t], stage)
            cues = model.write(model.init_memory(size, "paragraph"), cue, cue_mask)
            add("ret", retrieval_loss(cues, paragraph, model.config.retrieval_temperature))
        entity_mask = batch["entity_mask"][:, t]
        if weights["ent"] > 0 and entity_mask.any():  # rows cut from running text have none
            add("ent", entity_loss(model, paragraph, batch["entities"][:, t], entity_mask))
    cue = stage.doc_cue_length
    if weights["doc"] > 0 and span > 1 and 0 < cue < ids.shape[2]:
        terms["doc"] = document_recall_loss(model, document, ids[:, 0], cue, mask[:, 0])
    loss = sum(weights[name] * value for name, value in terms.items())
    return loss, {name: float(value.detach()) for name, value in terms.items()}


@torch.no_grad()
def base_reading(model: R3MemModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The frozen base's logits ``[B, S, L, V]`` over each window ``[B, S, L]`` read as plain
    text, segment after segment (padding skipped): L_lm's teacher, which sees as raw text what
    the model must carry in its memory."""
    size, span, length = ids.shape
    flat_mask = mask.reshape(size, span * length)
    positions = (flat_mask.cumsum(-1) - 1).clamp(min=0)
    with model.bare():
        logits = model.base(
            input_ids=ids.reshape(size, span * length),
            attention_mask=flat_mask,
            position_ids=positions,
        ).logits
    return logits.view(size, span, length, -1)


@torch.no_grad()
def own_guesses(
    model: R3MemModel, paragraph: MemoryState, segment: torch.Tensor, swap: torch.Tensor
) -> torch.Tensor:
    """``segment`` with the ``swap`` positions replaced by the decoder's own greedy guess
    there (teacher-forced): scheduled sampling in one parallel pass. Greedy reconstruction
    reads its own mistakes; trained on the text alone, the default decoded 0.96 of the tokens
    right teacher-forced and 0.83 greedily."""
    guesses = model.decode_logits(paragraph, segment).argmax(-1)
    return torch.where(swap, guesses, segment)


def cut_cues(
    segment: torch.Tensor, mask: torch.Tensor, at: torch.Tensor, stage: Stage
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_ret's cues ``[B, c]`` and their mask: from each row, ``retrieval_cue_length`` tokens
    (fewer when the row is shorter) starting at fraction ``at`` of where a cue can start."""
    real = mask.sum(-1).clamp(min=1)
    length = real.clamp(max=stage.retrieval_cue_length)
    start = (at * (real - length + 1)).long().clamp(max=real - length)
    offsets = torch.arange(int(length.max()), device=segment.device)
    positions = (start[:, None] + offsets).clamp(max=segment.shape[1] - 1)
    cue_mask = (offsets[None] < length[:, None]).to(mask.dtype)
    return segment.gather(1, positions), cue_mask


def evaluate(model: R3MemModel, segments: Segments, count: int, length: int) -> dict[str, float]:
    """Greedy reconstruction of fixed validation segments from their paragraph memories, at
    the model's segment length and, when a stage reads shorter segments, at that length."""
    model.eval()
    rows = np.linspace(0, len(segments) - 1, num=min(count, len(segments))).astype(np.int64)
    batch = segments.batch(rows)
    record = {}
    for name, cut in (("rec", batch["ids"].shape[1]), ("rec_stage", length)):
        if name == "rec_stage" and cut >= batch["ids"].shape[1]:
            break
        ids, mask = batch["ids"][:, :cut], batch["mask"][:, :cut]
        scores = reconstruction_scores(reconstruct_segments(model, ids, mask), ids, mask)
        record |= {f"{name}_token_acc": scores["token_acc"], f"{name}_exact": scores["exact_match"]}
    model.train()
    return record


def _stage(stages: list[Stage], step: int) -> tuple[Stage, int]:
    """The stage that runs global step ``step`` (0-based) and the step within it."""
    index, local = stage_at(stages, step)
    return stages[index], local


def _check_positions(state: dict, config: TrainConfig, directory: Path) -> None:
    """A run checkpointed before ``write_positions`` existed placed its write tokens after the
    text; resuming it must say which it wants rather than change silently."""
    if "r3mem_config" not in state and "write_positions" not in config.r3mem:
        raise ValueError(
            f"{directory}: this run was checkpointed before write_positions existed (its write "
            'tokens followed the text): set write_positions = "after_text" in [r3mem] to resume '
            'it as it was trained, or "fixed" to change it from here'
        )


def train(config: TrainConfig, resume: bool = False, stop_after: int | None = None) -> R3MemModel:
    """Train (or resume) the adapters; writes ``out_dir/adapter`` (PEFT layout) at the end and
    returns the trained model."""
    out = Path(config.out_dir)
    accelerator = make_accelerator(config.mixed_precision)
    tokenizer = AutoTokenizer.from_pretrained(model_source(config.base_model))
    model_config, stages = config.model_config, config.stages
    segment_length = model_config.segment_length
    train_set, corpus = training_data(config, tokenizer)
    valid_set = load_segments(
        config.valid_data, tokenizer, segment_length, config.entity_length, config.cache_dir
    )
    # float32 whatever the stored dtype (the shipped base is stored in float16, which a GPU
    # would load as is): the adapters take the base's dtype, and Adam's updates vanish or
    # overflow in half precision (NaN from the second step on an H200); mixed_precision
    # decides the compute dtype.
    base = load_base(config.base_model, dtype=torch.float32)
    torch.manual_seed(config.seed)
    model = R3MemModel.from_base(base, model_config).to(accelerator.device)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    params = list(model.trainable_parameters().values())
    optimizer = make_optimizer(params, config.lr, config.weight_decay)
    checkpoint = Checkpoint(out / "checkpoint")
    start = (0, 0.0, 0)  # step, seconds, tokens
    if resume and checkpoint.exists():
        weights, optimizer_state, state = checkpoint.load()
        _check_positions(state, config, checkpoint.directory)
        load_trainable(model.trainable_parameters(), weights, checkpoint.directory)
        optimizer.load_state_dict(optimizer_state)
        start = (state["step"], state["elapsed"], state.get("tokens"))
    elif config.init_adapter:  # a fresh run from saved adapters; a resumed one has its own
        load_adapter_into(model, config.init_adapter, OBJECTIVE_FIELDS)
    main = accelerator.is_main_process
    log = (
        MetricsLog(out / "metrics.jsonl", resume_step=start[0] if resume else None)
        if main
        else None
    )
    if start[2] is None:  # checkpointed before it counted tokens: the log's last count
        rows = log.read() if log is not None else []
        start = (start[0], start[1], rows[-1]["tokens"] if rows else 0)
    rank, world = accelerator.process_index, accelerator.num_processes
    taught = any(stage.lambda_rec > 0 for stage in stages)  # else nothing learnt to reconstruct

    def train_step(step: int) -> tuple[dict, int]:
        started = time.perf_counter()
        stage, local = _stage(stages, step)
        model.config.lm_reader = stage.lm_reader  # a stage may switch the LM path's reader
        for group in optimizer.param_groups:
            group["lr"] = stage.learning_rate(local)
        optimizer.zero_grad()
        terms: dict[str, float] = {}
        read = torch.zeros((), dtype=torch.long)
        for micro in range(config.grad_accum):
            # Batches depend only on (seed, step, micro, rank): a resumed run sees the same ones.
            batch = draw_batch(train_set, corpus, stage, [config.seed, step, micro, rank])
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            read += batch["mask"].sum().cpu()
            with accelerator.autocast():
                loss, values = window_loss(model, batch, stage)
            accelerator.backward(loss / config.grad_accum)
            for name, value in values.items():
                terms[name] = terms.get(name, 0.0) + value / config.grad_accum
        for param in params:  # average across processes: all stay identical
            if param.grad is not None and world > 1:
                param.grad = accelerator.reduce(param.grad, reduction="mean")
        norm = torch.nn.utils.clip_grad_norm_(params, config.clip)
        check_finite(norm, f"step {step + 1} (stage '{stage.name}')", terms)
        optimizer.step()
        read = int(accelerator.reduce(read.to(accelerator.device), reduction="sum"))
        fields = {"stage": stage.name, **{f"loss_{k}": v for k, v in terms.items()}}
        fields |= {"lr": optimizer.param_groups[0]["lr"]}
        fields["step_tokens_per_s"] = read / (time.perf_counter() - started)
        return fields, read

    def stage_end(step: int) -> bool:  # ``step`` counts the steps done
        stage, local = _stage(stages, step - 1)
        return local + 1 == stage.steps

    def evaluated(step: int) -> dict:
        if not taught or not (step % config.eval_every == 0 or stage_end(step)):
            return {}
        length = _stage(stages, step - 1)[0].segment_length
        return evaluate(model, valid_set, config.eval_segments, length)

    def save(step: int, elapsed: float, tokens: int) -> None:
        state = {"step": step, "elapsed": elapsed, "tokens": tokens, "config": asdict(config)}
        state["r3mem_config"] = model_config.to_dict()  # as resolved, defaults included
        checkpoint.save(model.trainable_parameters(), optimizer, state)
        if stage_end(step):  # a later stage may cost what this one taught: keep its adapters
            model.save_pretrained(out / STAGES / _stage(stages, step - 1)[0].name)

    last = config.steps if stop_after is None else min(stop_after, config.steps)
    run_steps(
        start=start,
        last=last,
        total=config.steps,
        train_step=train_step,
        evaluate=evaluated,
        save=save,
        saving=lambda step: step % config.save_every == 0 or stage_end(step),
        log=log,
        desc="train",
        show=("loss_lm", "loss_rec"),
    )
    model.config.lm_reader = _stage(stages, max(last - 1, 0))[0].lm_reader  # the last one run
    if main:
        model.save_pretrained(out / PACKAGED_ADAPTER)
    accelerator.wait_for_everyone()
    return model
