//! SAM's ViT image encoder (`image_encoder.*`): patch embedding, absolute
//! position embedding, transformer blocks with windowed or global
//! attention and decomposed relative positions, and the neck to 256
//! channels. Mirrors `segment_anything.modeling.image_encoder`.

use super::common::{LayerNorm2d, MlpBlock};
use tch::nn;
use tch::{Kind, Tensor};

/// Shape of a ViT image encoder (ViT-B/L/H differ only here).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEncoderConfig {
    /// Input side in pixels (1024).
    pub img_size: i64,
    /// Patch side (16).
    pub patch_size: i64,
    /// Input channels (3).
    pub in_chans: i64,
    /// Token width (768 / 1024 / 1280).
    pub embed_dim: i64,
    /// Number of blocks (12 / 24 / 32).
    pub depth: i64,
    /// Attention heads (12 / 16 / 16).
    pub num_heads: i64,
    /// MLP hidden width as a multiple of `embed_dim` (4).
    pub mlp_ratio: f64,
    /// Output channels of the neck (256).
    pub out_chans: i64,
    /// Side of the attention windows (14).
    pub window_size: i64,
    /// Blocks that attend globally instead of in windows.
    pub global_attn_indexes: Vec<i64>,
}

impl ImageEncoderConfig {
    /// The official ViT-B configuration.
    pub fn vit_b() -> Self {
        Self::official(768, 12, 12, vec![2, 5, 8, 11])
    }
    fn official(embed_dim: i64, depth: i64, num_heads: i64, global_attn_indexes: Vec<i64>) -> Self {
        Self {
            img_size: 1024,
            patch_size: 16,
            in_chans: 3,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            out_chans: 256,
            window_size: 14,
            global_attn_indexes,
        }
    }
    /// Side of the token grid (64 for 1024 / 16).
    pub(crate) fn grid_size(&self) -> i64 {
        self.img_size / self.patch_size
    }
}

/// Multi-head attention with decomposed relative positional embeddings.
#[derive(Debug)]
struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    num_heads: i64,
    scale: f64,
    rel_pos_h: Tensor,
    rel_pos_w: Tensor,
}

impl Attention {
    fn new(p: nn::Path, dim: i64, num_heads: i64, input_size: i64) -> Self {
        let head_dim = dim / num_heads;
        let qkv = nn::linear(&p / "qkv", dim, dim * 3, Default::default());
        let proj = nn::linear(&p / "proj", dim, dim, Default::default());
        let rel_pos_h = p.zeros("rel_pos_h", &[2 * input_size - 1, head_dim]);
        let rel_pos_w = p.zeros("rel_pos_w", &[2 * input_size - 1, head_dim]);
        Self {
            qkv,
            proj,
            num_heads,
            scale: (head_dim as f64).powf(-0.5),
            rel_pos_h,
            rel_pos_w,
        }
    }

    /// `x`: `(B, H, W, C)` -> `(B, H, W, C)`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, h, w, _) = x.size4().expect("attention input is 4D");
        let nh = self.num_heads;
        // (3, B*nh, H*W, head_dim)
        let qkv = x
            .apply(&self.qkv)
            .reshape([b, h * w, 3, nh, -1])
            .permute([2, 0, 3, 1, 4])
            .reshape([3, b * nh, h * w, -1]);
        let q = qkv.get(0);
        let k = qkv.get(1);
        let v = qkv.get(2);
        let attn = (&q * self.scale).matmul(&k.transpose(-2, -1));
        let attn =
            add_decomposed_rel_pos(&attn, &q, &self.rel_pos_h, &self.rel_pos_w, (h, w), (h, w));
        let attn = attn.softmax(-1, Kind::Float);
        attn.matmul(&v)
            .view([b, nh, h, w, -1])
            .permute([0, 2, 3, 1, 4])
            .reshape([b, h, w, -1])
            .apply(&self.proj)
    }
}

/// Relative positional embeddings for every (query, key) pair along one
/// axis: `(q_size, k_size, C)`. Interpolates the table linearly when its
/// length does not match (as the reference does).
fn get_rel_pos(q_size: i64, k_size: i64, rel_pos: &Tensor) -> Tensor {
    let max_rel_dist = 2 * q_size.max(k_size) - 1;
    let table = if rel_pos.size()[0] != max_rel_dist {
        let len = rel_pos.size()[0];
        rel_pos
            .reshape([1, len, -1])
            .permute([0, 2, 1])
            .upsample_linear1d([max_rel_dist], false, None)
            .reshape([-1, max_rel_dist])
            .permute([1, 0])
    } else {
        rel_pos.shallow_clone()
    };
    let device = rel_pos.device();
    let qf = (k_size as f64 / q_size as f64).max(1.0);
    let kf = (q_size as f64 / k_size as f64).max(1.0);
    let q_coords = Tensor::arange(q_size, (Kind::Float, device)).unsqueeze(1) * qf;
    let k_coords = Tensor::arange(k_size, (Kind::Float, device)).unsqueeze(0) * kf;
    let rel = (q_coords - k_coords) + (k_size - 1) as f64 * kf;
    let idx = rel.to_kind(Kind::Int64);
    table
        .index_select(0, &idx.view([-1]))
        .view([q_size, k_size, -1])
}

/// Adds the decomposed relative position terms to attention logits
/// (`attn`: `(B, q_h*q_w, k_h*k_w)`, `q`: `(B, q_h*q_w, C)`, unscaled).
fn add_decomposed_rel_pos(
    attn: &Tensor,
    q: &Tensor,
    rel_pos_h: &Tensor,
    rel_pos_w: &Tensor,
    q_size: (i64, i64),
    k_size: (i64, i64),
) -> Tensor {
    let (q_h, q_w) = q_size;
    let (k_h, k_w) = k_size;
    let rh = get_rel_pos(q_h, k_h, rel_pos_h);
    let rw = get_rel_pos(q_w, k_w, rel_pos_w);
    let (b, _, dim) = q.size3().expect("q is 3D");
    let r_q = q.reshape([b, q_h, q_w, dim]);
    let rel_h = Tensor::einsum("bhwc,hkc->bhwk", &[&r_q, &rh], None::<i64>);
    let rel_w = Tensor::einsum("bhwc,wkc->bhwk", &[&r_q, &rw], None::<i64>);
    (attn.view([b, q_h, q_w, k_h, k_w]) + rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).view([
        b,
        q_h * q_w,
        k_h * k_w,
    ])
}

/// Splits `(B, H, W, C)` into `(B * nW, ws, ws, C)` windows, padding
/// bottom/right with zeros; returns the padded size.
fn window_partition(x: &Tensor, ws: i64) -> (Tensor, (i64, i64)) {
    let (b, h, w, c) = x.size4().expect("4D");
    let pad_h = (ws - h % ws) % ws;
    let pad_w = (ws - w % ws) % ws;
    let x = if pad_h > 0 || pad_w > 0 {
        x.constant_pad_nd([0, 0, 0, pad_w, 0, pad_h])
    } else {
        x.shallow_clone()
    };
    let (hp, wp) = (h + pad_h, w + pad_w);
    let windows = x
        .view([b, hp / ws, ws, wp / ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .contiguous()
        .view([-1, ws, ws, c]);
    (windows, (hp, wp))
}

/// Inverse of [`window_partition`], cropping the padding.
fn window_unpartition(windows: &Tensor, ws: i64, pad_hw: (i64, i64), hw: (i64, i64)) -> Tensor {
    let (hp, wp) = pad_hw;
    let (h, w) = hw;
    let b = windows.size()[0] / (hp * wp / ws / ws);
    let x = windows
        .view([b, hp / ws, wp / ws, ws, ws, -1])
        .permute([0, 1, 3, 2, 4, 5])
        .contiguous()
        .view([b, hp, wp, -1]);
    if hp > h || wp > w {
        x.narrow(1, 0, h).narrow(2, 0, w).contiguous()
    } else {
        x
    }
}

/// One transformer block (`image_encoder.blocks.N`).
#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    attn: Attention,
    norm2: nn::LayerNorm,
    mlp: MlpBlock,
    window_size: i64,
}

impl Block {
    fn new(p: nn::Path, cfg: &ImageEncoderConfig, window_size: i64) -> Self {
        let ln = nn::LayerNormConfig {
            eps: 1e-6,
            ..Default::default()
        };
        let dim = cfg.embed_dim;
        let input_size = if window_size == 0 {
            cfg.grid_size()
        } else {
            window_size
        };
        Self {
            norm1: nn::layer_norm(&p / "norm1", vec![dim], ln),
            attn: Attention::new(&p / "attn", dim, cfg.num_heads, input_size),
            norm2: nn::layer_norm(&p / "norm2", vec![dim], ln),
            mlp: MlpBlock::new(
                &p / "mlp",
                dim,
                (dim as f64 * cfg.mlp_ratio) as i64,
                MlpBlock::GELU,
            ),
            window_size,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let shortcut = x;
        let y = x.apply(&self.norm1);
        let y = if self.window_size > 0 {
            let (h, w) = (y.size()[1], y.size()[2]);
            let (windows, pad_hw) = window_partition(&y, self.window_size);
            window_unpartition(
                &self.attn.forward(&windows),
                self.window_size,
                pad_hw,
                (h, w),
            )
        } else {
            self.attn.forward(&y)
        };
        let x = shortcut + y;
        let m = self.mlp.forward(&x.apply(&self.norm2));
        x + m
    }
}

/// The ViT image encoder: `(B, 3, S, S)` normalised images to
/// `(B, out_chans, S/16, S/16)` embeddings.
#[derive(Debug)]
pub struct ImageEncoderViT {
    patch_embed: nn::Conv2D,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    neck0: nn::Conv2D,
    neck1: LayerNorm2d,
    neck2: nn::Conv2D,
    neck3: LayerNorm2d,
    /// The configuration it was built with.
    pub config: ImageEncoderConfig,
}

impl ImageEncoderViT {
    /// Declares the encoder's variables under `p` (= `image_encoder`).
    pub fn new(p: nn::Path, cfg: &ImageEncoderConfig) -> Self {
        let pe = nn::ConvConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let patch_embed = nn::conv2d(
            &p / "patch_embed" / "proj",
            cfg.in_chans,
            cfg.embed_dim,
            cfg.patch_size,
            pe,
        );
        let g = cfg.grid_size();
        let pos_embed = p.zeros("pos_embed", &[1, g, g, cfg.embed_dim]);
        let blocks = (0..cfg.depth)
            .map(|i| {
                let ws = if cfg.global_attn_indexes.contains(&i) {
                    0
                } else {
                    cfg.window_size
                };
                Block::new(&p / "blocks" / i, cfg, ws)
            })
            .collect();
        let neck = &p / "neck";
        let no_bias = nn::ConvConfig {
            bias: false,
            ..Default::default()
        };
        let no_bias_pad = nn::ConvConfig {
            bias: false,
            padding: 1,
            ..Default::default()
        };
        Self {
            patch_embed,
            pos_embed,
            blocks,
            neck0: nn::conv2d(&neck / 0, cfg.embed_dim, cfg.out_chans, 1, no_bias),
            neck1: LayerNorm2d::new(&neck / 1, cfg.out_chans),
            neck2: nn::conv2d(&neck / 2, cfg.out_chans, cfg.out_chans, 3, no_bias_pad),
            neck3: LayerNorm2d::new(&neck / 3, cfg.out_chans),
            config: cfg.clone(),
        }
    }

    /// Encodes a batch of normalised, padded images.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.apply(&self.patch_embed).permute([0, 2, 3, 1]) + &self.pos_embed;
        for block in &self.blocks {
            x = block.forward(&x);
        }
        let x = x.permute([0, 3, 1, 2]);
        let x = x.apply(&self.neck0);
        let x = self.neck1.forward(&x);
        let x = x.apply(&self.neck2);
        self.neck3.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_round_trip_with_padding() {
        let x = Tensor::arange(2 * 5 * 7 * 3, (Kind::Float, tch::Device::Cpu)).view([2, 5, 7, 3]);
        let (w, pad) = window_partition(&x, 4);
        assert_eq!(pad, (8, 8));
        assert_eq!(w.size(), vec![2 * 4, 4, 4, 3]);
        let back = window_unpartition(&w, 4, pad, (5, 7));
        assert_eq!(back.size(), x.size());
        assert_eq!((back - &x).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn relative_positions_index_the_table_by_offset() {
        // Table row r holds r; entry (i, j) must hold i - j + (k - 1).
        let table = Tensor::arange(5, (Kind::Float, tch::Device::Cpu)).unsqueeze(1);
        let r = get_rel_pos(3, 3, &table);
        assert_eq!(r.size(), vec![3, 3, 1]);
        assert_eq!(r.double_value(&[0, 2, 0]), 0.0);
        assert_eq!(r.double_value(&[2, 0, 0]), 4.0);
        assert_eq!(r.double_value(&[1, 1, 0]), 2.0);
    }
}
