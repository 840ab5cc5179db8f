//! The inference engine: a trained volumetric network applied to new
//! volumes, as `clisc infer` and the DICOM node (`clisc dicom serve`) do.
//!
//! A model file is self-describing: its metadata names the plugin
//! (`clisc.plugin`), the settings it was trained with (`clisc.settings`,
//! TOML), and what the host did to the training cases before the stages
//! saw them and to its predictions after ([`model_file::Preprocessing`]).
//! [`Segmenter::load`] rebuilds that stage through the registry it is
//! given (so an external plugin is found on the same plugin path as in
//! `clisc run`), loads the weights, and [`Segmenter::segment`] repeats the
//! training preprocessing on each new volume before putting the labels
//! back on the volume's own grid (refining their border there when the
//! training pipeline did).

use crate::model_file;
use crate::model_file::Preprocessing;
use abi_stable::std_types::RResult;
use clisc_dataset::preprocess::{preprocess, PreprocessOptions};
use clisc_registry::standalone::{apply_overrides, StageRequest, StandaloneError, StandaloneStage};
use clisc_registry::{Registry, RegistryError};
use clisc_sdk::{LabelVolume, PluginError, StageKind, StageObject, Volume};
use std::path::{Path, PathBuf};

/// Why a model cannot be loaded or a volume not segmented with it.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The model file's header cannot be read.
    #[error(transparent)]
    ModelFile(#[from] model_file::ModelFileError),
    /// A metadata key the engine needs is missing.
    #[error("{}: metadata key `{key}` is missing (not a clisc model?)", path.display())]
    NotAModel {
        /// The model file.
        path: PathBuf,
        /// The missing key.
        key: &'static str,
    },
    /// The stored settings are not a TOML table.
    #[error("{}: `{}` is not a TOML table: {message}", path.display(), model_file::SETTINGS_KEY)]
    BadSettings {
        /// The model file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// No temporary folder for a wrapped model's payload.
    #[error("creating a temporary folder: {0}")]
    Scratch(std::io::Error),
    /// A `--set key=value` override is malformed.
    #[error(transparent)]
    Override(StandaloneError),
    /// The plugin the model names is missing or refuses its settings.
    #[error("{} was written by plugin `{plugin}`: {message}", path.display())]
    Plugin {
        /// The model file.
        path: PathBuf,
        /// The plugin it names.
        plugin: String,
        /// What the registry or the plugin said.
        message: String,
    },
    /// The plugin is not a volumetric segmenter.
    #[error("plugin `{0}` is not a volumetric segmenter")]
    NotVolumetric(String),
    /// The plugin could not load the weights.
    #[error("loading {}: {source}", path.display())]
    Load {
        /// The model file.
        path: PathBuf,
        /// The plugin's error.
        source: PluginError,
    },
    /// A volume could not be prepared, predicted or brought back.
    #[error("{step}: {source}")]
    Segment {
        /// `preprocessing`, `predicting` or `returning the labels to the input grid`.
        step: &'static str,
        /// The error.
        source: PluginError,
    },
}

/// The plugin name and settings stored in a model file's metadata.
pub(crate) fn model_identity(path: &Path) -> Result<(String, toml::Table), InferenceError> {
    let meta = model_file::read_metadata(path)?;
    let get = |key: &'static str| {
        meta.get(key).ok_or_else(|| InferenceError::NotAModel {
            path: path.to_path_buf(),
            key,
        })
    };
    let plugin = get(model_file::PLUGIN_KEY)?.to_string();
    let settings: toml::Table =
        toml::from_str(get(model_file::SETTINGS_KEY)?).map_err(|e: toml::de::Error| {
            InferenceError::BadSettings {
                path: path.to_path_buf(),
                message: e.message().to_string(),
            }
        })?;
    Ok((plugin, settings))
}

/// How to load a model: on which device, and with which changes to its
/// stored settings.
#[derive(Debug, Clone)]
pub struct LoadOptions<'a> {
    /// `auto`, `cpu`, `cuda` or `cuda:N`; resolved before the plugin sees it.
    pub device: &'a str,
    /// libtorch CPU threads (0 = its default).
    pub threads: u32,
    /// `key = TOML value` overrides of stored settings (inference settings
    /// such as `overlap`, `inference`, `largest_component`).
    pub overrides: &'a [String],
}

/// A trained volumetric network ready to segment FLAIR volumes: the stage
/// rebuilt from the model file's metadata, with its weights loaded.
pub struct Segmenter {
    stage: StandaloneStage,
    /// Holds the payload of a wrapped model file while the stage lives.
    _scratch: tempfile::TempDir,
    /// How its training cases were prepared and its predictions brought
    /// back.
    preprocessing: Preprocessing,
}

impl Segmenter {
    /// Loads `model` (a file written by a pipeline or a plugin's `save`)
    /// with the plugin it names, looked up in `registry`.
    pub fn load(
        model: &Path,
        registry: &Registry,
        options: &LoadOptions,
    ) -> Result<Self, InferenceError> {
        let (plugin, mut settings) = model_identity(model)?;
        let written_by = |message: String| InferenceError::Plugin {
            path: model.to_path_buf(),
            plugin: plugin.clone(),
            message,
        };
        let scratch = tempfile::tempdir().map_err(InferenceError::Scratch)?;
        let file = model_file::plugin_file(model, scratch.path())?;
        let mut overrides = toml::Table::new();
        apply_overrides(&mut overrides, options.overrides).map_err(InferenceError::Override)?;
        if file != model {
            // A wrapped model: the plugin's weight-file settings name the
            // payload (the SDK's model-file contract), unless overridden.
            let registered = registry
                .find(&plugin, StageKind::VolumetricSegmenter)
                .map_err(|e: RegistryError| written_by(e.to_string()))?;
            for field in registered.descriptor.info.settings.iter() {
                if field.is_weights_file() && !overrides.contains_key(field.name.as_str()) {
                    let path = file.display().to_string();
                    settings.insert(field.name.to_string(), path.into());
                }
            }
        }
        settings.extend(overrides);
        let request = StageRequest {
            plugin: &plugin,
            kind: StageKind::VolumetricSegmenter,
            settings,
            device: options.device,
            threads: options.threads,
        };
        let mut stage = StandaloneStage::create(registry, &request)
            .map_err(|e| written_by(format!("{e:#}")))?;
        let StageObject::VolumetricSegmenter(net) = stage.stage() else {
            return Err(InferenceError::NotVolumetric(plugin));
        };
        if let RResult::RErr(source) = net.load(file.display().to_string().as_str().into()) {
            return Err(InferenceError::Load {
                path: model.to_path_buf(),
                source,
            });
        }
        Ok(Self {
            stage,
            _scratch: scratch,
            preprocessing: model_file::preprocessing(model)?,
        })
    }

    /// Segments one FLAIR volume (case `id`): the training preprocessing,
    /// the network's foreground probabilities, and the labels put back on
    /// `flair`'s own grid from them (border refined from `flair` with the
    /// model's `refine_boundary_mm`), as a pipeline run does.
    pub fn segment(&mut self, id: &str, flair: &Volume) -> Result<LabelVolume, InferenceError> {
        let options = PreprocessOptions {
            spacing: self.preprocessing.spacing,
            bias_correction: self.preprocessing.bias_correction,
            ..PreprocessOptions::default()
        };
        let pre = preprocess(id, flair, &options).map_err(|source| InferenceError::Segment {
            step: "preprocessing",
            source,
        })?;
        let StageObject::VolumetricSegmenter(net) = self.stage.stage() else {
            unreachable!("Segmenter::load keeps volumetric segmenters only");
        };
        let probability = match net.predict_probability(&pre.input) {
            RResult::ROk(p) => p,
            RResult::RErr(source) => {
                return Err(InferenceError::Segment {
                    step: "predicting",
                    source,
                })
            }
        };
        let back = |source| InferenceError::Segment {
            step: "returning the labels to the input grid",
            source,
        };
        let mut on_box = pre
            .geometry
            .probability_to_cropped(&probability)
            .map_err(back)?;
        if let Some(mm) = self.preprocessing.refine_boundary_mm {
            let flair = flair.require_channel("flair").map_err(back)?;
            on_box = pre
                .geometry
                .refine_on_crop_box(id, on_box, flair, mm)
                .map_err(back)?;
        }
        pre.geometry.crop.uncrop(&on_box).map_err(back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_files_without_clisc_metadata() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.safetensors");
        let header = br#"{"__metadata__":{"format":"pt"}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        std::fs::write(&p, &bytes).unwrap();
        assert!(model_identity(&p)
            .unwrap_err()
            .to_string()
            .contains("clisc.plugin"));
        std::fs::write(&p, b"xx").unwrap();
        assert!(model_identity(&p).is_err());
    }
}
