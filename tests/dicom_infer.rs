//! `clisc infer` on a DICOM study writes a DICOM SEG (and NIfTI on
//! request) whose voxels are those of `clisc infer` on the NIfTI that
//! `clisc dicom convert` makes from the same series, with the same model.
//!
//! A small model is trained by a pipeline; a two-series study (`AX FLAIR`,
//! `AX T2`, oblique, slices written in reverse order) is written with
//! pydicom; the SEG is read back with highdicom and pydicom
//! (`support/check_dicom_seg.py`), which map every SEG voxel through the
//! SEG's own geometry into the NIfTI result. Needs `$CLISC_PYTHON`
//! (`source scripts/env.sh`).

#[path = "support/dicom_e2e.rs"]
mod dicom_e2e;
use dicom_e2e::{
    assert_seg_matches, case_flair, check_seg, clisc, converted_flair, make_study, train_model,
};

#[test]
fn infer_on_a_dicom_study_writes_a_seg_equal_to_infer_on_the_converted_nifti() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = train_model(root);
    let model = model.to_str().unwrap();
    let dicom = root.join("dicom");
    let study = make_study(
        &case_flair(root, 3),
        &dicom,
        "1.2.826.0.1.3680043.8.498.77001",
        "PAT-0003",
    );
    let study_uid = study["study_uid"].as_str().unwrap();

    // Reference: dcm2niix-compatible NIfTI of the FLAIR series, then infer.
    let flair_nii = converted_flair(&dicom, &root.join("nii"));
    let reference = root.join("reference-seg.nii.gz");
    let common = ["--model", model, "--device", "cpu", "--threads", "1"];
    let mut args = vec!["--quiet", "infer", "--input", flair_nii.to_str().unwrap()];
    args.extend(["--out", reference.to_str().unwrap()]);
    args.extend(common);
    clisc(&args);

    // DICOM in, SEG (and NIfTI) out.
    let out = root.join("out");
    let mut args = vec!["--quiet", "infer", "--input", dicom.to_str().unwrap()];
    args.extend(["--out", out.to_str().unwrap(), "--nifti"]);
    args.extend(common);
    let stdout = clisc(&args);
    assert!(stdout.contains("'AX FLAIR'"), "{stdout}");
    let seg = out.join(study_uid).join("seg.dcm");
    assert!(seg.is_file(), "no SEG at {}:\n{stdout}", seg.display());

    let v = check_seg(&seg, &reference, &dicom);
    assert_seg_matches(&v, &study);
    assert_eq!(v["patient_id"], "PAT-0003");

    // The NIfTI written next to the SEG: same voxels and geometry as the reference.
    let ours = clisc_nifti::read(&out.join(study_uid).join("seg.nii.gz")).unwrap();
    let theirs = clisc_nifti::read(&reference).unwrap();
    assert_eq!(ours.grid.shape, theirs.grid.shape);
    assert!(clisc_nifti::same_geometry(&ours.grid, &theirs.grid, 1e-3));
    assert_eq!(ours.data, theirs.data);
    eprintln!(
        "SEG: {} frames, {} tumour voxels, max index offset {}",
        v["frames"], v["seg_voxels"], v["max_index_offset"]
    );

    // Patient data: PatientName / PatientID appear neither in what the
    // commands print (debug logs included) nor in any file they write other
    // than the DICOM SEG, which must carry them; `--show-patient` shows them.
    let secrets = ["PAT-0003", "Test^Flair"];
    let dicom = dicom.to_str().unwrap();
    let (nii2, out2) = (root.join("nii2"), root.join("out2"));
    let mut printed = printed_by(&["dicom", "ls", "--skipped", dicom]);
    printed += &printed_by(&["dicom", "convert", dicom, nii2.to_str().unwrap()]);
    let mut args = vec!["infer", "--input", dicom, "--out", out2.to_str().unwrap()];
    args.push("--nifti");
    args.extend(common);
    printed += &printed_by(&args);
    assert!(printed.contains("patient hidden"), "{printed}");
    let written = files_under(&[nii2.as_path(), out2.as_path()]);
    assert!(written.len() >= 3, "{written:?}");
    for secret in secrets {
        assert!(!printed.contains(secret), "`{secret}` printed:\n{printed}");
        for f in written
            .iter()
            .filter(|f| f.extension().is_none_or(|e| e != "dcm"))
        {
            let bytes = uncompressed(f);
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "`{secret}` written to {}", f.display());
        }
    }
    let shown = clisc(&["dicom", "ls", "--show-patient", dicom]);
    assert!(secrets.iter().all(|s| shown.contains(s)), "{shown}");
}

/// Everything `clisc ARGS` prints (stdout and stderr) with debug logging.
fn printed_by(args: &[&str]) -> String {
    let out = std::process::Command::new(dicom_e2e::CLI)
        .args(args)
        .env("CLISC_LOG", "debug")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "clisc {args:?} failed:\n{text}");
    text
}

/// The bytes of `path`, gunzipped when it ends in `.gz`.
fn uncompressed(path: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .unwrap();
        out
    } else {
        bytes
    }
}

/// Every file under the folders, recursively.
fn files_under(dirs: &[&std::path::Path]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo: Vec<std::path::PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
