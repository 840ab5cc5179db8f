#!/usr/bin/env python3
"""Reads a DICOM SEG with highdicom and pydicom and compares its voxels,
through its own geometry, with a NIfTI label file read by nibabel
(tests/dicom_infer.rs, tests/dicom_pacs.rs).

    check_dicom_seg.py SEG.dcm LABELS.nii.gz SOURCE_DIR

For every foreground pixel of every SEG frame, the world position (from
the frame's ImagePositionPatient and the shared orientation and spacing)
is mapped into the NIfTI grid with nibabel's affine; it must land on a
voxel centre (distance reported) labelled non-zero. With the voxel counts
equal, the two segmentations are the same voxels. Each frame's source
reference is resolved among the source files. Prints one JSON line.
"""

import glob
import json
import sys

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom


def main():
    seg_path, nifti_path, source_dir = sys.argv[1:4]
    out = {}
    seg = hd.seg.segread(seg_path)  # parses and checks the Segmentation IOD
    out["sop_class_uid"] = str(seg.SOPClassUID)
    out["study_uid"] = str(seg.StudyInstanceUID)
    out["patient_id"] = str(seg.PatientID)
    out["frame_of_reference_uid"] = str(seg.FrameOfReferenceUID)
    out["referenced_series"] = [str(s.SeriesInstanceUID) for s in seg.ReferencedSeriesSequence]
    out["segment_labels"] = [str(d.SegmentLabel) for d in seg.SegmentSequence]

    sources = {}
    for f in glob.glob(source_dir + "/**/*", recursive=True):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:
            continue
        if "SOPInstanceUID" in ds:
            sources[str(ds.SOPInstanceUID)] = str(ds.SeriesInstanceUID)

    ds = pydicom.dcmread(seg_path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    dr, dc = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    row_dir, col_dir = iop[:3], iop[3:]
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    img = nib.load(nifti_path)
    labels = np.asarray(img.dataobj)
    inv = np.linalg.inv(img.affine)
    seg_voxels, mismatched, max_off = 0, 0, 0.0
    source_series = set()
    unresolved = 0
    for f, frame in zip(ds.PerFrameFunctionalGroupsSequence, frames):
        ipp = np.array(f.PlanePositionSequence[0].ImagePositionPatient, float)
        ref = f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        if str(ref) in sources:
            source_series.add(sources[str(ref)])
        else:
            unresolved += 1
        rows, cols = np.nonzero(frame)
        lps = ipp[None, :] + cols[:, None] * dc * row_dir[None, :] + rows[:, None] * dr * col_dir[None, :]
        ras = lps * np.array([-1.0, -1.0, 1.0])
        ijk = (inv[:3, :3] @ ras.T).T + inv[:3, 3]
        near = np.round(ijk)
        if len(near):
            max_off = max(max_off, float(np.abs(ijk - near).max()))
        for i, j, k in near.astype(int):
            inside = all(0 <= v < s for v, s in zip((i, j, k), labels.shape))
            if not inside or labels[i, j, k] == 0:
                mismatched += 1
        seg_voxels += len(rows)
    out["frames"] = int(len(frames))
    out["seg_voxels"] = int(seg_voxels)
    out["nifti_voxels"] = int(np.count_nonzero(labels))
    out["seg_voxels_not_in_nifti"] = int(mismatched)
    out["max_index_offset"] = max_off
    out["frame_source_series"] = sorted(source_series)
    out["unresolved_source_references"] = unresolved
    print(json.dumps(out))


if __name__ == "__main__":
    main()
