//! # `biomedclip`: zero-shot slice pseudo-labels from BiomedCLIP
//!
//! [BiomedCLIP](https://huggingface.co/microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224)
//! is a CLIP model trained on figure-caption pairs from PubMed
//! Central: a ViT-B/16 image tower at 224 px and a PubMedBERT text tower
//! with a 256-token context, published in open_clip's format. This crate
//! ports it to `tch` ([`model`], [`vision`], [`text`], [`tokenizer`]) so
//! the files a user downloads load as they are:
//!
//! * `open_clip_pytorch_model.bin`: the `torch.save` state dict (setting
//!   `weights`);
//! * `vocab.txt`: PubMedBERT's WordPiece vocabulary (setting `vocab`;
//!   by default the `vocab.txt` next to the weights, where downloading the
//!   model's files puts it).
//!
//! The labelling is the `clip` plugin's, shared through
//! [`clisc_clip::labeler`]: every slice with brain becomes an 8-bit grey
//! image (per-slice min-max), goes through the CLIP transform (bicubic
//! resize of the short side to 224, centre crop, OpenAI's mean and std,
//! which BiomedCLIP's `open_clip_config.json` uses too) and the image
//! tower, and is compared with the prompts' text embeddings; the softmax
//! over normal / abnormal gives the label and its probability, `threshold`
//! keeps the confident slices and the labels are smoothed along z. The
//! settings after `weights` and `vocab` are the `clip` plugin's.
//!
//! ```no_run
//! use clisc_biomedclip::{BiomedClip, BiomedClipZeroShot, WordPieceTokenizer};
//! use clisc_clip::{LabelerOptions, SliceLabeler};
//! use std::path::Path;
//!
//! let dir = Path::new("weights/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224");
//! let model = BiomedClipZeroShot {
//!     model: BiomedClip::load(&dir.join("open_clip_pytorch_model.bin"), tch::Device::Cpu)?,
//!     tokenizer: WordPieceTokenizer::from_file(&dir.join("vocab.txt"))?,
//! };
//! let labeler = SliceLabeler::new(model, LabelerOptions::default())?;
//! # Ok::<(), clisc_sdk::PluginError>(())
//! ```
#![warn(unreachable_pub)]

pub mod model;
pub mod text;
pub mod tokenizer;
pub mod vision;

use std::path::{Path, PathBuf};

use clisc_clip::{LabelerOptions, SliceLabeler, ZeroShotModel};
use clisc_sdk::config::Settings;
use clisc_sdk::{
    plugin_settings, ConfigField, HostContext, Plugin, PluginError, StageKind, StageObject,
};
use tch::Tensor;

pub use model::{BiomedClip, BiomedClipConfig};
pub use tokenizer::{WordPieceTokenizer, CONTEXT_LENGTH};

/// Where the model's files are published (the weights, `vocab.txt` and
/// the open_clip configuration, under "Files and versions").
pub(crate) const DOWNLOAD_PAGE: &str =
    "https://huggingface.co/microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224";

/// The vocabulary's file name, looked for next to the weights.
pub(crate) const VOCAB_FILE: &str = "vocab.txt";

/// BiomedCLIP with its vocabulary: what the slice labeler drives.
#[derive(Debug)]
pub struct BiomedClipZeroShot {
    /// The two towers.
    pub model: BiomedClip,
    /// PubMedBERT's WordPiece tokenizer.
    pub tokenizer: WordPieceTokenizer,
}

impl BiomedClipZeroShot {
    /// The token id rows of `texts` ([texts, 256], int64). An id beyond the
    /// model's word embedding (a vocabulary that does not belong to the
    /// weights) is an error.
    pub fn tokenize(&self, texts: &[String]) -> Result<Tensor, PluginError> {
        let rows = self.tokenizer.vocab_size();
        let embeddings = self.model.config.text.vocab_size as usize;
        if rows > embeddings {
            return Err(PluginError::weights(format!(
                "biomedclip: the vocabulary has {rows} tokens but the weights' word embedding \
                 `text.transformer.embeddings.word_embeddings.weight` has {embeddings} rows: `vocab` \
                 is not the vocabulary of these weights"
            )));
        }
        let mut ids = Vec::with_capacity(texts.len() * CONTEXT_LENGTH);
        for t in texts {
            ids.extend(self.tokenizer.tokenize(t, CONTEXT_LENGTH));
        }
        Ok(Tensor::from_slice(&ids).view([texts.len() as i64, CONTEXT_LENGTH as i64]))
    }
}

impl ZeroShotModel for BiomedClipZeroShot {
    const PLUGIN: &'static str = BiomedClipPlugin::NAME;

    fn image_resolution(&self) -> usize {
        self.model.config.vision.image_size as usize
    }

    fn encode_image(&self, images: &Tensor) -> Tensor {
        self.model.encode_image(images)
    }

    /// Longer prompts are cut to the 256-token context, as open_clip does.
    fn encode_texts(&self, texts: &[String]) -> Result<Tensor, PluginError> {
        Ok(self.model.encode_text(&self.tokenize(texts)?))
    }

    fn logits(&self, image_features: &Tensor, text_features: &Tensor) -> Tensor {
        self.model.logits(image_features, text_features)
    }
}

/// The BiomedCLIP slice labeler.
pub type BiomedClipLabeler = SliceLabeler<BiomedClipZeroShot>;

/// The vocabulary a plugin reads: `vocab` when set, else `vocab.txt` next
/// to `weights`.
fn vocab_path(weights: &Path, vocab: Option<PathBuf>) -> PathBuf {
    vocab.unwrap_or_else(|| weights.with_file_name(VOCAB_FILE))
}

/// Plugin registration of [`BiomedClipLabeler`].
pub(crate) struct BiomedClipPlugin;

impl Plugin for BiomedClipPlugin {
    const NAME: &'static str = "biomedclip";
    const KIND: StageKind = StageKind::PseudoLabeler;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Zero-shot slice labels from BiomedCLIP (ViT-B/16 + PubMedBERT, open_clip files) with normal/abnormal prompts";

    fn settings() -> Vec<ConfigField> {
        BiomedClipSettings::schema()
    }

    fn create(settings: Settings, ctx: &HostContext) -> Result<StageObject, PluginError> {
        let BiomedClipSettings {
            weights,
            vocab: given,
            labeler: options,
        } = BiomedClipSettings::read(&settings)?;
        let defaulted = given.is_none();
        let vocab = vocab_path(&weights, given);
        if !vocab.is_file() {
            let why = if defaulted {
                "`vocab` is not set, so it is looked for next to `weights`"
            } else {
                "the `vocab` setting"
            };
            return Err(PluginError::config(format!(
                "biomedclip: vocabulary {} does not exist ({why}); download vocab.txt with the weights from {DOWNLOAD_PAGE}",
                vocab.display()
            )));
        }
        let device = clisc_nn::resolve_device(&ctx.device)?;
        ctx.progress.log(
            format!("biomedclip: loading {} on {:?}", weights.display(), device)
                .as_str()
                .into(),
        );
        let model = BiomedClipZeroShot {
            tokenizer: WordPieceTokenizer::from_file(&vocab)?,
            model: BiomedClip::load(&weights, device)?,
        };
        Ok(StageObject::pseudo_labeler(BiomedClipLabeler::new(
            model, options,
        )?))
    }
}

plugin_settings! {
    /// The settings of `biomedclip`: the model files, then the labeler's.
    struct BiomedClipSettings {
        /// BiomedCLIP weights: open_clip_pytorch_model.bin as published (torch.save state dict;
        /// safetensors also read)
        weights: PathBuf = weights_file(&format!(
            "Microsoft's BiomedCLIP page (file open_clip_pytorch_model.bin): {DOWNLOAD_PAGE}"
        )),
        /// PubMedBERT's WordPiece vocabulary (vocab.txt); default: vocab.txt next to `weights`
        vocab: Option<PathBuf> = optional_weights_file(&format!(
            "Microsoft's BiomedCLIP page (file vocab.txt): {DOWNLOAD_PAGE}"
        )),
        /// Prompts, ensemble rule, threshold, batch size and smoothing.
        labeler: LabelerOptions = group(
            LabelerOptions::schema(),
            |s: &Settings| LabelerOptions::from_settings(s, BiomedClipPlugin::NAME)
        ),
    }
}

clisc_sdk::register_builtin!(BiomedClipPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::TextConfig;
    use crate::vision::VisionConfig;
    use clisc_clip::testing::synthetic_case;
    use clisc_clip::{Ensemble, PROMPT_ABNORMAL, PROMPT_NORMAL};
    use clisc_nn::{WeightFile, WeightFormat};
    use clisc_sdk::stage::PseudoLabeler;
    use tch::{Device, Kind};

    /// Every word of the paper's prompts, so they tokenize to real pieces.
    fn vocab_text() -> String {
        let mut tokens: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", "."]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for w in format!("{PROMPT_NORMAL} {PROMPT_ABNORMAL}").split(' ') {
            if !tokens.iter().any(|t| t == w) {
                tokens.push(w.to_string());
            }
        }
        tokens.join("\n")
    }

    fn tiny_config(vocab_size: i64) -> BiomedClipConfig {
        BiomedClipConfig {
            embed_dim: 16,
            vision: VisionConfig {
                image_size: 32,
                patch_size: 16,
                width: 64,
                layers: 1,
                heads: 1,
                mlp_dim: 128,
            },
            text: TextConfig {
                vocab_size,
                hidden: 64,
                layers: 1,
                heads: 1,
                intermediate: 128,
                max_positions: CONTEXT_LENGTH as i64,
                type_vocab_size: 2,
                proj_hidden: 40,
            },
        }
    }

    /// A tiny BiomedCLIP with deterministic values.
    fn tiny_model() -> BiomedClipZeroShot {
        let tokenizer = WordPieceTokenizer::from_vocab(&vocab_text(), "test vocab").unwrap();
        let model = BiomedClip::new(tiny_config(tokenizer.vocab_size() as i64), Device::Cpu);
        clisc_clip::testing::fill_deterministic(model.var_store());
        BiomedClipZeroShot { model, tokenizer }
    }

    #[test]
    fn labels_a_synthetic_volume_end_to_end() {
        let options = LabelerOptions {
            batch_size: 3,
            smoothing: None,
            threshold: 0.5,
            ..Default::default()
        };
        let mut labeler = BiomedClipLabeler::new(tiny_model(), options).unwrap();
        let labels = labeler.label_slices(&synthetic_case(7, &[0, 6])).unwrap();
        assert_eq!(labels.slices.len(), 7);
        for (z, s) in labels.slices.iter().enumerate() {
            assert_eq!(s.index as usize, z);
            assert!((0.5..=1.0).contains(&s.probability), "{s:?}");
            if z == 0 || z == 6 {
                assert_eq!((s.label, s.kept, s.probability), (0, false, 1.0));
            } else {
                assert!(s.kept, "threshold 0.5 keeps every brain slice");
            }
        }
        // The two classes' probabilities sum to one, and batching does not
        // change them.
        let model = labeler.model();
        let images = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let prompts = vec![PROMPT_NORMAL.to_string(), PROMPT_ABNORMAL.to_string()];
        let text = model.encode_texts(&prompts).unwrap();
        assert_eq!(text.size(), vec![2, 16]);
        let probs = model
            .logits(&model.encode_image(&images), &text)
            .softmax(-1, Kind::Float);
        assert_eq!(probs.size(), vec![4, 2]);
        let sums = probs.sum_dim_intlist(-1, false, Kind::Float);
        assert!(f64::try_from((sums - 1.0).abs().max()).unwrap() < 1e-6);
        let together = labeler.abnormal_probability(&images);
        for i in 0..4 {
            let alone = labeler.abnormal_probability(&images.narrow(0, i, 1));
            assert!((alone[0] - together[i as usize]).abs() < 1e-5);
            assert!((together[i as usize] - probs.double_value(&[i, 1]) as f32).abs() < 1e-5);
        }
        // One prompt per class: both ensemble rules agree.
        let summed = BiomedClipLabeler::new(
            tiny_model(),
            LabelerOptions {
                ensemble: Ensemble::Probability,
                ..Default::default()
            },
        )
        .unwrap()
        .abnormal_probability(&images);
        for (a, b) in together.iter().zip(&summed) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn padding_does_not_change_text_features() {
        let m = tiny_model();
        let ids = m.tokenize(&[PROMPT_ABNORMAL.to_string()]).unwrap();
        assert_eq!(ids.size(), vec![1, CONTEXT_LENGTH as i64]);
        let full = m.model.encode_text(&ids);
        // The same row with fewer pads, and next to a longer row.
        let short = m.model.encode_text(&ids.narrow(1, 0, 40));
        let both = m.model.encode_text(&Tensor::cat(
            &[
                ids.shallow_clone(),
                m.tokenize(&[PROMPT_NORMAL.to_string()]).unwrap(),
            ],
            0,
        ));
        for other in [short, both.narrow(0, 0, 1)] {
            assert!(f64::try_from((&full - other).abs().max()).unwrap() < 1e-5);
        }
    }

    #[test]
    fn plugin_reads_weights_and_the_vocabulary_next_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let m = tiny_model();
        let weights = dir.path().join("open_clip_pytorch_model.safetensors");
        m.model.var_store().save(&weights).unwrap();
        let settings = |extra: &str| {
            let text = format!(
                "weights = {:?}\nthreshold = 0.5\n{extra}",
                weights.display().to_string()
            );
            Settings::parse("biomedclip", &text, &BiomedClipPlugin::settings()).unwrap()
        };
        let ctx = HostContext::for_tests(dir.path().to_str().unwrap(), 0);
        let err = BiomedClipPlugin::create(settings(""), &ctx).err().unwrap();
        let expected = dir.path().join("vocab.txt");
        assert!(
            err.message.contains(&expected.display().to_string())
                && err.message.contains("next to `weights`")
                && err.message.contains(DOWNLOAD_PAGE),
            "{}",
            err.message
        );
        std::fs::write(&expected, vocab_text()).unwrap();
        let stage = BiomedClipPlugin::create(settings(""), &ctx).unwrap();
        let StageObject::PseudoLabeler(mut labeler) = stage else {
            panic!("not a pseudo-labeler");
        };
        let labels = labeler.label_slices(&synthetic_case(3, &[])).unwrap();
        assert_eq!(labels.slices.len(), 3);
        // An explicit `vocab` that is not there is named as the setting.
        let err = BiomedClipPlugin::create(settings("vocab = \"/no/vocab.txt\""), &ctx)
            .err()
            .unwrap();
        assert!(
            err.message.contains("/no/vocab.txt") && err.message.contains("the `vocab` setting")
        );
    }

    #[test]
    fn checkpoints_of_other_models_and_mismatches_are_named() {
        let m = tiny_model();
        let named = |skip: &str| -> Vec<(String, Tensor)> {
            m.model
                .var_store()
                .variables()
                .into_iter()
                .filter(|(n, _)| n != skip)
                .collect()
        };
        let file = |named| {
            WeightFile::from_tensors(Path::new("cut.bin"), WeightFormat::TorchPickle, named)
        };
        // Round trip of the architecture.
        let full = file(named(""));
        assert_eq!(
            BiomedClipConfig::from_weights(&full).unwrap(),
            m.model.config
        );
        let err =
            BiomedClip::from_weights(&file(named("text.proj.2.weight")), Device::Cpu).unwrap_err();
        assert!(
            err.message.contains("`text.proj.2.weight`") && err.message.contains("cut.bin"),
            "{}",
            err.message
        );
        let err = BiomedClip::from_weights(
            &file(named(
                "text.transformer.encoder.layer.0.output.LayerNorm.bias",
            )),
            Device::Cpu,
        )
        .unwrap_err();
        assert!(
            err.message.contains(
                "`text.transformer.encoder.layer.0.output.LayerNorm.bias` (expected shape [64])"
            ),
            "{}",
            err.message
        );
        let clip = WeightFile::from_tensors(
            Path::new("ViT-B-32.pt"),
            WeightFormat::TorchScript,
            vec![(
                "visual.conv1.weight".into(),
                Tensor::zeros([8, 3, 4, 4], (Kind::Float, Device::Cpu)),
            )],
        );
        let err = BiomedClip::from_weights(&clip, Device::Cpu).unwrap_err();
        assert!(
            err.message.contains("`clip` plugin") && err.message.contains("ViT-B-32.pt"),
            "{}",
            err.message
        );
        // A vocabulary larger than the word embedding.
        let mut big = tiny_model();
        big.tokenizer =
            WordPieceTokenizer::from_vocab(&format!("{}\nextra", vocab_text()), "v").unwrap();
        let err = big.tokenize(&["brain".into()]).unwrap_err();
        assert!(err.message.contains("word_embeddings"), "{}", err.message);
        // Old `transformers` buffers are accepted.
        let mut with_buffer = named("");
        with_buffer.push((
            "text.transformer.embeddings.position_ids".into(),
            Tensor::arange(CONTEXT_LENGTH as i64, (Kind::Int64, Device::Cpu)).unsqueeze(0),
        ));
        BiomedClip::from_weights(&file(with_buffer), Device::Cpu).unwrap();
    }
}
