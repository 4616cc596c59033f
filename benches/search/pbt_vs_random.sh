#!/usr/bin/env bash
# PBT with the built-in trainer against random search with the same budget: 8 MNIST MLPs
# (10,000 digits, SGD) of 8 epochs each, lr and momentum from the same space; PBT in 4
# rounds of 2 epochs. Prints each seed's best val_loss.
#
#     cargo build --release && bash benches/search/pbt_vs_random.sh [SEEDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${RIDGELINE_BIN:-$root/target/release/ridgeline}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
spec() { # algorithm seed
  cat <<SPEC
name = "mnist-$1"
[data]
path = "$root/examples/data/mnist10k-images-idx3-ubyte.gz"
labels = "$root/examples/data/mnist10k-labels-idx1-ubyte.gz"
val_fraction = 0.2
normalize = "max"
[model]
depth = 2
width = 128
[train]
epochs = 8
batch_size = 128
optimizer = "sgd"
[search]
algorithm = "$1"
num_samples = 8
metric = "val_loss"
mode = "min"
seed = $2
[search.pbt]
rounds = 4
perturbation_interval = 2
[search.space]
lr = { type = "loguniform", low = 1e-4, high = 1.0 }
momentum = { type = "uniform", low = 0.0, high = 0.95 }
SPEC
}
best() {
  "$bin" run "$work/$1.toml" --out "$work/out-$1" 2>&1 | grep '^best trial' | grep -o 'val_loss=[0-9.]*' | cut -d= -f2
}
for seed in $(seq 1 "${1:-10}"); do
  spec pbt "$seed" > "$work/pbt.toml"
  # The same file for random search, less the PBT section (it would be refused).
  spec random "$seed" | sed '/^\[search.pbt\]/,/^perturbation_interval/d' > "$work/random.toml"
  rm -rf "$work"/out-*
  echo "seed $seed pbt $(best pbt) random $(best random)"
done
