#!/usr/bin/env bash
# Dispatch against HyperQueue, in one run on the same disk: UNITS trivial units (the
# same command, `sh -c "echo 'ridgeline: {...}'"`) through one server and two worker
# processes of 2 slots each (hq: 2 CPUs each), rounds alternated; HyperQueue without and
# with its journal. Ridgeline also runs UNITS units that start no process (a 1-D scan
# of the README's digits MLP, one point on one sample per tile): leasing, reporting and
# committing alone. Prints units per second per round and the ratios of the medians.
#
#     cargo build --release
#     HQ=/path/to/hq bash benches/dispatch/vs_hq.sh [UNITS] [ROUNDS]
#
# hq is built from source for this (docs/performance.md says how); WORK_DIR picks the
# disk (default: a folder under /tmp).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${RIDGELINE_BIN:-$root/target/release/ridgeline}
hq=${HQ:?set HQ to a hq binary}
n=${1:-5000}
rounds=${2:-3}
work=$(mktemp -d -p "${WORK_DIR:-/tmp}")
pids=()
# Under set -e a failing kill (its processes already gone) would end the trap early.
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cmd="echo 'ridgeline: {\"loss\": 1}'"
cat > "$work/units.toml" <<SPEC
name = "dispatch"
[trial]
command = "echo 'ridgeline: {\\"loss\\": 1}'"
[search]
algorithm = "random"
num_samples = $n
metric = "loss"
mode = "min"
seed = 1
[search.space]
x = { type = "uniform", low = 0.0, high = 1.0 }
SPEC
"$bin" run "$root/examples/digits-grid.toml" --out "$work/train" >/dev/null 2>&1
model=$(dirname "$(find "$work/train" -name model.safetensors | head -1)")
cat > "$work/tiles.toml" <<SPEC
name = "tiles"
kind = "landscape"
[data]
path = "$root/examples/data/digits.csv.gz"
[landscape]
checkpoint = "$model"
samples = 1
tile = 1
x = { min = -1.0, max = 1.0, points = $n }
SPEC
now() { date +%s.%N; }
rate() { echo "scale=1; $n / ($2 - $1)" | bc; }
ridgeline_round() { # spec
  local d="$work/r" port=$((20000 + RANDOM % 20000))
  rm -rf "$d" && mkdir -p "$d"
  "$bin" coordinator --data-dir "$d/data" --listen "127.0.0.1:$port" --metrics-listen off 2>/dev/null &
  local c=$!
  sleep 0.5
  local ws=()
  for w in 1 2; do
    "$bin" worker --coordinator "http://127.0.0.1:$port" --name "w$w" --slots 2 \
      --trial-root "$d/trials" --metrics-listen off 2>/dev/null &
    ws+=("$!")
  done
  sleep 1
  local t0 t1
  t0=$(now)
  "$bin" submit "$work/$1" --coordinator "http://127.0.0.1:$port" --wait >/dev/null 2>&1
  t1=$(now)
  kill "${ws[@]}" "$c"
  wait "${ws[@]}" "$c" 2>/dev/null || true
  rate "$t0" "$t1"
}
hq_round() { # journal: yes or no
  local d="$work/h"
  rm -rf "$d" && mkdir -p "$d"
  local journal=()
  [ "$1" = yes ] && journal=(--journal "$d/journal")
  "$hq" server start --server-dir "$d/server" "${journal[@]}" >/dev/null 2>&1 &
  local s=$!
  until "$hq" server info --server-dir "$d/server" >/dev/null 2>&1; do sleep 0.1; done
  local ws=()
  for w in 1 2; do
    "$hq" worker start --server-dir "$d/server" --cpus 2 >/dev/null 2>&1 &
    ws+=("$!")
  done
  until [ "$("$hq" worker list --server-dir "$d/server" --output-mode quiet 2>/dev/null | wc -l)" -ge 2 ]; do
    sleep 0.1
  done
  local t0 t1
  t0=$(now)
  (cd "$d" && "$hq" submit --server-dir "$d/server" --array "1-$n" --stdout none --stderr none \
    --wait -- sh -c "$cmd" >/dev/null 2>&1)
  t1=$(now)
  "$hq" server stop --server-dir "$d/server" >/dev/null 2>&1 || true
  wait "${ws[@]}" "$s" 2>/dev/null || true
  rate "$t0" "$t1"
}
median() { tr ' ' '\n' | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
r=() t=() h=() j=()
for i in $(seq "$rounds"); do
  r+=("$(ridgeline_round units.toml)")
  t+=("$(ridgeline_round tiles.toml)")
  h+=("$(hq_round no)")
  j+=("$(hq_round yes)")
  echo "round $i: ridgeline ${r[-1]} units/s (no process: ${t[-1]}), hq ${h[-1]}, hq --journal ${j[-1]}"
done
mt=$(echo "${t[*]}" | median)
mr=$(echo "${r[*]}" | median) mh=$(echo "${h[*]}" | median) mj=$(echo "${j[*]}" | median)
echo "medians: ridgeline $mr (no process: $mt), hq $mh, hq --journal $mj units/s on $(df -T "$work" | awk 'NR == 2 {print $2}')"
echo "ratio ridgeline / hq: $(echo "scale=2; $mr / $mh" | bc)x; / hq --journal: $(echo "scale=2; $mr / $mj" | bc)x"
echo "ratio ridgeline (no process) / hq: $(echo "scale=2; $mt / $mh" | bc)x; / hq --journal: $(echo "scale=2; $mt / $mj" | bc)x"
