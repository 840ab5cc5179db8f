//! SAM 2 on single images, with `SAM2ImagePredictor`'s pre- and
//! post-processing: the 8-bit RGB image is scaled to [0, 1], resized to
//! the model's square input (bilinear, antialiased, aspect not kept) and
//! normalised with ImageNet's mean and deviation; prompts are scaled to
//! that square; box corners become points labelled 2 and 3; the
//! low-resolution logits are resized back to the image (bilinear) and
//! thresholded at 0.

use crate::image_encoder::BackboneFeatures;
use crate::model::{Sam2, PIXEL_MEAN, PIXEL_STD};
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
    pub fn to_model_frame(&self, image_hw: (usize, usize), size: i64) -> (Tensor, Tensor) {
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
        (coords, Tensor::from_slice(&labels).view([1, n]))
    }

    /// Number of points the model sees (box corners included).
    pub fn num_points(&self) -> usize {
        self.points.len() + if self.bbox.is_some() { 2 } else { 0 }
    }
}

/// The model input for an 8-bit RGB image (interleaved, `h x w x 3`):
/// `(1, 3, size, size)` (`SAM2Transforms`).
pub fn input_tensor(rgb: &[u8], h: usize, w: usize, size: i64) -> Tensor {
    let image = Tensor::from_slice(rgb)
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .to_kind(Kind::Float)
        / 255.0;
    let resized =
        image
            .unsqueeze(0)
            .internal_upsample_bilinear2d_aa([size, size], false, None, None);
    let mean = Tensor::from_slice(&PIXEL_MEAN.map(|v| v as f32)).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&PIXEL_STD.map(|v| v as f32)).view([1, 3, 1, 1]);
    (resized - mean) / std
}

/// The outputs for one prompt.
#[derive(Debug)]
pub struct Prediction {
    /// Logits at the image's size `(M, h, w)`; the mask is `> 0`.
    pub logits: Tensor,
    /// Predicted IoU per mask `(M)`.
    pub iou: Tensor,
    /// Low-resolution logits `(M, S/4, S/4)`, clamped to [-32, 32].
    pub low_res: Tensor,
}

/// An image's embedding, ready for any number of prompts.
#[derive(Debug)]
pub struct ImageEmbedding {
    features: BackboneFeatures,
    /// `vision + no_mem_embed`: what the decoder attends to.
    image_embed: Tensor,
    image_hw: (usize, usize),
}

impl ImageEmbedding {
    /// The decoder's input `(1, 256, S/16, S/16)`.
    pub fn image_embed(&self) -> &Tensor {
        &self.image_embed
    }

    /// The decoder's high-resolution features.
    pub fn high_res(&self) -> &[Tensor; 2] {
        &self.features.high_res
    }
}

/// The image predictor.
#[derive(Debug)]
pub struct Sam2Predictor {
    /// The model.
    pub model: Sam2,
}

impl Sam2Predictor {
    /// Embeds an 8-bit RGB image (`set_image`).
    pub fn embed(&self, rgb: &[u8], h: usize, w: usize) -> ImageEmbedding {
        let _guard = tch::no_grad_guard();
        let input = input_tensor(rgb, h, w, self.model.image_size()).to_device(self.model.device());
        let features = self.model.forward_image(&input);
        let image_embed = self.model.without_memory(&features.vision);
        ImageEmbedding {
            features,
            image_embed,
            image_hw: (h, w),
        }
    }

    /// Masks for one prompt (`predict(..., return_logits=True)`).
    pub fn predict(
        &self,
        embedding: &ImageEmbedding,
        prompt: &Prompt,
        multimask: bool,
    ) -> Prediction {
        let _guard = tch::no_grad_guard();
        let device = self.model.device();
        let (coords, labels) = prompt.to_model_frame(embedding.image_hw, self.model.image_size());
        let (sparse, dense) = self
            .model
            .embed_prompts(&coords.to_device(device), &labels.to_device(device));
        let out = self.model.decode(
            &embedding.image_embed,
            &embedding.features.high_res,
            &sparse,
            &dense,
            multimask,
        );
        let (h, w) = embedding.image_hw;
        let logits = out
            .masks
            .upsample_bilinear2d([h as i64, w as i64], false, None, None);
        Prediction {
            logits: logits.squeeze_dim(0),
            iou: out.iou.squeeze_dim(0),
            low_res: out.masks.clamp(-32.0, 32.0).squeeze_dim(0),
        }
    }
}
