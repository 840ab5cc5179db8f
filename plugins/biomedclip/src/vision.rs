//! BiomedCLIP's image tower: open_clip's `TimmModel` around timm's
//! `vit_base_patch16_224` (`timm_pool = ""`, `timm_proj = "linear"`),
//! under the state-dict names `visual.trunk.*` and `visual.head.proj.*`.
//!
//! timm's `VisionTransformer` forward: a stride-16 convolution cuts the
//! 224 px image into 14 x 14 patches, the class token is prepended and the
//! learned position embedding (197 rows) added; then pre-norm blocks
//! (`x + attn(norm1(x))`, `x + mlp(norm2(x))`, LayerNorm eps 1e-6, fused
//! `qkv` projection with bias, exact-erf GELU), the final `norm`, and the
//! class token as the pooled feature (timm's default `global_pool =
//! "token"`, kept because open_clip only resets the pool when `timm_pool`
//! is non-empty). open_clip's head is dropout (identity at inference) and
//! a bias-free linear projection to the joint embedding.

use tch::nn::{self, Module};
use tch::Tensor;

use crate::model::{layer_norm, linear, ZERO};

/// timm's ViT LayerNorm epsilon.
const EPS: f64 = 1e-6;

/// Hyper-parameters of the image tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisionConfig {
    /// Input side in pixels (224).
    pub image_size: i64,
    /// Patch side (16).
    pub patch_size: i64,
    /// Token width (768).
    pub width: i64,
    /// Number of blocks (12).
    pub layers: i64,
    /// Attention heads (12; 64 channels each).
    pub heads: i64,
    /// Hidden width of the MLPs (3072).
    pub mlp_dim: i64,
}

impl VisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> i64 {
        self.image_size / self.patch_size
    }
}

/// timm's `Attention`: fused `qkv`, scaled dot product, `proj`.
#[derive(Debug)]
struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    heads: i64,
}

impl Attention {
    fn new(p: nn::Path, width: i64, heads: i64) -> Attention {
        Attention {
            qkv: linear(&p / "qkv", width, 3 * width, true),
            proj: linear(&p / "proj", width, width, true),
            heads,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, n, c) = x.size3().unwrap_or((0, 0, 0));
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, n, 3, self.heads, c / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        self.proj.forward(&y.transpose(1, 2).reshape([b, n, c]))
    }
}

/// timm's `Block` (no layer scale, no drop path at inference).
#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    attn: Attention,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Block {
    fn new(p: nn::Path, c: &VisionConfig) -> Block {
        let mlp = &p / "mlp";
        Block {
            norm1: layer_norm(&p / "norm1", c.width, EPS),
            attn: Attention::new(&p / "attn", c.width, c.heads),
            norm2: layer_norm(&p / "norm2", c.width, EPS),
            fc1: linear(&mlp / "fc1", c.width, c.mlp_dim, true),
            fc2: linear(&mlp / "fc2", c.mlp_dim, c.width, true),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + self.attn.forward(&self.norm1.forward(x));
        let h = self.fc1.forward(&self.norm2.forward(&x)).gelu("none");
        &x + self.fc2.forward(&h)
    }
}

/// The image tower (`visual`): timm trunk and open_clip head.
#[derive(Debug)]
pub(crate) struct VisionTower {
    patch_embed: nn::Conv2D,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    head_proj: nn::Linear,
}

impl VisionTower {
    /// Variables under `p` (= `visual`), zero-initialised.
    pub(crate) fn new(p: nn::Path, c: &VisionConfig, embed_dim: i64) -> VisionTower {
        let trunk = &p / "trunk";
        let conv = nn::ConvConfig {
            stride: c.patch_size,
            ws_init: ZERO,
            bs_init: ZERO,
            ..Default::default()
        };
        let tokens = c.grid() * c.grid() + 1;
        let blocks = &trunk / "blocks";
        VisionTower {
            patch_embed: nn::conv2d(
                &trunk / "patch_embed" / "proj",
                3,
                c.width,
                c.patch_size,
                conv,
            ),
            cls_token: trunk.var("cls_token", &[1, 1, c.width], ZERO),
            pos_embed: trunk.var("pos_embed", &[1, tokens, c.width], ZERO),
            blocks: (0..c.layers).map(|i| Block::new(&blocks / i, c)).collect(),
            norm: layer_norm(&trunk / "norm", c.width, EPS),
            head_proj: linear(&p / "head" / "proj", c.width, embed_dim, false),
        }
    }

    /// [n, 3, R, R] normalised images -> [n, embed] features.
    pub(crate) fn forward(&self, images: &Tensor) -> Tensor {
        let x = self
            .patch_embed
            .forward(images)
            .flatten(2, -1)
            .transpose(1, 2);
        let (n, _, w) = x.size3().unwrap_or((0, 0, 0));
        let cls = self.cls_token.expand([n, 1, w], false);
        let x = Tensor::cat(&[cls, x], 1) + &self.pos_embed;
        let x = self.blocks.iter().fold(x, |x, b| b.forward(&x));
        // The norm is per token: normalising only the class token is the same.
        let pooled = self.norm.forward(&x.select(1, 0));
        self.head_proj.forward(&pooled)
    }
}
