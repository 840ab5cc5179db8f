#!/usr/bin/env bash
# Measures `clisc demo` from nothing: wall time and the per-stage figures
# (test Dice of both networks on the demo's 21 test cases), then scores both
# networks on a held-out synthetic cohort that no stage has seen (24 cases,
# same shape, synth seed 8: `clisc infer` + `clisc eval`), a second
# unseen cohort. Writes bench/results/demo.txt. Run
# through `./dev bench` (which prepares the environment).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p clisc --quiet
dir="$(mktemp -d)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s.%N)
target/release/clisc --quiet demo --dir "$dir/demo" | tee "$dir/out.txt"
end=$(date +%s.%N)
held="$dir/held-out"
target/release/clisc --quiet synth --out "$held/data" --cases 24 --shape 96,96,64 --seed 8 >/dev/null
for model in network-1:05-network-1 final:07-network-2; do
    name="${model%%:*}"
    target/release/clisc --quiet infer --model "$dir/demo/work/${model#*:}/model.ckpt" \
        --input "$held/data" --out "$held/$name"
    target/release/clisc --quiet eval --pred "$held/$name" --gt "$held/data" --out "$held/$name-eval" |
        grep '^WT:' | sed "s/^/held-out cohort (24 unseen cases, synth seed 8), $name: /" >> "$dir/held-out.txt"
done
mkdir -p bench/results
{
    echo "# clisc demo benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m), load average before: $load_before"
    echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench/results' || echo ' +uncommitted changes'), kernel $(uname -r)"
    echo "wall_seconds $(echo "$end - $start" | bc)"
    cat "$dir/out.txt"
    cat "$dir/held-out.txt"
} > bench/results/demo.txt
cat bench/results/demo.txt
