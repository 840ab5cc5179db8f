//! # clisc-imaging: the image-processing toolbox of clisc
//!
//! Small, dependency-free building blocks used by the host (metrics,
//! preprocessing) and by plugins (ROIs, prompts, pseudo-labels): connected
//! components, binary morphology, overlap measures, intensity mappings,
//! resampling, and a bit-exact port of Pillow's 8-bit resize ([`pillow`],
//! for the SAM and CLIP preprocessing). Volumes are x-fastest slices of
//! `[nx, ny, nz]`; 2D images are row-major `width x height` (the
//! conventions of `clisc-sdk`).
#![warn(unreachable_pub)]

pub mod bias;
pub mod components;
pub mod distance;
pub mod intensity;
pub mod morphology;
pub mod overlap;
pub mod pillow;
pub mod refine;
pub mod resample;

/// Size of a volume along x, y, z.
pub type Dims3 = [usize; 3];

/// Neighbourhood used by components and morphology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    /// Neighbours share a face (6 in 3D, 4 in 2D).
    Face,
    /// Neighbours share a face, edge or corner (26 in 3D, 8 in 2D).
    Full,
}

/// The neighbour offsets of `connectivity` in 3D (excluding the centre).
pub(crate) fn offsets_3d(connectivity: Connectivity) -> Vec<[isize; 3]> {
    let mut out = Vec::new();
    for dz in -1..=1isize {
        for dy in -1..=1isize {
            for dx in -1..=1isize {
                let manhattan = dx.abs() + dy.abs() + dz.abs();
                let keep = match connectivity {
                    Connectivity::Face => manhattan == 1,
                    Connectivity::Full => manhattan >= 1,
                };
                if keep {
                    out.push([dx, dy, dz]);
                }
            }
        }
    }
    out
}
