//! Swapping a built-in stage for an external plugin by editing only the
//! pipeline file, and what happens when that plugin panics.

use clisc::commands::run::run_pipeline;
use clisc_pipeline::RunOptions;
use clisc_tests::{example_plugin_library, manifest, write_tiny_dataset};
use std::path::Path;

fn pipeline(dir: &Path, name: &str, stage: &str, plugin_paths: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[run]
output = "work-{name}"
device = "cpu"
seed = 3

[dataset]
root = "data"
modalities = ["flair"]
split = {{ ratios = [2.0, 1.0, 1.0], seed = 1 }}

[plugins]
paths = [{plugin_paths}]

[stages.pseudo_labeler]
{stage}
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn labels_of(work: &Path) -> Vec<serde_json::Value> {
    let dir = work.join("01-pseudo-labels");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn toml_swaps_builtin_for_external_plugin() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(&dir.path().join("data"), 4, [40, 40, 24]);
    let lib = example_plugin_library();

    let builtin = pipeline(dir.path(), "builtin", "plugin = \"flair-intensity\"", "");
    run_pipeline(&builtin, RunOptions::default(), true).expect("built-in pipeline runs");
    let m = manifest(&dir.path().join("work-builtin"));
    assert_eq!(
        m["steps"]["pseudo-labels"]["plugins"][0],
        "pseudo_labeler=flair-intensity@0.1.0"
    );

    let external = pipeline(
        dir.path(),
        "external",
        "plugin = \"example-threshold\"\nsettings = { k = 2.0, min_fraction = 0.02 }",
        &format!("{:?}", lib.display().to_string()),
    );
    let summary =
        run_pipeline(&external, RunOptions::default(), true).expect("external pipeline runs");
    let work = dir.path().join("work-external");
    let m = manifest(&work);
    assert_eq!(m["steps"]["pseudo-labels"]["status"], "done");
    assert_eq!(
        m["steps"]["pseudo-labels"]["plugins"][0],
        "pseudo_labeler=example-threshold@0.1.0"
    );
    assert!(summary
        .stages
        .iter()
        .any(|s| s == "pseudo_labeler=example-threshold"));

    // The external plugin really labelled the slices: lesion slices
    // positive, slices far from the lesion negative.
    let labels = labels_of(&work);
    assert!(!labels.is_empty());
    for case in &labels {
        let slices = case.as_array().unwrap();
        // Stages see the volume cropped to the brain: the ellipsoid spans
        // original slices 2..=22, so cropped slice k is original slice k + 2.
        assert_eq!(slices.len(), 21);
        assert_eq!(
            slices[8]["label"], 1,
            "original slice 10 holds the lesion: {case}"
        );
        assert_eq!(
            slices[1]["label"], 0,
            "original slice 3 has no lesion: {case}"
        );
    }
    let stats = summary
        .slice_labels
        .expect("ground truth exists, so slice-label accuracy is reported");
    assert!(
        stats.all.accuracy > 0.9,
        "slice accuracy {}",
        stats.all.accuracy
    );
}

#[test]
fn panicking_external_plugin_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(&dir.path().join("data"), 3, [24, 24, 12]);
    let lib = example_plugin_library();
    let config = pipeline(
        dir.path(),
        "panics",
        "plugin = \"example-threshold\"\nsettings = { panic_on_slice = 3 }",
        &format!("{:?}", lib.display().to_string()),
    );
    let err = run_pipeline(&config, RunOptions::default(), true).expect_err("the plugin panics");
    let text = format!("{err:#}");
    assert!(text.contains("pseudo-labeler on case"), "{text}");
    assert!(text.contains("plugin panicked"), "{text}");
    assert!(text.contains("deliberate panic on slice 3"), "{text}");
}

#[test]
fn unknown_settings_of_an_external_plugin_are_positioned_errors() {
    let dir = tempfile::tempdir().unwrap();
    let lib = example_plugin_library();
    let config = pipeline(
        dir.path(),
        "typo",
        "plugin = \"example-threshold\"\nsettings = { kk = 2.0 }",
        &format!("{:?}", lib.display().to_string()),
    );
    let err = run_pipeline(&config, RunOptions::default(), true).expect_err("typo in settings");
    let text = format!("{err:#}");
    assert!(text.contains("typo.toml:17:"), "{text}");
    assert!(text.contains("unknown setting `kk`"), "{text}");
}
