//! SAM's prompt encoder (`prompt_encoder.*`): random Fourier positional
//! encoding of points and box corners, learned point/box embeddings, the
//! padding point used when there is no box, mask-input downscaling and
//! the no-mask embedding. Mirrors `modeling/prompt_encoder.py`.

use super::common::LayerNorm2d;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Random Fourier features of normalised coordinates
/// (`pe_layer.positional_encoding_gaussian_matrix`, `(2, C/2)`).
#[derive(Debug)]
pub(crate) struct PositionEmbeddingRandom {
    gaussian: Tensor,
}

impl PositionEmbeddingRandom {
    fn new(p: nn::Path, num_pos_feats: i64) -> Self {
        Self {
            gaussian: p.zeros_no_train("positional_encoding_gaussian_matrix", &[2, num_pos_feats]),
        }
    }

    /// `coords` in `[0, 1]`, last dim 2 -> last dim `C`.
    fn pe_encoding(&self, coords: &Tensor) -> Tensor {
        let c = (coords * 2.0 - 1.0).matmul(&self.gaussian) * (2.0 * std::f64::consts::PI);
        Tensor::cat(&[c.sin(), c.cos()], -1)
    }

    /// Dense encoding of an `h x w` grid of pixel centres: `(C, h, w)`.
    pub(crate) fn grid(&self, h: i64, w: i64) -> Tensor {
        let device = self.gaussian.device();
        let ones = Tensor::ones([h, w], (Kind::Float, device));
        let y = (ones.cumsum(0, Kind::Float) - 0.5) / h as f64;
        let x = (ones.cumsum(1, Kind::Float) - 0.5) / w as f64;
        self.pe_encoding(&Tensor::stack(&[x, y], -1))
            .permute([2, 0, 1])
    }

    /// Encodes pixel coordinates (`(.., 2)`, x then y) of an image of
    /// `(h, w)` pixels.
    pub(crate) fn with_coords(&self, coords: &Tensor, image_size: (i64, i64)) -> Tensor {
        let x = coords.select(-1, 0) / image_size.1 as f64;
        let y = coords.select(-1, 1) / image_size.0 as f64;
        self.pe_encoding(&Tensor::stack(&[x, y], -1))
    }
}

/// The prompt encoder.
#[derive(Debug)]
pub struct PromptEncoder {
    /// Output embedding width (256).
    pub embed_dim: i64,
    /// Side of the image embedding grid (64).
    pub embedding_size: i64,
    /// Side of the padded model input (1024).
    pub input_image_size: i64,
    pe_layer: PositionEmbeddingRandom,
    point_embeddings: Vec<Tensor>,
    not_a_point_embed: Tensor,
    down0: nn::Conv2D,
    down1: LayerNorm2d,
    down3: nn::Conv2D,
    down4: LayerNorm2d,
    down6: nn::Conv2D,
    no_mask_embed: Tensor,
}

/// Points of a batch of prompt sets: coordinates `(B, N, 2)` in the model's
/// 1024 frame and labels `(B, N)` (1 foreground, 0 background, -1 padding).
pub struct PointPrompts<'a> {
    /// Coordinates.
    pub coords: &'a Tensor,
    /// Labels as floats or ints.
    pub labels: &'a Tensor,
}

impl PromptEncoder {
    /// Declares the variables under `p` (= `prompt_encoder`).
    pub fn new(
        p: nn::Path,
        embed_dim: i64,
        embedding_size: i64,
        input_image_size: i64,
        mask_in_chans: i64,
    ) -> Self {
        let point_embeddings = (0..4)
            .map(|i| (&p / "point_embeddings" / i).zeros("weight", &[1, embed_dim]))
            .collect();
        let down = &p / "mask_downscaling";
        let s2 = nn::ConvConfig {
            stride: 2,
            ..Default::default()
        };
        Self {
            embed_dim,
            embedding_size,
            input_image_size,
            pe_layer: PositionEmbeddingRandom::new(&p / "pe_layer", embed_dim / 2),
            point_embeddings,
            not_a_point_embed: (&p / "not_a_point_embed").zeros("weight", &[1, embed_dim]),
            down0: nn::conv2d(&down / 0, 1, mask_in_chans / 4, 2, s2),
            down1: LayerNorm2d::new(&down / 1, mask_in_chans / 4),
            down3: nn::conv2d(&down / 3, mask_in_chans / 4, mask_in_chans, 2, s2),
            down4: LayerNorm2d::new(&down / 4, mask_in_chans),
            down6: nn::conv2d(&down / 6, mask_in_chans, embed_dim, 1, Default::default()),
            no_mask_embed: (&p / "no_mask_embed").zeros("weight", &[1, embed_dim]),
        }
    }

    /// Positional encoding of the image embedding grid: `(1, C, 64, 64)`.
    pub fn dense_pe(&self) -> Tensor {
        self.pe_layer
            .grid(self.embedding_size, self.embedding_size)
            .unsqueeze(0)
    }

    fn embed_points(&self, coords: &Tensor, labels: &Tensor, pad: bool) -> Tensor {
        let coords = coords + 0.5;
        let labels = labels.to_kind(Kind::Float);
        let (coords, labels) = if pad {
            let b = coords.size()[0];
            let pad_point = Tensor::zeros([b, 1, 2], (Kind::Float, coords.device()));
            let pad_label = -Tensor::ones([b, 1], (Kind::Float, coords.device()));
            (
                Tensor::cat(&[coords, pad_point], 1),
                Tensor::cat(&[labels, pad_label], 1),
            )
        } else {
            (coords, labels)
        };
        let size = self.input_image_size;
        let pe = self.pe_layer.with_coords(&coords, (size, size));
        let l = labels.unsqueeze(-1);
        let is_pad = l.eq(-1.0).to_kind(Kind::Float);
        let is_neg = l.eq(0.0).to_kind(Kind::Float);
        let is_pos = l.eq(1.0).to_kind(Kind::Float);
        // SAM 2 passes a box as two points labelled 2 (top-left) and 3
        // (bottom-right); SAM never uses those labels.
        let is_top_left = l.eq(2.0).to_kind(Kind::Float);
        let is_bottom_right = l.eq(3.0).to_kind(Kind::Float);
        // Padding points get only the not-a-point embedding; others add
        // their label's embedding to the positional encoding.
        pe * (1.0 - &is_pad)
            + &is_pad * &self.not_a_point_embed
            + &is_neg * &self.point_embeddings[0]
            + &is_pos * &self.point_embeddings[1]
            + &is_top_left * &self.point_embeddings[2]
            + &is_bottom_right * &self.point_embeddings[3]
    }

    fn embed_boxes(&self, boxes: &Tensor) -> Tensor {
        let coords = (boxes + 0.5).reshape([-1, 2, 2]);
        let size = self.input_image_size;
        let corner = self.pe_layer.with_coords(&coords, (size, size));
        let first = corner.select(1, 0) + &self.point_embeddings[2];
        let second = corner.select(1, 1) + &self.point_embeddings[3];
        Tensor::stack(&[first, second], 1)
    }

    fn embed_masks(&self, masks: &Tensor) -> Tensor {
        let x = masks.apply(&self.down0);
        let x = self.down1.forward(&x).gelu("none");
        let x = x.apply(&self.down3);
        let x = self.down4.forward(&x).gelu("none");
        self.down6.forward(&x)
    }

    /// Sparse `(B, N, C)` and dense `(B, C, 64, 64)` prompt embeddings.
    /// `boxes`: `(B, 4)` in the 1024 frame; `masks`: `(B, 1, 256, 256)`
    /// low-resolution logits.
    pub fn forward(
        &self,
        points: Option<PointPrompts<'_>>,
        boxes: Option<&Tensor>,
        masks: Option<&Tensor>,
    ) -> (Tensor, Tensor) {
        let bs = points
            .as_ref()
            .map(|p| p.coords.size()[0])
            .or_else(|| boxes.map(|b| b.size()[0]))
            .or_else(|| masks.map(|m| m.size()[0]))
            .unwrap_or(1);
        let device = self.no_mask_embed.device();
        let mut parts = Vec::new();
        if let Some(p) = &points {
            parts.push(self.embed_points(p.coords, p.labels, boxes.is_none()));
        }
        if let Some(b) = boxes {
            parts.push(self.embed_boxes(b));
        }
        let sparse = if parts.is_empty() {
            Tensor::zeros([bs, 0, self.embed_dim], (Kind::Float, device))
        } else {
            Tensor::cat(&parts, 1)
        };
        let dense = match masks {
            Some(m) => self.embed_masks(m),
            None => self
                .no_mask_embed
                .reshape([1, -1, 1, 1])
                .expand([bs, -1, self.embedding_size, self.embedding_size], false),
        };
        (sparse, dense)
    }
}
