#!/usr/bin/env bash
# Chooses `refine_boundary_mm` on the tune cohort: runs configs/weight-free-brats.toml
# on it without the refinement (bench/realistic.sh tune, refine line removed),
# then scores its test predictions refined with bands of 2, 3, 4, 5 and 6 mm
# (host/cli/examples/refine_sweep.rs, the Rust implementation a run uses).
# Appends the table to bench/results/refine_sweep.md.
#   bench/refine_sweep.sh [--reuse]   (--reuse: keep an existing unrefined tune run)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
work=work/realistic-tune-weight-free-brats-edited
if [ "${1:-}" != --reuse ] || [ ! -d "$work/run/08-predictions" ]; then
    bash bench/realistic.sh tune configs/weight-free-brats.toml 's/^refine_boundary_mm = .*//'
fi
grep -q '^refine_boundary_mm' "$work/pipeline.toml" && { echo "refine_sweep: $work was refined" >&2; exit 1; }
cargo build --release --quiet -p clisc --example refine_sweep
bin="${CARGO_TARGET_DIR:-target}/release/examples/refine_sweep"
table=$("$bin" data/realistic-tune "$work/run/08-predictions" 2 3 4 5 6)
{
    echo
    echo "## tune cohort (seed 101), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
    echo
    echo "Network-1 test predictions of configs/weight-free-brats.toml without \`refine_boundary_mm\` ($work), whole-tumour Dice on each case's 1 mm grid, unrefined and refined with each band."
    echo
    echo "$table"
} | tee -a bench/results/refine_sweep.md
