//! Sharded per-case steps: running one step of a pipeline as `n`
//! independent parts (for example the tasks of a Slurm job array) that
//! share the run's work folder, and merging them.
//!
//! A shard `i/n` owns the cases at positions `i, i + n, i + 2n, ...` of
//! the step's split (sorted case ids), so shards never write the same file.
//! Each shard keeps a record, `<step folder>/shards/<i>-of-<n>.json`, with
//! the step's fingerprint and the cases it did. It never clears the step
//! folder (other shards are writing into it) and never writes the run
//! manifest: when its record is missing or stale it deletes only its own
//! cases' artefacts. A shard that is rerun with a record of the same
//! fingerprint resumes: finished cases are kept.
//!
//! The merge (`clisc run --only STEP --merge`) checks that every case of
//! the split was done exactly once by a finished shard of the current
//! fingerprint and that its artefacts are in place; it names every missing
//! case (and the shard that owns it) instead of doing the work itself, then
//! finishes the step as a local run would (summary, filter selection,
//! manifest).

use super::cases::{case_file, Split};
use clisc_workdir::{write_atomic, Step, StepStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Problems with shards: bad specifications, or a step whose shards did
/// not do every case exactly once.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// `--shard` was not `i/n` with `0 <= i < n`.
    #[error("--shard {given:?}: expected `i/n` with 0 <= i < n (for example `0/4`), or `slurm`")]
    Spec {
        /// What was given.
        given: String,
    },
    /// `--shard slurm` outside a suitable Slurm job array.
    #[error("--shard slurm: {0}")]
    Environment(String),
    /// The step cannot be split into shards.
    #[error("step `{0}` is not a per-case step; only {list} can run as shards", list = per_case_names())]
    NotPerCase(&'static str),
    /// Cases that no finished shard did (or whose artefacts are gone).
    #[error("{}", describe_missing(.step, .total, .missing))]
    Missing {
        /// The step.
        step: &'static str,
        /// Cases in the step's split.
        total: usize,
        /// The missing cases, with the shard that owns each one.
        missing: Vec<MissingCase>,
    },
    /// A case done by more than one finished shard.
    #[error("step `{step}`: case {case} was done by more than one shard ({}); remove the records of the shard layout you no longer use from {}", .shards.join(", "), .folder.display())]
    Duplicate {
        /// The step.
        step: &'static str,
        /// The case.
        case: String,
        /// The shards (`i/n`) that claim it.
        shards: Vec<String>,
        /// The folder of the records.
        folder: PathBuf,
    },
    /// Reading or writing a record or an artefact failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A case that the merge did not find done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingCase {
    /// Case id.
    pub case: String,
    /// The shard (`i/n`) that owns it in the layout of the records found,
    /// when one layout was used.
    pub shard: Option<Shard>,
}

fn describe_missing(step: &str, total: &usize, missing: &[MissingCase]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|m| match m.shard {
            Some(s) => format!("{} (shard {s})", m.case),
            None => m.case.clone(),
        })
        .collect();
    format!(
        "step `{step}`: {} of {total} cases were not done by a finished shard: {}",
        missing.len(),
        list.join(", ")
    )
}

fn per_case_names() -> String {
    PER_CASE
        .iter()
        .map(|s| format!("`{}`", s.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The steps whose work is independent per case (apart from what they
/// read from earlier steps), so they can run as shards. The training steps
/// (`roi`, `network-1`, `network-2`) and `evaluation` are single jobs.
pub(crate) const PER_CASE: [Step; 5] = [
    Step::PseudoLabels,
    Step::Prompts,
    Step::PseudoMasks,
    Step::Filter,
    Step::Predictions,
];

/// Whether `step` can run as shards.
pub fn is_per_case(step: Step) -> bool {
    PER_CASE.contains(&step)
}

/// The split whose cases a per-case step processes.
pub fn split_of(step: Step) -> Split {
    if step == Step::Predictions {
        Split::Test
    } else {
        Split::Train
    }
}

/// Part `index` of `count` (0-based, as Slurm array task ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based part number.
    pub index: u32,
    /// Number of parts.
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Parses `i/n`.
    pub fn parse(s: &str) -> Result<Shard, ShardError> {
        let spec = || ShardError::Spec { given: s.into() };
        let (i, n) = s.split_once('/').ok_or_else(spec)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| spec())?,
            n.trim().parse::<u32>().map_err(|_| spec())?,
        );
        if index >= count {
            return Err(spec());
        }
        Ok(Shard { index, count })
    }

    /// The shard of this Slurm array task: `SLURM_ARRAY_TASK_ID` of
    /// `SLURM_ARRAY_TASK_COUNT`. Only a whole array `0-(n-1)` says which
    /// layout it belongs to; a partial one (`--array=1,3`, as when failed
    /// tasks are resubmitted) must pass `--shard i/n` itself, which is what
    /// the scripts of `clisc slurm submit` do.
    pub fn from_slurm_env(var: impl Fn(&str) -> Option<String>) -> Result<Shard, ShardError> {
        let get = |name: &str| -> Result<u32, ShardError> {
            let value = var(name).ok_or_else(|| {
                ShardError::Environment(format!("{name} is not set (not a Slurm array task?)"))
            })?;
            value.trim().parse().map_err(|_| {
                ShardError::Environment(format!("{name}={value:?} is not a task number"))
            })
        };
        let (index, count) = (get("SLURM_ARRAY_TASK_ID")?, get("SLURM_ARRAY_TASK_COUNT")?);
        let (min, max) = (get("SLURM_ARRAY_TASK_MIN")?, get("SLURM_ARRAY_TASK_MAX")?);
        if min != 0 || max + 1 != count {
            return Err(ShardError::Environment(format!(
                "the array is not 0-{} (tasks {min}-{max}, {count} of them); pass --shard {index}/N with the number of shards N",
                count.saturating_sub(1)
            )));
        }
        Ok(Shard { index, count })
    }

    /// Whether the case at `position` of the sorted split belongs to this shard.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count as usize == self.index as usize
    }

    /// This shard's cases among `ids` (sorted).
    pub fn select(&self, ids: &[String]) -> Vec<String> {
        ids.iter()
            .enumerate()
            .filter(|(i, _)| self.owns(*i))
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The shard of `count` that owns `id` among `ids` (sorted), if listed.
    pub(crate) fn owner(ids: &[String], id: &str, count: u32) -> Option<Shard> {
        let position = ids.iter().position(|x| x == id)?;
        Some(Shard {
            index: (position % count as usize) as u32,
            count,
        })
    }
}

/// What a sharded invocation of a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardRole {
    /// Process only this shard's cases.
    Part(Shard),
    /// Check that every shard finished, then finish the step.
    Merge,
}

/// What one shard did, `shards/<i>-of-<n>.json` in the step folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The step.
    pub step: String,
    /// The step's fingerprint when the shard ran.
    pub fingerprint: String,
    /// Which shard.
    pub shard: Shard,
    /// Running or done.
    pub status: StepStatus,
    /// The cases of the shard.
    pub cases: Vec<String>,
    /// The Slurm job (`SLURM_JOB_ID`), when run by Slurm.
    pub slurm_job: Option<String>,
    /// When it finished (RFC 3339), empty while running.
    pub finished_at: String,
}

/// The folder of the shard records of a step folder.
pub(crate) fn records_dir(step_dir: &Path) -> PathBuf {
    step_dir.join("shards")
}

fn record_path(step_dir: &Path, shard: Shard) -> PathBuf {
    records_dir(step_dir).join(format!("{}-of-{}.json", shard.index, shard.count))
}

/// Every record in a step folder (unreadable ones are ignored: they
/// cannot vouch for anything).
pub fn read_records(step_dir: &Path) -> Vec<ShardRecord> {
    let Ok(entries) = std::fs::read_dir(records_dir(step_dir)) else {
        return Vec::new();
    };
    let mut records: Vec<ShardRecord> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    records.sort_by_key(|r| (r.shard.count, r.shard.index));
    records
}

/// The files a per-case step writes for one case; the case is done when
/// they all exist. `two_networks`: the pipeline has the self-learning
/// filter, so `predictions` also keeps the first network's predictions.
pub fn case_artefacts(step: Step, step_dir: &Path, id: &str, two_networks: bool) -> Vec<PathBuf> {
    match step {
        Step::PseudoLabels | Step::Prompts => vec![step_dir.join(format!("{id}.json"))],
        Step::PseudoMasks => vec![
            case_file(step_dir, id, ""),
            case_file(&step_dir.join("original"), id, ""),
        ],
        Step::Filter => vec![
            case_file(&step_dir.join("predictions"), id, ""),
            case_file(&step_dir.join("reprompted"), id, ""),
        ],
        Step::Predictions => {
            let mut dirs = vec![step_dir.to_path_buf()];
            if two_networks {
                dirs.push(step_dir.join("network-1"));
            }
            dirs.iter()
                .flat_map(|d| [case_file(d, id, ""), case_file(&d.join("cropped"), id, "")])
                .collect()
        }
        _ => Vec::new(),
    }
}

fn write_record(step_dir: &Path, record: &ShardRecord) -> Result<(), ShardError> {
    let path = record_path(step_dir, record.shard);
    let io = |source| ShardError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(records_dir(step_dir)).map_err(io)?;
    let bytes = serde_json::to_vec_pretty(record).expect("a record serialises");
    write_atomic(&path, &bytes).map_err(io)
}

/// Starts shard `shard` of `step` on its `cases`: unless its record has
/// the same fingerprint (a resumed shard), deletes whatever its cases left
/// in the folder; removes the records of other shard layouts; then records
/// it as running.
pub(crate) fn start_part(
    step: Step,
    step_dir: &Path,
    fingerprint: &str,
    shard: Shard,
    cases: &[String],
    two_networks: bool,
) -> Result<(), ShardError> {
    let path = record_path(step_dir, shard);
    let previous: Option<ShardRecord> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if !previous.is_some_and(|r| r.fingerprint == fingerprint) {
        for id in cases {
            for file in case_artefacts(step, step_dir, id, two_networks) {
                match std::fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(ShardError::Io { path: file, source }),
                }
            }
        }
    }
    // Records of another shard layout (an earlier run with another number
    // of shards) would claim this shard's cases a second time.
    for other in read_records(step_dir)
        .into_iter()
        .filter(|r| r.shard.count != shard.count)
    {
        let path = record_path(step_dir, other.shard);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ShardError::Io { path, source }),
        }
    }
    write_record(
        step_dir,
        &ShardRecord {
            step: step.name().into(),
            fingerprint: fingerprint.into(),
            shard,
            status: StepStatus::Running,
            cases: cases.to_vec(),
            slurm_job: std::env::var("SLURM_JOB_ID").ok(),
            finished_at: String::new(),
        },
    )
}

/// Records shard `shard` of `step` as done.
pub(crate) fn finish_part(
    step: Step,
    step_dir: &Path,
    fingerprint: &str,
    shard: Shard,
    cases: &[String],
) -> Result<(), ShardError> {
    write_record(
        step_dir,
        &ShardRecord {
            step: step.name().into(),
            fingerprint: fingerprint.into(),
            shard,
            status: StepStatus::Done,
            cases: cases.to_vec(),
            slurm_job: std::env::var("SLURM_JOB_ID").ok(),
            finished_at: chrono::Utc::now().to_rfc3339(),
        },
    )
}

/// Which cases of `ids` (the step's whole split, sorted) are done: claimed
/// by exactly one finished shard of `fingerprint`, with their artefacts in
/// place. Returns the missing ones (with their owning shard when all
/// records use one layout); a case claimed twice is an error.
pub(crate) fn missing_cases(
    step: Step,
    step_dir: &Path,
    fingerprint: &str,
    ids: &[String],
    two_networks: bool,
) -> Result<Vec<MissingCase>, ShardError> {
    let records: Vec<ShardRecord> = read_records(step_dir)
        .into_iter()
        .filter(|r| r.fingerprint == fingerprint && r.status == StepStatus::Done)
        .collect();
    let mut claimed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in &records {
        for case in &r.cases {
            claimed
                .entry(case.as_str())
                .or_default()
                .push(r.shard.to_string());
        }
    }
    if let Some((case, shards)) = claimed.iter().find(|(_, s)| s.len() > 1) {
        return Err(ShardError::Duplicate {
            step: step.name(),
            case: case.to_string(),
            shards: shards.clone(),
            folder: records_dir(step_dir),
        });
    }
    let mut layouts: Vec<u32> = records.iter().map(|r| r.shard.count).collect();
    layouts.dedup();
    let layout = match layouts.as_slice() {
        [n] => Some(*n),
        _ => None,
    };
    Ok(ids
        .iter()
        .filter(|id| {
            !claimed.contains_key(id.as_str())
                || case_artefacts(step, step_dir, id, two_networks)
                    .iter()
                    .any(|f| !f.exists())
        })
        .map(|id| MissingCase {
            case: id.clone(),
            shard: layout.and_then(|n| Shard::owner(ids, id, n)),
        })
        .collect())
}

/// [`missing_cases`] as a check: an error naming every missing case.
pub(crate) fn check_complete(
    step: Step,
    step_dir: &Path,
    fingerprint: &str,
    ids: &[String],
    two_networks: bool,
) -> Result<(), ShardError> {
    let missing = missing_cases(step, step_dir, fingerprint, ids, two_networks)?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ShardError::Missing {
            step: step.name(),
            total: ids.len(),
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn shards_partition_the_cases() {
        let all = ids(7);
        let parts: Vec<Vec<String>> = (0..3)
            .map(|i| Shard { index: i, count: 3 }.select(&all))
            .collect();
        assert_eq!(parts[0], ["c0", "c3", "c6"]);
        assert_eq!(parts[1], ["c1", "c4"]);
        let mut union: Vec<String> = parts.concat();
        union.sort();
        assert_eq!(union, all);
        assert_eq!(
            Shard::owner(&all, "c4", 3),
            Some(Shard { index: 1, count: 3 })
        );
    }

    #[test]
    fn shard_specifications_are_checked() {
        assert_eq!(Shard::parse("2/4").unwrap(), Shard { index: 2, count: 4 });
        for bad in ["4/4", "1", "a/2", "1/0", "-1/3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let whole = env(&[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "2"),
        ]);
        assert_eq!(
            Shard::from_slurm_env(whole).unwrap(),
            Shard { index: 1, count: 3 }
        );
        let partial = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
        ]);
        let err = Shard::from_slurm_env(partial).unwrap_err().to_string();
        assert!(err.contains("pass --shard 3/N"), "{err}");
        assert!(Shard::from_slurm_env(env(&[])).is_err());
    }

    #[test]
    fn the_merge_names_missing_and_duplicated_cases() {
        let dir = tempfile::tempdir().unwrap();
        let all = ids(5);
        let step = Step::PseudoLabels;
        for i in 0..2 {
            let shard = Shard { index: i, count: 2 };
            let mine = shard.select(&all);
            start_part(step, dir.path(), "fp", shard, &mine, false).unwrap();
            for id in &mine {
                std::fs::write(dir.path().join(format!("{id}.json")), "[]").unwrap();
            }
            if i == 0 {
                finish_part(step, dir.path(), "fp", shard, &mine).unwrap();
            }
        }
        // Shard 1/2 never finished: its cases are missing, with their shard.
        let err = check_complete(step, dir.path(), "fp", &all, false).unwrap_err();
        let ShardError::Missing { missing, total, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(*total, 5);
        let named: Vec<&str> = missing.iter().map(|m| m.case.as_str()).collect();
        assert_eq!(named, ["c1", "c3"]);
        assert_eq!(missing[0].shard, Some(Shard { index: 1, count: 2 }));
        assert!(err.to_string().contains("c3 (shard 1/2)"), "{err}");

        // Finished, but an artefact disappeared.
        let shard = Shard { index: 1, count: 2 };
        finish_part(step, dir.path(), "fp", shard, &shard.select(&all)).unwrap();
        check_complete(step, dir.path(), "fp", &all, false).unwrap();
        std::fs::remove_file(dir.path().join("c4.json")).unwrap();
        let missing = missing_cases(step, dir.path(), "fp", &all, false).unwrap();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].case, "c4");

        // Another fingerprint vouches for nothing.
        assert_eq!(
            missing_cases(step, dir.path(), "other", &all, false)
                .unwrap()
                .len(),
            5
        );

        // A second layout claiming the same cases is refused.
        let extra = Shard { index: 0, count: 1 };
        finish_part(step, dir.path(), "fp", extra, &all).unwrap();
        let err = check_complete(step, dir.path(), "fp", &all, false).unwrap_err();
        assert!(matches!(err, ShardError::Duplicate { .. }), "{err}");
    }

    #[test]
    fn a_restarted_shard_clears_only_its_own_stale_cases() {
        let dir = tempfile::tempdir().unwrap();
        let all = ids(4);
        for id in &all {
            std::fs::write(dir.path().join(format!("{id}.json")), "[]").unwrap();
        }
        let shard = Shard { index: 0, count: 2 };
        start_part(
            Step::Prompts,
            dir.path(),
            "new",
            shard,
            &shard.select(&all),
            false,
        )
        .unwrap();
        let left: Vec<bool> = all
            .iter()
            .map(|id| dir.path().join(format!("{id}.json")).exists())
            .collect();
        assert_eq!(left, [false, true, false, true]);
        // Same fingerprint again: a resume keeps what is there.
        std::fs::write(dir.path().join("c0.json"), "[]").unwrap();
        start_part(
            Step::Prompts,
            dir.path(),
            "new",
            shard,
            &shard.select(&all),
            false,
        )
        .unwrap();
        assert!(dir.path().join("c0.json").exists());
    }
}
