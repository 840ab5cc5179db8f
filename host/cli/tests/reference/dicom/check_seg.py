#!/usr/bin/env python3
"""Reads a DICOM SEG written by clisc with independent readers and prints
what they see as JSON (checked by host/cli/tests/dicom_seg.rs).

    check_seg.py SEG.dcm MASK.nii.gz SOURCE_DIR

* highdicom parses the object (its constructor-side validation of the
  Segmentation IOD), reports the segment descriptions and builds the
  segmentation volume with its own geometry code;
* pydicom alone computes every segment's centroid from the SEG's own
  per-frame geometry (ImagePositionPatient per frame, shared orientation and
  pixel spacing);
* nibabel computes the centroids of the same labels in the NIfTI mask;
* each frame's source reference is checked against the source files
  (same SOP instance, same position).
All world coordinates are reported in RAS (mm).
"""

import glob
import json
import os
import sys

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom


def lps_to_ras(p):
    p = np.asarray(p, float)
    return p * np.array([-1.0, -1.0, 1.0])


def main():
    seg_path, mask_path, source_dir = sys.argv[1:4]
    out = {}

    # highdicom: parse, describe.
    seg = hd.seg.segread(seg_path)
    out["sop_class_uid"] = str(seg.SOPClassUID)
    out["segmentation_type"] = str(seg.SegmentationType)
    out["study_uid"] = str(seg.StudyInstanceUID)
    out["frame_of_reference_uid"] = str(seg.FrameOfReferenceUID)
    out["referenced_series"] = [str(s.SeriesInstanceUID) for s in seg.ReferencedSeriesSequence]
    segments = []
    for d in seg.SegmentSequence:
        segments.append({
            "number": int(d.SegmentNumber),
            "label": str(d.SegmentLabel),
            "category": str(d.SegmentedPropertyCategoryCodeSequence[0].CodeValue),
            "type": str(d.SegmentedPropertyTypeCodeSequence[0].CodeValue),
            "type_meaning": str(d.SegmentedPropertyTypeCodeSequence[0].CodeMeaning),
            "algorithm_type": str(d.SegmentAlgorithmType),
            "algorithm_name": str(d.SegmentAlgorithmName),
            "algorithm_family": str(d.SegmentationAlgorithmIdentificationSequence[0]
                                    .AlgorithmFamilyCodeSequence[0].CodeMeaning),
        })
    out["segments"] = segments
    # highdicom's own geometry: the segmentation as a volume with an affine.
    hd_centroids = {}
    try:
        vol = seg.get_volume(combine_segments=False)
        arr = np.asarray(vol.array)
        aff = np.asarray(vol.affine)  # LPS, (slice, row, column) indices
        for i, d in enumerate(seg.SegmentSequence):
            idx = np.argwhere(arr[..., i] > 0)
            if len(idx):
                world = (aff @ np.c_[idx, np.ones(len(idx))].T).T[:, :3]
                hd_centroids[str(int(d.SegmentNumber))] = lps_to_ras(world.mean(0)).tolist()
        out["highdicom_volume_error"] = None
    except Exception as e:  # reported, the test decides
        out["highdicom_volume_error"] = repr(e)
    out["highdicom_centroids"] = hd_centroids

    # pydicom only: per-frame geometry.
    ds = pydicom.dcmread(seg_path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    ps = np.array(shared.PixelMeasuresSequence[0].PixelSpacing, float)
    row_dir, col_dir = iop[:3], iop[3:]
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    sums, counts = {}, {}
    source = {}
    for f in glob.glob(os.path.join(source_dir, "**", "*"), recursive=True):
        if os.path.isfile(f):
            try:
                s = pydicom.dcmread(f)
            except Exception:
                continue
            if "PerFrameFunctionalGroupsSequence" in s:
                for i, fr in enumerate(s.PerFrameFunctionalGroupsSequence):
                    source[(str(s.SOPInstanceUID), i + 1)] = np.array(
                        fr.PlanePositionSequence[0].ImagePositionPatient, float)
            elif "ImagePositionPatient" in s:
                source[(str(s.SOPInstanceUID), 1)] = np.array(s.ImagePositionPatient, float)
    bad_refs = []
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = str(int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber))
        ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        rr, cc = np.nonzero(frames[f])
        pts = ipp + cc[:, None] * ps[1] * row_dir + rr[:, None] * ps[0] * col_dir
        sums[number] = sums.get(number, 0) + pts.sum(0)
        counts[number] = counts.get(number, 0) + len(rr)
        src = item.DerivationImageSequence[0].SourceImageSequence[0]
        key = (str(src.ReferencedSOPInstanceUID), int(getattr(src, "ReferencedFrameNumber", 1)))
        if key not in source or np.abs(source[key] - ipp).max() > 1e-4:
            bad_refs.append(f + 1)
    out["frames"] = int(ds.NumberOfFrames)
    out["bad_source_references"] = bad_refs
    out["seg_centroids"] = {k: lps_to_ras(sums[k] / counts[k]).tolist() for k in sums if counts[k]}
    out["seg_counts"] = {k: int(v) for k, v in counts.items()}

    # nibabel: the NIfTI mask.
    img = nib.load(mask_path)
    data = np.asarray(img.dataobj)
    nii_centroids, nii_counts = {}, {}
    for d in seg.SegmentSequence:
        label = int(d.SegmentLabel.split()[-1]) if d.SegmentLabel.startswith("Label") else int(d.SegmentNumber)
        idx = np.argwhere(data == label)
        nii_counts[str(int(d.SegmentNumber))] = int(len(idx))
        if len(idx):
            world = (img.affine @ np.c_[idx, np.ones(len(idx))].T).T[:, :3]
            nii_centroids[str(int(d.SegmentNumber))] = world.mean(0).tolist()
    out["nifti_centroids"] = nii_centroids
    out["nifti_counts"] = nii_counts
    print(json.dumps(out))


if __name__ == "__main__":
    main()
