#!/usr/bin/env python3
"""Writes the DICOM test series for host/cli/tests/dicom_*.rs with pydicom (an
independent DICOM writer) and, for JPEG baseline/lossless, DCMTK's dcmcjpeg.
Its writing functions (`base_dataset`, `set_pixels`, `save`, `rot`) are also
the writer of tests/support/make_dicom_study.py, the root tests' studies.

    make_series.py OUT_DIR

Every case goes to OUT_DIR/<case>/ (file names are random hex, some in
nested folders) and OUT_DIR/cases.json describes them: the geometry that
was written, the transfer syntax, whether dcm2niix's output is expected to
match clisc's voxel for voxel (`compare`), the warnings clisc must give and
the number of series clisc must find. Deterministic (fixed seeds).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"

RNG = np.random.default_rng(20251126)


def uid(tag):
    """Deterministic UIDs so that reruns write the same files."""
    return generate_uid(entropy_srcs=["clisc-dicom-tests", tag])


def rot(ax, ay):
    """Rotation matrix: about x by ax degrees, then about y by ay degrees."""
    a, b = np.radians(ax), np.radians(ay)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return ry @ rx


def pattern(nx, ny, nz, lo, hi, seed):
    """Asymmetric voxel values (any flip or permutation changes them)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    base = (x * 7 + y * 13 + z * 31) % (hi - lo) + lo
    noise = rng.integers(0, 5, size=base.shape)
    return np.clip(base + noise, lo, hi)  # [slice, row, col]


def base_dataset(study, series, desc, number, sop_class, frame_of_ref, modality="MR", **fields):
    """Patient, study and series modules of one image; `fields` (DICOM
    keywords) replace the test patient's and study's values."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "CLISC-TEST-" + study[-6:]
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study
    ds.StudyDate = "20250101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = "A" + study[-6:]
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "clisc test study"
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = number
    ds.SeriesDescription = desc
    ds.Modality = modality
    ds.FrameOfReferenceUID = frame_of_ref
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "clisc-tests"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    for keyword, value in fields.items():
        setattr(ds, keyword, value)
    return ds


def set_pixels(ds, arr):
    """Pixel module from a 2D or 3D integer array (dtype picks the layout)."""
    arr = np.ascontiguousarray(arr)
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    if arr.dtype == np.uint8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    elif arr.dtype == np.int16:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    else:
        arr = arr.astype(np.uint16)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = arr.tobytes()


def save(ds, path, syntax):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = uid("implementation")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if syntax in (None, JPEG_BASELINE, JPEG_LOSSLESS_SV1) else syntax
    ds.file_meta = meta
    if syntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(syntax)
    elif syntax == ImplicitVRLittleEndian:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    if syntax in (JPEG_BASELINE, JPEG_LOSSLESS_SV1):
        flag = "+eb" if syntax == JPEG_BASELINE else "+e1"
        tmp = path + ".tmp"
        subprocess.run(["dcmcjpeg", flag, path, tmp], check=True)
        os.replace(tmp, path)
        assert str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID) == syntax


def random_name(root, nested):
    name = "%016x" % RNG.integers(0, 2**63)
    if nested:
        sub = "%02x" % RNG.integers(0, 4)
        return os.path.join(root, "sub" + sub, name)
    return os.path.join(root, name)


def write_series(root, *, name, study, number, desc, nx, ny, offsets, spacing_rc, rot_deg=(0, 0),
                 base_rows=((1, 0, 0), (0, 1, 0)), origin=(-30.0, -20.0, 10.0), dtype=np.int16,
                 lo=0, hi=1000, slopes=None, intercepts=None, syntax=None, tilt_mm=0.0,
                 image_type=("ORIGINAL", "PRIMARY", "M", "ND"), nested=False, echo=None,
                 frame_of_ref=None, sop_class=MR_STORAGE, modality="MR", seed=0):
    """One classic (single-frame per file) series; returns its description."""
    r = rot(*rot_deg)
    row_dir = r @ np.array(base_rows[0], float)
    col_dir = r @ np.array(base_rows[1], float)
    normal = np.cross(row_dir, col_dir)
    series = uid(name + "/series/" + str(number))
    frame_of_ref = frame_of_ref or uid(name + "/for")
    nz = len(offsets)
    vox = pattern(nx, ny, nz, lo, hi, seed).astype(dtype)
    dr, dc = spacing_rc
    positions = []
    for k, off in enumerate(offsets):
        ds = base_dataset(study, series, desc, number, sop_class, frame_of_ref, modality)
        ds.SOPInstanceUID = uid(f"{name}/{number}/{k}")
        ds.ImageType = list(image_type)
        ds.InstanceNumber = k + 1
        ipp = np.array(origin) + off * normal + k * tilt_mm * col_dir
        positions.append(ipp.tolist())
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([row_dir, col_dir])]
        ds.PixelSpacing = [f"{dr:g}", f"{dc:g}"]
        ds.SliceThickness = "9.9"  # deliberately wrong: spacing must come from positions
        ds.SliceLocation = f"{off:.4f}"
        if echo is not None:
            ds.EchoNumbers = echo[0]
            ds.EchoTime = echo[1]
        if slopes is not None:
            ds.RescaleSlope = f"{slopes[k]:g}"
            ds.RescaleIntercept = f"{intercepts[k]:g}"
            if modality == "MR":
                ds.RescaleType = "US"
        set_pixels(ds, vox[k])
        save(ds, random_name(root, nested), syntax)
    return {
        "series_uid": series,
        "number": number,
        "description": desc,
        "slices": nz,
        "positions": positions,
        "row_dir": row_dir.tolist(),
        "col_dir": col_dir.tolist(),
    }


def write_enhanced(root, *, name, study, number, desc, nx, ny, offsets, spacing_rc, rot_deg, slope, intercept,
                   seed, reverse_frames):
    """One Enhanced MR Image (multi-frame) file."""
    r = rot(*rot_deg)
    row_dir, col_dir = r @ np.array([1.0, 0, 0]), r @ np.array([0, 1.0, 0])
    normal = np.cross(row_dir, col_dir)
    series = uid(name + "/series")
    ds = base_dataset(study, series, desc, number, ENHANCED_MR_STORAGE, uid(name + "/for"))
    ds.SOPInstanceUID = uid(name + "/sop")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime = "20250101", "120000", "20250101120000"
    nz = len(offsets)
    order = list(range(nz))[::-1] if reverse_frames else list(range(nz))
    vox = pattern(nx, ny, nz, 0, 2000, seed).astype(np.uint16)
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [f"{spacing_rc[0]:g}", f"{spacing_rc[1]:g}"]
    pm.SliceThickness = "7.7"
    shared.PixelMeasuresSequence = Sequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([row_dir, col_dir])]
    shared.PlaneOrientationSequence = Sequence([po])
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = f"{slope:g}", f"{intercept:g}", "US"
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    frames = []
    positions = []
    for i, k in enumerate(order):
        item = Dataset()
        fc = Dataset()
        fc.StackID = "1"
        fc.InStackPositionNumber = k + 1
        fc.DimensionIndexValues = [1, k + 1]
        item.FrameContentSequence = Sequence([fc])
        pp = Dataset()
        ipp = np.array([-40.0, -35.0, -12.0]) + offsets[k] * normal
        positions.append(ipp.tolist())
        pp.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        item.PlanePositionSequence = Sequence([pp])
        per_frame.append(item)
        frames.append(vox[k])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    dim_org = uid(name + "/dimorg")
    d_org = Dataset()
    d_org.DimensionOrganizationUID = dim_org
    ds.DimensionOrganizationSequence = Sequence([d_org])
    d1, d2 = Dataset(), Dataset()
    d1.DimensionOrganizationUID, d1.DimensionIndexPointer, d1.FunctionalGroupPointer = dim_org, 0x00209056, 0x00209111
    d2.DimensionOrganizationUID, d2.DimensionIndexPointer, d2.FunctionalGroupPointer = dim_org, 0x00209057, 0x00209111
    ds.DimensionIndexSequence = Sequence([d1, d2])
    ds.NumberOfFrames = nz
    set_pixels(ds, np.stack(frames))
    save(ds, random_name(root, False), None)
    return {"series_uid": series, "number": number, "description": desc, "slices": nz, "positions": positions}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    cases = []

    def case(name, **kw):
        root = os.path.join(out, name)
        entry = {"name": name, "dir": root, "compare": kw.pop("compare", True),
                 "warnings": kw.pop("warnings", []), "series_count": kw.pop("series_count", 1),
                 "lossy": kw.pop("lossy", False), "syntax": kw.get("syntax") or ExplicitVRLittleEndian}
        study = uid(name + "/study")
        entry["series"] = [write_series(root, name=name, study=study, number=kw.pop("number", 3),
                                        desc=kw.pop("desc", name), **kw)]
        cases.append(entry)

    even = [i * 2.5 for i in range(12)]
    case("axial", nx=40, ny=32, offsets=even, spacing_rc=(0.8, 0.9), seed=1)
    case("axial_descending", nx=36, ny=30, offsets=even[::-1], spacing_rc=(1.0, 1.0), seed=2, dtype=np.uint16)
    case("implicit_vr", nx=34, ny=28, offsets=even[:9], spacing_rc=(0.7, 0.7), seed=3,
         syntax=ImplicitVRLittleEndian)
    case("sagittal", nx=30, ny=36, offsets=[i * 1.2 for i in range(10)], spacing_rc=(1.1, 0.9),
         base_rows=((0, 1, 0), (0, 0, -1)), origin=(-10.0, -50.0, 60.0), seed=4, dtype=np.uint16, hi=3000)
    case("coronal", nx=32, ny=28, offsets=[i * 3.0 for i in range(8)][::-1], spacing_rc=(0.9, 0.9),
         base_rows=((1, 0, 0), (0, 0, -1)), origin=(-20.0, 30.0, 40.0), seed=5)
    case("oblique", nx=38, ny=34, offsets=[i * 2.0 for i in range(11)], spacing_rc=(0.85, 0.95),
         rot_deg=(17.0, -11.0), origin=(-25.5, 12.25, -7.0), seed=6)
    case("oblique_sagittal", nx=30, ny=30, offsets=[-i * 1.5 for i in range(9)], spacing_rc=(1.0, 1.2),
         base_rows=((0, 1, 0), (0, 0, -1)), rot_deg=(8.0, 21.0), seed=7)
    case("rescaled", nx=32, ny=32, offsets=even[:10], spacing_rc=(0.9, 0.9), seed=8, dtype=np.int16,
         lo=-500, hi=1500, slopes=[0.5] * 10, intercepts=[-100.0] * 10, sop_class=CT_STORAGE, modality="CT")
    case("rescaled_per_slice", nx=32, ny=30, offsets=even[:8], spacing_rc=(1.0, 1.0), seed=9, dtype=np.uint16,
         slopes=[1.0 + 0.25 * k for k in range(8)], intercepts=[10.0 * k for k in range(8)])
    case("rle", nx=33, ny=31, offsets=even[:8], spacing_rc=(0.9, 0.8), seed=10, syntax=RLELossless)
    case("jpeg_lossless", nx=40, ny=36, offsets=even[:8], spacing_rc=(0.9, 0.9), seed=11, dtype=np.uint16,
         hi=4000, syntax=JPEG_LOSSLESS_SV1)
    case("jpeg_baseline", nx=48, ny=40, offsets=even[:6], spacing_rc=(1.0, 1.0), seed=12, dtype=np.uint8, hi=250,
         syntax=JPEG_BASELINE, lossy=True)
    case("jpeg2000", nx=70, ny=66, offsets=even[:7], spacing_rc=(0.9, 1.0), seed=13, dtype=np.uint16,
         syntax=JPEG2000Lossless)
    case("jpegls", nx=30, ny=30, offsets=even[:6], spacing_rc=(1.0, 1.0), seed=14, dtype=np.uint16,
         syntax=JPEGLSLossless)
    # Geometry problems: clisc must warn (dcm2niix resamples or splits these).
    case("nonuniform", nx=24, ny=20, offsets=[0, 2, 4, 6, 9, 11, 13], spacing_rc=(1, 1), seed=15,
         compare=False, warnings=["non-uniform"])
    case("missing_slice", nx=24, ny=20, offsets=[0, 3, 6, 9, 15, 18, 21, 24], spacing_rc=(1, 1), seed=16,
         compare=False, warnings=["missing"])
    case("gantry_tilt", nx=24, ny=20, offsets=[i * 2.0 for i in range(8)], spacing_rc=(1, 1), seed=17,
         tilt_mm=0.6, compare=False, warnings=["tilt"], sop_class=CT_STORAGE, modality="CT",
         slopes=[1.0] * 8, intercepts=[-1024.0] * 8)

    # Enhanced multi-frame MR, frames stored from top to bottom.
    name = "enhanced"
    entry = {"name": name, "dir": os.path.join(out, name), "compare": True, "warnings": [], "series_count": 1,
             "lossy": False, "syntax": ExplicitVRLittleEndian}
    entry["series"] = [write_enhanced(entry["dir"], name=name, study=uid("enhanced/study"), number=7,
                                      desc="enhanced flair", nx=36, ny=32, offsets=[i * 1.8 for i in range(10)],
                                      spacing_rc=(0.9, 0.9), rot_deg=(6.0, 0.0), slope=2.0, intercept=-5.0,
                                      seed=18, reverse_frames=True)]
    cases.append(entry)

    # A study folder: four MR series (nested folders, random names), a
    # three-plane localizer, a dual-echo series and a stray non-DICOM file.
    name = "study"
    root = os.path.join(out, name)
    study = uid("study/study")
    for_uid = uid("study/for")
    series = []
    for i, desc in enumerate(["AX FLAIR", "AX T1 pre", "AX T1 POST GAD", "AX T2 TSE"]):
        series.append(write_series(root, name=name, study=study, number=i + 2, desc=desc, nx=32, ny=28,
                                   offsets=[j * 3.0 for j in range(10)], spacing_rc=(0.9, 0.9),
                                   frame_of_ref=for_uid, seed=30 + i, nested=True))
    loc = uid("study/localizer")
    for k, rows in enumerate([((1, 0, 0), (0, 1, 0)), ((0, 1, 0), (0, 0, -1)), ((1, 0, 0), (0, 0, -1))]):
        r, c = np.array(rows[0], float), np.array(rows[1], float)
        ds = base_dataset(study, loc, "3-plane loc", 1, MR_STORAGE, for_uid)
        ds.SOPInstanceUID = uid(f"study/loc/{k}")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = ["-60", "-60", "0"]
        ds.ImageOrientationPatient = [f"{v:g}" for v in np.concatenate([r, c])]
        ds.PixelSpacing = ["2", "2"]
        set_pixels(ds, pattern(24, 24, 1, 0, 100, 40 + k)[0].astype(np.int16))
        save(ds, random_name(root, True), None)
    for e, te in [(1, 12.0), (2, 80.0)]:
        write_series(root, name=name + f"_echo{e}", study=study, number=9, desc="PD/T2 dual echo", nx=20, ny=20,
                     offsets=[j * 4.0 for j in range(6)], spacing_rc=(1.0, 1.0), frame_of_ref=for_uid,
                     seed=50 + e, nested=True, echo=(e, te))
    # Both echoes share one SeriesInstanceUID: rewrite the second's.
    echo_series = uid("study/dual-echo")
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            d = pydicom.dcmread(p)
            if d.SeriesNumber == 9:
                d.SeriesInstanceUID = echo_series
                d.save_as(p)
    with open(os.path.join(root, "README.txt"), "w") as f:
        f.write("not a DICOM file\n")
    cases.append({"name": name, "dir": root, "compare": True, "warnings": [], "series_count": 7, "lossy": False,
                  "syntax": ExplicitVRLittleEndian, "series": series})

    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"pydicom": pydicom.__version__, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
