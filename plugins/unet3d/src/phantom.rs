//! Small synthetic FLAIR-like phantoms with a hyperintense lesion, for
//! tests and benchmarks of the volumetric segmenters that must not depend
//! on real data: an ellipsoidal "brain" with smooth intensity variation
//! and noise, a lesion made of a few overlapping spheres (irregular blob)
//! that is brighter than the brain, z-scored over the brain like clisc's
//! preprocessing. The target is the lesion.

use clisc_sdk::stage::{CaseInput, TrainingCase};
use clisc_sdk::{Grid, LabelVolume, Volume};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Parameters of a phantom.
#[derive(Debug, Clone, Copy)]
pub struct PhantomSpec {
    /// Size along x, y, z.
    pub dims: [usize; 3],
    /// Lesion brightness above the brain, in units of the noise level.
    pub contrast: f32,
    /// Noise standard deviation relative to the brain intensity.
    pub noise: f32,
    /// Mean lesion radius as a fraction of the smallest dimension.
    pub lesion_size: f32,
}

impl Default for PhantomSpec {
    fn default() -> Self {
        Self {
            dims: [96, 96, 64],
            contrast: 3.0,
            noise: 0.15,
            lesion_size: 0.12,
        }
    }
}

/// One phantom case (`flair`, brain mask, lesion target), reproducible from `seed`.
pub fn phantom(spec: PhantomSpec, seed: u64) -> TrainingCase {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let [nx, ny, nz] = spec.dims;
    let grid = Grid::new([nx as u32, ny as u32, nz as u32], [1.0; 3]);
    let c = [nx as f32 / 2.0, ny as f32 / 2.0, nz as f32 / 2.0];
    let r = [nx as f32 * 0.45, ny as f32 * 0.45, nz as f32 * 0.45];
    // Lesion: 2-4 spheres around a centre well inside the brain.
    let lc = [0, 1, 2].map(|d| c[d] + rng.random_range(-0.35f32..0.35) * r[d]);
    let base = (nx.min(ny).min(nz) as f32) * spec.lesion_size * rng.random_range(0.67f32..1.33);
    let blobs: Vec<([f32; 3], f32)> = (0..rng.random_range(2..5))
        .map(|_| {
            let o = [0, 1, 2].map(|d| lc[d] + rng.random_range(-1.0f32..1.0) * base);
            (o, base * rng.random_range(0.6f32..1.2))
        })
        .collect();
    // Smooth bias field and a darker "ventricle" for a bit of structure.
    let phase = [
        rng.random_range(0.0f32..std::f32::consts::TAU),
        rng.random_range(0.0f32..std::f32::consts::TAU),
    ];
    let mut flair = vec![0f32; grid.len()];
    let mut brain = vec![0u8; grid.len()];
    let mut target = vec![0u8; grid.len()];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let p = [x as f32, y as f32, z as f32];
                let e: f32 = (0..3).map(|d| ((p[d] - c[d]) / r[d]).powi(2)).sum();
                if e > 1.0 {
                    continue;
                }
                let i = grid.index(x, y, z);
                brain[i] = 1;
                let bias =
                    0.1 * ((x as f32 / 15.0 + phase[0]).sin() + (y as f32 / 19.0 + phase[1]).cos());
                let ventricle = (0..3)
                    .map(|d| ((p[d] - c[d]) / (r[d] * 0.25)).powi(2))
                    .sum::<f32>()
                    < 1.0;
                let mut v = 1.0 + bias - if ventricle { 0.5 } else { 0.0 };
                let lesion = blobs.iter().any(|(o, rad)| {
                    (0..3).map(|d| (p[d] - o[d]).powi(2)).sum::<f32>() <= rad * rad
                });
                if lesion {
                    target[i] = 1;
                    v += spec.contrast * spec.noise;
                }
                // Sum of uniforms: cheap, roughly Gaussian noise.
                let n: f32 = (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum::<f32>() * 0.866;
                flair[i] = v + spec.noise * n;
            }
        }
    }
    let inside: Vec<f32> = flair
        .iter()
        .zip(&brain)
        .filter(|(_, &b)| b != 0)
        .map(|(&v, _)| v)
        .collect();
    let mean = inside.iter().sum::<f32>() / inside.len() as f32;
    let sd = (inside.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / inside.len() as f32)
        .sqrt()
        .max(1e-6);
    flair.iter_mut().for_each(|v| *v = (*v - mean) / sd);
    TrainingCase {
        case: CaseInput {
            id: format!("phantom-{seed:03}").into(),
            image: Volume::single(grid, "flair", flair),
            brain_mask: LabelVolume {
                grid,
                data: brain.into(),
            },
        },
        target: LabelVolume {
            grid,
            data: target.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantoms_are_reproducible_and_have_a_bright_lesion_in_the_brain() {
        let spec = PhantomSpec {
            dims: [40, 40, 24],
            ..Default::default()
        };
        let a = phantom(spec, 3);
        assert_eq!(a, phantom(spec, 3));
        assert_ne!(a.target, phantom(spec, 4).target);
        let flair = a.case.image.channel("flair").unwrap();
        let lesion = a.target.count_nonzero();
        assert!(lesion > 50, "lesion of {lesion} voxels");
        let (mut lv, mut bv, mut bn) = (0.0, 0.0, 0);
        for (i, &v) in flair.iter().enumerate() {
            if a.target.data[i] != 0 {
                assert_eq!(a.case.brain_mask.data[i], 1);
                lv += v;
            } else if a.case.brain_mask.data[i] != 0 {
                bv += v;
                bn += 1;
            }
        }
        assert!(
            lv / lesion as f32 > bv / bn as f32 + 1.0,
            "the lesion is hyperintense"
        );
    }
}
