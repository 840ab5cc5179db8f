//! Series to volumes, and folders of DICOM files to NIfTI files.
//!
//! The voxel layout and affine are those of [`super::geometry`] (the ones
//! `dcm2niix` writes); values are the stored values times each slice's own
//! RescaleSlope plus its RescaleIntercept (so series whose scaling varies
//! from slice to slice come out right), as `f32`.

use super::pixels;
use super::scan::{self, ScanReport, Series};
use super::select::ModalityRules;
use super::DicomError;
use clisc_sdk::{Grid, Volume};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Voxels of a series on its grid (x-fastest), rescaled.
pub fn load_data(series: &Series) -> Result<(Grid, Vec<f32>), DicomError> {
    let geometry = series.require_geometry()?;
    let grid = geometry.grid;
    let [nx, ny, _] = grid.dims();
    if grid.len() as u64 > clisc_nifti::MAX_VOXELS {
        return Err(DicomError::Series {
            series: series.label(),
            message: format!(
                "{} voxels ({nx}x{ny}x{}, first file {}), more than the {} clisc accepts",
                grid.len(),
                series.slices.len(),
                series.slices[0].path.display(),
                clisc_nifti::MAX_VOXELS
            ),
        });
    }
    // Allocated once the first file's pixels have decoded to the size the
    // headers claim, so that a header claiming a huge image over a few
    // bytes of pixel data fails without asking for that memory.
    let mut data: Vec<f32> = Vec::new();
    // Read each file once, with all the frames it contributes.
    let mut by_file: BTreeMap<&Path, Vec<(usize, u32)>> = BTreeMap::new();
    for (k, s) in series.slices.iter().enumerate() {
        by_file
            .entry(s.path.as_path())
            .or_default()
            .push((k, s.frame));
    }
    for (path, wanted) in by_file {
        let frames: Vec<u32> = wanted.iter().map(|w| w.1).collect();
        let decoded = pixels::read_frames(path, &frames)?;
        if decoded.rows as usize != ny || decoded.columns as usize != nx {
            return Err(DicomError::Decode {
                path: path.to_path_buf(),
                message: format!(
                    "pixel data is {}x{} but the header says {nx}x{ny} (columns x rows)",
                    decoded.columns, decoded.rows
                ),
            });
        }
        if data.is_empty() {
            data = vec![0f32; grid.len()];
        }
        for ((k, _), values) in wanted.iter().zip(decoded.frames) {
            let s = &series.slices[*k];
            let (slope, intercept) = (s.rescale_slope, s.rescale_intercept);
            let base = k * nx * ny;
            for r in 0..ny {
                // DICOM row r is volume row ny - 1 - r (rows stored bottom-up).
                let dst = base + (ny - 1 - r) * nx;
                for (c, v) in values[r * nx..(r + 1) * nx].iter().enumerate() {
                    data[dst + c] = (v * slope + intercept) as f32;
                }
            }
        }
    }
    Ok((grid, data))
}

/// Loads a series as a single-channel [`Volume`] named `channel`.
pub fn load_volume(series: &Series, channel: &str) -> Result<Volume, DicomError> {
    let (grid, data) = load_data(series)?;
    Ok(Volume::single(grid, channel, data))
}

/// How [`convert_dir`] names and selects its outputs.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Write `.nii` instead of `.nii.gz`.
    pub uncompressed: bool,
    /// When set, convert only the series these rules select, each written
    /// as `<modality>.nii[.gz]`.
    pub rules: Option<ModalityRules>,
}

/// One written file.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The series ([`Series::label`]).
    pub series: String,
    /// The NIfTI file written.
    pub path: PathBuf,
    /// Its geometry.
    pub grid: Grid,
    /// Geometry warnings of the series.
    pub warnings: Vec<String>,
}

/// The outcome of [`convert_dir`].
#[derive(Debug, Clone, Default)]
pub struct ConvertSummary {
    /// What the scan found (series, skipped files).
    pub report: ScanReport,
    /// Files written.
    pub converted: Vec<Converted>,
    /// Series that could not be converted: label and reason.
    pub failed: Vec<(String, String)>,
}

fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.contains("__") {
        out = out.replace("__", "_");
    }
    out.trim_matches('_').to_string()
}

/// The file stem for a series: `<number>_<description>[_<part>]`.
pub(crate) fn output_stem(series: &Series) -> String {
    let mut stem = match series.number {
        Some(n) => format!("{n}_{}", sanitize(&series.description)),
        None => sanitize(&series.description),
    };
    if let Some(p) = &series.part {
        stem = format!("{stem}_{}", sanitize(p));
    }
    let stem = sanitize(&stem);
    if stem.is_empty() {
        "series".into()
    } else {
        stem
    }
}

/// Scans `dir` and writes every volume (or, with rules, every selected
/// modality) as NIfTI into `out`. A series that fails does not stop the
/// others: it is listed in [`ConvertSummary::failed`]. Errors only when
/// the folder cannot be read, the rules select nothing coherent, or `out`
/// cannot be created.
pub fn convert_dir(
    dir: &Path,
    out: &Path,
    options: &ConvertOptions,
) -> Result<ConvertSummary, DicomError> {
    let report = scan::scan_dir(dir)?;
    let ext = if options.uncompressed {
        "nii"
    } else {
        "nii.gz"
    };
    let jobs: Vec<(String, &Series)> = match &options.rules {
        Some(rules) => rules.select(&report.series)?,
        None => report.volumes().map(|s| (output_stem(s), s)).collect(),
    };
    std::fs::create_dir_all(out).map_err(|e| DicomError::Write {
        path: out.to_path_buf(),
        message: format!("creating the folder: {e}"),
    })?;
    let mut summary = ConvertSummary::default();
    let mut used = std::collections::HashSet::new();
    for (stem, series) in jobs {
        let mut name = format!("{stem}.{ext}");
        let mut i = 2;
        while !used.insert(name.clone()) {
            name = format!("{stem}_{i}.{ext}");
            i += 1;
        }
        let path = out.join(name);
        let result = load_data(series).and_then(|(grid, data)| {
            clisc_nifti::write_f32(&path, &grid, &data, None).map_err(|e| DicomError::Write {
                path: path.clone(),
                message: e.to_string(),
            })?;
            Ok(grid)
        });
        match result {
            Ok(grid) => {
                let warnings = series
                    .geometry
                    .as_ref()
                    .map(|g| g.warnings.iter().map(|w| w.to_string()).collect())
                    .unwrap_or_default();
                tracing::info!("{} -> {}", series.label(), path.display());
                summary.converted.push(Converted {
                    series: series.label(),
                    path,
                    grid,
                    warnings,
                });
            }
            Err(e) => {
                tracing::error!("{}: {e}", series.label());
                summary.failed.push((series.label(), e.to_string()));
            }
        }
    }
    summary.report = report;
    Ok(summary)
}
