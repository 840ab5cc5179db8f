//! # clisc workdir
//!
//! The run's work folder: one sub-folder per step, a manifest recording
//! what produced each step's artefacts, and atomic writes so an interrupted
//! run never leaves a half-written artefact behind.
//!
//! Caching rule: a step's *fingerprint* hashes everything its outputs
//! depend on (plugin name and version, resolved settings, seed, device,
//! the cases, and the fingerprints of the steps it reads). A step whose
//! manifest record has the same fingerprint and is `done` is skipped. A
//! step with a different fingerprint has its folder cleared and is rerun.
//! A step that was interrupted keeps its finished per-case files (each
//! written atomically), so a resumed run only does the missing cases.
#![warn(unreachable_pub)]

pub mod lock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The steps of a run, in order; each owns one sub-folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Slice pseudo-labels per training case.
    PseudoLabels,
    /// Classifier training, activation maps and ROIs.
    Roi,
    /// Box and point prompts.
    Prompts,
    /// Promptable-segmenter pseudo-masks (3D stacks).
    PseudoMasks,
    /// The first 3D network, trained on the pseudo-masks.
    Network1,
    /// Self-learning filter: predictions, re-prompted masks, decisions.
    Filter,
    /// The final 3D network, trained on the kept cases.
    Network2,
    /// Predictions on the test split, in the original grids.
    Predictions,
    /// Metrics against ground truth, when it exists.
    Evaluation,
    /// The HTML report.
    Report,
}

impl Step {
    /// Every step in execution order.
    pub const ALL: [Step; 10] = [
        Step::PseudoLabels,
        Step::Roi,
        Step::Prompts,
        Step::PseudoMasks,
        Step::Network1,
        Step::Filter,
        Step::Network2,
        Step::Predictions,
        Step::Evaluation,
        Step::Report,
    ];

    /// Name used on the command line (`--from`, `--only`) and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Step::PseudoLabels => "pseudo-labels",
            Step::Roi => "roi",
            Step::Prompts => "prompts",
            Step::PseudoMasks => "pseudo-masks",
            Step::Network1 => "network-1",
            Step::Filter => "filter",
            Step::Network2 => "network-2",
            Step::Predictions => "predictions",
            Step::Evaluation => "evaluation",
            Step::Report => "report",
        }
    }

    /// Folder name inside the work folder (numbered to sort in order).
    pub fn folder(self) -> String {
        let i = Step::ALL.iter().position(|s| *s == self).expect("listed") + 1;
        format!("{i:02}-{}", self.name())
    }

    /// Parses a step name.
    pub fn parse(name: &str) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| s.name() == name)
    }
}

/// Where a step (or a shard of one) stands. In `manifest.json` as
/// `"running"` or `"done"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Started and not finished: its outputs are incomplete.
    Running,
    /// Finished: its outputs match its fingerprint.
    Done,
}

impl StepStatus {
    /// The name written in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Done => "done",
        }
    }
}

/// What produced a step's artefacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Hash of everything the outputs depend on.
    pub fingerprint: String,
    /// Running or done.
    pub status: StepStatus,
    /// Plugins used, as `slot=name@version`.
    pub plugins: Vec<String>,
    /// Wall-clock seconds of the last execution.
    pub seconds: f64,
    /// When the step finished (RFC 3339), empty while running.
    pub finished_at: String,
}

/// The run manifest, `manifest.json` in the work folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// clisc version that wrote it.
    pub clisc_version: String,
    /// The pipeline file.
    pub pipeline_file: String,
    /// Hash of the resolved pipeline.
    pub config_hash: String,
    /// Run seed.
    pub seed: u64,
    /// Resolved device.
    pub device: String,
    /// Threads for libtorch and parallel loops.
    #[serde(default)]
    pub threads: u32,
    /// The resolved pipeline (what `clisc check` prints): with `inputs`,
    /// enough to repeat the run (`tests/repeat_from_manifest.rs`).
    #[serde(default)]
    pub pipeline: String,
    /// Every case read, by id: its split and its files with their SHA-256.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputRecord>,
    /// Per-step records.
    pub steps: BTreeMap<String, StepRecord>,
}

/// One case of a run's inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputRecord {
    /// `train`, `valid` or `test`.
    pub split: String,
    /// The files read for it.
    pub files: Vec<FileRecord>,
}

/// A file and what it held.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Absolute path.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
}

impl FileRecord {
    /// Reads and hashes `path`.
    pub fn of(path: &Path) -> io::Result<Self> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let bytes = io::copy(&mut file, &mut hasher)?;
        Ok(Self {
            path: path.display().to_string(),
            bytes,
            sha256: hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        })
    }
}

/// The work folder of one run.
#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    /// Opens (creating) the work folder.
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }
    /// The work folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The folder of `step` (created).
    pub fn step_dir(&self, step: Step) -> io::Result<PathBuf> {
        let dir = self.root.join(step.folder());
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
    /// Removes the folder of `step` and everything in it.
    pub fn clear_step(&self, step: Step) -> io::Result<()> {
        let dir = self.root.join(step.folder());
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }
    fn manifest_path(&self) -> PathBuf {
        self.root.join("manifest.json")
    }
    /// Reads the manifest (empty when absent or unreadable).
    pub fn read_manifest(&self) -> Manifest {
        std::fs::read(self.manifest_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
    /// Writes the manifest atomically.
    pub fn write_manifest(&self, manifest: &Manifest) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
        write_atomic(&self.manifest_path(), &bytes)
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader (or a resumed run) sees either the old file or the complete new one.
/// When writing fails (e.g. a full disk) the temporary file is removed, the
/// old file stays as it was, and the error names `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temporary_sibling(path);
    let named = |e: io::Error| io::Error::new(e.kind(), format!("writing {}: {e}", path.display()));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(named(e));
    }
    std::fs::rename(&tmp, path).map_err(named)
}

/// A temporary name next to `path` (same folder, so rename is atomic). The
/// original name stays the suffix, so writers that choose the format by
/// extension (`.nii.gz`) still do the right thing.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".partial.{name}"))
}

/// A short stable hash of `parts` (SHA-256, first 16 hex digits).
pub fn fingerprint<S: AsRef<str>>(parts: &[S]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_ref().as_bytes());
        h.update([0u8]);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_separate_parts() {
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
        assert_ne!(fingerprint(&["ab", ""]), fingerprint(&["a", "b"]));
        assert_eq!(fingerprint(&["x"]).len(), 16);
    }

    #[test]
    fn steps_have_ordered_folders_and_parse_back() {
        assert_eq!(Step::PseudoLabels.folder(), "01-pseudo-labels");
        assert_eq!(Step::Report.folder(), "10-report");
        for s in Step::ALL {
            assert_eq!(Step::parse(s.name()), Some(s));
        }
    }

    #[test]
    fn atomic_writes_and_manifest_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let wd = WorkDir::open(dir.path()).unwrap();
        let mut m = Manifest {
            seed: 3,
            ..Default::default()
        };
        m.steps.insert(
            "roi".into(),
            StepRecord {
                fingerprint: "f".into(),
                status: StepStatus::Done,
                plugins: vec![],
                seconds: 1.0,
                finished_at: String::new(),
            },
        );
        wd.write_manifest(&m).unwrap();
        assert_eq!(wd.read_manifest(), m);
        assert!(!temporary_sibling(&dir.path().join("manifest.json")).exists());
    }
}
