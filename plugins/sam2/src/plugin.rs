//! The `sam2` promptable segmenter: SAM 2 / SAM 2.1 or MedSAM2 on a
//! case's axial slices, either slice by slice like `sam` (the official
//! image predictor) or, with `propagate = true`, through the whole volume
//! from its prompted slices (the official video predictor, the slices as
//! frames).
//!
//! Slices become 8-bit images as for `sam` (`preprocess = "clisc"`: min-max
//! to 8 bits and histogram equalisation; `"minmax"`: no equalisation),
//! grey replicated to RGB, then go through SAM 2's own transform.

use crate::predictor::Sam2Predictor;
use crate::propagation::{Frames, Propagation};
use crate::transforms::{input_tensor, Prompt};
use crate::Sam2;
use abi_stable::std_types::{RResult, RSlice, RVec};
use clisc_sdk::config::Settings;
use clisc_sdk::stage::{CaseInput, PromptableSegmenter, SliceImage, VolumePromptableSegmenter};
use clisc_sdk::{
    plugin_settings, CasePrompts, ConfigField, HostContext, Image2d, LabelVolume, Mask2d, Plugin,
    PluginError, PromptSet, StageKind, StageObject,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::Tensor;

/// Plugin registration of the `sam2` stage.
pub struct Sam2Plugin;

impl Plugin for Sam2Plugin {
    const NAME: &'static str = "sam2";
    const KIND: StageKind = StageKind::PromptableSegmenter;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "SAM 2 / SAM 2.1 or MedSAM2 (official checkpoints) per slice, or propagated through the volume from the prompted slices (propagate = true)";

    fn settings() -> Vec<ConfigField> {
        Sam2Settings::schema()
    }

    fn create(settings: Settings, ctx: &HostContext) -> Result<StageObject, PluginError> {
        let s = Sam2Settings::read(&settings)?;
        let device = clisc_nn::resolve_device(ctx.device.as_str())?;
        if ctx.threads > 0 {
            tch::set_num_threads(ctx.threads as i32);
        }
        let image_size = match s.image_size {
            0 => None,
            n => Some(n),
        };
        let (propagate, multimask) = (s.propagate, s.multimask);
        if propagate && multimask {
            return Err(PluginError::config(
                "sam2: `multimask` applies to per-slice segmentation; with `propagate = true` the video predictor's own rule decides (leave `multimask` out)",
            )
            .about_setting("multimask"));
        }
        let max_conditioning = match s.max_conditioning_frames {
            0 => None,
            1 => {
                return Err(PluginError::config(
                    "sam2: max_conditioning_frames = 1: expected 0 (all) or at least 2 (the nearest prompted slices before and after a tracked slice); for one prompted slice use conditioning = \"largest-box\"",
                )
                .about_setting("max_conditioning_frames"))
            }
            n => Some(n),
        };
        let model = Sam2::load(&s.weights, image_size, device)?;
        ctx.progress.log(
            format!(
                "sam2: loaded {} ({}) on {:?}",
                s.weights.display(),
                model.config.variant(),
                device
            )
            .as_str()
            .into(),
        );
        let stage = Sam2Segmenter {
            predictor: Sam2Predictor { model },
            equalize: s.preprocess == SlicePreparation::Equalized,
            multimask,
            largest_box_only: s.conditioning == Conditioning::LargestBox,
            max_conditioning,
            fill_hole_area: s.fill_hole_area,
        };
        Ok(if propagate {
            StageObject::volume_promptable_segmenter(stage)
        } else {
            StageObject::promptable_segmenter(stage)
        })
    }
}

clisc_sdk::setting_choice! {
    /// How a slice becomes the model's 8-bit image (`preprocess`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum SlicePreparation {
        /// Min-max to 8 bits and histogram equalisation (the paper's, as `sam`).
        Equalized = "clisc",
        /// Min-max to 8 bits only.
        MinMax = "minmax",
    }
}

clisc_sdk::setting_choice! {
    /// Which prompted slices condition a propagation (`conditioning`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Conditioning {
        /// Every prompted slice.
        All = "all",
        /// Only the slice whose box is largest.
        LargestBox = "largest-box",
    }
}

plugin_settings! {
    /// The settings of `sam2`, each declared once.
    struct Sam2Settings {
        /// SAM 2 checkpoint as downloaded: sam2.1_hiera_{tiny,small,base_plus,large}.pt,
        /// sam2_hiera_*.pt or MedSAM2_latest.pt (or a .safetensors export)
        weights: PathBuf = weights_file(
            "Meta's SAM 2.1 release (Hiera tiny; small, base_plus and large alongside): https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
        ),
        /// side of the model input in pixels; 0 = the checkpoint's official size: 512 for MedSAM2
        /// (recognised by its two memory-attention layers), 1024 for Meta's
        image_size: i64 = integer(0),
        /// clisc: min-max to 8 bits and histogram equalisation (the paper's slice preparation for
        /// SAM); minmax: min-max to 8 bits only
        preprocess: SlicePreparation = choice(SlicePreparation::Equalized.name(), SlicePreparation::NAMES),
        /// segment the whole volume: the prompted slices are conditioning frames and the masks
        /// propagate to every other slice (SAM 2's video predictor)
        propagate: bool = bool(false),
        /// with propagate: condition on every prompted slice, or only on the slice whose box is
        /// largest
        conditioning: Conditioning = choice(Conditioning::All.name(), Conditioning::NAMES),
        /// with propagate and conditioning = "all": a tracked slice attends to at most this many
        /// prompted slices, the nearest (0 = all, the official default; at least 2 otherwise)
        max_conditioning_frames: usize = integer(0),
        /// per-slice mode only: predict 3 masks per prompt set and keep the one with the best
        /// predicted IoU (propagation decides as the official video predictor does)
        multimask: bool = bool(false),
        /// with propagate: holes of up to this many pixels of the low-resolution masks are filled
        /// (the official video predictor's 8; 0 = off)
        fill_hole_area: usize = integer(crate::propagation::FILL_HOLE_AREA as i64),
    }
}

/// The `sam2` stage.
pub struct Sam2Segmenter {
    predictor: Sam2Predictor,
    equalize: bool,
    multimask: bool,
    largest_box_only: bool,
    max_conditioning: Option<usize>,
    fill_hole_area: usize,
}

impl Sam2Segmenter {
    /// A slice as 8-bit RGB (interleaved): `sam`'s slice preparation, with
    /// or without histogram equalisation.
    fn rgb(&self, image: &Image2d) -> Result<Vec<u8>, PluginError> {
        if self.equalize {
            clisc_sam::slice_to_rgb(image)
        } else {
            let grey = clisc_sam::slice_to_grey(image)?;
            Ok(grey.iter().flat_map(|&g| [g, g, g]).collect())
        }
    }

    /// One mask per prompt set on one slice (empty sets give empty masks).
    fn segment_slice(
        &self,
        slice: &SliceImage,
        sets: &[PromptSet],
    ) -> Result<Vec<Mask2d>, PluginError> {
        let (w, h) = (slice.image.width, slice.image.height);
        let mut masks: Vec<Mask2d> = sets.iter().map(|_| Mask2d::zeros(w, h)).collect();
        if sets.iter().all(|s| to_prompt(s).num_points() == 0) {
            return Ok(masks);
        }
        let rgb = self.rgb(&slice.image)?;
        let embedding = self.predictor.embed(&rgb, w as usize, h as usize)?;
        for (mask, set) in masks.iter_mut().zip(sets) {
            let prompt = to_prompt(set);
            if prompt.num_points() == 0 {
                continue;
            }
            let out = self
                .predictor
                .predict(&embedding, &prompt, self.multimask)?;
            let best = out.iou.argmax(0, false).int64_value(&[]);
            mask.data = binary(&out.logits.get(best));
        }
        Ok(masks)
    }

    /// The whole case from its prompted slices.
    fn segment_case(
        &self,
        case: &CaseInput,
        prompts: &CasePrompts,
    ) -> Result<LabelVolume, PluginError> {
        let grid = case.image.grid;
        let mut volume = LabelVolume::zeros(grid);
        let mut conditioning = prompts_by_slice(prompts.sets.as_slice());
        if self.largest_box_only {
            conditioning = largest_box(conditioning);
            if conditioning.iter().any(|(_, p)| p.bbox.is_none()) {
                return Err(PluginError::config(format!(
                    "sam2: conditioning = \"largest-box\" but no prompt set of case {} has a box",
                    case.id
                ))
                .about_setting("conditioning"));
            }
        }
        if conditioning.is_empty() {
            return Ok(volume);
        }
        let slices = (0..grid.shape[2] as usize)
            .map(|z| self.rgb(&case.image.axial_slice("flair", z)?))
            .collect::<Result<Vec<_>, PluginError>>()?;
        let frames = CaseFrames {
            slices,
            hw: (grid.shape[1] as usize, grid.shape[0] as usize),
            size: self.predictor.model.image_size(),
        };
        let propagated = Propagation::new(&self.predictor.model, &frames)
            .with_fill_hole_area(self.fill_hole_area)
            .with_max_conditioning_frames(self.max_conditioning)
            .run(&conditioning)?;
        for (z, logits) in propagated.logits.iter().enumerate() {
            let mask = Mask2d {
                width: grid.shape[0],
                height: grid.shape[1],
                data: binary(logits),
            };
            volume.set_axial_slice(z, &mask)?;
        }
        Ok(volume)
    }
}

/// `logits > 0` as 0 / 1 bytes, row-major.
fn binary(logits: &Tensor) -> RVec<u8> {
    let bytes = Vec::<u8>::try_from(
        logits
            .gt(0.0)
            .to_kind(tch::Kind::Uint8)
            .contiguous()
            .view([-1]),
    )
    .expect("u8 mask");
    RVec::from(bytes)
}

/// An SDK prompt set as SAM 2 takes it (x = column, y = row).
fn to_prompt(set: &PromptSet) -> Prompt {
    Prompt {
        points: set
            .points
            .iter()
            .map(|p| [p.x as f64, p.y as f64])
            .collect(),
        labels: set.points.iter().map(|p| i64::from(p.positive)).collect(),
        bbox: set
            .bbox
            .as_ref()
            .map(|b| [b.x0 as f64, b.y0 as f64, b.x1 as f64, b.y1 as f64])
            .into_option(),
    }
}

/// One prompt per prompted slice, in slice order. Propagation tracks one
/// object, so several sets on one slice are merged into it (the box around
/// their boxes, all their points); prompts for separate objects (e.g.
/// `box-points` with `per_component`) become one object spanning them.
fn prompts_by_slice(sets: &[PromptSet]) -> Vec<(usize, Prompt)> {
    let mut by_slice: BTreeMap<usize, Prompt> = BTreeMap::new();
    for set in sets {
        let p = to_prompt(set);
        if p.num_points() == 0 {
            continue;
        }
        let merged = by_slice.entry(set.slice as usize).or_default();
        merged.points.extend(p.points);
        merged.labels.extend(p.labels);
        merged.bbox = match (merged.bbox, p.bbox) {
            (Some(a), Some(b)) => Some([
                a[0].min(b[0]),
                a[1].min(b[1]),
                a[2].max(b[2]),
                a[3].max(b[3]),
            ]),
            (a, b) => a.or(b),
        };
    }
    by_slice.into_iter().collect()
}

/// The prompt whose box is largest (ties: the first slice).
fn largest_box(prompts: Vec<(usize, Prompt)>) -> Vec<(usize, Prompt)> {
    let area = |p: &Prompt| {
        p.bbox
            .map_or(0.0, |b| (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0))
    };
    let mut best: Option<(usize, Prompt)> = None;
    for (z, p) in prompts {
        let larger = match &best {
            Some((_, b)) => area(&p) > area(b),
            None => true,
        };
        if larger {
            best = Some((z, p));
        }
    }
    best.into_iter().collect()
}

/// A case's axial slices, as 8-bit RGB, as SAM 2's frames.
struct CaseFrames {
    slices: Vec<Vec<u8>>,
    hw: (usize, usize),
    size: i64,
}

impl Frames for CaseFrames {
    fn frame_count(&self) -> usize {
        self.slices.len()
    }

    fn input(&self, k: usize) -> Result<Tensor, PluginError> {
        input_tensor(&self.slices[k], self.hw.1, self.hw.0, self.size)
    }

    fn frame_hw(&self) -> (usize, usize) {
        self.hw
    }
}

impl PromptableSegmenter for Sam2Segmenter {
    fn segment(
        &mut self,
        slice: &SliceImage,
        prompts: RSlice<'_, PromptSet>,
    ) -> RResult<RVec<Mask2d>, PluginError> {
        self.segment_slice(slice, prompts.as_slice())
            .map(RVec::from)
            .into()
    }
}

impl VolumePromptableSegmenter for Sam2Segmenter {
    fn segment_volume(
        &mut self,
        case: &CaseInput,
        prompts: &CasePrompts,
    ) -> RResult<LabelVolume, PluginError> {
        self.segment_case(case, prompts).into()
    }
}

clisc_sdk::register_builtin!(Sam2Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::ROption;
    use clisc_sdk::{BoxXyxy, PromptPoint};

    fn set(slice: u32, bbox: Option<[f32; 4]>, points: &[(f32, f32, bool)]) -> PromptSet {
        PromptSet {
            slice,
            bbox: match bbox {
                Some([x0, y0, x1, y1]) => ROption::RSome(BoxXyxy { x0, y0, x1, y1 }),
                None => ROption::RNone,
            },
            points: points
                .iter()
                .map(|&(x, y, positive)| PromptPoint { x, y, positive })
                .collect::<Vec<_>>()
                .into(),
        }
    }

    #[test]
    fn prompt_sets_of_one_slice_merge_and_empty_ones_drop() {
        let sets = [
            set(4, Some([10.0, 10.0, 20.0, 20.0]), &[(15.0, 15.0, true)]),
            set(2, None, &[]),
            set(4, Some([5.0, 12.0, 18.0, 30.0]), &[(1.0, 1.0, false)]),
            set(7, None, &[(3.0, 4.0, true)]),
        ];
        let merged = prompts_by_slice(&sets);
        let slices: Vec<usize> = merged.iter().map(|(z, _)| *z).collect();
        assert_eq!(slices, vec![4, 7]);
        let four = &merged[0].1;
        assert_eq!(four.bbox, Some([5.0, 10.0, 20.0, 30.0]));
        assert_eq!(four.points, vec![[15.0, 15.0], [1.0, 1.0]]);
        assert_eq!(four.labels, vec![1, 0]);
        let largest = largest_box(merged);
        assert_eq!(largest.len(), 1);
        assert_eq!(largest[0].0, 4);
    }
}
