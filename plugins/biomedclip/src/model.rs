//! BiomedCLIP (open_clip's `CustomTextCLIP`) in `tch`, with open_clip's
//! parameter names so `open_clip_pytorch_model.bin` loads unchanged:
//! `visual.trunk.*` and `visual.head.proj.weight` ([`crate::vision`]),
//! `text.transformer.*` and `text.proj.{0,2}.weight` ([`crate::text`]),
//! `logit_scale`.
//!
//! As open_clip's `forward`: both feature sets are L2-normalised and the
//! logits are `exp(logit_scale) * image @ text.T` (BiomedCLIP has no logit
//! bias). The architecture is read from the tensor shapes; the numbers of
//! attention heads are not stored in a state dict and follow timm's ViT-B
//! and BERT-base (64 channels a head). Inference runs in f32.

use std::path::Path;

use clisc_nn::WeightFile;
use clisc_sdk::PluginError;
use tch::nn::{self, Init, VarStore};
use tch::{Device, Kind, Tensor};

use crate::text::{TextConfig, TextTower};
use crate::vision::{VisionConfig, VisionTower};

/// Buffers older `transformers` versions saved with BERT (open_clip drops
/// `position_ids` when loading too); the model does not need them.
const NON_WEIGHTS: [&str; 2] = [
    "text.transformer.embeddings.position_ids",
    "text.transformer.embeddings.token_type_ids",
];

/// Channels per attention head in both towers (ViT-B/16 and BERT-base).
const HEAD_DIM: i64 = 64;

/// Zero initialisation: every variable is overwritten by the checkpoint,
/// and zeros are cheaper than random draws for 196M values.
pub(crate) const ZERO: Init = Init::Const(0.0);

/// A linear layer with open_clip's / timm's / BERT's `weight` (`bias`).
pub(crate) fn linear(p: nn::Path, input: i64, output: i64, bias: bool) -> nn::Linear {
    let cfg = nn::LinearConfig {
        ws_init: ZERO,
        bs_init: bias.then_some(ZERO),
        bias,
    };
    nn::linear(p, input, output, cfg)
}

/// A LayerNorm with `weight` and `bias` and the tower's epsilon.
pub(crate) fn layer_norm(p: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    let cfg = nn::LayerNormConfig {
        eps,
        ..Default::default()
    };
    nn::layer_norm(p, vec![dim], cfg)
}

/// Architecture of a BiomedCLIP model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BiomedClipConfig {
    /// Dimension of the joint image-text embedding (512).
    pub embed_dim: i64,
    /// The image tower.
    pub vision: VisionConfig,
    /// The text tower.
    pub text: TextConfig,
}

impl BiomedClipConfig {
    /// `microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`.
    pub fn published() -> BiomedClipConfig {
        BiomedClipConfig {
            embed_dim: 512,
            vision: VisionConfig {
                image_size: 224,
                patch_size: 16,
                width: 768,
                layers: 12,
                heads: 12,
                mlp_dim: 3072,
            },
            text: TextConfig {
                vocab_size: 30522,
                hidden: 768,
                layers: 12,
                heads: 12,
                intermediate: 3072,
                max_positions: 512,
                type_vocab_size: 2,
                proj_hidden: 640,
            },
        }
    }

    /// Reads the architecture from a checkpoint's tensor shapes. A file
    /// of another model is named with what it lacks.
    pub fn from_weights(w: &WeightFile) -> Result<BiomedClipConfig, PluginError> {
        let file = w.path().display().to_string();
        if w.get("visual.trunk.patch_embed.proj.weight").is_none() {
            let hint = if w.get("visual.conv1.weight").is_some() {
                " (it is an OpenAI-style CLIP checkpoint: use the `clip` plugin)"
            } else {
                ""
            };
            return Err(PluginError::weights(format!(
                "`{file}` is not a BiomedCLIP open_clip checkpoint: it has no tensor \
                 `visual.trunk.patch_embed.proj.weight`{hint}"
            )));
        }
        let shape = |name: &str, dims: usize| -> Result<Vec<i64>, PluginError> {
            let s = w.shape(name)?;
            if s.len() != dims {
                return Err(PluginError::weights(format!(
                    "`{file}`: tensor `{name}` should have {dims} dimensions, found shape {s:?}"
                )));
            }
            Ok(s)
        };
        let count = |prefix: &str, suffix: &str| {
            w.names()
                .filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(suffix))
                .filter(|i| i.parse::<u32>().is_ok())
                .count() as i64
        };
        let patch = shape("visual.trunk.patch_embed.proj.weight", 4)?;
        let pos = shape("visual.trunk.pos_embed", 3)?;
        let grid = (((pos[1] - 1).max(0) as f64).sqrt()).round() as i64;
        let head = shape("visual.head.proj.weight", 2)?;
        let words = shape("text.transformer.embeddings.word_embeddings.weight", 2)?;
        let proj_0 = shape("text.proj.0.weight", 2)?;
        let proj_2 = shape("text.proj.2.weight", 2)?;
        let (width, hidden) = (patch[0], words[1]);
        let cfg = BiomedClipConfig {
            embed_dim: head[0],
            vision: VisionConfig {
                image_size: grid * patch[3],
                patch_size: patch[3],
                width,
                layers: count("visual.trunk.blocks.", ".attn.qkv.weight"),
                heads: width / HEAD_DIM,
                mlp_dim: shape("visual.trunk.blocks.0.mlp.fc1.weight", 2)?[0],
            },
            text: TextConfig {
                vocab_size: words[0],
                hidden,
                layers: count(
                    "text.transformer.encoder.layer.",
                    ".attention.self.query.weight",
                ),
                heads: hidden / HEAD_DIM,
                intermediate: shape(
                    "text.transformer.encoder.layer.0.intermediate.dense.weight",
                    2,
                )?[0],
                max_positions: shape("text.transformer.embeddings.position_embeddings.weight", 2)?
                    [0],
                type_vocab_size: shape(
                    "text.transformer.embeddings.token_type_embeddings.weight",
                    2,
                )?[0],
                proj_hidden: proj_0[0],
            },
        };
        let problem = if grid * grid + 1 != pos[1] || patch[2] != patch[3] {
            Some(format!(
                "`visual.trunk.pos_embed` {pos:?} and `visual.trunk.patch_embed.proj.weight` {patch:?} \
                 do not describe a square grid of square patches plus a class token"
            ))
        } else if width % HEAD_DIM != 0 || hidden % HEAD_DIM != 0 {
            Some(format!(
                "widths {width} and {hidden} are not multiples of {HEAD_DIM}-channel heads"
            ))
        } else if proj_2[0] != cfg.embed_dim {
            Some(format!(
                "the text projection `text.proj.2.weight` {proj_2:?} ends at {} dimensions, the image \
                 projection `visual.head.proj.weight` {head:?} at {}",
                proj_2[0], cfg.embed_dim
            ))
        } else if cfg.text.max_positions < crate::tokenizer::CONTEXT_LENGTH as i64 {
            Some(format!(
                "`text.transformer.embeddings.position_embeddings.weight` has {} positions, fewer than \
                 BiomedCLIP's context of {}",
                cfg.text.max_positions,
                crate::tokenizer::CONTEXT_LENGTH
            ))
        } else {
            None
        };
        match problem {
            Some(p) => Err(PluginError::weights(format!(
                "`{file}` does not look like a BiomedCLIP checkpoint: {p}"
            ))),
            None => Ok(cfg),
        }
    }
}

/// The BiomedCLIP model: image tower, text tower, logit scale.
#[derive(Debug)]
pub struct BiomedClip {
    /// Architecture.
    pub config: BiomedClipConfig,
    vs: VarStore,
    visual: VisionTower,
    text: TextTower,
    logit_scale: Tensor,
}

impl BiomedClip {
    /// Builds the variables (zero-initialised) on `device`.
    pub fn new(config: BiomedClipConfig, device: Device) -> BiomedClip {
        let vs = VarStore::new(device);
        let root = vs.root();
        BiomedClip {
            config,
            visual: VisionTower::new(&root / "visual", &config.vision, config.embed_dim),
            text: TextTower::new(&root / "text", &config.text, config.embed_dim),
            logit_scale: root.var("logit_scale", &[], Init::Const((1.0f64 / 0.07).ln())),
            vs,
        }
    }

    /// Loads `open_clip_pytorch_model.bin` (or the same state dict as
    /// safetensors) onto `device`.
    pub fn load(path: &Path, device: Device) -> Result<BiomedClip, PluginError> {
        Self::from_weights(&WeightFile::open(path)?, device)
    }

    /// Builds the model for `weights`' shapes and copies them in (checked:
    /// missing, unexpected and mis-shaped tensors are named).
    pub fn from_weights(weights: &WeightFile, device: Device) -> Result<BiomedClip, PluginError> {
        let config = BiomedClipConfig::from_weights(weights)?;
        let model = BiomedClip::new(config, device);
        let report = weights.copy_into(&model.vs, &NON_WEIGHTS)?;
        tracing::info!(
            file = %weights.path().display(),
            format = weights.format().describe(),
            tensors = report.copied,
            parameters = model.parameter_count(),
            "BiomedCLIP loaded (ViT {} layers, patch {}, {} px; BERT {} layers; embed {})",
            config.vision.layers,
            config.vision.patch_size,
            config.vision.image_size,
            config.text.layers,
            config.embed_dim
        );
        Ok(model)
    }

    /// The variables (for tests and conversions).
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Number of parameters (values of all variables).
    pub fn parameter_count(&self) -> i64 {
        self.vs
            .variables()
            .values()
            .map(Tensor::numel)
            .sum::<usize>() as i64
    }

    /// Device of the weights.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Image features (before normalisation): `images` is [n, 3, R, R],
    /// already through the CLIP transform; returns [n, embed].
    pub fn encode_image(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let x = images.to_device(self.device()).to_kind(Kind::Float);
            self.visual.forward(&x)
        })
    }

    /// Text features (before normalisation): `ids` is [n, context] (int64,
    /// from [`crate::WordPieceTokenizer::tokenize`]); returns [n, embed].
    pub fn encode_text(&self, ids: &Tensor) -> Tensor {
        tch::no_grad(|| self.text.forward(&ids.to_device(self.device())))
    }

    /// `exp(logit_scale)`, the temperature of the logits.
    pub fn logit_scale(&self) -> f64 {
        tch::no_grad(|| self.logit_scale.exp().double_value(&[]))
    }

    /// Logits per image [images, texts]: scaled cosine similarities of the
    /// L2-normalised features (open_clip's `forward`).
    pub fn logits(&self, image_features: &Tensor, text_features: &Tensor) -> Tensor {
        clisc_clip::model::scaled_cosine_logits(image_features, text_features, &self.logit_scale)
    }
}
