//! Train / validation / test splits: generated reproducibly from a seed
//! (CLISC used 7:1:2) or read from a user CSV, stored as `case_id,split`.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which part of the dataset a case belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Pseudo-labels are made and networks trained on these.
    Train,
    /// Held out; reported, never used for choices by default.
    Valid,
    /// Final evaluation.
    Test,
}

impl Split {
    /// The CSV spelling: `train`, `valid`, `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
    /// Parses `train`, `valid` (or `val`, `validation`), `test` (any case).
    pub fn parse(s: &str) -> Option<Split> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" | "training" => Some(Split::Train),
            "valid" | "val" | "validation" => Some(Split::Valid),
            "test" | "testing" => Some(Split::Test),
            _ => None,
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Case id -> split.
pub type Splits = BTreeMap<String, Split>;

/// How the `[dataset.split]` section of a pipeline chooses the split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitConfig {
    /// Train:valid:test proportions (normalised; default 7:1:2 as in CLISC).
    pub ratios: [f64; 3],
    /// Seed of the shuffle (default 0). The same ids and seed always give
    /// the same split, independently of the order the ids are listed in.
    pub seed: u64,
    /// A user CSV (`case_id,split`) to use instead of a generated split.
    pub csv: Option<PathBuf>,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            ratios: [7.0, 1.0, 2.0],
            seed: 0,
            csv: None,
        }
    }
}

/// A split problem (bad ratios, unreadable or malformed CSV).
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// Ratios must be finite, non-negative and not all zero.
    #[error("split ratios {0:?} are invalid (three finite non-negative numbers, not all zero)")]
    Ratios([f64; 3]),
    /// Reading or writing the CSV failed.
    #[error("split file {path}: {message}")]
    File {
        /// The CSV file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A line of the CSV is malformed.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// Splits `ids` into train/valid/test with proportions `ratios` after a
/// seeded shuffle of the sorted ids. Counts: valid = round(n * r_valid),
/// test = round(n * r_test), train = the rest (369 cases at 7:1:2 give
/// 258/37/74).
pub fn generate(ids: &[String], ratios: [f64; 3], seed: u64) -> Result<Splits, SplitError> {
    if ratios.iter().any(|r| !r.is_finite() || *r < 0.0) || ratios.iter().sum::<f64>() <= 0.0 {
        return Err(SplitError::Ratios(ratios));
    }
    let total: f64 = ratios.iter().sum();
    let mut sorted: Vec<String> = ids.to_vec();
    sorted.sort();
    sorted.dedup();
    let n = sorted.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    sorted.shuffle(&mut rng);
    let n_valid = ((n as f64 * ratios[1] / total).round() as usize).min(n);
    let n_test = ((n as f64 * ratios[2] / total).round() as usize).min(n - n_valid);
    let mut out = Splits::new();
    for (i, id) in sorted.into_iter().enumerate() {
        let split = if i < n_test {
            Split::Test
        } else if i < n_test + n_valid {
            Split::Valid
        } else {
            Split::Train
        };
        out.insert(id, split);
    }
    Ok(out)
}

/// Writes `case_id,split` lines (with that header), sorted by case id.
pub fn write_csv(path: &Path, splits: &Splits) -> Result<(), SplitError> {
    let mut text = String::from("case_id,split\n");
    for (id, s) in splits {
        text.push_str(&format!("{id},{s}\n"));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| SplitError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    std::fs::write(path, text).map_err(|e| SplitError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads a `case_id,split` CSV. A header line is optional; blank lines and
/// lines starting with `#` are ignored; a case listed twice is an error.
pub(crate) fn read_csv(path: &Path) -> Result<Splits, SplitError> {
    let text = std::fs::read_to_string(path).map_err(|e| SplitError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut out = Splits::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |message: String| SplitError::Line {
            path: path.to_path_buf(),
            line: line_no,
            message,
        };
        if fields.len() != 2 {
            return Err(bad(format!(
                "expected `case_id,split`, found {} fields",
                fields.len()
            )));
        }
        if out.is_empty() && fields[0].eq_ignore_ascii_case("case_id") {
            continue;
        }
        let split = Split::parse(fields[1]).ok_or_else(|| {
            bad(format!(
                "split `{}` is not one of train, valid, test",
                fields[1]
            ))
        })?;
        if fields[0].is_empty() {
            return Err(bad("empty case id".into()));
        }
        if out.insert(fields[0].to_string(), split).is_some() {
            return Err(bad(format!("case `{}` is listed twice", fields[0])));
        }
    }
    Ok(out)
}

/// Applies `config` to the dataset's case ids: reads the user CSV (every
/// listed case must exist; dataset cases absent from the CSV are left out
/// and returned in the second value) or generates the split.
pub fn resolve(config: &SplitConfig, ids: &[String]) -> Result<(Splits, Vec<String>), SplitError> {
    match &config.csv {
        None => Ok((generate(ids, config.ratios, config.seed)?, Vec::new())),
        Some(path) => {
            let splits = read_csv(path)?;
            let known: std::collections::BTreeSet<&str> = ids.iter().map(String::as_str).collect();
            let unknown: Vec<&str> = splits
                .keys()
                .map(String::as_str)
                .filter(|id| !known.contains(id))
                .collect();
            if !unknown.is_empty() {
                return Err(SplitError::File {
                    path: path.clone(),
                    message: format!(
                        "{} case(s) are not in the dataset: {}",
                        unknown.len(),
                        unknown
                            .iter()
                            .take(10)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            let left_out: Vec<String> = ids
                .iter()
                .filter(|id| !splits.contains_key(*id))
                .cloned()
                .collect();
            if !left_out.is_empty() {
                tracing::warn!(
                    "{}: {} dataset case(s) are not listed and are left out (e.g. {})",
                    path.display(),
                    left_out.len(),
                    left_out[0]
                );
            }
            Ok((splits, left_out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (1..=n)
            .map(|i| format!("BraTS20_Training_{i:03}"))
            .collect()
    }

    #[test]
    fn brats_sized_split_has_paper_proportions_and_is_reproducible() {
        let all = ids(369);
        let a = generate(&all, [7.0, 1.0, 2.0], 42).unwrap();
        let count = |s: Split| a.values().filter(|&&x| x == s).count();
        assert_eq!(
            (count(Split::Train), count(Split::Valid), count(Split::Test)),
            (258, 37, 74)
        );
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(generate(&reversed, [0.7, 0.1, 0.2], 42).unwrap(), a);
        assert_ne!(generate(&all, [7.0, 1.0, 2.0], 43).unwrap(), a);
    }

    #[test]
    fn csv_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        let s = generate(&ids(10), [7.0, 1.0, 2.0], 1).unwrap();
        write_csv(&p, &s).unwrap();
        assert_eq!(read_csv(&p).unwrap(), s);
        std::fs::write(&p, "case_id,split\na,train\nb,holdout\n").unwrap();
        let e = read_csv(&p).unwrap_err().to_string();
        assert!(e.contains(":3:") && e.contains("holdout"), "{e}");
        std::fs::write(&p, "a,train\na,test\n").unwrap();
        assert!(read_csv(&p).unwrap_err().to_string().contains("twice"));
        assert!(generate(&ids(3), [0.0, 0.0, 0.0], 1).is_err());
    }

    #[test]
    fn user_csv_must_name_known_cases() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(&p, "x,train\ny,test\n").unwrap();
        let cfg = SplitConfig {
            csv: Some(p.clone()),
            ..Default::default()
        };
        let (s, left) = resolve(&cfg, &["x".into(), "y".into(), "z".into()]).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(left, vec!["z".to_string()]);
        let e = resolve(&cfg, &["x".into()]).unwrap_err().to_string();
        assert!(e.contains("y"), "{e}");
    }
}
