#!/usr/bin/env bash
# The DICOM node under load, faults and a soak (issue #26): runs
# bench/node/load.py against the release `clisc dicom serve` and writes
# bench/results/node.md (bench/node/summarise.py).
#
#   bench/node.sh [SOAK_SECONDS]     default 600
#
# Run through `./dev bench node`. Three runs: load (50 studies of 30-150
# instances, 20 senders of which Orthanc sends 30% of the studies, the
# default limits, 3 bad peers), faults (the
# same studies with the association limit at 8 and two SIGKILLs), and a
# full disk (10 studies on an 8 MB tmpfs, then enlarged; needs root);
# the load run ends with the soak. Each run's folder is kept in
# work/node-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
soak="${1:-600}"
cargo build --release -p clisc --quiet
out="$PWD/work/node-bench"
rm -rf "$out"
mkdir -p "$out"
clisc="$PWD/target/release/clisc"
python bench/node/load.py --clisc "$clisc" --out "$out/load" --studies 50 --instances 30-150 \
    --concurrency 20 --stalled 3 --idle-timeout 10 --orthanc-share 0.3 --soak "$soak" --seed 21 > /dev/null
python bench/node/load.py --clisc "$clisc" --out "$out/faults" --studies 50 --instances 30-150 \
    --concurrency 20 --max-associations 8 --kills 2 --seed 22 > /dev/null
python bench/node/load.py --clisc "$clisc" --out "$out/disk-full" --studies 10 --instances 30-150 \
    --concurrency 10 --storage-mb 8 --seed 23 > /dev/null
python bench/node/summarise.py "$out" > bench/results/node.md
cat bench/results/node.md
