#!/usr/bin/env bash
# Cost of a weight-free run on all 369 BraTS 2020 cases, projected from the
# last `bench/realistic.sh test` run of configs/weight-free-brats.toml
# (cases of BraTS size, 240 x 240 x 155 at 1 mm) for one 2-core machine and
# Slurm clusters of 8 and 64 such nodes (bench/brats_projection.py says
# how). Appends to bench/results/brats_projection.md.
#   bench/brats_projection.sh [WALL_SECONDS]   (default: the run's wall_seconds file)
set -euo pipefail
cd "$(dirname "$0")/.."
work=work/realistic-test-weight-free-brats
[ -f "$work/run/summary.json" ] || { echo "brats_projection: run bench/realistic.sh test first" >&2; exit 1; }
wall="${1:-$(cat "$work/wall_seconds" 2>/dev/null || true)}"
[ -n "$wall" ] || { echo "brats_projection: give the run's wall time (bench/results/realistic.md)" >&2; exit 1; }
{
    echo
    echo "## $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes'), from $work (2-core CPU machine)"
    echo
    python3 bench/brats_projection.py "$work/run/summary.json" "$wall"
} | tee -a bench/results/brats_projection.md
