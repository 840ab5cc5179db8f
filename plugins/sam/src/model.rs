//! The complete SAM model: configuration inferred from a checkpoint's
//! tensor shapes, construction under the official parameter names and
//! checked loading of official `.pth` / `.safetensors` files.

use super::image_encoder::{ImageEncoderConfig, ImageEncoderViT};
use super::mask_decoder::{FeedForwardNames, MaskDecoder, MaskDecoderConfig};
use super::prompt_encoder::PromptEncoder;
use clisc_nn::WeightFile;
use clisc_sdk::PluginError;
use std::path::Path;
use tch::nn::VarStore;
use tch::Device;

/// Pixel mean on 0..255 RGB (`Sam.pixel_mean`).
pub const PIXEL_MEAN: [f64; 3] = [123.675, 116.28, 103.53];
/// Pixel standard deviation on 0..255 RGB (`Sam.pixel_std`).
pub const PIXEL_STD: [f64; 3] = [58.395, 57.12, 57.375];

/// Everything needed to build a SAM model.
#[derive(Debug, Clone, PartialEq)]
pub struct SamConfig {
    /// The ViT image encoder.
    pub encoder: ImageEncoderConfig,
    /// Prompt embedding width (256).
    pub prompt_embed_dim: i64,
    /// Hidden channels of the mask-input downscaling (16).
    pub mask_in_chans: i64,
    /// The mask decoder.
    pub decoder: MaskDecoderConfig,
}

impl SamConfig {
    /// The official ViT-B model.
    pub fn vit_b() -> Self {
        Self {
            encoder: ImageEncoderConfig::vit_b(),
            prompt_embed_dim: 256,
            mask_in_chans: 16,
            decoder: Default::default(),
        }
    }

    /// A readable name (`vit_b`, `vit_l`, `vit_h` or the dimensions).
    pub fn variant(&self) -> String {
        match (self.encoder.embed_dim, self.encoder.depth) {
            (768, 12) => "vit_b".into(),
            (1024, 24) => "vit_l".into(),
            (1280, 32) => "vit_h".into(),
            (d, n) => format!("vit_{d}x{n}"),
        }
    }

    /// Infers the configuration from the tensor shapes of a SAM state dict
    /// (`file` only names the source in errors).
    pub fn infer(weights: &WeightFile) -> Result<Self, PluginError> {
        let file = weights.path();
        let shape = |name: &str| weights.shape(name);
        let bad = |name: &str, got: &[i64], want: &str| {
            PluginError::weights(format!(
                "{}: tensor `{name}` has shape {got:?}, expected {want}; is this a Segment Anything (SAM) checkpoint?",
                file.display()
            ))
        };
        if !weights.names().any(|k| k.starts_with("image_encoder.")) {
            let sample: Vec<&str> = weights.names().take(5).collect();
            return Err(PluginError::weights(format!(
                "{} is not a SAM checkpoint: no `image_encoder.*` tensors (first keys: {sample:?})",
                file.display()
            )));
        }
        let pw = shape("image_encoder.patch_embed.proj.weight")?;
        if pw.len() != 4 || pw[2] != pw[3] {
            return Err(bad(
                "image_encoder.patch_embed.proj.weight",
                &pw,
                "[dim, 3, p, p]",
            ));
        }
        let (embed_dim, in_chans, patch_size) = (pw[0], pw[1], pw[2]);
        let pos = shape("image_encoder.pos_embed")?;
        if pos.len() != 4 || pos[1] != pos[2] || pos[3] != embed_dim {
            return Err(bad(
                "image_encoder.pos_embed",
                &pos,
                &format!("[1, g, g, {embed_dim}]"),
            ));
        }
        let grid = pos[1];
        let depth = count_indexed(weights, "image_encoder.blocks.");
        if depth == 0 {
            return Err(PluginError::weights(format!(
                "{}: no `image_encoder.blocks.N.*` tensors",
                file.display()
            )));
        }
        let mut window_size = 0;
        let mut global = Vec::new();
        let mut head_dim = 0;
        for i in 0..depth {
            let name = format!("image_encoder.blocks.{i}.attn.rel_pos_h");
            let rp = shape(&name)?;
            if rp.len() != 2 || rp[0] % 2 == 0 {
                return Err(bad(&name, &rp, "[2 * size - 1, head_dim]"));
            }
            head_dim = rp[1];
            let size = (rp[0] + 1) / 2;
            if size == grid {
                global.push(i);
            } else if window_size == 0 || window_size == size {
                window_size = size;
            } else {
                return Err(bad(
                    &name,
                    &rp,
                    &format!(
                        "[{}, {head_dim}] (window {window_size}) or global [{}, {head_dim}]",
                        2 * window_size - 1,
                        2 * grid - 1
                    ),
                ));
            }
        }
        if head_dim == 0 || embed_dim % head_dim != 0 {
            return Err(bad(
                "image_encoder.blocks.0.attn.rel_pos_h",
                &[head_dim],
                &format!("a head width dividing {embed_dim}"),
            ));
        }
        let mlp = shape("image_encoder.blocks.0.mlp.lin1.weight")?;
        let neck = shape("image_encoder.neck.0.weight")?;
        let encoder = ImageEncoderConfig {
            img_size: grid * patch_size,
            patch_size,
            in_chans,
            embed_dim,
            depth,
            num_heads: embed_dim / head_dim,
            mlp_ratio: mlp[0] as f64 / embed_dim as f64,
            out_chans: neck[0],
            window_size,
            global_attn_indexes: global,
        };
        let no_mask = shape("prompt_encoder.no_mask_embed.weight")?;
        let mask_in = shape("prompt_encoder.mask_downscaling.3.weight")?;
        let tokens = shape("mask_decoder.mask_tokens.weight")?;
        let decoder = MaskDecoderConfig {
            transformer_dim: tokens[1],
            depth: count_indexed(weights, "mask_decoder.transformer.layers."),
            num_heads: 8,
            mlp_dim: shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")?[0],
            num_mask_tokens: tokens[0],
            iou_head_depth: count_indexed(weights, "mask_decoder.iou_prediction_head.layers."),
            iou_head_hidden_dim: shape("mask_decoder.iou_prediction_head.layers.0.weight")?[0],
            feedforward_names: FeedForwardNames::Sam,
        };
        Ok(Self {
            encoder,
            prompt_embed_dim: no_mask[1],
            mask_in_chans: mask_in[0],
            decoder,
        })
    }
}

/// Number of consecutive indices `N` with tensors named `{prefix}N.*`.
fn count_indexed(weights: &WeightFile, prefix: &str) -> i64 {
    let mut max = -1i64;
    for k in weights.names() {
        if let Some(rest) = k.strip_prefix(prefix) {
            if let Some(n) = rest.split('.').next().and_then(|s| s.parse::<i64>().ok()) {
                max = max.max(n);
            }
        }
    }
    max + 1
}

/// SAM: image encoder, prompt encoder and mask decoder with their weights.
#[derive(Debug)]
pub struct Sam {
    /// Holds every parameter (official names).
    pub vs: VarStore,
    /// `image_encoder`.
    pub image_encoder: ImageEncoderViT,
    /// `prompt_encoder`.
    pub prompt_encoder: PromptEncoder,
    /// `mask_decoder`.
    pub mask_decoder: MaskDecoder,
    /// The configuration.
    pub config: SamConfig,
}

impl Sam {
    /// A model with zero/one-initialised parameters on `device` (load
    /// weights before use).
    pub fn new(config: &SamConfig, device: Device) -> Self {
        let vs = VarStore::new(device);
        let root = vs.root();
        let enc = &config.encoder;
        let image_encoder = ImageEncoderViT::new(&root / "image_encoder", enc);
        let prompt_encoder = PromptEncoder::new(
            &root / "prompt_encoder",
            config.prompt_embed_dim,
            enc.grid_size(),
            enc.img_size,
            config.mask_in_chans,
        );
        let mask_decoder = MaskDecoder::new(&root / "mask_decoder", &config.decoder);
        let mut sam = Self {
            vs,
            image_encoder,
            prompt_encoder,
            mask_decoder,
            config: config.clone(),
        };
        sam.vs.freeze();
        sam
    }

    /// Loads an official checkpoint (`sam_vit_{b,l,h}_*.pth`, zip-format
    /// `torch.save` of the state dict) or a `.safetensors` export; the
    /// architecture is inferred from the tensor shapes.
    pub fn load(path: &Path, device: Device) -> Result<Self, PluginError> {
        let weights = WeightFile::open(path)?;
        Self::from_weights(&weights, device)
    }

    /// Builds the model described by `weights` and copies them in.
    pub fn from_weights(weights: &WeightFile, device: Device) -> Result<Self, PluginError> {
        let path = weights.path();
        let config = SamConfig::infer(weights)?;
        let sam = Self::new(&config, device);
        weights.copy_into(&sam.vs, &[])?;
        tracing::info!(file = %path.display(), variant = %config.variant(), "loaded SAM weights");
        Ok(sam)
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Side of the model's square input (1024).
    pub fn img_size(&self) -> i64 {
        self.config.encoder.img_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clisc_nn::WeightFormat;
    use tch::Tensor;

    #[test]
    fn vit_b_has_the_official_parameter_count_and_names() {
        let sam = Sam::new(&SamConfig::vit_b(), Device::Cpu);
        let vars = sam.vs.variables();
        let n: i64 = vars.values().map(|t| t.numel() as i64).sum();
        // sum(p.numel() for p in sam_model_registry["vit_b"]().state_dict().values())
        assert_eq!(n, 93_735_728);
        for name in [
            "image_encoder.blocks.2.attn.rel_pos_h",
            "image_encoder.neck.3.bias",
            "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
            "prompt_encoder.mask_downscaling.6.weight",
            "mask_decoder.output_hypernetworks_mlps.3.layers.2.weight",
            "mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.bias",
        ] {
            assert!(vars.contains_key(name), "missing {name}");
        }
        assert_eq!(
            vars["image_encoder.blocks.2.attn.rel_pos_h"].size(),
            vec![127, 64]
        );
        assert_eq!(
            vars["image_encoder.blocks.0.attn.rel_pos_h"].size(),
            vec![27, 64]
        );
    }

    #[test]
    fn config_is_inferred_from_shapes() {
        let sam = Sam::new(&SamConfig::vit_b(), Device::Cpu);
        let named: Vec<(String, Tensor)> = sam.vs.variables().into_iter().collect();
        let file = WeightFile::from_tensors(Path::new("x.pth"), WeightFormat::TorchPickle, named);
        let cfg = SamConfig::infer(&file).unwrap();
        assert_eq!(cfg, SamConfig::vit_b());
        assert_eq!(cfg.variant(), "vit_b");
        let wrong = vec![(
            "visual.conv1.weight".to_string(),
            Tensor::zeros([1], (tch::Kind::Float, Device::Cpu)),
        )];
        let wrong =
            WeightFile::from_tensors(Path::new("clip.pt"), WeightFormat::TorchScript, wrong);
        let err = SamConfig::infer(&wrong).unwrap_err();
        assert!(
            err.message.contains("clip.pt") && err.message.contains("not a SAM checkpoint"),
            "{}",
            err.message
        );
    }
}
