#!/usr/bin/env python3
"""Writes a small MR study as classic DICOM files with pydicom (an
independent writer), for tests/dicom_infer.rs, tests/dicom_pacs.rs and
bench/node/load.py.

    make_dicom_study.py FLAIR.nii.gz OUT_DIR STUDY_UID PATIENT_ID

The study holds two axial-oblique series built from the voxels of a NIfTI
FLAIR volume (read with nibabel): `AX FLAIR` (the voxels, int16 with
RescaleSlope 0.05) and `AX T2` (the voxels mirrored, so that picking the
wrong series changes the result). Voxel (x, y, z) of the NIfTI array goes
to column x, row ny-1-y of slice z, the layout clisc and dcm2niix read
back, so `clisc dicom convert` gives back the NIfTI voxels (to the 0.05
quantisation). Prints one JSON line: study, series and frame of reference
UIDs.

The DICOM writing itself is that of the host tests' series generator
(host/cli/tests/reference/dicom/make_series.py), so both test suites
exercise one writer.
"""

import json
import os
import sys

import nibabel as nib
import numpy as np
from pydicom.uid import generate_uid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "host", "cli", "tests", "reference", "dicom"))
import make_series  # noqa: E402  (the shared pydicom writer)

SLOPE = 0.05
# The patient and study of these tests (tests/dicom_infer.rs checks that
# the patient's name is never printed).
STUDY_FIELDS = dict(PatientName="Test^Flair", StudyDate="20250102", StudyTime="101500", StudyID="7",
                    StudyDescription="clisc PACS test")


def write_series(out, vol, study_uid, patient_id, frame_uid, number, desc, spacing):
    """One series of `vol` (x, y, z) in OUT/series<number>/; its UID."""
    nx, ny, nz = vol.shape
    series_uid = generate_uid()
    r = make_series.rot(12.0, -7.0)
    row_dir, col_dir = r @ np.array([1.0, 0, 0]), r @ np.array([0, 1.0, 0])
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-20.0, -25.0, -10.0])
    folder = os.path.join(out, "series%d" % number)
    stored = np.round(vol / SLOPE).astype(np.int16)
    # Slices written in reverse order with shuffled names: readers must sort by position.
    for k in reversed(range(nz)):
        ds = make_series.base_dataset(study_uid, series_uid, desc, number, make_series.MR_STORAGE, frame_uid,
                                      PatientID=patient_id, AccessionNumber="ACC" + patient_id[-4:],
                                      **STUDY_FIELDS)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImageOrientationPatient = [float("%.8f" % v) for v in list(row_dir) + list(col_dir)]
        ds.ImagePositionPatient = [float("%.6f" % v) for v in origin + k * spacing[2] * normal]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing, column spacing
        ds.SliceThickness = spacing[2]
        ds.RescaleSlope = SLOPE
        ds.RescaleIntercept = 0
        # DICOM row r (top first) is volume row ny-1-r; column c is x = c.
        make_series.set_pixels(ds, stored[:, ::-1, k].T)
        name = "%08x.dcm" % (hash(ds.SOPInstanceUID) & 0xFFFFFFFF)
        make_series.save(ds, os.path.join(folder, name), None)
    return series_uid


def main():
    nifti, out, study_uid, patient_id = sys.argv[1:5]
    vol = np.asarray(nib.load(nifti).get_fdata(), dtype=np.float64)
    frame_uid = generate_uid()
    spacing = (0.9, 1.1, 2.0)
    flair = write_series(out, vol, study_uid, patient_id, frame_uid, 3, "AX FLAIR", spacing)
    t2 = write_series(out, vol[::-1, :, :] * 0.5, study_uid, patient_id, frame_uid, 4, "AX T2", spacing)
    print(json.dumps({"study_uid": study_uid, "flair_series_uid": flair, "t2_series_uid": t2,
                      "frame_of_reference_uid": frame_uid}))


if __name__ == "__main__":
    main()
