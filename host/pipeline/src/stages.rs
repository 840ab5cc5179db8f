//! Typed handles on constructed stages: the runner asks the registry for a
//! slot's plugin and gets the right trait object back, or a clear error.

use super::config::{ModelSelection, Pipeline, StageSlot};
use crate::progress::Bars;
use crate::registry::Registry;
use anyhow::{anyhow, Context};
use clisc_sdk::stage::{
    FilterBox, PromptGeneratorBox, PromptableSegmenterBox, PseudoLabelerBox, RoiExtractorBox,
    VolumetricSegmenterBox,
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

impl StageFactory<'_> {
    /// A new instance of the plugin in `slot`, with `work_dir` as its
    /// private folder and the run seed offset by `seed_offset`.
    pub fn create(
        &self,
        slot: StageSlot,
        work_dir: &Path,
        seed_offset: u64,
    ) -> anyhow::Result<StageObject> {
        let spec = self
            .pipeline
            .stage(slot)
            .ok_or_else(|| anyhow!("the pipeline has no `[stages.{}]`", slot.key()))?;
        std::fs::create_dir_all(work_dir)
            .with_context(|| format!("creating {}", work_dir.display()))?;
        let ctx = HostContext {
            device: self.device.clone().into(),
            seed: self.pipeline.run.seed.wrapping_add(seed_offset),
            threads: self.pipeline.run.threads,
            work_dir: work_dir.display().to_string().into(),
            progress: self.bars.scoped(&spec.plugin).sink(),
        };
        Ok(self
            .registry
            .create(&spec.plugin, slot.kind(), &spec.settings, &ctx)?)
    }

    /// `plugin@version` of the slot, for the manifest.
    pub fn stamp(&self, slot: StageSlot) -> String {
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
                if let Some(n) = spec.keep_largest_components {
                    id.push_str(&format!("|keep_largest_components={n}"));
                }
                if let ModelSelection::PseudoLabelHoldout { fraction } = spec.model_selection {
                    id.push_str(&format!("|model_selection=pseudo-label-holdout:{fraction}"));
                } else if !spec.model_selection.is_last() {
                    id.push_str(&format!("|model_selection={}", spec.model_selection.name()));
                }
                if !spec.retrain_on.is_default() {
                    id.push_str(&format!("|retrain_on={}", spec.retrain_on.name()));
                }
                if !spec.targets.is_default() {
                    id.push_str(&format!("|targets={}", spec.targets.name()));
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
                seed_offset: u64,
            ) -> anyhow::Result<$boxed> {
                match self.create(slot, work_dir, seed_offset)? {
                    StageObject::$variant(stage) => Ok(stage),
                    other => Err(anyhow!(
                        "plugin of [stages.{}] returned a {} instead of a {}",
                        slot.key(),
                        other.kind(),
                        slot.kind()
                    )),
                }
            }
        }
    };
}

typed_create!(pseudo_labeler, PseudoLabeler, PseudoLabelerBox);
typed_create!(roi_extractor, RoiExtractor, RoiExtractorBox);
typed_create!(prompt_generator, PromptGenerator, PromptGeneratorBox);
typed_create!(
    promptable_segmenter,
    PromptableSegmenter,
    PromptableSegmenterBox
);
typed_create!(
    volumetric_segmenter,
    VolumetricSegmenter,
    VolumetricSegmenterBox
);
typed_create!(filter, Filter, FilterBox);
