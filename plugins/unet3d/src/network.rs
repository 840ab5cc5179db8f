//! The 3D U-Net of CLISC in `tch`.
//!
//! Mirrors the PyTorch `unet_3D` used by the CLISC reference code (itself
//! from the Attention-Gated-Networks / SSL4MIS family), so that parameter
//! names match a PyTorch state dict of that module:
//!
//! * `conv{1..L-1}`: encoder levels, each a `UnetConv3` block of two
//!   `Conv3d(3x3x3, padding 1) -> InstanceNorm3d (no affine) -> ReLU`
//!   (parameters `conv1.conv1.0.weight`, `conv1.conv2.0.bias`, ...),
//!   followed by a 2x2x2 max-pool;
//! * `center`: the bottleneck block, followed by dropout (`dropout1`);
//! * `up_concat{L-1..1}`: trilinear upsampling of the coarser features to
//!   the skip connection's size, concatenation `[skip, upsampled]` and a
//!   `UnetConv3` block (`up_concat4.conv.conv1.0.weight`, ...);
//! * dropout (`dropout2`) then `final`, a 1x1x1 convolution to the classes.
//!
//! With `features = [16, 32, 64, 128, 256]` (the paper) this is exactly the
//! reference network (`feature_scale = 4`); a shorter list gives a shallower
//! network (depth follows the list).

use tch::nn::{self, Module};
use tch::Tensor;

/// Two `Conv3d -> InstanceNorm3d -> ReLU` layers (PyTorch `UnetConv3`).
#[derive(Debug)]
pub(crate) struct ConvBlock {
    conv1: nn::Conv3D,
    conv2: nn::Conv3D,
}

fn conv3(p: nn::Path, cin: i64, cout: i64) -> nn::Conv3D {
    let cfg = nn::ConvConfig {
        padding: 1,
        ws_init: nn::init::DEFAULT_KAIMING_NORMAL,
        ..Default::default()
    };
    nn::conv3d(p, cin, cout, 3, cfg)
}

/// Instance normalisation without affine parameters (the PyTorch default
/// of `nn.InstanceNorm3d`), then ReLU in place, as `nn.ReLU(inplace=True)`
/// does: one full-size activation less to allocate per block (instance
/// norm's backward does not need its output, so autograd allows it).
fn norm_relu(x: &Tensor) -> Tensor {
    let mut y = x.instance_norm(None::<&Tensor>, None, None, None, true, 0.1, 1e-5, false);
    let _ = y.relu_();
    y
}

impl ConvBlock {
    /// Builds the block under `p` (`p/conv1/0`, `p/conv2/0`).
    pub(crate) fn new(p: &nn::Path, cin: i64, cout: i64) -> Self {
        Self {
            conv1: conv3(p / "conv1" / "0", cin, cout),
            conv2: conv3(p / "conv2" / "0", cout, cout),
        }
    }
    /// Applies both layers.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        norm_relu(&self.conv2.forward(&norm_relu(&self.conv1.forward(x))))
    }
}

/// Upsample, concatenate with the skip connection, convolve (`UnetUp3_CT`).
#[derive(Debug)]
pub(crate) struct UpBlock {
    conv: ConvBlock,
}

impl UpBlock {
    /// `coarse` channels come from below, `skip` channels from the encoder;
    /// the output has `skip` channels.
    pub(crate) fn new(p: &nn::Path, coarse: i64, skip: i64) -> Self {
        Self {
            conv: ConvBlock::new(&(p / "conv"), coarse + skip, skip),
        }
    }
    /// Upsamples `below` trilinearly to the size of `skip` and fuses them.
    pub(crate) fn forward(&self, skip: &Tensor, below: &Tensor) -> Tensor {
        let size = skip.size();
        let up = below.upsample_trilinear3d(&size[2..], false, None, None, None);
        self.conv.forward(&Tensor::cat(&[skip, &up], 1))
    }
}

/// The 3D U-Net.
#[derive(Debug)]
pub struct UNet3d {
    encoders: Vec<ConvBlock>,
    center: ConvBlock,
    decoders: Vec<UpBlock>,
    final_conv: nn::Conv3D,
    dropout: f64,
}

impl UNet3d {
    /// A network with `features[i]` channels at level `i` (the last entry is
    /// the bottleneck), `in_channels` inputs and `classes` outputs.
    /// `features` needs at least two entries.
    pub fn new(
        root: &nn::Path,
        in_channels: i64,
        classes: i64,
        features: &[i64],
        dropout: f64,
    ) -> Self {
        assert!(features.len() >= 2, "a U-Net needs at least two levels");
        let levels = features.len() - 1;
        let mut encoders = Vec::with_capacity(levels);
        let mut cin = in_channels;
        for (i, &f) in features[..levels].iter().enumerate() {
            encoders.push(ConvBlock::new(&(root / format!("conv{}", i + 1)), cin, f));
            cin = f;
        }
        let center = ConvBlock::new(&(root / "center"), cin, features[levels]);
        // decoders[i] is up_concat{i+1}: coarse features[i+1] -> skip features[i].
        let decoders = (0..levels)
            .map(|i| {
                UpBlock::new(
                    &(root / format!("up_concat{}", i + 1)),
                    features[i + 1],
                    features[i],
                )
            })
            .collect();
        let final_conv = nn::conv3d(root / "final", features[0], classes, 1, Default::default());
        Self {
            encoders,
            center,
            decoders,
            final_conv,
            dropout,
        }
    }

    /// Number of 2x poolings; input sizes must be multiples of `2^depth`.
    pub fn depth(&self) -> usize {
        self.encoders.len()
    }

    /// Logits `[B, classes, D, H, W]` of an input `[B, C, D, H, W]`;
    /// dropout is active only when `train` is true.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut skips = Vec::with_capacity(self.encoders.len());
        let mut h = x.shallow_clone();
        for enc in &self.encoders {
            let s = enc.forward(&h);
            h = s.max_pool3d([2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], false);
            skips.push(s);
        }
        h = self.center.forward(&h).dropout(self.dropout, train);
        for (dec, skip) in self.decoders.iter().zip(skips.iter()).rev() {
            h = dec.forward(skip, &h);
        }
        self.final_conv.forward(&h.dropout(self.dropout, train))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Names, shapes and the parameter count only. Output parity with an
    /// independent PyTorch `unet_3D` (same weights, same input, strict
    /// state-dict load) is checked by `tests/pytorch_parity.rs`, which also
    /// confirms the count below from the PyTorch module.
    #[test]
    fn parameter_names_match_the_pytorch_reference() {
        let _rng = super::super::torch_rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet3d::new(&vs.root(), 1, 2, &[16, 32, 64, 128, 256], 0.3);
        assert_eq!(net.depth(), 4);
        let vars = vs.variables();
        for name in [
            "conv1.conv1.0.weight",
            "conv4.conv2.0.bias",
            "center.conv1.0.weight",
            "up_concat4.conv.conv1.0.weight",
            "up_concat1.conv.conv2.0.weight",
            "final.weight",
            "final.bias",
        ] {
            assert!(
                vars.contains_key(name),
                "missing {name}; have {:?}",
                vars.keys().collect::<Vec<_>>()
            );
        }
        // 4 encoders + centre + 4 decoders, 2 convs each with weight and bias, + final.
        assert_eq!(vars.len(), 9 * 4 + 2);
        assert_eq!(
            vars["up_concat4.conv.conv1.0.weight"].size(),
            vec![128, 384, 3, 3, 3]
        );
        assert_eq!(vars["final.weight"].size(), vec![2, 16, 1, 1, 1]);
        // Parameter count of the reference unet_3D(feature_scale=4, n_classes=2, in_channels=1).
        let total: i64 = vars.values().map(|t| t.numel() as i64).sum();
        assert_eq!(total, 5_884_050);
    }

    #[test]
    fn output_has_the_input_size_even_for_odd_sizes() {
        let _rng = super::super::torch_rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet3d::new(&vs.root(), 1, 2, &[4, 8, 16], 0.3);
        let x = Tensor::randn([2, 1, 8, 12, 16], (Kind::Float, Device::Cpu));
        assert_eq!(net.forward_t(&x, false).size(), vec![2, 2, 8, 12, 16]);
        let odd = Tensor::randn([1, 1, 9, 10, 11], (Kind::Float, Device::Cpu));
        assert_eq!(net.forward_t(&odd, false).size(), vec![1, 2, 9, 10, 11]);
    }
}
