#!/usr/bin/env bash
# `clisc synth` speed (3 cases) at a small and a BraTS-sized shape,
# release build: appends a dated table to bench/results/synth_timing.md.
# Usage: bench/synth_timing.sh [OUT_DIR] (or ./dev bench synth_timing)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
out="${1:-$(mktemp -d)}"
cargo build --release --quiet -p clisc --bin clisc
bin="${CARGO_TARGET_DIR:-target}/release/clisc"
load=$(cut -d' ' -f1-3 /proc/loadavg)
rows=""
for shape in 96,96,64 128,128,80 240,240,155; do
    /usr/bin/time -f "%e %M" -o "$out/time.txt" "$bin" synth --out "$out/$shape" --cases 3 --shape "$shape" --seed 1 >/dev/null 2>&1
    stats=$(tail -1 "$out/time.txt")
    rows+="| ${shape//,/ x } | 3 | ${stats% *} | $(( ${stats#* } / 1024 )) |"$'\n'
done
{
    echo
    echo "## $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
    echo
    echo "$(nproc)-core CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average before: $load. \`clisc synth --cases 3 --seed 1\`, whole process."
    echo
    echo "| shape | cases | wall (s) | peak RSS (MiB) |"
    echo "|---|---|---|---|"
    printf "%s" "$rows"
} | tee -a bench/results/synth_timing.md
