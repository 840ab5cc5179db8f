//! The run manifest records everything needed to repeat a run: a second
//! run made only from `manifest.json` (its resolved pipeline, with another
//! work folder) reads the same inputs and ends with the same predictions,
//! byte for byte.

use clisc_tests::{assert_same_files, read_json, tiny_pipeline_toml, write_tiny_dataset};
use std::path::Path;
use std::process::Command;

const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");

fn run(config: &Path) {
    let out = Command::new(CLI)
        .args(["run", "--quiet", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "clisc run {} failed:\n{}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_run_repeated_from_its_manifest_alone_gives_the_same_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tiny_dataset(&root.join("data"), 7, [40, 40, 24]);
    let original = root.join("original.toml");
    std::fs::write(&original, tiny_pipeline_toml("original", 40, 20)).unwrap();
    run(&original);

    let work = root.join("original");
    let manifest = read_json(&work.join("manifest.json"));
    assert_eq!(manifest["seed"], 5);
    assert_eq!(manifest["threads"], 1);
    assert_eq!(manifest["device"], "cpu");
    let splits = std::fs::read_to_string(work.join("splits.csv")).unwrap();
    let inputs = manifest["inputs"].as_object().unwrap();
    assert_eq!(inputs.len(), 7, "every case of the split");
    for (id, record) in inputs {
        assert!(
            splits.contains(&format!("{id},{}", record["split"].as_str().unwrap())),
            "{id}: {record} vs\n{splits}"
        );
        let files = record["files"].as_array().unwrap();
        assert_eq!(files.len(), 2, "FLAIR and segmentation of {id}");
        for f in files {
            let path = Path::new(f["path"].as_str().unwrap());
            assert_eq!(f["bytes"], std::fs::metadata(path).unwrap().len());
            let sha = f["sha256"].as_str().unwrap();
            assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    // Only the manifest: its pipeline, pointed at another work folder.
    let resolved = manifest["pipeline"].as_str().unwrap();
    let work_path = work.display().to_string();
    assert!(
        resolved.contains(&format!("output = \"{work_path}\"")),
        "{resolved}"
    );
    let repeated_work = root.join("repeated");
    let repeated = root.join("repeated.toml");
    let text = resolved.replace(&work_path, &repeated_work.display().to_string());
    std::fs::write(&repeated, text).unwrap();
    run(&repeated);

    let again = read_json(&repeated_work.join("manifest.json"));
    assert_eq!(again["inputs"], manifest["inputs"], "the same input files");
    assert_eq!(again["config_hash"].as_str().unwrap().len(), 16);
    let predictions = "08-predictions";
    assert_same_files(
        &work.join(predictions),
        &repeated_work.join(predictions),
        predictions,
    );
    let test = |w: &Path| read_json(&w.join("summary.json"))["test"].clone();
    assert_eq!(test(&work), test(&repeated_work));
}
