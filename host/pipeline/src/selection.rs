//! Model selection of the network steps: which cases train a network and
//! which are held out so the plugin can choose among its checkpoints
//! (`model_selection` in `[stages.volumetric_segmenter]`).

use super::config::ModelSelection;
use crate::error::invalid;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The cases of one network step: trained on, and held out for scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// Case ids the network trains on.
    pub training: Vec<String>,
    /// Case ids its checkpoints are scored on (never trained on).
    pub held_out: Vec<String>,
}

/// Splits a network step's cases for `selection`.
///
/// * `last`: every target trains, nothing is held out.
/// * `pseudo-label-holdout`: a seeded `fraction` of `targets` (at least one
///   case, and at least one left to train on) is held out.
/// * `ground-truth-validation`: every target trains; the validation split
///   (`validation`) is held out.
pub fn partition(
    selection: ModelSelection,
    targets: &[String],
    validation: &[String],
    seed: u64,
) -> crate::error::Result<Partition> {
    let mut training = targets.to_vec();
    training.sort();
    let held_out = match selection {
        ModelSelection::Last => Vec::new(),
        ModelSelection::GroundTruthValidation => {
            if validation.is_empty() {
                return Err(invalid("model_selection = \"ground-truth-validation\" scores checkpoints on the validation split, which is empty; give `[dataset] split` ratios with a validation part (e.g. ratios = [7, 1, 2])"));
            }
            validation.to_vec()
        }
        ModelSelection::PseudoLabelHoldout { fraction } => {
            if training.len() < 2 {
                return Err(invalid(format!(
                    "model_selection = \"pseudo-label-holdout\" needs at least 2 cases to train the network on (one to train, one to hold out); this step has {}",
                    training.len()
                )));
            }
            let n =
                ((training.len() as f64 * fraction).round() as usize).clamp(1, training.len() - 1);
            training.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            let mut held: Vec<String> = training.drain(..n).collect();
            training.sort();
            held.sort();
            held
        }
    };
    Ok(Partition { training, held_out })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("case-{i:02}")).collect()
    }

    #[test]
    fn last_trains_on_everything_and_holds_nothing_out() {
        let p = partition(ModelSelection::Last, &ids(5), &ids(2), 1).unwrap();
        assert_eq!((p.training, p.held_out.len()), (ids(5), 0));
    }

    #[test]
    fn the_pseudo_label_holdout_is_seeded_disjoint_and_never_empty() {
        let sel = ModelSelection::PseudoLabelHoldout { fraction: 0.2 };
        let p = partition(sel, &ids(17), &[], 7).unwrap();
        assert_eq!((p.training.len(), p.held_out.len()), (14, 3));
        assert!(p.held_out.iter().all(|id| !p.training.contains(id)));
        assert_eq!(p, partition(sel, &ids(17), &[], 7).unwrap(), "seeded");
        assert_ne!(
            p.held_out,
            partition(sel, &ids(17), &[], 8).unwrap().held_out
        );
        let tiny = partition(
            ModelSelection::PseudoLabelHoldout { fraction: 0.01 },
            &ids(2),
            &[],
            1,
        )
        .unwrap();
        assert_eq!((tiny.training.len(), tiny.held_out.len()), (1, 1));
        let e = partition(sel, &ids(1), &[], 1).unwrap_err().to_string();
        assert!(e.contains("at least 2 cases"), "{e}");
    }

    #[test]
    fn ground_truth_validation_holds_out_the_validation_split() {
        let p = partition(
            ModelSelection::GroundTruthValidation,
            &ids(4),
            &["v".into()],
            1,
        )
        .unwrap();
        assert_eq!((p.training, p.held_out), (ids(4), vec!["v".to_string()]));
        let e = partition(ModelSelection::GroundTruthValidation, &ids(4), &[], 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("validation split, which is empty"), "{e}");
    }
}
