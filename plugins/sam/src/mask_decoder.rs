//! SAM's mask decoder (`mask_decoder.*`): a two-way transformer between
//! prompt tokens and image embedding, upscaling of the image embedding,
//! hypernetwork MLPs that turn mask tokens into per-mask dynamic filters,
//! and the IoU prediction head. Mirrors `modeling/mask_decoder.py` and
//! `modeling/transformer.py`.

use super::common::{LayerNorm2d, Mlp, MlpBlock};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Shape of the mask decoder, inferred from the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskDecoderConfig {
    /// Token width (256).
    pub transformer_dim: i64,
    /// Two-way blocks (2).
    pub depth: i64,
    /// Attention heads (8; not visible in shapes, the official value).
    pub num_heads: i64,
    /// MLP width of the two-way blocks (2048).
    pub mlp_dim: i64,
    /// Mask tokens = multimask outputs + 1 (4).
    pub num_mask_tokens: i64,
    /// Layers of the IoU head (3).
    pub iou_head_depth: i64,
    /// Hidden width of the IoU head (256).
    pub iou_head_hidden_dim: i64,
    /// How the blocks' feed-forward layers are named: SAM's `mlp.lin1` /
    /// `mlp.lin2`, or SAM 2's `mlp.layers.0` / `mlp.layers.1`.
    pub feedforward_names: FeedForwardNames,
}

/// Parameter names of the two-way blocks' feed-forward layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedForwardNames {
    /// `mlp.lin1`, `mlp.lin2` (SAM's `MLPBlock`).
    Sam,
    /// `mlp.layers.0`, `mlp.layers.1` (SAM 2's `MLP`).
    Sam2,
}

impl Default for MaskDecoderConfig {
    fn default() -> Self {
        Self {
            transformer_dim: 256,
            depth: 2,
            num_heads: 8,
            mlp_dim: 2048,
            num_mask_tokens: 4,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
            feedforward_names: FeedForwardNames::Sam,
        }
    }
}

/// Attention with optional down-projection of the embedding width.
#[derive(Debug)]
struct Attention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    out_proj: nn::Linear,
    num_heads: i64,
}

impl Attention {
    fn new(p: nn::Path, dim: i64, num_heads: i64, downsample_rate: i64) -> Self {
        let internal = dim / downsample_rate;
        Self {
            q_proj: nn::linear(&p / "q_proj", dim, internal, Default::default()),
            k_proj: nn::linear(&p / "k_proj", dim, internal, Default::default()),
            v_proj: nn::linear(&p / "v_proj", dim, internal, Default::default()),
            out_proj: nn::linear(&p / "out_proj", internal, dim, Default::default()),
            num_heads,
        }
    }

    fn separate_heads(&self, x: &Tensor) -> Tensor {
        let (b, n, c) = x.size3().expect("3D tokens");
        x.reshape([b, n, self.num_heads, c / self.num_heads])
            .transpose(1, 2)
    }

    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let q = self.separate_heads(&self.q_proj.forward(q));
        let k = self.separate_heads(&self.k_proj.forward(k));
        let v = self.separate_heads(&self.v_proj.forward(v));
        let c_per_head = q.size()[3];
        let attn = q.matmul(&k.permute([0, 1, 3, 2])) / (c_per_head as f64).sqrt();
        let attn = attn.softmax(-1, Kind::Float);
        let out = attn.matmul(&v);
        let (b, h, n, c) = out.size4().expect("4D");
        self.out_proj
            .forward(&out.transpose(1, 2).reshape([b, n, h * c]))
    }
}

/// The blocks' ReLU feed-forward, under either release's names.
#[derive(Debug)]
enum FeedForward {
    Sam(MlpBlock),
    Sam2(Mlp),
}

impl FeedForward {
    fn new(p: nn::Path, cfg: &MaskDecoderConfig) -> Self {
        let (d, hidden) = (cfg.transformer_dim, cfg.mlp_dim);
        match cfg.feedforward_names {
            FeedForwardNames::Sam => Self::Sam(MlpBlock::new(p, d, hidden, MlpBlock::RELU)),
            FeedForwardNames::Sam2 => Self::Sam2(Mlp::new(p, d, hidden, d, 2)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Self::Sam(m) => m.forward(x),
            Self::Sam2(m) => m.forward(x),
        }
    }
}

/// One block of the two-way transformer.
#[derive(Debug)]
struct TwoWayAttentionBlock {
    self_attn: Attention,
    norm1: nn::LayerNorm,
    cross_attn_token_to_image: Attention,
    norm2: nn::LayerNorm,
    mlp: FeedForward,
    norm3: nn::LayerNorm,
    norm4: nn::LayerNorm,
    cross_attn_image_to_token: Attention,
    skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    fn new(p: nn::Path, cfg: &MaskDecoderConfig, skip_first_layer_pe: bool) -> Self {
        let d = cfg.transformer_dim;
        let ln = Default::default();
        Self {
            self_attn: Attention::new(&p / "self_attn", d, cfg.num_heads, 1),
            norm1: nn::layer_norm(&p / "norm1", vec![d], ln),
            cross_attn_token_to_image: Attention::new(
                &p / "cross_attn_token_to_image",
                d,
                cfg.num_heads,
                2,
            ),
            norm2: nn::layer_norm(&p / "norm2", vec![d], ln),
            mlp: FeedForward::new(&p / "mlp", cfg),
            norm3: nn::layer_norm(&p / "norm3", vec![d], ln),
            norm4: nn::layer_norm(&p / "norm4", vec![d], ln),
            cross_attn_image_to_token: Attention::new(
                &p / "cross_attn_image_to_token",
                d,
                cfg.num_heads,
                2,
            ),
            skip_first_layer_pe,
        }
    }

    fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        query_pe: &Tensor,
        key_pe: &Tensor,
    ) -> (Tensor, Tensor) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries, queries, queries)
        } else {
            let q = queries + query_pe;
            queries + self.self_attn.forward(&q, &q, queries)
        };
        let queries = queries.apply(&self.norm1);

        let q = &queries + query_pe;
        let k = keys + key_pe;
        let queries =
            (&queries + self.cross_attn_token_to_image.forward(&q, &k, keys)).apply(&self.norm2);

        let queries = (&queries + self.mlp.forward(&queries)).apply(&self.norm3);

        let q = &queries + query_pe;
        let k = keys + key_pe;
        let keys =
            (keys + self.cross_attn_image_to_token.forward(&k, &q, &queries)).apply(&self.norm4);
        (queries, keys)
    }
}

/// The two-way transformer (`mask_decoder.transformer`): prompt tokens and
/// image embedding attend to each other. SAM 2's decoder uses the same one.
#[derive(Debug)]
pub struct TwoWayTransformer {
    layers: Vec<TwoWayAttentionBlock>,
    final_attn_token_to_image: Attention,
    norm_final_attn: nn::LayerNorm,
}

impl TwoWayTransformer {
    /// Declares the variables under `p` (= `mask_decoder.transformer`).
    pub fn new(p: nn::Path, cfg: &MaskDecoderConfig) -> Self {
        let layers = (0..cfg.depth)
            .map(|i| TwoWayAttentionBlock::new(&p / "layers" / i, cfg, i == 0))
            .collect();
        Self {
            layers,
            final_attn_token_to_image: Attention::new(
                &p / "final_attn_token_to_image",
                cfg.transformer_dim,
                cfg.num_heads,
                2,
            ),
            norm_final_attn: nn::layer_norm(
                &p / "norm_final_attn",
                vec![cfg.transformer_dim],
                Default::default(),
            ),
        }
    }

    /// `image`: `(B, C, H, W)`, `image_pe` same, `points`: `(B, N, C)`;
    /// returns the updated tokens `(B, N, C)` and image keys `(B, HW, C)`.
    pub fn forward(&self, image: &Tensor, image_pe: &Tensor, points: &Tensor) -> (Tensor, Tensor) {
        let image = image.flatten(2, -1).permute([0, 2, 1]);
        let image_pe = image_pe.flatten(2, -1).permute([0, 2, 1]);
        let mut queries = points.shallow_clone();
        let mut keys = image;
        for layer in &self.layers {
            let (q, k) = layer.forward(&queries, &keys, points, &image_pe);
            queries = q;
            keys = k;
        }
        let q = &queries + points;
        let k = &keys + &image_pe;
        let attn_out = self.final_attn_token_to_image.forward(&q, &k, &keys);
        let queries = (queries + attn_out).apply(&self.norm_final_attn);
        (queries, keys)
    }
}

/// The mask decoder.
#[derive(Debug)]
pub struct MaskDecoder {
    transformer: TwoWayTransformer,
    iou_token: Tensor,
    mask_tokens: Tensor,
    up0: nn::ConvTranspose2D,
    up1: LayerNorm2d,
    up3: nn::ConvTranspose2D,
    hypernetworks: Vec<Mlp>,
    iou_head: Mlp,
    /// The configuration it was built with.
    pub config: MaskDecoderConfig,
}

impl MaskDecoder {
    /// Declares the variables under `p` (= `mask_decoder`).
    pub fn new(p: nn::Path, cfg: &MaskDecoderConfig) -> Self {
        let d = cfg.transformer_dim;
        let up = &p / "output_upscaling";
        let s2 = nn::ConvTransposeConfig {
            stride: 2,
            ..Default::default()
        };
        Self {
            transformer: TwoWayTransformer::new(&p / "transformer", cfg),
            iou_token: (&p / "iou_token").zeros("weight", &[1, d]),
            mask_tokens: (&p / "mask_tokens").zeros("weight", &[cfg.num_mask_tokens, d]),
            up0: nn::conv_transpose2d(&up / 0, d, d / 4, 2, s2),
            up1: LayerNorm2d::new(&up / 1, d / 4),
            up3: nn::conv_transpose2d(&up / 3, d / 4, d / 8, 2, s2),
            hypernetworks: (0..cfg.num_mask_tokens)
                .map(|i| Mlp::new(&p / "output_hypernetworks_mlps" / i, d, d, d / 8, 3))
                .collect(),
            iou_head: Mlp::new(
                &p / "iou_prediction_head",
                d,
                cfg.iou_head_hidden_dim,
                cfg.num_mask_tokens,
                cfg.iou_head_depth,
            ),
            config: cfg.clone(),
        }
    }

    /// Low-resolution mask logits `(B, M, 256, 256)` and predicted IoUs
    /// `(B, M)`; `M` = 3 with `multimask_output`, else 1.
    /// `image_embeddings` is `(1, C, 64, 64)` (shared by the batch).
    pub fn forward(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        multimask_output: bool,
    ) -> (Tensor, Tensor) {
        let (masks, iou) = self.predict_masks(image_embeddings, image_pe, sparse, dense);
        if multimask_output {
            let m = masks.size()[1];
            (masks.narrow(1, 1, m - 1), iou.narrow(1, 1, m - 1))
        } else {
            (masks.narrow(1, 0, 1), iou.narrow(1, 0, 1))
        }
    }

    fn predict_masks(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
    ) -> (Tensor, Tensor) {
        let b = sparse.size()[0];
        let output_tokens = Tensor::cat(&[&self.iou_token, &self.mask_tokens], 0)
            .unsqueeze(0)
            .expand([b, -1, -1], false);
        let tokens = Tensor::cat(&[output_tokens, sparse.shallow_clone()], 1);
        let src = image_embeddings.repeat_interleave_self_int(b, Some(0), None::<i64>) + dense;
        let pos_src = image_pe.repeat_interleave_self_int(b, Some(0), None::<i64>);
        let (_, c, h, w) = src.size4().expect("4D");
        let (hs, src) = self.transformer.forward(&src, &pos_src, &tokens);
        let iou_token_out = hs.select(1, 0);
        let n = self.config.num_mask_tokens;
        let mask_tokens_out = hs.narrow(1, 1, n);
        let src = src.transpose(1, 2).view([b, c, h, w]);
        let up = src.apply(&self.up0);
        let up = self.up1.forward(&up).gelu("none");
        let up = up.apply(&self.up3).gelu("none");
        let masks = hypernetwork_masks(&self.hypernetworks, &mask_tokens_out, &up);
        let iou_pred = self.iou_head.forward(&iou_token_out);
        (masks, iou_pred)
    }
}

/// Mask logits `(B, T, h, w)`: each mask token `(B, T, C)` through its
/// hypernetwork MLP gives a dynamic 1x1 filter applied to the upscaled
/// embedding `(B, C/8, h, w)` (SAM's and SAM 2's decoders alike).
pub fn hypernetwork_masks(
    hypernetworks: &[Mlp],
    mask_tokens: &Tensor,
    upscaled: &Tensor,
) -> Tensor {
    let hyper: Vec<Tensor> = hypernetworks
        .iter()
        .enumerate()
        .map(|(i, mlp)| mlp.forward(&mask_tokens.select(1, i as i64)))
        .collect();
    let hyper_in = Tensor::stack(&hyper, 1);
    let (b, c, h, w) = upscaled.size4().expect("4D");
    hyper_in
        .matmul(&upscaled.view([b, c, h * w]))
        .view([b, -1, h, w])
}
