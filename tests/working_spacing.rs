//! `[dataset] spacing` and the supervised baseline, through the real
//! binary: cases are resampled to the working spacing, the network learns
//! the training split's ground truth (`targets = "ground-truth"`), test
//! predictions come back on each case's own grid and are scored there,
//! the model file records the spacing, the bias correction and the
//! border refinement so `clisc infer` prepares volumes and refines
//! predictions the same way, and a run whose stderr is not a
//! terminal logs progress lines.
use clisc_tests::{infer_nifti, summary, write_tiny_dataset};
use std::path::Path;
use std::process::Command;

const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");

/// A supervised pipeline with these `[dataset]` values; `extra` is more
/// `[dataset]` lines.
fn pipeline(spacing: &str, bias_correction: &str, extra: &str) -> String {
    format!(
        r#"
[run]
output = "work"
device = "cpu"
seed = 5
threads = 1

[dataset]
root = "data"
modalities = ["flair"]
split = {{ ratios = [4.0, 1.0, 2.0], seed = 3 }}
spacing = {spacing}
bias_correction = {bias_correction}
{extra}

[stages.volumetric_segmenter]
plugin = "unet3d"
targets = "ground-truth"
settings = {{ features = [4, 8], patch_size = [16, 16, 16], batch_size = 2, iterations = 200, loss = "dice_ce", foreground_fraction = 0.5, window_batch = 8 }}
"#
    )
}

/// `clisc run` with progress lines on every update (stderr is a pipe);
/// returns the log.
fn run_logging_progress(config: &Path) -> String {
    let out = Command::new(CLI)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("CLISC_PROGRESS_INTERVAL", "0")
        .output()
        .expect("running clisc");
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "clisc run failed:\n{log}");
    log
}

fn grid_of(path: &Path) -> clisc_sdk::Grid {
    clisc_nifti::read(path).unwrap().grid
}

#[test]
fn supervised_run_at_a_working_spacing_scores_and_writes_on_the_original_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // 1 mm cases, 40 x 40 x 24: at 2 mm the network sees 20 x 20 x 12
    // (the brain's box, a little smaller).
    write_tiny_dataset(&root.join("data"), 7, [40, 40, 24]);
    let config = root.join("pipeline.toml");
    let refine = "refine_boundary_mm = 3.0";
    std::fs::write(
        &config,
        pipeline("[2.0, 2.0, 2.0]", "\"polynomial\"", refine),
    )
    .unwrap();
    let log = run_logging_progress(&config);

    // Progress lines on a non-terminal stderr: every training update with
    // position, percentage, elapsed time, ETA and the loss, and the end.
    let training: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("unet3d: training:"))
        .collect();
    assert!(training.len() >= 10, "progress lines:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    assert!(
        training
            .iter()
            .any(|l| l.contains("ETA") && l.contains("loss")),
        "{training:?}"
    );
    assert!(
        training.iter().any(|l| l.contains("200/200 (100%)")),
        "{training:?}"
    );
    assert!(
        log.contains("stages work at 2.000 x 2.000 x 2.000 mm"),
        "{log}"
    );

    let work = root.join("work");
    let s = summary(&work);
    assert_eq!(s["supervised"], true);
    assert_eq!(s["working_spacing"], serde_json::json!([2.0, 2.0, 2.0]));
    assert_eq!(s["bias_correction"], "polynomial");
    assert_eq!(s["refine_boundary_mm"], 3.0);
    // No pseudo-labelling stage ran.
    assert!(s["pseudo_masks"].as_array().unwrap().is_empty());
    assert!(!work.join("01-pseudo-labels").exists());
    let scores = s["test"]["network-1"].as_array().unwrap();
    assert_eq!(scores.len(), 2, "{scores:?}");
    for score in scores {
        let dice = score["dice"].as_f64().unwrap();
        assert!(dice > 0.6, "supervised test Dice {dice} ({score})");
        // Scored on the original voxels: volumes compared at 1 mm.
        let ratio = score["extra"]["volume_ratio"].as_f64().unwrap();
        assert!((0.5..2.0).contains(&ratio), "{score}");
    }

    // Predictions on each case's own grid, in its own header.
    let predictions: Vec<_> = std::fs::read_dir(work.join("08-predictions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .collect();
    assert_eq!(predictions.len(), 2);
    for p in &predictions {
        let id = p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".nii.gz", "");
        let flair = root.join(format!("data/{id}/{id}_flair.nii.gz"));
        assert_eq!(grid_of(p), grid_of(&flair), "{}", p.display());
    }

    // The model carries the spacing, the bias correction and the border
    // refinement; `clisc infer` prepares the input and refines the
    // prediction the same way and writes on the input's grid.
    let model = work.join("05-network-1/model.ckpt");
    let meta = clisc_inference::model_file::read_metadata(&model).unwrap();
    assert_eq!(meta.get("clisc.spacing").map(String::as_str), Some("2,2,2"));
    assert_eq!(
        meta.get("clisc.bias_correction").map(String::as_str),
        Some("polynomial")
    );
    assert_eq!(
        meta.get("clisc.refine_boundary_mm").map(String::as_str),
        Some("3")
    );
    let id = predictions[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".nii.gz", "");
    let flair = root.join(format!("data/{id}/{id}_flair.nii.gz"));
    let inferred = root.join("inferred.nii.gz");
    infer_nifti(CLI, &model, &flair, &inferred);
    assert_eq!(grid_of(&inferred), grid_of(&flair));
    // The same network and preprocessing as the run's own prediction.
    let a = clisc_nifti::read(&inferred).unwrap().data;
    let b = clisc_nifti::read(&predictions[0]).unwrap().data;
    assert_eq!(a, b, "clisc infer differs from the run's prediction");
}

/// The stderr of `clisc check` on a pipeline with these `[dataset]`
/// values, which must fail.
fn check_fails(spacing: &str, bias_correction: &str, extra: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("data")).unwrap();
    let config = root.join("pipeline.toml");
    std::fs::write(&config, pipeline(spacing, bias_correction, extra)).unwrap();
    let out = Command::new(CLI)
        .args(["check", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_bad_spacing_names_the_file_the_field_and_what_is_expected() {
    let err = check_fails("[2.0, -1.0, 2.0]", "\"none\"", "");
    assert!(
        err.contains("pipeline.toml") && err.contains("spacing") && err.contains("\"auto\""),
        "{err}"
    );
}

#[test]
fn a_bad_bias_correction_names_the_file_the_field_and_what_is_expected() {
    let err = check_fails("\"native\"", "\"n4\"", "");
    assert!(
        err.contains("pipeline.toml")
            && err.contains("n4")
            && err.contains("`none`")
            && err.contains("`polynomial`"),
        "{err}"
    );
}

#[test]
fn a_bad_refine_boundary_names_the_file_the_field_and_what_is_expected() {
    let err = check_fails("\"native\"", "\"none\"", "refine_boundary_mm = -2.0");
    assert!(
        err.contains("pipeline.toml")
            && err.contains("refine_boundary_mm = -2.0")
            && err.contains("positive number of millimetres"),
        "{err}"
    );
}
