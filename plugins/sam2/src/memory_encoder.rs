//! SAM 2's memory encoder (`memory_encoder`): a frame's mask, downsampled
//! 16x by strided convolutions, is added to the frame's projected
//! stride-16 features, fused by two ConvNeXt blocks and projected to 64
//! channels, with a sine position encoding. Mirrors
//! `modeling/memory_encoder.py`.

use crate::config::{HIDDEN_DIM, MEM_DIM};
use crate::image_encoder::sine_position_encoding;
use clisc_sam::common::LayerNorm2d;
use tch::nn::{self, Module};
use tch::Tensor;

/// A ConvNeXt block (`CXBlock`): depth-wise 7x7 convolution, layer norm,
/// pointwise MLP (GELU), layer scale, residual.
#[derive(Debug)]
struct CxBlock {
    dwconv: nn::Conv2D,
    norm: LayerNorm2d,
    pwconv1: nn::Linear,
    pwconv2: nn::Linear,
    gamma: Tensor,
}

impl CxBlock {
    fn new(p: nn::Path, dim: i64) -> Self {
        let dw = nn::ConvConfig {
            padding: 3,
            groups: dim,
            ..Default::default()
        };
        Self {
            dwconv: nn::conv2d(&p / "dwconv", dim, dim, 7, dw),
            norm: LayerNorm2d::new(&p / "norm", dim),
            pwconv1: nn::linear(&p / "pwconv1", dim, 4 * dim, Default::default()),
            pwconv2: nn::linear(&p / "pwconv2", 4 * dim, dim, Default::default()),
            gamma: p.zeros("gamma", &[dim]),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let y = self
            .norm
            .forward(&x.apply(&self.dwconv))
            .permute([0, 2, 3, 1]);
        let y = self.pwconv2.forward(&self.pwconv1.forward(&y).gelu("none"));
        x + (&self.gamma * y).permute([0, 3, 1, 2])
    }
}

/// One memory: features `(B, 64, h, w)` and their position encoding
/// `(1, 64, h, w)`.
#[derive(Debug)]
pub(crate) struct Memory {
    /// `maskmem_features`.
    pub features: Tensor,
    /// `maskmem_pos_enc`.
    pub pos: Tensor,
}

/// The memory encoder.
#[derive(Debug)]
pub(crate) struct MemoryEncoder {
    /// `mask_downsampler.encoder`: (conv 3x3/2, LayerNorm2d, GELU) x 4,
    /// then a 1x1 convolution.
    downsample: Vec<(nn::Conv2D, LayerNorm2d)>,
    downsample_out: nn::Conv2D,
    pix_feat_proj: nn::Conv2D,
    fuser: Vec<CxBlock>,
    out_proj: nn::Conv2D,
}

impl MemoryEncoder {
    /// Declares the variables under `p` (= `memory_encoder`).
    pub(crate) fn new(p: nn::Path) -> Self {
        let enc = &p / "mask_downsampler" / "encoder";
        let conv = nn::ConvConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        let mut downsample = vec![];
        let mut channels = 1;
        for i in 0..4 {
            let out = channels * 4;
            downsample.push((
                nn::conv2d(&enc / (3 * i), channels, out, 3, conv),
                LayerNorm2d::new(&enc / (3 * i + 1), out),
            ));
            channels = out;
        }
        Self {
            downsample,
            downsample_out: nn::conv2d(&enc / 12, channels, HIDDEN_DIM, 1, Default::default()),
            pix_feat_proj: nn::conv2d(
                &p / "pix_feat_proj",
                HIDDEN_DIM,
                HIDDEN_DIM,
                1,
                Default::default(),
            ),
            fuser: (0..2)
                .map(|i| CxBlock::new(&p / "fuser" / "layers" / i, HIDDEN_DIM))
                .collect(),
            out_proj: nn::conv2d(&p / "out_proj", HIDDEN_DIM, MEM_DIM, 1, Default::default()),
        }
    }

    /// `pix_feat`: `(B, 256, h, w)`; `mask`: `(B, 1, 16h, 16w)`, already
    /// through the sigmoid (or binarised) and scaled.
    pub(crate) fn forward(&self, pix_feat: &Tensor, mask: &Tensor) -> Memory {
        let mut m = mask.shallow_clone();
        for (conv, norm) in &self.downsample {
            m = norm.forward(&m.apply(conv)).gelu("none");
        }
        let m = m.apply(&self.downsample_out);
        let mut x = self.pix_feat_proj.forward(pix_feat) + m;
        for block in &self.fuser {
            x = block.forward(&x);
        }
        let features = x.apply(&self.out_proj);
        let (h, w) = (features.size()[2], features.size()[3]);
        let pos = sine_position_encoding(MEM_DIM, h, w, features.device());
        Memory { features, pos }
    }
}
