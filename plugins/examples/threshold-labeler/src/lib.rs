//! An external clisc plugin, built as a `cdylib` and loaded by `clisc` at
//! run time (`[plugins] paths = [...]` in a pipeline, or
//! `CLISC_PLUGIN_PATH`). It is deliberately small: a pseudo-labeler that
//! calls a slice "tumor" when enough of its brain pixels are brighter than
//! `mean + k * std` of the whole brain. Use it as a template for your own.
//!
//! It also has a `panic_on_slice` setting so tests can check that a plugin
//! panic reaches the host as a clear error instead of crashing it.
#![warn(unreachable_pub)]

use abi_stable::std_types::{RResult, RVec};
use clisc_sdk::config::Settings;
use clisc_sdk::stage::{CaseInput, PseudoLabeler};
use clisc_sdk::{
    export_plugins, plugin_settings, ConfigField, HostContext, Plugin, PluginError, SliceLabel,
    SlicePseudoLabels, StageKind, StageObject,
};

/// The plugin type: identity and constructor.
pub struct ThresholdLabelerPlugin;

impl Plugin for ThresholdLabelerPlugin {
    const NAME: &'static str = "example-threshold";
    const KIND: StageKind = StageKind::PseudoLabeler;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Example external plugin: slice is tumor when its bright-pixel fraction exceeds a threshold";

    fn settings() -> Vec<ConfigField> {
        ThresholdLabeler::schema()
    }

    fn create(settings: Settings, _ctx: &HostContext) -> Result<StageObject, PluginError> {
        Ok(StageObject::pseudo_labeler(ThresholdLabeler::read(
            &settings,
        )?))
    }
}

plugin_settings! {
    /// The stage itself: each setting declared once (schema, field, reader).
    pub struct ThresholdLabeler {
        /// brightness threshold in brain standard deviations above the mean
        k: f32 = float(2.5),
        /// fraction of the slice's brain pixels that must be bright
        min_fraction: f64 = float(0.01),
        /// test hook: panic when labelling this slice (-1 = never)
        panic_on_slice: i64 = integer(-1),
    }
}

impl PseudoLabeler for ThresholdLabeler {
    fn label_slices(&mut self, case: &CaseInput) -> RResult<SlicePseudoLabels, PluginError> {
        let flair = match case.image.require_channel("flair") {
            Ok(f) => f,
            Err(e) => return RResult::RErr(e),
        };
        let brain = &case.brain_mask.data;
        let values: Vec<f32> = flair
            .iter()
            .zip(brain.iter())
            .filter(|(_, &m)| m != 0)
            .map(|(&v, _)| v)
            .collect();
        let n = values.len().max(1) as f32;
        let mean = values.iter().sum::<f32>() / n;
        let std = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt();
        let threshold = mean + self.k * std;
        let per_slice = case.image.grid.slice_len();
        let mut slices = RVec::new();
        for z in 0..case.image.grid.shape[2] as usize {
            if z as i64 == self.panic_on_slice {
                panic!("example-threshold: deliberate panic on slice {z}");
            }
            let range = z * per_slice..(z + 1) * per_slice;
            let (mut inside, mut bright) = (0usize, 0usize);
            for (v, m) in flair[range.clone()].iter().zip(&brain[range]) {
                if *m != 0 {
                    inside += 1;
                    bright += usize::from(*v > threshold);
                }
            }
            let fraction = if inside == 0 {
                0.0
            } else {
                bright as f64 / inside as f64
            };
            let label = u8::from(fraction > self.min_fraction);
            slices.push(SliceLabel {
                index: z as u32,
                label,
                probability: 1.0,
                kept: inside > 0,
            });
        }
        RResult::ROk(SlicePseudoLabels { slices })
    }
}

export_plugins!(ThresholdLabelerPlugin);
