#!/usr/bin/env bash
# Measures `clisc demo` from nothing: wall time and the final network's
# test Dice. Writes bench/results/demo.txt. Run through `./dev bench`
# (which prepares the environment).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p clisc --quiet
dir="$(mktemp -d)"
start=$(date +%s.%N)
target/release/clisc --quiet demo --dir "$dir/demo" | tee "$dir/out.txt"
end=$(date +%s.%N)
mkdir -p bench/results
{
    echo "# clisc demo benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m)"
    echo "wall_seconds $(echo "$end - $start" | bc)"
    cat "$dir/out.txt"
} > bench/results/demo.txt
cat bench/results/demo.txt
