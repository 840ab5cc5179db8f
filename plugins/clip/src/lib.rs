//! # `clip`: zero-shot slice pseudo-labels from OpenAI CLIP (CLISC step 1)
//!
//! Every axial slice with brain in it becomes an 8-bit grey image
//! (per-slice min-max, see [`preprocess`]), goes through CLIP's exact
//! preprocessing and image encoder (batched, once per slice), and is
//! compared with the class prompts' text embeddings (computed once per
//! run). The softmax over the two classes (normal = 0, abnormal = 1)
//! gives the label and its probability; a slice is kept when that
//! probability reaches `threshold`; kept labels are then smoothed along z
//! ([`clisc_weight_free::smoothing`]). Slices with an empty brain mask are labelled 0
//! with probability 1 and not kept (and not sent through CLIP).
//!
//! Several prompts per class (an ensemble) are combined in one of two ways
//! (`ensemble` setting):
//! * `embedding` (default, CLIP's own recipe): the L2-normalised text
//!   embeddings of a class are averaged and re-normalised, giving one
//!   embedding per class; softmax over the two class logits.
//! * `probability`: softmax over the logits of all prompts together; a
//!   class's probability is the sum over its prompts.
//!
//! With one prompt per class (the paper's defaults) both are identical to
//! the reference code.
//!
//! The labelling itself is model-independent ([`labeler`]): CLIP plugs in
//! through [`ZeroShotModel`], and so does BiomedCLIP (`clisc-biomedclip`).
#![warn(unreachable_pub)]

pub mod labeler;
pub mod model;
pub mod preprocess;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tokenizer;

#[rustfmt::skip]
mod html_tables;

use clisc_sdk::config::Settings;
use clisc_sdk::{
    plugin_settings, ConfigField, HostContext, Plugin, PluginError, StageKind, StageObject,
};
use std::path::PathBuf;
use tch::{Kind, Tensor};

pub use labeler::{
    Ensemble, LabelerOptions, SliceLabeler, ZeroShotModel, PROMPT_ABNORMAL, PROMPT_NORMAL,
};
pub use model::{Clip, ClipConfig};
pub use tokenizer::{ClipTokenizer, CONTEXT_LENGTH};

/// The CLIP slice labeler.
pub(crate) type ClipLabeler = SliceLabeler<Clip>;

/// Plugin registration of `ClipLabeler`.
pub struct ClipPlugin;

impl Plugin for ClipPlugin {
    const NAME: &'static str = "clip";
    const KIND: StageKind = StageKind::PseudoLabeler;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Zero-shot slice labels from OpenAI CLIP (ViT-B/32 in the paper) with normal/abnormal prompts";

    fn settings() -> Vec<ConfigField> {
        ClipSettings::schema()
    }

    fn create(settings: Settings, ctx: &HostContext) -> Result<StageObject, PluginError> {
        let ClipSettings { weights, labeler } = ClipSettings::read(&settings)?;
        let device = clisc_nn::resolve_device(&ctx.device)?;
        ctx.progress.log(
            format!("clip: loading {} on {:?}", weights.display(), device)
                .as_str()
                .into(),
        );
        let model = Clip::load(&weights, device)?;
        Ok(StageObject::pseudo_labeler(ClipLabeler::new(
            model, labeler,
        )?))
    }
}

plugin_settings! {
    /// The settings of `clip`: the weights, then the labeler's.
    struct ClipSettings {
        /// CLIP checkpoint: OpenAI TorchScript archive (ViT-B-32.pt, ...), torch.save state dict
        /// or safetensors
        weights: PathBuf = weights_file(
            "OpenAI CLIP release (ViT-B/32, CLISC's choice): https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt"
        ),
        /// Prompts, ensemble rule, threshold, batch size and smoothing.
        labeler: LabelerOptions = group(
            LabelerOptions::schema(),
            |s: &Settings| LabelerOptions::from_settings(s, ClipPlugin::NAME)
        ),
    }
}

impl ZeroShotModel for Clip {
    const PLUGIN: &'static str = ClipPlugin::NAME;

    fn image_resolution(&self) -> usize {
        self.config.image_resolution as usize
    }

    fn encode_image(&self, images: &Tensor) -> Tensor {
        Clip::encode_image(self, images)
    }

    /// Tokenized with CLIP's BPE; a prompt longer than the context (77
    /// tokens) is an error naming it.
    fn encode_texts(&self, texts: &[String]) -> Result<Tensor, PluginError> {
        let tok = ClipTokenizer::shared()?;
        let ctx = self.config.context_length as usize;
        let mut ids = Vec::with_capacity(texts.len() * ctx);
        for t in texts {
            ids.extend(tok.tokenize(t, ctx, false)?);
        }
        let tokens = Tensor::from_slice(&ids).view([texts.len() as i64, ctx as i64]);
        Ok(self.encode_text(&tokens))
    }

    fn logits(&self, image_features: &Tensor, text_features: &Tensor) -> Tensor {
        Clip::logits(self, image_features, text_features)
    }
}

/// Zero-shot probabilities of `texts` for one 8-bit image (1 channel grey
/// or 3 channels RGB, interleaved, row-major): CLIP preprocessing, softmax
/// over the texts' logits. This is what `clisc clip` prints. `device` is
/// the pipeline's device string (`cpu`, `cuda:N`, `auto`).
pub fn zero_shot(
    weights: &std::path::Path,
    device: &str,
    image: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    texts: &[String],
) -> Result<Vec<f32>, PluginError> {
    if texts.is_empty() {
        return Err(PluginError::input("clip: give at least one text"));
    }
    if width == 0
        || height == 0
        || image.len() != width * height * channels
        || !(channels == 1 || channels == 3)
    {
        return Err(PluginError::input(format!(
            "clip: image of {width}x{height}x{channels} with {} values (1 or 3 channels expected)",
            image.len()
        )));
    }
    let model = Clip::load(weights, clisc_nn::resolve_device(device)?)?;
    let res = model.config.image_resolution as usize;
    let pixels = preprocess::preprocess_u8(image, width, height, channels, res);
    let image_features = model.encode_image(&preprocess::batch_tensor(&[pixels], res));
    let logits = model.logits(&image_features, &model.encode_texts(texts)?);
    let probs = logits
        .softmax(-1, Kind::Float)
        .to_device(tch::Device::Cpu)
        .view([-1]);
    Vec::<f32>::try_from(probs.contiguous()).map_err(|e| PluginError::internal(e.to_string()))
}

clisc_sdk::register_builtin!(ClipPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use clisc_weight_free::smoothing::Smoothing;
    use tch::Device;

    fn tiny_model() -> Clip {
        let cfg = ClipConfig {
            embed_dim: 16,
            image_resolution: 32,
            vision_width: 64,
            vision_layers: 1,
            vision_patch_size: 16,
            context_length: 77,
            vocab_size: 49408,
            text_width: 64,
            text_layers: 1,
        };
        let model = Clip::new(cfg, Device::Cpu);
        testing::fill_deterministic(model.var_store());
        model
    }

    #[test]
    fn full_plugin_path_shapes_kept_flags_and_empty_slices() {
        let options = LabelerOptions {
            batch_size: 3,
            smoothing: None,
            threshold: 0.5,
            ..Default::default()
        };
        let labeler = ClipLabeler::new(tiny_model(), options).unwrap();
        let labels = labeler.label(&testing::synthetic_case(7, &[0, 6])).unwrap();
        assert_eq!(labels.slices.len(), 7);
        for s in labels.slices.iter() {
            assert!(s.probability >= 0.5 && s.probability <= 1.0);
            if s.index == 0 || s.index == 6 {
                assert_eq!((s.label, s.kept, s.probability), (0, false, 1.0));
            } else {
                assert!(s.kept, "threshold 0.5 keeps every brain slice");
            }
        }
        // Batching does not change the result.
        let single = ClipLabeler::new(
            tiny_model(),
            LabelerOptions {
                batch_size: 1,
                smoothing: None,
                threshold: 0.5,
                ..Default::default()
            },
        )
        .unwrap()
        .label(&testing::synthetic_case(7, &[0, 6]))
        .unwrap();
        for (a, b) in labels.slices.iter().zip(single.slices.iter()) {
            assert_eq!(a.label, b.label);
            assert!((a.probability - b.probability).abs() < 1e-5);
        }
    }

    #[test]
    fn plugin_applies_the_reference_smoothing() {
        let case = testing::synthetic_case(24, &[]);
        let raw = ClipLabeler::new(
            tiny_model(),
            LabelerOptions {
                smoothing: None,
                threshold: 0.5,
                ..Default::default()
            },
        )
        .unwrap()
        .label(&case)
        .unwrap();
        let smoothed = ClipLabeler::new(
            tiny_model(),
            LabelerOptions {
                threshold: 0.5,
                ..Default::default()
            },
        )
        .unwrap()
        .label(&case)
        .unwrap();
        let mut expected = raw.clone();
        Smoothing::default().apply(&mut expected);
        assert_eq!(smoothed, expected);
        // Every slice is kept at threshold 0.5, so interior slices have 10 votes and
        // end up with the majority of their neighbours' original labels.
        let z = 12usize;
        let ones = (7..=17)
            .filter(|&k| k != z)
            .filter(|&k| raw.slices[k].label == 1)
            .count();
        assert_eq!(smoothed.slices[z].label, u8::from(ones > 10 - ones));
    }

    #[test]
    fn ensembles_reduce_to_single_prompts_and_threshold_controls_kept() {
        let model = tiny_model();
        let img = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let a = ClipLabeler::new(model, LabelerOptions::default())
            .unwrap()
            .abnormal_probability(&img);
        let b = ClipLabeler::new(
            tiny_model(),
            LabelerOptions {
                ensemble: Ensemble::Probability,
                ..Default::default()
            },
        )
        .unwrap()
        .abnormal_probability(&img);
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((x - y).abs() < 1e-5);
        }
        let strict = ClipLabeler::new(
            tiny_model(),
            LabelerOptions {
                threshold: 1.0,
                smoothing: None,
                ..Default::default()
            },
        )
        .unwrap();
        let labels = strict.label(&testing::synthetic_case(4, &[])).unwrap();
        assert!(labels
            .slices
            .iter()
            .all(|s| !s.kept || s.probability >= 1.0));
    }

    #[test]
    fn bad_settings_are_rejected() {
        let o = LabelerOptions {
            prompts_abnormal: vec![],
            ..Default::default()
        };
        assert!(o
            .validate("clip")
            .unwrap_err()
            .message
            .contains("prompts_abnormal"));
        let o = LabelerOptions {
            threshold: 0.2,
            ..Default::default()
        };
        assert!(o
            .validate("clip")
            .unwrap_err()
            .message
            .contains("threshold"));
    }
}
