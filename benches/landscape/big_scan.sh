#!/usr/bin/env bash
# The footprint of a 10^6-point scan (1,000 x 1,000 points in 100,000 tiles of 10) of the
# README's digits MLP on 100 samples: a coordinator and two worker processes, the
# coordinator's resident memory sampled from /proc while it runs and assembles, its peak
# (VmHWM) and what it holds after, the sweep folder's size and file count; then the same
# scan submitted again and cancelled part way, timing `ridgeline cancel` and a `status`
# right after it.
#
#     cargo build --release && bash benches/landscape/big_scan.sh [POINTS_PER_AXIS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${RIDGELINE_BIN:-$root/target/release/ridgeline}
n=${1:-1000}
work=$(mktemp -d)
pids=()
# Under set -e a failing kill (its processes already gone) would end the trap early.
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" run "$root/examples/digits-grid.toml" --out "$work/train" >/dev/null 2>&1
model=$(dirname "$(find "$work/train" -name model.safetensors | head -1)")
port=$((20000 + RANDOM % 20000))
url="http://127.0.0.1:$port"
cat > "$work/scan.toml" <<SPEC
name = "big"
kind = "landscape"
[data]
path = "$root/examples/data/digits.csv.gz"
[landscape]
checkpoint = "$model"
split = "train"
samples = 100
tile = 10
x = { min = -1.0, max = 1.0, points = $n }
y = { min = -1.0, max = 1.0, points = $n }
directions = { seed = 0 }
SPEC
"$bin" coordinator --data-dir "$work/dd" --listen "127.0.0.1:$port" --metrics-listen off \
  2>"$work/coordinator.log" &
coord=$!
pids+=("$coord")
sleep 1
for w in 1 2; do
  "$bin" worker --coordinator "$url" --slots 1 --name "w$w" 2>/dev/null &
  pids+=("$!")
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$coord/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$coord/status"; }
echo "coordinator idle: $(rss) kB"
id=$("$bin" submit "$work/scan.toml" --coordinator "$url")
dir="$work/dd/sweeps/$id"
start=$(date +%s.%N)
last=0
until [ -e "$dir/meta.json" ]; do
  now=$(date +%s)
  if [ $((now - last)) -ge 5 ]; then
    echo "  $(echo "$(date +%s.%N) - $start" | bc | cut -d. -f1) s: $(find "$dir/trials" -maxdepth 1 -type d 2>/dev/null | wc -l) tile folders, coordinator $(rss) kB"
    last=$now
  fi
  sleep 0.2
done
end=$(date +%s.%N)
sleep 2
after=$(rss)
# A completed scan's tile files are removed on a thread of their own once assembled.
until grep -q "tiles' files removed" "$work/coordinator.log"; do sleep 0.5; done
echo "scan of $((n * n)) points: $(echo "$end - $start" | bc) s to meta.json"
echo "coordinator peak (VmHWM) $(hwm) kB; 2 s after assembly $after kB"
echo "sweep folder: $(du -sm "$dir" | cut -f1) MiB in $(find "$dir" -type f | wc -l) files, $(find "$dir" -type d | wc -l) folders"
(cd "$dir" && ls -l | awk 'NR > 1 && $1 ~ /^-/ && $5 > 1000000 {print "  " $9 ": " int($5 / 1048576) " MiB"}')
id2=$("$bin" submit "$work/scan.toml" --coordinator "$url")
sleep 10
t0=$(date +%s.%N)
"$bin" cancel "$id2" --coordinator "$url" >/dev/null
t1=$(date +%s.%N)
"$bin" status --coordinator "$url" >/dev/null
t2=$(date +%s.%N)
echo "cancel after 10 s: $(echo "($t1 - $t0) * 1000" | bc) ms; status right after: $(echo "($t2 - $t1) * 1000" | bc) ms"
