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

pub mod model;
pub mod preprocess;
pub mod tokenizer;

#[rustfmt::skip]
mod html_tables;

use abi_stable::std_types::{RResult, RVec};
use clisc_sdk::config::Settings;
use clisc_sdk::stage::{CaseInput, PseudoLabeler};
use clisc_sdk::{
    ConfigField, HostContext, Plugin, PluginError, SliceLabel, SlicePseudoLabels, StageKind,
    StageObject,
};
use tch::{Kind, Tensor};

use clisc_weight_free::smoothing::Smoothing;
pub use model::{Clip, ClipConfig};
pub use tokenizer::{ClipTokenizer, CONTEXT_LENGTH};

/// The paper's "normal" prompt.
pub const PROMPT_NORMAL: &str = "an image of brain tissue showing typical signal intensity without any regions of abnormal intensity or suspicious mass";
/// The paper's "abnormal" prompt.
pub const PROMPT_ABNORMAL: &str = "an image of brain tissue showing a tumor with uneven hyperintensity and irregular borders distinct from surroundings";

/// How the prompts of one class are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensemble {
    /// Average the normalised text embeddings per class.
    Embedding,
    /// Sum the per-prompt probabilities per class.
    Probability,
}

/// Plugin registration of [`ClipLabeler`].
pub struct ClipPlugin;

impl Plugin for ClipPlugin {
    const NAME: &'static str = "clip";
    const KIND: StageKind = StageKind::PseudoLabeler;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Zero-shot slice labels from OpenAI CLIP (ViT-B/32 in the paper) with normal/abnormal prompts";

    fn settings() -> Vec<ConfigField> {
        vec![
            ConfigField::weights_file(
                "weights",
                "CLIP checkpoint: OpenAI TorchScript archive (ViT-B-32.pt, ...), torch.save state dict or safetensors",
                "OpenAI CLIP release (ViT-B/32, CLISC's choice): https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
            ),
            ConfigField::string_list("prompts_normal", &[PROMPT_NORMAL], "prompts describing a slice without tumor"),
            ConfigField::string_list("prompts_abnormal", &[PROMPT_ABNORMAL], "prompts describing a slice with tumor"),
            ConfigField::choice(
                "ensemble",
                "embedding",
                &["embedding", "probability"],
                "several prompts per class: average their text embeddings, or sum their probabilities",
            ),
            ConfigField::float("threshold", 0.6, "keep a slice when its label probability is at least this"),
            ConfigField::integer("batch_size", 32, "slices per image-encoder batch"),
        ]
        .into_iter()
        .chain(Smoothing::schema(true))
        .collect()
    }

    fn create(settings: Settings, ctx: &HostContext) -> Result<StageObject, PluginError> {
        let weights = settings
            .path("weights")?
            .ok_or_else(|| PluginError::config("clip: `weights` is required"))?;
        let device = clisc_nn::resolve_device(&ctx.device)?;
        let options = ClipOptions {
            prompts_normal: settings.str_list("prompts_normal")?,
            prompts_abnormal: settings.str_list("prompts_abnormal")?,
            ensemble: match settings.str("ensemble")? {
                "probability" => Ensemble::Probability,
                _ => Ensemble::Embedding,
            },
            threshold: settings.f64("threshold")? as f32,
            batch_size: settings.usize("batch_size")?,
            smoothing: Smoothing::from_settings(&settings)?,
        };
        options.validate()?;
        ctx.progress.log(
            format!("clip: loading {} on {:?}", weights.display(), device)
                .as_str()
                .into(),
        );
        let model = Clip::load(&weights, device)?;
        Ok(StageObject::pseudo_labeler(ClipLabeler::new(
            model, options,
        )?))
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
    let tok = ClipTokenizer::shared()?;
    let ctx = model.config.context_length as usize;
    let mut ids = Vec::with_capacity(texts.len() * ctx);
    for t in texts {
        ids.extend(tok.tokenize(t, ctx, false)?);
    }
    let tokens = Tensor::from_slice(&ids).view([texts.len() as i64, ctx as i64]);
    let image_features = model.encode_image(&preprocess::batch_tensor(&[pixels], res));
    let logits = model.logits(&image_features, &model.encode_text(&tokens));
    let probs = logits
        .softmax(-1, Kind::Float)
        .to_device(tch::Device::Cpu)
        .view([-1]);
    Vec::<f32>::try_from(probs.contiguous()).map_err(|e| PluginError::internal(e.to_string()))
}

/// Settings of the labeler (see the plugin schema).
#[derive(Debug, Clone)]
pub struct ClipOptions {
    /// Prompts of class 0.
    pub prompts_normal: Vec<String>,
    /// Prompts of class 1.
    pub prompts_abnormal: Vec<String>,
    /// Ensemble rule.
    pub ensemble: Ensemble,
    /// Confidence needed to keep a slice.
    pub threshold: f32,
    /// Slices per forward pass.
    pub batch_size: usize,
    /// Smoothing parameters, `None` = off.
    pub smoothing: Option<Smoothing>,
}

impl Default for ClipOptions {
    /// The paper's setup.
    fn default() -> Self {
        ClipOptions {
            prompts_normal: vec![PROMPT_NORMAL.into()],
            prompts_abnormal: vec![PROMPT_ABNORMAL.into()],
            ensemble: Ensemble::Embedding,
            threshold: 0.6,
            batch_size: 32,
            smoothing: Some(Smoothing::default()),
        }
    }
}

impl ClipOptions {
    fn validate(&self) -> Result<(), PluginError> {
        if self.prompts_normal.is_empty() || self.prompts_abnormal.is_empty() {
            return Err(PluginError::config(
                "clip: `prompts_normal` and `prompts_abnormal` need at least one prompt each",
            ));
        }
        if !(0.5..=1.0).contains(&self.threshold) {
            return Err(PluginError::config(format!(
                "clip: `threshold` must be in [0.5, 1], found {}",
                self.threshold
            )));
        }
        if self.batch_size == 0 {
            return Err(PluginError::config("clip: `batch_size` must be at least 1"));
        }
        Ok(())
    }
}

/// The CLIP slice labeler: model, options and the per-run text embeddings.
pub struct ClipLabeler {
    model: Clip,
    options: ClipOptions,
    /// Normalised text embeddings [texts, embed] and the class of each row.
    text: Tensor,
    text_class: Vec<u8>,
}

impl ClipLabeler {
    /// Tokenizes and encodes the prompts once.
    pub fn new(model: Clip, options: ClipOptions) -> Result<ClipLabeler, PluginError> {
        options.validate()?;
        let tok = ClipTokenizer::shared()?;
        let ctx = model.config.context_length as usize;
        let mut ids = Vec::new();
        let mut classes = Vec::new();
        for (class, prompts) in [
            (0u8, &options.prompts_normal),
            (1u8, &options.prompts_abnormal),
        ] {
            for p in prompts {
                ids.extend(tok.tokenize(p, ctx, false)?);
                classes.push(class);
            }
        }
        let tokens = Tensor::from_slice(&ids).view([classes.len() as i64, ctx as i64]);
        let feats = model::normalize(&model.encode_text(&tokens));
        let (text, text_class) = match options.ensemble {
            Ensemble::Probability => (feats, classes),
            Ensemble::Embedding => {
                let rows: Vec<Tensor> = [0u8, 1]
                    .iter()
                    .map(|&c| {
                        let idx: Vec<i64> = classes
                            .iter()
                            .enumerate()
                            .filter(|(_, &k)| k == c)
                            .map(|(i, _)| i as i64)
                            .collect();
                        let idx = Tensor::from_slice(&idx).to_device(feats.device());
                        feats.index_select(0, &idx).mean_dim(0, true, Kind::Float)
                    })
                    .collect();
                (model::normalize(&Tensor::cat(&rows, 0)), vec![0, 1])
            }
        };
        Ok(ClipLabeler {
            model,
            options,
            text,
            text_class,
        })
    }

    /// P(abnormal) for a batch of preprocessed images [n, 3, R, R].
    pub fn abnormal_probability(&self, images: &Tensor) -> Vec<f32> {
        let feats = self.model.encode_image(images);
        let logits = self.model.logits(&feats, &self.text);
        let probs = logits.softmax(-1, Kind::Float);
        let mask: Vec<f32> = self.text_class.iter().map(|&c| c as f32).collect();
        let mask = Tensor::from_slice(&mask).to_device(probs.device());
        let p = (probs * mask)
            .sum_dim_intlist(-1, false, Kind::Float)
            .to_device(tch::Device::Cpu);
        Vec::<f32>::try_from(p.contiguous()).unwrap_or_default()
    }

    /// Labels the slices of a case (see the module docs).
    pub fn label(&self, case: &CaseInput) -> Result<SlicePseudoLabels, PluginError> {
        let flair = case.image.require_channel("flair")?;
        let grid = case.image.grid;
        grid.check_len(case.brain_mask.data.len(), "brain mask")?;
        let [nx, ny, nz] = grid.dims();
        let n = grid.slice_len();
        let res = self.model.config.image_resolution as usize;
        let mut slices: Vec<SliceLabel> = (0..nz)
            .map(|z| SliceLabel {
                index: z as u32,
                label: 0,
                probability: 1.0,
                kept: false,
            })
            .collect();
        let with_brain: Vec<usize> = (0..nz)
            .filter(|&z| {
                case.brain_mask.data[z * n..(z + 1) * n]
                    .iter()
                    .any(|&m| m != 0)
            })
            .collect();
        for chunk in with_brain.chunks(self.options.batch_size) {
            let images: Vec<Vec<f32>> = chunk
                .iter()
                .map(|&z| {
                    let grey = preprocess::slice_to_u8(&flair[z * n..(z + 1) * n]);
                    preprocess::preprocess_u8(&grey, nx, ny, 1, res)
                })
                .collect();
            let p = self.abnormal_probability(&preprocess::batch_tensor(&images, res));
            for (&z, &p1) in chunk.iter().zip(p.iter()) {
                let label = u8::from(p1 > 0.5);
                let probability = if label == 1 { p1 } else { 1.0 - p1 };
                slices[z] = SliceLabel {
                    index: z as u32,
                    label,
                    probability,
                    kept: probability >= self.options.threshold,
                };
            }
        }
        let mut labels = SlicePseudoLabels {
            slices: RVec::from(slices),
        };
        if let Some(s) = self.options.smoothing {
            let changed = s.apply(&mut labels);
            tracing::debug!(case = %case.id, changed, "clip: smoothing relabelled slices");
        }
        Ok(labels)
    }
}

impl PseudoLabeler for ClipLabeler {
    fn label_slices(&mut self, case: &CaseInput) -> RResult<SlicePseudoLabels, PluginError> {
        self.label(case).into()
    }
}

clisc_sdk::register_builtin!(ClipPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use clisc_sdk::{Grid, LabelVolume, Volume};
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
        // Deterministic values without libtorch's global RNG (tests run in parallel).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut vars: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut v) in vars {
            if name == "logit_scale" {
                continue;
            }
            let values: Vec<f32> = (0..v.numel())
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.6
                })
                .collect();
            tch::no_grad(|| v.copy_(&Tensor::from_slice(&values).view(v.size().as_slice())));
        }
        model
    }

    fn case(nz: usize, empty: &[usize]) -> CaseInput {
        let grid = Grid::new([20, 24, nz as u32], [1.0; 3]);
        let data: Vec<f32> = (0..grid.len())
            .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0)
            .collect();
        let mut mask = vec![1u8; grid.len()];
        for &z in empty {
            mask[z * 480..(z + 1) * 480].iter_mut().for_each(|v| *v = 0);
        }
        CaseInput {
            id: "t".into(),
            image: Volume::single(grid, "flair", data),
            brain_mask: LabelVolume {
                grid,
                data: mask.into(),
            },
        }
    }

    #[test]
    fn full_plugin_path_shapes_kept_flags_and_empty_slices() {
        let options = ClipOptions {
            batch_size: 3,
            smoothing: None,
            threshold: 0.5,
            ..Default::default()
        };
        let labeler = ClipLabeler::new(tiny_model(), options).unwrap();
        let labels = labeler.label(&case(7, &[0, 6])).unwrap();
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
            ClipOptions {
                batch_size: 1,
                smoothing: None,
                threshold: 0.5,
                ..Default::default()
            },
        )
        .unwrap()
        .label(&case(7, &[0, 6]))
        .unwrap();
        for (a, b) in labels.slices.iter().zip(single.slices.iter()) {
            assert_eq!(a.label, b.label);
            assert!((a.probability - b.probability).abs() < 1e-5);
        }
    }

    #[test]
    fn plugin_applies_the_reference_smoothing() {
        let case = case(24, &[]);
        let raw = ClipLabeler::new(
            tiny_model(),
            ClipOptions {
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
            ClipOptions {
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
        let a = ClipLabeler::new(model, ClipOptions::default())
            .unwrap()
            .abnormal_probability(&img);
        let b = ClipLabeler::new(
            tiny_model(),
            ClipOptions {
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
            ClipOptions {
                threshold: 1.0,
                smoothing: None,
                ..Default::default()
            },
        )
        .unwrap();
        let labels = strict.label(&case(4, &[])).unwrap();
        assert!(labels
            .slices
            .iter()
            .all(|s| !s.kept || s.probability >= 1.0));
    }

    #[test]
    fn bad_settings_are_rejected() {
        let o = ClipOptions {
            prompts_abnormal: vec![],
            ..Default::default()
        };
        assert!(o
            .validate()
            .unwrap_err()
            .message
            .contains("prompts_abnormal"));
        let o = ClipOptions {
            threshold: 0.2,
            ..Default::default()
        };
        assert!(o.validate().unwrap_err().message.contains("threshold"));
    }
}
