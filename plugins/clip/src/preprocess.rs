//! CLIP's image preprocessing, reproduced exactly, and the conversion of
//! an MRI slice to the 8-bit image CLIP expects.
//!
//! The reference transform is torchvision's `Resize(224, BICUBIC)` ->
//! `CenterCrop(224)` -> RGB -> `ToTensor` -> `Normalize(mean, std)` applied
//! to a PIL image. On a PIL image, `Resize` calls Pillow's
//! `Image.resize(..., BICUBIC)`, which is *not* plain bicubic
//! interpolation: it is a separable convolution with the cubic kernel
//! (a = -0.5) stretched by the downscaling factor (antialiasing), with
//! weights normalised per output pixel, quantised to 22-bit fixed point,
//! a horizontal pass first (rounded and clipped to 8 bits) and then a
//! vertical pass. [`resize_bicubic_u8`] ports that algorithm (Pillow's
//! `Resample.c`) so the pixels match Pillow's exactly.
//!
//! Short side to 224 with the long side `floor(224 * long / short)`
//! (torchvision's rule), centre crop at `round((size - 224) / 2)` with
//! Python's half-to-even rounding, then `x / 255`, minus mean, over std in
//! f32.
//!
//! **Slice -> image.** CLISC's released code converts the z-scored float
//! slice to 8 bits in a way that clips almost all of the signal to a few
//! grey levels (negative values saturate at 0, values above 1 at 1). We
//! map each slice linearly from its own minimum and maximum to 0..=255
//! ([`slice_to_u8`]) and replicate it to three channels, which is what an
//! 8-bit screenshot of the slice (what CLIP saw during pre-training) looks
//! like. The slice is used as stored (row = y, column = x), no transposition.

use clisc_imaging::intensity::minmax_to_u8;
use tch::{Kind, Tensor};

/// CLIP's per-channel mean (RGB, on 0..1), digits as in the reference.
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's per-channel standard deviation, digits as in the reference.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: first input index, tap count, fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

fn precompute(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's `(int)` truncates toward zero.
        let xmin = ((center - support + 0.5).trunc() as i64).max(0) as usize;
        let xmax = ((center + support + 0.5).trunc() as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = cubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..n {
            let v = if ww != 0.0 { k[x] / ww } else { k[x] };
            let fixed = v * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if v < 0.0 {
                (fixed - 0.5).trunc() as i32
            } else {
                (fixed + 0.5).trunc() as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        bounds,
        ksize,
        weights,
    }
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Pillow's `Image.resize((new_w, new_h), Image.BICUBIC)` of an 8-bit
/// interleaved image with `channels` channels (row-major). Bit-exact port
/// of Pillow's two-pass fixed-point resampler.
pub fn resize_bicubic_u8(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    new_width: usize,
    new_height: usize,
) -> Vec<u8> {
    assert_eq!(src.len(), width * height * channels, "image buffer size");
    let need_h = new_width != width;
    let need_v = new_height != height;
    let vert = precompute(height, new_height);
    // Rows of the input that the vertical pass will read.
    let (y_first, y_last) = if need_v {
        let first = vert.bounds.first().map(|b| b.0).unwrap_or(0);
        let last = vert.bounds.last().map(|b| b.0 + b.1).unwrap_or(height);
        (first, last)
    } else {
        (0, height)
    };
    let half = 1i64 << (PRECISION_BITS - 1);
    let (tmp, tmp_w, tmp_h, row0) = if need_h {
        let horiz = precompute(width, new_width);
        let rows = y_last - y_first;
        let mut out = vec![0u8; new_width * rows * channels];
        for y in 0..rows {
            let line = &src[(y + y_first) * width * channels..(y + y_first + 1) * width * channels];
            for (xx, &(xmin, n)) in horiz.bounds.iter().enumerate() {
                let k = &horiz.weights[xx * horiz.ksize..xx * horiz.ksize + n];
                for c in 0..channels {
                    let mut ss = half;
                    for (x, &w) in k.iter().enumerate() {
                        ss += line[(x + xmin) * channels + c] as i64 * w as i64;
                    }
                    out[(y * new_width + xx) * channels + c] = clip8(ss);
                }
            }
        }
        (out, new_width, rows, y_first)
    } else {
        (src.to_vec(), width, height, 0)
    };
    if !need_v {
        return tmp;
    }
    let _ = tmp_h;
    let mut out = vec![0u8; tmp_w * new_height * channels];
    for (yy, &(ymin, n)) in vert.bounds.iter().enumerate() {
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + n];
        let ymin = ymin - row0;
        for xx in 0..tmp_w {
            for c in 0..channels {
                let mut ss = half;
                for (y, &w) in k.iter().enumerate() {
                    ss += tmp[((y + ymin) * tmp_w + xx) * channels + c] as i64 * w as i64;
                }
                out[(yy * tmp_w + xx) * channels + c] = clip8(ss);
            }
        }
    }
    out
}

/// Size after torchvision's `Resize(n_px)`: short side `n_px`, long side
/// `floor(n_px * long / short)`. Returns `(width, height)`.
pub fn resized_size(width: usize, height: usize, n_px: usize) -> (usize, usize) {
    if width <= height {
        (n_px, n_px * height / width)
    } else {
        (n_px * width / height, n_px)
    }
}

/// CLIP's full transform of an 8-bit image (1 channel = grey, replicated
/// to RGB; or 3 channels RGB, interleaved, row-major) -> [3, n_px, n_px]
/// normalised f32 values (channel-major).
pub fn preprocess_u8(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    n_px: usize,
) -> Vec<f32> {
    assert!(channels == 1 || channels == 3, "1 or 3 channels");
    assert!(width > 0 && height > 0, "empty image");
    let (rw, rh) = resized_size(width, height, n_px);
    let resized = resize_bicubic_u8(src, width, height, channels, rw, rh);
    let top = ((rh as f64 - n_px as f64) / 2.0).round_ties_even() as usize;
    let left = ((rw as f64 - n_px as f64) / 2.0).round_ties_even() as usize;
    let mut out = vec![0f32; 3 * n_px * n_px];
    for c in 0..3 {
        let sc = if channels == 1 { 0 } else { c };
        for y in 0..n_px {
            for x in 0..n_px {
                let v = resized[((y + top) * rw + x + left) * channels + sc] as f32 / 255.0;
                out[(c * n_px + y) * n_px + x] = (v - CLIP_MEAN[c]) / CLIP_STD[c];
            }
        }
    }
    out
}

/// Per-slice min-max to 8 bits (see the module docs for why).
pub fn slice_to_u8(values: &[f32]) -> Vec<u8> {
    minmax_to_u8(values)
}

/// A batch of preprocessed images as a [n, 3, n_px, n_px] tensor.
pub fn batch_tensor(images: &[Vec<f32>], n_px: usize) -> Tensor {
    let flat: Vec<f32> = images.iter().flat_map(|v| v.iter().copied()).collect();
    Tensor::from_slice(&flat)
        .view([images.len() as i64, 3, n_px as i64, n_px as i64])
        .to_kind(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_constant_images() {
        let img: Vec<u8> = (0..12).map(|v| v * 20).collect();
        assert_eq!(resize_bicubic_u8(&img, 4, 3, 1, 4, 3), img);
        let flat = vec![77u8; 50 * 30];
        assert!(resize_bicubic_u8(&flat, 50, 30, 1, 17, 11)
            .iter()
            .all(|&v| v == 77));
        assert!(resize_bicubic_u8(&flat, 50, 30, 1, 120, 70)
            .iter()
            .all(|&v| v == 77));
    }

    #[test]
    fn sizes_follow_torchvision() {
        assert_eq!(resized_size(240, 155, 224), (346, 224));
        assert_eq!(resized_size(155, 240, 224), (224, 346));
        assert_eq!(resized_size(224, 224, 224), (224, 224));
    }

    #[test]
    fn normalised_grey_replicated() {
        let img = vec![255u8; 30 * 20];
        let out = preprocess_u8(&img, 30, 20, 1, 16);
        assert_eq!(out.len(), 3 * 16 * 16);
        for c in 0..3 {
            let expect = (1.0 - CLIP_MEAN[c]) / CLIP_STD[c];
            assert!((out[c * 256] - expect).abs() < 1e-6);
        }
    }
}
