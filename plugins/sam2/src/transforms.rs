//! SAM 2's input transforms (`utils/transforms.py`, `SAM2Transforms`):
//! an 8-bit RGB image to the model's normalised square input, and prompts
//! in image pixels to points in that square. Both predictors use them; the
//! video predictor's own loader resizes JPEG frames with Pillow instead,
//! which clisc, reading slices rather than JPEG files, does not reproduce.

use crate::model::{PIXEL_MEAN, PIXEL_STD};
use clisc_sdk::PluginError;
use tch::{Kind, Tensor};

/// Prompts on one image, in its pixel coordinates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    /// Clicks `(x, y)`.
    pub points: Vec<[f64; 2]>,
    /// Their labels: 1 foreground, 0 background.
    pub labels: Vec<i64>,
    /// Box `(x0, y0, x1, y1)`.
    pub bbox: Option<[f64; 4]>,
}

impl Prompt {
    /// Points `(1, N, 2)` in the model's `size x size` frame and labels
    /// `(1, N)`, box corners first (`_prep_prompts` + `concat_points`).
    pub(crate) fn to_model_frame(
        &self,
        image_hw: (usize, usize),
        size: i64,
    ) -> Result<(Tensor, Tensor), PluginError> {
        if self.points.len() != self.labels.len() {
            return Err(PluginError::input(format!(
                "sam2: {} points but {} labels",
                self.points.len(),
                self.labels.len()
            )));
        }
        let (h, w) = (image_hw.0 as f64, image_hw.1 as f64);
        let s = size as f64;
        let mut coords = vec![];
        let mut labels = vec![];
        if let Some([x0, y0, x1, y1]) = self.bbox {
            coords.extend([x0, y0, x1, y1].map(|v| v as f32));
            labels.extend([2i64, 3]);
        }
        for (p, &l) in self.points.iter().zip(&self.labels) {
            coords.extend([p[0] as f32, p[1] as f32]);
            labels.push(l);
        }
        let n = labels.len() as i64;
        // As the official code: divide by the image size, then scale (in f32).
        let image_size = Tensor::from_slice(&[w as f32, h as f32]);
        let coords = Tensor::from_slice(&coords).view([1, n, 2]) / image_size * s;
        Ok((coords, Tensor::from_slice(&labels).view([1, n])))
    }

    /// Number of points the model sees (box corners included).
    pub(crate) fn num_points(&self) -> usize {
        self.points.len() + if self.bbox.is_some() { 2 } else { 0 }
    }
}

/// The model input for an 8-bit RGB image of `w x h` pixels (interleaved,
/// row-major): `(1, 3, size, size)` (`SAM2Transforms`: `ToTensor`, an
/// antialiased bilinear resize to the square, ImageNet normalisation).
pub fn input_tensor(rgb: &[u8], w: usize, h: usize, size: i64) -> Result<Tensor, PluginError> {
    if rgb.len() != w * h * 3 {
        return Err(PluginError::input(format!(
            "sam2: an RGB image of {w} x {h} pixels needs {} bytes, got {}",
            w * h * 3,
            rgb.len()
        )));
    }
    // Contiguous channels-first, as `ToTensor` gives.
    let image = Tensor::from_slice(rgb)
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .contiguous()
        .to_kind(Kind::Float)
        / 255.0;
    let resized =
        image
            .unsqueeze(0)
            .internal_upsample_bilinear2d_aa([size, size], false, None, None);
    let mean = Tensor::from_slice(&PIXEL_MEAN.map(|v| v as f32)).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&PIXEL_STD.map(|v| v as f32)).view([1, 3, 1, 1]);
    Ok((resized - mean) / std)
}
