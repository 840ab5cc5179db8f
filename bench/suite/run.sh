#!/usr/bin/env bash
# The side-by-side benchmark suite (issue #12): builds the clisc side
# (host/cli/examples/bench_suite.rs and the clisc CLI, release) and runs
# bench/suite/suite.py, which alternates clisc and the reference tools on the
# same inputs and writes bench/results/suite.md. Extra arguments go to
# suite.py (e.g. --quick, --rounds 5, --threads 4, --only nifti,metrics).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=/dev/null
source scripts/env.sh
cargo build --release --quiet -p clisc --bin clisc --example bench_suite
bin="${CARGO_TARGET_DIR:-$root/target}/release"
python bench/suite/suite.py --rust-bin "$bin/examples/bench_suite" --clisc-bin "$bin/clisc" "$@"
