"""Independent NIfTI reader/writer for clisc's parity tests (nibabel).

    nibabel_check.py read FILE...   For each file: what nibabel sees (shape,
                                    best affine, sform/qform and codes,
                                    on-disk dtype, scaling) as JSON on
                                    stdout; voxels (get_fdata, x-fastest,
                                    float64) written next to it as FILE.f64.
    nibabel_check.py write DIR      nibabel writes test files of several
                                    types (oblique affines, int16 with
                                    scaling, qform-only) into DIR with the
                                    same .f64 voxel dumps and a manifest.json.
"""
import json
import sys

import nibabel as nib
import numpy as np


def describe(path):
    img = nib.load(path)
    hdr = img.header
    data = np.asarray(img.get_fdata(dtype=np.float64))
    data.ravel(order="F").astype("<f8").tofile(path + ".f64")
    sform, scode = hdr.get_sform(coded=True)
    qform, qcode = hdr.get_qform(coded=True)
    slope, inter = hdr.get_slope_inter()
    return {
        "path": path,
        "shape": list(img.shape),
        "affine": img.affine.tolist(),
        "sform": None if sform is None else sform.tolist(),
        "sform_code": int(scode),
        "qform": None if qform is None else qform.tolist(),
        "qform_code": int(qcode),
        "zooms": [float(z) for z in hdr.get_zooms()[:3]],
        "dtype": str(hdr.get_data_dtype()),
        "slope": None if slope is None else float(slope),
        "inter": None if inter is None else float(inter),
        "descrip": hdr["descrip"].tobytes().split(b"\0")[0].decode("latin-1"),
    }


def oblique(spacing, angles, origin):
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def write(out):
    rng = np.random.default_rng(7)
    files = []
    shape = (13, 11, 7)
    # int16 with scaling, oblique, both codes.
    a = oblique([0.9, 1.1, 2.5], [0.1, -0.2, 0.3], [-40.5, 12.25, 7.0])
    raw = rng.integers(-3000, 3000, size=shape).astype(np.int16)
    img = nib.Nifti1Image(raw, a)
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(0.5, 10.0)
    img.header.set_sform(a, code=1)
    img.header.set_qform(a, code=1)
    img.header["descrip"] = b"int16 scaled oblique"
    files.append(("int16_scaled_oblique.nii.gz", img))
    # float64, LPS-like flip, sform aligned (2), qform scanner (1).
    a = np.diag([-1.0, -1.0, 1.2, 1.0])
    a[:3, 3] = [10.0, 20.0, -30.0]
    img = nib.Nifti1Image(rng.normal(size=shape), a)
    img.header.set_data_dtype(np.float64)
    img.header.set_sform(a, code=2)
    img.header.set_qform(a, code=1)
    files.append(("float64_flipped.nii", img))
    # uint8 labels, plain .nii.
    img = nib.Nifti1Image(rng.integers(0, 5, size=shape).astype(np.uint8), np.diag([1.0, 1.0, 1.0, 1.0]))
    img.header.set_sform(img.affine, code=1)
    files.append(("uint8_labels.nii", img))
    # int32 with qform only (sform_code 0), oblique, negative qfac.
    a = oblique([1.5, 1.5, 3.0], [0.05, 0.0, -0.4], [1.0, 2.0, 3.0])
    a[:3, 2] *= -1
    img = nib.Nifti1Image(rng.integers(-10**6, 10**6, size=shape).astype(np.int32), a)
    img.header.set_qform(a, code=1)
    img.header.set_sform(None, code=0)
    files.append(("int32_qform_only.nii.gz", img))
    # float32 with both codes and different sform (sform wins).
    a = oblique([1.0, 1.0, 1.0], [0.0, 0.0, 0.2], [5.0, -5.0, 0.0])
    img = nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), a)
    img.header.set_sform(a, code=4)
    q = np.eye(4)
    img.header.set_qform(q, code=1)
    files.append(("float32_sform_wins.nii.gz", img))
    manifest = []
    for name, img in files:
        path = f"{out}/{name}"
        nib.save(img, path)
        manifest.append(describe(path))
    json.dump(manifest, open(f"{out}/manifest.json", "w"), indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "read":
        print(json.dumps([describe(p) for p in sys.argv[2:]]))
    elif sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
