#!/usr/bin/env bash
# HD95 timing on 240x240x155 pairs (release build). Usage: bench/hd95_timing.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo test --release -p clisc --test metrics_medpy -- --ignored --nocapture hd95_timing_full_size
