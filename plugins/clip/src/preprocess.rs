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
//! vertical pass. [`clisc_imaging::pillow`] ports that algorithm (Pillow's
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
//! (`slice_to_u8`) and replicate it to three channels, which is what an
//! 8-bit screenshot of the slice (what CLIP saw during pre-training) looks
//! like. The slice is used as stored (row = y, column = x), no transposition.

use clisc_imaging::intensity::minmax_to_u8;
use clisc_imaging::pillow::{self, Filter};
use tch::{Kind, Tensor};

/// CLIP's per-channel mean (RGB, on 0..1), digits as in the reference.
#[allow(clippy::excessive_precision)]
pub(crate) const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's per-channel standard deviation, digits as in the reference.
#[allow(clippy::excessive_precision)]
pub(crate) const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// Size after torchvision's `Resize(n_px)`: short side `n_px`, long side
/// `floor(n_px * long / short)`. Returns `(width, height)`.
pub(crate) fn resized_size(width: usize, height: usize, n_px: usize) -> (usize, usize) {
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
    let resized = pillow::resize(src, width, height, channels, rw, rh, Filter::Bicubic);
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
pub(crate) fn slice_to_u8(values: &[f32]) -> Vec<u8> {
    minmax_to_u8(values)
}

/// A batch of preprocessed images as a [n, 3, n_px, n_px] tensor.
pub(crate) fn batch_tensor(images: &[Vec<f32>], n_px: usize) -> Tensor {
    let flat: Vec<f32> = images.iter().flat_map(|v| v.iter().copied()).collect();
    Tensor::from_slice(&flat)
        .view([images.len() as i64, 3, n_px as i64, n_px as i64])
        .to_kind(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

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
