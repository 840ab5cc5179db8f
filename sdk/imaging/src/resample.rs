//! 2D resampling of single-channel images.

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
}
