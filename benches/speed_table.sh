#!/usr/bin/env bash
# Every row of docs/performance.md's "Speed and footprint" table in one run: each bench
# in turn, with its peer beside it in the same bench, on one machine. Prints each
# bench's output (its ratios are its last lines) and the load before it, and keeps the
# outputs in OUT (default: a temporary folder, printed at the end).
#
#     cargo build --release
#     python -m pip install torch transformers optuna   # the Python peers
#     HQ=/path/to/hq bash benches/speed_table.sh [ROUNDS]
#
# hq is built from source (docs/performance.md says how); without HQ the dispatch row
# is left out, and says so. A run takes about 30 minutes on 2 cores with ROUNDS=3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rounds=${1:-3}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
py=${PYTHON:-python3}
export RIDGELINE_BIN=${RIDGELINE_BIN:-$root/target/release/ridgeline}
test -x "$RIDGELINE_BIN" || {
    echo "no release binary at $RIDGELINE_BIN: cargo build --release first" >&2
    exit 1
}

failed=0
row() {
    local name=$1
    shift
    echo
    echo "== $name: $* (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    local start=$SECONDS rc=0
    "$@" 2>&1 | tee "$out/$name.txt" || rc=$?
    echo "== $name took $((SECONDS - start)) s$([ "$rc" = 0 ] || echo ", FAILED (exit $rc)")"
    failed=$((failed + (rc != 0)))
}

row mlp_scan "$py" benches/landscape/mlp_vs_torch.py --ridgeline "$RIDGELINE_BIN" --rounds "$rounds"
row transformer_scans "$py" benches/landscape/transformer_vs_torch.py --ridgeline "$RIDGELINE_BIN" --rounds "$rounds"
row training "$py" benches/train/vs_torch.py --ridgeline "$RIDGELINE_BIN" --rounds "$rounds"
row command_trials "$py" benches/command/span.py --ridgeline "$RIDGELINE_BIN"
if [ -n "${HQ:-}" ]; then
    row dispatch bash benches/dispatch/vs_hq.sh 5000 "$rounds"
else
    echo "== dispatch: left out (set HQ to a hq binary)"
fi
row big_scan bash benches/landscape/big_scan.sh
echo
echo "outputs in $out"
[ "$failed" = 0 ] || { echo "$failed bench(es) failed" >&2; exit 1; }
