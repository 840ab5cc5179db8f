//! An external clisc plugin of the volumetric-segmenter kind, built as a
//! `cdylib` and loaded by `clisc` at run time. It is the smallest thing
//! that is trained, saved, and then used on new studies with `clisc infer`
//! or `clisc dicom serve`, so it shows the whole route of a lab's own
//! network through the SDK:
//!
//! * `train` learns one number: the FLAIR threshold (in the z-scored units
//!   the host hands every stage) whose mask inside the brain agrees best
//!   (summed Dice) with the training targets;
//! * `predict` marks the brain voxels above that threshold;
//! * `save` writes the model-file contract of `clisc_sdk::model_file`: a
//!   safetensors file (here with no tensors) whose metadata names the
//!   plugin, its version and settings, plus the learned threshold; `load`
//!   reads it back. `clisc infer --model FILE --plugin-path LIB` rebuilds
//!   the stage from that metadata.
#![warn(unreachable_pub)]

use abi_stable::std_types::{RResult, RSlice, RStr};
use clisc_sdk::config::Settings;
use clisc_sdk::model_file::{PLUGIN_KEY, PLUGIN_VERSION_KEY, SETTINGS_KEY};
use clisc_sdk::stage::{CaseInput, StageReport, TrainingCase, VolumetricSegmenter};
use clisc_sdk::{
    export_plugins, plugin_settings, ConfigField, HostContext, LabelVolume, Plugin, PluginError,
    StageKind, StageObject,
};

/// Metadata key of the learned threshold.
const THRESHOLD_KEY: &str = "example.threshold";

/// The plugin type: identity and constructor.
pub struct ThresholdSegmenterPlugin;

impl Plugin for ThresholdSegmenterPlugin {
    const NAME: &'static str = "example-threshold-segmenter";
    const KIND: StageKind = StageKind::VolumetricSegmenter;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Example external plugin: learns one FLAIR threshold from the training targets";

    fn settings() -> Vec<ConfigField> {
        ThresholdSettings::schema()
    }

    fn create(settings: Settings, _ctx: &HostContext) -> Result<StageObject, PluginError> {
        let step = ThresholdSettings::read(&settings)?.step;
        if !(step > 0.0 && step <= 4.0) {
            return Err(PluginError::config(format!(
                "example-threshold-segmenter: `step` must lie in (0, 4], found {step}"
            )));
        }
        Ok(StageObject::volumetric_segmenter(ThresholdSegmenter {
            step,
            threshold: None,
        }))
    }
}

plugin_settings! {
    /// The setting, declared once (schema, field, reader).
    struct ThresholdSettings {
        /// spacing of the thresholds tried, in z-score units (from 0 to 4)
        step: f64 = float(0.1),
    }
}

/// The stage: its setting and what it learned.
pub struct ThresholdSegmenter {
    step: f64,
    threshold: Option<f32>,
}

/// `flair > threshold` inside the brain.
fn segment(case: &CaseInput, threshold: f32) -> Result<LabelVolume, PluginError> {
    let flair = case.image.require_channel("flair")?;
    let mut labels = LabelVolume::zeros(case.image.grid);
    for ((out, &v), &brain) in labels
        .data
        .iter_mut()
        .zip(flair)
        .zip(case.brain_mask.data.iter())
    {
        *out = u8::from(brain != 0 && v > threshold);
    }
    Ok(labels)
}

fn dice(a: &LabelVolume, b: &LabelVolume) -> f64 {
    let (mut both, mut total) = (0usize, 0usize);
    for (&x, &y) in a.data.iter().zip(b.data.iter()) {
        both += usize::from(x != 0 && y != 0);
        total += usize::from(x != 0) + usize::from(y != 0);
    }
    if total == 0 {
        1.0
    } else {
        2.0 * both as f64 / total as f64
    }
}

impl ThresholdSegmenter {
    fn learn(&mut self, cases: &[TrainingCase]) -> Result<StageReport, PluginError> {
        let mut best = (f64::NEG_INFINITY, 0.0f32);
        let steps = (4.0 / self.step).round() as usize;
        for i in 0..=steps {
            let t = (i as f64 * self.step) as f32;
            let mut score = 0.0;
            for c in cases {
                score += dice(&segment(&c.case, t)?, &c.target);
            }
            if score > best.0 {
                best = (score, t);
            }
        }
        self.threshold = Some(best.1);
        let mut report = StageReport::default();
        report.push("threshold", best.1 as f64);
        report.push("mean_training_dice", best.0 / cases.len().max(1) as f64);
        Ok(report)
    }

    fn write(&self, path: &str) -> Result<(), PluginError> {
        let threshold = self
            .threshold
            .ok_or_else(|| PluginError::input("example-threshold-segmenter: not trained"))?;
        let header = serde_json::json!({
            "__metadata__": {
                PLUGIN_KEY: ThresholdSegmenterPlugin::NAME,
                PLUGIN_VERSION_KEY: ThresholdSegmenterPlugin::VERSION,
                SETTINGS_KEY: format!("step = {:?}", self.step),
                THRESHOLD_KEY: threshold.to_string(),
            }
        });
        let mut json = serde_json::to_vec(&header).expect("a JSON object serialises");
        while json.len() % 8 != 0 {
            json.push(b' ');
        }
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&json);
        std::fs::write(path, bytes)
            .map_err(|e| PluginError::io(format!("writing the model {path}: {e}")))
    }

    fn read(&mut self, path: &str) -> Result<(), PluginError> {
        let bad = |why: String| PluginError::input(format!("model {path}: {why}"));
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let n = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .filter(|n| 8 + n <= bytes.len())
            .ok_or_else(|| bad("not a safetensors file".into()))?;
        let header: serde_json::Value =
            serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(e.to_string()))?;
        let threshold = header["__metadata__"][THRESHOLD_KEY]
            .as_str()
            .and_then(|t| t.parse::<f32>().ok())
            .ok_or_else(|| bad(format!("no `{THRESHOLD_KEY}` in its metadata")))?;
        self.threshold = Some(threshold);
        Ok(())
    }
}

impl VolumetricSegmenter for ThresholdSegmenter {
    fn train(&mut self, cases: RSlice<'_, TrainingCase>) -> RResult<StageReport, PluginError> {
        self.learn(cases.as_slice()).into()
    }

    fn predict(&mut self, case: &CaseInput) -> RResult<LabelVolume, PluginError> {
        match self.threshold {
            Some(t) => segment(case, t).into(),
            None => RResult::RErr(PluginError::input(
                "example-threshold-segmenter: predict before train or load",
            )),
        }
    }

    fn save(&self, path: RStr<'_>) -> RResult<(), PluginError> {
        self.write(path.as_str()).into()
    }

    fn load(&mut self, path: RStr<'_>) -> RResult<(), PluginError> {
        self.read(path.as_str()).into()
    }
}

export_plugins!(ThresholdSegmenterPlugin);
