//! DICOM series -> volumes, checked against Debian's `dcm2niix`.
//!
//! The series are written by an independent writer (pydicom, DCMTK's
//! dcmcjpeg for JPEG) by `tests/reference/dicom/make_series.py`: axial,
//! sagittal, coronal, oblique, descending slice order, shuffled random file
//! names, nested multi-series study with a localizer and a dual-echo
//! series, per-slice rescale, implicit VR, enhanced multi-frame MR, RLE,
//! JPEG lossless, JPEG baseline, JPEG 2000 and JPEG-LS. Each is converted by
//! dcm2niix and by clisc; voxels must be identical (lossy JPEG: within one
//! grey level of DCMTK's IJG decoder) and affines equal within 1e-3 mm.
//!
//! Needs `$CLISC_PYTHON` (`source scripts/env.sh`) and the Debian packages
//! of `scripts/ci-deps.sh` (dcm2niix, dcmtk).

mod dicom_support;

use clisc_dicom::{convert, GeometryWarning};
use dicom_support::{case, cases, dcm2niix, run, scratch};
use std::process::Command;

/// Largest absolute difference between two affines.
fn affine_diff(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Voxels of a lossy JPEG case as DCMTK's IJG decoder sees them: the files
/// are decompressed with `dcmdjpeg`, then converted by dcm2niix. (dcm2niix's
/// built-in baseline decoder is a fast approximate one: it differs from IJG
/// libjpeg by up to 6 grey levels on these images, clisc's by at most 1.)
fn lossy_reference(c: &dicom_support::Case) -> Vec<f32> {
    let raw = scratch(&format!("dcmdjpeg/{}", c.name));
    for entry in std::fs::read_dir(&c.dir).unwrap() {
        let path = entry.unwrap().path();
        run(
            Command::new("dcmdjpeg")
                .arg(&path)
                .arg(raw.join(path.file_name().unwrap())),
            "dcmdjpeg",
        );
    }
    let out = scratch(&format!("dcm2niix/{}-dcmdjpeg", c.name));
    dcm2niix(&raw, &out);
    let uid = &c.series[0].series_uid;
    clisc_nifti::read(&out.join(format!("{uid}_0.nii")))
        .unwrap()
        .data
}

#[test]
fn volumes_and_affines_match_dcm2niix() {
    let mut checked = 0;
    let mut report = Vec::new();
    for c in cases().iter().filter(|c| c.compare) {
        let scan = clisc_dicom::scan_dir(&c.dir).unwrap();
        let volumes: Vec<_> = scan.volumes().collect();
        assert!(!volumes.is_empty(), "{}: no volume found", c.name);
        if c.syntax == "1.2.840.10008.1.2.4.80" {
            // JPEG-LS: no pure-Rust codec in this build (nor in Debian's
            // dcm2niix); the error must say so.
            let err = convert::load_data(volumes[0]).unwrap_err().to_string();
            assert!(
                err.contains("JPEG-LS") && err.contains("this build decodes"),
                "{err}"
            );
            report.push(format!("{}: JPEG-LS refused with a clear error", c.name));
            continue;
        }
        let out = scratch(&format!("dcm2niix/{}", c.name));
        dcm2niix(&c.dir, &out);
        for s in volumes {
            let echo = s.slices[0].echo_number.unwrap_or(0);
            let reference_path = out.join(format!("{}_{echo}.nii", s.series_uid));
            let reference = clisc_nifti::read(&reference_path)
                .unwrap_or_else(|e| panic!("{}: dcm2niix output for {}: {e}", c.name, s.label()));
            let (grid, data) = convert::load_data(s).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(
                grid.shape,
                reference.grid.shape,
                "{} {}: shape",
                c.name,
                s.label()
            );
            let da = affine_diff(&grid.affine, &reference.grid.affine);
            assert!(
                da <= 1e-3,
                "{} {}: affine differs by {da} mm\nclisc {:?}\ndcm2niix {:?}",
                c.name,
                s.label(),
                grid.affine,
                reference.grid.affine
            );
            let voxels = if c.lossy {
                lossy_reference(c)
            } else {
                reference.data.clone()
            };
            let dv = data
                .iter()
                .zip(&voxels)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let mean = data
                .iter()
                .zip(&voxels)
                .map(|(a, b)| (a - b).abs() as f64)
                .sum::<f64>()
                / data.len() as f64;
            if c.lossy {
                // Lossy JPEG: IDCT implementations may round differently by one.
                assert!(
                    dv <= 1.0 && mean < 0.05,
                    "{}: voxels differ by up to {dv} (mean {mean})",
                    c.name
                );
            } else {
                let tol = reference.data.iter().map(|v| v.abs()).fold(0f32, f32::max) * 1e-6;
                assert!(
                    dv <= tol,
                    "{} {}: voxels differ by up to {dv}",
                    c.name,
                    s.label()
                );
            }
            let warnings = &s.geometry.as_ref().unwrap().warnings;
            assert!(
                warnings.is_empty(),
                "{} {}: unexpected warnings {warnings:?}",
                c.name,
                s.label()
            );
            report.push(format!(
                "{} {}: affine diff {da:.2e} mm, max voxel diff {dv}",
                c.name,
                s.label()
            ));
            checked += 1;
        }
    }
    eprintln!("{}", report.join("\n"));
    // 14 single-volume cases (JPEG-LS is only refused) + 6 volumes of the study.
    assert_eq!(checked, 20, "only {checked} volumes compared");
}

#[test]
fn series_found_in_a_mixed_study_folder() {
    let c = case("study");
    let scan = clisc_dicom::scan_dir(&c.dir).unwrap();
    // Four series, a dual-echo series split into two volumes, a localizer
    // split by orientation into three images that are never volumes.
    let volumes: Vec<String> = scan.volumes().map(|s| s.label()).collect();
    assert_eq!(
        volumes,
        vec![
            "#2 'AX FLAIR'",
            "#3 'AX T1 pre'",
            "#4 'AX T1 POST GAD'",
            "#5 'AX T2 TSE'",
            "#9 'PD/T2 dual echo' [echo 1 (TE 12 ms)]",
            "#9 'PD/T2 dual echo' [echo 2 (TE 80 ms)]",
        ]
    );
    let localizers: Vec<_> = scan.series.iter().filter(|s| s.localizer).collect();
    assert_eq!(localizers.len(), 3);
    assert!(localizers
        .iter()
        .all(|s| s.slices.len() == 1 && !s.is_volume()));
    assert_eq!(scan.skipped.len(), 1, "{:?}", scan.skipped);
    assert!(scan.skipped[0].path.ends_with("README.txt"));
    for (s, written) in scan.volumes().zip(&c.series) {
        assert_eq!(s.series_uid, written.series_uid);
        // Sorted along the normal: the written positions, ascending in z.
        let z: Vec<f64> = s.slices.iter().map(|x| x.position[2]).collect();
        let mut expected: Vec<f64> = written.positions.iter().map(|p| p[2]).collect();
        expected.sort_by(f64::total_cmp);
        assert_eq!(z, expected);
    }

    // Modality rules: the built-in ones pick the four BraTS inputs.
    let picked = clisc_dicom::ModalityRules::brain_mri()
        .select(&scan.series)
        .unwrap();
    let picked: Vec<(String, i64)> = picked
        .iter()
        .map(|(m, s)| (m.clone(), s.number.unwrap()))
        .collect();
    assert_eq!(
        picked,
        vec![
            ("flair".into(), 2),
            ("t1".into(), 3),
            ("t1ce".into(), 4),
            ("t2".into(), 5)
        ]
    );
    // Naive rules trip over the dual-echo series and say what they found.
    let naive =
        clisc_dicom::ModalityRules::from_toml_str("[modalities.t2]\ninclude = ['t2']\n").unwrap();
    let err = naive.select(&scan.series).unwrap_err().to_string();
    assert!(
        err.contains("3 series match `t2`")
            && err.contains("Series found:")
            && err.contains("localizer"),
        "{err}"
    );
}

#[test]
fn geometry_problems_are_reported() {
    for name in ["nonuniform", "missing_slice", "gantry_tilt"] {
        let c = case(name);
        let scan = clisc_dicom::scan_dir(&c.dir).unwrap();
        let s = scan
            .volumes()
            .next()
            .unwrap_or_else(|| panic!("{name}: no volume"));
        let warnings = &s.geometry.as_ref().unwrap().warnings;
        let ok = match name {
            "nonuniform" => matches!(warnings[..], [GeometryWarning::NonUniformSpacing { .. }]),
            "missing_slice" => {
                matches!(
                    warnings[..],
                    [GeometryWarning::MissingSlices {
                        after: 3,
                        missing: 1,
                        ..
                    }]
                )
            }
            _ => match warnings[..] {
                [GeometryWarning::GantryTilt { degrees }] => {
                    (degrees - 0.3f64.atan().to_degrees()).abs() < 0.01
                }
                _ => false,
            },
        };
        assert!(ok, "{name}: warnings {warnings:?}");
        // The spacing is never SliceThickness (9.9 in every generated file).
        assert!((s.geometry.as_ref().unwrap().grid.spacing[2] - 9.9).abs() > 1.0);
    }
    // dcm2niix agrees that the tilted series is tilted.
    let out = scratch("dcm2niix/gantry_tilt");
    let log = dcm2niix(&case("gantry_tilt").dir, &out);
    assert!(log.contains("gantry tilt"), "{log}");
}

#[test]
fn cli_lists_and_converts() {
    let exe = env!("CARGO_BIN_EXE_clisc");
    let c = case("study");
    let out = Command::new(exe)
        .args(["dicom", "ls", "--skipped"])
        .arg(&c.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "AX FLAIR",
        "32x28x10 voxels",
        "localizer",
        "echo 2 (TE 80 ms)",
        "README.txt",
        "orientation LAS",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }

    let dest = scratch("cli-convert");
    let out = Command::new(exe)
        .args(["dicom", "convert", "--rules", "brain"])
        .arg(&c.dir)
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for m in ["flair", "t1", "t1ce", "t2"] {
        let v = clisc_nifti::read(&dest.join(format!("{m}.nii.gz"))).unwrap();
        assert_eq!(v.grid.shape, [32, 28, 10]);
    }
    // Against dcm2niix, through the files.
    let reference = scratch("dcm2niix/study-cli");
    dcm2niix(&c.dir, &reference);
    let flair = &c.series[0];
    let ours = clisc_nifti::read(&dest.join("flair.nii.gz")).unwrap();
    let theirs = clisc_nifti::read(&reference.join(format!("{}_0.nii", flair.series_uid))).unwrap();
    assert!(affine_diff(&ours.grid.affine, &theirs.grid.affine) <= 1e-3);
    assert_eq!(ours.data, theirs.data);

    // All volumes, default names.
    let all = scratch("cli-convert-all");
    let out = Command::new(exe)
        .args(["dicom", "convert"])
        .arg(&c.dir)
        .arg(&all)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&all)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(
        names.contains(&"2_AX_FLAIR.nii.gz".to_string()),
        "{names:?}"
    );

    // A missing modality is a clear error listing the series.
    let rules = scratch("rules").join("rules.toml");
    std::fs::write(&rules, "[modalities.dwi]\ninclude = ['diffusion']\n").unwrap();
    let out = Command::new(exe)
        .args(["dicom", "convert", "--rules"])
        .arg(&rules)
        .arg(&c.dir)
        .arg(&all)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no series for `dwi`") && err.contains("#4 'AX T1 POST GAD'"),
        "{err}"
    );
}
