//! `clisc plugins new`: every stage kind scaffolds a crate that builds on
//! its own (`cargo build --offline`, dependencies from the local registry
//! cache), passes its own unit test (`cargo test --offline`), and is picked up by
//! `clisc plugins list` (through the registry and through the binary).
//!
//! All six crates share one target folder inside the temporary directory,
//! so the SDK and `abi_stable` are compiled once.

use clisc::scaffold::{scaffold, ScaffoldOptions};
use clisc_registry::Registry;
use clisc_sdk::StageKind;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn cargo(dir: &Path, target: &Path, args: &[&str]) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO"))
        .args(args)
        .arg("--offline")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} failed in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "cargo {args:?} in {}: {:.1} s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn every_kind_scaffolds_a_crate_that_builds_tests_and_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    let mut names = Vec::new();
    for kind in StageKind::ALL {
        let name = format!("my-{}", kind.as_str());
        let dir = tmp.path().join(&name);
        scaffold(&ScaffoldOptions {
            name: name.clone(),
            kind,
            dir: dir.clone(),
            sdk_path: None,
        })
        .unwrap();
        // `cargo build` puts the shared library in target/debug/; `cargo test`
        // runs the example's unit test.
        cargo(&dir, &target, &["build", "--quiet"]);
        cargo(&dir, &target, &["test", "--quiet"]);
        names.push((name, kind));
    }

    let debug = target.join("debug");
    let registry = Registry::with_search_path(std::slice::from_ref(&debug)).unwrap();
    for (name, kind) in &names {
        let plugin = registry.find(name, *kind).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            plugin.origin.to_string().contains("target/debug"),
            "{}",
            plugin.origin
        );
    }

    let out = Command::new(env!("CARGO_BIN_EXE_clisc"))
        .args(["plugins", "list", "--plugin-path"])
        .arg(&debug)
        .env_remove("CLISC_PLUGIN_PATH")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "clisc plugins list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, kind) in &names {
        let line = listing
            .lines()
            .find(|l| l.starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"));
        assert!(line.contains(kind.as_str()), "{line}");
    }
}

#[test]
fn the_cli_scaffolds_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab-sam");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_clisc"))
            .args([
                "plugins",
                "new",
                "lab-sam",
                "--kind",
                "promptable-segmenter",
                "--dir",
            ])
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout)
        .contains("created promptable-segmenter plugin `lab-sam`"));
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    assert!(lib.contains("impl PromptableSegmenter for LabSam"));
    let again = run(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists and is not empty"));
    let bad_kind = Command::new(env!("CARGO_BIN_EXE_clisc"))
        .args(["plugins", "new", "x", "--kind", "segmenter"])
        .output()
        .unwrap();
    assert!(!bad_kind.status.success());
    assert!(
        String::from_utf8_lossy(&bad_kind.stderr).contains("pseudo-labeler"),
        "the valid kinds are listed"
    );
}
