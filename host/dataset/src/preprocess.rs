//! CLISC preprocessing, reversible: brain mask from the raw FLAIR (nonzero
//! voxels), crop every channel to the mask's bounding box, optionally
//! resample to a target spacing (nnU-Net style), optionally divide by a
//! fitted bias field ([`BiasCorrection`]), clip each channel at its 99.9th
//! percentile, z-score.
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
//! With a target spacing the stages work on a resampled "working" grid
//! that covers the same box (half-voxel-centred, so its affine is exact
//! for any orientation); [`Geometry::restore`] takes labels from it back
//! to the original grid (label shares interpolated linearly).

use crate::BiasCorrection;
use clisc_imaging::intensity::{mean_std, percentile};
use clisc_imaging::resample::{resize_labels, resize_trilinear};
use clisc_sdk::stage::CaseInput;
use clisc_sdk::{Channel, Grid, LabelVolume, PluginError, ProbabilityVolume, Volume};
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
    /// Voxel size (mm, x y z) the stages work at; `None` keeps each case's
    /// own spacing (CLISC: BraTS is 1 mm and is not resampled).
    pub spacing: Option<[f64; 3]>,
    /// Bias-field correction on the working grid, before clipping.
    pub bias_correction: BiasCorrection,
}

impl Default for PreprocessOptions {
    fn default() -> Self {
        Self {
            clip_percentile: 99.9,
            normalisation: Normalisation::CroppedVolume,
            spacing: None,
            bias_correction: BiasCorrection::None,
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
    pub(crate) fn crop_values<T: Copy>(&self, data: &[T]) -> Vec<T> {
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

/// Where the stages' working grid sits in the original one: the crop
/// box, resampled to the target spacing or not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// The brain's box in the original grid.
    pub crop: Crop,
    /// The grid the stages see: the box at the working spacing (equal to
    /// `crop.cropped_grid()` when nothing is resampled).
    pub working: Grid,
}

impl Geometry {
    /// No crop, no resampling.
    pub fn identity(grid: Grid) -> Geometry {
        Geometry {
            crop: Crop::identity(grid),
            working: grid,
        }
    }

    /// The geometry of `crop` resampled to `spacing` (`None`: not
    /// resampled). The working shape is the box's extent over the target
    /// spacing, rounded (at least 1 voxel); its spacing is then adjusted
    /// to cover exactly the box, so both grids share their outer faces.
    pub fn new(crop: Crop, spacing: Option<[f64; 3]>) -> Geometry {
        let cropped = crop.cropped_grid();
        let Some(target) = spacing else {
            return Geometry {
                crop,
                working: cropped,
            };
        };
        let shape: [u32; 3] = [0, 1, 2].map(|d| {
            let extent = crop.size[d] as f64 * cropped.spacing[d];
            ((extent / target[d]).round() as u32).max(1)
        });
        if shape == cropped.shape {
            return Geometry {
                crop,
                working: cropped,
            };
        }
        // Working voxel i sits at cropped index (i + 0.5) r - 0.5, with
        // r the ratio of the two voxel sizes along that axis.
        let ratio = [0, 1, 2].map(|d| crop.size[d] as f64 / shape[d] as f64);
        let a = cropped.affine;
        let mut affine = a;
        for (r, row) in affine.iter_mut().enumerate().take(3) {
            for (d, ratio) in ratio.iter().enumerate() {
                row[d] = a[r][d] * ratio;
            }
            row[3] = a[r][3]
                + (0..3)
                    .map(|d| a[r][d] * (0.5 * ratio[d] - 0.5))
                    .sum::<f64>();
        }
        Geometry {
            crop,
            working: Grid {
                shape,
                spacing: [0, 1, 2].map(|d| cropped.spacing[d] * ratio[d]),
                affine,
            },
        }
    }

    /// True when the working grid is a resampling of the crop box.
    pub(crate) fn is_resampled(&self) -> bool {
        self.working.shape != self.crop.cropped_grid().shape
    }

    /// Intensities of the crop box on the working grid (trilinear).
    fn to_working_values(self, cropped: Vec<f32>) -> Vec<f32> {
        if !self.is_resampled() {
            return cropped;
        }
        resize_trilinear(&cropped, self.crop.size, self.working.dims())
    }

    /// A label map of the crop box on the working grid.
    fn to_working_label_values(self, cropped: Vec<u8>) -> Vec<u8> {
        if !self.is_resampled() {
            return cropped;
        }
        resize_labels(&cropped, self.crop.size, self.working.dims())
    }

    /// Labels on the original grid (e.g. ground truth) cropped and
    /// resampled to the working grid.
    pub fn to_working(&self, labels: &LabelVolume) -> Result<LabelVolume, PluginError> {
        let cropped = self.crop.crop_labels(labels)?;
        Ok(LabelVolume {
            grid: self.working,
            data: self.to_working_label_values(cropped.data.to_vec()).into(),
        })
    }

    /// Labels on the working grid back on the crop box at the original
    /// spacing.
    fn labels_on_crop_box(&self, labels: &LabelVolume) -> Result<LabelVolume, PluginError> {
        if labels.grid.shape != self.working.shape {
            return Err(PluginError::input(format!(
                "labels: grid {:?} is not the working grid {:?}",
                labels.grid.shape, self.working.shape
            )));
        }
        if !self.is_resampled() {
            return Ok(labels.clone());
        }
        Ok(LabelVolume {
            grid: self.crop.cropped_grid(),
            data: resize_labels(&labels.data, self.working.dims(), self.crop.size).into(),
        })
    }

    /// Labels on the working grid back on the whole original grid.
    pub fn restore(&self, labels: &LabelVolume) -> Result<LabelVolume, PluginError> {
        self.crop.uncrop(&self.labels_on_crop_box(labels)?)
    }

    /// A prediction's foreground probabilities on the working grid as
    /// binary labels on the crop box at the original spacing: the
    /// probabilities are interpolated trilinearly and cut at one half (as
    /// nnU-Net does), so the boundary lands where the probability crosses
    /// one half rather than on the working voxels' edges. For probabilities
    /// of 0 and 1 this is what [`Geometry::restore`] does with labels, on the crop box.
    pub fn probability_to_cropped(
        &self,
        probability: &ProbabilityVolume,
    ) -> Result<LabelVolume, PluginError> {
        if probability.grid.shape != self.working.shape {
            return Err(PluginError::input(format!(
                "probabilities: grid {:?} is not the working grid {:?}",
                probability.grid.shape, self.working.shape
            )));
        }
        if probability.data.len() != self.working.len() {
            return Err(PluginError::input(format!(
                "probabilities: {} values for a grid of {:?} ({} voxels)",
                probability.data.len(),
                self.working.shape,
                self.working.len()
            )));
        }
        if let Some((i, p)) = probability
            .data
            .iter()
            .enumerate()
            .find(|(_, p)| !(0.0..=1.0).contains(*p))
        {
            return Err(PluginError::input(format!(
                "probabilities: voxel {i} holds {p}, expected a value in [0, 1]"
            )));
        }
        if !self.is_resampled() {
            return Ok(probability.labels());
        }
        let resized = resize_trilinear(&probability.data, self.working.dims(), self.crop.size);
        Ok(LabelVolume {
            grid: self.crop.cropped_grid(),
            data: resized.iter().map(|&p| u8::from(p > 0.5)).collect(),
        })
    }

    /// Labels on the crop box (such as [`Geometry::probability_to_cropped`]
    /// gives) with their border re-decided voxel by voxel from `flair`, the
    /// raw FLAIR of the whole original grid, within `band_mm` millimetres
    /// ([`clisc_imaging::refine`]; the brain is the FLAIR's nonzero voxels,
    /// as for the crop). Labels the refinement cannot judge (too thin, not
    /// brighter than their surroundings) come back as they are, with an
    /// info line naming case `id` and the reason.
    pub fn refine_on_crop_box(
        &self,
        id: &str,
        labels: LabelVolume,
        flair: &[f32],
        band_mm: f64,
    ) -> Result<LabelVolume, PluginError> {
        let grid = self.crop.cropped_grid();
        if labels.grid.shape != grid.shape {
            return Err(PluginError::input(format!(
                "labels: grid {:?} is not the crop box {:?}",
                labels.grid.shape, grid.shape
            )));
        }
        self.crop.original.check_len(flair.len(), "flair")?;
        if !(band_mm.is_finite() && band_mm > 0.0) {
            return Err(PluginError::config(format!(
                "refine_boundary_mm = {band_mm}: expected a positive number of millimetres"
            )));
        }
        let flair: Vec<f32> = self
            .crop
            .crop_values(flair)
            .into_iter()
            .map(|v| if v.is_nan() { 0.0 } else { v })
            .collect();
        let brain: Vec<u8> = flair.iter().map(|&v| u8::from(v != 0.0)).collect();
        let refined = clisc_imaging::refine::refine_boundary(
            &labels.data,
            &flair,
            &brain,
            grid.dims(),
            grid.spacing,
            band_mm,
        );
        match refined {
            Ok(r) => Ok(LabelVolume {
                grid: labels.grid,
                data: r.mask.into(),
            }),
            Err(reason) => {
                tracing::info!("case {id}: border not refined: {reason}");
                Ok(labels)
            }
        }
    }

    /// A prediction's probabilities on the working grid as binary labels
    /// on the whole original grid (see [`Geometry::probability_to_cropped`];
    /// runs and the inference engine refine the crop box in between).
    #[cfg(test)]
    fn restore_probability(
        &self,
        probability: &ProbabilityVolume,
    ) -> Result<LabelVolume, PluginError> {
        self.crop.uncrop(&self.probability_to_cropped(probability)?)
    }
}

/// A preprocessed case: the stage input and the geometry that reverses it.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// What the stages receive (working grid).
    pub input: CaseInput,
    /// How to go back to the original grid.
    pub geometry: Geometry,
}

/// Preprocesses one case. `raw` must hold a `flair` channel (the brain
/// mask comes from it); every channel is cropped, resampled to the
/// working spacing (when one is set), clipped and z-scored independently,
/// in the order given (FLAIR is moved first). The brain mask is resampled
/// as a label map.
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
    if let Some(s) = options.spacing {
        if !s.iter().all(|v| v.is_finite() && *v > 0.0) {
            return Err(PluginError::config(format!(
                "spacing {s:?} must be three positive millimetre values"
            )));
        }
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
    let geometry = Geometry::new(crop, options.spacing);
    let grid = geometry.working;
    let brain = geometry.to_working_label_values(crop.crop_values(&mask));
    let mut order: Vec<&Channel> = raw
        .channels
        .iter()
        .filter(|c| c.name.as_str() == "flair")
        .collect();
    order.extend(raw.channels.iter().filter(|c| c.name.as_str() != "flair"));
    let mut channels = Vec::new();
    for c in order {
        raw.grid.check_len(c.data.len(), c.name.as_str())?;
        let cropped: Vec<f32> = crop
            .crop_values(&c.data)
            .into_iter()
            .map(|v| if v.is_nan() { 0.0 } else { v })
            .collect();
        let mut values = geometry.to_working_values(cropped);
        if options.bias_correction == BiasCorrection::Polynomial
            && !clisc_imaging::bias::correct_polynomial(&mut values, &brain, grid.dims())
        {
            tracing::warn!(
                "case {id}: {} has too little brain to fit a bias field; left uncorrected",
                c.name
            );
        }
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
    Ok(Preprocessed { input, geometry })
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
        assert!(!p.geometry.is_resampled());
        assert_eq!(p.geometry.working, p.geometry.crop.cropped_grid());
        let crop = p.geometry.crop;
        assert_eq!(crop.offset, [2, 1, 1]);
        assert_eq!(crop.size, [3, 3, 2]);
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
        let back = crop.uncrop(&lab).unwrap();
        assert_eq!(back.grid, raw.grid);
        assert_eq!(back.data[raw.grid.index(2, 1, 1)], 1);
        assert_eq!(back.data[raw.grid.index(4, 3, 2)], 4);
        assert_eq!(back.count_nonzero(), 2);
        assert_eq!(crop.crop_labels(&back).unwrap(), lab);
        assert!(crop.uncrop(&back).is_err());
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

    /// A grid with an oblique, flipped affine: rotation about z and x,
    /// x flipped, anisotropic voxels.
    fn oblique_grid(shape: [u32; 3], spacing: [f64; 3]) -> Grid {
        let (a, b) = (0.3f64, -0.2f64);
        let rz = [
            [a.cos(), -a.sin(), 0.0],
            [a.sin(), a.cos(), 0.0],
            [0.0, 0.0, 1.0],
        ];
        let rx = [
            [1.0, 0.0, 0.0],
            [0.0, b.cos(), -b.sin()],
            [0.0, b.sin(), b.cos()],
        ];
        let flip = [-1.0, 1.0, 1.0];
        let mut g = Grid::new(shape, spacing);
        for (row, rz_row) in g.affine.iter_mut().zip(&rz) {
            for c in 0..3 {
                let rot: f64 = (0..3).map(|k| rz_row[k] * rx[k][c]).sum();
                row[c] = rot * flip[c] * spacing[c];
            }
        }
        g.affine[0][3] = 40.0;
        g.affine[1][3] = -25.0;
        g.affine[2][3] = 7.0;
        g
    }

    fn world(g: &Grid, i: [f64; 3]) -> [f64; 3] {
        let a = g.affine;
        [0, 1, 2].map(|r| a[r][0] * i[0] + a[r][1] * i[1] + a[r][2] * i[2] + a[r][3])
    }

    #[test]
    fn resampled_geometry_keeps_world_positions_for_oblique_and_flipped_affines() {
        for spacing in [[0.9, 1.1, 3.0], [1.0, 1.0, 1.0]] {
            let raw_grid = oblique_grid([40, 36, 14], spacing);
            let crop = Crop {
                original: raw_grid,
                offset: [3, 2, 1],
                size: [33, 31, 12],
            };
            let geometry = Geometry::new(crop, Some([2.0, 2.0, 2.0]));
            let cropped = crop.cropped_grid();
            let working = geometry.working;
            assert!(geometry.is_resampled());
            // Both grids cover the same box: their outer corners coincide.
            let far = |g: &Grid| g.shape.map(|n| n as f64 - 0.5);
            for (w, c) in [
                (world(&working, [-0.5; 3]), world(&cropped, [-0.5; 3])),
                (
                    world(&working, far(&working)),
                    world(&cropped, far(&cropped)),
                ),
            ] {
                for d in 0..3 {
                    assert!((w[d] - c[d]).abs() < 1e-9, "{w:?} {c:?}");
                }
            }
            // Voxel sizes near the target, and the affine's columns agree.
            for d in 0..3 {
                assert!(
                    (working.spacing[d] - 2.0).abs() < 0.35,
                    "{:?}",
                    working.spacing
                );
                let col: f64 = (0..3)
                    .map(|r| working.affine[r][d].powi(2))
                    .sum::<f64>()
                    .sqrt();
                assert!((col - working.spacing[d]).abs() < 1e-9);
            }
            // A linear function of world position, sampled on the original
            // grid and resampled, has the value of that function at each
            // working voxel's world position (exact for trilinear
            // interpolation away from the clamped border).
            let f = |p: [f64; 3]| 0.5 * p[0] - 0.25 * p[1] + 0.75 * p[2];
            let [nx, ny, nz] = crop.size;
            let mut values = Vec::with_capacity(nx * ny * nz);
            for z in 0..nz {
                for y in 0..ny {
                    for x in 0..nx {
                        values.push(f(world(&cropped, [x as f64, y as f64, z as f64])) as f32);
                    }
                }
            }
            let resampled = geometry.to_working_values(values);
            let [wx, wy, wz] = working.dims();
            let mut checked = 0;
            for z in 1..wz - 1 {
                for y in 1..wy - 1 {
                    for x in 1..wx - 1 {
                        let want = f(world(&working, [x as f64, y as f64, z as f64]));
                        let got = resampled[x + wx * (y + wy * z)] as f64;
                        assert!((got - want).abs() < 1e-3, "({x},{y},{z}): {got} vs {want}");
                        checked += 1;
                    }
                }
            }
            assert!(checked > 100);
        }
    }

    /// Two tissues (1 and 1.5, interleaved as a 3D checkerboard, so no
    /// low-order polynomial can follow them) and a dark CSF layer (0.15, a
    /// twelfth of the brain, as ventricles and sulci are), under a
    /// left-to-right field of +-30%: with `bias_correction = "polynomial"`
    /// each tissue comes out flat, without it the field spreads each one
    /// over more than the contrast between them.
    #[test]
    fn bias_correction_flattens_a_shaded_brain() {
        let g = Grid::new([30, 24, 16], [1.0, 1.0, 1.0]);
        let dark = |x: usize, y: usize, z: usize| (x + y + z) % 2 == 0;
        let mut flair = vec![0.0f32; g.len()];
        for z in 2..14 {
            for y in 2..22 {
                for x in 2..28 {
                    let field = (0.3 * (x as f32 - 15.0) / 13.0).exp();
                    let level = match (z, dark(x, y, z)) {
                        (7, _) => 0.15,
                        (_, true) => 1.0,
                        (_, false) => 1.5,
                    };
                    flair[g.index(x, y, z)] = 500.0 * level * field;
                }
            }
        }
        let raw = Volume::single(g, "flair", flair);
        // Range of the darker tissue over the gap between the tissues' means.
        let spread = |bias_correction| {
            let options = PreprocessOptions {
                normalisation: Normalisation::Brain,
                bias_correction,
                ..PreprocessOptions::default()
            };
            let p = preprocess("c", &raw, &options).unwrap();
            let v = p.input.image.require_channel("flair").unwrap();
            let grid = p.input.image.grid;
            let (mut darker, mut brighter) = (Vec::new(), Vec::new());
            // The crop starts at (2, 2, 2): parity is kept, z = 5 is the CSF.
            for z in 0..grid.dims()[2] {
                for y in 0..grid.dims()[1] {
                    for x in 0..grid.dims()[0] {
                        let value = v[grid.index(x, y, z)];
                        match (z, dark(x, y, z)) {
                            (5, _) => {}
                            (_, true) => darker.push(value),
                            (_, false) => brighter.push(value),
                        }
                    }
                }
            }
            let mean = |a: &[f32]| a.iter().sum::<f32>() / a.len() as f32;
            let (lo, hi) = clisc_imaging::intensity::min_max(&darker);
            (hi - lo) / (mean(&brighter) - mean(&darker))
        };
        let shaded = spread(BiasCorrection::None);
        let corrected = spread(BiasCorrection::Polynomial);
        assert!(shaded > 1.0, "{shaded}");
        assert!(corrected < 0.02, "{corrected} (uncorrected {shaded})");
    }

    /// Distance (mm) of voxel `v` of `grid` from the world point `centre`.
    fn distance(grid: &Grid, v: [usize; 3], centre: [f64; 3]) -> f64 {
        let p = world(grid, v.map(|c| c as f64));
        (0..3)
            .map(|d| (p[d] - centre[d]).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    /// An oblique 48 x 44 x 20 raw grid with a textured brain box and a
    /// ball of `radius` mm in world space: (raw FLAIR, ball labels, centre).
    fn ball_in_a_brain(radius: f64) -> (Volume, LabelVolume, [f64; 3]) {
        let raw_grid = oblique_grid([48, 44, 20], [0.9, 1.1, 2.5]);
        let centre = world(&raw_grid, [24.0, 22.0, 10.0]);
        let mut flair = vec![0.0f32; raw_grid.len()];
        let mut ball = LabelVolume::zeros(raw_grid);
        for z in 0..20 {
            for y in 0..44 {
                for x in 0..48 {
                    let i = raw_grid.index(x, y, z);
                    if (3..45).contains(&x) && (2..42).contains(&y) && (1..19).contains(&z) {
                        flair[i] = 1.0 + (x % 3) as f32;
                    }
                    ball.data[i] = u8::from(distance(&raw_grid, [x, y, z], centre) < radius);
                }
            }
        }
        (Volume::single(raw_grid, "flair", flair), ball, centre)
    }

    #[test]
    fn labels_go_to_the_working_grid_and_back_to_the_original() {
        // A ball of 9 mm radius in world space, inside a brain box.
        let (raw, ball, centre) = ball_in_a_brain(9.0);
        let raw_grid = raw.grid;
        let options = PreprocessOptions {
            spacing: Some([2.0, 2.0, 2.0]),
            ..PreprocessOptions::default()
        };
        let p = preprocess("c", &raw, &options).unwrap();
        let g = p.geometry;
        assert_eq!(p.input.image.grid, g.working);
        assert_eq!(p.input.brain_mask.grid, g.working);
        let on_working = g.to_working(&ball).unwrap();
        // The working-grid ball is where the world-space ball is.
        let mut agree = 0;
        for z in 0..g.working.dims()[2] {
            for y in 0..g.working.dims()[1] {
                for x in 0..g.working.dims()[0] {
                    let r = distance(&g.working, [x, y, z], centre);
                    let inside = on_working.data[g.working.index(x, y, z)] == 1;
                    agree += usize::from(inside == (r < 9.0));
                }
            }
        }
        assert!(
            agree as f64 > 0.97 * g.working.len() as f64,
            "{agree} of {}",
            g.working.len()
        );
        // And back on the original grid, in the original header.
        let back = g.restore(&on_working).unwrap();
        assert_eq!(back.grid, raw_grid);
        let d = clisc_imaging::overlap::dice(&back.data, &ball.data);
        assert!(d > 0.9, "round-trip Dice {d}");
        assert!(g.restore(&ball).is_err());
    }

    #[test]
    fn the_border_is_refined_from_the_raw_flair_on_the_crop_box() {
        // A bright 9 mm ball and a prediction of it 2 mm too small.
        let (mut raw, ball, _) = ball_in_a_brain(9.0);
        for (v, &b) in raw.channels[0].data.iter_mut().zip(ball.data.iter()) {
            if b != 0 {
                *v = 10.0;
            }
        }
        let g = preprocess("c", &raw, &PreprocessOptions::default())
            .unwrap()
            .geometry;
        let truth = g.crop.crop_labels(&ball).unwrap();
        let small = ball_in_a_brain(7.0).1;
        let predicted = g.crop.crop_labels(&small).unwrap();
        let flair = &raw.channels[0].data;
        let refined = g
            .refine_on_crop_box("c", predicted.clone(), flair, 4.0)
            .unwrap();
        let dice = |l: &LabelVolume| clisc_imaging::overlap::dice(&l.data, &truth.data);
        assert_eq!(refined.grid, truth.grid);
        assert!(
            dice(&predicted) < 0.85 && dice(&refined) > 0.99,
            "Dice {} -> {}",
            dice(&predicted),
            dice(&refined)
        );
        // A dark FLAIR says nothing about the border: labels unchanged.
        let flat = vec![1.0f32; flair.len()];
        let kept = g.refine_on_crop_box("c", predicted.clone(), &flat, 4.0);
        assert_eq!(kept.unwrap(), predicted);
        assert!(g.refine_on_crop_box("c", ball.clone(), flair, 4.0).is_err());
        assert!(g
            .refine_on_crop_box("c", predicted.clone(), &flair[1..], 4.0)
            .is_err());
        assert!(g.refine_on_crop_box("c", predicted, flair, 0.0).is_err());
    }

    #[test]
    fn probabilities_go_back_to_the_original_grid_between_working_voxels() {
        // A 7 mm ball seen on a 3 mm working grid: its border falls
        // between working voxels.
        let (raw, ball, centre) = ball_in_a_brain(7.0);
        let options = PreprocessOptions {
            spacing: Some([3.0, 3.0, 3.0]),
            ..PreprocessOptions::default()
        };
        let g = preprocess("c", &raw, &options).unwrap().geometry;
        let [nx, ny, nz] = g.working.dims();
        // A calibrated prediction: the probability falls from 1 to 0 over
        // one working voxel across the border.
        let mut probability = ProbabilityVolume {
            grid: g.working,
            data: vec![0.0; g.working.len()].into(),
        };
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let r = distance(&g.working, [x, y, z], centre);
                    probability.data[g.working.index(x, y, z)] =
                        (0.5 + (7.0 - r) / 3.0).clamp(0.0, 1.0) as f32;
                }
            }
        }
        let dice = |labels: &LabelVolume| clisc_imaging::overlap::dice(&labels.data, &ball.data);
        let from_labels = dice(&g.restore(&probability.labels()).unwrap());
        let from_probability = g.restore_probability(&probability).unwrap();
        assert_eq!(from_probability.grid, raw.grid);
        let from_probability = dice(&from_probability);
        assert!(
            from_probability > from_labels + 0.02 && from_probability > 0.9,
            "Dice from the probabilities {from_probability}, from the cut labels {from_labels}"
        );
        // Probabilities of 0 and 1 go back exactly as the labels do.
        let hard = ProbabilityVolume::from_labels(&probability.labels());
        assert_eq!(
            g.restore_probability(&hard).unwrap(),
            g.restore(&probability.labels()).unwrap()
        );
        assert!(g
            .restore_probability(&ProbabilityVolume::from_labels(&ball))
            .is_err());
        // A plugin's bad output is an error, not a panic of the host.
        let mut short = probability.clone();
        short.data.pop();
        let e = g.restore_probability(&short).unwrap_err().message;
        assert!(e.contains("values for a grid of"), "{e}");
        let mut nan = probability.clone();
        nan.data[3] = f32::NAN;
        let e = g.restore_probability(&nan).unwrap_err().message;
        assert!(
            e.contains("voxel 3 holds NaN, expected a value in [0, 1]"),
            "{e}"
        );
    }
}
