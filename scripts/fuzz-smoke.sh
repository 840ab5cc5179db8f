#!/usr/bin/env bash
# A short fuzz run of every target in fuzz/ (cargo-fuzz, libFuzzer): each
# target starts from its committed seeds (fuzz/seeds/TARGET) and runs for
# CLISC_FUZZ_SECONDS seconds (default 20) with a memory limit and a
# per-input timeout. A crash, a hang, or an input that needs more memory
# than the limit fails the script (and CI); libFuzzer writes the input to
# fuzz/artifacts/TARGET/ and prints how to reproduce it.
#
# Installs what it needs when missing: the nightly toolchain (rustup) and
# cargo-fuzz (`cargo install cargo-fuzz --locked`). Needs scripts/env.sh
# sourced (libtorch), as ./dev does.
#
#   CLISC_FUZZ_SECONDS     seconds per target (default 20)
#   CLISC_FUZZ_TARGET_DIR  build folder (default target/fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${CLISC_FUZZ_SECONDS:-20}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export CARGO_TARGET_DIR="${CLISC_FUZZ_TARGET_DIR:-$PWD/target/fuzz}"

cd fuzz
start=$(date +%s)
cargo +nightly fuzz build -O
echo "fuzz: targets built in $(($(date +%s) - start)) s" >&2
for target in $(cargo +nightly fuzz list); do
    corpus="$(mktemp -d)"
    echo "fuzz: $target for ${seconds} s" >&2
    status=0
    cargo +nightly fuzz run -O "$target" "$corpus" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 2>"$corpus.log" || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$corpus.log" >&2 || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$corpus.log" >&2
        echo "fuzz: target $target FAILED (exit $status); the input is in fuzz/artifacts/$target/" >&2
        rm -rf "$corpus" "$corpus.log"
        exit 1
    fi
    rm -rf "$corpus" "$corpus.log"
done
