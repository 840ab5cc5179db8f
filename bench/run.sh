#!/usr/bin/env bash
# All benchmarks; each writes its result under bench/results/.
#   bench/run.sh            everything (demo, case scaling, synth, HD95, SAM encoder, suite)
#   bench/run.sh suite ARGS only the side-by-side suite (bench/suite/run.sh)
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = suite ]; then
    shift
    exec bash suite/run.sh "$@"
fi
bash demo.sh
bash case_scaling.sh
bash synth_timing.sh
bash hd95_timing.sh
bash sam_encoder/run.sh --threads 2 --rounds 3
bash suite/run.sh
