#!/usr/bin/env bash
# Case-count scaling of the whole demo pipeline (issue #12): `clisc demo`
# from nothing with N synthetic cases (96x96x64, seed 7) for each N given
# (default: 12 24), recording wall time and peak resident memory
# (/usr/bin/time -v). Writes bench/results/case_scaling.txt. Note that the
# network steps run a fixed number of iterations, so their time does not
# grow with N; the per-case steps (labels, CAM, prompts, pseudo-masks,
# filter, predictions) do.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=/dev/null
source scripts/env.sh
cargo build --release -p clisc --quiet
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(12 24)
out=bench/results/case_scaling.txt
{
    echo "# clisc demo case-count scaling, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cases wall_seconds peak_rss_mib final_test_dice"
} > "$out.partial"
for n in "${counts[@]}"; do
    dir="$(mktemp -d)"
    /usr/bin/time -v -o "$dir/time.txt" target/release/clisc --quiet demo --dir "$dir/demo" --cases "$n" > "$dir/out.txt"
    wall=$(grep "Elapsed (wall clock)" "$dir/time.txt" | awk '{print $NF}')
    rss=$(grep "Maximum resident set size" "$dir/time.txt" | awk '{printf "%.0f", $NF / 1024}')
    dice=$(grep "test whole-tumor Dice (final)" "$dir/out.txt" | awk '{print $5, $6, $7}')
    echo "$n $wall $rss $dice" >> "$out.partial"
    rm -rf "$dir"
done
mv "$out.partial" "$out"
cat "$out"
