//! DICOM SEG output read back by independent readers.
//!
//! A label volume on the grid of a generated series (oblique classic
//! series, enhanced multi-frame series) is written as DICOM SEG by clisc and
//! as NIfTI; `tests/reference/dicom/check_seg.py` reads the SEG with
//! highdicom (segments, codes, references, its own volume geometry) and
//! with plain pydicom (per-frame geometry), and the NIfTI with nibabel. The
//! tumour centroid from the SEG's own geometry must equal the NIfTI mask's
//! within 1e-3 mm; DCMTK's dcmdump must parse the file.
//!
//! Needs `$CLISC_PYTHON` (`source scripts/env.sh`) and `scripts/ci-deps.sh`.

mod dicom_support;

use clisc_dicom::{seg::SegSegment, write_seg, SegOptions};
use clisc_sdk::LabelVolume;
use dicom_support::{case, python, run, scratch};
use std::process::Command;

/// An off-centre ellipsoid (label 1) and a small box (label 2).
fn blobs(grid: clisc_sdk::Grid) -> LabelVolume {
    let mut labels = LabelVolume::zeros(grid);
    let [nx, ny, nz] = grid.dims();
    let (cx, cy, cz) = (0.6 * nx as f64, 0.4 * ny as f64, 0.55 * nz as f64);
    let (rx, ry, rz) = (nx as f64 / 5.0, ny as f64 / 6.0, nz as f64 / 4.0);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let d = ((x as f64 - cx) / rx).powi(2)
                    + ((y as f64 - cy) / ry).powi(2)
                    + ((z as f64 - cz) / rz).powi(2);
                let i = grid.index(x, y, z);
                if d <= 1.0 {
                    labels.data[i] = 1;
                } else if x < 4 && (2..6).contains(&y) && (1..3).contains(&z) {
                    labels.data[i] = 2;
                }
            }
        }
    }
    labels
}

fn close(a: &serde_json::Value, b: &serde_json::Value, tol: f64) -> bool {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    a.len() == 3
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() <= tol)
}

#[test]
fn seg_is_read_back_by_highdicom_with_the_right_geometry() {
    for name in ["oblique", "enhanced", "sagittal"] {
        let c = case(name);
        let scan = clisc_dicom::scan_dir(&c.dir).unwrap();
        let series = scan.volumes().next().unwrap();
        let grid = series.geometry.as_ref().unwrap().grid;
        let labels = blobs(grid);
        let dir = scratch(&format!("seg/{name}"));
        let seg_path = dir.join("seg.dcm");
        let mask_path = dir.join("mask.nii.gz");
        let options = SegOptions {
            segments: vec![
                SegSegment::tumor(1, "Tumor"),
                SegSegment::tumor(2, "Label 2"),
            ],
            ..SegOptions::default()
        };
        let summary = write_seg(series, &labels, &options, &seg_path).unwrap();
        clisc_nifti::write_labels(&mask_path, &labels, None).unwrap();
        run(
            Command::new("dcmdump").arg("-q").arg(&seg_path),
            "dcmdump on the SEG",
        );

        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/reference/dicom/check_seg.py");
        let text = run(
            Command::new(python())
                .arg(&script)
                .arg(&seg_path)
                .arg(&mask_path)
                .arg(&c.dir),
            "check_seg.py",
        );
        let json_line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON in:\n{text}"));
        let v: serde_json::Value = serde_json::from_str(json_line).unwrap();

        assert_eq!(v["sop_class_uid"], "1.2.840.10008.5.1.4.1.1.66.4");
        assert_eq!(v["segmentation_type"], "BINARY");
        assert_eq!(v["study_uid"], series.study.study_uid.as_str());
        assert_eq!(
            v["frame_of_reference_uid"],
            series.frame_of_reference_uid.as_str()
        );
        assert_eq!(v["referenced_series"][0], series.series_uid.as_str());
        let segs = v["segments"].as_array().unwrap();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0]["label"], "Tumor");
        assert_eq!(segs[0]["category"], "49755003");
        assert_eq!(segs[0]["type"], "108369006");
        assert_eq!(segs[0]["algorithm_type"], "AUTOMATIC");
        assert_eq!(segs[0]["algorithm_name"], "clisc");
        assert_eq!(segs[0]["algorithm_family"], "Artificial Intelligence");
        assert_eq!(v["frames"].as_u64().unwrap() as usize, summary.frames);
        assert_eq!(
            v["bad_source_references"].as_array().unwrap().len(),
            0,
            "{name}: {}",
            v["bad_source_references"]
        );
        for seg in ["1", "2"] {
            assert_eq!(
                v["seg_counts"][seg], v["nifti_counts"][seg],
                "{name} segment {seg}: voxel counts"
            );
            assert!(v["nifti_counts"][seg].as_u64().unwrap() > 0);
            let (ours, nii) = (&v["seg_centroids"][seg], &v["nifti_centroids"][seg]);
            assert!(
                close(ours, nii, 1e-3),
                "{name} segment {seg}: centroid from SEG frames {ours} vs NIfTI {nii}"
            );
            assert!(
                v["highdicom_volume_error"].is_null(),
                "{name}: {}",
                v["highdicom_volume_error"]
            );
            let hd = &v["highdicom_centroids"][seg];
            assert!(
                close(hd, nii, 1e-3),
                "{name} segment {seg}: highdicom volume centroid {hd} vs NIfTI {nii}"
            );
        }
        eprintln!(
            "{name}: {} frames, tumour centroid SEG {} / highdicom {} / NIfTI {}",
            summary.frames,
            v["seg_centroids"]["1"],
            v["highdicom_centroids"]["1"],
            v["nifti_centroids"]["1"]
        );
    }
}

#[test]
fn seg_refuses_labels_on_another_grid() {
    let c = case("axial");
    let scan = clisc_dicom::scan_dir(&c.dir).unwrap();
    let series = scan.volumes().next().unwrap();
    let mut grid = series.geometry.as_ref().unwrap().grid;
    grid.affine[0][3] += 1.0;
    let err = write_seg(
        series,
        &LabelVolume::zeros(grid),
        &SegOptions::default(),
        &scratch("seg/bad").join("x.dcm"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("is not the grid of series #3 'axial'"),
        "{err}"
    );
}
