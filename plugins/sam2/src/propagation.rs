//! Propagation of prompted slices through a volume with the semantics of
//! SAM 2's video predictor (`SAM2VideoPredictor`, as built by
//! `build_sam2_video_predictor`), for one object: the axial slices are the
//! frames; each prompted slice is a conditioning frame, segmented from its
//! prompts alone; then masks are tracked forward from the first prompted
//! slice to the last slice and backward from it to the first, every frame
//! attending to the conditioning frames (memories and object pointers), to
//! the memories of the six frames before it in the direction of travel, and
//! to the object pointers of up to 15 frames before it.
//!
//! Details kept from the official code: conditioning frames are encoded
//! into memory from their (hole-filled) low-resolution mask upsampled and
//! binarised (here right after they are segmented, while their features
//! are at hand; the official code re-encodes the image when propagation
//! starts, with the same result for one object); tracked frames from their
//! sigmoid mask; memories are stored in bfloat16; object pointers of conditioning frames are only used by
//! frames after them in the direction of travel; holes of up to
//! `fill_hole_area` pixels are filled in every stored mask.

use crate::config::{HIDDEN_DIM, MAX_OBJ_PTRS, MEM_DIM};
use crate::holes::fill_holes;
use crate::image_encoder::BackboneFeatures;
use crate::memory_encoder::Memory;
use crate::model::Sam2;
use crate::transforms::Prompt;
use clisc_sdk::PluginError;
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// The official video predictor's hole filling (`fill_hole_area=8`).
pub(crate) const FILL_HOLE_AREA: usize = 8;

/// Frames by index, in a given order.
type Frameset<'a> = Vec<(usize, &'a FrameState)>;

/// What is kept of a segmented frame.
#[derive(Debug)]
struct FrameState {
    /// Memory features (rounded to bfloat16) and position encoding.
    memory: Memory,
    /// Low-resolution logits `(1, 1, S/4, S/4)` after hole filling.
    pred_masks: Tensor,
    obj_ptr: Tensor,
}

/// A volume's frames: the model input of frame `k` `(1, 3, S, S)`.
pub trait Frames {
    /// Number of frames.
    fn frame_count(&self) -> usize;
    /// The normalised model input of frame `k` (see
    /// [`crate::transforms::input_tensor`]).
    fn input(&self, k: usize) -> Result<Tensor, PluginError>;
    /// Height and width of the original frames.
    fn frame_hw(&self) -> (usize, usize);
}

/// The masks of every frame, as logits at the frames' size `(h, w)`.
#[derive(Debug)]
pub struct PropagatedMasks {
    /// Per frame, the last logits the predictor yielded for it
    /// (conditioning frames: their own; others: forward or backward
    /// tracking).
    pub logits: Vec<Tensor>,
    /// The frames in the order they were produced, with their logits:
    /// conditioning frames, the forward pass, the backward pass.
    pub sequence: Vec<(Pass, usize, Tensor)>,
}

/// Which step produced a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// A prompted frame (`add_new_points_or_box`).
    Prompted,
    /// `propagate_in_video` forward.
    Forward,
    /// `propagate_in_video(reverse=True)`.
    Backward,
}

/// One object tracked through one volume.
pub struct Propagation<'a, F: Frames> {
    model: &'a Sam2,
    frames: &'a F,
    fill_hole_area: usize,
    /// Conditioning frames a tracked frame attends to at most (`None`: all).
    max_conditioning: Option<usize>,
    /// Conditioning frames in the order they were prompted.
    cond: Vec<(usize, FrameState)>,
    non_cond: BTreeMap<usize, FrameState>,
    /// The last frame's features (the official predictor caches one).
    cached: Option<(usize, BackboneFeatures)>,
}

impl<'a, F: Frames> Propagation<'a, F> {
    /// A propagation with the official hole filling.
    pub fn new(model: &'a Sam2, frames: &'a F) -> Self {
        Self {
            model,
            frames,
            fill_hole_area: FILL_HOLE_AREA,
            max_conditioning: None,
            cond: vec![],
            non_cond: BTreeMap::new(),
            cached: None,
        }
    }

    /// Lets a tracked frame attend to at most `n` (>= 2) conditioning
    /// frames, the nearest (`max_cond_frames_in_attn`, official default:
    /// all); the others count as tracked frames for it.
    pub fn with_max_conditioning_frames(mut self, n: Option<usize>) -> Self {
        self.max_conditioning = n;
        self
    }

    /// Fills holes of up to `area` low-resolution pixels (0: none) instead
    /// of the official 8.
    pub(crate) fn with_fill_hole_area(mut self, area: usize) -> Self {
        self.fill_hole_area = area;
        self
    }

    /// Runs the whole predictor: every prompt (frame index, prompt), then
    /// forward and backward tracking from the first prompted frame.
    pub fn run(mut self, prompts: &[(usize, Prompt)]) -> Result<PropagatedMasks, PluginError> {
        let _guard = tch::no_grad_guard();
        let n = self.frames.frame_count();
        let mut logits: Vec<Option<Tensor>> = (0..n).map(|_| None).collect();
        let mut sequence = vec![];
        for (k, prompt) in prompts {
            if *k >= n {
                return Err(PluginError::input(format!(
                    "sam2: prompt on slice {k}, the volume has {n} slices"
                )));
            }
            if self.cond.iter().any(|(c, _)| c == k) {
                return Err(PluginError::input(format!(
                    "sam2: two prompt sets on slice {k}; propagation takes one per slice"
                )));
            }
            let state = self.segment_prompted(*k, prompt)?;
            let out = self.video_res(&state.pred_masks);
            logits[*k] = Some(out.shallow_clone());
            sequence.push((Pass::Prompted, *k, out));
            self.cond.push((*k, state));
        }
        let Some(start) = self.cond.iter().map(|(k, _)| *k).min() else {
            return Err(PluginError::input(
                "sam2: propagation needs at least one prompted slice",
            ));
        };
        // Backward tracking from slice 0 does nothing (as the official code).
        let backward: Vec<usize> = if start > 0 {
            (0..=start).rev().collect()
        } else {
            vec![]
        };
        for (pass, order) in [
            (Pass::Forward, (start..n).collect()),
            (Pass::Backward, backward),
        ] {
            for k in order {
                let out = self.track(k, pass == Pass::Backward)?;
                logits[k] = Some(out.shallow_clone());
                sequence.push((pass, k, out));
            }
        }
        Ok(PropagatedMasks {
            logits: logits
                .into_iter()
                .map(|t| t.expect("every frame"))
                .collect(),
            sequence,
        })
    }

    /// Features of frame `k` (recomputed unless it was the last one).
    fn features(&mut self, k: usize) -> Result<&BackboneFeatures, PluginError> {
        if self.cached.as_ref().map(|(c, _)| *c) != Some(k) {
            let input = self.frames.input(k)?.to_device(self.model.device());
            self.cached = Some((k, self.model.forward_image(&input)));
        }
        Ok(&self.cached.as_ref().expect("cached").1)
    }

    /// Logits at the frames' size.
    fn video_res(&self, pred_masks: &Tensor) -> Tensor {
        let (h, w) = self.frames.frame_hw();
        pred_masks
            .upsample_bilinear2d([h as i64, w as i64], false, None, None)
            .view([h as i64, w as i64])
    }

    /// A prompted frame on its own (`add_new_points_or_box` on a frame not
    /// tracked yet): no memory, multimask output only for a single click;
    /// then its memory from the stored mask, upsampled and binarised
    /// (`propagate_in_video_preflight`).
    fn segment_prompted(&mut self, k: usize, prompt: &Prompt) -> Result<FrameState, PluginError> {
        if prompt.num_points() == 0 {
            return Err(PluginError::input(format!(
                "sam2: the prompt set on slice {k} has neither points nor a box"
            )));
        }
        let model = self.model;
        let device = model.device();
        let (coords, labels) = prompt.to_model_frame(self.frames.frame_hw(), model.image_size())?;
        let (coords, labels) = (coords.to_device(device), labels.to_device(device));
        let multimask = prompt.num_points() <= 1;
        let fill = self.fill_hole_area;
        let feats = self.features(k)?;
        let pix_feat = model.without_memory(&feats.vision);
        let heads = model.sam_heads(
            &pix_feat,
            &feats.high_res,
            Some((&coords, &labels)),
            multimask,
        );
        let pred_masks = fill_holes(&heads.low_res, fill);
        let s = model.image_size();
        let upsampled = pred_masks.upsample_bilinear2d([s, s], false, None, None);
        let memory =
            model.encode_memory(&feats.vision, &upsampled, &heads.object_score_logits, true);
        Ok(FrameState {
            memory: stored(memory),
            pred_masks,
            obj_ptr: heads.obj_ptr,
        })
    }

    /// Tracks frame `k` (or returns a conditioning frame's own mask).
    fn track(&mut self, k: usize, reverse: bool) -> Result<Tensor, PluginError> {
        if let Some((_, state)) = self.cond.iter().find(|(c, _)| *c == k) {
            return Ok(self.video_res(&state.pred_masks));
        }
        let model = self.model;
        let (memory, memory_pos, num_ptr_tokens) = self.memory_bank(k, reverse);
        let fill = self.fill_hole_area;
        let feats = self.features(k)?;
        let pix_feat = model.attend_memory(
            &feats.vision,
            &feats.vision_pos,
            &memory,
            &memory_pos,
            num_ptr_tokens,
        );
        // No points on a tracked frame: multimask output, best by IoU.
        let heads = model.sam_heads(&pix_feat, &feats.high_res, None, true);
        let memory = model.encode_memory(
            &feats.vision,
            &heads.high_res,
            &heads.object_score_logits,
            false,
        );
        let state = FrameState {
            memory: stored(memory),
            pred_masks: fill_holes(&heads.low_res, fill),
            obj_ptr: heads.obj_ptr,
        };
        let out = self.video_res(&state.pred_masks);
        self.non_cond.insert(k, state);
        Ok(out)
    }

    /// The conditioning frames frame `k` attends to, and the others
    /// (`select_closest_cond_frames`): all of them without a cap, else the
    /// nearest before `k`, the nearest at or after it, then the nearest of
    /// the rest (ties in prompting order).
    fn closest_conditioning(&self, k: usize) -> (Frameset<'_>, Frameset<'_>) {
        let all: Frameset<'_> = self.cond.iter().map(|(t, s)| (*t, s)).collect();
        let Some(max) = self.max_conditioning.filter(|&m| all.len() > m) else {
            return (all, vec![]);
        };
        let before = all.iter().filter(|(t, _)| *t < k).map(|(t, _)| *t).max();
        let after = all.iter().filter(|(t, _)| *t >= k).map(|(t, _)| *t).min();
        let mut chosen: Vec<usize> = before.into_iter().chain(after).collect();
        let mut rest: Vec<usize> = all
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| !chosen.contains(t))
            .collect();
        rest.sort_by_key(|t| t.abs_diff(k));
        let remaining = max.saturating_sub(chosen.len());
        chosen.extend(rest.into_iter().take(remaining));
        let find = |t: usize| {
            all.iter()
                .find(|(c, _)| *c == t)
                .copied()
                .expect("a conditioning frame")
        };
        let selected = chosen.iter().map(|&t| find(t)).collect();
        let unselected = all
            .into_iter()
            .filter(|(t, _)| !chosen.contains(t))
            .collect();
        (selected, unselected)
    }

    /// The memory frame `k` attends to (`_prepare_memory_conditioned_features`):
    /// `(1, M, 64)` tokens, their position encodings, and how many of them
    /// (the last) are object-pointer tokens.
    fn memory_bank(&self, k: usize, reverse: bool) -> (Tensor, Tensor, i64) {
        let model = self.model;
        let num_maskmem = model.config.num_maskmem;
        let step = |d: i64| -> Option<usize> {
            let t = if reverse { k as i64 + d } else { k as i64 - d };
            (t >= 0 && (t as usize) < self.frames.frame_count()).then_some(t as usize)
        };
        let (selected, unselected) = self.closest_conditioning(k);
        // A frame's output: tracked, or conditioning but not selected.
        let earlier = |t: usize| -> Option<&FrameState> {
            self.non_cond
                .get(&t)
                .or_else(|| unselected.iter().find(|(c, _)| *c == t).map(|(_, s)| *s))
        };
        let mut tokens = vec![];
        let mut positions = vec![];
        let mut push = |state: &FrameState, t_pos: i64| {
            let memory = &state.memory;
            tokens.push(memory.features.flatten(2, 3).permute([0, 2, 1]));
            positions.push(
                memory.pos.flatten(2, 3).permute([0, 2, 1]) + model.memory_time_encoding(t_pos),
            );
        };
        for (_, state) in &selected {
            push(state, 0);
        }
        for t_pos in 1..num_maskmem {
            if let Some(state) = step(num_maskmem - t_pos).and_then(earlier) {
                push(state, t_pos);
            }
        }
        // Object pointers: conditioning frames not ahead of `k`, then the
        // tracked frames behind it, nearest first.
        let max_ptrs = (self.frames.frame_count() as i64).min(MAX_OBJ_PTRS);
        let sign = if reverse { -1 } else { 1 };
        let mut offsets = vec![];
        let mut ptrs = vec![];
        for (t, state) in &selected {
            let behind = if reverse { *t >= k } else { *t <= k };
            if behind {
                let d = (k as i64 - *t as i64) * sign;
                offsets.push(if model.signed_pointer_offsets() {
                    d
                } else {
                    d.abs()
                });
                ptrs.push(state.obj_ptr.shallow_clone());
            }
        }
        for t_diff in 1..max_ptrs {
            let Some(t) = step(t_diff) else { break };
            if let Some(state) = earlier(t) {
                offsets.push(t_diff);
                ptrs.push(state.obj_ptr.shallow_clone());
            }
        }
        let mut num_ptr_tokens = 0;
        if !ptrs.is_empty() {
            let n = ptrs.len() as i64;
            let split = HIDDEN_DIM / MEM_DIM;
            // Each 256-wide pointer becomes 4 tokens of 64.
            let ptr_tokens = Tensor::cat(&ptrs, 0).reshape([1, n * split, MEM_DIM]);
            let ptr_pos = model
                .pointer_time_encoding(&offsets, max_ptrs - 1)
                .repeat_interleave_self_int(split, Some(0), None::<i64>)
                .unsqueeze(0);
            tokens.push(ptr_tokens);
            positions.push(ptr_pos);
            num_ptr_tokens = n * split;
        }
        (
            Tensor::cat(&tokens, 1),
            Tensor::cat(&positions, 1),
            num_ptr_tokens,
        )
    }
}

/// A memory as the video predictor stores it: features in bfloat16.
fn stored(memory: Memory) -> Memory {
    Memory {
        features: memory.features.to_kind(Kind::BFloat16).to_kind(Kind::Float),
        pos: memory.pos,
    }
}
