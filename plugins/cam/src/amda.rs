//! Adaptive masking data augmentation (AMDA), as the CLISC paper describes
//! it (not the released code's fallback, which hides the brightest
//! intensities instead).
//!
//! For each positive training slice, the first classifier's CAM (upsampled
//! to the training resolution, zero outside the brain) is binarised into a
//! 2D ROI; inside the ROI's bounding box the pixels whose activation exceeds
//! `min + ratio * (max - min)` of the CAM within that box are hidden (set to
//! 0, the background value of a min-max normalised slice). The classifier
//! then cannot rely on the most discriminative part alone and must learn
//! the rest of the tumor. Negative slices get random masks of comparable
//! size: the mask of a randomly chosen positive slice, moved to a random
//! position within the negative slice's brain bounding box (so both classes
//! contain holes and a hole alone does not reveal the class). Masked copies
//! keep their slice's label.

use clisc_imaging::intensity::otsu_threshold;
use clisc_imaging::overlap::bbox_2d;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The threshold rule turning a CAM into an ROI.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// A fixed activation in `[0, 1]`.
    Fixed(f32),
    /// Otsu's threshold of the activations inside the brain (per slice here,
    /// per volume for 3D ROIs).
    Otsu,
}

impl Threshold {
    /// Parses a number (`"0.5"`) or `"otsu"`.
    pub fn parse(s: &str) -> Result<Self, clisc_sdk::PluginError> {
        if s.trim().eq_ignore_ascii_case("otsu") {
            return Ok(Threshold::Otsu);
        }
        match s.trim().parse::<f32>() {
            Ok(v) if (0.0..1.0).contains(&v) => Ok(Threshold::Fixed(v)),
            _ => Err(clisc_sdk::PluginError::config(format!(
                "cam: `threshold` must be a number in [0, 1) or \"otsu\", found `{s}`"
            ))),
        }
    }
    /// The threshold for these activations (those inside the brain).
    pub fn value(&self, inside: &[f32]) -> f32 {
        match self {
            Threshold::Fixed(v) => *v,
            Threshold::Otsu => {
                if inside.is_empty() {
                    1.0
                } else {
                    otsu_threshold(inside, 256)
                }
            }
        }
    }
}

/// The AMDA mask of one positive slice (`size x size`, row-major): 1 where
/// the pixel is hidden. Empty when the CAM has no ROI on this slice.
pub(crate) fn positive_mask(
    cam: &[f32],
    brain: &[f32],
    size: usize,
    threshold: Threshold,
    ratio: f32,
) -> Vec<u8> {
    let inside: Vec<f32> = cam
        .iter()
        .zip(brain)
        .filter(|(_, b)| **b > 0.0)
        .map(|(c, _)| *c)
        .collect();
    let t = threshold.value(&inside);
    let roi: Vec<u8> = cam
        .iter()
        .zip(brain)
        .map(|(c, b)| u8::from(*b > 0.0 && *c >= t && *c > 0.0))
        .collect();
    let mut mask = vec![0u8; size * size];
    let Some([x0, y0, x1, y1]) = bbox_2d(&roi, size) else {
        return mask;
    };
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for y in y0..=y1 {
        for x in x0..=x1 {
            lo = lo.min(cam[x + size * y]);
            hi = hi.max(cam[x + size * y]);
        }
    }
    let cut = lo + ratio * (hi - lo);
    for y in y0..=y1 {
        for x in x0..=x1 {
            if cam[x + size * y] > cut {
                mask[x + size * y] = 1;
            }
        }
    }
    mask
}

/// A random mask for a negative slice: one of `positives` (non-empty masks)
/// moved so that its bounding box lies at a random place inside the brain's
/// bounding box (or anywhere when the brain is smaller than the mask).
pub(crate) fn negative_mask(
    positives: &[Vec<u8>],
    brain: &[f32],
    size: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<u8> {
    let mut out = vec![0u8; size * size];
    if positives.is_empty() {
        return out;
    }
    let src = &positives[rng.random_range(0..positives.len())];
    let Some([sx0, sy0, sx1, sy1]) = bbox_2d(src, size) else {
        return out;
    };
    let (w, h) = (sx1 - sx0 + 1, sy1 - sy0 + 1);
    let brain_u8: Vec<u8> = brain.iter().map(|b| u8::from(*b > 0.0)).collect();
    let [bx0, by0, bx1, by1] = bbox_2d(&brain_u8, size).unwrap_or([0, 0, size - 1, size - 1]);
    let pick = |lo: usize, hi: usize, len: usize, rng: &mut ChaCha8Rng| {
        // top-left so that [pos, pos + len) fits within [lo, hi] when possible
        if hi + 1 >= lo + len {
            rng.random_range(lo..=hi + 1 - len)
        } else {
            rng.random_range(0..=size - len)
        }
    };
    let (tx, ty) = (pick(bx0, bx1, w, rng), pick(by0, by1, h, rng));
    for y in 0..h {
        for x in 0..w {
            if src[(sx0 + x) + size * (sy0 + y)] != 0 {
                out[(tx + x) + size * (ty + y)] = 1;
            }
        }
    }
    out
}

/// Masks for a whole training set: `cams`, `brains` are `n` slices of
/// `size x size`, `labels` their classes. Returns one mask per slice
/// (negatives get random masks when `mask_negatives`, else empty ones).
#[allow(clippy::too_many_arguments)] // the masking inputs are independent; a struct would only rename them
pub(crate) fn masks_for_set(
    cams: &[f32],
    brains: &[f32],
    labels: &[i64],
    size: usize,
    threshold: Threshold,
    ratio: f32,
    mask_negatives: bool,
    seed: u64,
) -> Vec<Vec<u8>> {
    let p = size * size;
    let mut masks: Vec<Vec<u8>> = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            if l == 1 {
                positive_mask(
                    &cams[i * p..(i + 1) * p],
                    &brains[i * p..(i + 1) * p],
                    size,
                    threshold,
                    ratio,
                )
            } else {
                Vec::new()
            }
        })
        .collect();
    let pool: Vec<Vec<u8>> = masks
        .iter()
        .filter(|m| m.iter().any(|&v| v != 0))
        .cloned()
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (i, &l) in labels.iter().enumerate() {
        if l != 1 {
            masks[i] = if mask_negatives {
                negative_mask(&pool, &brains[i * p..(i + 1) * p], size, &mut rng)
            } else {
                vec![0u8; p]
            };
        }
    }
    masks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_only_the_top_of_the_box() {
        // 6x6, CAM peak at (3,3), ROI = cam >= 0.5 covers a 3x3 block.
        let size = 6;
        let mut cam = vec![0.0f32; 36];
        for y in 2..5 {
            for x in 2..5 {
                cam[x + size * y] = 0.6;
            }
        }
        cam[3 + size * 3] = 1.0;
        cam[2 + size * 2] = 0.55;
        let brain = vec![1.0f32; 36];
        let m = positive_mask(&cam, &brain, size, Threshold::Fixed(0.5), 0.8);
        // box = 2..4 x 2..4, min 0.55, max 1.0, cut 0.91: only the peak.
        assert_eq!(m.iter().filter(|&&v| v == 1).count(), 1);
        assert_eq!(m[3 + size * 3], 1);
        let m2 = positive_mask(&cam, &brain, size, Threshold::Fixed(0.5), 0.0);
        assert_eq!(
            m2.iter().filter(|&&v| v == 1).count(),
            8,
            "ratio 0 hides the box above its minimum"
        );
        // nothing above threshold: no mask.
        assert!(
            positive_mask(&[0.1; 36], &brain, size, Threshold::Fixed(0.5), 0.8)
                .iter()
                .all(|&v| v == 0)
        );
    }

    #[test]
    fn negative_masks_copy_a_positive_shape_inside_the_brain() {
        let size = 10;
        let mut pos = vec![0u8; 100];
        pos[1 + 10] = 1;
        pos[2 + 10] = 1;
        let mut brain = vec![0.0f32; 100];
        for y in 5..9 {
            for x in 5..9 {
                brain[x + size * y] = 1.0;
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let m = negative_mask(&[pos.clone()], &brain, size, &mut rng);
            assert_eq!(m.iter().filter(|&&v| v == 1).count(), 2);
            let [x0, y0, x1, y1] = bbox_2d(&m, size).unwrap();
            assert!(x0 >= 5 && x1 <= 8 && y0 >= 5 && y1 <= 8 && x1 == x0 + 1 && y1 == y0);
        }
        let all = masks_for_set(
            &vec![0.0; 200],
            &vec![1.0; 200],
            &[0, 0],
            size,
            Threshold::Otsu,
            0.8,
            true,
            3,
        );
        assert!(
            all.iter()
                .all(|m| m.len() == 100 && m.iter().all(|&v| v == 0)),
            "no positive mask, nothing to copy"
        );
    }

    #[test]
    fn threshold_parsing() {
        assert_eq!(Threshold::parse("otsu").unwrap(), Threshold::Otsu);
        assert_eq!(Threshold::parse("0.4").unwrap(), Threshold::Fixed(0.4));
        assert!(Threshold::parse("1.5")
            .unwrap_err()
            .message
            .contains("threshold"));
    }
}
