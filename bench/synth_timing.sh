#!/usr/bin/env bash
# `clisc synth` speed for a small and a BraTS-sized shape (release build).
# Usage: bench/synth_timing.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
out="${1:-$(mktemp -d)}"
cargo build --release -p clisc --bin clisc
bin="${CARGO_TARGET_DIR:-target}/release/clisc"
for shape in 96,96,64 128,128,80 240,240,155; do
    echo "shape $shape:"
    /usr/bin/time -f "  total wall %e s, max RSS %M KiB" "$bin" synth --out "$out/$shape" --cases 3 --shape "$shape" --seed 1
done
