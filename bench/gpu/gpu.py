"""The GPU check of issue #25: parity and speed of the model code on one device.

One script, meant to finish in under 8 minutes on one GPU, that answers
what the CPU suite cannot: do SAM, CLIP and the 3D U-Net give the official
code's outputs on CUDA, how fast are the U-Net training step (with and
without mixed precision), SAM and whole-case 3D inference against the
same work in PyTorch on the same device, and how much device memory each
side takes. It writes a Markdown report (default `bench/results/gpu.md`)
and exits 1 when a parity check fails or a process fails (a failed task is
listed in the report and the other tasks still run).

    python bench/gpu/gpu.py --rust-bin PATH [--device cuda|cpu] [--quick]
        [--threads 2] [--rounds 2] [--work DIR] [--out FILE]

`bench/gpu.sh` builds the clisc side (`host/cli/examples/bench_suite.rs`)
and calls this. The clisc side and the reference side
(`bench/suite/reference.py`: Meta's SamPredictor, OpenAI CLIP, MONAI,
plain PyTorch) run as fresh processes on identical inputs and weights
(the seeded random full-size checkpoints of the parity tests), timed as
the suite times them (`bench/suite/suite.py`, alternating order).

Parity: each side writes its outputs (safetensors); the largest absolute
difference must be within the tolerance of the CPU parity test of that
model (`plugins/*/tests/`), ten times that on CUDA, where both sides may
pick different cuDNN algorithms and convolutions may use TF32. The
tolerances were set before any GPU run.

Device memory: on CUDA, the peak of `nvidia-smi`'s per-process used memory
(polled every 50 ms; it includes the CUDA context of each process); on the
CPU, peak resident memory (ru_maxrss).

`--device cpu --quick` is the form `./dev test` runs in CI (small inputs,
one round), so the script and both sides' device code paths do not rot.
"""

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "suite"))
import suite  # noqa: E402  (the suite's process runner, inputs and machine description)

PY, REF = suite.PY, suite.REF

# Largest accepted |clisc - official| per output on the CPU: the
# tolerances of the CPU parity tests (sam_parity.rs, clip_parity.rs as
# relative to the largest feature, pytorch_parity.rs).
CPU_TOLERANCE = {
    ("SAM ViT-B", "image embedding"): 1e-3,
    ("SAM ViT-B", "low-res mask logits (box, 3 masks)"): 1e-3,
    ("SAM ViT-B", "IoU predictions"): 1e-4,
    ("CLIP ViT-B/32", "image features (relative to the largest)"): 1e-4,
    ("3D U-Net", "logits"): 1e-5,
}
CUDA_FACTOR = 10.0

# Targets of the issue on an H100/H200-class GPU.
SAM_SLICES_PER_S, WHOLE_CASE_S, RATIO = 50.0, 1.0, 1.0


class DevicePeak:
    """Polls nvidia-smi while process `pid` runs; `peak` is the largest
    used memory (MiB) nvidia-smi reported for that process, None when it
    never listed it (some containers hide per-process figures)."""

    def __init__(self, pid):
        self.pid = str(pid)
        self.peak = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
                for line in out.splitlines():
                    parts = [p.strip() for p in line.split(",")]
                    if len(parts) == 2 and parts[0] == self.pid and parts[1].replace(".", "", 1).isdigit():
                        self.peak = max(self.peak or 0.0, float(parts[1]))
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()


def run_side(cmd, device):
    """One fresh process; (wall s, peak memory MiB or None, stdout). Memory
    is the process's device memory on CUDA, its resident memory on the CPU."""
    if device != "cuda":
        return suite.measure(cmd)
    peaks = []

    def poll(pid):
        peaks.append(DevicePeak(pid))
        return peaks[-1]

    wall, _, stdout = suite.measure(cmd, watch=poll)
    return wall, peaks[0].peak, stdout


def timed_pair(name, clisc_cmd, ref_cmd, device, rounds):
    """Alternating rounds of both sides; per phase the medians and the peak memory."""
    seconds = {"clisc": {}, "ref": {}}
    memory = {"clisc": None, "ref": None}
    for r in range(rounds):
        for side in (("clisc", "ref") if r % 2 == 0 else ("ref", "clisc")):
            _, mem, out = run_side(clisc_cmd if side == "clisc" else ref_cmd, device)
            for phase, values in suite.timings_of(out).items():
                seconds[side].setdefault(phase, []).extend(values)
            if mem is not None:
                memory[side] = max(memory[side] or 0.0, mem)
    rows = []
    for phase in seconds["clisc"]:
        c, f = suite.med(seconds["clisc"][phase]), suite.med(seconds["ref"][phase])
        rows.append(dict(task=name, phase=phase, clisc=c, ref=f, ratio=c / f, mem=memory))
        print(f"  {name} / {phase}: clisc {c:.4f}s, reference {f:.4f}s, ratio {c / f:.3f}", flush=True)
    return rows


def max_abs_diff(a, b):
    import numpy as np

    if a.shape != b.shape:
        raise SystemExit(f"shape mismatch: clisc {a.shape} vs official {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def load(path):
    from safetensors.numpy import load_file

    return load_file(path)


def attempt(label, failures, task):
    """Runs one check or timed task; a process that fails is recorded in
    `failures` (label, the end of its error) and the next task still
    runs, so one broken path does not lose the other figures."""
    try:
        return task()
    except (RuntimeError, subprocess.CalledProcessError, SystemExit) as e:
        detail = getattr(e, "stderr", None) or str(e)
        failures.append((label, detail.strip()[-1500:]))
        print(f"  FAILED {label}:\n{detail[-1500:]}", flush=True)
        return None


def parity(a, work, device, failures):
    """Both sides' outputs of SAM, CLIP and the U-Net on `device`; one
    row per compared output."""
    rb, threads, dev = a.rust_bin, str(a.threads), ([] if device == "cpu" else [device])
    rows = []

    def row(model, output, diff):
        tol = CPU_TOLERANCE[(model, output)] * (CUDA_FACTOR if device == "cuda" else 1.0)
        rows.append(dict(model=model, output=output, diff=diff, tol=tol, ok=diff <= tol))
        print(f"  parity {model} / {output}: {diff:.3e} (tolerance {tol:.0e})", flush=True)

    def sam():
        sam_w = suite.weights("sam")
        c, r = os.path.join(work, "sam-clisc.safetensors"), os.path.join(work, "sam-official.safetensors")
        suite.sh([rb, "sam-parity", sam_w, threads, c, *dev])
        suite.sh([PY, REF, "sam-parity", sam_w, threads, r, *dev])
        c, r = load(c), load(r)
        row("SAM ViT-B", "image embedding", max_abs_diff(c["embedding"], r["embedding"]))
        row("SAM ViT-B", "low-res mask logits (box, 3 masks)", max_abs_diff(c["low_res"], r["low_res"]))
        row("SAM ViT-B", "IoU predictions", max_abs_diff(c["iou"], r["iou"]))

    def clip():
        import numpy as np

        clip_w = suite.weights("clip")
        batch = "2" if a.quick else "8"
        c, r = os.path.join(work, "clip-clisc.safetensors"), os.path.join(work, "clip-official.safetensors")
        suite.sh([rb, "clip-parity", clip_w, threads, c, batch, *dev])
        suite.sh([PY, REF, "clip-parity", clip_w, threads, r, batch, *dev])
        c, r = load(c)["features"], load(r)["features"]
        row("CLIP ViT-B/32", "image features (relative to the largest)",
            max_abs_diff(c, r) / float(np.max(np.abs(r))))

    def unet():
        case = os.path.join(work, "unet-parity")
        feats = "8,16,32,64" if a.quick else "16,32,64,128,256"
        suite.sh([rb, "unet-parity", feats, threads, case, *dev])
        suite.sh([PY, REF, "unet-parity", feats, threads, case, *dev])
        row("3D U-Net", "logits", max_abs_diff(load(os.path.join(case, "clisc.safetensors"))["logits"],
                                              load(os.path.join(case, "reference.safetensors"))["logits"]))

    for label, check in (("SAM ViT-B parity", sam), ("CLIP ViT-B/32 parity", clip), ("3D U-Net parity", unet)):
        attempt(label, failures, check)
    return rows


def speed(a, device, failures):
    """The timed rows: U-Net training step (fp32; fp16 autocast on CUDA),
    SAM slices, whole-case 3D inference, CLIP batch."""
    rb, threads, dev = a.rust_bin, str(a.threads), ([] if device == "cpu" else [device])
    rounds = 1 if a.quick else a.rounds
    rows = []

    def timed(name, clisc_cmd, ref_cmd):
        rows.extend(attempt(name, failures, lambda: timed_pair(name, clisc_cmd, ref_cmd, device, rounds)) or [])

    # configs/weight-free-brats.toml's network, patch and batch.
    feats, patch, batch, steps = "8,16,32,64", "48,48,32", "2", ("3" if a.quick else "20")
    for precision in (["fp32"] if device == "cpu" else ["fp32", "amp"]):
        timed(f"3D U-Net training step, batch 2 of 48x48x32 ({precision})",
              [rb, "unet-train", patch, threads, steps, feats, batch, precision, *dev],
              [PY, REF, "unet-train", patch, threads, steps, feats, batch, precision, *dev])
    sam_w = suite.weights("sam")
    iters = "1" if a.quick else "10"
    timed("SAM ViT-B, one 240x240 slice (box prompt)", [rb, "sam", sam_w, threads, iters, *dev],
          [PY, REF, "sam", sam_w, threads, iters, *dev])
    # The paper's network (feature_scale 4) over a whole BraTS case.
    dims, feats = ("96,96,64", "8,16,32,64") if a.quick else ("240,240,155", "16,32,64,128,256")
    timed(f"3D U-Net sliding-window inference, whole case {dims.replace(',', 'x')}",
          [rb, "unet", dims, threads, "1" if a.quick else "3", feats, *dev],
          [PY, REF, "unet", dims, threads, "1" if a.quick else "3", feats, *dev])
    clip_w = suite.weights("clip")
    batch = "2" if a.quick else "16"
    timed(f"CLIP ViT-B/32 image encoder, batch {batch}",
          [rb, "clip", clip_w, threads, iters, batch, *dev],
          [PY, REF, "clip", clip_w, threads, iters, batch, *dev])
    return rows


def headline(rows, device):
    """SAM slices per second and whole-case seconds against the GPU targets."""
    sam = {r["phase"]: r for r in rows if r["task"].startswith("SAM")}
    whole = next((r for r in rows if r["task"].startswith("3D U-Net sliding")), None)
    on_gpu = device == "cuda"
    verdict = lambda ok: ("yes" if ok else "**no**") if on_gpu else "n/a (CPU)"  # noqa: E731
    lines = [
        "| figure | clisc | reference | target (H100/H200-class GPU) | met? |",
        "|---|---|---|---|---|",
    ]
    if "embed" in sam and "decode" in sam:
        per_slice = {side: sam["embed"][side] + sam["decode"][side] for side in ("clisc", "ref")}
        lines.append(f"| SAM slices per second (embed + decode) | {1 / per_slice['clisc']:.2f}"
                     f" | {1 / per_slice['ref']:.2f} | > {SAM_SLICES_PER_S:.0f}"
                     f" | {verdict(1 / per_slice['clisc'] > SAM_SLICES_PER_S)} |")
    if whole:
        lines.append(f"| {whole['task']} (s) | {whole['clisc']:.3f} | {whole['ref']:.3f} | < {WHOLE_CASE_S:.0f} s"
                     f" | {verdict(whole['clisc'] < WHOLE_CASE_S)} |")
    return lines


def mib(value):
    """A memory figure, or n/a when none was sampled."""
    return "n/a" if value is None else f"{value:.0f}"


def report(a, device, gpu, parity_rows, speed_rows, failures, started):
    now = datetime.datetime.now(datetime.timezone.utc)
    mem = "peak device memory (nvidia-smi, per process, MiB)" if device == "cuda" else "peak RSS (MiB)"
    cmd = f"bench/gpu.sh --device {device}" + (" --quick" if a.quick else "")
    text = [
        "# clisc on one device: parity and speed against the official code",
        "",
        f"- run: {started.isoformat(timespec='seconds')} to {now.isoformat(timespec='seconds')}"
        f" ({(now - started).total_seconds() / 60:.1f} min), command `{cmd}`",
        f"- device: {gpu if device == 'cuda' else 'CPU'}; host: {suite.machine()}",
        f"- software: {suite.versions()}",
        f"- threads: {a.threads} for libtorch on both sides; {1 if a.quick else a.rounds} round(s), alternating;"
        f" clisc side built with the `{a.build}` profile"
        + ("" if a.build == "release" else " (the speed rows then measure an unoptimised build, not clisc)"),
        "",
        "## Parity (same weights and inputs, both sides on the device)",
        "",
        "| model | output | max abs diff | tolerance | within? |",
        "|---|---|---|---|---|",
    ]
    text += [f"| {r['model']} | {r['output']} | {r['diff']:.3e} | {r['tol']:.0e} | {'yes' if r['ok'] else '**no**'} |"
             for r in parity_rows]
    text += ["", "## Speed (medians; ratio = clisc / reference)", "",
             f"| task | phase | clisc (s) | reference (s) | ratio | target | met? | {mem} clisc / ref |",
             "|---|---|---|---|---|---|---|---|"]
    for r in speed_rows:
        text.append(f"| {r['task']} | {r['phase']} | {r['clisc']:.4g} | {r['ref']:.4g} | {r['ratio']:.3f}"
                    f" | <= {RATIO:.1f} | {'yes' if r['ratio'] <= RATIO else '**no**'}"
                    f" | {mib(r['mem']['clisc'])} / {mib(r['mem']['ref'])} |")
    text += ["", "## Throughput", ""] + headline(speed_rows, device) + [""]
    if failures:
        text += ["## Failed (no figure)", ""]
        for label, detail in failures:
            text += [f"- {label}:", "", "  ```", *("  " + ln for ln in detail.splitlines()[-15:]), "  ```", ""]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(text))
    print("\n".join(text))
    print("written to", a.out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rust-bin", required=True, help="the bench_suite example binary")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--quick", action="store_true", help="small inputs, one round (the CI form)")
    ap.add_argument("--build", default="release", help="the clisc side's cargo profile (for the report)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "clisc-bench-gpu"))
    ap.add_argument("--out", default=os.path.join(suite.ROOT, "bench", "results", "gpu.md"))
    a = ap.parse_args()
    gpu = suite.cuda_name()
    if a.device == "cuda" and not gpu:
        raise SystemExit("bench/gpu.sh: PyTorch sees no CUDA device (use --device cpu to check the script on the CPU)")
    os.makedirs(a.work, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    t = time.perf_counter()
    print(f"parity on {a.device}", flush=True)
    failures = []
    parity_rows = parity(a, a.work, a.device, failures)
    print(f"speed on {a.device}", flush=True)
    speed_rows = speed(a, a.device, failures)
    report(a, a.device, gpu, parity_rows, speed_rows, failures, started)
    print(f"bench/gpu.sh: {time.perf_counter() - t:.0f} s", flush=True)
    failed = [f"{r['model']} / {r['output']}: {r['diff']:.3e} > {r['tol']:.0e}" for r in parity_rows if not r["ok"]]
    failed += [f"{label}: the process failed" for label, _ in failures]
    if failed:
        print("FAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
