#!/usr/bin/env bash
# All benchmarks; each writes its result under bench/results/.
set -euo pipefail
cd "$(dirname "$0")"
bash demo.sh
bash synth_timing.sh
bash hd95_timing.sh
bash sam_encoder/run.sh --threads 2 --rounds 3
