//! Numbers a run measures for its report: every figure here is computed
//! from the run's own artefacts. Ground truth is read to report, and to
//! choose something only under `model_selection = "ground-truth-validation"`,
//! which the summary records ([`RunSummary::ground_truth_used_for_choices`]).

use super::cases::Cases;
use super::config::{Pipeline, StageSlot};
use clisc_imaging::overlap::{dice, OverlapCounts};
use clisc_sdk::stage::{FilterCandidate, FilterDecision, RoiResult, StageReport};
use clisc_sdk::{CasePrompts, LabelVolume, SlicePseudoLabels};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A score of one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseScore {
    /// Case identifier.
    pub case: String,
    /// Whole-tumor Dice.
    pub dice: f64,
    /// Whole-tumor HD95 in mm; `None` when undefined (one mask empty).
    pub hd95: Option<f64>,
    /// Further metrics (sensitivity, specificity, TC/ET Dice, ...).
    #[serde(default)]
    pub extra: BTreeMap<String, f64>,
}

impl CaseScore {
    /// A Dice-only score.
    pub(crate) fn dice_only(case: &str, dice: f64) -> Self {
        Self {
            case: case.into(),
            dice,
            hd95: None,
            extra: BTreeMap::new(),
        }
    }

    /// Dice, precision and recall of a mask against the truth (the last
    /// two left out where undefined): precision below recall means the
    /// mask over-segments, recall below precision that it misses tumour.
    pub fn overlap(case: &str, mask: &[u8], truth: &[u8]) -> Self {
        let counts = OverlapCounts::of(mask, truth);
        let mut score = Self::dice_only(case, counts.dice());
        let rates = [
            ("precision", counts.precision()),
            ("recall", counts.recall()),
        ];
        for (key, value) in rates {
            if let Some(v) = value {
                score.extra.insert(key.into(), v);
            }
        }
        score
    }
}

/// Mean, population standard deviation and count of the finite values
/// (`None` when there are none); the statistics of [`clisc_metrics::Stat`].
pub fn mean_std(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64, usize)> {
    let stat = clisc_metrics::Stat::of(values.into_iter().map(Some));
    (stat.n > 0).then_some((stat.mean, stat.std, stat.n))
}

/// Binary classification figures of slice labels against ground truth.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    /// Slices counted.
    pub slices: usize,
    /// Fraction correct.
    pub accuracy: f64,
    /// TP / (TP + FP).
    pub precision: f64,
    /// TP / (TP + FN).
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
}

impl Confusion {
    fn from_counts(tp: usize, fp: usize, tn: usize, fn_: usize) -> Self {
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Self {
            slices: tp + fp + tn + fn_,
            accuracy: ratio(tp + tn, tp + fp + tn + fn_),
            precision,
            recall,
            f1,
        }
    }
}

/// Slice-label quality: over the kept slices and over all slices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SliceLabelStats {
    /// Figures over the slices the labeler kept.
    pub kept: Confusion,
    /// Figures over every slice (labels of unkept slices included).
    pub all: Confusion,
    /// Fraction of slices kept.
    pub kept_fraction: f64,
}

impl SliceLabelStats {
    /// Measures labels of cases with ground truth (a slice is tumor when
    /// its ground truth has a tumor voxel).
    pub fn measure(cases: &Cases, labels: &BTreeMap<String, SlicePseudoLabels>) -> Self {
        let (mut kept, mut all) = ([0usize; 4], [0usize; 4]);
        let (mut n_kept, mut n) = (0usize, 0usize);
        for (id, l) in labels {
            let Some(truth) = cases.get(id).and_then(|c| c.truth.as_ref()) else {
                continue;
            };
            let per = truth.grid.slice_len();
            for s in l.slices.iter() {
                let z = s.index as usize;
                let t = truth.data[z * per..(z + 1) * per].iter().any(|&v| v != 0);
                let idx = match (s.label == 1, t) {
                    (true, true) => 0,
                    (true, false) => 1,
                    (false, false) => 2,
                    (false, true) => 3,
                };
                all[idx] += 1;
                n += 1;
                if s.kept {
                    kept[idx] += 1;
                    n_kept += 1;
                }
            }
        }
        Self {
            kept: Confusion::from_counts(kept[0], kept[1], kept[2], kept[3]),
            all: Confusion::from_counts(all[0], all[1], all[2], all[3]),
            kept_fraction: if n == 0 {
                0.0
            } else {
                n_kept as f64 / n as f64
            },
        }
    }
}

/// One case of the self-learning filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterScore {
    /// Case identifier.
    pub case: String,
    /// Filter score (agreement of network and re-prompted segmenter).
    pub score: f64,
    /// Kept for the final network.
    pub keep: bool,
    /// Dice of the network's pseudo-label against ground truth (report only).
    pub dice_vs_truth: Option<f64>,
}

/// Where one case's prompts fall relative to its ground-truth whole tumour
/// (report only): the figure behind "prompts land on the tumour".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptPlacement {
    /// Case identifier.
    pub case: String,
    /// Prompt sets (slices with prompts).
    pub sets: usize,
    /// Prompt sets on slices that contain tumour.
    pub sets_on_tumour_slices: usize,
    /// Boxes, and those that contain at least one tumour pixel.
    pub boxes: usize,
    /// Boxes containing at least one tumour pixel.
    pub boxes_on_tumour: usize,
    /// Positive points, and those on a tumour pixel.
    pub positives: usize,
    /// Positive points on a tumour pixel.
    pub positives_on_tumour: usize,
    /// Negative points, and those on a tumour pixel (should be few).
    pub negatives: usize,
    /// Negative points on a tumour pixel.
    pub negatives_on_tumour: usize,
    /// Slices that contain tumour, and those with a prompt set.
    pub tumour_slices: usize,
    /// Tumour slices with at least one prompt set.
    pub tumour_slices_prompted: usize,
}

impl PromptPlacement {
    /// Counts where `prompts` fall on `truth` (nonzero = tumour); points and
    /// boxes are in slice pixels (x = column, y = row), rounded to the
    /// nearest pixel and clipped to the slice.
    pub fn measure(case: &str, prompts: &CasePrompts, truth: &LabelVolume) -> Self {
        let [w, h, d] = truth.grid.dims();
        let tumour = |x: usize, y: usize, z: usize| truth.data[(z * h + y) * w + x] != 0;
        let pixel = |v: f32, n: usize| (v.round().max(0.0) as usize).min(n.saturating_sub(1));
        let slice_has_tumour: Vec<bool> = (0..d)
            .map(|z| {
                truth.data[z * w * h..(z + 1) * w * h]
                    .iter()
                    .any(|&v| v != 0)
            })
            .collect();
        let mut p = Self {
            case: case.into(),
            tumour_slices: slice_has_tumour.iter().filter(|&&t| t).count(),
            ..Default::default()
        };
        let mut prompted = vec![false; d];
        for set in prompts.sets.iter() {
            let z = set.slice as usize;
            if z >= d || w == 0 || h == 0 {
                continue;
            }
            p.sets += 1;
            prompted[z] = true;
            p.sets_on_tumour_slices += usize::from(slice_has_tumour[z]);
            if let Some(b) = set.bbox.as_ref().into_option() {
                p.boxes += 1;
                let (x0, x1) = (pixel(b.x0.min(b.x1), w), pixel(b.x0.max(b.x1), w));
                let (y0, y1) = (pixel(b.y0.min(b.y1), h), pixel(b.y0.max(b.y1), h));
                let hit = (y0..=y1).any(|y| (x0..=x1).any(|x| tumour(x, y, z)));
                p.boxes_on_tumour += usize::from(hit);
            }
            for pt in set.points.iter() {
                let on = tumour(pixel(pt.x, w), pixel(pt.y, h), z);
                if pt.positive {
                    p.positives += 1;
                    p.positives_on_tumour += usize::from(on);
                } else {
                    p.negatives += 1;
                    p.negatives_on_tumour += usize::from(on);
                }
            }
        }
        p.tumour_slices_prompted = (0..d)
            .filter(|&z| prompted[z] && slice_has_tumour[z])
            .count();
        p
    }
}

/// Totals of [`PromptPlacement`] over cases, as fractions: positive points
/// on tumour, boxes containing tumour, negative points on tumour, tumour
/// slices prompted (`None` where a denominator is 0).
pub fn prompt_placement_fractions(all: &[PromptPlacement]) -> [Option<f64>; 4] {
    let sum = |f: fn(&PromptPlacement) -> usize| all.iter().map(f).sum::<usize>();
    let frac = |num: usize, den: usize| (den > 0).then(|| num as f64 / den as f64);
    [
        frac(sum(|p| p.positives_on_tumour), sum(|p| p.positives)),
        frac(sum(|p| p.boxes_on_tumour), sum(|p| p.boxes)),
        frac(sum(|p| p.negatives_on_tumour), sum(|p| p.negatives)),
        frac(sum(|p| p.tumour_slices_prompted), sum(|p| p.tumour_slices)),
    ]
}

/// How one network step chose its checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSelectionRecord {
    /// `last`, `pseudo-label-holdout` or `ground-truth-validation`.
    pub mode: String,
    /// What the mode means, in words.
    pub description: String,
    /// Cases the checkpoints were scored on (never trained on).
    pub held_out: Vec<String>,
    /// The checkpoint the network kept, when it chose one.
    #[serde(default)]
    pub chosen: Option<ChosenCheckpoint>,
}

/// The checkpoint a network kept by model selection (the SDK's
/// `CheckpointChoice`, as the summary records it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChosenCheckpoint {
    /// Training step of the kept checkpoint.
    pub step: u64,
    /// Its mean Dice on the held-out cases.
    pub validation_dice: f64,
    /// The last checkpoint's mean Dice on them, when the plugin said.
    pub last_validation_dice: Option<f64>,
    /// How many checkpoints were scored, when the plugin said.
    pub evaluations: Option<u32>,
}

impl From<clisc_sdk::stage::CheckpointChoice> for ChosenCheckpoint {
    fn from(c: clisc_sdk::stage::CheckpointChoice) -> Self {
        Self {
            step: c.step,
            validation_dice: c.validation_dice,
            last_validation_dice: c.last_validation_dice.into_option(),
            evaluations: c.evaluations.into_option(),
        }
    }
}

/// Everything the report shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Pipeline file.
    pub pipeline: String,
    /// `slot=plugin` for every configured stage.
    pub stages: Vec<String>,
    /// Whether ground truth influenced any choice (only with
    /// `model_selection = "ground-truth-validation"`).
    pub ground_truth_used_for_choices: bool,
    /// Whether the network learned from ground-truth labels (the
    /// supervised baseline, `targets = "ground-truth"`).
    #[serde(default)]
    pub supervised: bool,
    /// The voxel size (mm) the stages worked at; `None`: each case's own.
    #[serde(default)]
    pub working_spacing: Option<[f64; 3]>,
    /// The `[dataset] bias_correction` the cases had.
    #[serde(default)]
    pub bias_correction: clisc_dataset::BiasCorrection,
    /// The `[dataset] refine_boundary_mm` test predictions were refined
    /// with on each case's own grid.
    #[serde(default)]
    pub refine_boundary_mm: Option<f64>,
    /// How each network step chose its checkpoint, by step name.
    #[serde(default)]
    pub model_selection: BTreeMap<String, ModelSelectionRecord>,
    /// Slice-label quality on the training split.
    pub slice_labels: Option<SliceLabelStats>,
    /// Numbers reported by training steps.
    pub stage_reports: BTreeMap<String, BTreeMap<String, f64>>,
    /// ROI Dice against ground truth per round (training split).
    pub rois: BTreeMap<String, Vec<CaseScore>>,
    /// Order of the ROI rounds.
    pub roi_rounds: Vec<String>,
    /// Where the prompts fall on the ground truth (training split).
    #[serde(default)]
    pub prompts: Vec<PromptPlacement>,
    /// Promptable-segmenter pseudo-mask Dice (training split).
    pub pseudo_masks: Vec<CaseScore>,
    /// Self-learning filter per case.
    pub filter: Vec<FilterScore>,
    /// Test-split scores per model (`network-1`, `final`).
    pub test: BTreeMap<String, Vec<CaseScore>>,
    /// Seconds per step.
    pub timings: BTreeMap<String, f64>,
}

impl RunSummary {
    /// An empty summary for `pipeline`.
    pub fn new(pipeline: &Pipeline) -> Self {
        Self {
            pipeline: pipeline.source.display().to_string(),
            stages: StageSlot::ALL
                .iter()
                .filter_map(|s| {
                    pipeline
                        .stage(*s)
                        .map(|spec| format!("{}={}", s.key(), spec.plugin))
                })
                .collect(),
            ..Default::default()
        }
    }

    /// A plain-text digest of the measured figures, one line per stage, in
    /// pipeline order (what `clisc demo` prints and the benchmark records).
    pub fn digest(&self) -> Vec<String> {
        let fmt = |v: &mut dyn Iterator<Item = f64>| match mean_std(v) {
            Some((m, s, n)) => format!("{m:.3} ± {s:.3} (n={n})"),
            None => "–".into(),
        };
        let mut out = Vec::new();
        if self.supervised {
            out.push(
                "supervised baseline: the network learned the training split's ground truth".into(),
            );
        }
        if let Some(l) = &self.slice_labels {
            out.push(format!(
                "slice labels (kept {:.0}%): precision {:.3}, recall {:.3}, accuracy {:.3}",
                100.0 * l.kept_fraction,
                l.kept.precision,
                l.kept.recall,
                l.kept.accuracy
            ));
        }
        for round in &self.roi_rounds {
            let scores = &self.rois[round];
            let extra = |key: &str| {
                scores
                    .iter()
                    .filter_map(|s| s.extra.get(key).copied())
                    .collect::<Vec<_>>()
            };
            out.push(format!(
                "ROI Dice ({round}): {}; precision {}, recall {}",
                fmt(&mut scores.iter().map(|s| s.dice)),
                fmt(&mut extra("precision").into_iter()),
                fmt(&mut extra("recall").into_iter())
            ));
        }
        if !self.prompts.is_empty() {
            let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.0}%", 100.0 * v));
            let [pos, boxes, neg, slices] = prompt_placement_fractions(&self.prompts);
            out.push(format!(
                "prompts: positive points on tumour {}, boxes containing tumour {}, negative points on tumour {}, tumour slices prompted {}",
                pct(pos),
                pct(boxes),
                pct(neg),
                pct(slices)
            ));
        }
        if !self.pseudo_masks.is_empty() {
            let extra = |key: &str| {
                self.pseudo_masks
                    .iter()
                    .filter_map(|s| s.extra.get(key).copied())
                    .collect::<Vec<_>>()
            };
            out.push(format!(
                "pseudo-mask Dice: {}; precision {}, recall {}",
                fmt(&mut self.pseudo_masks.iter().map(|s| s.dice)),
                fmt(&mut extra("precision").into_iter()),
                fmt(&mut extra("recall").into_iter())
            ));
        }
        if !self.filter.is_empty() {
            let dice = |keep: Option<bool>| {
                fmt(&mut self
                    .filter
                    .iter()
                    .filter(move |f| keep.map_or(true, |k| f.keep == k))
                    .filter_map(|f| f.dice_vs_truth))
            };
            out.push(format!(
                "network-1 on training cases (Dice): {}",
                dice(None)
            ));
            out.push(format!(
                "self-learning filter: kept {}, dropped {}",
                dice(Some(true)),
                dice(Some(false))
            ));
        }
        for step in self.model_selection.keys() {
            if let Some(line) = self.selection_outcome(step).filter(|_| {
                self.model_selection[step].mode != super::config::ModelSelection::Last.name()
            }) {
                out.push(format!("model selection ({step}): {line}"));
            }
        }
        for (model, scores) in &self.test {
            let hd: Vec<f64> = scores.iter().filter_map(|s| s.hd95).collect();
            out.push(format!(
                "test Dice ({model}): {}; HD95 {} mm",
                fmt(&mut scores.iter().map(|s| s.dice)),
                fmt(&mut hd.into_iter())
            ));
        }
        out
    }

    /// What a network step's model selection did, in words (`None` for a
    /// step without a record).
    pub fn selection_outcome(&self, step: &str) -> Option<String> {
        let record = self.model_selection.get(step)?;
        let steps = self
            .stage_reports
            .get(step)
            .and_then(|m| m.get("steps"))
            .map_or("?".into(), |s| format!("{s:.0}"));
        Some(match record.chosen {
            Some(c) => format!(
                "{}: kept step {} of {steps}, Dice {:.3} on {} held-out cases (last checkpoint {})",
                record.mode,
                c.step,
                c.validation_dice,
                record.held_out.len(),
                c.last_validation_dice
                    .map_or("?".into(), |d| format!("{d:.3}"))
            ),
            None if record.mode == super::config::ModelSelection::Last.name() => {
                "last checkpoint".into()
            }
            None => format!(
                "{}: the plugin did not choose (no checkpoint choice in its report), so its last checkpoint was kept",
                record.mode
            ),
        })
    }

    /// Records a training step's own numbers and, when the network
    /// chose a checkpoint, its choice (in the step's model-selection
    /// record).
    pub(crate) fn add_stage_report(&mut self, step: &str, report: &StageReport) {
        let entry = self.stage_reports.entry(step.into()).or_default();
        for m in report.metrics.iter() {
            entry.insert(m.name.to_string(), m.value);
        }
        if let (abi_stable::std_types::ROption::RSome(choice), Some(record)) =
            (report.selection, self.model_selection.get_mut(step))
        {
            record.chosen = Some(choice.into());
        }
    }

    /// ROI Dice per round against ground truth, with the ROI's precision
    /// (fraction of the ROI on tumour) and recall (fraction of the tumour
    /// inside the ROI) in `extra`: adaptive masking is meant to raise the
    /// recall, which Dice alone does not show.
    pub(crate) fn measure_rois(&mut self, cases: &Cases, rois: &BTreeMap<String, RoiResult>) {
        self.rois.clear();
        self.roi_rounds.clear();
        for (id, result) in rois {
            let Some(truth) = cases.get(id).and_then(|c| c.truth.as_ref()) else {
                continue;
            };
            for round in result.rounds.iter() {
                let name = round.name.to_string();
                if !self.roi_rounds.contains(&name) {
                    self.roi_rounds.push(name.clone());
                }
                let score = CaseScore::overlap(id, &round.roi.data, &truth.data);
                self.rois.entry(name).or_default().push(score);
            }
        }
    }

    /// Prompt placement against ground truth, per case that has it.
    pub(crate) fn measure_prompts(
        &mut self,
        cases: &Cases,
        prompts: &BTreeMap<String, CasePrompts>,
    ) {
        self.prompts = prompts
            .iter()
            .filter_map(|(id, p)| {
                let truth = cases.get(id)?.truth.as_ref()?;
                Some(PromptPlacement::measure(id, p, truth))
            })
            .collect();
    }

    /// Filter decisions with the (report-only) quality of each candidate.
    pub(crate) fn measure_filter(
        &mut self,
        cases: &Cases,
        candidates: &[FilterCandidate],
        decisions: &[FilterDecision],
    ) {
        self.filter = candidates
            .iter()
            .zip(decisions)
            .map(|(c, d)| {
                let id = c.case_id.to_string();
                let dice_vs_truth = cases
                    .get(&id)
                    .and_then(|k| k.truth.as_ref())
                    .map(|t| dice(&c.pseudo_label.data, &t.data));
                FilterScore {
                    case: id,
                    score: d.score,
                    keep: d.keep,
                    dice_vs_truth,
                }
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::{ROption, RVec};
    use clisc_sdk::{BoxXyxy, Grid, PromptPoint, PromptSet};

    #[test]
    fn prompt_placement_counts_points_boxes_and_slices_on_the_tumour() {
        // 4x3x3 grid; tumour at (1,1,z) for z = 0 and 1; slice 2 clean.
        let mut truth = LabelVolume::zeros(Grid::new([4, 3, 3], [1.0; 3]));
        truth.data[4 + 1] = 2;
        truth.data[12 + 4 + 1] = 1;
        let point = |x: f32, y: f32, positive: bool| PromptPoint { x, y, positive };
        let set = |slice: u32, bbox: Option<[f32; 4]>, points: Vec<PromptPoint>| PromptSet {
            slice,
            bbox: match bbox {
                Some([x0, y0, x1, y1]) => ROption::RSome(BoxXyxy { x0, y0, x1, y1 }),
                None => ROption::RNone,
            },
            points: RVec::from(points),
        };
        let prompts = CasePrompts {
            sets: RVec::from(vec![
                // on the tumour: box holds (1,1), one of two positives hits
                // (1.2 rounds to 1), the corner negative misses.
                set(
                    0,
                    Some([0.0, 0.0, 2.0, 2.0]),
                    vec![
                        point(1.2, 0.9, true),
                        point(3.0, 2.0, true),
                        point(0.0, 0.0, false),
                    ],
                ),
                // clean slice: box misses, positive misses.
                set(2, Some([2.0, 0.0, 3.0, 2.0]), vec![point(3.0, 1.0, true)]),
                // outside the volume: ignored.
                set(7, None, vec![point(1.0, 1.0, true)]),
            ]),
        };
        let p = PromptPlacement::measure("c", &prompts, &truth);
        assert_eq!((p.sets, p.sets_on_tumour_slices), (2, 1));
        assert_eq!((p.boxes, p.boxes_on_tumour), (2, 1));
        assert_eq!((p.positives, p.positives_on_tumour), (3, 1));
        assert_eq!((p.negatives, p.negatives_on_tumour), (1, 0));
        assert_eq!((p.tumour_slices, p.tumour_slices_prompted), (2, 1));
        let [pos, boxes, neg, slices] = prompt_placement_fractions(&[p]);
        assert_eq!(pos, Some(1.0 / 3.0));
        assert_eq!(boxes, Some(0.5));
        assert_eq!(neg, Some(0.0));
        assert_eq!(slices, Some(0.5));
        assert_eq!(prompt_placement_fractions(&[]), [None; 4]);
    }

    #[test]
    fn digest_reports_each_measured_stage() {
        let mut s = RunSummary {
            roi_rounds: vec!["initial".into()],
            ..Default::default()
        };
        s.rois.insert(
            "initial".into(),
            vec![
                CaseScore::dice_only("a", 0.2),
                CaseScore::dice_only("b", 0.4),
            ],
        );
        s.pseudo_masks = vec![CaseScore::dice_only("a", 0.8)];
        s.filter = vec![
            FilterScore {
                case: "a".into(),
                score: 0.9,
                keep: true,
                dice_vs_truth: Some(0.9),
            },
            FilterScore {
                case: "b".into(),
                score: 0.1,
                keep: false,
                dice_vs_truth: Some(0.1),
            },
        ];
        let mut t = CaseScore::dice_only("c", 0.7);
        t.hd95 = Some(3.0);
        s.test.insert("final".into(), vec![t]);
        let d = s.digest();
        assert_eq!(d.len(), 5, "{d:?}");
        assert!(d[0].starts_with("ROI Dice (initial): 0.300"), "{}", d[0]);
        assert!(d[1].contains("0.800"), "{}", d[1]);
        assert!(d[2].contains("0.500"), "{}", d[2]);
        assert!(
            d[3].contains("kept 0.900") && d[3].contains("dropped 0.100"),
            "{}",
            d[3]
        );
        assert!(
            d[4].contains("test Dice (final): 0.700") && d[4].contains("HD95 3.000"),
            "{}",
            d[4]
        );
    }
}
