"""Side-by-side benchmark suite: clisc against the tools labs use today.

Prepares the inputs once (under --work), then for every task runs the clisc
side (`host/cli/examples/bench_suite.rs`) and the reference side
(`reference.py`, or `dcm2niix`) as fresh processes on identical inputs,
with the same thread count and float32, alternating which goes first from
round to round so that background load hits both alike. Each process
reports the seconds of its timed repetitions; the driver records its peak
resident memory (`ru_maxrss` from wait4). The table compares medians over
all repetitions of all rounds; ratio = clisc / reference (< 1: clisc is
faster). The model tasks (CLIP, SAM, U-Net) run on the CPU and, when
PyTorch sees a CUDA device, again on it (rows marked "(CUDA)"; both sides
on the same device, float32, each timed phase ending with a device
synchronisation).

    python bench/suite/suite.py --rust-bin PATH --clisc-bin PATH
        [--threads 2] [--rounds 3] [--quick] [--only TASK,...]
        [--devices auto|cpu|cuda|cpu,cuda] [--work DIR] [--out bench/results/suite.md]

`bench/suite/run.sh` (`./dev bench suite`) builds the binaries and calls this.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable
REF = os.path.join(HERE, "reference.py")

# Targets of issue #12: I/O and metrics at most half the Python tool's
# time, model stages no slower than the PyTorch reference.
IO_TARGET, MODEL_TARGET = 0.5, 1.0

FULL = (240, 240, 155)
SIZES = [(120, 120, 78), FULL, (336, 336, 217)]


def cache_dir():
    return os.environ.get("CLISC_CACHE_DIR", os.path.expanduser("~/.cache/clisc"))


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def measure(cmd, watch=None):
    """Runs cmd as a fresh process; returns (wall seconds, peak RSS in MiB, stdout).
    `watch`, when given, is called with the child's PID and its result
    used as a context manager around the wait (e.g. a device-memory poller)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        with watch(p.pid) if watch else contextlib.nullcontext():
            _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - start
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss / 1024.0, stdout


def timings_of(stdout):
    line = [ln for ln in stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)["seconds"]


class Comparison:
    """Alternating rounds of two commands; per phase, all repetition times."""

    def __init__(self, name, clisc_cmd, ref_cmd, whole_process=False):
        self.name = name
        self.cmds = {"clisc": clisc_cmd, "ref": ref_cmd}
        self.whole_process = whole_process
        self.seconds = {"clisc": {}, "ref": {}}
        self.rss = {"clisc": 0.0, "ref": 0.0}

    def run(self, rounds):
        for r in range(rounds):
            order = ("clisc", "ref") if r % 2 == 0 else ("ref", "clisc")
            for side in order:
                wall, rss, out = measure(self.cmds[side])
                t = {"process": [wall]} if self.whole_process else timings_of(out)
                for phase, values in t.items():
                    self.seconds[side].setdefault(phase, []).extend(values)
                self.rss[side] = max(self.rss[side], rss)
            print(f"  {self.name} round {r + 1}: " + ", ".join(
                f"{s} {ph} {statistics.median(v):.3f}s" for s in ("clisc", "ref")
                for ph, v in self.seconds[s].items()), flush=True)
        return self


# ---------------------------------------------------------------- inputs


def synth_case(clisc_bin, work, shape):
    """One synthetic BraTS-like case of `shape` (clisc synth); its folder."""
    tag = "x".join(map(str, shape))
    root = os.path.join(work, "synth", tag)
    if not os.path.isdir(root):
        sh([clisc_bin, "synth", "--out", root + ".tmp", "--cases", "1", "--shape", ",".join(map(str, shape)),
            "--seed", "1"])
        os.rename(root + ".tmp", root)
    cases = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    return os.path.join(root, cases[0])


def uncompressed_copy(case_dir, work):
    """The four modalities of a case as plain .nii files."""
    import nibabel as nib

    out = os.path.join(work, "uncompressed", os.path.basename(case_dir))
    if not os.path.isdir(out):
        os.makedirs(out + ".tmp", exist_ok=True)
        for f in os.listdir(case_dir):
            if f.endswith(".nii.gz") and not f.endswith("_seg.nii.gz"):
                nib.save(nib.load(os.path.join(case_dir, f)), os.path.join(out + ".tmp", f[:-3]))
        os.rename(out + ".tmp", out)
    return out


def mask_pair(case_dir, work):
    """Reference = the case's tumour labels; prediction = the reference
    shifted by (3, -2, 1) voxels plus a detached false-positive blob, so
    that HD95 has real work to do. Returns (pred, ref) paths."""
    import nibabel as nib
    import numpy as np

    size_tag = os.path.basename(os.path.dirname(case_dir))
    out = os.path.join(work, "masks", size_tag)
    pred, ref = os.path.join(out, "pred.nii.gz"), os.path.join(out, "ref.nii.gz")
    if not os.path.exists(pred):
        os.makedirs(out, exist_ok=True)
        seg = [f for f in os.listdir(case_dir) if f.endswith("_seg.nii.gz")][0]
        img = nib.load(os.path.join(case_dir, seg))
        r = (np.asarray(img.dataobj) > 0).astype(np.uint8)
        p = np.roll(r, (3, -2, 1), axis=(0, 1, 2))
        n = r.shape
        c = [int(v * 0.3) for v in n]
        rad = max(2, n[0] // 40)
        p[c[0] - rad:c[0] + rad, c[1] - rad:c[1] + rad, c[2] - rad:c[2] + rad] = 1
        for arr, path in ((r, ref), (p, pred)):
            nib.save(nib.Nifti1Image(arr, img.affine, img.header), path)
    return pred, ref


def dicom_study(case_dir, work, slices):
    """Two series of `slices` axial-oblique 256x256 slices (int16 with a
    rescale slope), written with pydicom by tests/support/make_dicom_study.py
    from the case's FLAIR resampled to 256x256xslices."""
    import nibabel as nib
    import numpy as np
    from scipy.ndimage import zoom

    out = os.path.join(work, "dicom", f"{slices}")
    if not os.path.isdir(out):
        flair = [f for f in os.listdir(case_dir) if f.endswith("_flair.nii.gz")][0]
        v = np.asarray(nib.load(os.path.join(case_dir, flair)).get_fdata(), dtype=np.float32)
        v = zoom(v, (256 / v.shape[0], 256 / v.shape[1], slices / v.shape[2]), order=1)
        src = os.path.join(work, "dicom", f"flair-{slices}.nii.gz")
        os.makedirs(os.path.dirname(src), exist_ok=True)
        nib.save(nib.Nifti1Image(v, np.diag([0.9, 0.9, 1.0, 1.0])), src)
        os.makedirs(out + ".tmp", exist_ok=True)
        sh([PY, os.path.join(ROOT, "tests", "support", "make_dicom_study.py"), src, out + ".tmp",
            "1.2.826.0.1.3680043.8.498.1", "BENCH"])
        os.rename(out + ".tmp", out)
    return out


def weights(kind):
    """The seeded random full-size checkpoints of the parity tests
    (official shapes and formats), generated on demand."""
    if kind == "clip":
        d = os.path.join(cache_dir(), "parity", "clip-v1")
        path = os.path.join(d, "vit-b32-random.state_dict.pt")
        script = os.path.join(ROOT, "plugins", "clip", "tests", "reference", "make_clip_reference.py")
    elif kind == "sam2":
        d = os.path.join(cache_dir(), "parity", "sam2", "v1")
        path = os.path.join(d, "sam2.1_hiera_tiny_random.pt")
        script = os.path.join(ROOT, "plugins", "sam2", "tests", "reference", "make_sam2_reference.py")
    else:
        d = os.path.join(cache_dir(), "parity", "sam", "v1")
        path = os.path.join(d, "sam_vit_b_random.pth")
        script = os.path.join(ROOT, "plugins", "sam", "tests", "reference", "make_sam_reference.py")
    if not os.path.exists(path):
        sh([PY, script, d])
    return path


# ---------------------------------------------------------------- report


def med(v):
    return statistics.median(v) if v else float("nan")


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return f"{model}, {os.cpu_count()} logical CPUs, {mem_kib / 1024 / 1024:.0f} GiB RAM, {platform.system()} {platform.release()}"


def versions():
    import importlib.metadata as md

    parts = [f"Python {platform.python_version()}"]
    for p in ("torch", "nibabel", "SimpleITK", "pydicom", "MedPy", "monai", "segment-anything", "clip-anytorch"):
        try:
            parts.append(f"{p} {md.version(p)}")
        except md.PackageNotFoundError:
            parts.append(f"{p} (absent)")
    try:
        v = subprocess.run(["dcm2niix", "-v"], capture_output=True, text=True).stdout.split()
        parts.append("dcm2niix " + v[-1])
    except OSError:
        parts.append("dcm2niix (absent)")
    return ", ".join(parts)


def cuda_name():
    """The first CUDA device's name when PyTorch sees one, else None.

    Asked in a child process: importing torch here would grow this driver
    to about 0.5 GiB, and Linux carries a parent's peak RSS into the
    ru_maxrss of every process it then starts, which would inflate the
    memory column of every small row."""
    probe = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    try:
        return sh([PY, "-c", probe]).strip() or None
    except (OSError, subprocess.CalledProcessError):  # torch absent or broken: no GPU
        return None


def gpu_line(name, devices):
    """The report's GPU line: `name` is the CUDA device (or None), `devices` what was measured."""
    if name and "cuda" in devices:
        return f"CUDA device {name}: the model rows marked (CUDA) ran on it, both sides, same precision (float32)."
    if name:
        return f"CUDA device {name} present but not measured (--devices cpu)."
    return "No CUDA device: no GPU figures."


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rust-bin", required=True, help="the bench_suite example binary")
    ap.add_argument("--clisc-bin", required=True, help="the clisc CLI (synth, dicom convert)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, U-Net on a small volume only")
    ap.add_argument("--only", default="", help="comma-separated tasks: nifti,dicom,metrics,clip,sam,sam2,unet,unet-train,cam-train")
    ap.add_argument("--devices", default="auto",
                    help="model tasks on: cpu, cuda, cpu,cuda, or auto (the CPU, and CUDA when PyTorch sees a device)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "clisc-bench-suite"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "suite.md"))
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    want = lambda t: not only or t in only  # noqa: E731
    os.makedirs(a.work, exist_ok=True)
    threads = str(a.threads)
    it = 2 if a.quick else 3
    gpu = cuda_name()
    devices = (["cpu"] + (["cuda"] if gpu else [])) if a.devices == "auto" else a.devices.split(",")
    on = lambda d: [] if d == "cpu" else [d]  # noqa: E731 (the optional last argument of both sides)
    tag = lambda name, d: name if d == "cpu" else f"{name} (CUDA)"  # noqa: E731
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    rows, scaling = [], []
    rb = a.rust_bin

    def compare(name, clisc_cmd, ref_cmd, target, ref_name, size, whole=False, rounds=None, scale=False):
        c = Comparison(name, clisc_cmd, ref_cmd, whole).run(rounds or a.rounds)
        for phase in c.seconds["clisc"]:
            cs, rs = med(c.seconds["clisc"][phase]), med(c.seconds["ref"][phase])
            ratio = cs / rs
            row = dict(task=name, phase=phase, size=size, clisc=cs, ref=rs, ref_name=ref_name, ratio=ratio,
                       target=target, n=len(c.seconds["clisc"][phase]),
                       rss_clisc=c.rss["clisc"], rss_ref=c.rss["ref"])
            (scaling if scale else rows).append(row)

    print("preparing inputs in", a.work, flush=True)
    full = synth_case(a.clisc_bin, a.work, FULL)
    sizes = [FULL] if a.quick else SIZES

    if want("nifti"):
        for shape in sizes:
            case = synth_case(a.clisc_bin, a.work, shape)
            tag = "x".join(map(str, shape))
            outd = os.path.join(a.work, "out")
            for backend, label in (("nibabel", "nibabel"), ("sitk", "SimpleITK")):
                compare(f"NIfTI .nii.gz, 4 modalities ({label})",
                        [rb, "nifti", case, os.path.join(outd, "clisc"), str(it)],
                        [PY, REF, "nifti", backend, case, os.path.join(outd, backend), str(it)],
                        IO_TARGET, label, tag, scale=shape != FULL)
        plain = uncompressed_copy(full, a.work)
        compare("NIfTI .nii, 4 modalities (nibabel)",
                [rb, "nifti", plain, os.path.join(a.work, "out", "clisc-nii"), str(it)],
                [PY, REF, "nifti", "nibabel", plain, os.path.join(a.work, "out", "nib-nii"), str(it)],
                IO_TARGET, "nibabel", "x".join(map(str, FULL)))

    if want("dicom"):
        study = dicom_study(full, a.work, 300)
        compare("DICOM 2x300 slices 256x256 to f32 volumes", [rb, "dicom", study, str(it)],
                [PY, REF, "dicom", study, str(it)], IO_TARGET, "pydicom + numpy", "2x300 files")
        out_c, out_d = os.path.join(a.work, "conv-clisc"), os.path.join(a.work, "conv-dcm2niix")

        compare("DICOM 2x300 slices to .nii (whole process)",
                ["bash", "-c", f'rm -rf "{out_c}" && "{a.clisc_bin}" dicom convert --uncompressed "{study}" "{out_c}" >/dev/null'],
                ["bash", "-c", f'rm -rf "{out_d}" && mkdir -p "{out_d}" && dcm2niix -z n -b n -o "{out_d}" "{study}" >/dev/null'],
                IO_TARGET, "dcm2niix", "2x300 files", whole=True)

    if want("metrics"):
        for shape in sizes:
            case = synth_case(a.clisc_bin, a.work, shape)
            pred, ref = mask_pair(case, a.work)
            compare("Dice + HD95 of two masks", [rb, "metrics", pred, ref, str(it)],
                    [PY, REF, "metrics", pred, ref, str(it)], IO_TARGET, "MedPy",
                    "x".join(map(str, shape)), scale=shape != FULL)

    for dev in devices:
        if want("clip"):
            w = weights("clip")
            compare(tag("CLIP ViT-B/32 image encoder, batch 16", dev),
                    [rb, "clip", w, threads, str(it), "16", *on(dev)],
                    [PY, REF, "clip", w, threads, str(it), "16", *on(dev)], MODEL_TARGET, "OpenAI CLIP (PyTorch)",
                    "16x3x224x224")

        if want("sam"):
            w = weights("sam")
            compare(tag("SAM ViT-B, one 240x240 slice, box prompt", dev), [rb, "sam", w, threads, "2", *on(dev)],
                    [PY, REF, "sam", w, threads, "2", *on(dev)], MODEL_TARGET, "segment-anything SamPredictor",
                    "240x240 -> 1024", rounds=2)

        if want("sam2"):
            w = weights("sam2")
            compare(tag("SAM 2.1 Hiera-tiny, 240x240 slices, box on the first of 8", dev),
                    [rb, "sam2", w, threads, "2", *on(dev)],
                    [PY, REF, "sam2", w, threads, "2", *on(dev)], MODEL_TARGET, "sam2 1.1.0 (image and video predictors)",
                    "8x240x240 -> 1024", rounds=2)

        if want("unet"):
            feats = "16,32,64,128,256"
            shapes = [(128, 128, 80)] if a.quick else [(128, 128, 80), FULL]
            for shape in shapes:
                dims = ",".join(map(str, shape))
                compare(tag("3D U-Net (paper, 64^3 windows, overlap 0.5) sliding window", dev),
                        [rb, "unet", dims, threads, "1", feats, *on(dev)],
                        [PY, REF, "unet", dims, threads, "1", feats, *on(dev)],
                        MODEL_TARGET, "MONAI sliding_window_inference", "x".join(map(str, shape)),
                        rounds=2, scale=shape != FULL and not a.quick)

        if want("cam-train"):
            # The classifier, input size and batch of configs/weight-free-brats.toml.
            compare(tag("ResNet-18 CAM classifier, one training epoch (Adam, weighted CE, flips)", dev),
                    [rb, "cam-train", "128,256", threads, "2", "32", *on(dev)],
                    [PY, REF, "cam-train", "128,256", threads, "2", "32", *on(dev)],
                    MODEL_TARGET, "torchvision ResNet-18, the same head and training", "256x1x128x128",
                    rounds=2)

        if want("unet-train"):
            # The network, patch, batch and loss of configs/weight-free-brats.toml.
            feats, patch, batch = "8,16,32,64", "48,48,32", "2"
            compare(tag("3D U-Net training step (weight-free-brats: batch 2, Dice + CE, SGD)", dev),
                    [rb, "unet-train", patch, threads, "10", feats, batch, "fp32", *on(dev)],
                    [PY, REF, "unet-train", patch, threads, "10", feats, batch, "fp32", *on(dev)],
                    MODEL_TARGET, "the same network in PyTorch, torch.optim.SGD", "2x1x48x48x32", rounds=2)

    load_after = os.getloadavg()
    write_report(a, rows, scaling, started, load_before, load_after, gpu_line(gpu, devices))


def fmt_rows(rows, with_target=True):
    head = "| task | phase | input | clisc (s) | reference | reference (s) | ratio | target | met? | peak RSS clisc / ref (MiB) |"
    if not with_target:
        head = "| task | phase | input | clisc (s) | reference | reference (s) | ratio | peak RSS clisc / ref (MiB) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r["task"], r["phase"], r["size"], f"{r['clisc']:.4g}", r["ref_name"], f"{r['ref']:.4g}",
                 f"{r['ratio']:.3f}"]
        if with_target:
            cells += [f"<= {r['target']}", "yes" if r["ratio"] <= r["target"] else "**no**"]
        cells.append(f"{r['rss_clisc']:.0f} / {r['rss_ref']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def options(a):
    """The suite options of this run, as typed after `./dev bench suite`."""
    opts = [f" --rounds {a.rounds}", f" --threads {a.threads}"]
    if a.quick:
        opts.append(" --quick")
    if a.only:
        opts.append(f" --only {a.only}")
    return "".join(opts)


def write_report(a, rows, scaling, started, load_before, load_after, gpu):
    now = datetime.datetime.now(datetime.timezone.utc)
    text = [
        "# clisc benchmark suite: side by side with the tools labs use",
        "",
        f"- run: {started.isoformat(timespec='seconds')} to {now.isoformat(timespec='seconds')}"
        f" ({(now - started).total_seconds() / 60:.1f} min), command `./dev bench suite{options(a)}`",
        f"- machine: {machine()}",
        f"- load average (1 min) before / after: {load_before[0]:.1f} / {load_after[0]:.1f}",
        f"- software: {versions()}",
        f"- threads: {a.threads} for libtorch on both sides; float32 everywhere; I/O and metrics single-threaded on both sides",
        f"- {gpu}",
        f"- method: {a.rounds} rounds (2 for SAM and the U-Net), alternating which side runs first; every round is a"
        " fresh process per side (inputs and weights loaded before the clock starts, one warm-up pass for"
        " CLIP and SAM); medians over all timed repetitions; ratio = clisc / reference (< 1: clisc faster);"
        " peak RSS = ru_maxrss of each process (the Python side includes the interpreter and its imports)."
        " The DICOM-to-NIfTI row times whole processes (`clisc dicom convert --uncompressed` vs `dcm2niix -z n`).",
        "",
        "## At the full BraTS size (240x240x155) and model inputs",
        "",
        fmt_rows(rows),
        "",
    ]
    if scaling:
        text += ["## Other volume sizes (scaling)", "", fmt_rows(scaling, with_target=False), ""]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(text))
    print("\n".join(text))
    print("written to", a.out)


if __name__ == "__main__":
    main()
