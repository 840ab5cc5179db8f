//! The zero-shot slice labeler shared by every CLIP-style model (OpenAI
//! CLIP here, BiomedCLIP in `clisc-biomedclip`).
//!
//! A model plugs in through [`ZeroShotModel`]: an image encoder, a text
//! encoder with its own tokenizer, and scaled-cosine logits. Everything
//! else is the same for all of them and lives here once: the settings
//! ([`LabelerOptions::schema`], [`LabelerOptions::from_settings`]), the prompt
//! ensembles, the slice -> 8-bit image -> CLIP transform path
//! ([`crate::preprocess`]) and the thresholding and smoothing of the
//! labels (see the crate docs for the method).

use abi_stable::std_types::{RResult, RVec};
use clisc_sdk::config::Settings;
use clisc_sdk::stage::{CaseInput, PseudoLabeler};
use clisc_sdk::{plugin_settings, PluginError, SliceLabel, SlicePseudoLabels};
use clisc_weight_free::smoothing::Smoothing;
use tch::{Kind, Tensor};

use crate::{model, preprocess};

/// The paper's "normal" prompt.
pub const PROMPT_NORMAL: &str = "an image of brain tissue showing typical signal intensity without any regions of abnormal intensity or suspicious mass";
/// The paper's "abnormal" prompt.
pub const PROMPT_ABNORMAL: &str = "an image of brain tissue showing a tumor with uneven hyperintensity and irregular borders distinct from surroundings";

/// What the slice labeler needs from a CLIP-style model.
///
/// Images reach [`ZeroShotModel::encode_image`] already through CLIP's
/// transform ([`preprocess::preprocess_u8`]: OpenAI's mean and std, which
/// BiomedCLIP's `open_clip_config.json` also uses).
pub trait ZeroShotModel: Send {
    /// The plugin's name, which starts every message about its settings.
    const PLUGIN: &'static str;
    /// Side of the square input image in pixels.
    fn image_resolution(&self) -> usize;
    /// Image features, not normalised: [n, embed] for [n, 3, R, R] images.
    fn encode_image(&self, images: &Tensor) -> Tensor;
    /// Text features, not normalised: [texts, embed], tokenized with the
    /// model's own tokenizer.
    fn encode_texts(&self, texts: &[String]) -> Result<Tensor, PluginError>;
    /// Logits [images, texts]: the scaled cosine similarities of the
    /// features (the model's `forward`).
    fn logits(&self, image_features: &Tensor, text_features: &Tensor) -> Tensor;
}

clisc_sdk::setting_choice! {
    /// How the prompts of one class are combined.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Ensemble {
        /// Average the normalised text embeddings per class.
        Embedding = "embedding",
        /// Sum the per-prompt probabilities per class.
        Probability = "probability",
    }
}

plugin_settings! {
    /// The labelling settings every zero-shot plugin declares after its
    /// model files: prompts, ensemble rule, threshold, batch size and
    /// smoothing.
    #[derive(Debug, Clone)]
    pub struct LabelerOptions {
        /// prompts describing a slice without tumor
        pub prompts_normal: Vec<String> = string_list(&[PROMPT_NORMAL]),
        /// prompts describing a slice with tumor
        pub prompts_abnormal: Vec<String> = string_list(&[PROMPT_ABNORMAL]),
        /// several prompts per class: average their text embeddings, or sum their probabilities
        pub ensemble: Ensemble = choice(Ensemble::Embedding.name(), Ensemble::NAMES),
        /// keep a slice when its label probability is at least this
        pub threshold: f32 = float(0.6),
        /// slices per image-encoder batch
        pub batch_size: usize = integer(32),
        /// Neighbour-majority smoothing of the kept labels along z, on by
        /// default as in the reference code (`None` = off).
        pub smoothing: Option<Smoothing> = group(Smoothing::schema(true), Smoothing::from_settings),
    }
}

impl Default for LabelerOptions {
    /// The paper's setup.
    fn default() -> Self {
        Self::defaults().expect("the labeler declares a default for every setting")
    }
}

impl LabelerOptions {
    /// Reads the [`LabelerOptions::schema`] settings of plugin `plugin` and checks them.
    pub fn from_settings(settings: &Settings, plugin: &str) -> Result<LabelerOptions, PluginError> {
        let options = Self::read(settings)?;
        options.validate(plugin)?;
        Ok(options)
    }

    /// Checks the values the schema cannot (messages start with `plugin`).
    pub fn validate(&self, plugin: &str) -> Result<(), PluginError> {
        if self.prompts_normal.is_empty() || self.prompts_abnormal.is_empty() {
            return Err(PluginError::config(format!(
                "{plugin}: `prompts_normal` and `prompts_abnormal` need at least one prompt each"
            )));
        }
        if !(0.5..=1.0).contains(&self.threshold) {
            return Err(PluginError::config(format!(
                "{plugin}: `threshold` must be in [0.5, 1], found {}",
                self.threshold
            )));
        }
        if self.batch_size == 0 {
            return Err(PluginError::config(format!(
                "{plugin}: `batch_size` must be at least 1"
            )));
        }
        Ok(())
    }
}

/// The zero-shot slice labeler: model, options and the per-run text
/// embeddings.
pub struct SliceLabeler<M: ZeroShotModel> {
    model: M,
    options: LabelerOptions,
    /// Normalised text embeddings [texts, embed] and the class of each row.
    text: Tensor,
    text_class: Vec<u8>,
}

impl<M: ZeroShotModel> SliceLabeler<M> {
    /// Tokenizes and encodes the prompts once.
    pub fn new(model: M, options: LabelerOptions) -> Result<SliceLabeler<M>, PluginError> {
        options.validate(M::PLUGIN)?;
        let mut prompts = Vec::new();
        let mut classes = Vec::new();
        for (class, list) in [
            (0u8, &options.prompts_normal),
            (1u8, &options.prompts_abnormal),
        ] {
            prompts.extend(list.iter().cloned());
            classes.extend(std::iter::repeat(class).take(list.len()));
        }
        let feats = tch::no_grad(|| model.encode_texts(&prompts).map(|t| model::normalize(&t)))?;
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
        Ok(SliceLabeler {
            model,
            options,
            text,
            text_class,
        })
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// P(abnormal) for a batch of preprocessed images [n, 3, R, R].
    pub fn abnormal_probability(&self, images: &Tensor) -> Vec<f32> {
        tch::no_grad(|| {
            let feats = self.model.encode_image(images);
            let logits = self.model.logits(&feats, &self.text);
            let probs = logits.softmax(-1, Kind::Float);
            let mask: Vec<f32> = self.text_class.iter().map(|&c| c as f32).collect();
            let mask = Tensor::from_slice(&mask).to_device(probs.device());
            let p = (probs * mask)
                .sum_dim_intlist(-1, false, Kind::Float)
                .to_device(tch::Device::Cpu);
            Vec::<f32>::try_from(p.contiguous()).unwrap_or_default()
        })
    }

    /// Labels the slices of a case (see the crate docs).
    pub fn label(&self, case: &CaseInput) -> Result<SlicePseudoLabels, PluginError> {
        let flair = case.image.require_channel("flair")?;
        let grid = case.image.grid;
        grid.check_len(case.brain_mask.data.len(), "brain mask")?;
        let [nx, ny, nz] = grid.dims();
        let n = grid.slice_len();
        let res = self.model.image_resolution();
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
            tracing::debug!(case = %case.id, changed, "{}: smoothing relabelled slices", M::PLUGIN);
        }
        Ok(labels)
    }
}

impl<M: ZeroShotModel> PseudoLabeler for SliceLabeler<M> {
    fn label_slices(&mut self, case: &CaseInput) -> RResult<SlicePseudoLabels, PluginError> {
        self.label(case).into()
    }
}
