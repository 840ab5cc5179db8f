//! The Hiera trunk of SAM 2's image encoder (`image_encoder.trunk`):
//! a 7x7/4 patch embedding, a windowed position embedding, and four stages
//! of multi-scale blocks with windowed (or global) attention; the first
//! block of stages 2-4 halves the resolution by max-pooling its queries
//! and doubles the width. Mirrors `modeling/backbones/hieradet.py`.

use crate::config::HieraConfig;
use clisc_sam::common::{Activation, Mlp};
use tch::nn::{self, Module};
use tch::Tensor;

/// Multi-head attention over the tokens of a `(B, H, W, C)` map, with
/// optional 2x2 max-pooling of the queries (`MultiScaleAttention`).
#[derive(Debug)]
struct MultiScaleAttention {
    qkv: nn::Linear,
    proj: nn::Linear,
    num_heads: i64,
    q_pool: bool,
}

impl MultiScaleAttention {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, h, w, _) = x.size4().expect("(B, H, W, C) tokens");
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, h * w, 3, self.num_heads, -1]);
        let (mut q, k, v) = (qkv.select(2, 0), qkv.select(2, 1), qkv.select(2, 2));
        let (mut h, mut w) = (h, w);
        if self.q_pool {
            let pooled = max_pool_2x2(&q.reshape([b, h, w, -1]));
            (h, w) = (pooled.size()[1], pooled.size()[2]);
            q = pooled.reshape([b, h * w, self.num_heads, -1]);
        }
        let x = Tensor::scaled_dot_product_attention::<Tensor>(
            &q.transpose(1, 2),
            &k.transpose(1, 2),
            &v.transpose(1, 2),
            None,
            0.0,
            false,
            None,
            false,
        );
        self.proj.forward(&x.transpose(1, 2).reshape([b, h, w, -1]))
    }
}

/// `nn.MaxPool2d(2, 2)` on a `(B, H, W, C)` map.
fn max_pool_2x2(x: &Tensor) -> Tensor {
    x.permute([0, 3, 1, 2])
        .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
        .permute([0, 2, 3, 1])
}

/// One Hiera block (`MultiScaleBlock`).
#[derive(Debug)]
struct MultiScaleBlock {
    norm1: nn::LayerNorm,
    attn: MultiScaleAttention,
    norm2: nn::LayerNorm,
    mlp: Mlp,
    /// Shortcut projection where the width changes.
    proj: Option<nn::Linear>,
    window_size: i64,
    q_stride: bool,
}

impl MultiScaleBlock {
    fn new(p: nn::Path, spec: &BlockSpec) -> Self {
        let ln = nn::LayerNormConfig {
            eps: 1e-6,
            ..Default::default()
        };
        let (dim, dim_out) = (spec.dim, spec.dim_out);
        Self {
            norm1: nn::layer_norm(&p / "norm1", vec![dim], ln),
            attn: MultiScaleAttention {
                qkv: nn::linear(&p / "attn" / "qkv", dim, dim_out * 3, Default::default()),
                proj: nn::linear(&p / "attn" / "proj", dim_out, dim_out, Default::default()),
                num_heads: spec.num_heads,
                q_pool: spec.q_stride,
            },
            norm2: nn::layer_norm(&p / "norm2", vec![dim_out], ln),
            mlp: Mlp::with_activation(
                &p / "mlp",
                [dim_out, dim_out * 4, dim_out],
                2,
                Activation::Gelu,
                false,
            ),
            proj: (dim != dim_out)
                .then(|| nn::linear(&p / "proj", dim, dim_out, Default::default())),
            window_size: spec.window_size,
            q_stride: spec.q_stride,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x_norm = x.apply(&self.norm1);
        let shortcut = match &self.proj {
            Some(proj) => {
                let s = proj.forward(&x_norm);
                if self.q_stride {
                    max_pool_2x2(&s)
                } else {
                    s
                }
            }
            None => x.shallow_clone(),
        };
        let mut window = self.window_size;
        let (mut h, mut w) = (x.size()[1], x.size()[2]);
        let attended = if window > 0 {
            let (windows, _) = window_partition(&x_norm, window);
            self.attn.forward(&windows)
        } else {
            self.attn.forward(&x_norm)
        };
        if self.q_stride {
            // The queries were pooled: the windows are half as wide.
            window = self.window_size / 2;
            (h, w) = (shortcut.size()[1], shortcut.size()[2]);
        }
        let attended = if self.window_size > 0 {
            let padded = (round_up(h, window), round_up(w, window));
            window_unpartition(&attended, window, padded, (h, w))
        } else {
            attended
        };
        let x = shortcut + attended;
        let mlp = self.mlp.forward(&x.apply(&self.norm2));
        x + mlp
    }
}

fn round_up(n: i64, multiple: i64) -> i64 {
    n + (multiple - n % multiple) % multiple
}

/// Splits `(B, H, W, C)` into `(B * windows, ws, ws, C)`, zero-padding
/// the bottom and right; returns the padded size too.
fn window_partition(x: &Tensor, ws: i64) -> (Tensor, (i64, i64)) {
    let (b, h, w, c) = x.size4().expect("(B, H, W, C)");
    let (hp, wp) = (round_up(h, ws), round_up(w, ws));
    let x = if hp > h || wp > w {
        x.constant_pad_nd([0, 0, 0, wp - w, 0, hp - h])
    } else {
        x.shallow_clone()
    };
    let windows = x
        .view([b, hp / ws, ws, wp / ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([-1, ws, ws, c]);
    (windows, (hp, wp))
}

/// Inverse of [`window_partition`], cropping the padding.
fn window_unpartition(windows: &Tensor, ws: i64, padded: (i64, i64), hw: (i64, i64)) -> Tensor {
    let (hp, wp) = padded;
    let b = windows.size()[0] / (hp * wp / ws / ws);
    let x = windows
        .reshape([b, hp / ws, wp / ws, ws, ws, -1])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b, hp, wp, -1]);
    if hp > hw.0 || wp > hw.1 {
        x.narrow(1, 0, hw.0).narrow(2, 0, hw.1)
    } else {
        x
    }
}

/// What one block is (derived from the config as `Hiera.__init__` does).
struct BlockSpec {
    dim: i64,
    dim_out: i64,
    num_heads: i64,
    q_stride: bool,
    window_size: i64,
}

/// The block layout of a trunk: window sizes lag a block behind the stage
/// change ("the first block of the next stage uses the window size of the
/// previous stage"), queries are pooled in the first block of stages 2-4.
fn block_specs(cfg: &HieraConfig) -> Vec<BlockSpec> {
    let stage_ends = cfg.stage_ends();
    let q_pool_blocks: Vec<i64> = stage_ends[..stage_ends.len() - 1]
        .iter()
        .map(|e| e + 1)
        .collect();
    let (mut dim, mut heads, mut stage) = (cfg.embed_dim, cfg.num_heads, 0usize);
    (0..cfg.depth())
        .map(|i| {
            let mut window = cfg.window_spec[stage];
            if cfg.global_att_blocks.contains(&i) {
                window = 0;
            }
            let mut dim_out = dim;
            if stage_ends.contains(&(i - 1)) {
                dim_out = dim * 2;
                heads *= 2;
                stage += 1;
            }
            let spec = BlockSpec {
                dim,
                dim_out,
                num_heads: heads,
                q_stride: q_pool_blocks.contains(&i),
                window_size: window,
            };
            dim = dim_out;
            spec
        })
        .collect()
}

/// The trunk.
#[derive(Debug)]
pub(crate) struct Hiera {
    patch_embed: nn::Conv2D,
    pos_embed: Tensor,
    pos_embed_window: Tensor,
    blocks: Vec<MultiScaleBlock>,
    stage_ends: Vec<i64>,
}

impl Hiera {
    /// Declares the variables under `p` (= `image_encoder.trunk`).
    pub(crate) fn new(p: nn::Path, cfg: &HieraConfig) -> Self {
        let d = cfg.embed_dim;
        let patch = nn::ConvConfig {
            stride: 4,
            padding: 3,
            ..Default::default()
        };
        let (ph, pw) = cfg.pos_embed_size;
        let ws = cfg.window_spec[0];
        Self {
            patch_embed: nn::conv2d(&p / "patch_embed" / "proj", 3, d, 7, patch),
            pos_embed: p.zeros("pos_embed", &[1, d, ph, pw]),
            pos_embed_window: p.zeros("pos_embed_window", &[1, d, ws, ws]),
            blocks: block_specs(cfg)
                .iter()
                .enumerate()
                .map(|(i, spec)| MultiScaleBlock::new(&p / "blocks" / i as i64, spec))
                .collect(),
            stage_ends: cfg.stage_ends(),
        }
    }

    /// Background embedding interpolated (bicubic) to the token grid plus
    /// the window embedding tiled over it: `(1, H, W, C)`.
    fn position_embedding(&self, h: i64, w: i64) -> Tensor {
        let bkg = self.pos_embed.upsample_bicubic2d([h, w], false, None, None);
        let ws = self.pos_embed_window.size();
        let tiled = self.pos_embed_window.tile([1, 1, h / ws[2], w / ws[3]]);
        (bkg + tiled).permute([0, 2, 3, 1])
    }

    /// The output of each stage, `(B, C_i, H_i, W_i)`, highest resolution
    /// first (strides 4, 8, 16, 32).
    pub(crate) fn forward(&self, image: &Tensor) -> Vec<Tensor> {
        let x = image.apply(&self.patch_embed).permute([0, 2, 3, 1]);
        let (h, w) = (x.size()[1], x.size()[2]);
        let mut x = x + self.position_embedding(h, w);
        let mut outputs = vec![];
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x);
            if self.stage_ends.contains(&(i as i64)) {
                outputs.push(x.permute([0, 3, 1, 2]));
            }
        }
        outputs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Sam2Config;

    #[test]
    fn tiny_blocks_follow_the_official_layout() {
        let cfg = Sam2Config::official("hiera_t", 1024).unwrap().hiera;
        let specs = block_specs(&cfg);
        let windows: Vec<i64> = specs.iter().map(|s| s.window_size).collect();
        // Hiera(stages=[1, 2, 7, 2], global_att_blocks=[5, 7, 9]).blocks[i].window_size
        assert_eq!(windows, vec![8, 8, 4, 4, 14, 0, 14, 0, 14, 0, 14, 7]);
        let pooled: Vec<usize> = (0..specs.len()).filter(|&i| specs[i].q_stride).collect();
        assert_eq!(pooled, vec![1, 3, 10]);
        let heads: Vec<i64> = specs.iter().map(|s| s.num_heads).collect();
        assert_eq!(heads, vec![1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 8, 8]);
    }

    #[test]
    fn windows_round_trip_with_padding() {
        let x = Tensor::randn([1, 10, 13, 3], (tch::Kind::Float, tch::Device::Cpu));
        let (w, padded) = window_partition(&x, 4);
        assert_eq!(padded, (12, 16));
        assert_eq!(w.size(), vec![12, 4, 4, 3]);
        let back = window_unpartition(&w, 4, padded, (10, 13));
        assert!(back.equal(&x));
    }
}
