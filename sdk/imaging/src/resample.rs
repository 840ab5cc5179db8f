//! Resampling of single-channel images (2D) and volumes (3D).
//!
//! The linear resizes use half-pixel centres (PyTorch's
//! `align_corners=False`): output sample `i` of `m` reads the input at
//! `(i + 0.5) n / m - 0.5`, so both grids cover the same extent, whatever
//! the sizes.

use crate::Dims3;

/// Bilinear resize with half-pixel centres (PyTorch `interpolate(...,
/// mode="bilinear", align_corners=False)` without antialiasing).
pub fn resize_bilinear(
    src: &[f32],
    width: usize,
    height: usize,
    new_width: usize,
    new_height: usize,
) -> Vec<f32> {
    assert_eq!(src.len(), width * height);
    let sx = width as f32 / new_width as f32;
    let sy = height as f32 / new_height as f32;
    let mut out = Vec::with_capacity(new_width * new_height);
    for y in 0..new_height {
        let fy = ((y as f32 + 0.5) * sy - 0.5).max(0.0);
        let y0 = (fy.floor() as usize).min(height - 1);
        let y1 = (y0 + 1).min(height - 1);
        let wy = fy - y0 as f32;
        for x in 0..new_width {
            let fx = ((x as f32 + 0.5) * sx - 0.5).max(0.0);
            let x0 = (fx.floor() as usize).min(width - 1);
            let x1 = (x0 + 1).min(width - 1);
            let wx = fx - x0 as f32;
            let top = src[x0 + width * y0] * (1.0 - wx) + src[x1 + width * y0] * wx;
            let bottom = src[x0 + width * y1] * (1.0 - wx) + src[x1 + width * y1] * wx;
            out.push(top * (1.0 - wy) + bottom * wy);
        }
    }
    out
}

/// Nearest-neighbour resize (PyTorch `mode="nearest"`).
pub fn resize_nearest<T: Copy>(
    src: &[T],
    width: usize,
    height: usize,
    new_width: usize,
    new_height: usize,
) -> Vec<T> {
    assert_eq!(src.len(), width * height);
    let mut out = Vec::with_capacity(new_width * new_height);
    for y in 0..new_height {
        let sy = ((y * height) / new_height).min(height - 1);
        for x in 0..new_width {
            let sx = ((x * width) / new_width).min(width - 1);
            out.push(src[sx + width * sy]);
        }
    }
    out
}

/// For each of `new_n` output samples along an axis of `n` input
/// samples: the two input indices it reads and the weight of the second.
fn linear_taps(n: usize, new_n: usize) -> Vec<(usize, usize, f32)> {
    let scale = n as f64 / new_n as f64;
    (0..new_n)
        .map(|i| {
            let f = ((i as f64 + 0.5) * scale - 0.5).clamp(0.0, (n - 1) as f64);
            let i0 = (f.floor() as usize).min(n - 1);
            let i1 = (i0 + 1).min(n - 1);
            (i0, i1, (f - i0 as f64) as f32)
        })
        .collect()
}

/// Linear resampling along one axis (0 = x, 1 = y, 2 = z) of an x-fastest
/// volume of `dims`; returns the new volume and its dims.
fn resample_axis(src: &[f32], dims: Dims3, axis: usize, new_n: usize) -> (Vec<f32>, Dims3) {
    let mut out_dims = dims;
    out_dims[axis] = new_n;
    if dims[axis] == new_n {
        return (src.to_vec(), dims);
    }
    let taps = linear_taps(dims[axis], new_n);
    // Stride of `axis`, and how many voxels share one index along it.
    let stride = dims[..axis].iter().product::<usize>();
    let outer = dims[axis + 1..].iter().product::<usize>();
    let mut out = vec![0.0f32; out_dims.iter().product()];
    for o in 0..outer {
        let src_block = &src[o * stride * dims[axis]..(o + 1) * stride * dims[axis]];
        let dst_block = &mut out[o * stride * new_n..(o + 1) * stride * new_n];
        for (i, &(i0, i1, w)) in taps.iter().enumerate() {
            let a = &src_block[i0 * stride..(i0 + 1) * stride];
            let b = &src_block[i1 * stride..(i1 + 1) * stride];
            let d = &mut dst_block[i * stride..(i + 1) * stride];
            for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
                *d = a + (b - a) * w;
            }
        }
    }
    (out, out_dims)
}

/// Trilinear resize of an x-fastest volume from `dims` to `new_dims`
/// (PyTorch `interpolate(..., mode="trilinear", align_corners=False)`
/// without antialiasing), one axis at a time.
pub fn resize_trilinear(src: &[f32], dims: Dims3, new_dims: Dims3) -> Vec<f32> {
    assert_eq!(src.len(), dims.iter().product::<usize>());
    assert!(new_dims.iter().all(|&n| n > 0), "empty target {new_dims:?}");
    let (x, d) = resample_axis(src, dims, 0, new_dims[0]);
    let (y, d) = resample_axis(&x, d, 1, new_dims[1]);
    resample_axis(&y, d, 2, new_dims[2]).0
}

/// Resizes a label map from `dims` to `new_dims`: each label's indicator
/// is resized trilinearly and every voxel takes the label with the largest
/// interpolated share (ties go to the smaller label, so a binary mask
/// keeps the voxels whose share is above one half). Smoother than nearest
/// neighbour at any factor, and a round trip through a finer or coarser
/// grid changes a mask only at its border.
pub fn resize_labels(src: &[u8], dims: Dims3, new_dims: Dims3) -> Vec<u8> {
    assert_eq!(src.len(), dims.iter().product::<usize>());
    let n = new_dims.iter().product::<usize>();
    let mut present = [false; 256];
    for &v in src {
        present[v as usize] = true;
    }
    let mut best_share = vec![f32::NEG_INFINITY; n];
    let mut out = vec![0u8; n];
    for label in (0..=255u8).filter(|&l| present[l as usize]) {
        let indicator: Vec<f32> = src
            .iter()
            .map(|&v| f32::from(u8::from(v == label)))
            .collect();
        let share = resize_trilinear(&indicator, dims, new_dims);
        for ((best, o), s) in best_share.iter_mut().zip(out.iter_mut()).zip(share) {
            if s > *best {
                *best = s;
                *o = label;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_upsampling_matches_torch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0.,1.],[2.,3.]]]]), size=(4,4),
        //   mode="bilinear", align_corners=False)[0,0,0] == [0, .25, .75, 1]
        let out = resize_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4);
        let row0: Vec<f32> = out[..4].to_vec();
        for (a, b) in row0.iter().zip([0.0, 0.25, 0.75, 1.0]) {
            assert!((a - b).abs() < 1e-6, "{row0:?}");
        }
        assert!((out[15] - 3.0).abs() < 1e-6);
    }

    #[test]
    fn nearest_is_identity_on_same_size() {
        assert_eq!(
            resize_nearest(&[1u8, 2, 3, 4], 2, 2, 2, 2),
            vec![1, 2, 3, 4]
        );
        assert_eq!(resize_nearest(&[1u8, 2], 2, 1, 4, 1), vec![1, 1, 2, 2]);
    }

    #[test]
    fn trilinear_matches_torch_and_keeps_constants() {
        // torch.nn.functional.interpolate(torch.arange(8.).reshape(1,1,2,2,2),
        //   size=(4,4,4), mode="trilinear", align_corners=False)[0,0,0,0] == [0, .25, .75, 1]
        // (torch's last dim is our x).
        let src: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let out = resize_trilinear(&src, [2, 2, 2], [4, 4, 4]);
        for (a, b) in out[..4].iter().zip([0.0, 0.25, 0.75, 1.0]) {
            assert!((a - b).abs() < 1e-6, "{:?}", &out[..4]);
        }
        // z = 3, y = 3, x = 3 reads the last input voxel.
        assert!((out[63] - 7.0).abs() < 1e-6);
        let flat = resize_trilinear(&[2.5; 60], [5, 4, 3], [7, 2, 9]);
        assert!(flat.iter().all(|&v| (v - 2.5).abs() < 1e-6));
        assert_eq!(flat.len(), 7 * 2 * 9);
    }

    #[test]
    fn labels_survive_a_round_trip_except_at_the_border() {
        // A 12^3 ball of label 2 with a label-1 shell inside a 30^3 volume.
        let d = [30usize, 30, 30];
        let mut src = vec![0u8; 27_000];
        for z in 0..30 {
            for y in 0..30 {
                for x in 0..30 {
                    let r = [x, y, z]
                        .map(|c| (c as f64 - 14.5).powi(2))
                        .iter()
                        .sum::<f64>()
                        .sqrt();
                    src[x + 30 * (y + 30 * z)] = if r < 6.0 {
                        2
                    } else if r < 9.0 {
                        1
                    } else {
                        0
                    };
                }
            }
        }
        let coarse = resize_labels(&src, d, [12, 12, 12]);
        assert!(coarse.contains(&2) && coarse.contains(&1));
        let back = resize_labels(&coarse, [12, 12, 12], d);
        let changed = src.iter().zip(&back).filter(|(a, b)| a != b).count();
        let labelled = src.iter().filter(|&&v| v > 0).count();
        // Only a thin border moves: well under a third of the labelled voxels.
        assert!(changed * 3 < labelled, "{changed} of {labelled}");
        // The same size is the identity.
        assert_eq!(resize_labels(&src, d, d), src);
    }
}
