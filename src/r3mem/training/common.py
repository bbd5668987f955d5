"""What every training run shares: its config file, optimizer and schedule, checkpoints that
resume exactly, and a JSONL metrics log."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from tqdm import tqdm

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


def load_config(cls: type[T], path: str | Path | None, overrides: dict[str, Any]) -> T:
    """A config dataclass from a TOML file plus overrides; an unknown key is an error that names
    the file and the key, and the dataclass validates the values."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid TOML ({err})") from err
    data.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path or 'config'}: unknown key(s) {', '.join(unknown)}")
    return cls(**data)


@dataclass
class RunConfig:
    """The fields every training run has; each command's config adds its own."""

    train_data: str = "../shared/data/books/train"
    valid_data: str = "../shared/data/books/validation"
    out_dir: str = "runs/run"
    cache_dir: str = "runs/cache"
    batch_size: int = 8
    grad_accum: int = 1
    steps: int = 1000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.0
    clip: float = 1.0
    seed: int = 0
    save_every: int = 100
    eval_every: int = 250
    mixed_precision: str = "no"  # "bf16" on hardware that has it

    def __post_init__(self) -> None:
        check_types(self)
        check_positive(self, "batch_size", "grad_accum", "steps", "lr", "warmup", "save_every")
        check_positive(self, "eval_every", "clip")
        check_choice(self, "mixed_precision", ("no", "bf16", "fp16"))
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"{type(self).__name__}.min_lr_ratio must be in [0, 1]")
        if self.weight_decay < 0 or self.seed < 0:
            raise ValueError(f"{type(self).__name__}: weight_decay and seed must be >= 0")


def make_accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator for one process or many. Several processes on a machine without a GPU
    (``accelerate launch --multi_gpu`` there) must be told to use the CPU to join up (gloo)."""
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        mixed_precision=mixed_precision, cpu=several and not torch.cuda.is_available()
    )
    if (
        mixed_precision == "bf16"
        and accelerator.device.type == "cpu"
        and cpu_has_native_bf16() is False
    ):
        warnings.warn(
            "mixed_precision = 'bf16' on a CPU without bfloat16 instructions (no avx512_bf16 "
            "or amx_bf16): autocast emulates them, and a step runs 20-30x slower than in "
            "float32 (benchmarks/results/train_speed_bf16); set mixed_precision = 'no'",
            stacklevel=2,
        )
    return accelerator


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes in bfloat16 natively (x86 avx512_bf16 / amx_bf16, Arm bf16);
    None where the CPU's flags cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def check_types(config: Any) -> None:
    """Every field of a config dataclass holds a value of its declared type (an int field
    no float, a table no number): what a TOML file gives is checked before it is used."""
    for name, hint in typing.get_type_hints(type(config)).items():
        if name not in {f.name for f in dataclasses.fields(config)}:
            continue
        value = getattr(config, name)
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kinds = tuple(typing.get_origin(kind) or kind for kind in allowed)
        if float in kinds:
            kinds += (int,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            wanted = " or ".join(getattr(kind, "__name__", str(kind)) for kind in allowed)
            raise ValueError(f"{type(config).__name__}.{name} must be {wanted}, got {value!r}")


def check_positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{type(config).__name__}.{name} must be > 0, got {value!r}")


def check_choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ValueError(
            f"{type(config).__name__}.{name} must be one of {', '.join(choices)}; got {value!r}"
        )


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """Learning-rate multiplier: linear warmup, then cosine down to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(
    params: list[torch.nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW with no decay on vectors (norms, biases, embeddings of one row)."""
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def make_schedule(
    optimizer: torch.optim.Optimizer, config: RunConfig, step: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup + cosine over ``config.steps``, positioned at ``step`` (0 for a fresh run)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(s, config.warmup, config.steps, config.min_lr_ratio),
        last_epoch=step - 1,
    )


StepFn = Callable[[int], tuple[dict[str, Any], int]]


def check_finite(norm: torch.Tensor, where: str, losses: dict[str, float]) -> None:
    """Stop a run whose gradient norm is not finite, before the optimizer step spoils the
    weights; the norm is the same on every process, since the gradients are averaged."""
    if not torch.isfinite(norm):
        raise FloatingPointError(
            f"{where}: non-finite gradients (losses {losses}); stopped before updating, the "
            'last checkpoint is intact. Try a lower lr, or mixed_precision = "no" to rule out '
            "the compute dtype"
        )


def run_steps(
    *,
    start: tuple[int, float, int],
    last: int,
    total: int,
    train_step: StepFn,
    evaluate: Callable[[int], dict[str, Any]],
    save: Callable[[int, float, int], None],
    saving: Callable[[int], bool],
    log: MetricsLog | None,
    desc: str,
    show: tuple[str, ...],
) -> None:
    """The loop every training run shares: from ``start`` (step, seconds, tokens so far, as a
    checkpoint left them) to step ``last`` of ``total``. ``train_step(step)`` runs one
    optimizer step and returns its record fields and how many tokens it read; ``evaluate``
    adds fields after a step (time not counted in tokens/s); only the process with a ``log``
    writes it and saves (``save(step, seconds, tokens)``) when ``saving(step)`` or at ``last``.
    """
    step, elapsed, tokens = start
    progress = tqdm(total=total, initial=step, desc=desc, unit="step", disable=log is None)
    while step < last:
        started = time.perf_counter()
        fields, read = train_step(step)
        step += 1
        elapsed += time.perf_counter() - started
        tokens += read
        record = {"step": step, **fields, "tokens": tokens, "tokens_per_s": tokens / elapsed}
        record |= evaluate(step)
        progress.update(1)
        progress.set_postfix({name: f"{record[name]:.3f}" for name in show if name in record})
        if log is not None:
            log.write(record)
            if saving(step) or step == last:
                save(step, elapsed, tokens)
    progress.close()


class Checkpoint:
    """A directory holding the trainable weights, the optimizer state and the step.

    Saving writes a fresh directory and renames it over the old one, so a crash mid-save
    leaves the previous checkpoint whole.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def exists(self) -> bool:
        return (self.directory / "state.json").is_file()

    def save(
        self, weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, state: dict
    ) -> None:
        tmp = self.directory.with_name(self.directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in weights.items()},
            tmp / "weights.safetensors",
        )
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        old = self.directory.with_name(self.directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.directory.exists():
            os.replace(self.directory, old)
        os.replace(tmp, self.directory)
        shutil.rmtree(old, ignore_errors=True)

    def load(self) -> tuple[dict[str, torch.Tensor], dict, dict]:
        """(weights, optimizer state, run state); a damaged checkpoint names its file."""
        try:
            state = json.loads((self.directory / "state.json").read_text(encoding="utf-8"))
            weights = load_file(str(self.directory / "weights.safetensors"))
            optimizer = torch.load(self.directory / "optimizer.pt", weights_only=True)
        except Exception as err:
            raise ValueError(f"{self.directory}: corrupt checkpoint ({err})") from err
        return weights, optimizer, state


class MetricsLog:
    """One JSON object per line; a resumed run drops the lines past its checkpoint's step, so
    the log reads as if the run had never stopped."""

    def __init__(self, path: str | Path, resume_step: int | None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip() and json.loads(line).get("step", 0) <= resume_step:
                    kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()]
