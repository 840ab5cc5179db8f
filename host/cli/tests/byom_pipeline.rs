//! Bring your own model, end to end: one real pipeline run (`clisc run`'s
//! code path) on a small synthetic BraTS-layout dataset in which every
//! stage comes from a runtime plugin of one of the three routes:
//!
//! * pseudo-labeler: a scripted TorchScript slice classifier
//!   (`torchscript-pseudo-labeler`, route 2);
//! * ROI extractor: a Python process (`process-roi-extractor` running
//!   `host/cli/tests/byom/roi_extractor.py`, route 3);
//! * prompt generator: the built-in `box-points`;
//! * promptable segmenter: the external Rust example `example-box-fill`,
//!   loaded by path from `[plugins] paths` (route 1);
//! * volumetric segmenter: a traced TorchScript 3D network
//!   (`torchscript-volumetric-segmenter`, route 2).
//!
//! The run asks for `device = "auto"`; the Python plugin fails unless it
//! receives the host's resolved device (`cpu` or `cuda:N`). Afterwards the
//! `clisc` binary (`clisc infer`), given only the run's model file
//! (the TorchScript archive wrapped with the adapter's identity), repeats
//! the run's prediction of a test case.
//!
//! Needs `$CLISC_PYTHON` (torch, numpy); the models are exported in the test.

use clisc::commands::run::run_pipeline;
use clisc::scaffold::library_file_name;
use clisc_pipeline::RunOptions;
use clisc_sdk::{Grid, LabelVolume};
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> String {
    clisc_test_harness::python("the test exports TorchScript models with it")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Case `i`: a 32 x 28 x 14 head with a brain block of intensity ~100 and a
/// 5x5x3 tumour of intensity 300 whose position depends on `i`.
fn write_case(root: &Path, i: usize) {
    let id = format!("BraTS20_Training_{:03}", i + 1);
    let dir = root.join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let grid = Grid::new([32, 28, 14], [1.0; 3]);
    let mut flair = vec![0f32; grid.len()];
    let mut seg = LabelVolume::zeros(grid);
    let (tx, ty, tz) = (10 + 2 * (i % 4), 9 + (i % 3) * 2, 5 + i % 3);
    for z in 1..13 {
        for y in 3..25 {
            for x in 3..29 {
                let idx = grid.index(x, y, z);
                flair[idx] = 100.0 + ((x * 7 + y * 13 + z * 3 + i) % 11) as f32;
                if (tx..tx + 5).contains(&x)
                    && (ty..ty + 5).contains(&y)
                    && (tz..tz + 3).contains(&z)
                {
                    flair[idx] = 300.0 + (x % 3) as f32;
                    seg.data[idx] = 2;
                }
            }
        }
    }
    clisc_nifti::write_f32(&dir.join(format!("{id}_flair.nii.gz")), &grid, &flair, None).unwrap();
    clisc_nifti::write_labels(&dir.join(format!("{id}_seg.nii.gz")), &seg, None).unwrap();
}

#[test]
fn a_pipeline_made_only_of_runtime_plugins_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    for i in 0..6 {
        write_case(&data, i);
    }
    let models = root.join("models");
    let out = Command::new(python())
        .arg(repo().join("plugins/adapters/tests/torchscript/make_models.py"))
        .arg(&models)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make_models.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let box_fill = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join(library_file_name("clisc-example-box-fill-segmenter"));
    assert!(
        box_fill.is_file(),
        "{} missing (a dev-dependency of the host)",
        box_fill.display()
    );
    let roi_script = repo().join("host/cli/tests/byom/roi_extractor.py");

    let pipeline = format!(
        r#"
[run]
output = "work"
# The Python ROI extractor fails unless the host resolved this.
device = "auto"
seed = 3

[dataset]
root = "data"
modalities = ["flair"]
split = {{ ratios = [4.0, 0.0, 2.0], seed = 1 }}

[plugins]
paths = [{box_fill:?}]

[stages.pseudo_labeler]
plugin = "torchscript-pseudo-labeler"
settings = {{ model = "models/labeler.pt", output = "logits", class_index = 1, keep_confidence = 0.8 }}

[stages.roi_extractor]
plugin = "process-roi-extractor"
settings = {{ command = [{python:?}, {roi:?}], timeout_seconds = 60.0, settings = {{ k = 3.0 }} }}

[stages.prompt_generator]
plugin = "box-points"
settings = {{ box_dilation = 2 }}

[stages.promptable_segmenter]
plugin = "example-box-fill"
settings = {{ k = 0.5 }}

[stages.volumetric_segmenter]
plugin = "torchscript-volumetric-segmenter"
settings = {{ model = "models/volumetric.pt", pad_multiple = 4 }}
"#,
        box_fill = box_fill.display().to_string(),
        python = python(),
        roi = roi_script.display().to_string(),
    );
    let config = root.join("pipeline.toml");
    std::fs::write(&config, pipeline).unwrap();

    let summary = run_pipeline(&config, RunOptions::default(), true)
        .unwrap_or_else(|e| panic!("pipeline failed: {e:#}"));
    assert!(
        summary
            .stages
            .iter()
            .any(|s| s.contains("example-box-fill")),
        "{:?}",
        summary.stages
    );
    // Every stage did real work on this easy data.
    let labels = summary.slice_labels.as_ref().expect("slice-label stats");
    eprintln!("slice labels: {labels:?}");
    let roi_dice: Vec<f64> = summary.rois.values().flatten().map(|s| s.dice).collect();
    assert!(
        !roi_dice.is_empty() && roi_dice.iter().all(|d| *d > 0.8),
        "ROI Dice {roi_dice:?}"
    );
    // Each ROI score carries its precision and recall, consistent with its
    // Dice (the harmonic mean of the two).
    for s in summary.rois.values().flatten() {
        let (p, r) = (s.extra["precision"], s.extra["recall"]);
        assert!((2.0 * p * r / (p + r) - s.dice).abs() < 1e-9, "{s:?}");
    }
    let mask_dice: Vec<f64> = summary.pseudo_masks.iter().map(|s| s.dice).collect();
    assert!(
        !mask_dice.is_empty() && mask_dice.iter().all(|d| *d > 0.8),
        "pseudo-mask Dice {mask_dice:?}"
    );
    let test: Vec<f64> = summary.test.values().flatten().map(|s| s.dice).collect();
    assert!(
        !test.is_empty() && test.iter().all(|d| *d > 0.8),
        "test Dice {test:?}"
    );
    assert!(root.join("work/summary.json").is_file());

    // The network is a TorchScript archive, which the run wrapped into a
    // model file with the adapter's name and settings: `clisc infer`
    // segments with it alone (the exported file moved away), as the run
    // predicted.
    let model = root.join("work/05-network-1/model.ckpt");
    let meta = clisc_inference::model_file::read_metadata(&model).unwrap();
    assert_eq!(
        meta.get("clisc.plugin").map(String::as_str),
        Some("torchscript-volumetric-segmenter")
    );
    assert!(clisc_inference::model_file::is_wrapped(&model).unwrap());
    std::fs::rename(&models, root.join("moved-away")).unwrap();
    let prediction = std::fs::read_dir(root.join("work/08-predictions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .expect("a test prediction");
    let id = prediction
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".nii.gz", "");
    let flair = data.join(format!("{id}/{id}_flair.nii.gz"));
    let infer = |model: &Path, out: &Path| {
        clisc(&[
            "infer".as_ref(),
            "--model".as_ref(),
            model.as_os_str(),
            "--input".as_ref(),
            flair.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
    };
    let inferred = root.join("inferred.nii.gz");
    infer(&model, &inferred);
    let predicted = clisc_nifti::read(&prediction).unwrap().data;
    assert!(predicted.iter().any(|&v| v != 0.0), "an empty prediction");
    assert_eq!(clisc_nifti::read(&inferred).unwrap().data, predicted);

    // `clisc model wrap` makes such a file from the exported network and
    // its contract, without a run; `clisc model info` shows what it holds.
    let wrapped = root.join("wrapped.ckpt");
    let exported = root.join("moved-away/volumetric.pt");
    let model_setting = format!("model={}", exported.display());
    clisc(&[
        "model".as_ref(),
        "wrap".as_ref(),
        "--plugin".as_ref(),
        "torchscript-volumetric-segmenter".as_ref(),
        "--set".as_ref(),
        model_setting.as_ref(),
        "--set".as_ref(),
        "pad_multiple=4".as_ref(),
        "--out".as_ref(),
        wrapped.as_os_str(),
    ]);
    let info = clisc(&["model".as_ref(), "info".as_ref(), wrapped.as_os_str()]);
    assert!(
        info.contains("clisc.plugin: torchscript-volumetric-segmenter")
            && info.contains("pad_multiple = 4")
            && info.contains("wraps a plugin file: yes"),
        "{info}"
    );
    let from_wrapped = root.join("from-wrapped.nii.gz");
    infer(&wrapped, &from_wrapped);
    assert_eq!(clisc_nifti::read(&from_wrapped).unwrap().data, predicted);
}

/// Runs `clisc --quiet ARGS` from an empty folder, panicking with its
/// stderr when it fails; returns its stdout.
fn clisc(args: &[&std::ffi::OsStr]) -> String {
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clisc"))
        .current_dir(elsewhere.path())
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "clisc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
