//! `unet3d` checkpoints: one safetensors file holding the weights (PyTorch
//! state-dict names, fp32) and, in the safetensors header metadata, the
//! plugin name and version, the settings (TOML, as the stage takes them)
//! and the training progress. A resumable checkpoint written during
//! training also holds the optimiser state (SGD momentum, fp16 loss scale)
//! under `TRAINING_STATE_PREFIX`, so that a resumed run continues exactly
//! as the uninterrupted one would.
//!
//! One file keeps the checkpoint atomic to move around (the pipeline saves
//! to a temporary name and renames it), readable from Python with
//! `safetensors.torch.load_file`, and self-describing for `clisc infer`,
//! which rebuilds the stage from the metadata keys [`KEY_PLUGIN`] and
//! [`KEY_SETTINGS`].

use super::config::UNetConfig;
use clisc_sdk::config::Settings;
use clisc_sdk::PluginError;
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Metadata keys of the model-file contract (plugin, version, settings).
use clisc_sdk::model_file::{
    PLUGIN_KEY as KEY_PLUGIN, PLUGIN_VERSION_KEY as KEY_VERSION, SETTINGS_KEY as KEY_SETTINGS,
};
/// Metadata key: SGD steps done.
pub(crate) const KEY_STEP: &str = "clisc.step";
/// Metadata key: SGD steps planned.
pub(crate) const KEY_TOTAL: &str = "clisc.total_steps";
/// Metadata key: fingerprint of the training data (resume check).
pub(crate) const KEY_DATA: &str = "clisc.data";
/// Metadata key: smoothed training loss at `step`.
pub(crate) const KEY_LOSS: &str = "clisc.loss";
/// Name prefix of the training state a resumable checkpoint carries besides
/// the weights (SGD momentum buffers, fp16 loss-scaler state). These
/// tensors are not parameters: [`read`] returns them apart.
pub(crate) const TRAINING_STATE_PREFIX: &str = "training.";

/// What a checkpoint says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    /// Plugin version that wrote it.
    pub plugin_version: String,
    /// The full configuration it was trained with.
    pub config: UNetConfig,
    /// Steps done.
    pub step: usize,
    /// Steps planned.
    pub total_steps: usize,
    /// Fingerprint of the training data.
    pub data_key: String,
    /// Smoothed loss at `step`.
    pub loss: f64,
}

struct Bytes {
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for Bytes {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(t: &Tensor) -> Result<Bytes, PluginError> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let values: Vec<f32> = Vec::<f32>::try_from(t.flatten(0, -1))
        .map_err(|e| PluginError::internal(format!("unet3d: reading a weight tensor: {e}")))?;
    let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(Bytes {
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Writes the variables of `vs` and `meta` to `path` (overwriting it).
pub fn save(vs: &VarStore, meta: &CheckpointMeta, path: &Path) -> Result<(), PluginError> {
    save_with_state(vs, &HashMap::new(), meta, path)
}

/// The config stored in a checkpoint, read through the schema as a
/// pipeline's settings are: keys added to the plugin after the file was
/// written get their defaults, keys this version does not know (written
/// by a newer clisc, or since removed) are left out, and the values are
/// validated.
fn stored_config(settings: &str) -> Result<UNetConfig, PluginError> {
    let schema = UNetConfig::schema();
    let mut table: toml::Table = toml::from_str(settings)
        .map_err(|e| PluginError::config(format!("{}: not TOML: {e}", super::NAME)))?;
    table.retain(|key, _| schema.iter().any(|f| f.name.as_str() == key));
    let known = toml::to_string(&table).expect("a TOML table serialises");
    UNetConfig::from_settings(&Settings::parse(super::NAME, &known, &schema)?)
}

/// [`save`] plus training state tensors, stored under their names
/// prefixed with [`TRAINING_STATE_PREFIX`].
pub(crate) fn save_with_state(
    vs: &VarStore,
    state: &HashMap<String, Tensor>,
    meta: &CheckpointMeta,
    path: &Path,
) -> Result<(), PluginError> {
    let mut tensors = Vec::new();
    for (name, t) in vs.variables() {
        tensors.push((name, to_bytes(&t)?));
    }
    for (name, t) in state {
        tensors.push((format!("{TRAINING_STATE_PREFIX}{name}"), to_bytes(t)?));
    }
    let info: HashMap<String, String> = [
        (KEY_PLUGIN, super::NAME.to_string()),
        (KEY_VERSION, meta.plugin_version.clone()),
        (KEY_SETTINGS, meta.config.to_settings_toml()),
        (KEY_STEP, meta.step.to_string()),
        (KEY_TOTAL, meta.total_steps.to_string()),
        (KEY_DATA, meta.data_key.clone()),
        (KEY_LOSS, meta.loss.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| PluginError::io(format!("unet3d: creating {}: {e}", dir.display())))?;
    }
    safetensors::tensor::serialize_to_file(tensors, &Some(info), path).map_err(|e| {
        PluginError::io(format!(
            "unet3d: writing checkpoint {}: {e:?}",
            path.display()
        ))
    })
}

/// Writes to a temporary sibling, then renames: a reader never sees half a file.
pub(crate) fn save_atomic(
    vs: &VarStore,
    state: &HashMap<String, Tensor>,
    meta: &CheckpointMeta,
    path: &Path,
) -> Result<(), PluginError> {
    let tmp = path.with_extension("partial");
    save_with_state(vs, state, meta, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        PluginError::io(format!(
            "unet3d: renaming {} to {}: {e}",
            tmp.display(),
            path.display()
        ))
    })
}

/// A checkpoint read from disk: its metadata and its tensors (CPU, fp32).
pub struct Checkpoint {
    /// What the file says about itself.
    pub meta: CheckpointMeta,
    /// Tensors by state-dict name.
    pub tensors: HashMap<String, Tensor>,
    /// Training state saved with `save_with_state`, by name without the
    /// `TRAINING_STATE_PREFIX` (empty for a finished model).
    pub state: HashMap<String, Tensor>,
}

/// Reads a checkpoint written by [`save`].
pub fn read(path: &Path) -> Result<Checkpoint, PluginError> {
    let bytes = std::fs::read(path).map_err(|e| {
        PluginError::io(format!(
            "unet3d: reading checkpoint {}: {e}",
            path.display()
        ))
    })?;
    let bad = |what: String| {
        PluginError::weights(format!("unet3d: checkpoint {}: {what}", path.display()))
    };
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e:?})")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("unreadable header ({e:?})")))?;
    let info = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        info.get(k)
            .cloned()
            .ok_or_else(|| bad(format!("metadata key `{k}` is missing")))
    };
    let plugin = get(KEY_PLUGIN)?;
    if plugin != super::NAME {
        return Err(bad(format!(
            "written by plugin `{plugin}`, expected `{}`",
            super::NAME
        )));
    }
    let settings = get(KEY_SETTINGS)?;
    let config = stored_config(&settings).map_err(|e| {
        bad(format!(
            "settings in `{KEY_SETTINGS}` are not valid: {}",
            e.message
        ))
    })?;
    let num = |k: &str| -> Result<usize, PluginError> {
        get(k)?
            .parse()
            .map_err(|_| bad(format!("metadata `{k}` is not an integer")))
    };
    let meta = CheckpointMeta {
        plugin_version: get(KEY_VERSION)?,
        config,
        step: num(KEY_STEP)?,
        total_steps: num(KEY_TOTAL)?,
        data_key: info.get(KEY_DATA).cloned().unwrap_or_default(),
        loss: info
            .get(KEY_LOSS)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
    };
    let mut tensors = HashMap::new();
    let mut state = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor `{name}` is {:?}, expected F32",
                view.dtype()
            )));
        }
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, Kind::Float)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        match name.strip_prefix(TRAINING_STATE_PREFIX) {
            Some(key) => state.insert(key.to_string(), t),
            None => tensors.insert(name, t),
        };
    }
    Ok(Checkpoint {
        meta,
        tensors,
        state,
    })
}

/// Copies `tensors` into the variables of `vs`; every variable must be
/// present with the same shape, and no extra tensor may be left over.
pub(crate) fn load_into(
    vs: &mut VarStore,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<(), PluginError> {
    let vars = vs.variables();
    let bad = |what: String| {
        PluginError::weights(format!("unet3d: checkpoint {}: {what}", path.display()))
    };
    if let Some(extra) = tensors.keys().find(|k| !vars.contains_key(*k)) {
        return Err(bad(format!(
            "unexpected tensor `{extra}` (not a parameter of the configured network)"
        )));
    }
    tch::no_grad(|| {
        for (name, mut var) in vars {
            let src = tensors
                .get(&name)
                .ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
            if src.size() != var.size() {
                return Err(bad(format!(
                    "tensor `{name}` has shape {:?}, expected {:?}",
                    src.size(),
                    var.size()
                )));
            }
            var.copy_(&src.to_device(var.device()).to_kind(var.kind()));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_settings_round_trip_and_older_files_get_new_keys_defaults() {
        let cfg = UNetConfig {
            features: vec![8, 16, 32],
            patch_size: [32, 32, 16],
            mirroring: crate::config::Mirroring::Axial,
            ..UNetConfig::default()
        };
        assert_eq!(stored_config(&cfg.to_settings_toml()).unwrap(), cfg);
        // A file written before the intensity augmentation and mirroring existed.
        let older: String = cfg
            .to_settings_toml()
            .lines()
            .filter(|l| !l.starts_with("intensity_") && !l.starts_with("mirroring"))
            .map(|l| format!("{l}\n"))
            .collect();
        let read = stored_config(&older).unwrap();
        // And one from a newer clisc with a key this version does not know.
        let newer = format!("{}future_setting = 3\n", cfg.to_settings_toml());
        assert_eq!(stored_config(&newer).unwrap(), cfg);
        assert_eq!(read.mirroring, crate::config::Mirroring::Off);
        assert_eq!(
            (read.intensity_scale, read.features),
            (0.0, vec![8, 16, 32])
        );
        let bad = stored_config("features = [8, 16, 32]\npatch_size = [30, 30, 30]");
        assert!(bad.unwrap_err().message.contains("multiples of 4"));
    }
}
