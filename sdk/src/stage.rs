//! The stage traits a plugin can implement (one per stage kind; a promptable
//! segmenter works either slice by slice or on the whole volume), the data they exchange, and
//! [`StageObject`], the ABI-stable box a plugin constructor returns.
//!
//! Plugin authors implement one of the traits on their own type and wrap it
//! with the matching `StageObject` constructor (for example
//! [`StageObject::pseudo_labeler`]); the wrapper catches panics on the
//! plugin's side so they reach the host as [`ErrorKind::Panicked`] errors.

use crate::data::{Image2d, LabelVolume, Mask2d, ProbabilityVolume, Volume};
use crate::error::{panic_to_error, PluginError};
use crate::labels::SlicePseudoLabels;
use crate::prompt::{CasePrompts, PromptSet};
use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec};
use abi_stable::StableAbi;
use std::panic::{catch_unwind, AssertUnwindSafe};

#[allow(unused_imports)]
use crate::error::ErrorKind;

/// One case as a stage sees it: the preprocessed image channels (FLAIR at
/// least, cropped to the brain, clipped and z-scored) and the brain mask
/// (nonzero voxels of the raw FLAIR) on the same grid.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct CaseInput {
    /// Case identifier, e.g. `BraTS20_Training_001`.
    pub id: RString,
    /// Preprocessed channels; `flair` is always present.
    pub image: Volume,
    /// 1 inside the brain.
    pub brain_mask: LabelVolume,
}

/// A case with its slice pseudo-labels, for training an ROI extractor.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct LabelledCase {
    /// The case.
    pub case: CaseInput,
    /// Its slice labels.
    pub labels: SlicePseudoLabels,
}

/// One round of activation maps (e.g. before and after adaptive masking).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct RoiRound {
    /// Name of the round, e.g. `initial`, `amda-1`.
    pub name: RString,
    /// Activation map in `[0, 1]`, one channel named `cam`.
    pub cam: Volume,
    /// Binary region of interest derived from `cam`.
    pub roi: LabelVolume,
}

/// What an ROI extractor produces for one case: every round, last = final.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct RoiResult {
    /// Rounds in the order they were computed; the last one is used downstream.
    pub rounds: RVec<RoiRound>,
}

impl RoiResult {
    /// The final round, if any.
    pub fn final_round(&self) -> Option<&RoiRound> {
        self.rounds.last()
    }
}

/// One axial slice handed to a promptable segmenter.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct SliceImage {
    /// Case the slice comes from (for caches keyed by case).
    pub case_id: RString,
    /// Axial index `z`.
    pub index: u32,
    /// The preprocessed (z-scored) slice, one channel.
    pub image: Image2d,
}

/// A case with the label volume a volumetric network should learn.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct TrainingCase {
    /// The case.
    pub case: CaseInput,
    /// Binary target (pseudo-label) on the case's grid.
    pub target: LabelVolume,
}

/// A case held out of training: a volumetric segmenter may score its
/// checkpoints against `target` to choose which one to keep, but never fits
/// weights to it. The host decides what `target` is (a held-out
/// pseudo-label, or ground truth when the pipeline asks for the paper's
/// labelled model selection) and reports which.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ValidationCase {
    /// The case.
    pub case: CaseInput,
    /// Binary reference on the case's grid.
    pub target: LabelVolume,
}

/// A pseudo-label whose quality a filter judges against a second opinion.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FilterCandidate {
    /// Case identifier.
    pub case_id: RString,
    /// The label that would be trained on (e.g. the network's prediction).
    pub pseudo_label: LabelVolume,
    /// An independent estimate (e.g. SAM re-prompted from the prediction).
    pub reference: LabelVolume,
}

/// A filter's verdict on one candidate.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FilterDecision {
    /// Case identifier.
    pub case_id: RString,
    /// Quality score (higher is better), e.g. Dice agreement.
    pub score: f64,
    /// Whether the case is kept for training.
    pub keep: bool,
}

/// A named number a stage reports (loss, accuracy, ...).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct NamedValue {
    /// Metric name.
    pub name: RString,
    /// Value.
    pub value: f64,
}

/// Summary numbers of a training step, shown in the run report.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct StageReport {
    /// Metrics such as final loss or training accuracy.
    pub metrics: RVec<NamedValue>,
    /// The checkpoint a network kept by model selection
    /// ([`VolumetricSegmenter::train_with_validation`]); `RNone` when it
    /// did not choose (it kept its last checkpoint).
    pub selection: ROption<CheckpointChoice>,
}

/// Which checkpoint a network kept after scoring its checkpoints on the
/// validation cases (model selection), and how they scored.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct CheckpointChoice {
    /// Training step of the kept checkpoint.
    pub step: u64,
    /// Its mean Dice on the validation cases.
    pub validation_dice: f64,
    /// The last checkpoint's mean Dice on them, when the plugin says.
    pub last_validation_dice: ROption<f64>,
    /// How many checkpoints were scored, when the plugin says.
    pub evaluations: ROption<u32>,
}

impl StageReport {
    /// Adds a metric.
    pub fn push(&mut self, name: &str, value: f64) {
        self.metrics.push(NamedValue {
            name: name.into(),
            value,
        });
    }
}

/// Labels every axial slice of a volume "tumor / no tumor" with a confidence.
#[sabi_trait]
pub trait PseudoLabeler: Send {
    /// Labels the slices of one case.
    fn label_slices(&mut self, case: &CaseInput) -> RResult<SlicePseudoLabels, PluginError>;
}

/// Learns from slice labels and localises the tumor (activation maps, ROIs).
#[sabi_trait]
pub trait RoiExtractor: Send {
    /// Trains on the labelled cases (the kept slices).
    fn fit(&mut self, cases: RSlice<'_, LabelledCase>) -> RResult<StageReport, PluginError>;
    /// Activation maps and ROIs of one case, every round.
    fn extract(
        &mut self,
        case: &CaseInput,
        labels: &SlicePseudoLabels,
    ) -> RResult<RoiResult, PluginError>;
}

/// Turns an ROI into box and point prompts per slice.
#[sabi_trait]
pub trait PromptGenerator: Send {
    /// Prompts for every slice of `case` where `roi` is non-empty.
    fn prompts(&mut self, case: &CaseInput, roi: &LabelVolume)
        -> RResult<CasePrompts, PluginError>;
}

/// Segments an object on a 2D slice from prompts (SAM and its alternatives).
#[sabi_trait]
pub trait PromptableSegmenter: Send {
    /// One mask per prompt set, all on the same slice (so an image
    /// embedding can be computed once and reused).
    fn segment(
        &mut self,
        slice: &SliceImage,
        prompts: RSlice<'_, PromptSet>,
    ) -> RResult<RVec<Mask2d>, PluginError>;
}

/// Segments an object through a whole volume from prompts on some of its
/// slices, the prompted slices guiding the others (SAM 2's propagation).
/// It fills the pipeline's promptable-segmenter slot like a
/// [`PromptableSegmenter`]; the host gives it each case once (added in
/// SDK 0.4.0).
#[sabi_trait]
pub trait VolumePromptableSegmenter: Send {
    /// A binary volume on the case's grid from all of its prompt sets
    /// (ordered by slice; at most one per slice is expected).
    fn segment_volume(
        &mut self,
        case: &CaseInput,
        prompts: &CasePrompts,
    ) -> RResult<LabelVolume, PluginError>;
}

/// A trainable volumetric segmenter (the 3D network).
#[sabi_trait]
pub trait VolumetricSegmenter: Send {
    /// Trains from scratch (or resumes from its work dir) on the cases.
    fn train(&mut self, cases: RSlice<'_, TrainingCase>) -> RResult<StageReport, PluginError>;
    /// Binary segmentation of one case on its grid.
    fn predict(&mut self, case: &CaseInput) -> RResult<LabelVolume, PluginError>;
    /// Saves the trained model to `path`.
    fn save(&self, path: RStr<'_>) -> RResult<(), PluginError>;
    /// Loads a model saved by [`VolumetricSegmenter::save`].
    fn load(&mut self, path: RStr<'_>) -> RResult<(), PluginError>;
    /// Trains like [`VolumetricSegmenter::train`] and may use `validation`
    /// to choose which of its checkpoints to keep (model selection). A
    /// plugin that chooses says so in its report's
    /// [`StageReport::selection`]; the default ignores `validation` and
    /// keeps the last checkpoint, which the host then reports.
    fn train_with_validation(
        &mut self,
        cases: RSlice<'_, TrainingCase>,
        validation: RSlice<'_, ValidationCase>,
    ) -> RResult<StageReport, PluginError> {
        let _ = validation;
        self.train(cases)
    }
    /// Foreground probability of every voxel of one case on its grid,
    /// after the plugin's own post-processing (a voxel it would drop gets
    /// a probability of at most one half), so that
    /// [`ProbabilityVolume::labels`] equals [`VolumetricSegmenter::predict`].
    /// The host predicts test cases, `clisc infer` and the DICOM node's
    /// studies with it and brings the probabilities, not the labels, back
    /// from the working grid to the input grid. The default is `predict`
    /// as probabilities 0 and 1 (added in SDK 0.3.0).
    fn predict_probability(&mut self, case: &CaseInput) -> RResult<ProbabilityVolume, PluginError> {
        self.predict(case)
            .map(|labels| ProbabilityVolume::from_labels(&labels))
    }
}

/// Scores pseudo-labels and chooses which cases to keep.
#[sabi_trait]
pub trait Filter: Send {
    /// One decision per candidate, in the same order.
    fn select(
        &mut self,
        candidates: RSlice<'_, FilterCandidate>,
    ) -> RResult<RVec<FilterDecision>, PluginError>;
}

/// Boxed pseudo-labeler.
pub type PseudoLabelerBox = PseudoLabeler_TO<'static, RBox<()>>;
/// Boxed ROI extractor.
pub type RoiExtractorBox = RoiExtractor_TO<'static, RBox<()>>;
/// Boxed prompt generator.
pub type PromptGeneratorBox = PromptGenerator_TO<'static, RBox<()>>;
/// Boxed promptable segmenter.
pub type PromptableSegmenterBox = PromptableSegmenter_TO<'static, RBox<()>>;
/// Boxed volume promptable segmenter.
pub type VolumePromptableSegmenterBox = VolumePromptableSegmenter_TO<'static, RBox<()>>;
/// Boxed volumetric segmenter.
pub type VolumetricSegmenterBox = VolumetricSegmenter_TO<'static, RBox<()>>;
/// Boxed filter.
pub type FilterBox = Filter_TO<'static, RBox<()>>;

/// What a plugin constructor returns: one stage of one kind.
#[repr(u8)]
#[derive(StableAbi)]
pub enum StageObject {
    /// A pseudo-labeler.
    PseudoLabeler(PseudoLabelerBox),
    /// An ROI extractor.
    RoiExtractor(RoiExtractorBox),
    /// A prompt generator.
    PromptGenerator(PromptGeneratorBox),
    /// A promptable 2D segmenter.
    PromptableSegmenter(PromptableSegmenterBox),
    /// A promptable segmenter of whole volumes (kind
    /// `PromptableSegmenter`; added in SDK 0.4.0).
    VolumePromptableSegmenter(VolumePromptableSegmenterBox),
    /// A volumetric segmenter.
    VolumetricSegmenter(VolumetricSegmenterBox),
    /// A filter.
    Filter(FilterBox),
}

impl StageObject {
    /// The stage kind held.
    pub fn kind(&self) -> crate::plugin::StageKind {
        use crate::plugin::StageKind as K;
        match self {
            StageObject::PseudoLabeler(_) => K::PseudoLabeler,
            StageObject::RoiExtractor(_) => K::RoiExtractor,
            StageObject::PromptGenerator(_) => K::PromptGenerator,
            StageObject::PromptableSegmenter(_) | StageObject::VolumePromptableSegmenter(_) => {
                K::PromptableSegmenter
            }
            StageObject::VolumetricSegmenter(_) => K::VolumetricSegmenter,
            StageObject::Filter(_) => K::Filter,
        }
    }
    /// Wraps a pseudo-labeler (panics are caught on the plugin side).
    pub fn pseudo_labeler<T: PseudoLabeler + 'static>(stage: T) -> Self {
        Self::PseudoLabeler(PseudoLabeler_TO::from_value(Guarded(stage), TD_Opaque))
    }
    /// Wraps an ROI extractor.
    pub fn roi_extractor<T: RoiExtractor + 'static>(stage: T) -> Self {
        Self::RoiExtractor(RoiExtractor_TO::from_value(Guarded(stage), TD_Opaque))
    }
    /// Wraps a prompt generator.
    pub fn prompt_generator<T: PromptGenerator + 'static>(stage: T) -> Self {
        Self::PromptGenerator(PromptGenerator_TO::from_value(Guarded(stage), TD_Opaque))
    }
    /// Wraps a promptable segmenter.
    pub fn promptable_segmenter<T: PromptableSegmenter + 'static>(stage: T) -> Self {
        Self::PromptableSegmenter(PromptableSegmenter_TO::from_value(
            Guarded(stage),
            TD_Opaque,
        ))
    }
    /// Wraps a volume promptable segmenter.
    pub fn volume_promptable_segmenter<T: VolumePromptableSegmenter + 'static>(stage: T) -> Self {
        Self::VolumePromptableSegmenter(VolumePromptableSegmenter_TO::from_value(
            Guarded(stage),
            TD_Opaque,
        ))
    }
    /// Wraps a volumetric segmenter.
    pub fn volumetric_segmenter<T: VolumetricSegmenter + 'static>(stage: T) -> Self {
        Self::VolumetricSegmenter(VolumetricSegmenter_TO::from_value(
            Guarded(stage),
            TD_Opaque,
        ))
    }
    /// Wraps a filter.
    pub fn filter<T: Filter + 'static>(stage: T) -> Self {
        Self::Filter(Filter_TO::from_value(Guarded(stage), TD_Opaque))
    }
}

/// Runs `f` and turns a panic into a [`PluginError`].
pub fn guard<R>(f: impl FnOnce() -> RResult<R, PluginError>) -> RResult<R, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => RResult::RErr(panic_to_error(payload)),
    }
}

/// Forwards every call to the wrapped stage under [`guard`].
struct Guarded<T>(T);

impl<T: PseudoLabeler> PseudoLabeler for Guarded<T> {
    fn label_slices(&mut self, case: &CaseInput) -> RResult<SlicePseudoLabels, PluginError> {
        guard(|| self.0.label_slices(case))
    }
}

impl<T: RoiExtractor> RoiExtractor for Guarded<T> {
    fn fit(&mut self, cases: RSlice<'_, LabelledCase>) -> RResult<StageReport, PluginError> {
        guard(|| self.0.fit(cases))
    }
    fn extract(
        &mut self,
        case: &CaseInput,
        labels: &SlicePseudoLabels,
    ) -> RResult<RoiResult, PluginError> {
        guard(|| self.0.extract(case, labels))
    }
}

impl<T: PromptGenerator> PromptGenerator for Guarded<T> {
    fn prompts(
        &mut self,
        case: &CaseInput,
        roi: &LabelVolume,
    ) -> RResult<CasePrompts, PluginError> {
        guard(|| self.0.prompts(case, roi))
    }
}

impl<T: PromptableSegmenter> PromptableSegmenter for Guarded<T> {
    fn segment(
        &mut self,
        slice: &SliceImage,
        prompts: RSlice<'_, PromptSet>,
    ) -> RResult<RVec<Mask2d>, PluginError> {
        guard(|| self.0.segment(slice, prompts))
    }
}

impl<T: VolumePromptableSegmenter> VolumePromptableSegmenter for Guarded<T> {
    fn segment_volume(
        &mut self,
        case: &CaseInput,
        prompts: &CasePrompts,
    ) -> RResult<LabelVolume, PluginError> {
        guard(|| self.0.segment_volume(case, prompts))
    }
}

impl<T: VolumetricSegmenter> VolumetricSegmenter for Guarded<T> {
    fn train(&mut self, cases: RSlice<'_, TrainingCase>) -> RResult<StageReport, PluginError> {
        guard(|| self.0.train(cases))
    }
    fn train_with_validation(
        &mut self,
        cases: RSlice<'_, TrainingCase>,
        validation: RSlice<'_, ValidationCase>,
    ) -> RResult<StageReport, PluginError> {
        guard(|| self.0.train_with_validation(cases, validation))
    }
    fn predict(&mut self, case: &CaseInput) -> RResult<LabelVolume, PluginError> {
        guard(|| self.0.predict(case))
    }
    fn predict_probability(&mut self, case: &CaseInput) -> RResult<ProbabilityVolume, PluginError> {
        guard(|| self.0.predict_probability(case))
    }
    fn save(&self, path: RStr<'_>) -> RResult<(), PluginError> {
        guard(|| self.0.save(path))
    }
    fn load(&mut self, path: RStr<'_>) -> RResult<(), PluginError> {
        guard(|| self.0.load(path))
    }
}

impl<T: Filter> Filter for Guarded<T> {
    fn select(
        &mut self,
        candidates: RSlice<'_, FilterCandidate>,
    ) -> RResult<RVec<FilterDecision>, PluginError> {
        guard(|| self.0.select(candidates))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Grid;

    struct Explodes;
    impl PseudoLabeler for Explodes {
        fn label_slices(&mut self, _: &CaseInput) -> RResult<SlicePseudoLabels, PluginError> {
            panic!("boom at slice 3")
        }
    }

    #[test]
    fn panics_become_errors() {
        let grid = Grid::new([1, 1, 1], [1.0; 3]);
        let case = CaseInput {
            id: "c".into(),
            image: Volume::single(grid, "flair", vec![0.0]),
            brain_mask: LabelVolume::zeros(grid),
        };
        let StageObject::PseudoLabeler(mut stage) = StageObject::pseudo_labeler(Explodes) else {
            panic!("wrong kind")
        };
        let err = stage.label_slices(&case).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Panicked);
        assert!(err.message.contains("boom at slice 3"));
    }

    /// Labels every voxel above 0.5, and has no probabilities of its own.
    struct Thresholds;
    impl VolumetricSegmenter for Thresholds {
        fn train(&mut self, _: RSlice<'_, TrainingCase>) -> RResult<StageReport, PluginError> {
            RResult::ROk(StageReport::default())
        }
        fn predict(&mut self, case: &CaseInput) -> RResult<LabelVolume, PluginError> {
            let flair = &case.image.channels[0].data;
            RResult::ROk(LabelVolume {
                grid: case.image.grid,
                data: flair.iter().map(|&v| u8::from(v > 0.5)).collect(),
            })
        }
        fn save(&self, _: RStr<'_>) -> RResult<(), PluginError> {
            RResult::ROk(())
        }
        fn load(&mut self, _: RStr<'_>) -> RResult<(), PluginError> {
            RResult::ROk(())
        }
    }

    #[test]
    fn a_segmenter_without_probabilities_gives_its_labels_as_0_and_1() {
        let grid = Grid::new([3, 1, 1], [1.0; 3]);
        let case = CaseInput {
            id: "c".into(),
            image: Volume::single(grid, "flair", vec![0.2, 0.7, 0.9]),
            brain_mask: LabelVolume::zeros(grid),
        };
        let StageObject::VolumetricSegmenter(mut stage) =
            StageObject::volumetric_segmenter(Thresholds)
        else {
            panic!("wrong kind")
        };
        let p = stage.predict_probability(&case).unwrap();
        assert_eq!(p.grid, grid);
        assert_eq!(p.data.as_slice(), &[0.0, 1.0, 1.0]);
        assert_eq!(p.labels(), stage.predict(&case).unwrap());
    }
}
