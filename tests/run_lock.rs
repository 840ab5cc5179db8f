//! Two runs on one work folder, through the real binary: while a run of
//! the tiny pipeline is going, a second `clisc run` on the same folder
//! refuses before doing anything and names the first (its process id);
//! after the first is killed with SIGKILL, the folder is free again. Two
//! runs on one dataset with their own work folders, at the same time, do
//! not disturb each other: their artefacts are byte for byte the same.

use clisc_tests::{
    assert_same_files, modification_times, safetensors, start_run, write_tiny_dataset,
    write_tiny_pipeline,
};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");

/// Sends `SIG<name>` to process `pid`.
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Waits until the lock file of `work` names process `pid`.
fn wait_for_holder(work: &Path, pid: u32) {
    let lock = work.join(clisc_workdir::lock::LOCK_FILE);
    let wanted = format!("clisc run: process {pid} ");
    let start = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&wanted)) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "process {pid} did not take {} within 120 s",
            lock.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_run_on_the_same_folder_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tiny_dataset(&root.join("data"), 7, [32, 32, 16]);
    let config = write_tiny_pipeline(root, "work");
    let work = root.join("work");

    // The first run stopped (SIGSTOP) once it holds the folder, so that
    // nothing changes there but what the second run might do.
    let mut first = start_run(CLI, &config, &root.join("first.log"));
    wait_for_holder(&work, first.id());
    signal(first.id(), "STOP");
    let before = modification_times(&work, &[]);
    let second = Command::new(CLI)
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    let expected = format!(
        "the work folder {} is in use by another clisc run (clisc run: process {} on",
        work.display(),
        first.id()
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );
    assert_eq!(
        modification_times(&work, &[]),
        before,
        "the refused run changed the work folder"
    );

    // SIGKILL: the kernel drops the lock with the process.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut third = start_run(CLI, &config, &root.join("third.log"));
    wait_for_holder(&work, third.id());
    third.kill().unwrap();
    third.wait().unwrap();
}

#[test]
fn two_runs_on_one_dataset_at_once_give_the_same_artefacts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tiny_dataset(&root.join("data"), 7, [32, 32, 16]);
    let runs: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let config = write_tiny_pipeline(root, name);
            start_run(CLI, &config, &root.join(format!("{name}.log")))
        })
        .collect();
    for (mut run, name) in runs.into_iter().zip(["a", "b"]) {
        let status = run.wait().unwrap();
        let log = std::fs::read_to_string(root.join(format!("{name}.log"))).unwrap_or_default();
        assert!(status.success(), "run {name} failed:\n{log}");
    }
    let (a, b) = (root.join("a"), root.join("b"));
    for step in [
        "01-pseudo-labels",
        "04-pseudo-masks",
        "06-filter",
        "08-predictions",
    ] {
        assert_same_files(&a.join(step), &b.join(step), step);
    }
    for model in ["05-network-1/model.ckpt", "07-network-2/model.ckpt"] {
        assert!(
            safetensors(&a.join(model)) == safetensors(&b.join(model)),
            "{model} differs between the two runs"
        );
    }
}
