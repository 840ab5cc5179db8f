//! The cases of a run, prepared once: preprocessed stage input, ground
//! truth on the same (working) grid when the dataset has it, and what is
//! needed to write results back in the original grid.

use crate::error::WithContext;
use clisc_dataset::preprocess::Geometry;
use clisc_sdk::stage::CaseInput;
use clisc_sdk::LabelVolume;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use clisc_dataset::splits::Split;

/// One prepared case.
pub struct PreparedCase {
    /// Preprocessed input (working grid: the brain's box, resampled to
    /// the `[dataset] spacing` when one is set).
    pub input: CaseInput,
    /// Whole-tumor ground truth on the working grid, when available: what
    /// pseudo-labels are scored against and what a supervised network
    /// learns.
    pub truth: Option<LabelVolume>,
    /// Full BraTS labels on the brain's box at the original spacing, when
    /// available: test predictions are scored against them there, after
    /// going back through [`Geometry::probability_to_cropped`].
    pub labels: Option<LabelVolume>,
    /// Split membership.
    pub split: Split,
    /// The raw FLAIR file (reference header for outputs).
    pub flair_path: PathBuf,
    /// Every file the case was read from (FLAIR, then the segmentation
    /// when there is one), recorded in the run manifest.
    pub sources: Vec<PathBuf>,
    /// Where the working grid sits in the original one.
    pub geometry: Geometry,
    /// The `[dataset] spacing` the case was resampled to (its working
    /// grid's spacing is this, adjusted to cover the brain's box exactly);
    /// `None`: its own.
    pub working_spacing: Option<[f64; 3]>,
}

impl PreparedCase {
    /// Case identifier.
    pub fn id(&self) -> &str {
        self.input.id.as_str()
    }

    /// Labels on the working grid back on the case's original grid.
    pub fn restore(&self, labels: &LabelVolume) -> crate::error::Result<LabelVolume> {
        self.geometry
            .restore(labels)
            .with_context(|| format!("case {}", self.id()))
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
