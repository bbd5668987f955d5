#!/usr/bin/env bash
# The pipeline that produces the shipped default model r3mem-tiny-books. Every step resumes:
# run it again after an interruption and it continues where it stopped.
#   RUNS=/path/for/checkpoints bash scripts/train_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
# 1. Tokenizer + 5M-parameter Llama on the books train split (seed 0).
r3mem train-base --config configs/base-tiny-books.toml --out "$RUNS/base-tiny-books" --resume
# 2. R³Mem adapters on the frozen base, full objective (configs/r3mem-tiny-books.toml).
sed "s#^base_model = .*#base_model = \"$RUNS/base-tiny-books\"#" configs/r3mem-tiny-books.toml \
    > "$RUNS/r3mem-tiny-books.toml"
r3mem train --config "$RUNS/r3mem-tiny-books.toml" --out "$RUNS/r3mem-tiny-books" --resume
# 3. Figures on the books validation split.
r3mem bench lm --model "$RUNS/r3mem-tiny-books/adapter" --out benchmarks/results
r3mem bench reconstruct --model "$RUNS/r3mem-tiny-books/adapter" --out benchmarks/results
