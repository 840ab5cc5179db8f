//! SAM 2's image encoder (`image_encoder`): the Hiera trunk, an FPN neck
//! that projects every stage to 256 channels and adds top-down features
//! to the two lowest resolutions, and sine position encodings. The
//! lowest-resolution level is dropped (`scalp = 1`), leaving three levels
//! at strides 4, 8 and 16. Mirrors `modeling/backbones/image_encoder.py`
//! and `PositionEmbeddingSine` in `modeling/position_encoding.py`.

use crate::config::{HieraConfig, HIDDEN_DIM};
use crate::hiera::Hiera;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// The wavelengths of a transformer's sine encoding over `n` features:
/// `10000^(2 * (i // 2) / n)` (`dim_t` in both of SAM 2's sine encodings).
pub(crate) fn sine_wavelengths(n: i64, device: Device) -> Tensor {
    let exponents =
        Tensor::arange(n, (Kind::Float, device)).floor_divide_scalar(2) * 2.0 / n as f64;
    Tensor::from(10000f32).to_device(device).pow(&exponents)
}

/// The 2D sine position encoding of DETR (`PositionEmbeddingSine`,
/// normalised, temperature 10000): `(1, C, H, W)` for an `H x W` grid.
pub(crate) fn sine_position_encoding(channels: i64, h: i64, w: i64, device: Device) -> Tensor {
    let half = channels / 2;
    let scale = 2.0 * std::f64::consts::PI;
    let eps = 1e-6;
    let opts = (Kind::Float, device);
    let y = Tensor::arange_start(1, h + 1, opts)
        .view([h, 1])
        .expand([h, w], false);
    let x = Tensor::arange_start(1, w + 1, opts)
        .view([1, w])
        .expand([h, w], false);
    let y = &y / (h as f64 + eps) * scale;
    let x = &x / (w as f64 + eps) * scale;
    let dim_t = sine_wavelengths(half, device);
    let encode = |pos: &Tensor| -> Tensor {
        let p = pos.unsqueeze(-1) / &dim_t;
        let sin = p.slice(-1, 0, None, 2).sin();
        let cos = p.slice(-1, 1, None, 2).cos();
        Tensor::stack(&[sin, cos], 3).flatten(2, 3)
    };
    Tensor::cat(&[encode(&y), encode(&x)], 2)
        .permute([2, 0, 1])
        .unsqueeze(0)
}

/// The FPN neck (`image_encoder.neck`): 1x1 convolutions to 256 channels;
/// levels in `fpn_top_down_levels` (the two lowest resolutions) add the
/// nearest-upsampled level below them.
#[derive(Debug)]
struct FpnNeck {
    /// `convs.N.conv`, lowest resolution first (`backbone_channel_list`).
    convs: Vec<nn::Conv2D>,
    top_down_levels: Vec<usize>,
}

impl FpnNeck {
    fn new(p: nn::Path, stage_dims: &[i64]) -> Self {
        let convs = stage_dims
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &dim)| {
                nn::conv2d(
                    &p / "convs" / i as i64 / "conv",
                    dim,
                    HIDDEN_DIM,
                    1,
                    Default::default(),
                )
            })
            .collect();
        Self {
            convs,
            top_down_levels: vec![2, 3],
        }
    }

    /// The stage outputs (highest resolution first) -> the neck's levels.
    fn forward(&self, stages: &[Tensor]) -> Vec<Tensor> {
        let n = self.convs.len() - 1;
        let mut out: Vec<Option<Tensor>> = (0..=n).map(|_| None).collect();
        let mut prev: Option<Tensor> = None;
        for i in (0..=n).rev() {
            let lateral = self.convs[n - i].forward(&stages[i]);
            let level = match &prev {
                Some(p) if self.top_down_levels.contains(&i) => {
                    let (h, w) = (p.size()[2], p.size()[3]);
                    lateral + p.upsample_nearest2d([h * 2, w * 2], Some(2.0), Some(2.0))
                }
                _ => lateral,
            };
            prev = Some(level.shallow_clone());
            out[i] = Some(level);
        }
        out.into_iter().map(|t| t.expect("every level")).collect()
    }
}

/// The image features the SAM heads and the memory use: the FPN levels at
/// strides 4, 8 and 16 (the first two already through the mask decoder's
/// `conv_s0` / `conv_s1`) and the stride-16 position encoding.
#[derive(Debug)]
pub(crate) struct BackboneFeatures {
    /// `(B, 32, S/4, S/4)` and `(B, 64, S/8, S/8)`: the decoder's
    /// high-resolution features.
    pub high_res: [Tensor; 2],
    /// `(B, 256, S/16, S/16)`: the features the heads and memory attend.
    pub vision: Tensor,
    /// `(1, 256, S/16, S/16)`: their sine position encoding.
    pub vision_pos: Tensor,
}

/// Trunk + neck.
#[derive(Debug)]
pub(crate) struct ImageEncoder {
    trunk: Hiera,
    neck: FpnNeck,
}

impl ImageEncoder {
    /// Declares the variables under `p` (= `image_encoder`).
    pub(crate) fn new(p: nn::Path, cfg: &HieraConfig) -> Self {
        Self {
            trunk: Hiera::new(&p / "trunk", cfg),
            neck: FpnNeck::new(&p / "neck", &cfg.stage_dims()),
        }
    }

    /// The neck's levels at strides 4, 8 and 16 (the stride-32 level is
    /// dropped, `scalp = 1`).
    pub(crate) fn forward(&self, image: &Tensor) -> Vec<Tensor> {
        let mut levels = self.neck.forward(&self.trunk.forward(image));
        levels.truncate(levels.len() - 1);
        levels
    }
}
