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
use anyhow::{anyhow, bail, Context};
use clisc_dataset::preprocess::{preprocess, PreprocessOptions};
use clisc_registry::standalone::{apply_overrides, StageRequest, StandaloneStage};
use clisc_registry::Registry;
use clisc_sdk::{LabelVolume, StageKind, StageObject, Volume};
use std::path::Path;

/// The plugin name and settings stored in a model file's metadata.
pub(crate) fn model_identity(path: &Path) -> anyhow::Result<(String, toml::Table)> {
    let meta = model_file::read_metadata(path)?;
    let get = |k: &str| {
        meta.get(k).ok_or_else(|| {
            anyhow!(
                "{}: metadata key `{k}` is missing (not a clisc model?)",
                path.display()
            )
        })
    };
    let plugin = get(model_file::PLUGIN_KEY)?.to_string();
    let settings: toml::Table =
        toml::from_str(get(model_file::SETTINGS_KEY)?).with_context(|| {
            format!(
                "{}: `{}` is not a TOML table",
                path.display(),
                model_file::SETTINGS_KEY
            )
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
    pub fn load(model: &Path, registry: &Registry, options: &LoadOptions) -> anyhow::Result<Self> {
        let (plugin, mut settings) = model_identity(model)?;
        let written_by = || format!("{} was written by plugin `{plugin}`", model.display());
        let scratch = tempfile::tempdir().context("creating a temporary folder")?;
        let file = model_file::plugin_file(model, scratch.path())?;
        let mut overrides = toml::Table::new();
        apply_overrides(&mut overrides, options.overrides)?;
        if file != model {
            // A wrapped model: the plugin's weight-file settings name the
            // payload (the SDK's model-file contract), unless overridden.
            let registered = registry
                .find(&plugin, StageKind::VolumetricSegmenter)
                .with_context(written_by)?;
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
        let mut stage = StandaloneStage::create(registry, &request).with_context(written_by)?;
        let StageObject::VolumetricSegmenter(net) = stage.stage() else {
            bail!("plugin `{plugin}` is not a volumetric segmenter");
        };
        if let RResult::RErr(e) = net.load(file.display().to_string().as_str().into()) {
            bail!("loading {}: {e}", model.display());
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
    pub fn segment(&mut self, id: &str, flair: &Volume) -> anyhow::Result<LabelVolume> {
        let options = PreprocessOptions {
            spacing: self.preprocessing.spacing,
            bias_correction: self.preprocessing.bias_correction,
            ..PreprocessOptions::default()
        };
        let pre = preprocess(id, flair, &options).map_err(|e| anyhow!("preprocessing: {e}"))?;
        let StageObject::VolumetricSegmenter(net) = self.stage.stage() else {
            unreachable!("Segmenter::load keeps volumetric segmenters only");
        };
        let probability = match net.predict_probability(&pre.input) {
            RResult::ROk(p) => p,
            RResult::RErr(e) => bail!("predicting: {e}"),
        };
        let back = |e| anyhow!("returning the labels to the input grid: {e}");
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
