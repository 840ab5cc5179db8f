//! JSON forms of the per-case artefacts that are not volumes (slice
//! labels, prompts, filter decisions), so the work folder can be read by
//! people and other tools and a resumed run can load them back.

use abi_stable::std_types::{ROption, RVec};
use clisc_sdk::stage::FilterDecision;
use clisc_sdk::{BoxXyxy, CasePrompts, PromptPoint, PromptSet, SliceLabel, SlicePseudoLabels};
use serde::{Deserialize, Serialize};

/// One slice label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SliceLabelRecord {
    /// Axial index.
    pub index: u32,
    /// 1 = tumor.
    pub label: u8,
    /// Confidence of the label.
    pub probability: f32,
    /// Used for training.
    pub kept: bool,
}

/// Slice labels of a case as JSON.
pub(crate) fn labels_to_json(labels: &SlicePseudoLabels) -> Vec<SliceLabelRecord> {
    labels
        .slices
        .iter()
        .map(|s| SliceLabelRecord {
            index: s.index,
            label: s.label,
            probability: s.probability,
            kept: s.kept,
        })
        .collect()
}

/// Slice labels back from JSON.
pub(crate) fn labels_from_json(records: &[SliceLabelRecord]) -> SlicePseudoLabels {
    SlicePseudoLabels {
        slices: records
            .iter()
            .map(|r| SliceLabel {
                index: r.index,
                label: r.label,
                probability: r.probability,
                kept: r.kept,
            })
            .collect(),
    }
}

/// One point prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRecord {
    /// Column.
    pub x: f32,
    /// Row.
    pub y: f32,
    /// Foreground click.
    pub positive: bool,
}

/// One prompt set (slice, optional box `[x0, y0, x1, y1]`, points).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSetRecord {
    /// Axial index.
    pub slice: u32,
    /// Box corners, inclusive.
    pub bbox: Option<[f32; 4]>,
    /// Points.
    pub points: Vec<PointRecord>,
}

/// Prompts of a case as JSON.
pub fn prompts_to_json(prompts: &CasePrompts) -> Vec<PromptSetRecord> {
    prompts
        .sets
        .iter()
        .map(|s| PromptSetRecord {
            slice: s.slice,
            bbox: match s.bbox {
                ROption::RSome(b) => Some([b.x0, b.y0, b.x1, b.y1]),
                ROption::RNone => None,
            },
            points: s
                .points
                .iter()
                .map(|p| PointRecord {
                    x: p.x,
                    y: p.y,
                    positive: p.positive,
                })
                .collect(),
        })
        .collect()
}

/// Prompts back from JSON.
pub fn prompts_from_json(records: &[PromptSetRecord]) -> CasePrompts {
    CasePrompts {
        sets: records
            .iter()
            .map(|r| PromptSet {
                slice: r.slice,
                bbox: match r.bbox {
                    Some([x0, y0, x1, y1]) => ROption::RSome(BoxXyxy { x0, y0, x1, y1 }),
                    None => ROption::RNone,
                },
                points: r
                    .points
                    .iter()
                    .map(|p| PromptPoint {
                        x: p.x,
                        y: p.y,
                        positive: p.positive,
                    })
                    .collect::<RVec<_>>(),
            })
            .collect(),
    }
}

/// A filter decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DecisionRecord {
    /// Case identifier.
    pub case_id: String,
    /// Quality score.
    pub score: f64,
    /// Kept for training.
    pub keep: bool,
}

/// Filter decisions as JSON.
pub(crate) fn decisions_to_json(decisions: &[FilterDecision]) -> Vec<DecisionRecord> {
    decisions
        .iter()
        .map(|d| DecisionRecord {
            case_id: d.case_id.to_string(),
            score: d.score,
            keep: d.keep,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_round_trip_through_json() {
        let prompts = CasePrompts {
            sets: vec![PromptSet {
                slice: 4,
                bbox: ROption::RSome(BoxXyxy {
                    x0: 1.0,
                    y0: 2.0,
                    x1: 30.0,
                    y1: 40.0,
                }),
                points: vec![PromptPoint {
                    x: 5.0,
                    y: 6.0,
                    positive: true,
                }]
                .into(),
            }]
            .into(),
        };
        let json = serde_json::to_string(&prompts_to_json(&prompts)).unwrap();
        let back: Vec<PromptSetRecord> = serde_json::from_str(&json).unwrap();
        assert_eq!(prompts_from_json(&back), prompts);
    }

    #[test]
    fn labels_round_trip_through_json() {
        let labels = SlicePseudoLabels {
            slices: vec![SliceLabel {
                index: 0,
                label: 1,
                probability: 0.9,
                kept: true,
            }]
            .into(),
        };
        assert_eq!(labels_from_json(&labels_to_json(&labels)), labels);
    }
}
