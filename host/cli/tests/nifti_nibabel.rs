//! NIfTI I/O against an independent implementation (nibabel, through
//! `$CLISC_PYTHON`): files clisc writes are read by nibabel with the same
//! affine, codes and voxels; files nibabel writes (oblique affines, int16
//! with scaling, float64, uint8, qform-only int32, sform overriding qform)
//! are read by clisc with nibabel's affine and voxels.
use clisc_sdk::{Grid, LabelVolume};
use std::path::{Path, PathBuf};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/nibabel_check.py")
}

/// Runs the nibabel script with `args`; returns its stdout.
fn run_python(args: &[&str]) -> String {
    let script = script();
    let mut all = vec![script.to_str().unwrap()];
    all.extend_from_slice(args);
    clisc_test_harness::run_python("it provides a Python with nibabel", &all).stdout
}

fn read_f64(path: &str) -> Vec<f64> {
    std::fs::read(format!("{path}.f64"))
        .expect("voxel dump")
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn affine_of(v: &serde_json::Value) -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            a[r][c] = v[r][c].as_f64().expect("number");
        }
    }
    a
}

fn assert_affine_close(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4], tol: f64, what: &str) {
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (a[r][c] - b[r][c]).abs() <= tol,
                "{what}: affine[{r}][{c}] {} vs {}\n{a:?}\n{b:?}",
                a[r][c],
                b[r][c]
            );
        }
    }
}

/// An oblique affine: rotation, anisotropic spacing, translation.
fn oblique_grid(shape: [u32; 3]) -> Grid {
    let (a, b) = (0.3f64, -0.2f64);
    let rz = [
        [a.cos(), -a.sin(), 0.0],
        [a.sin(), a.cos(), 0.0],
        [0.0, 0.0, 1.0],
    ];
    let ry = [
        [b.cos(), 0.0, b.sin()],
        [0.0, 1.0, 0.0],
        [-b.sin(), 0.0, b.cos()],
    ];
    let spacing = [0.8, 1.25, 3.0];
    let mut g = Grid::new(shape, spacing);
    for (i, rz_row) in rz.iter().enumerate() {
        for j in 0..3 {
            let r: f64 = (0..3).map(|k| rz_row[k] * ry[k][j]).sum();
            g.affine[i][j] = r * spacing[j];
        }
    }
    g.affine[0][3] = -90.5;
    g.affine[1][3] = 126.0;
    g.affine[2][3] = -72.25;
    g
}

#[test]
fn nibabel_reads_what_clisc_writes() {
    let dir = tempfile::tempdir().unwrap();
    let shape = [17, 13, 9];
    let mut cases: Vec<(PathBuf, Grid)> = Vec::new();
    let g = oblique_grid(shape);
    let data: Vec<f32> = (0..g.len())
        .map(|i| (i as f32 * 0.37).sin() * 1000.0)
        .collect();
    let f32_path = dir.path().join("oblique_f32.nii.gz");
    clisc_nifti::write_f32(&f32_path, &g, &data, None).unwrap();
    cases.push((f32_path, g));
    // Labels with a flipped (BraTS-like) affine, uncompressed.
    let mut g2 = Grid::new(shape, [1.0; 3]);
    g2.affine[0][0] = -1.0;
    g2.affine[1][1] = -1.0;
    g2.affine[1][3] = 239.0;
    let labels = LabelVolume {
        grid: g2,
        data: (0..g2.len())
            .map(|i| [0u8, 1, 2, 4][i % 4])
            .collect::<Vec<_>>()
            .into(),
    };
    let lab_path = dir.path().join("labels.nii");
    clisc_nifti::write_labels(&lab_path, &labels, None).unwrap();
    cases.push((lab_path, g2));
    // Codes kept from a reference header (sform 2, qform 1).
    let nib_dir = tempfile::tempdir().unwrap();
    run_python(&["write", nib_dir.path().to_str().unwrap()]);
    let reference = clisc_nifti::read(&nib_dir.path().join("float64_flipped.nii")).unwrap();
    let ref_path = dir.path().join("with_reference.nii.gz");
    clisc_nifti::write_f32(&ref_path, &g, &data, Some(&reference.info)).unwrap();
    cases.push((ref_path.clone(), g));

    let paths: Vec<String> = cases.iter().map(|(p, _)| p.display().to_string()).collect();
    let mut args = vec!["read"];
    args.extend(paths.iter().map(String::as_str));
    let seen: serde_json::Value = serde_json::from_str(&run_python(&args)).unwrap();
    for (k, (path, grid)) in cases.iter().enumerate() {
        let s = &seen[k];
        let what = path.display().to_string();
        assert_eq!(s["shape"], serde_json::json!(grid.shape), "{what}");
        // f32 storage of the header: 1e-4 mm.
        assert_affine_close(&affine_of(&s["affine"]), &grid.affine, 1e-4, &what);
        // The qform agrees with the sform (rigid + zooms affines).
        assert_affine_close(
            &affine_of(&s["qform"]),
            &affine_of(&s["sform"]),
            1e-4,
            &format!("{what} qform"),
        );
        let voxels = read_f64(&paths[k]);
        let ours = clisc_nifti::read(path).unwrap().data;
        assert_eq!(voxels.len(), ours.len());
        assert!(
            voxels.iter().zip(&ours).all(|(a, b)| *a == *b as f64),
            "{what}: voxels differ"
        );
    }
    assert_eq!(
        (
            seen[0]["sform_code"].as_i64(),
            seen[0]["qform_code"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(seen[1]["dtype"], "uint8");
    assert_eq!(seen[0]["dtype"], "float32");
    assert_eq!(
        (
            seen[2]["sform_code"].as_i64(),
            seen[2]["qform_code"].as_i64()
        ),
        (Some(2), Some(1))
    );
}

#[test]
fn clisc_reads_what_nibabel_writes() {
    let dir = tempfile::tempdir().unwrap();
    run_python(&["write", dir.path().to_str().unwrap()]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).unwrap())
            .unwrap();
    let files = manifest.as_array().unwrap();
    assert_eq!(files.len(), 5);
    for f in files {
        let path = f["path"].as_str().unwrap();
        let v = clisc_nifti::read(Path::new(path)).unwrap();
        assert_eq!(serde_json::json!(v.grid.shape), f["shape"], "{path}");
        assert_affine_close(&v.grid.affine, &affine_of(&f["affine"]), 1e-5, path);
        let zooms: Vec<f64> = f["zooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|z| z.as_f64().unwrap())
            .collect();
        for (d, zoom) in zooms.iter().enumerate().take(3) {
            assert!((v.grid.spacing[d] - zoom).abs() < 1e-6, "{path}: spacing");
        }
        assert_eq!(v.info.sform_code as i64, f["sform_code"].as_i64().unwrap());
        assert_eq!(v.info.qform_code as i64, f["qform_code"].as_i64().unwrap());
        let want = read_f64(path);
        for (i, (a, b)) in v.data.iter().zip(&want).enumerate() {
            let tol = 1e-6 * b.abs().max(1.0);
            assert!(
                (*a as f64 - b).abs() <= tol,
                "{path}: voxel {i}: {a} vs {b}"
            );
        }
        // Round trip through clisc keeps geometry and (f32) voxels.
        let out = dir
            .path()
            .join("rt")
            .join(Path::new(path).file_name().unwrap());
        let out = PathBuf::from(
            out.to_string_lossy()
                .replace(".nii.gz", ".nii")
                .replace(".nii", ".nii.gz"),
        );
        clisc_nifti::write_f32(&out, &v.grid, &v.data, Some(&v.info)).unwrap();
        let back = clisc_nifti::read(&out).unwrap();
        assert_eq!(back.data, v.data, "{path}: round trip voxels");
        assert_affine_close(
            &back.grid.affine,
            &v.grid.affine,
            1e-5,
            &format!("{path} round trip"),
        );
        assert_eq!(
            (back.info.sform_code, back.info.qform_code),
            (v.info.sform_code, v.info.qform_code)
        );
    }
    let scaled = clisc_nifti::read(&dir.path().join("int16_scaled_oblique.nii.gz")).unwrap();
    assert_eq!(scaled.info.scaling, (0.5, 10.0));
    assert_eq!(scaled.info.datatype, 4);
    assert_eq!(scaled.info.description, "int16 scaled oblique");
}
