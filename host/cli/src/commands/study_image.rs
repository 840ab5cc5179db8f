//! The image `clisc sam` and `clisc clip` hand to a stage: a NIfTI volume,
//! or a 2D image read as a one-slice volume (grey: the luma of a colour
//! image), prepared as a pipeline prepares a case before its stages see
//! it (crop to the non-zero box, clip, z-score; no resampling).

use anyhow::{bail, Context};
use clisc_dataset::preprocess::{preprocess, Crop, PreprocessOptions, Preprocessed};
use clisc_nifti::NiftiInfo;
use clisc_sdk::{Grid, Volume};
use std::path::Path;

/// The channel stages read (`CaseInput` always has `flair`).
const CHANNEL: &str = "flair";

/// An input image and what a pipeline would give a stage for it.
pub(crate) struct StudyImage {
    /// The image as read (one channel, `flair`).
    pub volume: Volume,
    /// The NIfTI header, for a NIfTI input.
    pub nifti: Option<NiftiInfo>,
    /// The stage input: cropped to the non-zero box, clipped, z-scored.
    pub prepared: Preprocessed,
}

impl StudyImage {
    /// Reads `path` (`.nii`, `.nii.gz`, or an image format such as PNG).
    pub(crate) fn read(path: &Path) -> anyhow::Result<Self> {
        let (volume, nifti) = if clisc_nifti::is_nifti_path(path) {
            let (volume, info) = clisc_nifti::read_volume(path, CHANNEL)
                .with_context(|| format!("reading {}", path.display()))?;
            (volume, Some(info))
        } else {
            let img =
                image::open(path).with_context(|| format!("reading image {}", path.display()))?;
            let grey = img.to_luma8();
            let (w, h) = grey.dimensions();
            let data = grey.into_raw().into_iter().map(f32::from).collect();
            (
                Volume::single(Grid::new([w, h, 1], [1.0; 3]), CHANNEL, data),
                None,
            )
        };
        let prepared = preprocess("image", &volume, &PreprocessOptions::default())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self {
            volume,
            nifti,
            prepared,
        })
    }

    /// Where the stage input sits in the image.
    pub(crate) fn crop(&self) -> &Crop {
        &self.prepared.geometry.crop
    }

    /// The axial slice to work on (`None`: the middle one), checked against
    /// the image, as an index of the image and of the stage input.
    pub(crate) fn slice(
        &self,
        path: &Path,
        slice: Option<usize>,
    ) -> anyhow::Result<(usize, usize)> {
        let nz = self.volume.grid.dims()[2];
        if slice.is_some() && self.nifti.is_none() {
            bail!(
                "--slice only applies to NIfTI volumes; {} is a 2D image",
                path.display()
            );
        }
        let z = slice.unwrap_or(nz / 2);
        if z >= nz {
            bail!(
                "--slice {z} is out of range: {} has {nz} axial slices",
                path.display()
            );
        }
        let (oz, sz) = (self.crop().offset[2], self.crop().size[2]);
        if !(oz..oz + sz).contains(&z) {
            bail!(
                "slice {z} of {} is empty (only slices {oz}..{} hold non-zero voxels)",
                path.display(),
                oz + sz - 1
            );
        }
        Ok((z, z - oz))
    }
}
