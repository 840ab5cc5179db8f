//! Helpers of the DICOM end-to-end tests (`tests/dicom_infer.rs`,
//! `tests/dicom_pacs.rs`, `tests/byom_infer.rs`): a small model trained by
//! a pipeline (built-in network, or the external example's), a FLAIR
//! study written as DICOM with pydicom, the SEG checker, and running the
//! `clisc` binary. Included with `#[path]` by each test.

#![allow(dead_code)]

use clisc_tests::{build_dir, tiny_pipeline_toml, write_tiny_dataset};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `clisc` binary built for the tests.
pub const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");

/// The Python interpreter of the project's venv (pydicom, highdicom, nibabel).
pub fn python() -> String {
    clisc_test_harness::python(NEEDS_PYTHON)
}

/// Why the DICOM tests need `$CLISC_PYTHON`.
const NEEDS_PYTHON: &str =
    "the DICOM tests write their study with pydicom and read the SEG back with highdicom";

/// Runs `clisc ARGS`, panicking with its output when it fails; returns stdout.
pub fn clisc(args: &[&str]) -> String {
    let out = Command::new(CLI)
        .args(args)
        .output()
        .expect("running clisc");
    assert!(
        out.status.success(),
        "clisc {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Trains the small pipeline of `tests/infer_overlay.rs` on 7 tiny cases
/// under `root` (data in `root/data`); returns the network-1 model file.
pub fn train_model(root: &Path) -> PathBuf {
    write_tiny_dataset(&root.join("data"), 7, [40, 40, 24]);
    let text = r#"
[run]
output = "work"
device = "cpu"
seed = 5
threads = 1

[dataset]
root = "data"
modalities = ["flair"]
split = { ratios = [4.0, 1.0, 2.0], seed = 3 }

[stages.pseudo_labeler]
plugin = "flair-intensity"
settings = { smoothing = false }

[stages.roi_extractor]
plugin = "cam"
settings = { arch = "resnet18", input_size = 32, epochs = 1, batch_size = 16, amda_rounds = 0, gate_classifier = false, threshold = "otsu" }

[stages.prompt_generator]
plugin = "box-points"
settings = { box_dilation = 2 }

[stages.promptable_segmenter]
plugin = "classic-prompt"

[stages.volumetric_segmenter]
plugin = "unet3d"
settings = { features = [4, 8], patch_size = [16, 16, 16], batch_size = 2, iterations = 300, loss = "dice_ce", foreground_fraction = 0.5, window_batch = 8 }
"#;
    let config = root.join("pipeline.toml");
    std::fs::write(&config, text).unwrap();
    clisc(&["--quiet", "run", "--config", config.to_str().unwrap()]);
    let model = root.join("work/05-network-1/model.ckpt");
    assert!(model.is_file(), "no model at {}", model.display());
    model
}

/// The FLAIR file of tiny case `n` (1-based) under `root/data`.
pub fn case_flair(root: &Path, n: usize) -> PathBuf {
    let id = format!("BraTS20_Training_{n:03}");
    root.join(format!("data/{id}/{id}_flair.nii.gz"))
}

/// Converts the study in `dicom` with `clisc dicom convert` into `out` and
/// returns its FLAIR series as NIfTI (the reference a SEG is checked
/// against).
pub fn converted_flair(dicom: &Path, out: &Path) -> PathBuf {
    clisc(&[
        "--quiet",
        "dicom",
        "convert",
        dicom.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let flair = out.join("3_AX_FLAIR.nii.gz");
    assert!(flair.is_file(), "{} missing", flair.display());
    flair
}

/// Writes a two-series study (`AX FLAIR` from `flair`, `AX T2`) into `out`
/// with `support/make_dicom_study.py`; returns its JSON description
/// (`study_uid`, `flair_series_uid`, `t2_series_uid`, `frame_of_reference_uid`).
pub fn make_study(
    flair: &Path,
    out: &Path,
    study_uid: &str,
    patient_id: &str,
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/make_dicom_study.py");
    let text = run_python(&[
        script.to_str().unwrap(),
        flair.to_str().unwrap(),
        out.to_str().unwrap(),
        study_uid,
        patient_id,
    ]);
    last_json(&text)
}

/// Reads `seg` with highdicom/pydicom and compares it with the NIfTI
/// `labels` through the SEG's own geometry (`support/check_dicom_seg.py`).
pub fn check_seg(seg: &Path, labels: &Path, source: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/check_dicom_seg.py");
    let text = run_python(&[
        script.to_str().unwrap(),
        seg.to_str().unwrap(),
        labels.to_str().unwrap(),
        source.to_str().unwrap(),
    ]);
    last_json(&text)
}

/// Runs `$CLISC_PYTHON ARGS`; returns its stdout and stderr.
fn run_python(args: &[&str]) -> String {
    clisc_test_harness::run_python(NEEDS_PYTHON, args).combined()
}

fn last_json(text: &str) -> serde_json::Value {
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in:\n{text}"));
    serde_json::from_str(line).unwrap()
}

/// Asserts that the SEG described by `v` (from [`check_seg`]) belongs to
/// the study `study` (from [`make_study`]), references its FLAIR series
/// only, and holds exactly the non-zero voxels of the NIfTI labels it was
/// compared with (a non-empty segmentation).
pub fn assert_seg_matches(v: &serde_json::Value, study: &serde_json::Value) {
    assert_eq!(v["sop_class_uid"], "1.2.840.10008.5.1.4.1.1.66.4");
    assert_eq!(v["study_uid"], study["study_uid"]);
    assert_eq!(v["frame_of_reference_uid"], study["frame_of_reference_uid"]);
    assert_eq!(
        v["referenced_series"],
        serde_json::json!([study["flair_series_uid"]])
    );
    assert_eq!(
        v["frame_source_series"],
        serde_json::json!([study["flair_series_uid"]])
    );
    assert_eq!(v["unresolved_source_references"], 0);
    let seg_voxels = v["seg_voxels"].as_u64().unwrap();
    assert!(seg_voxels > 0, "empty segmentation: {v}");
    assert_eq!(seg_voxels, v["nifti_voxels"].as_u64().unwrap(), "{v}");
    assert_eq!(v["seg_voxels_not_in_nifti"], 0, "{v}");
    assert!(v["max_index_offset"].as_f64().unwrap() < 1e-3, "{v}");
}

/// The example cdylib `example-threshold-segmenter` (a lab's own network
/// as an external plugin), built by `./dev test`.
pub fn segmenter_library() -> PathBuf {
    let path = build_dir().join("libclisc_example_threshold_segmenter.so");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p clisc-example-threshold-segmenter` (./dev test does)",
        path.display()
    );
    path
}

/// The tiny pipeline (under `root`) with `network` as the body of its
/// `[stages.volumetric_segmenter]` and no filter; returns its path.
pub fn pipeline_with_network(root: &Path, network: &str) -> PathBuf {
    let text = tiny_pipeline_toml("work", 10, 5);
    let start = text.find("[stages.volumetric_segmenter]").unwrap();
    let text = format!(
        "{}[stages.volumetric_segmenter]\n{network}\n",
        &text[..start]
    );
    let path = root.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Trains the pipeline on 7 tiny cases under `root` (data in `root/data`);
/// returns the example's library and the model file the run wrote.
pub fn train_external_model(root: &Path) -> (PathBuf, PathBuf) {
    write_tiny_dataset(&root.join("data"), 7, [32, 32, 16]);
    let library = segmenter_library();
    let network = format!(
        "plugin = \"example-threshold-segmenter\"\n\n[plugins]\npaths = [{:?}]",
        library.display().to_string()
    );
    let config = pipeline_with_network(root, &network);
    clisc(&["--quiet", "run", "--config", config.to_str().unwrap()]);
    (library, root.join("work/05-network-1/model.ckpt"))
}
