//! `model_selection` in `[stages.volumetric_segmenter]` through `clisc run`:
//! the held-out cases reach the network plugin, its choice is in the
//! summary, and the report says which mode ran (and flags the paper's
//! ground-truth mode as ground-truth assisted).

use clisc_tests::{read_json, safetensors, tiny_pipeline_toml, write_tiny_dataset};
use std::path::Path;
use std::process::Command;

const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");

/// The tiny pipeline with 8 training steps, a score every 2 and `selection`
/// lines added to `[stages.volumetric_segmenter]`; runs it to the end and
/// returns the summary.
fn run(root: &Path, work: &str, selection: &str) -> serde_json::Value {
    let toml = tiny_pipeline_toml(work, 8, 4)
        .replace(
            "window_batch = 8 }",
            "window_batch = 8, validation_every = 2 }",
        )
        .replace(
            "[stages.reprompt_generator]",
            &format!("{selection}\n[stages.reprompt_generator]"),
        );
    assert!(toml.contains("validation_every = 2"));
    let config = root.join(format!("{work}.toml"));
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(CLI)
        .args(["run", "--quiet", "--config", config.to_str().unwrap()])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "clisc run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_json(&root.join(work).join("summary.json"))
}

/// Case ids of `split` in the run's `splits.csv`.
fn split(root: &Path, work: &str, split: &str) -> Vec<String> {
    std::fs::read_to_string(root.join(work).join("splits.csv"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(','))
        .filter(|(_, s)| *s == split)
        .map(|(id, _)| id.to_string())
        .collect()
}

/// The `clisc.data` entry of a safetensors checkpoint's metadata.
fn checkpoint_data_key(path: &Path) -> String {
    let (header, _) = safetensors(path);
    header["__metadata__"]["clisc.data"]
        .as_str()
        .unwrap()
        .to_string()
}

fn report(root: &Path, work: &str) -> String {
    std::fs::read_to_string(root.join(work).join("10-report/report.html")).unwrap()
}

/// The network's own account of its choice, checked for consistency:
/// `evaluations` scores (steps 2, 4, 6, 8), the kept step one of them and
/// its Dice at least the last checkpoint's.
fn check_choice(summary: &serde_json::Value, step: &str, held_out: usize) {
    let r = &summary["stage_reports"][step];
    assert_eq!(r["validation_cases"], held_out as f64, "{r}");
    let chosen = &summary["model_selection"][step]["chosen"];
    assert_eq!(chosen["evaluations"], 4, "{chosen}");
    let at = chosen["step"].as_u64().unwrap();
    assert!([2, 4, 6, 8].contains(&at), "{chosen}");
    let (best, last) = (
        chosen["validation_dice"].as_f64().unwrap(),
        chosen["last_validation_dice"].as_f64().unwrap(),
    );
    assert!(best >= last && (0.0..=1.0).contains(&best), "{chosen}");
}

#[test]
fn ground_truth_validation_scores_the_validation_split_and_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tiny_dataset(&root.join("data"), 7, [40, 40, 24]);
    let s = run(root, "gt", "model_selection = \"ground-truth-validation\"");
    let valid = split(root, "gt", "valid");
    assert!(!valid.is_empty(), "the tiny split has a validation part");
    assert_eq!(s["ground_truth_used_for_choices"], true);
    for step in ["network-1", "network-2"] {
        let record = &s["model_selection"][step];
        assert_eq!(record["mode"], "ground-truth-validation", "{record}");
        assert_eq!(record["held_out"], serde_json::json!(valid));
        check_choice(&s, step, valid.len());
    }
    let html = report(root, "gt");
    assert!(html.contains("Mode: <b>ground-truth assisted</b>"));
    assert!(html.contains("<h2>Model selection</h2>"));
    assert!(html.contains("GROUND TRUTH of the validation split"));
}

#[test]
fn pseudo_label_holdout_trains_without_the_held_out_cases_and_stays_unsupervised() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tiny_dataset(&root.join("data"), 7, [40, 40, 24]);
    let s = run(
        root,
        "holdout",
        "model_selection = \"pseudo-label-holdout\"\nholdout_fraction = 0.25",
    );
    assert_eq!(s["ground_truth_used_for_choices"], false);
    let train = split(root, "holdout", "train");
    let record = &s["model_selection"]["network-1"];
    assert_eq!(record["mode"], "pseudo-label-holdout", "{record}");
    let held: Vec<String> = serde_json::from_value(record["held_out"].clone()).unwrap();
    assert_eq!(held.len(), 1, "25% of {} training cases", train.len());
    assert!(held.iter().all(|id| train.contains(id)));
    check_choice(&s, "network-1", 1);
    // The network trained on the other cases only: its training checkpoint
    // records the data it saw ("<n>cases-...+<m>held-out-...").
    let data =
        checkpoint_data_key(&root.join("holdout/05-network-1/plugin/unet3d-training.safetensors"));
    let expected = format!("{}cases-", train.len() - 1);
    assert!(data.starts_with(&expected), "{data}");
    assert!(data.contains("+1held-out-every-2-"), "{data}");
    let html = report(root, "holdout");
    assert!(html.contains("Mode: <b>unsupervised</b>"));
    assert!(html.contains("held out of training (no human labels)"));

    // The default keeps the last checkpoint and says so.
    let s = run(root, "last", "");
    assert_eq!(s["model_selection"]["network-1"]["mode"], "last");
    assert!(s["model_selection"]["network-1"]["chosen"].is_null());
    assert!(report(root, "last").contains("last checkpoint (no held-out cases, no labels)"));
}
