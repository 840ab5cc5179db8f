//! Boundary refinement: re-deciding a lesion mask's border voxel by voxel
//! from the image's intensity, at the image's own resolution.
//!
//! Why: a network that works on a coarse grid (clisc resamples 1 mm
//! scans to 2.5 mm) draws its border on that grid; brought back to the
//! scan, the border is smooth but can be off by a working voxel or more
//! all round, which on a lesion a few centimetres across costs several
//! Dice points. On FLAIR the whole tumour is brighter than the brain
//! around it, so the border voxels can be sorted by intensity.
//!
//! Method, with `band` the band width in millimetres (distances are
//! Euclidean, in millimetres, on the voxel grid's spacing):
//! - the *core* is the mask's voxels farther than `band` from its
//!   background; it is kept as it is;
//! - the *band* is the brain voxels within `band` of the border, on
//!   either side (mask voxels not in the core, and brain voxels within
//!   `band` of the mask);
//! - the *surroundings* are the brain voxels between `band` and
//!   `2 band` outside the mask;
//! - the threshold is halfway between the median intensity of the core
//!   and of the surroundings; band voxels above it join the core;
//! - components (face connectivity) that do not touch the core are
//!   dropped and enclosed cavities are filled.
//!
//! The mask is returned unchanged ([`NotRefined`]) when it has no core
//! (nothing thicker than `2 band`: too small to measure the lesion's own
//! intensity), when the brain has no voxel in the surroundings, or when
//! the core is not brighter than them (the intensity says nothing about
//! the border).

use crate::components::label_3d;
use crate::distance::squared_edt;
use crate::intensity::percentile;
use crate::morphology::fill_holes_3d;
use crate::{Connectivity, Dims3};

/// Why a mask was left as it was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NotRefined {
    /// No mask voxel lies farther than the band width from the background.
    NoCore,
    /// No brain voxel lies between one and two band widths outside the mask.
    NoSurroundings,
    /// The core's median intensity is not above the surroundings'.
    NotHyperintense {
        /// Median intensity of the core.
        core: f32,
        /// Median intensity of the surroundings.
        surroundings: f32,
    },
}

impl std::fmt::Display for NotRefined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRefined::NoCore => write!(f, "the mask is too thin to have a core"),
            NotRefined::NoSurroundings => write!(f, "no brain around the mask"),
            NotRefined::NotHyperintense { core, surroundings } => write!(
                f,
                "the mask's core (median {core}) is not brighter than its surroundings (median {surroundings})"
            ),
        }
    }
}

/// A refined mask and the intensity threshold that decided its band.
#[derive(Debug, Clone, PartialEq)]
pub struct Refined {
    /// The refined mask (0 or 1 per voxel).
    pub mask: Vec<u8>,
    /// Band voxels brighter than this joined the mask.
    pub threshold: f32,
}

/// Refines the border of `mask` (nonzero = lesion) from `intensity`
/// within a band of `band_mm` millimetres, inside `brain` (nonzero =
/// brain), on a grid of `dims` voxels of `spacing` millimetres (see the
/// module documentation).
///
/// # Panics
/// When the slices do not all have `dims`' voxel count or `band_mm` is
/// not a positive finite number.
pub fn refine_boundary(
    mask: &[u8],
    intensity: &[f32],
    brain: &[u8],
    dims: Dims3,
    spacing: [f64; 3],
    band_mm: f64,
) -> Result<Refined, NotRefined> {
    let n = dims[0] * dims[1] * dims[2];
    assert!(
        mask.len() == n && intensity.len() == n && brain.len() == n,
        "mask, intensity and brain must have {n} voxels"
    );
    assert!(
        band_mm.is_finite() && band_mm > 0.0,
        "band width {band_mm} mm is not positive"
    );
    let band2 = band_mm * band_mm;
    let to_background = squared_edt(
        &mask.iter().map(|&m| m == 0).collect::<Vec<_>>(),
        dims,
        spacing,
    );
    let to_mask = squared_edt(
        &mask.iter().map(|&m| m != 0).collect::<Vec<_>>(),
        dims,
        spacing,
    );
    let core: Vec<bool> = (0..n)
        .map(|i| mask[i] != 0 && to_background[i] > band2)
        .collect();
    let in_brain = |i: usize| brain[i] != 0;
    let mut core_values: Vec<f32> = (0..n).filter(|&i| core[i]).map(|i| intensity[i]).collect();
    if core_values.is_empty() {
        return Err(NotRefined::NoCore);
    }
    let mut around: Vec<f32> = (0..n)
        .filter(|&i| in_brain(i) && to_mask[i] > band2 && to_mask[i] <= 4.0 * band2)
        .map(|i| intensity[i])
        .collect();
    if around.is_empty() {
        return Err(NotRefined::NoSurroundings);
    }
    let core_median = percentile(&mut core_values, 50.0);
    let around_median = percentile(&mut around, 50.0);
    if core_median <= around_median {
        return Err(NotRefined::NotHyperintense {
            core: core_median,
            surroundings: around_median,
        });
    }
    let threshold = 0.5 * (core_median + around_median);
    let candidate: Vec<u8> = (0..n)
        .map(|i| {
            let in_band = in_brain(i) && !core[i] && to_mask[i] <= band2;
            u8::from(core[i] || (in_band && intensity[i] > threshold))
        })
        .collect();
    let components = label_3d(&candidate, dims, Connectivity::Face);
    let mut touches_core = vec![false; components.sizes.len() + 1];
    for (i, &label) in components.labels.iter().enumerate() {
        if core[i] {
            touches_core[label as usize] = true;
        }
    }
    let kept: Vec<u8> = components
        .labels
        .iter()
        .map(|&label| u8::from(label != 0 && touches_core[label as usize]))
        .collect();
    Ok(Refined {
        mask: fill_holes_3d(&kept, dims),
        threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIMS: Dims3 = [40, 40, 40];
    const MM: [f64; 3] = [1.0, 1.0, 1.0];

    fn index(x: usize, y: usize, z: usize) -> usize {
        x + DIMS[0] * (y + DIMS[1] * z)
    }

    /// A ball of `radius` voxels centred in the volume.
    fn ball(radius: f64) -> Vec<u8> {
        let c = 19.5;
        let mut m = vec![0u8; DIMS.iter().product()];
        for z in 0..DIMS[2] {
            for y in 0..DIMS[1] {
                for x in 0..DIMS[0] {
                    let d2 =
                        (x as f64 - c).powi(2) + (y as f64 - c).powi(2) + (z as f64 - c).powi(2);
                    m[index(x, y, z)] = u8::from(d2 <= radius * radius);
                }
            }
        }
        m
    }

    /// A bright lesion (`lesion`) on darker brain filling the volume, with
    /// a deterministic texture of +-10%.
    fn image(lesion: &[u8]) -> Vec<f32> {
        lesion
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let texture = 1.0 + 0.1 * ((i * 7919 % 23) as f32 / 11.0 - 1.0);
                (if l != 0 { 300.0 } else { 100.0 }) * texture
            })
            .collect()
    }

    fn dice(a: &[u8], b: &[u8]) -> f64 {
        crate::overlap::dice(a, b)
    }

    #[test]
    fn a_mask_off_by_two_voxels_recovers_the_lesion() {
        let lesion = ball(10.0);
        let brain = vec![1u8; lesion.len()];
        let intensity = image(&lesion);
        for coarse in [ball(8.0), ball(12.0)] {
            let before = dice(&coarse, &lesion);
            let refined = refine_boundary(&coarse, &intensity, &brain, DIMS, MM, 4.0).unwrap();
            assert!(
                refined.mask == lesion,
                "Dice before {before:.3}, after {:.3}",
                dice(&refined.mask, &lesion)
            );
            assert!(refined.threshold > 150.0 && refined.threshold < 250.0);
        }
    }

    #[test]
    fn the_band_is_in_millimetres_of_the_spacing() {
        // With 2 mm voxels a mask 1.5 voxels too small is 3 mm off: a
        // 4 mm band reaches the lesion's border.
        let lesion = ball(10.0);
        let brain = vec![1u8; lesion.len()];
        let intensity = image(&lesion);
        let coarse = ball(8.5);
        let mm2 = [2.0, 2.0, 2.0];
        let wide = refine_boundary(&coarse, &intensity, &brain, DIMS, mm2, 4.0).unwrap();
        let inside = |a: &[u8], b: &[u8]| a.iter().zip(b).all(|(&x, &y)| x == 0 || y != 0);
        assert!(dice(&coarse, &lesion) < 0.8);
        assert!(dice(&wide.mask, &lesion) > 0.99 && inside(&wide.mask, &lesion));
        // A 1.9 mm band's surroundings (1.9 to 3.8 mm out: the next
        // voxel) lie in the lesion, as bright as the core.
        assert!(matches!(
            refine_boundary(&coarse, &intensity, &brain, DIMS, mm2, 1.9),
            Err(NotRefined::NotHyperintense { .. })
        ));
    }

    #[test]
    fn nothing_outside_the_brain_and_no_detached_bright_voxel_joins() {
        let lesion = ball(10.0);
        let mut intensity = image(&lesion);
        // The brain ends at z = 25, in the lesion's top cap.
        let brain: Vec<u8> = (0..lesion.len())
            .map(|i| u8::from(i / (DIMS[0] * DIMS[1]) <= 25))
            .collect();
        // A bright voxel 11.5 voxels from the centre: in the band, but
        // dark lesion-free voxels separate it from the lesion.
        let speck = index(31, 19, 19);
        assert_eq!(lesion[speck], 0);
        intensity[speck] = 400.0;
        let refined = refine_boundary(&ball(8.0), &intensity, &brain, DIMS, MM, 4.0).unwrap();
        assert_eq!(refined.mask[speck], 0, "the detached speck stays out");
        let expected: Vec<u8> = (0..lesion.len()).map(|i| lesion[i] & brain[i]).collect();
        assert!(
            refined.mask == expected,
            "Dice {:.3}",
            dice(&refined.mask, &expected)
        );
    }

    #[test]
    fn leaves_a_mask_it_cannot_judge() {
        let lesion = ball(10.0);
        let brain = vec![1u8; lesion.len()];
        let intensity = image(&lesion);
        assert_eq!(
            refine_boundary(&ball(3.0), &intensity, &brain, DIMS, MM, 4.0),
            Err(NotRefined::NoCore)
        );
        let dark: Vec<f32> = intensity.iter().map(|v| 400.0 - v).collect();
        assert!(matches!(
            refine_boundary(&lesion, &dark, &brain, DIMS, MM, 4.0),
            Err(NotRefined::NotHyperintense { .. })
        ));
        let only_lesion: Vec<u8> = lesion.clone();
        assert_eq!(
            refine_boundary(&lesion, &intensity, &only_lesion, DIMS, MM, 4.0),
            Err(NotRefined::NoSurroundings)
        );
    }
}
