#!/usr/bin/env bash
# The GPU check (issue #25): parity of SAM, CLIP and the 3D U-Net on the
# device against the official code, the U-Net training step with and
# without mixed precision, SAM slices per second, whole-case 3D inference
# and peak device memory, side by side with PyTorch (bench/gpu/gpu.py).
# Writes bench/results/gpu.md; exits 1 when a parity check
# or a process fails (the other tasks still run and are reported).
#
#   bench/gpu.sh                      on the first CUDA device (under 8 minutes on one GPU)
#   bench/gpu.sh --device cpu --quick the CI form: small inputs on the CPU, so nothing rots
#   CLISC_BENCH_PROFILE=debug ...     use the debug build `cargo test` already made
#
# Other arguments go to gpu.py (--threads, --rounds, --out, --work).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=/dev/null
source scripts/env.sh
profile="${CLISC_BENCH_PROFILE:-release}"
if [ "$profile" = release ]; then
    cargo build --release --quiet -p clisc --example bench_suite
else
    cargo build --quiet -p clisc --example bench_suite
fi
bin="${CARGO_TARGET_DIR:-$root/target}/$profile/examples/bench_suite"
exec python bench/gpu/gpu.py --rust-bin "$bin" --build "$profile" "$@"
