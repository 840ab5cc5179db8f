#!/usr/bin/env python3
"""Writes a small MR study as classic DICOM files with pydicom (an
independent writer), for tests/dicom_infer.rs and tests/dicom_pacs.rs.

    make_dicom_study.py FLAIR.nii.gz OUT_DIR STUDY_UID PATIENT_ID

The study holds two axial-oblique series built from the voxels of a NIfTI
FLAIR volume (read with nibabel): `AX FLAIR` (the voxels, int16 with
RescaleSlope 0.05) and `AX T2` (the voxels mirrored, so that picking the
wrong series changes the result). Voxel (x, y, z) of the NIfTI array goes
to column x, row ny-1-y of slice z, the layout clisc and dcm2niix read
back, so `clisc dicom convert` gives back the NIfTI voxels (to the 0.05
quantisation). Prints one JSON line: study, series and frame of reference
UIDs.
"""

import json
import os
import sys

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SLOPE = 0.05


def rotation(deg_x, deg_y):
    a, b = np.radians(deg_x), np.radians(deg_y)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return ry @ rx


def write_series(out, vol, study_uid, patient_id, frame_uid, number, desc, spacing):
    nx, ny, nz = vol.shape
    series_uid = generate_uid()
    r = rotation(12.0, -7.0)
    row_dir, col_dir = r @ np.array([1.0, 0, 0]), r @ np.array([0, 1.0, 0])
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-20.0, -25.0, -10.0])
    folder = os.path.join(out, "series%d" % number)
    os.makedirs(folder, exist_ok=True)
    stored = np.round(vol / SLOPE).astype(np.int16)
    # Slices written in reverse order with shuffled names: readers must sort by position.
    for k in reversed(range(nz)):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = MR_STORAGE
        ds.SOPInstanceUID = generate_uid()
        ds.PatientName = "Test^Flair"
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = "20250102"
        ds.StudyTime = "101500"
        ds.StudyID = "7"
        ds.AccessionNumber = "ACC" + patient_id[-4:]
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "clisc PACS test"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = number
        ds.SeriesDescription = desc
        ds.Modality = "MR"
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.Manufacturer = "clisc-tests"
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImageOrientationPatient = [float("%.8f" % v) for v in list(row_dir) + list(col_dir)]
        pos = origin + k * spacing[2] * normal
        ds.ImagePositionPatient = [float("%.6f" % v) for v in pos]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing, column spacing
        ds.SliceThickness = spacing[2]
        ds.RescaleSlope = SLOPE
        ds.RescaleIntercept = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        # DICOM row r (top first) is volume row ny-1-r; column c is x = c.
        frame = stored[:, ::-1, k].T
        ds.PixelData = np.ascontiguousarray(frame).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        name = "%08x.dcm" % (hash(ds.SOPInstanceUID) & 0xFFFFFFFF)
        ds.save_as(os.path.join(folder, name), enforce_file_format=True)
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
