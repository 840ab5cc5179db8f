#!/usr/bin/env bash
# All benchmarks; each writes its result under bench/results/.
#   bench/run.sh            everything (demo, case scaling, AMDA, synth, HD95, SAM encoder, suite, DICOM node)
#   bench/run.sh suite ARGS only the side-by-side suite (bench/suite/run.sh)
#   bench/run.sh NAME ARGS  only bench/NAME.sh (demo, case_scaling, amda, synth_timing, hd95_timing, refine_sweep,
#                           realistic tune|test [CONFIG] [SED...], node [SOAK_SECONDS],
#                           gpu [--device cpu] [--quick]: parity and speed on one GPU, bench/results/gpu.md)
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = suite ]; then
    shift
    exec bash suite/run.sh "$@"
fi
if [ -n "${1:-}" ]; then
    [ -f "$1.sh" ] || { echo "bench/run.sh: no benchmark bench/$1.sh" >&2; exit 2; }
    exec bash "$1.sh" "${@:2}"
fi
bash demo.sh
bash realistic.sh test
bash case_scaling.sh
bash amda.sh
bash synth_timing.sh
bash hd95_timing.sh
bash sam_encoder/run.sh --threads 2 --rounds 3
bash suite/run.sh
bash node.sh
