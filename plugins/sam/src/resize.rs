//! `ResizeLongestSide` exactly as the official predictor does it: the
//! uint8 image goes through torchvision's `to_pil_image` + `resize`, i.e.
//! Pillow's separable bilinear resampling with 8-bit fixed-point
//! coefficients, horizontal pass first, each pass rounded and clipped to
//! uint8 (ported in [`clisc_imaging::pillow`]). Reproducing it bit for bit
//! keeps the image embedding identical to Python's for the same input.

use clisc_imaging::pillow::{self, Filter};

/// Output size `(h, w)` with the longest side scaled to `target`
/// (`ResizeLongestSide.get_preprocess_shape`).
pub(crate) fn preprocess_shape(old_h: usize, old_w: usize, target: usize) -> (usize, usize) {
    let scale = target as f64 / old_h.max(old_w) as f64;
    let new_h = (old_h as f64 * scale + 0.5) as usize;
    let new_w = (old_w as f64 * scale + 0.5) as usize;
    (new_h, new_w)
}

/// Resizes an interleaved uint8 image (`channels` per pixel, row-major)
/// from `w x h` to `new_w x new_h` with Pillow's `Image.resize(...,
/// BILINEAR)` arithmetic.
pub(crate) fn pil_resize_bilinear(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    new_w: usize,
    new_h: usize,
) -> Vec<u8> {
    pillow::resize(src, w, h, channels, new_w, new_h, Filter::Bilinear)
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
}
