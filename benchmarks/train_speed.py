"""Training throughput per stage of a run config, in float32 and in bfloat16 autocast.

    python benchmarks/train_speed.py [--config configs/r3mem-tiny-books.toml] [--steps 8]
                                     [--base DIR] [--data BOOKS] [--stages A,B]
                                     [--precision fp32,bf16] [--out DIR]

Times ``--steps`` optimizer steps of each stage's objective on its own batch shape (after two
warm-up steps), on the batches the run would draw, with the threads the environment gives
(OMP_NUM_THREADS); writes benchmarks/results/train_speed.{json,md}. ``--data``: other books
to draw the batches from than the config's train split (cutting those takes minutes on a
2-core CPU; the timing depends on the batch shape, not on which books). A CPU without
bfloat16 instructions emulates them, at a small fraction of float32's speed: time bf16 there
on a few ``--stages``. The report is rewritten after each row, so a run cut short keeps
what it measured.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoTokenizer

from r3mem.checkpoint import load_base
from r3mem.data import load_corpus, load_segments
from r3mem.model import R3MemModel
from r3mem.report import write_report
from r3mem.training.batches import draw_batch
from r3mem.training.common import load_config, make_optimizer
from r3mem.training.train import TrainConfig, window_loss


def time_stage(model, segments, corpus, stage, steps: int, bf16: bool) -> dict[str, float]:
    params = list(model.trainable_parameters().values())
    optimizer = make_optimizer(params, 1e-5, 0.0)  # tiny steps: the timing, not the training
    seconds, tokens = 0.0, 0
    for step in range(steps + 2):
        batch = draw_batch(segments, corpus, stage, [0, step, 0, 0])
        batch = {key: value.to(model.device) for key, value in batch.items()}
        started = time.perf_counter()
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = window_loss(model, batch, stage)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            seconds += time.perf_counter() - started
            tokens += int(batch["mask"].sum())
    return {"s_per_step": seconds / steps, "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/r3mem-tiny-books.toml")
    parser.add_argument("--base", help="base model directory (default: the config's)")
    parser.add_argument("--data", help="books to draw batches from (default: the config's)")
    parser.add_argument("--stages", help="comma-separated stage names (default: every stage)")
    parser.add_argument("--precision", default="fp32,bf16", help="fp32, bf16 or both")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    overrides = {"base_model": args.base} if args.base else {}
    overrides |= {"train_data": args.data} if args.data else {}
    config = load_config(TrainConfig, args.config, overrides)
    precisions = args.precision.split(",")
    if not set(precisions) <= {"fp32", "bf16"}:
        parser.error(f"--precision: fp32, bf16 or both, got {args.precision!r}")
    names = args.stages.split(",") if args.stages else [stage.name for stage in config.stages]
    unknown = set(names) - {stage.name for stage in config.stages}
    if unknown:
        parser.error(f"--stages: no stage {', '.join(sorted(unknown))} in {args.config}")
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    width = config.model_config.segment_length
    segments = load_segments(
        config.train_data, tokenizer, width, config.entity_length, config.cache_dir
    )
    corpus = load_corpus(config.train_data, tokenizer, config.cache_dir)
    torch.manual_seed(config.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = R3MemModel.from_base(load_base(config.base_model), config.model_config)
    model = model.to(device).train()
    rows = []
    seen = set()
    for stage in (stage for stage in config.stages if stage.name in names):
        weights = tuple(stage.weights().values())
        shape = (stage.batch_size, stage.bptt_segments, stage.segment_length, weights)
        if shape in seen:  # stages that differ only in steps or learning rate time alike
            continue
        seen.add(shape)
        for precision in precisions:
            bf16 = precision == "bf16"
            timing = time_stage(model, segments, corpus, stage, args.steps, bf16)
            rows.append(
                {
                    "stage": stage.name,
                    "batch": f"{stage.batch_size} x {stage.bptt_segments} x {stage.segment_length}",
                    "terms": ", ".join(k for k, v in stage.weights().items() if v > 0),
                    "precision": precision,
                    "threads": torch.get_num_threads(),
                    **timing,
                }
            )
            print(rows[-1], flush=True)
            write_report(args.out, "train_speed", config.seed, rows)


if __name__ == "__main__":
    main()
