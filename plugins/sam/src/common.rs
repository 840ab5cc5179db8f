//! Small building blocks shared by SAM's modules (`modeling/common.py`
//! and the decoder's MLP), under the official parameter names.

use tch::nn::{self, Module};
use tch::Tensor;

/// Channel-wise layer norm of `(B, C, H, W)` maps (`LayerNorm2d`, eps 1e-6):
/// normalises over `C` at every pixel, then scales and shifts per channel.
#[derive(Debug)]
pub struct LayerNorm2d {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm2d {
    /// Declares `weight` (ones) and `bias` (zeros) of `channels`.
    pub fn new(p: nn::Path, channels: i64) -> Self {
        Self {
            weight: p.ones("weight", &[channels]),
            bias: p.zeros("bias", &[channels]),
            eps: 1e-6,
        }
    }
    /// Applies the norm.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let u = x.mean_dim(1, true, None);
        let d = x - &u;
        let s = d.pow_tensor_scalar(2).mean_dim(1, true, None);
        let x = d / (s + self.eps).sqrt();
        self.weight.view([1, -1, 1, 1]) * x + self.bias.view([1, -1, 1, 1])
    }
}

/// Two-layer feed-forward block (`lin1`, activation, `lin2`).
#[derive(Debug)]
pub(crate) struct MlpBlock {
    lin1: nn::Linear,
    lin2: nn::Linear,
    gelu: bool,
}

impl MlpBlock {
    /// Exact (erf) GELU, as `nn.GELU()`.
    pub(crate) const GELU: bool = true;
    /// ReLU, as used in the decoder's two-way transformer.
    pub(crate) const RELU: bool = false;

    /// Declares the block; `gelu` picks GELU (true) or ReLU (false).
    pub(crate) fn new(p: nn::Path, dim: i64, hidden: i64, gelu: bool) -> Self {
        Self {
            lin1: nn::linear(&p / "lin1", dim, hidden, Default::default()),
            lin2: nn::linear(&p / "lin2", hidden, dim, Default::default()),
            gelu,
        }
    }
    /// Applies the block.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.lin1.forward(x);
        let h = if self.gelu { h.gelu("none") } else { h.relu() };
        self.lin2.forward(&h)
    }
}

/// The activation between the layers of an [`Mlp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// ReLU (SAM's decoder heads, SAM 2's heads).
    Relu,
    /// Exact (erf) GELU (SAM 2's Hiera blocks).
    Gelu,
}

/// The decoder's multi-layer perceptron (`layers.N`): linear layers with an
/// activation between them and optionally a sigmoid after the last (SAM 2's
/// IoU head, `sigmoid_output`).
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<nn::Linear>,
    activation: Activation,
    sigmoid_output: bool,
}

impl Mlp {
    /// `num_layers` linear layers `input -> hidden ... -> output`, ReLU between.
    pub fn new(p: nn::Path, input: i64, hidden: i64, output: i64, num_layers: i64) -> Self {
        Self::with_activation(
            p,
            [input, hidden, output],
            num_layers,
            Activation::Relu,
            false,
        )
    }

    /// `num_layers` linear layers `widths[0] -> widths[1] ... -> widths[2]`
    /// with `activation` between them and a sigmoid at the end when
    /// `sigmoid_output` (SAM 2's `MLP`).
    pub fn with_activation(
        p: nn::Path,
        widths: [i64; 3],
        num_layers: i64,
        activation: Activation,
        sigmoid_output: bool,
    ) -> Self {
        let [input, hidden, output] = widths;
        let layers = (0..num_layers)
            .map(|i| {
                let n_in = if i == 0 { input } else { hidden };
                let n_out = if i == num_layers - 1 { output } else { hidden };
                nn::linear(&p / "layers" / i, n_in, n_out, Default::default())
            })
            .collect();
        Self {
            layers,
            activation,
            sigmoid_output,
        }
    }

    /// Applies the layers.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let last = self.layers.len() - 1;
        let mut x = x.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x);
            if i < last {
                x = match self.activation {
                    Activation::Relu => x.relu(),
                    Activation::Gelu => x.gelu("none"),
                };
            }
        }
        if self.sigmoid_output {
            x.sigmoid()
        } else {
            x
        }
    }
}
