//! `clisc dicom serve` under load and faults, driven on loopback by
//! `bench/node/load.py` (DCMTK's `storescu` and Orthanc as senders, `storescp` as the
//! SEG destination, a TorchScript threshold network wrapped with `clisc
//! model wrap`). These are the CI-sized runs; `bench/node.sh` runs the
//! full-sized ones (50 studies of 30-150 instances, 20 senders, a soak)
//! and writes bench/results/node.md.
//!
//! * many senders (two of the eight studies sent by Orthanc) past the
//!   association limit, with stalled, silent and
//!   garbage-sending peers: every instance stored once, every study
//!   segmented once, one SEG per study delivered, the surplus associations
//!   rejected, the bad peers dropped after the idle timeout;
//! * SIGKILL of the node twice while studies arrive (once while a SEG
//!   waits in the outbox), restarted on the same storage: no instance
//!   lost, every study's SEG delivered, never more SEGs than takes;
//! * a storage that fills up (a 1 MB tmpfs; needs root, as CI runs):
//!   C-STORE answered "out of resources", nothing half-written, the node
//!   stays up; once the storage is enlarged and the studies are sent
//!   again, nothing is lost and every study has its SEG.

#[path = "support/dicom_e2e.rs"]
mod dicom_e2e;

use dicom_e2e::{python, CLI};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs `bench/node/load.py` with `args` into a temporary folder and
/// returns its result.
fn load(dir: &Path, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/node/load.py");
    let out = Command::new(python())
        .arg(&script)
        .args(["--clisc", CLI, "--out", dir.to_str().unwrap()])
        .args(args)
        .output()
        .expect("running bench/node/load.py");
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "load.py failed:\n{}\nnode log tail:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&log)
    );
    serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap()
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// No instance lost and every study with at least one SEG.
fn assert_nothing_lost(r: &Value) {
    assert_eq!(count(r, "instances_lost"), 0, "{r}");
    assert_eq!(r["studies_without_seg"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["unsent_studies"].as_array().unwrap().len(), 0, "{r}");
}

#[test]
fn many_senders_past_the_limits_lose_nothing_and_get_one_seg_per_study() {
    let dir = tempfile::tempdir().unwrap();
    let r = load(
        dir.path(),
        &[
            "--studies",
            "8",
            "--instances",
            "20-40",
            "--concurrency",
            "8",
            "--max-associations",
            "4",
            "--stalled",
            "3",
            "--idle-timeout",
            "5",
            "--settle",
            "3",
            "--seed",
            "11",
            "--orthanc-share",
            "0.25",
        ],
    );
    assert_nothing_lost(&r);
    assert_eq!(count(&r, "instances_stored_more_than_once"), 0, "{r}");
    assert_eq!(count(&r, "studies_with_more_than_one_seg"), 0, "{r}");
    assert_eq!(count(&r, "studies_taken_more_than_once"), 0, "{r}");
    assert_eq!(count(&r, "studies_failed"), 0, "{r}");
    for (uid, s) in r["per_study"].as_object().unwrap() {
        assert_eq!(s["segs_received"], 1, "study {uid}: {s}");
    }
    assert_eq!(count(&r, "studies_sent_by_orthanc"), 2, "{r}");
    // 8 senders and 3 bad peers against 4 places: some were turned away.
    assert!(count(&r["rejections"], "association") > 0, "{r}");
    for peer in r["stalled_peers"].as_array().unwrap() {
        let closed = peer["closed_after_s"]
            .as_f64()
            .unwrap_or_else(|| panic!("a bad peer was never dropped: {peer}"));
        assert!(closed <= 5.0 + 5.0, "{peer}");
        if peer["kind"] == "garbage" {
            assert!(
                closed < 5.0,
                "garbage should end the association at once: {peer}"
            );
        }
    }
}

#[test]
fn a_killed_node_loses_nothing_and_each_take_yields_one_seg() {
    let dir = tempfile::tempdir().unwrap();
    let r = load(
        dir.path(),
        &[
            "--studies",
            "6",
            "--instances",
            "20-40",
            "--concurrency",
            "6",
            "--kills",
            "2",
            "--settle",
            "3",
            "--seed",
            "12",
        ],
    );
    assert_nothing_lost(&r);
    assert_eq!(count(&r, "node_starts"), 3, "{r}");
    let kills = r["kills"].as_array().unwrap();
    assert_eq!(kills.len(), 2, "{r}");
    assert!(count(&kills[1], "outbox_pending") >= 1, "{r}");
    // A study sent again after a kill may be taken twice (two SEGs, one
    // per take); a take never yields two SEG instances at the destination.
    // (A SEG resent because the kill came after the destination confirmed
    // it but before it moved to outbox/sent keeps its SOP Instance UID; the
    // destination, storescp, stores it once, so this counts instances.)
    for (uid, s) in r["per_study"].as_object().unwrap() {
        let (takes, segs) = (count(s, "takes"), count(s, "segs_received"));
        assert!(segs >= 1 && segs <= takes, "study {uid}: {s}");
    }
}

#[test]
fn a_full_storage_answers_out_of_resources_and_keeps_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let r = load(
        dir.path(),
        &[
            "--studies",
            "4",
            "--instances",
            "20-40",
            "--concurrency",
            "4",
            "--storage-mb",
            "1",
            "--settle",
            "3",
            "--seed",
            "13",
        ],
    );
    let full = &r["disk_full"];
    assert!(count(full, "out_of_resources_answers") > 0, "{r}");
    assert_eq!(
        full["unreadable_or_partial_instances"],
        Value::Array(vec![]),
        "{r}"
    );
    assert_eq!(full["node_alive"], true, "{r}");
    assert_nothing_lost(&r);
}
