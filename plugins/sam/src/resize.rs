//! `ResizeLongestSide` exactly as the official predictor does it: the
//! uint8 image goes through torchvision's `to_pil_image` + `resize`, i.e.
//! Pillow's separable bilinear resampling with 8-bit fixed-point
//! coefficients (22 fractional bits), horizontal pass first, each pass
//! rounded and clipped to uint8. Reproducing it bit for bit keeps the
//! image embedding identical to Python's for the same input.

/// Output size `(h, w)` with the longest side scaled to `target`
/// (`ResizeLongestSide.get_preprocess_shape`).
pub fn preprocess_shape(old_h: usize, old_w: usize, target: usize) -> (usize, usize) {
    let scale = target as f64 / old_h.max(old_w) as f64;
    let new_h = (old_h as f64 * scale + 0.5) as usize;
    let new_w = (old_w as f64 * scale + 0.5) as usize;
    (new_h, new_w)
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's fixed-point bilinear weights for resampling `in_size` to
/// `out_size`: for each output index, the first input index and the
/// integer weights.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale;
    let mut out = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut w: Vec<f64> = (0..n)
            .map(|x| {
                let t = ((x + xmin) as f64 - center + 0.5) * ss;
                let t = t.abs();
                if t < 1.0 {
                    1.0 - t
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            for v in w.iter_mut() {
                *v /= total;
            }
        }
        let k = w
            .iter()
            .map(|&v| {
                let s = v * (1u32 << PRECISION_BITS) as f64;
                if v < 0.0 {
                    (-0.5 + s) as i32
                } else {
                    (0.5 + s) as i32
                }
            })
            .collect();
        out.push((xmin, k));
    }
    out
}

#[inline]
fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes an interleaved uint8 image (`channels` per pixel, row-major)
/// from `w x h` to `new_w x new_h` with Pillow's `Image.resize(...,
/// BILINEAR)` arithmetic.
pub fn pil_resize_bilinear(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    new_w: usize,
    new_h: usize,
) -> Vec<u8> {
    assert_eq!(src.len(), w * h * channels, "image buffer size");
    let horizontal = if new_w != w {
        let coeffs = coefficients(w, new_w);
        let mut out = vec![0u8; new_w * h * channels];
        for y in 0..h {
            let row = &src[y * w * channels..(y + 1) * w * channels];
            for (xx, (xmin, k)) in coeffs.iter().enumerate() {
                for c in 0..channels {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, &kw) in k.iter().enumerate() {
                        ss += row[(xmin + i) * channels + c] as i64 * kw as i64;
                    }
                    out[(y * new_w + xx) * channels + c] = clip8(ss);
                }
            }
        }
        out
    } else {
        src.to_vec()
    };
    if new_h == h {
        return horizontal;
    }
    let coeffs = coefficients(h, new_h);
    let stride = new_w * channels;
    let mut out = vec![0u8; new_h * stride];
    for (yy, (ymin, k)) in coeffs.iter().enumerate() {
        for x in 0..stride {
            let mut ss: i64 = 1 << (PRECISION_BITS - 1);
            for (i, &kw) in k.iter().enumerate() {
                ss += horizontal[(ymin + i) * stride + x] as i64 * kw as i64;
            }
            out[yy * stride + x] = clip8(ss);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_side_shape() {
        assert_eq!(preprocess_shape(240, 240, 1024), (1024, 1024));
        assert_eq!(preprocess_shape(155, 240, 1024), (661, 1024));
        assert_eq!(preprocess_shape(2000, 1000, 1024), (1024, 512));
    }

    #[test]
    fn matches_pillow_on_a_small_example() {
        // np.array(Image.fromarray(np.array([[0, 100, 200]], np.uint8)).resize((5, 1), Image.BILINEAR))
        // == [[0, 40, 100, 160, 200]]
        assert_eq!(
            pil_resize_bilinear(&[0, 100, 200], 3, 1, 1, 5, 1),
            vec![0, 40, 100, 160, 200]
        );
        // A constant image stays constant, in every channel.
        let img = [7u8, 9, 11].repeat(12);
        let out = pil_resize_bilinear(&img, 4, 3, 3, 9, 7);
        assert!(out.chunks(3).all(|p| p == [7, 9, 11]));
    }
}
