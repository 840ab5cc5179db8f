//! From a 3D activation map to a binary region of interest, without labels.
//!
//! The CAM (already zero outside the brain and on gated slices) is
//! binarised at a threshold (fixed, or Otsu's threshold of the activations
//! of the brain voxels on non-gated slices), cleaned with a 3D binary
//! opening (full 3x3x3 element, like `scipy.ndimage.binary_opening` with
//! `np.ones((3,3,3))`) and reduced to the connected components (face
//! connectivity, `scipy.ndimage.label`'s default) of at least
//! `min_component_fraction` (CLISC: 1/3) of the largest one.

use crate::amda::Threshold;
use clisc_imaging::components::keep_at_least_fraction_of_largest;
use clisc_imaging::morphology::opening;
use clisc_imaging::{Connectivity, Dims3};

/// The ROI of a CAM volume and the threshold used.
pub fn roi_from_cam(
    cam: &[f32],
    brain: &[u8],
    active_slices: &[bool],
    dims: Dims3,
    threshold: Threshold,
    min_component_fraction: f64,
) -> (Vec<u8>, f32) {
    let n = dims[0] * dims[1];
    let inside: Vec<f32> = cam
        .iter()
        .zip(brain)
        .enumerate()
        .filter(|(i, (_, b))| **b != 0 && active_slices[i / n])
        .map(|(_, (c, _))| *c)
        .collect();
    let t = threshold.value(&inside);
    let binary: Vec<u8> = cam.iter().map(|&c| u8::from(c > 0.0 && c >= t)).collect();
    let opened = opening(&binary, dims);
    (
        keep_at_least_fraction_of_largest(
            &opened,
            dims,
            Connectivity::Face,
            min_component_fraction,
        ),
        t,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_big_blobs_and_drops_specks() {
        let dims = [12, 12, 8];
        let idx = |x: usize, y: usize, z: usize| x + 12 * (y + 12 * z);
        let mut cam = vec![0.1f32; 12 * 12 * 8];
        for z in 2..6 {
            for y in 2..7 {
                for x in 2..7 {
                    cam[idx(x, y, z)] = 0.9;
                }
            }
        }
        cam[idx(10, 10, 1)] = 0.95; // speck: removed by the opening
        let brain = vec![1u8; cam.len()];
        let (roi, t) = roi_from_cam(
            &cam,
            &brain,
            &[true; 8],
            dims,
            Threshold::Fixed(0.5),
            1.0 / 3.0,
        );
        assert_eq!(t, 0.5);
        assert_eq!(roi.iter().filter(|&&v| v == 1).count(), 5 * 5 * 4);
        assert_eq!(roi[idx(10, 10, 1)], 0);
        let (roi_otsu, t_otsu) =
            roi_from_cam(&cam, &brain, &[true; 8], dims, Threshold::Otsu, 1.0 / 3.0);
        assert!(t_otsu > 0.1 && t_otsu <= 0.9, "{t_otsu}");
        assert_eq!(roi_otsu, roi);
    }
}
