//! # clisc dataset
//!
//! Datasets on disk and what a case becomes before the stages see it:
//! the case layouts below, train / validation / test splits ([`splits`]),
//! and preprocessing onto the working grid ([`preprocess`]: crop, resample,
//! bias correction, normalisation, and the way back to the input grid).
//!
//! Datasets on disk: the BraTS 2020 and 2021+ layouts and a configurable
//! "one folder per case, one file per modality" layout.
//!
//! [`Dataset::open`] finds the cases and checks each one by reading the
//! NIfTI headers only (fast, even for hundreds of cases): every required
//! modality present, all modalities and the segmentation on the same grid
//! (shape and affine). Voxels are read later, per case, by
//! [`CaseFiles::load_image`] / [`CaseFiles::load_seg`]. Every error names
//! the case and the file; with `skip_bad_cases = true` bad cases are left
//! out and listed in [`Dataset::skipped`].
//!
//! In a pipeline file the `[dataset]` table is a [`DatasetLayout`] plus
//! `root`:
//!
//! ```toml
//! [dataset]
//! root = "data/brats2020"
//! layout = "brats2020"          # or "brats2021", "folders"
//! modalities = ["flair"]        # required modalities (default: all four)
//! skip_bad_cases = false
//! [dataset.patterns]            # "folders" layout (or overrides)
//! flair = "*_FLAIR.nii.gz"      # `*`/`?` wildcards, `{case}` = folder name
//! seg = "{case}_label.nii.gz"
//! [dataset.split]
//! ratios = [7, 1, 2]
//! seed = 0
//! # csv = "splits.csv"          # case_id,split
//! ```
#![warn(unreachable_pub)]

pub mod preprocess;
pub mod splits;

use crate::splits::{SplitConfig, SplitError, Splits};
use clisc_nifti::{NiftiError, NiftiInfo};
use clisc_sdk::{Channel, Grid, LabelVolume, Volume};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The four BraTS modalities in their usual order.
pub(crate) const BRATS_MODALITIES: [&str; 4] = ["t1", "t1ce", "t2", "flair"];

/// Which naming scheme the dataset folder follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// `BraTS20_Training_NNN/BraTS20_Training_NNN_{t1,t1ce,t2,flair,seg}.nii[.gz]`.
    #[default]
    Brats2020,
    /// `BraTS2021_NNNNN/BraTS2021_NNNNN_{t1,t1ce,t2,flair,seg}.nii.gz` (same
    /// `<folder>_<modality>` rule; kept separate for clarity in configs).
    Brats2021,
    /// One folder per case; files found with [`DatasetLayout::patterns`].
    Folders,
}

/// How to find cases and files; deserialisable from the pipeline's
/// `[dataset]` table (everything but `root`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetLayout {
    /// Naming scheme.
    pub layout: LayoutKind,
    /// Modalities every case must have (lower case). Default: the four
    /// BraTS modalities for the BraTS layouts, the pattern keys (except
    /// `seg`) for `folders`.
    pub modalities: Option<Vec<String>>,
    /// File name pattern per modality (and `seg`): `*` matches any run of
    /// characters, `?` one character, `{case}` the case folder's name.
    /// Required for `folders`; for BraTS layouts they override the
    /// standard names.
    pub patterns: BTreeMap<String, String>,
    /// Leave out bad cases (reported in [`Dataset::skipped`]) instead of
    /// failing.
    pub skip_bad_cases: bool,
    /// Train/valid/test split.
    pub split: SplitConfig,
    /// Voxel size the stages work at.
    pub spacing: TargetSpacing,
    /// Bias-field correction before normalisation.
    pub bias_correction: BiasCorrection,
    /// Width in millimetres of the band around a prediction's border in
    /// which each voxel is re-decided from the raw FLAIR on the case's own
    /// grid ([`clisc_imaging::refine`]); `None`: predictions are only
    /// resampled back.
    #[serde(deserialize_with = "positive_millimetres")]
    pub refine_boundary_mm: Option<f64>,
}

impl Default for DatasetLayout {
    fn default() -> Self {
        Self {
            layout: LayoutKind::Brats2020,
            modalities: None,
            patterns: BTreeMap::new(),
            skip_bad_cases: false,
            split: SplitConfig::default(),
            spacing: TargetSpacing::Native,
            bias_correction: BiasCorrection::None,
            refine_boundary_mm: None,
        }
    }
}

/// `[dataset] bias_correction`: whether each case's channels are divided
/// by a smooth fitted bias field (on the working grid, inside the brain)
/// before they are clipped and z-scored. Weight-free stages that look for
/// FLAIR hyperintensity need it on scans with coil shading; CLISC itself
/// does not correct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BiasCorrection {
    /// `"none"` (default): intensities as read.
    #[default]
    None,
    /// `"polynomial"`: a robust polynomial fit of the log intensities
    /// ([`clisc_imaging::bias`]).
    Polynomial,
}

impl BiasCorrection {
    /// Every value, in the order error messages list them.
    pub const ALL: [Self; 2] = [BiasCorrection::None, BiasCorrection::Polynomial];

    /// The value as written in a pipeline file and a model file.
    pub fn as_str(self) -> &'static str {
        match self {
            BiasCorrection::None => "none",
            BiasCorrection::Polynomial => "polynomial",
        }
    }

    /// Parses [`BiasCorrection::as_str`]'s output.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }
}

/// Reads `refine_boundary_mm`: a positive number of millimetres.
fn positive_millimetres<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let value = toml::Value::deserialize(d)?;
    let mm = match &value {
        toml::Value::Float(f) => *f,
        toml::Value::Integer(i) => *i as f64,
        _ => f64::NAN,
    };
    if mm.is_finite() && mm > 0.0 {
        return Ok(Some(mm));
    }
    Err(serde::de::Error::custom(format!(
        "refine_boundary_mm = {value}: expected a positive number of millimetres such as 4.0 (leave it out to not refine)"
    )))
}

/// `[dataset] spacing`: the voxel size every case is resampled to before
/// the stages see it (predictions and pseudo-labels go back to each
/// case's own grid). Patch, box and kernel sizes of the stages are in
/// voxels, so this fixes their field of view in millimetres whatever the
/// scanner's resolution.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum TargetSpacing {
    /// `"native"` (default): each case keeps its own spacing (CLISC).
    #[default]
    Native,
    /// `"auto"`: the per-axis median spacing of the training cases
    /// (nnU-Net's rule).
    Auto,
    /// `[x, y, z]` in millimetres.
    Mm([f64; 3]),
}

impl TargetSpacing {
    const EXPECTED: &'static str =
        "\"native\", \"auto\" or three positive millimetre values such as [2.0, 2.0, 2.0]";
}

impl Serialize for TargetSpacing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TargetSpacing::Native => s.serialize_str("native"),
            TargetSpacing::Auto => s.serialize_str("auto"),
            TargetSpacing::Mm(mm) => mm.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for TargetSpacing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "spacing = {value}: expected {}",
                TargetSpacing::EXPECTED
            ))
        };
        match &value {
            toml::Value::String(s) if s == "native" => Ok(TargetSpacing::Native),
            toml::Value::String(s) if s == "auto" => Ok(TargetSpacing::Auto),
            toml::Value::Array(items) if items.len() == 3 => {
                let mut mm = [0.0; 3];
                for (m, item) in mm.iter_mut().zip(items) {
                    *m = match item {
                        toml::Value::Float(f) => *f,
                        toml::Value::Integer(i) => *i as f64,
                        _ => return Err(bad()),
                    };
                    if !(m.is_finite() && *m > 0.0) {
                        return Err(bad());
                    }
                }
                Ok(TargetSpacing::Mm(mm))
            }
            _ => Err(bad()),
        }
    }
}

impl DatasetLayout {
    /// Parses the `[dataset]` table (without `root`) of a pipeline file.
    pub fn from_table(table: &toml::Table) -> Result<Self, DatasetError> {
        let mut t = table.clone();
        t.remove("root");
        toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| DatasetError::Config(e.message().to_string()))
    }

    /// The required modalities after defaults.
    pub(crate) fn required_modalities(&self) -> Vec<String> {
        match (&self.modalities, self.layout) {
            (Some(m), _) => m.iter().map(|s| s.to_ascii_lowercase()).collect(),
            (None, LayoutKind::Folders) => self
                .patterns
                .keys()
                .filter(|k| k.as_str() != "seg")
                .cloned()
                .collect(),
            (None, _) => BRATS_MODALITIES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// File name patterns for `name` (a modality or `seg`), in priority order.
    fn patterns_for(&self, name: &str) -> Vec<String> {
        if let Some(p) = self.patterns.get(name) {
            return vec![p.clone()];
        }
        match self.layout {
            LayoutKind::Folders => Vec::new(),
            _ => vec![
                format!("{{case}}_{name}.nii.gz"),
                format!("{{case}}_{name}.nii"),
            ],
        }
    }
}

/// A dataset problem, naming the case and file involved.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The layout settings are invalid.
    #[error("dataset settings: {0}")]
    Config(String),
    /// The root folder cannot be listed or holds no case.
    #[error("dataset {root}: {message}")]
    Root {
        /// Dataset root.
        root: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// One case is unusable.
    #[error("case {case}: {message}")]
    Case {
        /// Case id.
        case: String,
        /// What is wrong, naming the file.
        message: String,
    },
    /// A file could not be read.
    #[error(transparent)]
    Nifti(#[from] NiftiError),
    /// The split could not be made.
    #[error(transparent)]
    Split(#[from] SplitError),
}

/// The files of one case and its grid (from the headers).
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFiles {
    /// Case id (the folder name).
    pub id: String,
    /// The case folder.
    pub dir: PathBuf,
    /// Modality name -> file, for every modality found (required or not).
    pub modalities: BTreeMap<String, PathBuf>,
    /// Ground-truth segmentation, if present.
    pub seg: Option<PathBuf>,
    /// The common grid of all files.
    pub grid: Grid,
}

impl CaseFiles {
    /// The file of `modality`, or an error naming the case.
    pub fn modality_path(&self, modality: &str) -> Result<&Path, DatasetError> {
        self.modalities
            .get(modality)
            .map(PathBuf::as_path)
            .ok_or_else(|| DatasetError::Case {
                case: self.id.clone(),
                message: format!(
                    "no `{modality}` file in {} (have: {:?})",
                    self.dir.display(),
                    self.modalities.keys().collect::<Vec<_>>()
                ),
            })
    }

    /// Reads the given modalities into one multi-channel volume (channels
    /// named after the modalities, in the given order), with the header of
    /// the first one (reference for writing outputs).
    pub fn load_image(&self, modalities: &[&str]) -> Result<(Volume, NiftiInfo), DatasetError> {
        let mut channels = Vec::new();
        let mut first: Option<(Grid, NiftiInfo)> = None;
        for &m in modalities {
            let path = self.modality_path(m)?;
            let v = clisc_nifti::read(path)?;
            if let Some((g, _)) = &first {
                if !clisc_nifti::same_geometry(g, &v.grid, 1e-3) {
                    return Err(DatasetError::Case {
                        case: self.id.clone(),
                        message: format!(
                            "{} has a different grid than {}",
                            path.display(),
                            modalities[0]
                        ),
                    });
                }
            } else {
                first = Some((v.grid, v.info.clone()));
            }
            channels.push(Channel {
                name: m.into(),
                data: v.data.into(),
            });
        }
        let (grid, info) = first
            .ok_or_else(|| DatasetError::Config("load_image: no modality requested".into()))?;
        Ok((
            Volume {
                grid,
                channels: channels.into(),
            },
            info,
        ))
    }

    /// Reads the segmentation, if the case has one.
    pub fn load_seg(&self) -> Result<Option<LabelVolume>, DatasetError> {
        match &self.seg {
            None => Ok(None),
            Some(p) => Ok(Some(clisc_nifti::read_labels(p)?.0)),
        }
    }
}

/// A case left out because of `skip_bad_cases`, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedCase {
    /// Case id (folder name).
    pub id: String,
    /// The error that made it unusable.
    pub reason: String,
}

/// An opened dataset: its valid cases, sorted by id.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Root folder.
    pub root: PathBuf,
    /// The layout it was opened with.
    pub layout: DatasetLayout,
    /// Usable cases, sorted by id.
    pub cases: Vec<CaseFiles>,
    /// Cases left out (only with `skip_bad_cases`).
    pub skipped: Vec<SkippedCase>,
}

/// `*` / `?` wildcard match of a whole file name (case-sensitive).
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = n;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            n = mark;
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

fn is_nifti_name(name: &str) -> bool {
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

impl Dataset {
    /// Opens the dataset under `root` with `layout` (see the module docs).
    pub fn open(root: &Path, layout: &DatasetLayout) -> Result<Dataset, DatasetError> {
        if layout.layout == LayoutKind::Folders && layout.patterns.is_empty() {
            return Err(DatasetError::Config(
                "layout \"folders\" needs [dataset.patterns], e.g. flair = \"*flair*.nii.gz\""
                    .into(),
            ));
        }
        let required = layout.required_modalities();
        if required.is_empty() {
            return Err(DatasetError::Config(
                "no modality is required; set `modalities`".into(),
            ));
        }
        let root_err = |m: String| DatasetError::Root {
            root: root.to_path_buf(),
            message: m,
        };
        let entries = std::fs::read_dir(root)
            .map_err(|e| root_err(format!("cannot list the folder: {e}")))?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        dirs.sort();
        let mut cases = Vec::new();
        let mut skipped = Vec::new();
        for dir in dirs {
            match Self::scan_case(&dir, layout, &required) {
                Ok(None) => tracing::debug!("{}: no image files, not a case", dir.display()),
                Ok(Some(case)) => cases.push(case),
                Err(e) => {
                    let id = dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if layout.skip_bad_cases {
                        tracing::warn!("skipping {e}");
                        skipped.push(SkippedCase {
                            id,
                            reason: e.to_string(),
                        });
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        if cases.is_empty() {
            return Err(root_err(format!(
                "no usable case found (layout {:?}: one folder per case holding {})",
                layout.layout,
                required
                    .iter()
                    .map(|m| layout.patterns_for(m).join(" or "))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(Dataset {
            root: root.to_path_buf(),
            layout: layout.clone(),
            cases,
            skipped,
        })
    }

    fn scan_case(
        dir: &Path,
        layout: &DatasetLayout,
        required: &[String],
    ) -> Result<Option<CaseFiles>, DatasetError> {
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let case_err = |m: String| DatasetError::Case {
            case: id.clone(),
            message: m,
        };
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| case_err(format!("cannot list {}: {e}", dir.display())))?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| is_nifti_name(n))
            .collect();
        names.sort();
        if names.is_empty() {
            return Ok(None);
        }
        let find = |what: &str| -> Result<Option<PathBuf>, DatasetError> {
            for pat in layout.patterns_for(what) {
                let pat = pat.replace("{case}", &id);
                let hits: Vec<&String> = names
                    .iter()
                    .filter(|n| wildcard_match(pat.as_bytes(), n.as_bytes()))
                    .collect();
                match hits.len() {
                    0 => continue,
                    1 => return Ok(Some(dir.join(hits[0]))),
                    _ => {
                        return Err(case_err(format!(
                            "pattern `{pat}` for `{what}` matches several files in {}: {:?}",
                            dir.display(),
                            hits
                        )))
                    }
                }
            }
            Ok(None)
        };
        let mut modalities = BTreeMap::new();
        let mut wanted: Vec<String> = required.to_vec();
        let optional: Vec<String> = match layout.layout {
            LayoutKind::Folders => layout
                .patterns
                .keys()
                .filter(|k| k.as_str() != "seg")
                .cloned()
                .collect(),
            _ => BRATS_MODALITIES
                .iter()
                .map(|s| s.to_string())
                .chain(layout.patterns.keys().cloned())
                .collect(),
        };
        for m in optional {
            if m != "seg" && !wanted.contains(&m) {
                wanted.push(m);
            }
        }
        for m in &wanted {
            match find(m)? {
                Some(p) => {
                    modalities.insert(m.clone(), p);
                }
                None if required.contains(m) => {
                    return Err(case_err(format!(
                        "missing modality `{m}`: no file {} in {}",
                        layout
                            .patterns_for(m)
                            .iter()
                            .map(|p| p.replace("{case}", &id))
                            .collect::<Vec<_>>()
                            .join(" or "),
                        dir.display()
                    )));
                }
                None => {}
            }
        }
        let mut seg = find("seg")?;
        if seg.is_none()
            && layout.layout != LayoutKind::Folders
            && !layout.patterns.contains_key("seg")
        {
            // BraTS 2020 ships one case (355) with a differently named label
            // file (`W39_1998.09.19_Segm.nii`): accept a single `*seg*` file.
            let hits: Vec<&String> = names
                .iter()
                .filter(|n| n.to_ascii_lowercase().contains("seg"))
                .collect();
            if hits.len() == 1 {
                tracing::info!("case {id}: using {} as the segmentation", hits[0]);
                seg = Some(dir.join(hits[0]));
            }
        }
        // Headers: readable, 3D, same grid.
        let mut grid: Option<(Grid, PathBuf)> = None;
        for path in modalities.values().chain(seg.iter()) {
            let h = clisc_nifti::read_header(path)?;
            let g = clisc_nifti::grid_from_header(path, &h)?;
            check_file_size(path, &h, &g)?;
            match &grid {
                None => grid = Some((g, path.clone())),
                Some((g0, p0)) => {
                    if g0.shape != g.shape {
                        return Err(case_err(format!(
                            "{} has shape {:?} but {} has {:?}",
                            path.display(),
                            g.shape,
                            p0.display(),
                            g0.shape
                        )));
                    }
                    if !clisc_nifti::same_geometry(g0, &g, 1e-3) {
                        return Err(case_err(format!(
                            "{} has affine {:?} but {} has {:?}",
                            path.display(),
                            g.affine,
                            p0.display(),
                            g0.affine
                        )));
                    }
                }
            }
        }
        let (grid, _) = grid.ok_or_else(|| case_err("no files".into()))?;
        Ok(Some(CaseFiles {
            id,
            dir: dir.to_path_buf(),
            modalities,
            seg,
            grid,
        }))
    }

    /// Case ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.cases.iter().map(|c| c.id.clone()).collect()
    }

    /// The case called `id`.
    pub fn case(&self, id: &str) -> Option<&CaseFiles> {
        self.cases.iter().find(|c| c.id == id)
    }

    /// The split the layout's `[split]` settings ask for (generated from
    /// the seed, or read from the user CSV). Cases missing from a user CSV
    /// are not in the map.
    pub fn splits(&self) -> Result<Splits, DatasetError> {
        Ok(splits::resolve(&self.layout.split, &self.ids())?.0)
    }
}

/// For uncompressed files, checks that the data fits in the file (a cheap
/// test for truncated downloads).
fn check_file_size(path: &Path, h: &nifti::NiftiHeader, g: &Grid) -> Result<(), NiftiError> {
    if path.to_string_lossy().ends_with(".nii") {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let need = h.vox_offset.max(352.0) as u64 + (g.len() as u64) * (h.bitpix.max(8) as u64 / 8);
        if len < need {
            return Err(NiftiError::Read {
                path: path.to_path_buf(),
                message: format!("file has {len} bytes, header needs {need} (truncated?)"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clisc_nifti::{write_f32, write_labels};

    fn grid(shape: [u32; 3]) -> Grid {
        Grid::new(shape, [1.0; 3])
    }

    fn write_case(root: &Path, id: &str, mods: &[&str], g: Grid, seg: bool) {
        let dir = root.join(id);
        for m in mods {
            write_f32(
                &dir.join(format!("{id}_{m}.nii.gz")),
                &g,
                &vec![1.0; g.len()],
                None,
            )
            .unwrap();
        }
        if seg {
            write_labels(
                &dir.join(format!("{id}_seg.nii.gz")),
                &LabelVolume::zeros(g),
                None,
            )
            .unwrap();
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(
            b"*flair*.nii.gz",
            b"case_FLAIR_flair_x.nii.gz"
        ));
        assert!(wildcard_match(b"a?c.nii", b"abc.nii"));
        assert!(!wildcard_match(b"*t1.nii.gz", b"x_t1ce.nii.gz"));
    }

    #[test]
    fn brats_layout_with_errors_and_skipping() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let g = grid([4, 3, 2]);
        write_case(root, "BraTS20_Training_001", &BRATS_MODALITIES, g, true);
        write_case(root, "BraTS20_Training_002", &BRATS_MODALITIES, g, false);
        write_case(
            root,
            "BraTS20_Training_003",
            &["t1", "t2", "flair"],
            g,
            true,
        );
        write_case(root, "BraTS20_Training_004", &["t1", "t1ce", "t2"], g, true);
        write_f32(
            &root.join("BraTS20_Training_004/BraTS20_Training_004_flair.nii.gz"),
            &grid([4, 3, 3]),
            &[0.0; 36],
            None,
        )
        .unwrap();
        std::fs::write(root.join("name_mapping.csv"), "x").unwrap();

        let layout = DatasetLayout::default();
        let e = Dataset::open(root, &layout).unwrap_err().to_string();
        assert!(
            e.contains("BraTS20_Training_003") && e.contains("t1ce"),
            "{e}"
        );

        let layout = DatasetLayout {
            skip_bad_cases: true,
            ..Default::default()
        };
        let ds = Dataset::open(root, &layout).unwrap();
        assert_eq!(
            ds.ids(),
            vec!["BraTS20_Training_001", "BraTS20_Training_002"]
        );
        assert_eq!(ds.skipped.len(), 2);
        assert!(
            ds.skipped[1]
                .reason
                .contains("BraTS20_Training_004_flair.nii.gz"),
            "{}",
            ds.skipped[1].reason
        );
        assert!(ds.cases[1].seg.is_none());
        let (v, _) = ds.cases[0].load_image(&["flair", "t1"]).unwrap();
        assert_eq!(v.channels.len(), 2);
        assert!(ds.cases[0].load_seg().unwrap().is_some());

        // FLAIR only: case 003 is fine now.
        let layout = DatasetLayout {
            modalities: Some(vec!["flair".into()]),
            skip_bad_cases: true,
            ..Default::default()
        };
        assert_eq!(Dataset::open(root, &layout).unwrap().cases.len(), 3);
    }

    #[test]
    fn spacing_reads_native_auto_or_millimetres_and_names_what_is_expected() {
        let layout = |spacing: &str| {
            let table: toml::Table = toml::from_str(&format!("root = \"x\"\n{spacing}")).unwrap();
            DatasetLayout::from_table(&table).map(|l| l.spacing)
        };
        assert_eq!(layout("").unwrap(), TargetSpacing::Native);
        assert_eq!(
            layout("spacing = \"native\"").unwrap(),
            TargetSpacing::Native
        );
        assert_eq!(layout("spacing = \"auto\"").unwrap(), TargetSpacing::Auto);
        assert_eq!(
            layout("spacing = [2.5, 2, 3.0]").unwrap(),
            TargetSpacing::Mm([2.5, 2.0, 3.0])
        );
        for bad in [
            "\"1mm\"",
            "[1.0, 1.0]",
            "[1.0, 0.0, 1.0]",
            "[1.0, \"a\", 1.0]",
        ] {
            let e = layout(&format!("spacing = {bad}")).unwrap_err().to_string();
            assert!(
                e.contains("spacing") && e.contains("\"native\", \"auto\" or three positive"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn bias_correction_reads_none_or_polynomial_and_names_what_is_expected() {
        let layout = |line: &str| {
            let table: toml::Table = toml::from_str(&format!("root = \"x\"\n{line}")).unwrap();
            DatasetLayout::from_table(&table).map(|l| l.bias_correction)
        };
        assert_eq!(layout("").unwrap(), BiasCorrection::None);
        assert_eq!(
            layout("bias_correction = \"none\"").unwrap(),
            BiasCorrection::None
        );
        assert_eq!(
            layout("bias_correction = \"polynomial\"").unwrap(),
            BiasCorrection::Polynomial
        );
        for p in BiasCorrection::ALL {
            assert_eq!(BiasCorrection::parse(p.as_str()), Some(p));
        }
        let e = layout("bias_correction = \"n4\"").unwrap_err().to_string();
        assert!(
            e.contains("n4") && e.contains("none") && e.contains("polynomial"),
            "{e}"
        );
    }

    #[test]
    fn refine_boundary_takes_positive_millimetres_only() {
        let layout = |line: &str| {
            let table: toml::Table = toml::from_str(&format!("root = \"x\"\n{line}")).unwrap();
            DatasetLayout::from_table(&table).map(|l| l.refine_boundary_mm)
        };
        assert_eq!(layout("").unwrap(), None);
        assert_eq!(layout("refine_boundary_mm = 4").unwrap(), Some(4.0));
        assert_eq!(layout("refine_boundary_mm = 2.5").unwrap(), Some(2.5));
        for bad in ["0", "-1.0", "nan", "\"4mm\""] {
            let e = layout(&format!("refine_boundary_mm = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("refine_boundary_mm"), "{bad}: {e}");
        }
    }

    #[test]
    fn folders_layout_from_toml_and_unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let g = grid([3, 3, 3]);
        for id in ["p1", "p2"] {
            write_f32(&root.join(id).join("FLAIR.nii.gz"), &g, &[0.0; 27], None).unwrap();
            write_labels(
                &root.join(id).join(format!("{id}_mask.nii")),
                &LabelVolume::zeros(g),
                None,
            )
            .unwrap();
        }
        let table: toml::Table = toml::from_str(
            "root = \"x\"\nlayout = \"folders\"\n[patterns]\nflair = \"*FLAIR*.nii*\"\nseg = \"{case}_mask.nii\"\n[split]\nratios = [1, 0, 1]\nseed = 3\n",
        )
        .unwrap();
        let layout = DatasetLayout::from_table(&table).unwrap();
        assert_eq!(layout.required_modalities(), vec!["flair"]);
        let ds = Dataset::open(root, &layout).unwrap();
        assert_eq!(ds.ids(), vec!["p1", "p2"]);
        assert!(ds.cases[0].seg.is_some());
        assert_eq!(ds.splits().unwrap().len(), 2);

        std::fs::write(root.join("p2/FLAIR.nii.gz"), b"not a nifti").unwrap();
        let e = Dataset::open(root, &layout).unwrap_err().to_string();
        assert!(e.contains("p2/FLAIR.nii.gz"), "{e}");
        let bad: toml::Table = toml::from_str("layout = \"folders\"\nmodalites = []\n").unwrap();
        assert!(DatasetLayout::from_table(&bad)
            .unwrap_err()
            .to_string()
            .contains("modalites"));
    }
}
