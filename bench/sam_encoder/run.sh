#!/usr/bin/env bash
# Builds the Rust SAM encoder benchmark and compares it with Meta's PyTorch
# encoder on this machine (same libtorch, same threads). Extra arguments go
# to bench.py (e.g. --threads 4 --rounds 5). PROFILE=dev skips the release
# build (the encoder's time is spent inside libtorch either way).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=/dev/null
source scripts/env.sh
profile="${PROFILE:-release}"
cargo build --profile "$profile" -p clisc-sam --example sam_encoder_bench
dir="$profile"; [ "$profile" = dev ] && dir=debug
bin="${CARGO_TARGET_DIR:-$root/target}/$dir/examples/sam_encoder_bench"
python bench/sam_encoder/bench.py --rust-bin "$bin" "$@"
