//! `clisc check` on a pipeline with a process plugin: the plugin's own
//! settings are a TOML table, and `clisc check` starts the process once so
//! that a misspelled key is reported at its line and column, with the
//! keys the plugin announced; the corrected file passes and says the stage
//! was started.
//!
//! Needs `$CLISC_PYTHON` (set by `scripts/env.sh`).

use std::path::Path;
use std::process::{Command, Output};

fn check(file: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clisc"))
        .args(["check", file.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_misspelled_process_plugin_setting_fails_check_at_its_line_and_column() {
    let python = std::env::var("CLISC_PYTHON")
        .expect("CLISC_PYTHON is not set: `source scripts/env.sh` first");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/examples/python-labeler/plugin.py")
        .canonicalize()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let pipeline = |settings: &str| {
        format!(
            "[run]\noutput = \"work\"\n\n[dataset]\nroot = \"data\"\nmodalities = [\"flair\"]\n\n\
             [stages.pseudo_labeler]\nplugin = \"process-pseudo-labeler\"\n\
             settings = {{ command = [{python:?}, {script:?}], settings = {{ {settings} }} }}\n",
            script = script.display().to_string()
        )
    };
    let file = dir.path().join("pipeline.toml");
    let text = pipeline("k = 2.0, min_fractoin = 0.05");
    std::fs::write(&file, &text).unwrap();
    // `--no-start` leaves the process alone (and the typo unseen).
    assert!(check(&file, &["--no-start"]).status.success());
    let out = check(&file, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .position(|l| l.contains("min_fractoin"))
        .unwrap()
        + 1;
    let column = text
        .lines()
        .nth(line - 1)
        .unwrap()
        .find("min_fractoin")
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            "pipeline.toml:{line}:{column}: [stages.pseudo_labeler]"
        )) && stderr.contains("unknown setting `min_fractoin` (known: [\"k\", \"min_fraction\"])"),
        "{stderr}"
    );

    std::fs::write(&file, pipeline("k = 2.0, min_fraction = 0.05")).unwrap();
    let out = check(&file, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("# [stages.pseudo_labeler] was started once to check the settings it passes on: accepted"),
        "{stdout}"
    );
}
