//! DICOM input and output: folders of DICOM files become volumes on the
//! SDK's [`Grid`](clisc_sdk::Grid) (the same voxels and affine as Debian's
//! `dcm2niix` writes), and label volumes become DICOM SEG objects.
//!
//! One concept per module:
//! * [`scan`]: walk a folder tree, read the headers, group slices into
//!   series and volumes with dcm2niix-like consistency checks.
//! * [`geometry`]: sort slices along the normal, spacing from positions,
//!   warnings (non-uniform spacing, missing slices, gantry tilt), the
//!   LPS -> RAS voxel-to-world affine.
//! * [`pixels`]: decode pixel data (native and compressed transfer syntaxes)
//!   into stored values.
//! * [`convert`]: series to [`Volume`](clisc_sdk::Volume) and NIfTI files.
//! * [`select`]: TOML rules mapping series to modalities (flair, t1, ...).
//! * [`seg`]: binary DICOM SEG writer referencing the source series.
//! * [`guard`]: length checks that keep a malformed file from allocating
//!   more than it holds.
//!
//! The network side (a PACS node: C-STORE, C-FIND, C-MOVE, TLS, the
//! outbox) is `clisc-dicom-node`.
//!
//! Voxel layout (the one `dcm2niix` writes, so that both tools agree voxel
//! for voxel): `x` runs along the DICOM columns (the row direction cosine),
//! `y` runs along the DICOM rows *bottom-up* (the last DICOM row is `y = 0`),
//! `z` runs over the slices sorted by position along the slice normal
//! (row cosine x column cosine), ascending.
#![warn(unreachable_pub)]

pub mod convert;
pub mod geometry;
pub mod guard;
pub mod pixels;
pub mod rle;
pub mod scan;
pub mod seg;
pub mod select;

pub use convert::{convert_dir, load_volume, ConvertOptions, ConvertSummary, Converted};
pub use geometry::{GeometryWarning, SeriesGeometry};
pub use scan::{scan_dir, ScanReport, Series, SkippedFile, SliceHeader};
pub use seg::{write_seg, SegOptions, SegSegment, SegSummary};
pub use select::{Ambiguity, ModalityRule, ModalityRules};

use std::path::PathBuf;

/// Turns a value taken from a DICOM attribute (a UID, a description) into
/// one safe path component: ASCII letters, digits, `.`, `-` and `_` are
/// kept, everything else (path separators included) becomes `_`, a leading
/// `.` becomes `_` (so `.` and `..` cannot occur), an empty value becomes
/// `_`, and the result is at most 128 characters. Files named from received
/// or scanned DICOM data therefore always stay inside the folder they are
/// joined to.
pub fn safe_file_name(value: &str) -> String {
    let mut out: String = value
        .trim_end_matches(['\0', ' '])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// A DICOM read, conversion, selection or write failure, naming the file or
/// series concerned.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    /// A file could not be read or parsed.
    #[error("cannot read DICOM file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Pixel data could not be decoded (e.g. a transfer syntax without codec).
    #[error("cannot decode the pixel data of {path}: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A series cannot be stacked into a volume.
    #[error("series {series}: {message}")]
    Series {
        /// The series, as `#number 'description' (uid)`.
        series: String,
        /// What is wrong with it.
        message: String,
    },
    /// The modality rules are invalid, or a required modality is missing.
    #[error("{0}")]
    Select(String),
    /// A file could not be written.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The input (e.g. a label volume for SEG) does not fit the series.
    #[error("{0}")]
    Input(String),
}

impl From<DicomError> for clisc_sdk::PluginError {
    fn from(e: DicomError) -> Self {
        match e {
            DicomError::Select(_) | DicomError::Input(_) | DicomError::Series { .. } => {
                clisc_sdk::PluginError::input(e.to_string())
            }
            _ => clisc_sdk::PluginError::io(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_file_name;
    use std::path::{Component, Path};

    #[test]
    fn names_from_dicom_values_stay_in_their_folder() {
        assert_eq!(safe_file_name("1.2.840.113619.2.55"), "1.2.840.113619.2.55");
        for hostile in [
            "..",
            ".",
            "",
            "../../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "..\\..\\x",
            "C:\\Windows",
            "\0",
            "x\0/..",
        ] {
            let name = safe_file_name(hostile);
            let joined = Path::new("/out").join(&name);
            let components: Vec<Component> = joined.components().collect();
            // "/", "out", and exactly one plain name.
            assert_eq!(components.len(), 3, "{hostile:?} -> {name:?}");
            assert!(
                matches!(components[2], Component::Normal(_)),
                "{hostile:?} -> {name:?}"
            );
            assert!(!name.contains('/') && !name.contains('\\'), "{name}");
        }
        assert_eq!(safe_file_name(&"9".repeat(300)).len(), 128);
    }
}
