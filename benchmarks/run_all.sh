#!/usr/bin/env bash
# Regenerates benchmarks/RESULTS.md: trains every configs/bench/*.toml on the same base, data
# and budget, then runs every bench task over all of them. Resumable: run it again after an
# interruption and each training continues from its checkpoint.
#   bash benchmarks/run_all.sh            # full: ~2 h of a 2-core CPU from scratch (~80 min of
#                                         # it training), ~45 min once the adapters exist
#   bash benchmarks/run_all.sh --quick    # smoke: 2 steps per method, small slices, < 5 min
# Needs the base model first (scripts/train_default.sh, step 1). Environment overrides, all
# optional: BASE (base model dir), BOOKS (books dir) or TRAIN / VALID / TEST (its splits),
# RUNS (adapters), CACHE (tokenised data), OUT (bench reports), RESULTS (the assembled page),
# R3MEM (the r3mem command), PYTHON.
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
    STEPS=(--steps 2)
else
    RUNS=${RUNS:-runs/bench}
    OUT=${OUT:-benchmarks/results}
    RESULTS=${RESULTS:-benchmarks/RESULTS.md}
    STEPS=()
fi
mkdir -p "$RUNS"
timed() {  # run a step and say how long it took (the whole run's budget is the sum)
    local name=$1 start=$SECONDS
    shift
    "$@"
    echo "[run_all] $name: $((SECONDS - start)) s (total $SECONDS s)" >&2
}

# 1. One adapter per method: configs/bench/NAME.toml, with this run's paths.
all=() decoders=()
for config in configs/bench/*.toml; do
    name=$(basename "$config" .toml)
    sed -e "s#^base_model = .*#base_model = \"$BASE\"#" \
        -e "s#^train_data = .*#train_data = \"$TRAIN\"#" \
        -e "s#^valid_data = .*#valid_data = \"$VALID\"#" \
        -e "s#^cache_dir = .*#cache_dir = \"$CACHE\"#" "$config" > "$RUNS/$name.toml"
    timed "train $name" $R3MEM train --config "$RUNS/$name.toml" --out "$RUNS/$name" \
        "${STEPS[@]}" --resume
    all+=("$name=$RUNS/$name/adapter")
    case $name in r3mem* | icae*) decoders+=("$name=$RUNS/$name/adapter") ;; esac
done
join() { local IFS=,; echo "$*"; }

# 2. Every task (the adapters that were taught to decode are the ones reconstruct measures;
#    lm's `base` is the frozen base they all share, adapters off).
timed "bench lm" $R3MEM bench lm --model "$RUNS/r3mem/adapter" --methods "base,$(join "${all[@]}")" \
    --data "$VALID,$TEST" "${QUICK[@]}" --out "$OUT"
timed "bench reconstruct" $R3MEM bench reconstruct --methods "$(join "${decoders[@]}")" \
    --data "$VALID" "${QUICK[@]}" --out "$OUT"
timed "bench cost" $R3MEM bench cost --model "$RUNS/r3mem/adapter" "${QUICK[@]}" --out "$OUT"

# 3. The page.
$PYTHON benchmarks/results_md.py "$OUT" "$RESULTS"
echo "wrote $RESULTS"
