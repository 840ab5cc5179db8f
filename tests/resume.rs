//! A run killed with SIGKILL in the middle of a late stage resumes in the
//! same work folder, does not redo the steps it had finished, and ends with
//! exactly the results of an uninterrupted run.

use clisc_tests::{
    assert_same_files, manifest, modification_times, run_to_end, safetensors, start_run, summary,
    write_tiny_dataset, write_tiny_pipeline as write_pipeline,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");

#[test]
fn killed_run_resumes_and_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tiny_dataset(&root.join("data"), 7, [40, 40, 24]);

    // 1. Uninterrupted.
    let t = Instant::now();
    let reference = write_pipeline(root, "reference");
    run_to_end(CLI, &reference, &root.join("reference.log"));
    eprintln!("uninterrupted run: {:.1} s", t.elapsed().as_secs_f64());

    // 2. The same pipeline in a fresh work folder, killed as soon as the
    // first network has written a resumable checkpoint.
    let t = Instant::now();
    let config = write_pipeline(root, "resumed");
    let work = root.join("resumed");
    let checkpoint = work.join("05-network-1/plugin/unet3d-training.safetensors");
    let mut child = start_run(CLI, &config, &root.join("killed.log"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !checkpoint.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "clisc run ended ({status}) before network-1 wrote a checkpoint:\n{}",
                std::fs::read_to_string(root.join("killed.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "no checkpoint after 120 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    eprintln!("killed run: {:.1} s", t.elapsed().as_secs_f64());

    let m = manifest(&work);
    assert_eq!(
        m["steps"]["network-1"]["status"], "running",
        "killed while training network-1: {m:#}"
    );
    assert!(!work.join("05-network-1/model.ckpt").exists());
    assert!(!work.join("summary.json").exists());
    let finished: Vec<String> = m["steps"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["status"] == "done")
        .map(|(name, _)| name.clone())
        .collect();
    assert_eq!(
        finished,
        ["prompts", "pseudo-labels", "pseudo-masks", "roi"],
        "{m:#}"
    );
    let done_before: BTreeMap<PathBuf, SystemTime> = modification_times(&work, &[])
        .into_iter()
        .filter(|(p, _)| {
            ["01-", "02-", "03-", "04-"]
                .iter()
                .any(|prefix| p.to_str().unwrap().starts_with(prefix))
        })
        .collect();
    assert!(done_before.len() > 10, "{done_before:?}");

    // 3. Resume in the same folder.
    let t = Instant::now();
    run_to_end(CLI, &config, &root.join("resume.log"));
    eprintln!("resumed run: {:.1} s", t.elapsed().as_secs_f64());

    // Finished steps were reused, not recomputed: their files are untouched
    // and their recorded durations are those of the killed run.
    let after = modification_times(&work, &[]);
    for (path, modified) in &done_before {
        assert_eq!(
            after.get(path),
            Some(modified),
            "{} was rewritten by the resumed run",
            path.display()
        );
    }
    let m2 = manifest(&work);
    for step in &finished {
        assert_eq!(
            m2["steps"][step]["seconds"], m["steps"][step]["seconds"],
            "step {step} ran again"
        );
    }
    // The first network continued from its checkpoint.
    let resumed = summary(&work);
    let n1 = resumed["stage_reports"]["network-1"]["resumed_from_step"]
        .as_f64()
        .unwrap_or_else(|| panic!("no network-1 report: {resumed:#}"));
    assert!(n1 >= 4.0, "network-1 resumed from step {n1}");
    let log = std::fs::read_to_string(root.join("resume.log")).unwrap();
    assert!(log.contains("unet3d: resuming from step"), "{log}");

    // Identical results: every step's artefacts (both networks, the
    // filter's decisions, the predictions as NIfTI bytes, the evaluation).
    let reference_work = root.join("reference");
    for part in ["05-network-1/model.ckpt", "07-network-2/model.ckpt"] {
        let (a, b) = (
            safetensors(&reference_work.join(part)),
            safetensors(&work.join(part)),
        );
        assert_eq!(a.0, b.0, "{part}: other tensors or metadata");
        assert!(a.1 == b.1, "{part}: the weights differ");
    }
    assert!(
        std::fs::read(reference_work.join("06-filter/decisions.json")).unwrap()
            == std::fs::read(work.join("06-filter/decisions.json")).unwrap(),
        "the filter decided otherwise"
    );
    for part in [
        "01-pseudo-labels",
        "02-roi",
        "03-prompts",
        "04-pseudo-masks",
        "08-predictions",
        "09-evaluation",
    ] {
        assert_same_files(&reference_work.join(part), &work.join(part), part);
    }
    let expected = summary(&reference_work);
    assert!(
        expected["test"]["final"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "no test scores: {expected:#}"
    );
    assert_eq!(resumed["test"], expected["test"], "evaluation differs");
}
