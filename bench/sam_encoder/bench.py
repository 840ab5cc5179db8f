"""Side-by-side benchmark of the SAM ViT-B image encoder: the Rust (tch)
implementation vs Meta's PyTorch implementation, same machine, same
libtorch, same thread count, same input, same (random, full-size) weights.

Rounds alternate between the two implementations (each a fresh process:
load, one warm-up pass, ITERS timed passes) so that background load hits
both alike. Reported: min and median seconds per forward pass, and the
ratio Rust / PyTorch (< 1 means Rust is faster).

Usage (from the repository root, after `source scripts/env.sh`):
    python bench/sam_encoder/bench.py --rust-bin PATH [--threads 2]
        [--iters 3] [--rounds 3] [--weights FILE] [--out bench/results/sam_encoder.txt]
bench/sam_encoder/run.sh builds the Rust binary and calls this.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def default_weights() -> str:
    cache = os.environ.get("CLISC_CACHE_DIR", os.path.expanduser("~/.cache/clisc"))
    return os.path.join(cache, "parity", "sam", "v1", "sam_vit_b_random.pth")


def ensure_weights(path: str) -> None:
    if os.path.exists(path):
        return
    script = os.path.join(ROOT, "plugins", "sam", "tests", "reference", "make_sam_reference.py")
    subprocess.run([sys.executable, script, os.path.dirname(path)], check=True)


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    return json.loads(line)["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rust-bin", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--weights", default=default_weights())
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "sam_encoder.txt"))
    a = ap.parse_args()
    ensure_weights(a.weights)
    times = {"rust": [], "torch": []}
    for r in range(a.rounds):
        for impl in (["rust", "torch"] if r % 2 == 0 else ["torch", "rust"]):
            if impl == "rust":
                s = run([a.rust_bin, a.weights, str(a.threads), str(a.iters)])
            else:
                s = run([sys.executable, os.path.join(HERE, "bench_torch.py"), a.weights, str(a.threads), str(a.iters)])
            times[impl] += s
            print(f"round {r + 1} {impl}: {s}", flush=True)
    rs, ts = times["rust"], times["torch"]
    ratio_min = min(rs) / min(ts)
    ratio_med = statistics.median(rs) / statistics.median(ts)
    lines = [
        "SAM ViT-B image encoder, one 1024x1024 image, CPU, float32",
        f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        f"libtorch: torch {torch.__version__} (both), threads: {a.threads}",
        f"runs: {a.rounds} alternating rounds x {a.iters} timed passes each (after 1 warm-up)",
        f"rust (tch):     min {min(rs):.3f} s, median {statistics.median(rs):.3f} s  {rs}",
        f"pytorch (Meta): min {min(ts):.3f} s, median {statistics.median(ts):.3f} s  {ts}",
        f"ratio rust / pytorch: {ratio_min:.3f} (min), {ratio_med:.3f} (median); < 1 means Rust is faster",
    ]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
