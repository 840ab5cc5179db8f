//! Images, volumes and masks as they cross the plugin boundary.

use crate::error::PluginError;
use abi_stable::std_types::{RString, RVec};
use abi_stable::StableAbi;

/// The voxel grid of a volume: its size, voxel spacing (mm) and the 4x4
/// voxel-to-world (RAS+, NIfTI convention) affine. Carried through every
/// stage so outputs overlay inputs exactly.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    /// Number of voxels along x, y, z (x fastest in memory).
    pub shape: [u32; 3],
    /// Voxel size in millimetres along x, y, z.
    pub spacing: [f64; 3],
    /// Row-major 4x4 affine mapping (i, j, k, 1) to world (x, y, z, 1).
    pub affine: [[f64; 4]; 4],
}

impl Grid {
    /// A grid with the given shape and spacing whose affine is the diagonal
    /// scaling by `spacing` (origin at voxel 0).
    pub fn new(shape: [u32; 3], spacing: [f64; 3]) -> Self {
        let mut affine = [[0.0; 4]; 4];
        for (d, s) in spacing.iter().enumerate() {
            affine[d][d] = *s;
        }
        affine[3][3] = 1.0;
        Self {
            shape,
            spacing,
            affine,
        }
    }
    /// Shape as `usize`.
    pub fn dims(&self) -> [usize; 3] {
        self.shape.map(|d| d as usize)
    }
    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.dims().iter().product()
    }
    /// True when the grid has no voxels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of voxels in one axial slice.
    pub fn slice_len(&self) -> usize {
        self.shape[0] as usize * self.shape[1] as usize
    }
    /// Linear index of voxel `(x, y, z)`.
    #[inline]
    pub fn index(&self, x: usize, y: usize, z: usize) -> usize {
        x + self.shape[0] as usize * (y + self.shape[1] as usize * z)
    }
    /// Checks that `len` values fill this grid exactly.
    pub fn check_len(&self, len: usize, what: &str) -> Result<(), PluginError> {
        if len == self.len() {
            Ok(())
        } else {
            Err(PluginError::input(format!(
                "{what}: {len} values do not fill a {}x{}x{} grid ({} expected)",
                self.shape[0],
                self.shape[1],
                self.shape[2],
                self.len()
            )))
        }
    }
}

/// One named channel of a [`Volume`] (e.g. `"flair"`), x-fastest.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Channel {
    /// Channel name, lower case (`flair`, `t1`, `t1ce`, `t2`, `cam`, ...).
    pub name: RString,
    /// Voxel values, `grid.len()` of them.
    pub data: RVec<f32>,
}

/// A multi-channel scalar volume on one grid.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Volume {
    /// Geometry shared by all channels.
    pub grid: Grid,
    /// The channels; names are unique.
    pub channels: RVec<Channel>,
}

impl Volume {
    /// A single-channel volume.
    pub fn single(grid: Grid, name: &str, data: Vec<f32>) -> Self {
        Self {
            grid,
            channels: RVec::from(vec![Channel {
                name: name.into(),
                data: data.into(),
            }]),
        }
    }
    /// The channel called `name`, if present.
    pub fn channel(&self, name: &str) -> Option<&[f32]> {
        self.channels
            .iter()
            .find(|c| c.name.as_str() == name)
            .map(|c| c.data.as_slice())
    }
    /// The channel called `name`, or an input error listing what exists.
    pub fn require_channel(&self, name: &str) -> Result<&[f32], PluginError> {
        self.channel(name).ok_or_else(|| {
            let have: Vec<&str> = self.channels.iter().map(|c| c.name.as_str()).collect();
            PluginError::input(format!(
                "volume has no channel `{name}` (channels: {have:?})"
            ))
        })
    }
    /// Axial slice `z` of channel `name` as an image.
    pub fn axial_slice(&self, name: &str, z: usize) -> Result<Image2d, PluginError> {
        let data = self.require_channel(name)?;
        let n = self.grid.slice_len();
        if z >= self.grid.shape[2] as usize {
            return Err(PluginError::input(format!(
                "slice {z} out of range (volume has {} slices)",
                self.grid.shape[2]
            )));
        }
        Ok(Image2d {
            width: self.grid.shape[0],
            height: self.grid.shape[1],
            channels: 1,
            data: data[z * n..(z + 1) * n].to_vec().into(),
        })
    }
}

/// A binary or small-label volume (0 = background) on a grid.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct LabelVolume {
    /// Geometry of the labels.
    pub grid: Grid,
    /// One label per voxel, x-fastest.
    pub data: RVec<u8>,
}

impl LabelVolume {
    /// An all-background volume on `grid`.
    pub fn zeros(grid: Grid) -> Self {
        Self {
            grid,
            data: RVec::from(vec![0u8; grid.len()]),
        }
    }
    /// Axial slice `z` as a mask.
    pub fn axial_slice(&self, z: usize) -> Mask2d {
        let n = self.grid.slice_len();
        Mask2d {
            width: self.grid.shape[0],
            height: self.grid.shape[1],
            data: self.data[z * n..(z + 1) * n].to_vec().into(),
        }
    }
    /// Writes `mask` into axial slice `z`.
    pub fn set_axial_slice(&mut self, z: usize, mask: &Mask2d) -> Result<(), PluginError> {
        let n = self.grid.slice_len();
        if mask.width != self.grid.shape[0] || mask.height != self.grid.shape[1] {
            return Err(PluginError::input(format!(
                "mask of {}x{} does not fit slices of {}x{}",
                mask.width, mask.height, self.grid.shape[0], self.grid.shape[1]
            )));
        }
        self.data[z * n..(z + 1) * n].copy_from_slice(&mask.data);
        Ok(())
    }
    /// Number of non-zero voxels.
    pub fn count_nonzero(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }
}

/// The foreground probability (in `[0, 1]`) of every voxel on a grid: a
/// volumetric segmenter's prediction before it is cut at one half.
///
/// A host that predicts on a resampled working grid interpolates these,
/// not the cut labels, back to the input grid (as nnU-Net does): a
/// boundary that falls between two working voxels then lands where the
/// probability crosses one half instead of on the coarse voxels' edge.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ProbabilityVolume {
    /// Geometry of the probabilities.
    pub grid: Grid,
    /// One probability per voxel, x-fastest.
    pub data: RVec<f32>,
}

impl ProbabilityVolume {
    /// Probability 1 on the labelled (non-zero) voxels, 0 elsewhere: what a
    /// segmenter that only has labels predicts.
    pub fn from_labels(labels: &LabelVolume) -> Self {
        Self {
            grid: labels.grid,
            data: labels
                .data
                .iter()
                .map(|&v| f32::from(u8::from(v != 0)))
                .collect(),
        }
    }
    /// The binary labels: 1 where the probability is above one half.
    pub fn labels(&self) -> LabelVolume {
        LabelVolume {
            grid: self.grid,
            data: self.data.iter().map(|&p| u8::from(p > 0.5)).collect(),
        }
    }
}

/// A 2D image, row-major (`x` = column fastest), `channels` values per pixel
/// interleaved.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Image2d {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Values per pixel (1 for grey slices, 3 for RGB).
    pub channels: u32,
    /// `width * height * channels` values.
    pub data: RVec<f32>,
}

impl Image2d {
    /// Value at column `x`, row `y`, channel `c`.
    #[inline]
    pub fn at(&self, x: usize, y: usize, c: usize) -> f32 {
        self.data[(x + self.width as usize * y) * self.channels as usize + c]
    }
}

/// A binary 2D mask, row-major, 0 or 1.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Mask2d {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// `width * height` values, 0 or 1.
    pub data: RVec<u8>,
}

impl Mask2d {
    /// An empty mask of the given size.
    pub fn zeros(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            data: RVec::from(vec![0u8; width as usize * height as usize]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axial_slices_are_contiguous_x_fastest() {
        let grid = Grid::new([3, 2, 2], [1.0, 1.0, 2.0]);
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let vol = Volume::single(grid, "flair", data);
        let s = vol.axial_slice("flair", 1).unwrap();
        assert_eq!((s.width, s.height), (3, 2));
        assert_eq!(s.at(2, 1, 0), 11.0);
        assert_eq!(grid.index(2, 1, 1), 11);
        assert!(vol
            .axial_slice("t1", 0)
            .unwrap_err()
            .message
            .contains("flair"));
        assert!(vol.axial_slice("flair", 2).is_err());
    }

    #[test]
    fn label_slices_round_trip() {
        let grid = Grid::new([2, 2, 3], [1.0; 3]);
        let mut labels = LabelVolume::zeros(grid);
        let m = Mask2d {
            width: 2,
            height: 2,
            data: vec![1, 0, 0, 1].into(),
        };
        labels.set_axial_slice(2, &m).unwrap();
        assert_eq!(labels.axial_slice(2), m);
        assert_eq!(labels.count_nonzero(), 2);
        assert!(labels.set_axial_slice(0, &Mask2d::zeros(3, 2)).is_err());
    }
}
