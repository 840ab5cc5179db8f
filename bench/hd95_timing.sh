#!/usr/bin/env bash
# HD95 and Dice timing on 240 x 240 x 155 pairs (release build):
# appends a dated table to bench/results/hd95_timing.md.
# Usage: bench/hd95_timing.sh (or ./dev bench hd95_timing)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --quiet -p clisc --example hd95_timing
bin="${CARGO_TARGET_DIR:-target}/release/examples/hd95_timing"
load=$(cut -d' ' -f1-3 /proc/loadavg)
table=$("$bin")
{
    echo
    echo "## $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
    echo
    echo "$(nproc)-core CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average before: $load. Mean of 5 calls each (host/cli/examples/hd95_timing.rs)."
    echo
    echo "$table"
} | tee -a bench/results/hd95_timing.md
