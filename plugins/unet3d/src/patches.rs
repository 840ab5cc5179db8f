//! Training patches: cases held in memory, random crops with padding, random
//! flips and in-plane 90-degree rotations, optional intensity augmentation,
//! cut on a background thread.
//!
//! Intensity augmentation (off unless configured; the paper has none) maps
//! each brain voxel `v` of a patch to `gain * v + offset + ramp . u`, where
//! `u` in `[-1, 1]^3` is the voxel's position in the patch: a random
//! contrast, brightness and linear low-frequency field, the way scanner
//! gain and bias fields differ between studies. A network trained on a few
//! cases otherwise learns their exact intensity levels and, on a new case,
//! marks whatever is as bright as their lesions were (cortex, a bright bias
//! region). Background (the volume's minimum) and padding stay as they are,
//! so the brain outline is unchanged, and so are the labels.
//!
//! The training loop never waits for data in practice: a producer thread
//! fills a bounded channel with ready batches (plain `Vec`s, no libtorch on
//! that thread) while the network trains on the previous ones. Patches are
//! stored like torch tensors of shape `[z, y, x]` (x fastest), which is the
//! memory order of clisc volumes.

use clisc_sdk::stage::TrainingCase;
use clisc_sdk::PluginError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// One training case as flat arrays.
#[derive(Debug, Clone)]
pub struct CaseArrays {
    /// Case identifier (for messages).
    pub id: String,
    /// Size along x, y, z.
    pub dims: [usize; 3],
    /// Preprocessed FLAIR, x fastest.
    pub image: Vec<f32>,
    /// Binary target (0/1), x fastest.
    pub target: Vec<u8>,
    /// Value used outside the volume (its minimum: background after z-scoring).
    pub pad: f32,
    /// Linear indices of the target voxels (for foreground-centred patches).
    pub foreground: Vec<u32>,
}

impl CaseArrays {
    /// Copies the `flair` channel and the target of a training case,
    /// checking that they lie on the same grid.
    pub(crate) fn from_training(case: &TrainingCase) -> Result<Self, PluginError> {
        let id = case.case.id.to_string();
        let grid = case.case.image.grid;
        let image = case.case.image.require_channel("flair").map_err(|e| {
            PluginError::input(format!("unet3d: training case `{id}`: {}", e.message))
        })?;
        grid.check_len(image.len(), &format!("unet3d: training case `{id}` flair"))?;
        if case.target.grid.shape != grid.shape {
            return Err(PluginError::input(format!(
                "unet3d: training case `{id}`: target grid {:?} differs from the image grid {:?}",
                case.target.grid.shape, grid.shape
            )));
        }
        grid.check_len(
            case.target.data.len(),
            &format!("unet3d: training case `{id}` target"),
        )?;
        if grid.len() >= u32::MAX as usize {
            return Err(PluginError::input(format!(
                "unet3d: training case `{id}` is too large"
            )));
        }
        let target: Vec<u8> = case.target.data.iter().map(|&v| u8::from(v != 0)).collect();
        let foreground = target
            .iter()
            .enumerate()
            .filter(|(_, &v)| v != 0)
            .map(|(i, _)| i as u32)
            .collect();
        let pad = image.iter().copied().fold(f32::INFINITY, f32::min);
        Ok(Self {
            id,
            dims: grid.dims(),
            image: image.to_vec(),
            target,
            pad: if pad.is_finite() { pad } else { 0.0 },
            foreground,
        })
    }
}

/// A batch of patches, `[batch, 1, z, y, x]` images and `[batch, z, y, x]` labels.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    /// Number of patches.
    pub batch: usize,
    /// Patch size along x, y, z.
    pub patch: [usize; 3],
    /// Image values.
    pub image: Vec<f32>,
    /// Class per voxel (0/1).
    pub target: Vec<u8>,
}

/// Ranges of the random intensity augmentation (see the module docs); all
/// zero = off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct IntensityAugmentation {
    /// Gain drawn from `[1 - scale, 1 + scale]`.
    pub scale: f32,
    /// Offset drawn from `[-shift, shift]` (z-score units).
    pub shift: f32,
    /// Per-axis ramp amplitude drawn from `[-ramp, ramp]` (z-score units at the patch faces).
    pub ramp: f32,
}

impl IntensityAugmentation {
    /// Whether any augmentation is configured.
    pub(crate) fn is_on(&self) -> bool {
        self.scale > 0.0 || self.shift > 0.0 || self.ramp > 0.0
    }
}

/// Cuts augmented patches from the cases.
#[derive(Debug, Clone)]
pub(crate) struct PatchSampler {
    /// The cases, shared with the producer thread.
    pub cases: Arc<Vec<CaseArrays>>,
    /// Patch size along x, y, z.
    pub patch: [usize; 3],
    /// Probability of centring a patch on a target voxel.
    pub foreground_fraction: f64,
    /// Random flips along each axis.
    pub flips: bool,
    /// Random in-plane rotations by multiples of 90 degrees.
    pub rotations: bool,
    /// Random intensity changes of brain voxels.
    pub intensity: IntensityAugmentation,
}

/// One patch draw: where, how turned and with what intensity change
/// (exposed for tests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PatchDraw {
    /// Case index.
    pub case: usize,
    /// Crop origin in the volume (may be negative: padding).
    pub start: [isize; 3],
    /// Flip along x, y, z.
    pub flip: [bool; 3],
    /// Quarter turns in the x-y plane.
    pub quarter_turns: u8,
    /// Intensity gain of brain voxels (1 = unchanged).
    pub gain: f32,
    /// Intensity offset of brain voxels.
    pub offset: f32,
    /// Linear field over the patch along x, y, z (value at the `+1` face).
    pub ramp: [f32; 3],
}

impl PatchSampler {
    /// Draws where and how to cut the next patch.
    pub(crate) fn draw(&self, rng: &mut impl Rng) -> PatchDraw {
        let case = rng.random_range(0..self.cases.len());
        let c = &self.cases[case];
        let centre = if !c.foreground.is_empty() && rng.random_bool(self.foreground_fraction) {
            let i = c.foreground[rng.random_range(0..c.foreground.len())] as usize;
            Some([
                i % c.dims[0],
                (i / c.dims[0]) % c.dims[1],
                i / (c.dims[0] * c.dims[1]),
            ])
        } else {
            None
        };
        let mut start = [0isize; 3];
        for d in 0..3 {
            let (dim, p) = (c.dims[d] as i64, self.patch[d] as i64);
            // Allowed origins keep the patch inside the volume, or, when the
            // volume is smaller, keep the volume inside the patch.
            let (lo, hi) = ((dim - p).min(0), (dim - p).max(0));
            start[d] = match centre {
                Some(cv) => (cv[d] as i64 - p / 2).clamp(lo, hi),
                None => rng.random_range(lo..=hi),
            } as isize;
        }
        let flip = if self.flips {
            [
                rng.random_bool(0.5),
                rng.random_bool(0.5),
                rng.random_bool(0.5),
            ]
        } else {
            [false; 3]
        };
        let quarter_turns = if !self.rotations {
            0
        } else if self.patch[0] == self.patch[1] {
            rng.random_range(0..4u8)
        } else {
            2 * rng.random_range(0..2u8)
        };
        // Drawn only when configured, so runs without augmentation keep the
        // random stream (and results) they had before it existed.
        let a = self.intensity;
        let (gain, offset, ramp) = if a.is_on() {
            let mut sym = |r: f32| {
                if r > 0.0 {
                    rng.random_range(-r..=r)
                } else {
                    0.0
                }
            };
            (
                1.0 + sym(a.scale),
                sym(a.shift),
                [sym(a.ramp), sym(a.ramp), sym(a.ramp)],
            )
        } else {
            (1.0, 0.0, [0.0; 3])
        };
        PatchDraw {
            case,
            start,
            flip,
            quarter_turns,
            gain,
            offset,
            ramp,
        }
    }

    /// Cuts the patch described by `draw` into `image` and `target`
    /// (`patch` voxels each, x fastest).
    pub(crate) fn cut(&self, draw: &PatchDraw, image: &mut [f32], target: &mut [u8]) {
        let c = &self.cases[draw.case];
        let [px, py, pz] = self.patch;
        let [nx, ny, nz] = c.dims.map(|d| d as isize);
        let unit = |i: usize, n: usize| {
            if n > 1 {
                2.0 * i as f32 / (n - 1) as f32 - 1.0
            } else {
                0.0
            }
        };
        let augment = draw.gain != 1.0 || draw.offset != 0.0 || draw.ramp != [0.0; 3];
        for k in 0..pz {
            let w = if draw.flip[2] { pz - 1 - k } else { k };
            let sz = draw.start[2] + w as isize;
            for j in 0..py {
                for i in 0..px {
                    let fi = if draw.flip[0] { px - 1 - i } else { i };
                    let fj = if draw.flip[1] { py - 1 - j } else { j };
                    // Rotations only happen with px == py unless by 180 degrees.
                    let (u, v) = match draw.quarter_turns {
                        1 => (fj, py - 1 - fi),
                        2 => (px - 1 - fi, py - 1 - fj),
                        3 => (px - 1 - fj, fi),
                        _ => (fi, fj),
                    };
                    let (sx, sy) = (draw.start[0] + u as isize, draw.start[1] + v as isize);
                    let o = i + px * (j + py * k);
                    if sx < 0 || sy < 0 || sz < 0 || sx >= nx || sy >= ny || sz >= nz {
                        image[o] = c.pad;
                        target[o] = 0;
                    } else {
                        let s = sx as usize + c.dims[0] * (sy as usize + c.dims[1] * sz as usize);
                        let v = c.image[s];
                        image[o] = if augment && v > c.pad {
                            let field = draw.ramp[0] * unit(i, px)
                                + draw.ramp[1] * unit(j, py)
                                + draw.ramp[2] * unit(k, pz);
                            draw.gain * v + draw.offset + field
                        } else {
                            v
                        };
                        target[o] = c.target[s];
                    }
                }
            }
        }
    }

    /// A batch of `n` random patches.
    pub(crate) fn batch(&self, rng: &mut impl Rng, n: usize) -> Batch {
        let len: usize = self.patch.iter().product();
        let mut image = vec![0f32; n * len];
        let mut target = vec![0u8; n * len];
        for b in 0..n {
            let draw = self.draw(rng);
            self.cut(
                &draw,
                &mut image[b * len..(b + 1) * len],
                &mut target[b * len..(b + 1) * len],
            );
        }
        Batch {
            batch: n,
            patch: self.patch,
            image,
            target,
        }
    }

    /// Starts a producer thread that sends `steps` batches of `batch_size`
    /// patches, seeded by `seed`; it stops early when the receiver is dropped.
    #[cfg(test)]
    fn spawn(
        self,
        seed: u64,
        steps: usize,
        batch_size: usize,
    ) -> (Receiver<Batch>, JoinHandle<()>) {
        self.spawn_at(seed, 0, steps, batch_size)
    }

    /// Starts a producer thread that sends `steps` batches of `batch_size`
    /// patches, starting at batch `first` of the stream seeded by `seed`: a
    /// training run resumed at step `first` gets exactly the batches an
    /// uninterrupted run gets from that step on (the earlier draws are
    /// replayed without cutting patches). It stops early when the receiver
    /// is dropped.
    pub(crate) fn spawn_at(
        self,
        seed: u64,
        first: usize,
        steps: usize,
        batch_size: usize,
    ) -> (Receiver<Batch>, JoinHandle<()>) {
        let (tx, rx) = sync_channel(4);
        let handle = std::thread::Builder::new()
            .name("unet3d-patches".into())
            .spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                for _ in 0..first * batch_size {
                    self.draw(&mut rng);
                }
                for _ in 0..steps {
                    if tx.send(self.batch(&mut rng, batch_size)).is_err() {
                        break;
                    }
                }
            })
            .expect("spawning the patch thread");
        (rx, handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(dims: [usize; 3]) -> CaseArrays {
        let n: usize = dims.iter().product();
        let image: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let target: Vec<u8> = (0..n).map(|i| u8::from(i % 7 == 0)).collect();
        let foreground = target
            .iter()
            .enumerate()
            .filter(|(_, &v)| v != 0)
            .map(|(i, _)| i as u32)
            .collect();
        CaseArrays {
            id: "c".into(),
            dims,
            image,
            target,
            pad: -1.0,
            foreground,
        }
    }

    fn sampler(dims: [usize; 3], patch: [usize; 3]) -> PatchSampler {
        PatchSampler {
            cases: Arc::new(vec![case(dims)]),
            patch,
            foreground_fraction: 0.5,
            flips: true,
            rotations: true,
            intensity: IntensityAugmentation::default(),
        }
    }

    #[test]
    fn identity_crop_copies_the_volume_region() {
        let s = sampler([6, 5, 4], [4, 4, 2]);
        let draw = PatchDraw {
            case: 0,
            start: [1, 1, 2],
            flip: [false; 3],
            quarter_turns: 0,
            gain: 1.0,
            offset: 0.0,
            ramp: [0.0; 3],
        };
        let (mut img, mut tgt) = (vec![0f32; 32], vec![0u8; 32]);
        s.cut(&draw, &mut img, &mut tgt);
        // patch (i, j, k) = volume (1 + i, 1 + j, 2 + k)
        let at = |x: usize, y: usize, z: usize| (x + 6 * (y + 5 * z)) as f32;
        assert_eq!(img[0], at(1, 1, 2));
        assert_eq!(img[3 + 4 * (2 + 4)], at(4, 3, 3));
        for (v, t) in img.iter().zip(&tgt) {
            assert_eq!(
                *t,
                u8::from((*v as usize) % 7 == 0),
                "image and target stay aligned"
            );
        }
    }

    #[test]
    fn small_volumes_are_padded_and_augmentations_keep_alignment() {
        let s = sampler([3, 3, 2], [4, 4, 4]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut saw_turn = false;
        for _ in 0..50 {
            let d = s.draw(&mut rng);
            saw_turn |= d.quarter_turns % 2 == 1;
            assert!(
                d.start.iter().all(|&v| v <= 0),
                "volume smaller than the patch: {d:?}"
            );
            let (mut img, mut tgt) = (vec![0f32; 64], vec![0u8; 64]);
            s.cut(&d, &mut img, &mut tgt);
            let inside: Vec<f32> = img.iter().copied().filter(|&v| v >= 0.0).collect();
            assert_eq!(inside.len(), 18, "every voxel of the volume appears once");
            assert_eq!(img.iter().filter(|&&v| v == -1.0).count(), 64 - 18);
            for (v, t) in img.iter().zip(&tgt) {
                let expect = *v >= 0.0 && (*v as usize) % 7 == 0;
                assert_eq!(*t, u8::from(expect));
            }
        }
        assert!(saw_turn, "square patches get quarter turns");
    }

    #[test]
    fn intensity_augmentation_changes_brain_voxels_only_and_keeps_labels() {
        let mut c = case([6, 6, 4]);
        // Background: the volume's minimum, as after z-scoring.
        c.pad = 0.0;
        let background: Vec<usize> = (0..c.image.len()).filter(|i| i % 5 == 0).collect();
        for &i in &background {
            c.image[i] = 0.0;
        }
        let mut s = sampler([6, 6, 4], [6, 6, 4]);
        s.cases = Arc::new(vec![c.clone()]);
        s.rotations = false;
        s.flips = false;
        let plain = PatchDraw {
            case: 0,
            start: [0; 3],
            flip: [false; 3],
            quarter_turns: 0,
            gain: 1.0,
            offset: 0.0,
            ramp: [0.0; 3],
        };
        let n = 6 * 6 * 4;
        let (mut base, mut base_t) = (vec![0f32; n], vec![0u8; n]);
        s.cut(&plain, &mut base, &mut base_t);
        assert_eq!(base, c.image, "no augmentation: an exact copy");
        let draw = PatchDraw {
            gain: 1.2,
            offset: -0.5,
            ramp: [0.3, 0.0, -0.2],
            ..plain
        };
        let (mut img, mut tgt) = (vec![0f32; n], vec![0u8; n]);
        s.cut(&draw, &mut img, &mut tgt);
        assert_eq!(tgt, base_t, "labels do not move");
        for z in 0..4 {
            for y in 0..6 {
                for x in 0..6 {
                    let i = x + 6 * (y + 6 * z);
                    let expect = if background.contains(&i) {
                        0.0
                    } else {
                        let ux = 2.0 * x as f32 / 5.0 - 1.0;
                        let uz = 2.0 * z as f32 / 3.0 - 1.0;
                        1.2 * c.image[i] - 0.5 + 0.3 * ux - 0.2 * uz
                    };
                    assert!(
                        (img[i] - expect).abs() < 1e-3,
                        "voxel {i}: {} vs {expect}",
                        img[i]
                    );
                }
            }
        }
        // Draws stay within the configured ranges and vary.
        s.intensity = IntensityAugmentation {
            scale: 0.1,
            shift: 0.2,
            ramp: 0.3,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let draws: Vec<PatchDraw> = (0..200).map(|_| s.draw(&mut rng)).collect();
        assert!(draws.iter().all(|d| (0.9..=1.1).contains(&d.gain)
            && d.offset.abs() <= 0.2
            && d.ramp.iter().all(|r| r.abs() <= 0.3)));
        assert!(draws.iter().any(|d| d.gain > 1.05) && draws.iter().any(|d| d.gain < 0.95));
        // Off: the geometric draws are those of a sampler without the feature.
        s.intensity = IntensityAugmentation::default();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        assert!((0..50).all(|_| {
            let d = s.draw(&mut rng);
            d.gain == 1.0 && d.offset == 0.0 && d.ramp == [0.0; 3]
        }));
    }

    #[test]
    fn rectangular_patches_only_turn_by_half() {
        let s = sampler([8, 8, 8], [4, 2, 2]);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..50 {
            assert!(s.draw(&mut rng).quarter_turns % 2 == 0);
        }
    }

    #[test]
    fn background_thread_delivers_seeded_batches() {
        let s = sampler([8, 8, 8], [4, 4, 4]);
        let (rx, h) = s.clone().spawn(9, 3, 2);
        let got: Vec<Batch> = rx.iter().collect();
        h.join().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].image.len(), 2 * 64);
        let (rx2, _) = s.clone().spawn(9, 1, 2);
        assert_eq!(
            rx2.recv().unwrap().image,
            got[0].image,
            "same seed, same patches"
        );
        let (rx3, _) = s.spawn_at(9, 2, 1, 2);
        assert_eq!(
            rx3.recv().unwrap().image,
            got[2].image,
            "a stream started at batch 2 continues the stream"
        );
    }
}
