//! SAM 2 on single images, as `SAM2ImagePredictor`: the image and the
//! prompts through [`crate::transforms`], the decoder's single mask
//! replaced by the best multimask output when unstable, the
//! low-resolution logits resized back to the image (bilinear); the mask is
//! logits > 0.

use crate::image_encoder::BackboneFeatures;
use crate::model::Sam2;
use crate::transforms::{input_tensor, Prompt};
use clisc_sdk::PluginError;
use tch::Tensor;

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
    /// Embeds an 8-bit RGB image of `w x h` pixels, interleaved (`set_image`).
    pub fn embed(&self, rgb: &[u8], w: usize, h: usize) -> Result<ImageEmbedding, PluginError> {
        let _guard = tch::no_grad_guard();
        let input =
            input_tensor(rgb, w, h, self.model.image_size())?.to_device(self.model.device());
        let features = self.model.forward_image(&input);
        let image_embed = self.model.without_memory(&features.vision);
        Ok(ImageEmbedding {
            features,
            image_embed,
            image_hw: (h, w),
        })
    }

    /// Masks for one prompt (`predict(..., return_logits=True)`).
    pub fn predict(
        &self,
        embedding: &ImageEmbedding,
        prompt: &Prompt,
        multimask: bool,
    ) -> Result<Prediction, PluginError> {
        let _guard = tch::no_grad_guard();
        let device = self.model.device();
        let (coords, labels) =
            prompt.to_model_frame(embedding.image_hw, self.model.image_size())?;
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
        Ok(Prediction {
            logits: logits.squeeze_dim(0),
            iou: out.iou.squeeze_dim(0),
            low_res: out.masks.clamp(-32.0, 32.0).squeeze_dim(0),
        })
    }
}
