//! Pillow's `Image.resize` for 8-bit images, ported bit for bit.
//!
//! The official SAM and CLIP preprocessing hand a PIL image to torchvision,
//! whose `resize` then calls Pillow's `Image.resize(..., BILINEAR)` (SAM's
//! `ResizeLongestSide`) or `Image.resize(..., BICUBIC)` (CLIP's
//! `Resize(224)`). That is *not* plain bi-linear/cubic interpolation, and
//! the pixels it produces feed the image encoders, so to get the same
//! embeddings as Python for the same input we reproduce it exactly.
//!
//! Ported from Pillow's `libImaging/Resample.c` (`ImagingResample` with no
//! crop box, `precompute_coeffs`, `normalize_coeffs_8bpc`,
//! `ImagingResampleHorizontal_8bpc` / `ImagingResampleVertical_8bpc`):
//!
//! - separable: a horizontal pass into an 8-bit intermediate image (only
//!   the rows the vertical pass will read), then a vertical pass; an axis
//!   whose size does not change is not resampled at all;
//! - per output sample, the filter kernel is centred on `(i + 0.5) * scale`
//!   and, when downscaling, stretched by the scale factor (its support
//!   grows, which antialiases); the taps are normalised to sum to 1;
//! - the weights are quantised to fixed point with
//!   `PRECISION_BITS = 32 - 8 - 2` fractional bits (rounded half away from
//!   zero), each sum starts at one half for rounding and is clipped to
//!   `0..=255` (`clip8`) after every pass.
//!
//! Images are interleaved 8-bit, row-major, `channels` values per pixel;
//! every channel is resampled independently with the same weights.

/// The resampling filters of Pillow used here (`Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `BILINEAR`: the triangle kernel, support 1.
    Bilinear,
    /// `BICUBIC`: the cubic convolution kernel with `a = -0.5`, support 2.
    Bicubic,
}

impl Filter {
    /// Radius of the kernel at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// The kernel (Pillow's `bilinear_filter` / `bicubic_filter`).
    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fractional bits of the fixed-point weights (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output sample along one axis: the first input index and the tap
/// count, and the fixed-point weights (`ksize` slots per output sample,
/// the first `n` used).
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

impl Coeffs {
    /// The weights of output sample `i`.
    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let (min, n) = self.bounds[i];
        (min, &self.weights[i * self.ksize..i * self.ksize + n])
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for resampling
/// `in_size` samples to `out_size` with `filter`.
fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero.
        let xmin = ((center - support + 0.5).trunc() as i64).max(0) as usize;
        let xmax = ((center + support + 0.5).trunc() as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
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

/// Rounds a fixed-point sum back to 8 bits, saturating (Pillow's `clip8`).
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

/// One half in fixed point: the start of every sum, so that the final
/// shift rounds to nearest.
const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over `rows` rows of `src` (`width` pixels each).
fn horizontal(src: &[u8], width: usize, rows: usize, channels: usize, coeffs: &Coeffs) -> Vec<u8> {
    let new_width = coeffs.bounds.len();
    let mut out = vec![0u8; new_width * rows * channels];
    for y in 0..rows {
        let line = &src[y * width * channels..(y + 1) * width * channels];
        let out_line = &mut out[y * new_width * channels..(y + 1) * new_width * channels];
        for xx in 0..new_width {
            let (xmin, k) = coeffs.taps(xx);
            for c in 0..channels {
                let mut ss = HALF;
                for (x, &w) in k.iter().enumerate() {
                    ss += line[(x + xmin) * channels + c] as i64 * w as i64;
                }
                out_line[xx * channels + c] = clip8(ss);
            }
        }
    }
    out
}

/// Vertical pass over `src` (rows of `stride` bytes); `row0` is the input
/// row index of the first row of `src`.
fn vertical(src: &[u8], stride: usize, row0: usize, coeffs: &Coeffs) -> Vec<u8> {
    let new_height = coeffs.bounds.len();
    let mut out = vec![0u8; new_height * stride];
    for yy in 0..new_height {
        let (ymin, k) = coeffs.taps(yy);
        let ymin = ymin - row0;
        let out_row = &mut out[yy * stride..(yy + 1) * stride];
        for (x, o) in out_row.iter_mut().enumerate() {
            let mut ss = HALF;
            for (y, &w) in k.iter().enumerate() {
                ss += src[(y + ymin) * stride + x] as i64 * w as i64;
            }
            *o = clip8(ss);
        }
    }
    out
}

/// Pillow's `Image.resize((new_width, new_height), filter)` of an 8-bit
/// interleaved image of `width x height` pixels with `channels` values
/// each (row-major). Bit-identical to Pillow's output.
pub fn resize(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    new_width: usize,
    new_height: usize,
    filter: Filter,
) -> Vec<u8> {
    assert_eq!(src.len(), width * height * channels, "image buffer size");
    let need_h = new_width != width;
    let need_v = new_height != height;
    let vert = need_v.then(|| precompute(height, new_height, filter));
    // Rows of the input that the vertical pass will read.
    let (y_first, y_last) = match &vert {
        Some(v) => (
            v.bounds.first().map_or(0, |b| b.0),
            v.bounds.last().map_or(height, |b| b.0 + b.1),
        ),
        None => (0, height),
    };
    let (tmp, row0) = if need_h {
        let horiz = precompute(width, new_width, filter);
        let rows = &src[y_first * width * channels..y_last * width * channels];
        (
            horizontal(rows, width, y_last - y_first, channels, &horiz),
            y_first,
        )
    } else {
        (src.to_vec(), 0)
    };
    match vert {
        Some(v) => vertical(&tmp, new_width * channels, row0, &v),
        None => tmp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_pillow_on_a_small_example() {
        // np.array(Image.fromarray(np.array([[0, 100, 200]], np.uint8)).resize((5, 1), Image.BILINEAR))
        // == [[0, 40, 100, 160, 200]]
        assert_eq!(
            resize(&[0, 100, 200], 3, 1, 1, 5, 1, Filter::Bilinear),
            vec![0, 40, 100, 160, 200]
        );
        // A constant image stays constant, in every channel.
        let img = [7u8, 9, 11].repeat(12);
        let out = resize(&img, 4, 3, 3, 9, 7, Filter::Bilinear);
        assert!(out.chunks(3).all(|p| p == [7, 9, 11]));
    }

    #[test]
    fn bicubic_identity_and_constant_images() {
        let img: Vec<u8> = (0..12).map(|v| v * 20).collect();
        assert_eq!(resize(&img, 4, 3, 1, 4, 3, Filter::Bicubic), img);
        let flat = vec![77u8; 50 * 30];
        assert!(resize(&flat, 50, 30, 1, 17, 11, Filter::Bicubic)
            .iter()
            .all(|&v| v == 77));
        assert!(resize(&flat, 50, 30, 1, 120, 70, Filter::Bicubic)
            .iter()
            .all(|&v| v == 77));
    }

    #[test]
    fn weights_are_normalised_and_widen_when_downscaling() {
        let one = 1i32 << PRECISION_BITS;
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            for (n, m) in [(10, 3), (3, 10), (240, 224), (7, 7)] {
                let c = precompute(n, m, filter);
                for i in 0..m {
                    let (min, k) = c.taps(i);
                    assert!(min + k.len() <= n);
                    let sum: i32 = k.iter().sum();
                    assert!((sum - one).abs() <= k.len() as i32, "{filter:?} {n}->{m}");
                }
            }
        }
        // Downscaling by 4 with the bilinear kernel reads ~8 input samples.
        let c = precompute(40, 10, Filter::Bilinear);
        assert!(c.taps(5).1.len() >= 8);
    }
}
