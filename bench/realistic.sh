#!/usr/bin/env bash
# Accuracy on realistic anatomy at native 1 mm (issue #23): makes a
# cohort with bench/realistic/make_cohort.py (MNI ICBM152 anatomy, BraTS
# 2020 layout, 240 x 240 x 155 at 1 mm), runs a pipeline on it from raw
# NIfTI to report, and appends the measured figures to
# bench/results/realistic.md.
#
#   bench/realistic.sh COHORT [CONFIG] [SET...]
#
#   COHORT  tune (20 cases, seed 101: settings are chosen on it) or test
#           (30 cases, seed 202: reported once per change, after the choice)
#   CONFIG  pipeline file (default configs/weight-free-brats.toml); its
#           [dataset] root and [run] output are replaced
#   SET     extra `sed` expressions applied to the config copy, e.g.
#           's/^plugin = "unet3d"/&\ntargets = "ground-truth"/' for the
#           supervised baseline
#
# Cohorts are kept in data/realistic-<cohort>; each run's work folder in
# work/realistic-<cohort>-<config name>. Run through `./dev bench realistic`.
set -euo pipefail
cd "$(dirname "$0")/.."
cohort="${1:?usage: bench/realistic.sh tune|test [CONFIG] [SED...]}"
config="${2:-configs/weight-free-brats.toml}"
shift $(( $# < 2 ? $# : 2 ))
case "$cohort" in
    tune) seed=101; cases=20 ;;
    test) seed=202; cases=30 ;;
    *) echo "bench/realistic.sh: cohort must be tune or test, not $cohort" >&2; exit 2 ;;
esac
data="$PWD/data/realistic-$cohort"
if [ ! -f "$data/cohort.json" ]; then
    python bench/realistic/make_cohort.py --out "$data" --seed "$seed" --cases "$cases"
fi
cargo build --release -p clisc --quiet
name="$(basename "$config" .toml)"
work="$PWD/work/realistic-$cohort-$name"
[ $# -gt 0 ] && work="$work-edited"
rm -rf "$work"
mkdir -p "$work"
sed -e "s#^root = .*#root = \"$data\"#" -e "s#^output = .*#output = \"$work/run\"#" "$config" > "$work/pipeline.toml"
for expr in "$@"; do
    sed -i -e "$expr" "$work/pipeline.toml"
done
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/maxrss_kb" target/release/clisc run --config "$work/pipeline.toml" 2> "$work/log.txt"
end=$(date +%s.%N)
echo "$end - $start" | bc > "$work/wall_seconds"
mkdir -p bench/results
python bench/realistic/summarise.py \
    --summary "$work/run/summary.json" --cohort "$cohort" --seed "$seed" --config "$config" \
    --edits "$*" --wall "$(echo "$end - $start" | bc)" --maxrss-kb "$(cat "$work/maxrss_kb")" \
    --load "$load_before" --commit "$(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')" \
    | tee -a bench/results/realistic.md
