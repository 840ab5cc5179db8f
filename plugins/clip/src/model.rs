//! CLIP (vision transformer + text transformer) in `tch`, with OpenAI's
//! parameter names so the official checkpoints load unchanged:
//! `visual.conv1.weight`, `visual.class_embedding`,
//! `visual.positional_embedding`, `visual.ln_pre.*`,
//! `visual.transformer.resblocks.N.{attn.in_proj_weight, attn.in_proj_bias,
//! attn.out_proj.*, ln_1.*, mlp.c_fc.*, mlp.c_proj.*, ln_2.*}`,
//! `visual.ln_post.*`, `visual.proj`, `token_embedding.weight`,
//! `positional_embedding`, `transformer.resblocks.N.*`, `ln_final.*`,
//! `text_projection`, `logit_scale`.
//!
//! Same computation as the reference `model.py`: pre-LayerNorm residual
//! blocks, QuickGELU (`x * sigmoid(1.702 x)`), projections applied as
//! `x @ P`, image features from the class token, text features from the
//! end-of-text token (the argmax of the ids), causal mask in the text
//! transformer. Inference runs in f32 (fp16 checkpoints are widened).
//! The configuration (ViT-B/32, B/16, L/14, L/14@336, ...) is read from the
//! checkpoint's tensor shapes, as `clip.model.build_model` does.

use std::path::Path;

use clisc_nn::WeightFile;
use clisc_sdk::PluginError;
use tch::nn::{self, Init, Module, VarStore};
use tch::{Device, Kind, Tensor};

/// Non-weight entries of OpenAI's archives that the model does not need.
const NON_WEIGHTS: [&str; 3] = ["input_resolution", "context_length", "vocab_size"];

/// Architecture hyper-parameters of a CLIP ViT model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipConfig {
    /// Dimension of the joint image-text embedding.
    pub embed_dim: i64,
    /// Input image side in pixels (224 or 336).
    pub image_resolution: i64,
    /// Vision transformer width.
    pub vision_width: i64,
    /// Vision transformer depth.
    pub vision_layers: i64,
    /// Patch side (32, 16 or 14).
    pub vision_patch_size: i64,
    /// Text context length (77).
    pub context_length: i64,
    /// Vocabulary size (49408).
    pub vocab_size: i64,
    /// Text transformer width.
    pub text_width: i64,
    /// Text transformer depth.
    pub text_layers: i64,
}

impl ClipConfig {
    /// OpenAI ViT-B/32 (the model CLISC uses).
    pub fn vit_b32() -> ClipConfig {
        ClipConfig {
            embed_dim: 512,
            image_resolution: 224,
            vision_width: 768,
            vision_layers: 12,
            vision_patch_size: 32,
            context_length: 77,
            vocab_size: 49408,
            text_width: 512,
            text_layers: 12,
        }
    }

    /// Heads of the vision transformer (width / 64, as in the reference).
    pub(crate) fn vision_heads(&self) -> i64 {
        self.vision_width / 64
    }

    /// Heads of the text transformer (width / 64).
    pub(crate) fn text_heads(&self) -> i64 {
        self.text_width / 64
    }

    /// Patches per side.
    pub fn grid(&self) -> i64 {
        self.image_resolution / self.vision_patch_size
    }

    /// Reads the configuration from a checkpoint's tensor shapes.
    pub fn from_weights(w: &WeightFile) -> Result<ClipConfig, PluginError> {
        let file = w.path().display().to_string();
        if w.get("visual.proj").is_none() && w.names().any(|n| n.starts_with("visual.layer1.")) {
            return Err(PluginError::weights(format!(
                "`{file}` is a ResNet CLIP checkpoint (RN50 family); only the ViT models are supported"
            )));
        }
        let conv = w.shape("visual.conv1.weight")?;
        let pos = w.shape("visual.positional_embedding")?;
        if conv.len() != 4 || pos.len() != 2 {
            return Err(PluginError::weights(format!(
                "`{file}`: `visual.conv1.weight` should be [width, 3, patch, patch] and `visual.positional_embedding` \
                 [tokens, width], found {conv:?} and {pos:?}"
            )));
        }
        let count_blocks = |prefix: &str| {
            w.names()
                .filter(|n| n.starts_with(prefix) && n.ends_with(".attn.in_proj_weight"))
                .filter(|n| {
                    n[prefix.len()..]
                        .split('.')
                        .next()
                        .is_some_and(|i| i.parse::<u32>().is_ok())
                })
                .count() as i64
        };
        let grid = (((pos[0] - 1) as f64).sqrt()).round() as i64;
        let text_proj = w.shape("text_projection")?;
        let cfg = ClipConfig {
            embed_dim: *text_proj.last().unwrap_or(&0),
            image_resolution: conv[3] * grid,
            vision_width: conv[0],
            vision_layers: count_blocks("visual.transformer.resblocks."),
            vision_patch_size: conv[3],
            context_length: w.shape("positional_embedding")?[0],
            vocab_size: w.shape("token_embedding.weight")?[0],
            text_width: w.shape("ln_final.weight")?[0],
            text_layers: count_blocks("transformer.resblocks."),
        };
        if grid * grid + 1 != pos[0] || cfg.vision_layers == 0 || cfg.text_layers == 0 {
            return Err(PluginError::weights(format!(
                "`{file}` does not look like a CLIP ViT checkpoint (inferred {cfg:?})"
            )));
        }
        Ok(cfg)
    }
}

/// PyTorch `nn.LayerNorm` (eps 1e-5) with `weight`/`bias`.
#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    dim: i64,
}

impl LayerNorm {
    fn new(p: nn::Path, dim: i64) -> LayerNorm {
        LayerNorm {
            weight: p.var("weight", &[dim], Init::Const(1.0)),
            bias: p.var("bias", &[dim], Init::Const(0.0)),
            dim,
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm([self.dim], Some(&self.weight), Some(&self.bias), 1e-5, true)
    }
}

/// `nn.MultiheadAttention` with packed input projection.
#[derive(Debug)]
struct Attention {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: nn::Linear,
    heads: i64,
}

impl Attention {
    fn new(p: nn::Path, width: i64, heads: i64) -> Attention {
        Attention {
            in_proj_weight: p.var("in_proj_weight", &[3 * width, width], Init::Const(0.0)),
            in_proj_bias: p.var("in_proj_bias", &[3 * width], Init::Const(0.0)),
            out_proj: nn::linear(&p / "out_proj", width, width, Default::default()),
            heads,
        }
    }
    /// `x`: [batch, tokens, width].
    fn forward(&self, x: &Tensor, causal: bool) -> Tensor {
        let (n, l, d) = x.size3().unwrap_or((0, 0, 0));
        let hd = d / self.heads;
        let qkv = x.linear(&self.in_proj_weight, Some(&self.in_proj_bias));
        let heads = |t: &Tensor| t.view([n, l, self.heads, hd]).transpose(1, 2);
        let parts = qkv.chunk(3, -1);
        let (q, k, v) = (heads(&parts[0]), heads(&parts[1]), heads(&parts[2]));
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            causal,
            None,
            false,
        );
        self.out_proj
            .forward(&y.transpose(1, 2).contiguous().view([n, l, d]))
    }
}

/// `ResidualAttentionBlock`: pre-LN attention and QuickGELU MLP.
#[derive(Debug)]
struct Block {
    attn: Attention,
    ln_1: LayerNorm,
    c_fc: nn::Linear,
    c_proj: nn::Linear,
    ln_2: LayerNorm,
}

impl Block {
    fn new(p: nn::Path, width: i64, heads: i64) -> Block {
        let mlp = &p / "mlp";
        Block {
            attn: Attention::new(&p / "attn", width, heads),
            ln_1: LayerNorm::new(&p / "ln_1", width),
            c_fc: nn::linear(&mlp / "c_fc", width, 4 * width, Default::default()),
            c_proj: nn::linear(&mlp / "c_proj", 4 * width, width, Default::default()),
            ln_2: LayerNorm::new(&p / "ln_2", width),
        }
    }
    fn forward(&self, x: &Tensor, causal: bool) -> Tensor {
        let x = x + self.attn.forward(&self.ln_1.forward(x), causal);
        let h = self.c_fc.forward(&self.ln_2.forward(&x));
        let h = &h * (&h * 1.702).sigmoid();
        x + self.c_proj.forward(&h)
    }
}

/// `Transformer`: a stack of blocks under `resblocks.N`.
#[derive(Debug)]
struct Transformer {
    blocks: Vec<Block>,
}

impl Transformer {
    fn new(p: nn::Path, width: i64, layers: i64, heads: i64) -> Transformer {
        let r = &p / "resblocks";
        Transformer {
            blocks: (0..layers)
                .map(|i| Block::new(&r / i, width, heads))
                .collect(),
        }
    }
    fn forward(&self, x: &Tensor, causal: bool) -> Tensor {
        self.blocks
            .iter()
            .fold(x.shallow_clone(), |x, b| b.forward(&x, causal))
    }
}

/// The CLIP model (ViT image encoder, text encoder, logit scale).
#[derive(Debug)]
pub struct Clip {
    /// Hyper-parameters.
    pub config: ClipConfig,
    vs: VarStore,
    conv1: Tensor,
    class_embedding: Tensor,
    visual_positional_embedding: Tensor,
    ln_pre: LayerNorm,
    visual_transformer: Transformer,
    ln_post: LayerNorm,
    visual_proj: Tensor,
    token_embedding: Tensor,
    positional_embedding: Tensor,
    transformer: Transformer,
    ln_final: LayerNorm,
    text_projection: Tensor,
    logit_scale: Tensor,
}

impl Clip {
    /// Builds the variables (zero/one initialised) on `device`.
    pub fn new(config: ClipConfig, device: Device) -> Clip {
        let vs = VarStore::new(device);
        let root = vs.root();
        let v = &root / "visual";
        let c = config;
        let z = Init::Const(0.0);
        Clip {
            config,
            conv1: (&v / "conv1").var(
                "weight",
                &[c.vision_width, 3, c.vision_patch_size, c.vision_patch_size],
                z,
            ),
            class_embedding: v.var("class_embedding", &[c.vision_width], z),
            visual_positional_embedding: v.var(
                "positional_embedding",
                &[c.grid() * c.grid() + 1, c.vision_width],
                z,
            ),
            ln_pre: LayerNorm::new(&v / "ln_pre", c.vision_width),
            visual_transformer: Transformer::new(
                &v / "transformer",
                c.vision_width,
                c.vision_layers,
                c.vision_heads(),
            ),
            ln_post: LayerNorm::new(&v / "ln_post", c.vision_width),
            visual_proj: v.var("proj", &[c.vision_width, c.embed_dim], z),
            token_embedding: (&root / "token_embedding").var(
                "weight",
                &[c.vocab_size, c.text_width],
                z,
            ),
            positional_embedding: root.var(
                "positional_embedding",
                &[c.context_length, c.text_width],
                z,
            ),
            transformer: Transformer::new(
                &root / "transformer",
                c.text_width,
                c.text_layers,
                c.text_heads(),
            ),
            ln_final: LayerNorm::new(&root / "ln_final", c.text_width),
            text_projection: root.var("text_projection", &[c.text_width, c.embed_dim], z),
            logit_scale: root.var("logit_scale", &[], Init::Const((1.0f64 / 0.07).ln())),
            vs,
        }
    }

    /// Loads a checkpoint (OpenAI TorchScript archive, `torch.save` state
    /// dict or safetensors; config from the shapes) onto `device`.
    pub fn load(path: &Path, device: Device) -> Result<Clip, PluginError> {
        let weights = WeightFile::open(path)?;
        Self::from_weights(&weights, device)
    }

    /// Builds the model for `weights`' shapes and copies them in (checked).
    pub fn from_weights(weights: &WeightFile, device: Device) -> Result<Clip, PluginError> {
        let config = ClipConfig::from_weights(weights)?;
        let model = Clip::new(config, device);
        let report = weights.copy_into(&model.vs, &NON_WEIGHTS)?;
        tracing::info!(
            file = %weights.path().display(),
            format = weights.format().describe(),
            tensors = report.copied,
            "CLIP ViT-{}/{} loaded (embed {}, {}x{} input)",
            if config.vision_width >= 1024 { "L" } else { "B" },
            config.vision_patch_size,
            config.embed_dim,
            config.image_resolution,
            config.image_resolution
        );
        Ok(model)
    }

    /// The variables (for tests and conversions).
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Device of the weights.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Image features (before normalisation): `images` is
    /// [batch, 3, R, R], already CLIP-normalised; returns [batch, embed].
    pub fn encode_image(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let x = images.to_device(self.device()).to_kind(Kind::Float);
            let x = x.conv2d(
                &self.conv1,
                None::<Tensor>,
                [self.config.vision_patch_size],
                [0],
                [1],
                1,
            );
            let (n, w, _, _) = x.size4().unwrap_or((0, 0, 0, 0));
            let x = x.reshape([n, w, -1]).permute([0, 2, 1]);
            let cls = self
                .class_embedding
                .view([1, 1, w])
                .expand([n, 1, w], false);
            let x = Tensor::cat(&[cls, x], 1) + &self.visual_positional_embedding;
            let x = self.ln_pre.forward(&x);
            let x = self.visual_transformer.forward(&x, false);
            let x = self.ln_post.forward(&x.select(1, 0));
            x.matmul(&self.visual_proj)
        })
    }

    /// Text features (before normalisation): `tokens` is [batch, context]
    /// of ids (int64); pooled at the end-of-text token (argmax of ids).
    pub fn encode_text(&self, tokens: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let tokens = tokens.to_device(self.device());
            let n_ctx = tokens.size()[1];
            let x = Tensor::embedding(&self.token_embedding, &tokens, -1, false, false);
            let x = x + self.positional_embedding.narrow(0, 0, n_ctx);
            let x = self.transformer.forward(&x, true);
            let x = self.ln_final.forward(&x);
            let eot = tokens.argmax(-1, false);
            let idx = Tensor::arange(x.size()[0], (Kind::Int64, x.device()));
            x.index(&[Some(idx), Some(eot)])
                .matmul(&self.text_projection)
        })
    }

    /// `exp(logit_scale)`, the temperature of the logits.
    pub fn logit_scale(&self) -> f64 {
        tch::no_grad(|| self.logit_scale.exp().double_value(&[]))
    }

    /// Logits per image [images, texts]: scaled cosine similarities of the
    /// L2-normalised features (the reference's `forward`).
    pub fn logits(&self, image_features: &Tensor, text_features: &Tensor) -> Tensor {
        scaled_cosine_logits(image_features, text_features, &self.logit_scale)
    }
}

/// Row-wise L2 normalisation.
pub fn normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1], true)
}

/// `exp(logit_scale) * normalize(image) @ normalize(text).T`: the logits
/// per image [images, texts] of CLIP's and open_clip's `forward` (text
/// features are moved to the image features' device).
pub fn scaled_cosine_logits(
    image_features: &Tensor,
    text_features: &Tensor,
    logit_scale: &Tensor,
) -> Tensor {
    tch::no_grad(|| {
        let i = normalize(image_features);
        let t = normalize(&text_features.to_device(i.device()));
        i.matmul(&t.transpose(0, 1)) * logit_scale.exp()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ClipConfig {
        ClipConfig {
            embed_dim: 16,
            image_resolution: 32,
            vision_width: 64,
            vision_layers: 2,
            vision_patch_size: 8,
            context_length: 77,
            vocab_size: 49408,
            text_width: 64,
            text_layers: 2,
        }
    }

    #[test]
    fn shapes_and_config_round_trip() {
        tch::manual_seed(0);
        let model = Clip::new(tiny(), Device::Cpu);
        for (_, mut v) in model.var_store().variables() {
            tch::no_grad(|| {
                let _ = v.normal_(0.0, 0.05);
            });
        }
        let named: Vec<(String, Tensor)> = model
            .var_store()
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.to_kind(Kind::Half)))
            .collect();
        let file = WeightFile::from_tensors(
            Path::new("tiny.pt"),
            clisc_nn::WeightFormat::TorchScript,
            named,
        );
        assert_eq!(ClipConfig::from_weights(&file).unwrap(), tiny());
        let loaded = Clip::from_weights(&file, Device::Cpu).unwrap();
        let img = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let f = loaded.encode_image(&img);
        assert_eq!(f.size(), vec![2, 16]);
        let mut ids = vec![0i64; 2 * 77];
        ids[..4].copy_from_slice(&[49406, 320, 22697, 49407]);
        ids[77..80].copy_from_slice(&[49406, 320, 49407]);
        let t = loaded.encode_text(&Tensor::from_slice(&ids).view([2, 77]));
        assert_eq!(t.size(), vec![2, 16]);
        assert_eq!(loaded.logits(&f, &t).size(), vec![2, 2]);
        // The causal mask: tokens after the EOT cannot change its feature.
        ids[100] = 1234;
        let t2 = loaded.encode_text(&Tensor::from_slice(&ids).view([2, 77]));
        assert!(f64::try_from((&t - &t2).abs().max()).unwrap() < 1e-6);
    }

    #[test]
    fn missing_tensor_is_named() {
        let model = Clip::new(tiny(), Device::Cpu);
        let named: Vec<(String, Tensor)> = model
            .var_store()
            .variables()
            .into_iter()
            .filter(|(n, _)| n != "visual.ln_post.bias")
            .collect();
        let file = WeightFile::from_tensors(
            Path::new("cut.pt"),
            clisc_nn::WeightFormat::TorchPickle,
            named,
        );
        let err = Clip::from_weights(&file, Device::Cpu).unwrap_err();
        assert!(
            err.message
                .contains("`visual.ln_post.bias` (expected shape [64])"),
            "{}",
            err.message
        );
        assert!(err.message.contains("cut.pt"));
    }
}
