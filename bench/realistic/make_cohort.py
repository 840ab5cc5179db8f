#!/usr/bin/env python3
"""Realistic BraTS-2020-layout cohorts on real brain anatomy.

The cartoon brains of `clisc synth` are fast and good for tests, but the
pipeline's settings must also hold on real anatomy at the native 1 mm of
BraTS. This generator builds each case from the tissue maps of the MNI
ICBM152 2009a symmetric template (grey matter, white matter and the T1
template, 1 mm), which ship inside the `nilearn` wheel: `fetch_templates`
downloads that wheel from PyPI (nothing else is fetched) and unpacks the
three files.

Per case (a deterministic function of `--seed` and the case index):

* anatomy: a random rigid transform (rotation up to 8 degrees about each
  axis, translation up to 6 mm) and an isotropic scale (0.92-1.06) of the
  template, resampled into the BraTS grid (240 x 240 x 155, 1 mm, affine
  `diag(-1, -1, 1)` with the y origin at 239), skull-stripped (background
  exactly 0);
* one glioma (two in 15% of cases): an irregular, anisotropic, rotated
  core (noise-perturbed radius) seeded in white matter, either an
  enhancing rim (label 4) around necrosis (label 1) or a non-enhancing
  core (label 1), inside oedema (label 2) that infiltrates white matter
  preferentially, spares the CSF and stops at the brain's edge; a mass effect pushes the
  surrounding anatomy outwards; whole-tumour volumes span roughly
  5-200 cm^3;
* unlabelled confounders: in 40% of cases a few small white-matter
  hyperintensities, bright on FLAIR and not tumour;
* contrast: per-tissue intensities per modality with per-case variation
  (T1: WM > GM > CSF; T1ce adds the enhancing rim; T2: CSF and oedema
  bright; FLAIR: CSF dark, oedema and tumour bright, grey matter a little
  brighter than white matter), partial volume at every border, a
  per-modality smooth multiplicative bias field (up to about +-25%) and
  Rician noise (2-4% of white matter).

Outputs `BraTS20_Training_NNN/BraTS20_Training_NNN_{t1,t1ce,t2,flair,seg}.nii.gz`
(float32 images, uint8 labels 0/1/2/4) and `cohort.json` with each case's
parameters and whole-tumour volume.

Usage:
    python bench/realistic/make_cohort.py --out data/realistic-tune --seed 101 --cases 30
    python bench/realistic/make_cohort.py --out data/realistic-test --seed 202 --cases 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

NILEARN_VERSION = "0.14.1"
TEMPLATES = {
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
}
SHAPE = (240, 240, 155)
MODALITIES = ("t1", "t1ce", "t2", "flair")

# Mean intensity of each tissue class per modality (arbitrary units, white
# matter of T1 = 1). Per case every value is multiplied by a random factor.
TISSUE_MEANS = {
    #           csf   gm    wm    oedema necrosis enhancing nonenh_core wmh
    "t1":   [0.25, 0.62, 1.00, 0.55, 0.30, 0.60, 0.50, 0.80],
    "t1ce": [0.25, 0.62, 1.00, 0.55, 0.30, 1.35, 0.52, 0.80],
    "t2":   [1.60, 0.85, 0.60, 1.25, 1.50, 1.00, 1.15, 1.05],
    "flair": [0.12, 0.80, 0.62, 1.30, 0.85, 1.10, 1.25, 1.15],
}
CSF, GM, WM, OEDEMA, NECROSIS, ENHANCING, NONENH, WMH = range(8)


def fetch_templates(cache: Path) -> dict[str, Path]:
    """The three template files, from the nilearn wheel (PyPI), cached."""
    folder = cache / f"nilearn-{NILEARN_VERSION}-templates"
    paths = {k: folder / v for k, v in TEMPLATES.items()}
    if all(p.exists() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    wheel_dir = cache / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheel = wheel_dir / f"nilearn-{NILEARN_VERSION}-py3-none-any.whl"
    if not wheel.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             f"nilearn=={NILEARN_VERSION}", "-d", str(wheel_dir)],
            check=True,
        )
    with zipfile.ZipFile(wheel) as z:
        for key, name in TEMPLATES.items():
            with z.open(f"nilearn/datasets/data/{name}") as src:
                paths[key].write_bytes(src.read())
    return paths


def load_anatomy(paths: dict[str, Path]) -> np.ndarray:
    """Tissue probabilities (csf, gm, wm) on the template grid, shape (3, X, Y, Z)."""
    # The files are uint8 (probability x 255) in RAS orientation with unit
    # voxels; BraTS stores x and y the other way round (affine
    # diag(-1, -1, 1)), so both axes are flipped here.
    def load(key):
        data = np.asarray(nib.load(paths[key]).dataobj, dtype=np.float32) / 255.0
        return data[::-1, ::-1, :]

    gm, wm, t1 = load("gm"), load("wm"), load("t1")
    # The T1 template is skull-stripped: its nonzero voxels are the brain
    # (with the ventricles and sulci, which GM + WM leave out: that is CSF).
    brain = ndimage.binary_fill_holes(t1 > 0.05)
    brain = ndimage.binary_opening(brain, iterations=2)
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0, 1)
    return np.ascontiguousarray(np.stack([csf, gm, wm]))


def smooth_noise(rng: np.random.Generator, shape, cells: int) -> np.ndarray:
    """Zero-mean, unit-std smooth random field: a `cells`^3 grid of white
    noise upsampled cubically to `shape`."""
    coarse = rng.standard_normal((cells, cells, cells)).astype(np.float32)
    coarse = ndimage.gaussian_filter(coarse, 0.6, mode="wrap")
    field = ndimage.zoom(coarse, [s / cells for s in shape], order=1, mode="nearest")
    field = field[: shape[0], : shape[1], : shape[2]]
    field -= field.mean()
    return field / (field.std() + 1e-6)


def rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    a, b, c = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def place_anatomy(anatomy: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Rigid + scale transform of the template into the BraTS grid."""
    brain = anatomy.sum(0) > 0.5
    centre_src = np.array(ndimage.center_of_mass(brain))
    centre_dst = (np.array(SHAPE) - 1) / 2.0
    scale = rng.uniform(0.92, 1.06)
    rot = rotation(rng, 8.0)
    shift = rng.uniform(-6, 6, 3)
    # The template's z extent (with the cerebellum) is about 160 mm, over
    # the BraTS grid's 155; move the brain up so the cerebrum stays whole
    # and only the bottom of the cerebellum may be cut, as in many scans.
    shift[2] += 4.0
    # Output index o samples source index  M (o - c_dst - shift) + c_src.
    matrix = rot / scale
    offset = centre_src - matrix @ (centre_dst + shift)
    out = np.stack([
        ndimage.affine_transform(a, matrix, offset, output_shape=SHAPE, order=1)
        for a in anatomy
    ])
    return np.clip(out, 0, 1), {"scale": round(float(scale), 4), "shift_mm": np.round(shift, 2).tolist()}


def deformed_sphere(rng, shape, centre, radius, roughness, cells=10):
    """Normalised distance to an irregular, anisotropic, rotated blob:
    values below 1 are inside."""
    axes = radius * rng.uniform(0.75, 1.25, 3)
    rot = rotation(rng, 90.0)
    # The bumps stretch the radius by at most 1.8 and callers divide the
    # distance by at most 1.2 more: nothing beyond 2.2 radii can be inside.
    reach = 2.2 * axes.max()
    lo = np.maximum(np.floor(centre - reach).astype(int), 0)
    hi = np.minimum(np.ceil(centre + reach).astype(int) + 1, shape)
    grid = np.mgrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32)
    rel = np.tensordot(rot.T.astype(np.float32), grid - centre[:, None, None, None], axes=1)
    d = np.sqrt(sum((rel[i] / axes[i]) ** 2 for i in range(3)))
    local = tuple(hi - lo)
    bumps = smooth_noise(rng, local, max(3, int(min(local) / cells)))
    d = d / np.clip(1 + roughness * bumps, 0.45, 1.8)
    full = np.full(shape, 9.0, dtype=np.float32)
    full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = d
    return full


def mass_effect(tissue: np.ndarray, centre: np.ndarray, radius: float, strength: float) -> np.ndarray:
    """Pushes the anatomy away from `centre`: each voxel at distance r takes
    the tissue found at r (1 - a(r)), a falling off beyond the tumour."""
    # Beyond 3.5 x 1.6 radii the displacement is below 1e-5 voxels: only
    # the box around the tumour moves.
    reach = 3.5 * 1.6 * radius
    shape = np.array(tissue.shape[1:])
    lo = np.maximum(np.floor(centre - reach).astype(int), 0)
    hi = np.minimum(np.ceil(centre + reach).astype(int) + 1, shape)
    grid = np.mgrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32)
    rel = grid - centre[:, None, None, None]
    r = np.sqrt((rel ** 2).sum(0)) + 1e-3
    a = strength * np.exp(-((r / (1.6 * radius)) ** 2))
    coords = centre[:, None, None, None] + rel * (1 - a)
    out = tissue.copy()
    for t, o in zip(tissue, out):
        o[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = ndimage.map_coordinates(t, coords, order=1)
    return out


def depth(brain):
    """Distance (mm) of each brain voxel to the brain's edge, computed on a
    2 mm grid (plenty for choosing seeds)."""
    coarse = ndimage.distance_transform_edt(brain[::2, ::2, ::2]) * 2
    full = np.repeat(np.repeat(np.repeat(coarse, 2, 0), 2, 1), 2, 2)
    return full[: brain.shape[0], : brain.shape[1], : brain.shape[2]]


def add_tumour(rng, tissue, labels, fractions):
    """One glioma: updates `labels` (0/1/2/4) and the soft class fractions."""
    brain = tissue.sum(0) > 0.5
    wm = tissue[2]
    # Seed in deep white matter, away from the brain's edge.
    inner = (depth(brain) > 18) & (wm > 0.7)
    candidates = np.argwhere(inner & (labels == 0))
    centre = candidates[rng.integers(len(candidates))].astype(np.float32)
    wt_radius = rng.uniform(10.0, 32.0)
    core_radius = wt_radius * rng.uniform(0.35, 0.7)
    tissue[:] = mass_effect(tissue, centre, core_radius, rng.uniform(0.15, 0.35))
    brain = tissue.sum(0) > 0.5
    wm = tissue[2]

    core_d = deformed_sphere(rng, labels.shape, centre, core_radius, 0.35)
    oedema_d = deformed_sphere(rng, labels.shape, centre, wt_radius, 0.45, cells=6)
    # Oedema spreads along white matter: the effective distance shrinks
    # where white matter is, grows in grey matter and CSF.
    oedema_d = oedema_d / (0.7 + 0.5 * wm)
    # Oedema does not fill the ventricles or sulci.
    oedema = (oedema_d < 1) & brain & (tissue[0] < 0.5)
    core = (core_d < 1) & brain
    oedema |= ndimage.binary_dilation(core, iterations=2) & brain
    enhancing_type = rng.random() < 0.7
    kind = "enhancing" if enhancing_type else "non-enhancing"
    if enhancing_type:
        rim = rng.uniform(0.55, 0.8)
        necrosis = core & (core_d < rim)
        enhancing = core & ~necrosis
    else:
        necrosis = np.zeros_like(core)
        enhancing = np.zeros_like(core)
    labels[oedema & (labels == 0)] = 2
    labels[core & ~enhancing_type] = 1
    labels[necrosis] = 1
    labels[enhancing] = 4
    fractions[OEDEMA][oedema] = 1
    if enhancing_type:
        fractions[NECROSIS][necrosis] = 1
        fractions[ENHANCING][enhancing] = 1
    else:
        fractions[NONENH][core] = 1
    return {"centre": centre.astype(int).tolist(), "kind": kind,
            "radius_mm": round(float(wt_radius), 1)}


def add_wm_hyperintensities(rng, tissue, fractions):
    """A few small unlabelled white-matter lesions (bright on FLAIR/T2)."""
    brain = tissue.sum(0) > 0.5
    inner = (depth(brain) > 10) & (tissue[2] > 0.8)
    candidates = np.argwhere(inner)
    n = int(rng.integers(1, 5))
    for _ in range(n):
        c = candidates[rng.integers(len(candidates))].astype(np.float32)
        d = deformed_sphere(rng, brain.shape, c, rng.uniform(1.5, 4.0), 0.3)
        fractions[WMH][d < 1] = 1
    return n


def lesion_shares(fractions):
    """Soft lesion class fractions (partial volume at their borders),
    shape (5, X, Y, Z), and their total (at most 1)."""
    lesion = np.stack([ndimage.gaussian_filter(f, 0.8) for f in fractions[3:]])
    total = np.clip(lesion.sum(0), 0, 1)
    return lesion / np.maximum(lesion.sum(0), 1e-6) * total, total


def image(rng, modality, tissue, lesion, lesion_total, brain):
    """One modality: partial-volume mixture, texture, bias, Rician noise."""
    means = np.array(TISSUE_MEANS[modality]) * rng.uniform(0.9, 1.1, 8)
    # The lesion classes take their share from the anatomy underneath.
    means = means.astype(np.float32)
    img = (1 - lesion_total) * np.tensordot(means[:3], tissue, axes=1)
    img += np.tensordot(means[3:], lesion, axes=1)
    shape = img.shape
    texture = 1 + 0.04 * smooth_noise(rng, shape, 40)
    bias = np.exp(rng.uniform(0.08, 0.22) * smooth_noise(rng, shape, 4))
    img = img * texture * bias
    wm_level = means[WM]
    sigma = rng.uniform(0.02, 0.04) * wm_level
    img = np.sqrt((img + sigma * rng.standard_normal(shape, dtype=np.float32)) ** 2
                  + (sigma * rng.standard_normal(shape, dtype=np.float32)) ** 2)
    img = img * rng.uniform(400, 900)
    img[~brain] = 0
    return img.astype(np.float32)


def brats_affine() -> np.ndarray:
    a = np.diag([-1.0, -1.0, 1.0, 1.0])
    a[1, 3] = SHAPE[1] - 1
    return a


def make_case(args) -> dict:
    anatomy_path, out, seed, index = args
    case_id = f"BraTS20_Training_{index + 1:03d}"
    record_path = out / case_id / "case.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("seed") == seed:
            return record  # made by an earlier, interrupted call
    rng = np.random.default_rng([seed, index])
    anatomy = np.load(anatomy_path)
    tissue, placement = place_anatomy(anatomy, rng)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    fractions = np.zeros((8,) + SHAPE, dtype=np.float32)
    tumours = [add_tumour(rng, tissue, labels, fractions)]
    if rng.random() < 0.15:
        tumours.append(add_tumour(rng, tissue, labels, fractions))
    wmh = add_wm_hyperintensities(rng, tissue, fractions) if rng.random() < 0.4 else 0
    fractions[WMH][labels > 0] = 0
    brain = tissue.sum(0) > 0.5
    labels[~brain] = 0
    folder = out / case_id
    folder.mkdir(parents=True, exist_ok=True)
    affine = brats_affine()
    lesion, lesion_total = lesion_shares(fractions)
    del fractions
    for m in MODALITIES:
        img = image(rng, m, tissue, lesion, lesion_total, brain)
        nifti = nib.Nifti1Image(img, affine)
        nifti.header.set_xyzt_units("mm")
        nib.save(nifti, folder / f"{case_id}_{m}.nii.gz")
    seg = nib.Nifti1Image(labels, affine)
    seg.header.set_xyzt_units("mm")
    nib.save(seg, folder / f"{case_id}_seg.nii.gz")
    record = {"case": case_id, "seed": seed,
              "whole_tumour_cm3": round(float((labels > 0).sum()) / 1000, 2),
              "tumours": tumours, "wm_hyperintensities": wmh, **placement}
    # Written last: its presence means the case is complete.
    record_path.write_text(json.dumps(record) + "\n")
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--cases", type=int, default=30)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--cache", type=Path,
                   default=Path(os.environ.get("CLISC_CACHE_DIR", Path.home() / ".cache/clisc")))
    args = p.parse_args()
    templates = fetch_templates(args.cache)
    args.out.mkdir(parents=True, exist_ok=True)
    anatomy_path = args.cache / f"nilearn-{NILEARN_VERSION}-templates" / "anatomy-v1.npy"
    if not anatomy_path.exists():
        np.save(anatomy_path, load_anatomy(templates))
    jobs = [(anatomy_path, args.out, args.seed, i) for i in range(args.cases)]
    with ProcessPoolExecutor(args.workers) as pool:
        cases = []
        for record in pool.map(make_case, jobs):
            print(f"{record['case']}: whole tumour {record['whole_tumour_cm3']} cm3", flush=True)
            cases.append(record)
    cohort = {"generator": "bench/realistic/make_cohort.py", "seed": args.seed,
              "template": f"MNI ICBM152 2009a sym (nilearn {NILEARN_VERSION} wheel)",
              "cases": cases}
    (args.out / "cohort.json").write_text(json.dumps(cohort, indent=1) + "\n")


if __name__ == "__main__":
    main()
