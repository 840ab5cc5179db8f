#!/usr/bin/env bash
# Adaptive masking (AMDA) on synthetic data (issue #5): for several CAM
# configurations, the ROIs of the first classifier ("initial") and of the
# classifier retrained with adaptive masking ("amda-1") against ground
# truth (Dice, precision = fraction of the ROI on tumour, recall = fraction
# of the tumour inside the ROI; means over the training cases), and the
# Dice of the pseudo-masks the prompts then give. Every configuration is
# `configs/demo.toml` with only the `cam` settings changed, run up to the
# pseudo-masks on the demo's data (`clisc demo`: 24 cases of 96x96x64, synth
# seed 7; the 17 training cases are scored). Writes bench/results/amda.txt,
# or, with configuration names as arguments, runs only those and writes
# bench/results/amda-NAME[-NAME...].txt. All: about 25 minutes on 2 cores
# (the paper's 224x224 input alone about 10). Run through `./dev bench amda`
# or directly after `source scripts/env.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p clisc --quiet
bin="${CARGO_TARGET_DIR:-target}/release/clisc"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
"$bin" --quiet synth --out "$dir/data" --cases 24 --shape 96,96,64 --seed 7 >/dev/null

# name | replacement of the demo's `cam` settings (only the keys that change)
configs=(
    "layer3-96-fixed|input_size = 96"
    "layer3-96-otsu|input_size = 96, threshold = \"otsu\""
    "layer2-96-fixed|input_size = 96, target_layer = \"layer2\""
    "layer2-96-otsu|input_size = 96, target_layer = \"layer2\", threshold = \"otsu\""
    "layer3-128-fixed|input_size = 128"
    "layer3-224-fixed|input_size = 224"
)
result=bench/results/amda.txt
if [ "$#" -gt 0 ]; then
    wanted=("$@")
    selected=()
    for entry in "${configs[@]}"; do
        for w in "${wanted[@]}"; do
            [ "${entry%%|*}" = "$w" ] && selected+=("$entry")
        done
    done
    [ "${#selected[@]}" -eq "$#" ] ||
        { echo "bench/amda.sh: unknown configuration among: $* (known: ${configs[*]%%|*})" >&2; exit 2; }
    configs=("${selected[@]}")
    result="bench/results/amda-$(IFS=-; echo "$*").txt"
fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
out="$dir/amda.txt"
{
    echo "# AMDA on clisc synth data, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), $(nproc) cores, load average before: $load_before"
    echo "# ROI initial -> amda-1 (mean over the training cases): Dice, precision, recall; then the pseudo-mask Dice from the amda-1 ROIs"
    echo "# configs/demo.toml uses layer3-128-fixed; the paper uses layer3 on 224x224 slices (with ResNet-50)"
    printf '%-24s %-22s %-22s %-22s %-10s %s\n' config "ROI Dice" "ROI precision" "ROI recall" "mask Dice" "roi step (s)"
} > "$out"
for entry in "${configs[@]}"; do
    name="${entry%%|*}"
    settings="${entry#*|}"
    run="$dir/run-$name"
    mkdir -p "$run"
    sed -e "s|output = \"../work/demo\"|output = \"$run/work\"|" \
        -e "s|root = \"../data/demo\"|root = \"$dir/data\"|" \
        -e "s|input_size = 128|$settings|" configs/demo.toml > "$run/pipeline.toml"
    grep -q "^settings = { arch = \"resnet18\", $settings," "$run/pipeline.toml" ||
        { echo "bench/amda.sh: could not set \`$settings\` in configs/demo.toml" >&2; exit 1; }
    for step in pseudo-labels roi prompts pseudo-masks; do
        "$bin" --quiet run --config "$run/pipeline.toml" --only "$step" >/dev/null
    done
    python3 - "$run/work/summary.json" "$name" >> "$out" <<'PY'
import json, statistics, sys
s = json.load(open(sys.argv[1]))
def mean(round_, key):
    v = [c["dice"] if key == "dice" else c["extra"][key] for c in s["rois"][round_] if key == "dice" or key in c["extra"]]
    return statistics.mean(v)
cols = [f"{mean('initial', k):.3f} -> {mean('amda-1', k):.3f}" for k in ("dice", "precision", "recall")]
masks = statistics.mean(c["dice"] for c in s["pseudo_masks"])
print(f"{sys.argv[2]:<24} {cols[0]:<22} {cols[1]:<22} {cols[2]:<22} {masks:<10.3f} {s['timings']['roi']:.0f}")
PY
done
mkdir -p bench/results
cp "$out" "$result"
cat "$result"
