"""Training stages: an ``r3mem train`` run is a list of stages, each with its own steps,
learning rate, loss weights and segment length (DESIGN 2.2: autoencode first, then the whole
objective).

In TOML, one ``[[stage]]`` table per stage, in order::

    [[stage]]
    name = "autoencode-16"
    steps = 750
    segment_length = 16     # read the first 16 tokens of each segment: 2x into 8 slots
    bptt_segments = 1
    lambda_lm = 0.2
    lambda_doc = 0.0

Any field a stage leaves out takes the run's value (``batch_size``, ``lr``, ``min_lr_ratio``, the
objective's weights and lengths from its ``[r3mem]`` table; ``lambda_lm`` is 1); the run's
``warmup`` applies to the first stage, later stages start at their rate. A run without stages
is one stage of ``steps`` steps. Everything about a step (its stage, learning rate, batch) is
a function of the global step alone, so ``--resume`` continues exactly, across stage
boundaries too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import LM_READERS, R3MemConfig
from .common import warmup_cosine

SCHEDULES = ("cosine", "constant")
# The R3MemConfig fields a stage may change: what the objective weighs and reads, not what
# the adapters are (slots, form, ranks are fixed for the whole run).
OBJECTIVE_FIELDS = (
    "lambda_rec",
    "lambda_doc",
    "lambda_ent",
    "lambda_cyc",
    "lambda_ret",
    "bptt_segments",
    "doc_cue_length",
    "retrieval_cue_length",
    "lm_reader",
)
TERMS = ("lm", "rec", "doc", "ent", "cyc", "ret")


@dataclass
class Stage:
    """One stage of a run. ``segment_length`` is the stage's curriculum: each training segment
    is cut to its first ``segment_length`` tokens (at most the model's own segment length), so
    the memory holds ``segment_length / num_memory_tokens`` tokens a slot. ``chunk_fraction``
    of the rows of each batch are cut from the running text at fixed length instead of at the
    hierarchy's paragraph boundaries, as users stream it. ``rec_sampling`` of the decoder's
    input tokens in L_rec are its own greedy guesses instead of the text (scheduled sampling),
    so that it learns to recover from the mistakes greedy reconstruction makes. ``lm_distill``
    of L_lm is the KL divergence from the frozen base reading the window's text itself
    (context distillation): the memory is taught to stand for the text it replaced.
    ``lm_reader`` says who scores the text on the LM path from this stage on (the adapters
    keep the last stage's). ``min_segment_length`` (None: off) cuts each paragraph row to a
    length drawn evenly from ``min_segment_length`` to ``segment_length`` (shorter rows stay as
    they are), so the memory learns shorter entries (``Memory.segments(max_tokens=...)``)
    without forgetting whole ones; in a window the LM path and its teacher then read the same
    shortened segments."""

    name: str
    steps: int
    batch_size: int
    lr: float
    warmup: int
    min_lr_ratio: float
    schedule: str
    segment_length: int
    min_segment_length: int | None
    bptt_segments: int
    doc_cue_length: int
    retrieval_cue_length: int
    lambda_lm: float
    lambda_rec: float
    lambda_doc: float
    lambda_ent: float
    lambda_cyc: float
    lambda_ret: float
    chunk_fraction: float
    rec_sampling: float
    lm_distill: float
    lm_reader: str

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "segment_length", "bptt_segments"):
            _check(self, name, _whole(getattr(self, name)) and getattr(self, name) >= 1)
        if self.min_segment_length is not None:
            _check(
                self,
                "min_segment_length",
                _whole(self.min_segment_length)
                and 1 <= self.min_segment_length <= self.segment_length,
            )
        _check(self, "warmup", _whole(self.warmup) and self.warmup >= 0)
        _check(self, "doc_cue_length", _whole(self.doc_cue_length))
        _check(self, "lr", _number(self.lr) and self.lr > 0)
        _check(self, "min_lr_ratio", _number(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1)
        _check(
            self, "chunk_fraction", _number(self.chunk_fraction) and 0 <= self.chunk_fraction <= 1
        )
        _check(self, "rec_sampling", _number(self.rec_sampling) and 0 <= self.rec_sampling < 1)
        _check(self, "lm_distill", _number(self.lm_distill) and 0 <= self.lm_distill <= 1)
        for name in (f"lambda_{term}" for term in TERMS):
            _check(self, name, _number(getattr(self, name)) and getattr(self, name) >= 0)
        if self.lm_reader not in LM_READERS:
            raise ValueError(
                f"stage '{self.name}': lm_reader must be one of {', '.join(LM_READERS)}; "
                f"got {self.lm_reader!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"stage '{self.name}': schedule must be one of {', '.join(SCHEDULES)}; "
                f"got {self.schedule!r}"
            )
        if not any(getattr(self, f"lambda_{t}") for t in TERMS):
            raise ValueError(f"stage '{self.name}': every loss weight is 0, nothing to train")

    def weights(self) -> dict[str, float]:
        """The weight of each term of the objective, by its short name."""
        return {t: getattr(self, f"lambda_{t}") for t in TERMS}

    def learning_rate(self, local_step: int) -> float:
        """Linear warmup over ``warmup`` steps, then constant, or cosine on its way to
        ``lr * min_lr_ratio``, reached where the stage ends (as in ``r3mem train-base``)."""
        if self.schedule == "constant":
            return self.lr * min(1.0, (local_step + 1) / max(1, self.warmup))
        return self.lr * warmup_cosine(local_step, self.warmup, self.steps, self.min_lr_ratio)


def build_stages(
    tables: list[dict[str, Any]],
    model_config: R3MemConfig,
    run: dict[str, Any],
) -> list[Stage]:
    """Stages from the TOML ``[[stage]]`` tables (empty: one stage from the run's own fields).

    ``run`` holds the run-level defaults: ``steps``, ``batch_size``, ``lr``, ``warmup``,
    ``min_lr_ratio``.
    """
    defaults: dict[str, Any] = {
        "steps": run["steps"],
        "batch_size": run["batch_size"],
        "lr": run["lr"],
        "warmup": run["warmup"],
        "min_lr_ratio": run["min_lr_ratio"],
        "schedule": "cosine",
        "segment_length": model_config.segment_length,
        "min_segment_length": None,
        "lambda_lm": 1.0,
        "chunk_fraction": 0.0,
        "rec_sampling": 0.0,
        "lm_distill": 0.0,
        **{name: getattr(model_config, name) for name in OBJECTIVE_FIELDS},
    }
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError("stage must be a list of tables ([[stage]] in TOML)")
    known = {f.name for f in dataclasses.fields(Stage)}
    stages = []
    for index, table in enumerate(tables or [{}]):
        name = table.get("name", f"stage{index + 1}" if tables else "train")
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"stage '{name}': unknown key(s) {', '.join(unknown)}")
        if tables and "steps" not in table:
            raise ValueError(f"stage '{name}': steps is required")
        warmup = {"warmup": 0} if index else {}  # only the first stage warms up, by default
        stage = Stage(**{**defaults, **warmup, **table, "name": name})
        _check_reads(stage, model_config.segment_length)
        if any(other.name == name for other in stages):
            raise ValueError(f"stage '{name}': two stages have this name")
        stages.append(stage)
    return stages


def _check_reads(stage: Stage, width: int) -> None:
    """A stage reads what its terms need: a term that could not be computed is an error, not
    a term silently left out."""
    if stage.segment_length > width:
        raise ValueError(
            f"stage '{stage.name}': segment_length {stage.segment_length} exceeds "
            f"the model's {width}"
        )
    if stage.lm_distill > 0 and stage.lambda_lm == 0:
        raise ValueError(f"stage '{stage.name}': lm_distill is a part of L_lm: lambda_lm is 0")
    if stage.lambda_doc > 0 and stage.bptt_segments < 2:
        raise ValueError(f"stage '{stage.name}': lambda_doc needs bptt_segments >= 2")
    # a cue is part of its row, however short the row is cut
    shortest, bound = stage.segment_length, "segment_length"
    if stage.min_segment_length is not None:
        shortest, bound = stage.min_segment_length, "min_segment_length"
    if stage.lambda_doc > 0 and not 0 < stage.doc_cue_length < shortest:
        raise ValueError(f"stage '{stage.name}': lambda_doc needs 0 < doc_cue_length < {bound}")
    if stage.lambda_ret > 0 and not 0 < stage.retrieval_cue_length < shortest:
        raise ValueError(
            f"stage '{stage.name}': lambda_ret needs 0 < retrieval_cue_length < {bound}"
        )
    if stage.lambda_ret > 0 and stage.batch_size < 2:
        raise ValueError(f"stage '{stage.name}': lambda_ret needs batch_size >= 2 (negatives)")
    cut = stage.segment_length < width or stage.min_segment_length is not None
    if stage.lambda_ent > 0 and cut:
        raise ValueError(
            f"stage '{stage.name}': lambda_ent needs whole segments (segment_length {width}, "
            "no min_segment_length): the entity lists are the whole segments'"
        )


def objective(config: R3MemConfig) -> Stage:
    """DESIGN 2.5's whole objective, weighted as ``config`` says, as a one-step stage: what
    :func:`r3mem.training.train.window_loss` computes for a run without stages."""
    run = {"steps": 1, "batch_size": 2, "lr": 1.0, "warmup": 0, "min_lr_ratio": 0.0}
    return build_stages([], config, run)[0]


def stage_at(stages: list[Stage], step: int) -> tuple[int, int]:
    """(index of the stage that runs global ``step`` (0-based), step within that stage)."""
    for index, stage in enumerate(stages):
        if step < stage.steps:
            return index, step
        step -= stage.steps
    last = len(stages) - 1
    return last, stages[last].steps  # past the end: the last stage's final state


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(stage: Stage, name: str, ok: bool) -> None:
    if not ok:
        raise ValueError(f"stage '{stage.name}': invalid {name} = {getattr(stage, name)!r}")
