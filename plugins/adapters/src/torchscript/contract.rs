//! The model contract shared by the TorchScript adapters: how an image
//! becomes the model's input tensor and how its output becomes a
//! probability of "tumour".

use clisc_sdk::{plugin_settings, PluginError};
use std::path::{Path, PathBuf};
use tch::{CModule, Device, IValue, Kind, Tensor};

/// ImageNet channel means (RGB), for `normalization = "imagenet"`.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

clisc_sdk::setting_choice! {
    /// How input intensities are rescaled before the model sees them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Normalization {
        /// Passed as is (clisc's inputs are already z-scored over the brain).
        None = "none",
        /// Per image (slice or volume) to `[0, 1]`.
        MinMax = "minmax",
        /// Per image to zero mean and unit variance.
        ZScore = "zscore",
        /// Per image to `[0, 1]`, then per channel `(x - mean) / std` with the
        /// ImageNet constants (needs 3 input channels).
        ImageNet = "imagenet",
        /// Per image min-max to the integers `0..=255`, as an 8-bit image file
        /// holds the slice (what SAM-family models are trained on).
        Uint8 = "uint8",
    }
}

clisc_sdk::setting_choice! {
    /// What the model's output holds.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum OutputKind {
        /// Raw scores: sigmoid for one channel, softmax over channels otherwise.
        Logits = "logits",
        /// Probabilities in `[0, 1]`.
        Probabilities = "probabilities",
        /// A hard 0/1 mask (or class scores already thresholded).
        Mask = "mask",
    }
}

plugin_settings! {
    /// The settings every TorchScript adapter shares (a `group` of each
    /// adapter's settings).
    pub(crate) struct ContractSettings {
        /// the TorchScript file (torch.jit.script / torch.jit.trace + .save)
        pub model: PathBuf = weights_file(
            "your own model exported with torch.jit.script or torch.jit.trace and .save (docs/plugins-torchscript.md)"
        ),
        /// the image channel fed to the model
        pub channel: String = string("flair"),
        /// channels the model expects; the grey image is repeated (3 for RGB-pretrained backbones)
        pub input_channels: i64 = integer(1),
        /// intensity normalisation per image: none (clisc's z-scored input), minmax to [0,1],
        /// zscore, imagenet (minmax then ImageNet mean/std, 3 channels), uint8 (minmax to the
        /// integers 0..255, as SAM-family models expect)
        pub normalization: Normalization = choice(Normalization::None.name(), Normalization::NAMES),
        /// what the model returns: logits (sigmoid for 1 channel, softmax otherwise),
        /// probabilities, or a 0/1 mask
        pub output: OutputKind = choice(OutputKind::Logits.name(), OutputKind::NAMES),
        /// the tumour's class/channel when the output has several channels (ignored for one
        /// channel)
        pub class_index: i64 = integer(1),
        /// tumour when its probability is at least this
        pub threshold: f64 = float(0.5),
    }
}

/// The parsed common contract plus the loaded model.
pub(crate) struct Contract {
    /// Plugin name for messages.
    pub plugin: &'static str,
    /// Model path for messages.
    pub model_path: PathBuf,
    /// The loaded module (eval mode, on `device`).
    pub module: CModule,
    /// Where tensors live.
    pub device: Device,
    /// Image channel to read.
    pub channel: String,
    /// Channels the model expects.
    pub input_channels: i64,
    /// Intensity normalisation.
    pub normalization: Normalization,
    /// Output interpretation.
    pub output: OutputKind,
    /// Tumour class for multi-channel outputs.
    pub class_index: i64,
    /// Decision threshold on the tumour probability.
    pub threshold: f64,
}

impl Contract {
    /// Checks the common settings and loads the model on the context's device.
    pub(crate) fn load(
        plugin: &'static str,
        settings: ContractSettings,
        device_spec: &str,
    ) -> Result<Self, PluginError> {
        let device = clisc_nn::resolve_device(device_spec)?;
        let ContractSettings {
            model: model_path,
            channel,
            input_channels,
            normalization,
            output,
            class_index,
            threshold,
        } = settings;
        let module = load_module(plugin, &model_path, device)?;
        if input_channels < 1 {
            return Err(PluginError::config(format!(
                "{plugin}: `input_channels` must be at least 1, found {input_channels}"
            )));
        }
        if normalization == Normalization::ImageNet && input_channels != 3 {
            return Err(PluginError::config(format!(
                "{plugin}: normalization = \"imagenet\" needs input_channels = 3, found {input_channels}"
            )));
        }
        Ok(Self {
            plugin,
            model_path,
            module,
            device,
            channel,
            input_channels,
            normalization,
            output,
            class_index,
            threshold,
        })
    }

    /// Normalises `x` (`[N, 1, ...spatial]`, one image per row) and repeats
    /// it to the model's channel count.
    pub(crate) fn prepare(&self, x: &Tensor) -> Tensor {
        prepare_input(x, self.normalization, self.input_channels)
    }

    /// Runs the model's `forward`; a tuple or list output yields its first
    /// tensor.
    pub(crate) fn forward(&self, inputs: &[Tensor]) -> Result<Tensor, PluginError> {
        self.call("forward", inputs)
    }

    /// Runs the model's method `method` (`forward`, or one exported with
    /// `@torch.jit.export`); a tuple or list output yields its first tensor.
    pub(crate) fn call(&self, method: &str, inputs: &[Tensor]) -> Result<Tensor, PluginError> {
        let args: Vec<IValue> = inputs
            .iter()
            .map(|t| IValue::Tensor(t.shallow_clone()))
            .collect();
        let out = self.module.method_is(method, &args).map_err(|e| {
            let shapes: Vec<Vec<i64>> = inputs.iter().map(|t| t.size()).collect();
            PluginError::input(format!(
                "{}: `{method}` of model {} failed on inputs of shapes {shapes:?}: {}",
                self.plugin,
                self.model_path.display(),
                first_line(&e.to_string())
            ))
        })?;
        first_tensor(out).ok_or_else(|| {
            PluginError::input(format!(
                "{}: `{method}` of model {} did not return a tensor (nor a tuple/list starting with one)",
                self.plugin,
                self.model_path.display()
            ))
        })
    }

    /// Turns class scores `[N, K, ...]` into the tumour probability
    /// `[N, ...]` according to `output` and `class_index`.
    pub(crate) fn tumour_probability(&self, scores: &Tensor) -> Result<Tensor, PluginError> {
        let k = scores.size()[1];
        let scores = scores.to_kind(Kind::Float);
        let pick = |t: &Tensor| -> Result<Tensor, PluginError> {
            if k == 1 {
                return Ok(t.select(1, 0));
            }
            if self.class_index < 0 || self.class_index >= k {
                return Err(PluginError::config(format!(
                    "{}: class_index {} is outside the model's {k} output channels",
                    self.plugin, self.class_index
                )));
            }
            Ok(t.select(1, self.class_index))
        };
        Ok(match self.output {
            OutputKind::Logits if k == 1 => pick(&scores)?.sigmoid(),
            OutputKind::Logits => pick(&scores.softmax(1, Kind::Float))?,
            OutputKind::Probabilities => pick(&scores)?,
            OutputKind::Mask => pick(&scores)?.gt(0.5).to_kind(Kind::Float),
        })
    }

    /// The tumour mask (`[N, ...]`, bool) of class scores `[N, K, ...]`:
    /// probability at least `threshold`. A one-channel logit is compared
    /// with the threshold's logit instead of through a sigmoid, which
    /// rounds logits within about 1e-7 of it to exactly the threshold
    /// (so a logit of -1e-7 stays background, as in SAM's own `logit > 0`;
    /// the two differ only for a logit of exactly 0, tumour here).
    pub(crate) fn tumour_mask(&self, scores: &Tensor) -> Result<Tensor, PluginError> {
        if self.output == OutputKind::Logits && scores.size()[1] == 1 {
            let t = self.threshold;
            let logit = (t / (1.0 - t)).ln();
            return Ok(scores.to_kind(Kind::Float).select(1, 0).ge(logit));
        }
        Ok(self.tumour_probability(scores)?.ge(self.threshold))
    }

    /// An input error about the model's output shape.
    pub(crate) fn bad_output(&self, shape: &[i64], expected: &str) -> PluginError {
        PluginError::input(format!(
            "{}: model {} returned a tensor of shape {shape:?}; expected {expected}",
            self.plugin,
            self.model_path.display()
        ))
    }
}

/// Normalises `x` (`[N, 1, ...spatial]`, one image per row, statistics per
/// image) and repeats it to `channels` channels; `ImageNet` then applies
/// the per-channel ImageNet mean and standard deviation.
pub(crate) fn prepare_input(x: &Tensor, normalization: Normalization, channels: i64) -> Tensor {
    let n = x.size()[0];
    let flat = x.reshape([n, -1]);
    let eps = 1e-8;
    let normed = match normalization {
        Normalization::None => flat,
        Normalization::MinMax | Normalization::ImageNet => {
            let lo = flat.amin([1i64].as_slice(), true);
            let hi = flat.amax([1i64].as_slice(), true);
            (&flat - &lo) / (hi - &lo).clamp_min(eps)
        }
        Normalization::Uint8 => {
            let lo = flat.amin([1i64].as_slice(), true);
            let hi = flat.amax([1i64].as_slice(), true);
            ((&flat - &lo) * ((hi - &lo).clamp_min(eps).reciprocal() * 255.0))
                .round()
                .clamp(0.0, 255.0)
        }
        Normalization::ZScore => {
            let mean = flat.mean_dim([1i64].as_slice(), true, Kind::Float);
            let std = flat
                .std_correction([1i64].as_slice(), 0, true)
                .clamp_min(eps);
            (&flat - mean) / std
        }
    };
    let normed = normed.reshape(x.size());
    let mut repeat = vec![1i64; x.dim()];
    repeat[1] = channels;
    let out = normed.repeat(repeat.as_slice());
    if normalization != Normalization::ImageNet {
        return out;
    }
    let mut shape = vec![1i64; x.dim()];
    shape[1] = 3;
    let device = x.device();
    let mean = Tensor::from_slice(&IMAGENET_MEAN)
        .to_kind(Kind::Float)
        .to_device(device)
        .reshape(shape.as_slice());
    let std = Tensor::from_slice(&IMAGENET_STD)
        .to_kind(Kind::Float)
        .to_device(device)
        .reshape(shape.as_slice());
    (out - mean) / std
}

/// Loads a TorchScript module in eval mode.
pub(crate) fn load_module(
    plugin: &str,
    path: &Path,
    device: Device,
) -> Result<CModule, PluginError> {
    if !path.is_file() {
        return Err(PluginError::weights(format!(
            "{plugin}: TorchScript file {} does not exist",
            path.display()
        )));
    }
    let mut module = CModule::load_on_device(path, device).map_err(|e| {
        PluginError::weights(format!(
            "{plugin}: {} is not a loadable TorchScript file (save it with torch.jit.save): {}",
            path.display(),
            first_line(&e.to_string())
        ))
    })?;
    module.set_eval();
    Ok(module)
}

fn first_tensor(v: IValue) -> Option<Tensor> {
    match v {
        IValue::Tensor(t) => Some(t),
        IValue::Tuple(items) | IValue::GenericList(items) => {
            items.into_iter().next().and_then(first_tensor)
        }
        IValue::TensorList(ts) => ts.into_iter().next(),
        _ => None,
    }
}

/// A libtorch error shortened for a one-paragraph message: blank lines and
/// C++ backtraces dropped, at most 600 characters.
fn first_line(s: &str) -> String {
    let text: Vec<&str> = s
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("frame #") && !l.starts_with("Exception raised from")
        })
        .collect();
    let text = text.join(" ");
    if text.chars().count() > 600 {
        format!("{}...", text.chars().take(600).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.reshape([-1])).unwrap()
    }

    #[test]
    fn normalisations_are_per_image() {
        // Two 1x1x2x2 images.
        let x = Tensor::from_slice(&[0f32, 1.0, 2.0, 3.0, 10.0, 10.0, 20.0, 30.0])
            .reshape([2, 1, 2, 2]);
        assert_eq!(
            values(&prepare_input(&x, Normalization::None, 1)),
            values(&x)
        );
        let mm = values(&prepare_input(&x, Normalization::MinMax, 1));
        assert_eq!(mm, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0, 0.0, 0.0, 0.5, 1.0]);
        let z = prepare_input(&x, Normalization::ZScore, 2);
        assert_eq!(z.size(), vec![2, 2, 2, 2]);
        let z0 = values(&z.get(0).get(1));
        let mean: f32 = z0.iter().sum::<f32>() / 4.0;
        let var: f32 = z0.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{z0:?}");
        let im = prepare_input(&x, Normalization::ImageNet, 3);
        let blue_max = values(&im.get(0).get(2))[3];
        assert!((blue_max - (1.0 - 0.406) / 0.225).abs() < 1e-5);
    }
}
