//! Model selection: during training, score the network on held-out cases
//! every `validation_every` steps and keep the weights that scored best.
//!
//! The held-out cases and their reference labels come from the host (see
//! `VolumetricSegmenter::train_with_validation`); this module never looks
//! at where the labels came from. The best weights travel in the training
//! checkpoint, so an interrupted run resumes to the same choice.

use super::infer::predict_labels;
use super::train::Model;
use clisc_imaging::overlap::dice;
use clisc_sdk::stage::ValidationCase;
use clisc_sdk::PluginError;
use std::collections::HashMap;
use tch::Tensor;

/// Training-state key prefix of the best weights.
const BEST_PREFIX: &str = "selection.best.";
/// Training-state key of `[best step, best Dice, last Dice, evaluations]`.
const META_KEY: &str = "selection.meta";

/// One held-out case as flat arrays on its grid.
pub struct HeldOutCase {
    /// Case identifier (for messages and the data key).
    pub id: String,
    /// Size along x, y, z.
    pub dims: [usize; 3],
    /// Preprocessed FLAIR, x fastest.
    pub image: Vec<f32>,
    /// 1 inside the brain.
    pub brain: Vec<u8>,
    /// Binary reference label.
    pub target: Vec<u8>,
}

impl HeldOutCase {
    /// Copies a validation case, checking that image, brain mask and
    /// reference share one grid.
    pub(crate) fn from_validation(v: &ValidationCase) -> Result<Self, PluginError> {
        let id = v.case.id.to_string();
        let grid = v.case.image.grid;
        let what = |part: &str| format!("unet3d: validation case `{id}` {part}");
        let image = v
            .case
            .image
            .require_channel("flair")
            .map_err(|e| PluginError::input(format!("{}: {}", what("image"), e.message)))?;
        grid.check_len(image.len(), &what("flair"))?;
        for (part, label) in [("brain mask", &v.case.brain_mask), ("target", &v.target)] {
            if label.grid.shape != grid.shape {
                return Err(PluginError::input(format!(
                    "{}: grid {:?} differs from the image grid {:?}",
                    what(part),
                    label.grid.shape,
                    grid.shape
                )));
            }
            grid.check_len(label.data.len(), &what(part))?;
        }
        Ok(Self {
            dims: grid.dims(),
            image: image.to_vec(),
            brain: v.case.brain_mask.data.to_vec(),
            target: v.target.data.iter().map(|&x| u8::from(x != 0)).collect(),
            id,
        })
    }
}

/// What model selection chose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectionOutcome {
    /// Training step of the kept weights.
    pub step: usize,
    /// Their mean Dice on the held-out cases.
    pub dice: f64,
    /// Mean Dice of the last step's weights.
    pub last_dice: f64,
    /// Checkpoints scored.
    pub evaluations: usize,
}

struct Best {
    step: usize,
    dice: f64,
    weights: HashMap<String, Tensor>,
}

/// Scores checkpoints on held-out cases and keeps the best weights in memory.
pub struct ModelSelector {
    cases: Vec<HeldOutCase>,
    every: usize,
    best: Option<Best>,
    last_dice: f64,
    evaluations: usize,
}

impl ModelSelector {
    /// A selector over `cases`, scoring every `every` steps and at the end.
    pub fn new(cases: Vec<HeldOutCase>, every: usize) -> Self {
        Self {
            cases,
            every: every.max(1),
            best: None,
            last_dice: f64::NAN,
            evaluations: 0,
        }
    }

    /// Number of held-out cases.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    /// Whether there is nothing to score against.
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// The held-out cases (for the checkpoint's data key).
    pub fn cases(&self) -> &[HeldOutCase] {
        &self.cases
    }

    /// Whether the weights after `done` of `total` steps are scored.
    pub(crate) fn due(&self, done: usize, total: usize) -> bool {
        done % self.every == 0 || done == total
    }

    /// Mean Dice of `model` on the held-out cases, rounded to `f32` (the
    /// precision checkpoints store it with, so a resumed run compares
    /// the same numbers).
    pub fn score(&self, model: &Model) -> f64 {
        let sum: f64 = self
            .cases
            .iter()
            .map(|c| {
                let pred = predict_labels(model, &model.cfg, &c.image, &c.brain, c.dims);
                dice(&pred, &c.target)
            })
            .sum();
        f64::from((sum / self.cases.len() as f64) as f32)
    }

    /// Scores `model` after `step` steps and keeps its weights when they
    /// beat every earlier checkpoint (ties keep the earlier one). Returns
    /// the score.
    pub fn evaluate(&mut self, model: &Model, step: usize) -> f64 {
        let score = self.score(model);
        self.last_dice = score;
        self.evaluations += 1;
        if !self.best.as_ref().is_some_and(|b| score <= b.dice) {
            let weights = model
                .vs
                .variables()
                .into_iter()
                .map(|(name, t)| (name, t.detach().copy()))
                .collect();
            self.best = Some(Best {
                step,
                dice: score,
                weights,
            });
        }
        score
    }

    /// Puts the best weights into `model` (nothing when none was scored).
    pub(crate) fn apply_best(&self, model: &mut Model) {
        let Some(best) = &self.best else { return };
        let _guard = tch::no_grad_guard();
        for (name, mut var) in model.vs.variables() {
            if let Some(t) = best.weights.get(&name) {
                var.copy_(t);
            }
        }
    }

    /// The choice so far (`None` before the first evaluation).
    pub fn outcome(&self) -> Option<SelectionOutcome> {
        self.best.as_ref().map(|b| SelectionOutcome {
            step: b.step,
            dice: b.dice,
            last_dice: self.last_dice,
            evaluations: self.evaluations,
        })
    }

    /// Adds the selector's state to a checkpoint's training state; with
    /// `weights` false only the summary (for a finished model whose
    /// weights already are the best ones).
    pub fn state(&self, out: &mut HashMap<String, Tensor>, weights: bool) {
        let Some(best) = &self.best else { return };
        out.insert(
            META_KEY.into(),
            Tensor::from_slice(&[
                best.step as f64,
                best.dice,
                self.last_dice,
                self.evaluations as f64,
            ]),
        );
        if weights {
            for (name, t) in &best.weights {
                out.insert(format!("{BEST_PREFIX}{name}"), t.shallow_clone());
            }
        }
    }

    /// Takes the selector's state back from a checkpoint. Best weights are
    /// restored only when every variable of `model` has one.
    pub fn restore(&mut self, state: &HashMap<String, Tensor>, model: &Model) {
        let Some(meta) = state
            .get(META_KEY)
            .and_then(|t| Vec::<f64>::try_from(t.flatten(0, -1)).ok())
        else {
            return;
        };
        let [step, best_dice, last_dice, evaluations] = meta[..] else {
            return;
        };
        let device = model.device();
        let weights: HashMap<String, Tensor> = model
            .vs
            .variables()
            .into_iter()
            .filter_map(|(name, var)| {
                let t = state.get(&format!("{BEST_PREFIX}{name}"))?;
                (t.size() == var.size()).then(|| (name, t.to_device(device).to_kind(var.kind())))
            })
            .collect();
        let complete = weights.len() == model.vs.variables().len();
        self.best = Some(Best {
            step: step as usize,
            dice: best_dice,
            weights: if complete { weights } else { HashMap::new() },
        });
        self.last_dice = last_dice;
        self.evaluations = evaluations as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UNetConfig;
    use crate::phantom::{phantom, PhantomSpec};
    use clisc_sdk::config::Settings;
    use tch::Device;

    fn held_out(seed: u64) -> HeldOutCase {
        let spec = PhantomSpec {
            dims: [24, 24, 16],
            contrast: 4.0,
            noise: 0.1,
            lesion_size: 0.25,
        };
        let c = phantom(spec, seed);
        HeldOutCase::from_validation(&ValidationCase {
            case: c.case,
            target: c.target,
        })
        .unwrap()
    }

    /// A network whose output ignores its input: every voxel foreground
    /// (`foreground` true) or none.
    fn constant_model(foreground: bool) -> Model {
        let text = "features = [4, 8]\npatch_size = [16, 16, 16]";
        let schema = crate::config::UNetConfig::schema();
        let cfg =
            UNetConfig::from_settings(&Settings::parse("unet3d", text, &schema).unwrap()).unwrap();
        let model = Model::new(&cfg, Device::Cpu, 1);
        let vars = model.vs.variables();
        let _guard = tch::no_grad_guard();
        let _ = vars["final.weight"].shallow_clone().zero_();
        let bias = if foreground {
            [-20f32, 20.]
        } else {
            [20f32, -20.]
        };
        vars["final.bias"]
            .shallow_clone()
            .copy_(&Tensor::from_slice(&bias));
        model
    }

    #[test]
    fn keeps_the_best_weights_not_the_last_and_round_trips_through_a_checkpoint() {
        let _rng = crate::torch_rng_lock();
        let (good, mut bad) = (constant_model(true), constant_model(false));
        let mut sel = ModelSelector::new(vec![held_out(3), held_out(4)], 10);
        let good_dice = sel.evaluate(&good, 10);
        let bad_dice = sel.evaluate(&bad, 20);
        assert!(
            good_dice > 0.1,
            "all-brain prediction overlaps the lesion: {good_dice}"
        );
        assert_eq!(
            bad_dice, 0.0,
            "an empty prediction has Dice 0 with a lesion"
        );
        let chosen = SelectionOutcome {
            step: 10,
            dice: good_dice,
            last_dice: 0.0,
            evaluations: 2,
        };
        assert_eq!(sel.outcome(), Some(chosen));

        // A resumed selector (from a periodic checkpoint's state) makes the
        // same choice and restores the same weights.
        let mut state = HashMap::new();
        sel.state(&mut state, true);
        let mut again = ModelSelector::new(vec![held_out(3), held_out(4)], 10);
        again.restore(&state, &bad);
        assert_eq!(again.outcome(), Some(chosen));
        again.apply_best(&mut bad);
        assert_eq!(again.score(&bad), good_dice);

        // A later tie does not replace the earlier choice.
        again.evaluate(&good, 30);
        assert_eq!(again.outcome().unwrap().step, 10);
    }

    #[test]
    fn rejects_a_target_on_another_grid() {
        let c = phantom(
            PhantomSpec {
                dims: [8, 8, 8],
                contrast: 4.0,
                noise: 0.1,
                lesion_size: 0.25,
            },
            1,
        );
        let other = phantom(
            PhantomSpec {
                dims: [8, 8, 4],
                contrast: 4.0,
                noise: 0.1,
                lesion_size: 0.25,
            },
            1,
        );
        let e = HeldOutCase::from_validation(&ValidationCase {
            case: c.case,
            target: other.target,
        })
        .err()
        .expect("grid mismatch");
        assert!(e.message.contains("target: grid"), "{}", e.message);
    }
}
