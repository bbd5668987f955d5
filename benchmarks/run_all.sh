#!/usr/bin/env bash
# Regenerates benchmarks/RESULTS.md: trains every configs/bench/*.toml on the same base, data
# and budget, then runs every bench task over all of them. Resumable: run it again after an
# interruption and each training continues from its checkpoint.
#   bash benchmarks/run_all.sh            # full: ~2.5-3 h of a 2-core CPU, a sum of measured
#                                         # parts, not one measured run (the five staged
#                                         # trainings 94 min of one thread, the older eleven
#                                         # ~70; lm, two readings, ~60 beside reconstruct ~10;
#                                         # cost alone 12); the first run on new data also
#                                         # segments the books once (~4 min)
#   bash benchmarks/run_all.sh --quick    # smoke: 2 steps per method, small slices, < 5 min
# Jobs run JOBS at a time (default: one per core, one thread each: on small models two
# one-thread jobs do 1.5x the work of one two-thread job); each job's output goes to
# RUNS/logs/NAME.log, and a line here says when it ends and how long it took.
# Needs the base model first (scripts/train_default.sh, step 1). Environment overrides, all
# optional: BASE (base model dir), BOOKS (books dir) or TRAIN / VALID / TEST (its splits),
# RUNS (adapters), CACHE (tokenised data), OUT (bench reports), RESULTS (the assembled page),
# R3MEM (the r3mem command), PYTHON, JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=()
if [[ "${1:-}" == "--quick" ]]; then
    QUICK=(--quick)
elif [[ $# -gt 0 ]]; then
    echo "usage: bash benchmarks/run_all.sh [--quick]" >&2
    exit 2
fi
BASE=${BASE:-runs/base-tiny-books}
BOOKS=${BOOKS:-../shared/data/books}
TRAIN=${TRAIN:-$BOOKS/train}
VALID=${VALID:-$BOOKS/validation}
TEST=${TEST:-$BOOKS/test}
CACHE=${CACHE:-runs/cache}
R3MEM=${R3MEM:-r3mem}
PYTHON=${PYTHON:-python}
if [[ ${#QUICK[@]} -gt 0 ]]; then  # quick runs never touch the full run's adapters or results
    RUNS=${RUNS:-runs/bench-quick}
    OUT=${OUT:-$RUNS/results}
    RESULTS=${RESULTS:-$RUNS/RESULTS.md}
    STEPS=(--stop-after 2)
else
    RUNS=${RUNS:-runs/bench}
    OUT=${OUT:-benchmarks/results}
    RESULTS=${RESULTS:-benchmarks/RESULTS.md}
    STEPS=()
fi
JOBS=${JOBS:-$(nproc)}
THREADS=$(($(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1))
LOGS=$RUNS/logs
mkdir -p "$LOGS"
echo "[run_all] $JOBS jobs at a time, $THREADS thread(s) each; progress: tail -f $LOGS/*.log" >&2
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # a failed job stops the others
running=0
job() {  # job NAME CMD...: run CMD in the background once fewer than JOBS are running
    local name=$1
    shift
    if ((running >= JOBS)); then
        wait -n  # a failed job fails here (set -e)
        running=$((running - 1))
    fi
    (
        start=$SECONDS
        if ! OMP_NUM_THREADS=$THREADS "$@" > "$LOGS/$name.log" 2>&1; then
            echo "[run_all] $name FAILED: see $LOGS/$name.log" >&2
            exit 1
        fi
        echo "[run_all] $name: $((SECONDS - start)) s (total $SECONDS s)" >&2
    ) &
    running=$((running + 1))
}
drain() {  # wait for every job; fails if one did
    while ((running > 0)); do
        wait -n
        running=$((running - 1))
    done
}

# 1. One adapter per method: configs/bench/NAME.toml, with this run's paths. The ones that
#    write and decode a memory take longest and go first, so the pool ends on short jobs.
decoders=() others=()
for config in configs/bench/*.toml; do
    name=$(basename "$config" .toml)
    sed -e "s#^base_model = .*#base_model = \"$BASE\"#" \
        -e "s#^train_data = .*#train_data = \"$TRAIN\"#" \
        -e "s#^valid_data = .*#valid_data = \"$VALID\"#" \
        -e "s#^cache_dir = .*#cache_dir = \"$CACHE\"#" "$config" > "$RUNS/$name.toml"
    case $name in r3mem* | icae*) decoders+=("$name") ;; *) others+=("$name") ;; esac
done
for name in "${decoders[@]}" "${others[@]}"; do
    job "train-$name" $R3MEM train --config "$RUNS/$name.toml" --out "$RUNS/$name" \
        "${STEPS[@]}" --resume
done
drain
specs() {  # specs NAME...: "NAME=RUNS/NAME/adapter,..."
    local IFS=, out=()
    for name; do out+=("$name=$RUNS/$name/adapter"); done
    echo "${out[*]}"
}

# 2. Every task: lm beside reconstruct, then cost alone (the adapters that were taught to
#    decode are the ones reconstruct measures; lm's `base` is the frozen base they all share).
job bench-lm $R3MEM bench lm --model "$RUNS/r3mem/adapter" \
    --methods "base,$(specs "${decoders[@]}" "${others[@]}")" --data "$VALID,$TEST" "${QUICK[@]}" \
    --out "$OUT"
job bench-reconstruct $R3MEM bench reconstruct --methods "$(specs "${decoders[@]}")" \
    --data "$VALID" "${QUICK[@]}" --out "$OUT"
drain
THREADS=$(nproc)  # cost times itself: alone, on every core
job bench-cost $R3MEM bench cost --model "$RUNS/r3mem/adapter" "${QUICK[@]}" --out "$OUT"
drain

# 3. The page.
$PYTHON benchmarks/results_md.py "$OUT" "$RESULTS"
echo "wrote $RESULTS"
