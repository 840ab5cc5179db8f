//! The promptable-segmenter slot and what it makes of a case: a plugin
//! either segments slice by slice ([`PromptableSegmenter`], SAM) or takes
//! the whole volume with all its prompts ([`VolumePromptableSegmenter`],
//! SAM 2's propagation); either way the result is one binary volume per
//! case, restricted to the brain and optionally to its largest components.
//!
//! [`PromptableSegmenter`]: clisc_sdk::stage::PromptableSegmenter
//! [`VolumePromptableSegmenter`]: clisc_sdk::stage::VolumePromptableSegmenter

use super::run::plugin;
use super::stages::{StageFactory, StageSeed};
use crate::cases::PreparedCase;
use crate::config::StageSlot;
use crate::error::{invalid, WithContext};
use abi_stable::std_types::RSlice;
use clisc_imaging::components::keep_largest_n;
use clisc_imaging::Connectivity;
use clisc_sdk::stage::{PromptableSegmenterBox, SliceImage, VolumePromptableSegmenterBox};
use clisc_sdk::{CasePrompts, LabelVolume, StageObject};
use std::collections::BTreeMap;
use std::path::Path;

/// A constructed promptable segmenter of either form.
pub(crate) enum PromptableStage {
    /// Called once per prompted slice.
    Slices(PromptableSegmenterBox),
    /// Called once per case with every prompt set.
    Volume(VolumePromptableSegmenterBox),
}

impl StageFactory<'_> {
    /// A new instance of the slot's promptable segmenter.
    pub(crate) fn promptable_stage(
        &self,
        slot: StageSlot,
        work_dir: &Path,
        seed: StageSeed,
    ) -> crate::error::Result<PromptableStage> {
        match self.create(slot, work_dir, seed)? {
            StageObject::PromptableSegmenter(s) => Ok(PromptableStage::Slices(s)),
            StageObject::VolumePromptableSegmenter(s) => Ok(PromptableStage::Volume(s)),
            other => Err(invalid(format!(
                "plugin of [stages.{}] returned a {} instead of a {}",
                slot.key(),
                other.kind(),
                slot.kind()
            ))),
        }
    }
}

/// Segments a case from its prompts and stacks the result into a volume
/// restricted to the brain; with `keep_largest`, only that many largest
/// 3D components (26-connected) remain.
pub(crate) fn segment_case(
    stage: &mut PromptableStage,
    case: &PreparedCase,
    prompts: &CasePrompts,
    keep_largest: Option<usize>,
) -> crate::error::Result<LabelVolume> {
    let input = &case.input;
    let mut volume = match stage {
        PromptableStage::Slices(segmenter) => segment_slices(segmenter, case, prompts)?,
        PromptableStage::Volume(segmenter) => {
            let v = plugin(
                segmenter.segment_volume(input, prompts),
                &format!("segmenting {}", case.id()),
            )?;
            let grid = input.image.grid;
            if v.grid.shape != grid.shape || v.data.len() != grid.len() {
                return Err(invalid(format!(
                    "segmenter returned a {:?} volume of {} voxels for case {} of {:?} ({} voxels)",
                    v.grid.shape,
                    v.data.len(),
                    case.id(),
                    grid.shape,
                    grid.len()
                )));
            }
            // The case's geometry, whatever the plugin wrote.
            LabelVolume { grid, data: v.data }
        }
    };
    for (v, &b) in volume.data.iter_mut().zip(input.brain_mask.data.iter()) {
        if b == 0 {
            *v = 0;
        }
    }
    if let Some(n) = keep_largest {
        let dims = volume.grid.dims();
        volume.data = keep_largest_n(&volume.data, dims, Connectivity::Full, n).into();
    }
    Ok(volume)
}

/// Runs a slice segmenter on every prompted slice of a case; the masks of
/// one slice's prompt sets are united.
fn segment_slices(
    segmenter: &mut PromptableSegmenterBox,
    case: &PreparedCase,
    prompts: &CasePrompts,
) -> crate::error::Result<LabelVolume> {
    let input = &case.input;
    let mut volume = LabelVolume::zeros(input.image.grid);
    let mut by_slice: BTreeMap<u32, Vec<clisc_sdk::PromptSet>> = BTreeMap::new();
    for set in prompts.sets.iter() {
        by_slice.entry(set.slice).or_default().push(set.clone());
    }
    for (z, sets) in by_slice {
        let image = input
            .image
            .axial_slice("flair", z as usize)
            .with_context(|| format!("case {}", case.id()))?;
        let slice = SliceImage {
            case_id: input.id.clone(),
            index: z,
            image,
        };
        let masks = plugin(
            segmenter.segment(&slice, RSlice::from_slice(&sets)),
            &format!("segmenting {} slice {z}", case.id()),
        )?;
        if masks.len() != sets.len() {
            return Err(invalid(format!(
                "segmenter returned {} masks for {} prompt sets ({} slice {z})",
                masks.len(),
                sets.len(),
                case.id()
            )));
        }
        let mut union =
            clisc_sdk::Mask2d::zeros(input.image.grid.shape[0], input.image.grid.shape[1]);
        for m in masks.iter() {
            if m.width != union.width || m.height != union.height {
                return Err(invalid(format!(
                    "segmenter returned a {}x{} mask for a {}x{} slice",
                    m.width, m.height, union.width, union.height
                )));
            }
            for (u, &v) in union.data.iter_mut().zip(m.data.iter()) {
                *u |= u8::from(v != 0);
            }
        }
        volume
            .set_axial_slice(z as usize, &union)
            .with_context(|| format!("case {} slice {z}", case.id()))?;
    }
    Ok(volume)
}
