//! The cases of a run, prepared once: preprocessed stage input, ground
//! truth on the same (cropped) grid when the dataset has it, and what is
//! needed to write results back in the original grid.

use clisc_sdk::stage::CaseInput;
use clisc_sdk::LabelVolume;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::splits::Split;

/// One prepared case.
pub struct PreparedCase {
    /// Preprocessed input (cropped grid).
    pub input: CaseInput,
    /// Whole-tumor ground truth on the cropped grid, when available.
    pub truth: Option<LabelVolume>,
    /// Full BraTS labels on the cropped grid (for TC/ET metrics), when available.
    pub labels: Option<LabelVolume>,
    /// Split membership.
    pub split: Split,
    /// The raw FLAIR file (reference header for outputs).
    pub flair_path: PathBuf,
    /// Every file the case was read from (FLAIR, then the segmentation
    /// when there is one), recorded in the run manifest.
    pub sources: Vec<PathBuf>,
    /// Maps cropped-grid labels back to the original grid.
    pub restore: Box<dyn Fn(&LabelVolume) -> LabelVolume + Send + Sync>,
}

impl PreparedCase {
    /// Case identifier.
    pub fn id(&self) -> &str {
        self.input.id.as_str()
    }
}

/// All prepared cases by id.
pub type Cases = BTreeMap<String, PreparedCase>;

/// Case ids of one split, sorted.
pub fn ids_in(cases: &Cases, split: Split) -> Vec<String> {
    cases
        .values()
        .filter(|c| c.split == split)
        .map(|c| c.id().to_string())
        .collect()
}

/// A `<case>.nii.gz` path in `dir`.
pub fn case_file(dir: &Path, id: &str, suffix: &str) -> PathBuf {
    dir.join(format!("{id}{suffix}.nii.gz"))
}
