//! A lab's own volumetric model from `clisc run` to `clisc infer`, through
//! the real binary: the example cdylib `example-threshold-segmenter`
//! (plugins/examples/threshold-segmenter) is the network of a weight-free
//! pipeline on the tiny dataset; its model file then segments a case with
//! `clisc infer --plugin-path`, exactly as the run predicted it, and
//! without the plugin path `clisc infer` names the plugin it cannot find.
//! On a DICOM study made from a case's FLAIR, the SEG it writes holds the
//! voxels of its own inference on the converted series (checked with
//! highdicom, as `tests/dicom_infer.rs` does for the built-in network).
//! A TorchScript network wrapped with `clisc model wrap` and a process
//! plugin's network take the same DICOM route.

#[path = "support/dicom_e2e.rs"]
mod dicom_e2e;

use dicom_e2e::{
    assert_seg_matches, case_flair, check_seg, clisc, converted_flair, make_study,
    pipeline_with_network, python, train_external_model, CLI,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// How `clisc infer` is told where the model's plugin is.
#[derive(Clone, Copy)]
enum PluginRoute<'a> {
    /// Not at all (`CLISC_PLUGIN_PATH` removed).
    Nowhere,
    /// `CLISC_PLUGIN_PATH`.
    Environment(&'a Path),
    /// `--plugin-path`.
    Flag(&'a Path),
}

/// `clisc --quiet infer --model MODEL --input INPUT --out OUT` with the
/// plugin found by `route`.
fn infer(model: &Path, input: &Path, out: &Path, route: PluginRoute) -> Output {
    let mut command = Command::new(CLI);
    command.args(["--quiet", "infer"]);
    for (flag, path) in [("--model", model), ("--input", input), ("--out", out)] {
        command.args([flag, path.to_str().unwrap()]);
    }
    command.env_remove("CLISC_PLUGIN_PATH");
    match route {
        PluginRoute::Nowhere => {}
        PluginRoute::Environment(library) => {
            command.env("CLISC_PLUGIN_PATH", library);
        }
        PluginRoute::Flag(library) => {
            command.args(["--plugin-path", library.to_str().unwrap()]);
        }
    }
    command.output().expect("running clisc infer")
}

/// A test case of the run under `root`: the run's prediction and the
/// case's FLAIR.
fn test_case(root: &Path) -> (PathBuf, PathBuf) {
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
    let flair = root.join(format!("data/{id}/{id}_flair.nii.gz"));
    (prediction, flair)
}

/// Panics with its stderr unless `out` succeeded.
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_external_network_segments_new_volumes_with_clisc_infer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (library, model) = train_external_model(root);
    let meta = clisc_inference::model_file::read_metadata(&model).unwrap();
    assert_eq!(
        meta.get("clisc.plugin").map(String::as_str),
        Some("example-threshold-segmenter")
    );

    // The run's prediction of a test case, and `clisc infer` of its FLAIR.
    let (prediction, flair) = test_case(root);

    let out = root.join("inferred.nii.gz");
    let missing = infer(&model, &flair, &out, PluginRoute::Nowhere);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("was written by plugin `example-threshold-segmenter`")
            && stderr.contains("no plugin named `example-threshold-segmenter`"),
        "{stderr}"
    );
    assert!(!out.exists());

    assert_ok(&infer(
        &model,
        &flair,
        &out,
        PluginRoute::Environment(&library),
    ));
    let inferred = clisc_nifti::read(&out).unwrap().data;
    let predicted = clisc_nifti::read(&prediction).unwrap().data;
    assert_eq!(
        inferred, predicted,
        "clisc infer differs from the run's prediction"
    );
    assert!(inferred.iter().any(|&v| v != 0.0), "an empty segmentation");

    let again = root.join("again.nii.gz");
    assert_ok(&infer(&model, &flair, &again, PluginRoute::Flag(&library)));
    assert_eq!(clisc_nifti::read(&again).unwrap().data, predicted);
}

#[test]
fn an_external_network_segments_a_dicom_study() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (library, model) = train_external_model(root);

    segments_a_dicom_study_as_its_series(root, &model, PluginRoute::Flag(&library));
}

/// Makes a DICOM study of case 003's FLAIR under `root`, and checks that
/// `clisc infer` with `model` (its plugin found by `route`) writes a SEG
/// holding exactly the voxels of its inference on the converted series.
fn segments_a_dicom_study_as_its_series(root: &Path, model: &Path, route: PluginRoute) {
    let dicom = root.join("dicom");
    let study = make_study(
        &case_flair(root, 3),
        &dicom,
        "1.2.826.0.1.3680043.8.498.77009",
        "PAT-0009",
    );
    let study_uid = study["study_uid"].as_str().unwrap();

    // Reference: the converted FLAIR series, segmented as NIfTI.
    let flair_nii = converted_flair(&dicom, &root.join("nii"));
    let reference = root.join("reference.nii.gz");
    assert_ok(&infer(model, &flair_nii, &reference, route));

    // DICOM in, SEG out.
    let out = root.join("out");
    assert_ok(&infer(model, &dicom, &out, route));
    let seg = out.join(study_uid).join("seg.dcm");
    assert!(seg.is_file(), "no SEG at {}", seg.display());
    let v = check_seg(&seg, &reference, &dicom);
    assert_seg_matches(&v, &study);
}

#[test]
fn a_process_plugin_network_segments_new_volumes_with_clisc_infer() {
    // A network that is a Python process (`process-volumetric-segmenter`
    // running the pure-Python test plugin, without numpy, which saves its
    // threshold as text): the run wraps that file into a model file, and
    // `clisc infer` starts the same process on it.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    clisc_tests::write_tiny_dataset(&root.join("data"), 7, [32, 32, 16]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/adapters/tests/process/pure_python.py")
        .canonicalize()
        .unwrap();
    let network = format!(
        "plugin = \"process-volumetric-segmenter\"\nsettings = {{ command = [\"env\", \"CLISC_PLUGIN_NUMPY=0\", {:?}, {:?}, \"volumetric-segmenter\"], settings = {{ threshold = 1.0 }} }}",
        python(),
        script.display().to_string()
    );
    let config = pipeline_with_network(root, &network);
    clisc(&["--quiet", "run", "--config", config.to_str().unwrap()]);
    let model = root.join("work/05-network-1/model.ckpt");
    let meta = clisc_inference::model_file::read_metadata(&model).unwrap();
    assert_eq!(
        meta.get("clisc.plugin").map(String::as_str),
        Some("process-volumetric-segmenter")
    );
    assert!(clisc_inference::model_file::is_wrapped(&model).unwrap());

    let (prediction, flair) = test_case(root);
    let out = root.join("inferred.nii.gz");
    assert_ok(&infer(&model, &flair, &out, PluginRoute::Nowhere));
    let predicted = clisc_nifti::read(&prediction).unwrap().data;
    assert!(predicted.iter().any(|&v| v != 0.0), "an empty prediction");
    assert_eq!(clisc_nifti::read(&out).unwrap().data, predicted);
    segments_a_dicom_study_as_its_series(root, &model, PluginRoute::Nowhere);
}

#[test]
fn a_wrapped_torchscript_network_segments_a_dicom_study() {
    // A network exported with TorchScript elsewhere (the adapter tests'
    // `volumetric.pt`, class 1 where the z-scored FLAIR exceeds 2), made
    // into a model file by `clisc model wrap` without any run.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    clisc_tests::write_tiny_dataset(&root.join("data"), 3, [32, 32, 16]);
    let maker = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/adapters/tests/torchscript/make_models.py");
    let exported = root.join("exported");
    let made = Command::new(python())
        .arg(&maker)
        .arg(&exported)
        .output()
        .expect("running make_models.py");
    assert_ok(&made);
    let model = root.join("unet.ckpt");
    let model_setting = format!("model={}", exported.join("volumetric.pt").display());
    clisc(&[
        "--quiet",
        "model",
        "wrap",
        "--plugin",
        "torchscript-volumetric-segmenter",
        "--set",
        &model_setting,
        "--out",
        model.to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&exported).unwrap();

    let out = root.join("inferred.nii.gz");
    assert_ok(&infer(
        &model,
        &case_flair(root, 1),
        &out,
        PluginRoute::Nowhere,
    ));
    let labels = clisc_nifti::read(&out).unwrap().data;
    assert!(labels.iter().any(|&v| v != 0.0), "an empty segmentation");
    segments_a_dicom_study_as_its_series(root, &model, PluginRoute::Nowhere);
}
