//! ResNet-18/34/50 in `tch` with torchvision's parameter names, and the
//! CLISC classification head.
//!
//! The backbone mirrors `torchvision.models.resnet{18,34,50}` exactly
//! (ResNet v1.5: the stride of a bottleneck sits on its 3x3 convolution), so
//! a torchvision ImageNet state dict (`conv1.weight`, `bn1.running_mean`,
//! `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, ...) loads into
//! it name for name.
//!
//! The head replaces torchvision's `fc` the way the CLISC code does
//! (`model.fc = nn.Sequential(Linear(F, 256), ReLU(), Dropout(0.5),
//! Linear(256, 2))`), hence its parameter names:
//!
//! | name          | shape       |
//! |---------------|-------------|
//! | `fc.0.weight` | `[256, F]`  |
//! | `fc.0.bias`   | `[256]`     |
//! | `fc.3.weight` | `[2, 256]`  |
//! | `fc.3.bias`   | `[2]`       |
//!
//! with `F` = 512 (ResNet-18/34) or 2048 (ResNet-50). torchvision's own
//! `fc.weight` / `fc.bias` (1000 ImageNet classes) are never used.

use clisc_sdk::PluginError;
use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

clisc_sdk::setting_choice! {
    /// Which torchvision ResNet (named as in torchvision).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Arch {
        /// BasicBlocks [2, 2, 2, 2], 512 features.
        ResNet18 = "resnet18",
        /// BasicBlocks [3, 4, 6, 3], 512 features.
        ResNet34 = "resnet34",
        /// Bottlenecks [3, 4, 6, 3], 2048 features (CLISC's choice).
        ResNet50 = "resnet50",
    }
}

impl Arch {
    fn blocks(self) -> [usize; 4] {
        match self {
            Arch::ResNet18 => [2, 2, 2, 2],
            Arch::ResNet34 | Arch::ResNet50 => [3, 4, 6, 3],
        }
    }
    fn bottleneck(self) -> bool {
        matches!(self, Arch::ResNet50)
    }
    /// Channels of `layerN` (1-based) output.
    pub fn channels(self, layer: usize) -> i64 {
        let base = 64 << (layer - 1);
        if self.bottleneck() {
            base * 4
        } else {
            base
        }
    }
    /// Channels entering the head (after global average pooling).
    pub fn features(self) -> i64 {
        self.channels(4)
    }
}

/// The stages of the network, in order; CAMs can hook any `layerN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// `conv1`, `bn1`, ReLU, max-pool.
    Stem,
    /// `layer1`.
    Layer1,
    /// `layer2`.
    Layer2,
    /// `layer3` (CLISC's LayerCAM layer).
    Layer3,
    /// `layer4` (the one feeding the pooling).
    Layer4,
}

impl Stage {
    /// Parses `layer1` .. `layer4`.
    pub(crate) fn parse_layer(s: &str) -> Result<Self, PluginError> {
        match s {
            "layer1" => Ok(Stage::Layer1),
            "layer2" => Ok(Stage::Layer2),
            "layer3" => Ok(Stage::Layer3),
            "layer4" => Ok(Stage::Layer4),
            other => Err(PluginError::config(format!(
                "cam: `target_layer` must be one of layer1..layer4, found `{other}`"
            ))),
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(p, cin, cout, k, cfg)
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

/// One residual block (basic or bottleneck), torchvision names.
#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Block {
    fn new(p: &nn::Path, cin: i64, planes: i64, stride: i64, bottleneck: bool) -> Self {
        let expansion = if bottleneck { 4 } else { 1 };
        let cout = planes * expansion;
        let convs = if bottleneck {
            vec![
                (
                    conv(p / "conv1", cin, planes, 1, 1, 0),
                    bn(p / "bn1", planes),
                ),
                (
                    conv(p / "conv2", planes, planes, 3, stride, 1),
                    bn(p / "bn2", planes),
                ),
                (
                    conv(p / "conv3", planes, cout, 1, 1, 0),
                    bn(p / "bn3", cout),
                ),
            ]
        } else {
            vec![
                (
                    conv(p / "conv1", cin, planes, 3, stride, 1),
                    bn(p / "bn1", planes),
                ),
                (
                    conv(p / "conv2", planes, planes, 3, 1, 1),
                    bn(p / "bn2", planes),
                ),
            ]
        };
        let downsample = (stride != 1 || cin != cout).then(|| {
            let d = p / "downsample";
            (conv(&d / "0", cin, cout, 1, stride, 0), bn(&d / "1", cout))
        });
        Self { convs, downsample }
    }

    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let last = self.convs.len() - 1;
        let mut ys = xs.shallow_clone();
        // In-place ReLU and residual addition on the convolutions' own
        // outputs, as torchvision does: batch norm's backward needs its
        // input, not its output, and one allocation less per activation
        // is a few percent of a training step.
        for (i, (c, b)) in self.convs.iter().enumerate() {
            ys = c.forward(&ys).apply_t(b, train);
            if i != last {
                let _ = ys.relu_();
            }
        }
        let identity = match &self.downsample {
            Some((c, b)) => c.forward(xs).apply_t(b, train),
            None => xs.shallow_clone(),
        };
        ys += identity;
        let _ = ys.relu_();
        ys
    }
}

/// A torchvision ResNet backbone with the CLISC two-class head.
#[derive(Debug)]
pub struct ResNet {
    /// Which ResNet.
    pub arch: Arch,
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: [Vec<Block>; 4],
    fc0: nn::Linear,
    fc3: nn::Linear,
}

impl ResNet {
    /// Creates the variables under `p` (use the var store's root so names
    /// match torchvision's state dict).
    pub fn new(p: &nn::Path, arch: Arch) -> Self {
        let conv1 = conv(p / "conv1", 3, 64, 7, 2, 3);
        let bn1 = bn(p / "bn1", 64);
        let mut cin = 64;
        let bottleneck = arch.bottleneck();
        let layers = std::array::from_fn(|l| {
            let planes = 64i64 << l;
            let stride = if l == 0 { 1 } else { 2 };
            let lp = p / format!("layer{}", l + 1);
            (0..arch.blocks()[l])
                .map(|b| {
                    let block = Block::new(
                        &(&lp / b),
                        cin,
                        planes,
                        if b == 0 { stride } else { 1 },
                        bottleneck,
                    );
                    cin = planes * if bottleneck { 4 } else { 1 };
                    block
                })
                .collect()
        });
        let fc = p / "fc";
        let fc0 = nn::linear(&fc / "0", arch.features(), 256, Default::default());
        let fc3 = nn::linear(&fc / "3", 256, 2, Default::default());
        Self {
            arch,
            conv1,
            bn1,
            layers,
            fc0,
            fc3,
        }
    }

    /// Runs the stages from `from` (exclusive; `None` = the image) up to
    /// `to` (inclusive) on `xs`.
    pub fn run_stages(&self, xs: &Tensor, from: Option<Stage>, to: Stage, train: bool) -> Tensor {
        let start = from.map_or(0, |s| s.index() + 1);
        let mut ys = xs.shallow_clone();
        for stage in start..=to.index() {
            ys = if stage == 0 {
                let mut y = self.conv1.forward(&ys).apply_t(&self.bn1, train);
                let _ = y.relu_();
                y.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
            } else {
                let mut h = ys;
                for block in &self.layers[stage - 1] {
                    h = block.forward(&h, train);
                }
                h
            };
        }
        ys
    }

    /// Global average pooling of `layer4` output: `[N, F]` features.
    pub fn pool(layer4: &Tensor) -> Tensor {
        layer4.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    /// The head on pooled features: `[N, F]` -> `[N, 2]` logits.
    pub fn head(&self, features: &Tensor, train: bool) -> Tensor {
        features
            .apply(&self.fc0)
            .relu()
            .dropout(0.5, train)
            .apply(&self.fc3)
    }

    /// The head applied at every spatial position of a `layer4` map
    /// (`[N, F, H, W]` -> `[N, 2, H, W]`), in eval mode. For a linear head
    /// this is exactly Zhou et al.'s class activation map.
    pub(crate) fn head_per_position(&self, layer4: &Tensor) -> Tensor {
        let (n, f, h, w) = layer4.size4().expect("layer4 map is 4D");
        let flat = layer4.permute([0, 2, 3, 1]).reshape([n * h * w, f]);
        let logits = self.head(&flat, false);
        logits.reshape([n, h, w, 2]).permute([0, 3, 1, 2])
    }

    /// Pooled backbone features `[N, F]`.
    pub fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        Self::pool(&self.run_stages(xs, None, Stage::Layer4, train))
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head(&self.features(xs, train), train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn parameter_names_and_shapes_follow_torchvision() {
        let _torch_rng = crate::torch_rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = ResNet::new(&vs.root(), Arch::ResNet18);
        let vars = vs.variables();
        assert_eq!(vars["conv1.weight"].size(), [64, 3, 7, 7]);
        assert_eq!(vars["layer2.0.downsample.0.weight"].size(), [128, 64, 1, 1]);
        assert_eq!(vars["layer4.1.bn2.running_var"].size(), [512]);
        assert_eq!(vars["fc.0.weight"].size(), [256, 512]);
        assert_eq!(vars["fc.3.weight"].size(), [2, 256]);
        assert!(!vars.contains_key("layer1.0.downsample.0.weight"));
        // conv 20 + bn 20*4 + downsample 3*(1+4) ... just check the total count:
        // resnet18 = 62 trainable tensors + 40 BN buffers (+4 head) in torchvision terms.
        let vs50 = nn::VarStore::new(Device::Cpu);
        let _n50 = ResNet::new(&vs50.root(), Arch::ResNet50);
        let v50 = vs50.variables();
        assert_eq!(v50["layer1.0.conv3.weight"].size(), [256, 64, 1, 1]);
        assert_eq!(v50["layer1.0.downsample.0.weight"].size(), [256, 64, 1, 1]);
        assert_eq!(v50["layer2.0.conv2.weight"].size(), [128, 128, 3, 3]);
        assert_eq!(v50["fc.0.weight"].size(), [256, 2048]);
    }

    #[test]
    fn stage_shapes_at_112() {
        let _torch_rng = crate::torch_rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ResNet::new(&vs.root(), Arch::ResNet18);
        let x = Tensor::rand([2, 3, 112, 112], (Kind::Float, Device::Cpu));
        let l3 = net.run_stages(&x, None, Stage::Layer3, false);
        assert_eq!(l3.size(), [2, 256, 7, 7]);
        let l4 = net.run_stages(&l3, Some(Stage::Layer3), Stage::Layer4, false);
        assert_eq!(l4.size(), [2, 512, 4, 4]);
        let logits = net.forward_t(&x, false);
        assert_eq!(logits.size(), [2, 2]);
        let direct = net.head(&ResNet::pool(&l4), false);
        assert!(logits.allclose(&direct, 1e-5, 1e-6, false));
        assert_eq!(net.head_per_position(&l4).size(), [2, 2, 4, 4]);
    }
}
