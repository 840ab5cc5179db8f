//! Typed handles on constructed stages: the runner asks the registry for a
//! slot's plugin and gets the right trait object back, or a clear error.

use super::config::{Pipeline, StageSlot};
use crate::error::{invalid, WithContext};
use clisc_progress::Bars;
use clisc_registry::Registry;
use clisc_sdk::stage::{
    FilterBox, PromptGeneratorBox, PseudoLabelerBox, RoiExtractorBox, VolumetricSegmenterBox,
};
use clisc_sdk::{HostContext, StageObject};
use std::path::Path;

/// Builds stage instances for one run.
pub struct StageFactory<'a> {
    /// The validated pipeline.
    pub pipeline: &'a Pipeline,
    /// Plugins available to the run.
    pub registry: &'a Registry,
    /// Resolved device (`cpu` / `cuda:N`).
    pub device: String,
    /// Progress bars.
    pub bars: Bars,
}

/// Which stage instance a seed is for. Each instance gets the run seed
/// plus its own offset, so that no two stages share a random stream and a
/// stage keeps its stream when another one changes. The offsets are part
/// of every cached result, so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageSeed {
    /// The pseudo-labeler of step `pseudo-labels`.
    PseudoLabels = 1,
    /// The ROI extractor of step `roi`.
    Roi = 2,
    /// The prompt generator of step `prompts`.
    Prompts = 3,
    /// The promptable segmenter of step `pseudo-masks`.
    PseudoMasks = 4,
    /// The first network (and its model-selection hold-out).
    Network1 = 5,
    /// The retrained network (and its model-selection hold-out).
    Network2 = 7,
    /// A trained network loaded to predict.
    LoadedNetwork = 9,
    /// The filter's re-prompt generator.
    FilterReprompts = 11,
    /// The filter's promptable segmenter.
    FilterSegmenter = 12,
    /// The filter itself.
    Filter = 13,
}

impl StageSeed {
    /// The seed of this instance in a run seeded with `run_seed`.
    pub fn seed(self, run_seed: u64) -> u64 {
        run_seed.wrapping_add(self as u64)
    }
}

impl StageFactory<'_> {
    /// A new instance of the plugin in `slot`, with `work_dir` as its
    /// private folder and the seed of `seed`.
    pub fn create(
        &self,
        slot: StageSlot,
        work_dir: &Path,
        seed: StageSeed,
    ) -> crate::error::Result<StageObject> {
        let spec = self
            .pipeline
            .stage(slot)
            .ok_or_else(|| invalid(format!("the pipeline has no `[stages.{}]`", slot.key())))?;
        std::fs::create_dir_all(work_dir)
            .with_context(|| format!("creating {}", work_dir.display()))?;
        let ctx = HostContext {
            device: self.device.clone().into(),
            seed: seed.seed(self.pipeline.run.seed),
            threads: self.pipeline.run.threads,
            work_dir: work_dir.display().to_string().into(),
            progress: self.bars.scoped(&spec.plugin).sink(),
        };
        Ok(self
            .registry
            .create(&spec.plugin, slot.kind(), &spec.settings, &ctx)?)
    }

    /// `plugin@version` of the slot, for the manifest.
    pub(crate) fn stamp(&self, slot: StageSlot) -> String {
        match self.pipeline.stage(slot) {
            Some(spec) => {
                let version = self
                    .registry
                    .find(&spec.plugin, slot.kind())
                    .map(|p| p.descriptor.info.version.to_string())
                    .unwrap_or_default();
                format!("{}={}@{}", slot.key(), spec.plugin, version)
            }
            None => format!("{}=none", slot.key()),
        }
    }

    /// Fingerprint parts describing the slot's plugin and settings.
    pub fn identity(&self, slot: StageSlot) -> String {
        match self.pipeline.stage(slot) {
            Some(spec) => {
                let mut id = format!(
                    "{}|{}",
                    self.stamp(slot),
                    toml::to_string(&spec.settings).unwrap_or_default()
                );
                for (key, value) in spec.host_options() {
                    id.push_str(&format!("|{key}={value}"));
                }
                id
            }
            None => format!("{}=none", slot.key()),
        }
    }
}

macro_rules! typed_create {
    ($fn_name:ident, $variant:ident, $boxed:ty) => {
        impl StageFactory<'_> {
            /// A new instance of the slot's plugin as its trait object.
            pub fn $fn_name(
                &self,
                slot: StageSlot,
                work_dir: &Path,
                seed: StageSeed,
            ) -> crate::error::Result<$boxed> {
                match self.create(slot, work_dir, seed)? {
                    StageObject::$variant(stage) => Ok(stage),
                    other => Err(invalid(format!(
                        "plugin of [stages.{}] returned a {} instead of a {}",
                        slot.key(),
                        other.kind(),
                        slot.kind()
                    ))),
                }
            }
        }
    };
}

typed_create!(pseudo_labeler, PseudoLabeler, PseudoLabelerBox);
typed_create!(roi_extractor, RoiExtractor, RoiExtractorBox);
typed_create!(prompt_generator, PromptGenerator, PromptGeneratorBox);
typed_create!(
    volumetric_segmenter,
    VolumetricSegmenter,
    VolumetricSegmenterBox
);
typed_create!(filter, Filter, FilterBox);
