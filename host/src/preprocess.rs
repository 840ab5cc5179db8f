//! CLISC preprocessing, reversible: brain mask from the raw FLAIR (nonzero
//! voxels), crop every channel to the mask's bounding box, clip each
//! channel at its 99.9th percentile, z-score.
//!
//! Percentile, mean and standard deviation are computed over the whole
//! cropped volume (background voxels inside the box included), which is
//! what the CLISC reference code does ([`Normalisation::CroppedVolume`],
//! the default); [`Normalisation::Brain`] uses the brain voxels only.
//! Clipping is one-sided (values above the percentile).
//!
//! The cropped grid's affine is the original affine translated by the crop
//! offset, so anything written on the cropped grid overlays the original
//! image exactly; [`Crop::uncrop`] puts labels back on the original grid.

use clisc_imaging::intensity::{mean_std, percentile};
use clisc_sdk::stage::CaseInput;
use clisc_sdk::{Channel, Grid, LabelVolume, PluginError, Volume};
use serde::{Deserialize, Serialize};

/// Which voxels the percentile and z-score statistics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Normalisation {
    /// All voxels of the cropped box (CLISC reference code).
    #[default]
    CroppedVolume,
    /// Brain voxels only (nonzero raw FLAIR).
    Brain,
}

/// Preprocessing settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessOptions {
    /// Upper clipping percentile (0..=100); 99.9 in CLISC.
    pub clip_percentile: f64,
    /// Statistics region.
    pub normalisation: Normalisation,
}

impl Default for PreprocessOptions {
    fn default() -> Self {
        Self {
            clip_percentile: 99.9,
            normalisation: Normalisation::CroppedVolume,
        }
    }
}

/// Where a cropped grid sits in the original one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    /// The original grid.
    pub original: Grid,
    /// First voxel of the box in the original grid (x, y, z).
    pub offset: [usize; 3],
    /// Box size.
    pub size: [usize; 3],
}

impl Crop {
    /// The whole grid (no cropping).
    pub fn identity(grid: Grid) -> Crop {
        Crop {
            original: grid,
            offset: [0; 3],
            size: grid.dims(),
        }
    }

    /// The cropped grid: box shape, same spacing, affine translated by the
    /// offset (`A · [ox, oy, oz, 1]` becomes the new origin).
    pub fn cropped_grid(&self) -> Grid {
        let a = self.original.affine;
        let mut affine = a;
        for r in 0..3 {
            affine[r][3] = a[r][0] * self.offset[0] as f64
                + a[r][1] * self.offset[1] as f64
                + a[r][2] * self.offset[2] as f64
                + a[r][3];
        }
        Grid {
            shape: self.size.map(|s| s as u32),
            spacing: self.original.spacing,
            affine,
        }
    }

    fn check(&self, grid: &Grid, want: &Grid, what: &str) -> Result<(), PluginError> {
        if grid.shape != want.shape {
            return Err(PluginError::input(format!(
                "{what}: grid {:?} is not the expected {:?}",
                grid.shape, want.shape
            )));
        }
        Ok(())
    }

    /// Crops values on the original grid to the box.
    pub fn crop_values<T: Copy>(&self, data: &[T]) -> Vec<T> {
        let [nx, ny, _] = self.original.dims();
        let [ox, oy, oz] = self.offset;
        let [sx, sy, sz] = self.size;
        let mut out = Vec::with_capacity(sx * sy * sz);
        for z in oz..oz + sz {
            for y in oy..oy + sy {
                let start = ox + nx * (y + ny * z);
                out.extend_from_slice(&data[start..start + sx]);
            }
        }
        out
    }

    /// Crops a label volume on the original grid (e.g. ground truth).
    pub fn crop_labels(&self, labels: &LabelVolume) -> Result<LabelVolume, PluginError> {
        self.check(&labels.grid, &self.original, "crop_labels")?;
        Ok(LabelVolume {
            grid: self.cropped_grid(),
            data: self.crop_values(&labels.data).into(),
        })
    }

    /// Places labels on the cropped grid back into the original grid
    /// (zeros outside the box), with the original affine.
    pub fn uncrop(&self, labels: &LabelVolume) -> Result<LabelVolume, PluginError> {
        self.check(&labels.grid, &self.cropped_grid(), "uncrop")?;
        let mut out = LabelVolume::zeros(self.original);
        let [nx, ny, _] = self.original.dims();
        let [ox, oy, oz] = self.offset;
        let [sx, sy, sz] = self.size;
        for z in 0..sz {
            for y in 0..sy {
                let src = sx * (y + sy * z);
                let dst = ox + nx * (y + oy + ny * (z + oz));
                out.data[dst..dst + sx].copy_from_slice(&labels.data[src..src + sx]);
            }
        }
        Ok(out)
    }
}

/// A preprocessed case: the stage input and the crop that reverses it.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// What the stages receive (cropped grid).
    pub input: CaseInput,
    /// How to go back to the original grid.
    pub crop: Crop,
}

/// Preprocesses one case. `raw` must hold a `flair` channel (the brain
/// mask comes from it); every channel is cropped, clipped and z-scored
/// independently, in the order given (FLAIR is moved first).
pub fn preprocess(
    id: &str,
    raw: &Volume,
    options: &PreprocessOptions,
) -> Result<Preprocessed, PluginError> {
    let flair = raw.require_channel("flair")?;
    raw.grid.check_len(flair.len(), "flair")?;
    if !(0.0..=100.0).contains(&options.clip_percentile) {
        return Err(PluginError::config(format!(
            "clip_percentile {} is not in 0..=100",
            options.clip_percentile
        )));
    }
    let mask: Vec<u8> = flair
        .iter()
        .map(|&v| u8::from(v != 0.0 && !v.is_nan()))
        .collect();
    let (lo, hi) = clisc_imaging::overlap::bbox_3d(&mask, raw.grid.dims()).ok_or_else(|| {
        PluginError::input(format!(
            "case {id}: FLAIR has no nonzero voxel (empty brain mask)"
        ))
    })?;
    let crop = Crop {
        original: raw.grid,
        offset: lo,
        size: [0, 1, 2].map(|d| hi[d] - lo[d] + 1),
    };
    let grid = crop.cropped_grid();
    let brain = crop.crop_values(&mask);
    let mut order: Vec<&Channel> = raw
        .channels
        .iter()
        .filter(|c| c.name.as_str() == "flair")
        .collect();
    order.extend(raw.channels.iter().filter(|c| c.name.as_str() != "flair"));
    let mut channels = Vec::new();
    for c in order {
        raw.grid.check_len(c.data.len(), c.name.as_str())?;
        let mut values: Vec<f32> = crop
            .crop_values(&c.data)
            .into_iter()
            .map(|v| if v.is_nan() { 0.0 } else { v })
            .collect();
        normalise(&mut values, &brain, options);
        channels.push(Channel {
            name: c.name.clone(),
            data: values.into(),
        });
    }
    let input = CaseInput {
        id: id.into(),
        image: Volume {
            grid,
            channels: channels.into(),
        },
        brain_mask: LabelVolume {
            grid,
            data: brain.into(),
        },
    };
    Ok(Preprocessed { input, crop })
}

/// Clips at the percentile and z-scores `values` in place.
fn normalise(values: &mut [f32], brain: &[u8], options: &PreprocessOptions) {
    let mut stats: Vec<f32> = match options.normalisation {
        Normalisation::CroppedVolume => values.to_vec(),
        Normalisation::Brain => values
            .iter()
            .zip(brain)
            .filter(|(_, &b)| b != 0)
            .map(|(&v, _)| v)
            .collect(),
    };
    if stats.is_empty() {
        return;
    }
    let cap = percentile(&mut stats, options.clip_percentile);
    for v in values.iter_mut() {
        *v = v.min(cap);
    }
    let region: Vec<f32> = match options.normalisation {
        Normalisation::CroppedVolume => values.to_vec(),
        Normalisation::Brain => values
            .iter()
            .zip(brain)
            .filter(|(_, &b)| b != 0)
            .map(|(&v, _)| v)
            .collect(),
    };
    let (mean, std) = mean_std(&region);
    let std = if std > 0.0 { std } else { 1.0 };
    for v in values.iter_mut() {
        *v = ((*v as f64 - mean) / std) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> Volume {
        let mut g = Grid::new([6, 5, 4], [1.0, 2.0, 3.0]);
        g.affine[0][3] = -10.0;
        g.affine[1][3] = 5.0;
        let mut data = vec![0.0f32; g.len()];
        for z in 1..3 {
            for y in 1..4 {
                for x in 2..5 {
                    data[g.index(x, y, z)] = (x + y * 10 + z * 100) as f32;
                }
            }
        }
        data[g.index(4, 3, 2)] = 10_000.0; // outlier, clipped
        let t1: Vec<f32> = data.iter().map(|v| v * 2.0).collect();
        let mut v = Volume::single(g, "t1", t1);
        v.channels.push(Channel {
            name: "flair".into(),
            data: data.into(),
        });
        v
    }

    #[test]
    fn crops_clips_zscores_and_uncrops() {
        let raw = raw();
        let p = preprocess("c", &raw, &PreprocessOptions::default()).unwrap();
        assert_eq!(p.crop.offset, [2, 1, 1]);
        assert_eq!(p.crop.size, [3, 3, 2]);
        let g = p.input.image.grid;
        // Affine translated: origin = A * (2, 1, 1).
        assert_eq!(
            [g.affine[0][3], g.affine[1][3], g.affine[2][3]],
            [-8.0, 7.0, 3.0]
        );
        assert_eq!(p.input.image.channels[0].name.as_str(), "flair");
        let f = p.input.image.channel("flair").unwrap();
        let (m, s) = mean_std(f);
        assert!(m.abs() < 1e-6 && (s - 1.0).abs() < 1e-5, "{m} {s}");
        // The outlier was clipped to the 99.9th percentile: it is no longer far out.
        let max = f.iter().cloned().fold(f32::MIN, f32::max);
        assert!(max < 4.5, "{max}");
        assert_eq!(p.input.brain_mask.count_nonzero(), 18);

        let mut lab = LabelVolume::zeros(g);
        lab.data[g.index(0, 0, 0)] = 1;
        lab.data[g.index(2, 2, 1)] = 4;
        let back = p.crop.uncrop(&lab).unwrap();
        assert_eq!(back.grid, raw.grid);
        assert_eq!(back.data[raw.grid.index(2, 1, 1)], 1);
        assert_eq!(back.data[raw.grid.index(4, 3, 2)], 4);
        assert_eq!(back.count_nonzero(), 2);
        assert_eq!(p.crop.crop_labels(&back).unwrap(), lab);
        assert!(p.crop.uncrop(&back).is_err());
    }

    #[test]
    fn empty_flair_is_an_error_naming_the_case() {
        let g = Grid::new([2, 2, 2], [1.0; 3]);
        let v = Volume::single(g, "flair", vec![0.0; 8]);
        assert!(preprocess("BraTS_x", &v, &PreprocessOptions::default())
            .unwrap_err()
            .message
            .contains("BraTS_x"));
        let v = Volume::single(g, "t1", vec![1.0; 8]);
        assert!(preprocess("x", &v, &PreprocessOptions::default()).is_err());
    }
}
