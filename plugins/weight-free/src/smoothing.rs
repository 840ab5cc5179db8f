//! Neighbour-majority smoothing of slice labels along z, as in CLISC's
//! released code (`step0_get_clip_label.py`), shared by every
//! pseudo-labeler.
//!
//! Only kept (confident) slices take part. Walking the kept slices in z
//! order, slice `i` looks at up to `neighbours_per_side` kept slices before
//! and after it *in that list*, ignores those more than `max_distance`
//! slices away in z, and when more than `min_votes` neighbours remain,
//! its label becomes their majority (a tie gives 0, as in the reference).
//! Votes use the labels from before smoothing, so the result does not
//! depend on the order of the walk. Reference values: 5, 6 and 8.
//!
//! A relabelled slice keeps its kept flag; its probability becomes that of
//! the new label, `1 - p`, since the labels are binary.

use clisc_sdk::config::Settings;
use clisc_sdk::{ConfigField, PluginError, SlicePseudoLabels};

/// Parameters of the smoothing (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Smoothing {
    /// Kept neighbours considered on each side (in kept-slice order).
    pub neighbours_per_side: usize,
    /// Neighbours further than this many slices in z are ignored.
    pub max_distance: u32,
    /// The majority is applied only when more than this many neighbours remain.
    pub min_votes: usize,
}

impl Default for Smoothing {
    /// The reference code's values: 5 neighbours per side, 6 slices, more than 8 votes.
    fn default() -> Self {
        Smoothing {
            neighbours_per_side: 5,
            max_distance: 6,
            min_votes: 8,
        }
    }
}

impl Smoothing {
    /// The settings every pseudo-labeler exposes for the smoothing, with the
    /// reference values as defaults; `enabled` is the default of the
    /// `smoothing` switch (on for CLIP as in the reference code; a labeler
    /// whose labels are already consistent along z may default to off).
    pub fn schema(enabled: bool) -> Vec<ConfigField> {
        let d = Smoothing::default();
        vec![
            ConfigField::bool(
                "smoothing",
                enabled,
                "neighbour-majority smoothing of kept labels along z (reference code)",
            ),
            ConfigField::integer(
                "smoothing_neighbours",
                d.neighbours_per_side as i64,
                "kept neighbours considered on each side",
            ),
            ConfigField::integer(
                "smoothing_max_distance",
                i64::from(d.max_distance),
                "ignore neighbours further than this many slices",
            ),
            ConfigField::integer(
                "smoothing_min_votes",
                d.min_votes as i64,
                "apply the majority only with more than this many neighbours",
            ),
        ]
    }

    /// Reads the [`Smoothing::schema`] settings; `None` when smoothing is off.
    pub fn from_settings(settings: &Settings) -> Result<Option<Self>, PluginError> {
        if !settings.bool("smoothing")? {
            return Ok(None);
        }
        Ok(Some(Smoothing {
            neighbours_per_side: settings.usize("smoothing_neighbours")?,
            max_distance: settings.usize("smoothing_max_distance")? as u32,
            min_votes: settings.usize("smoothing_min_votes")?,
        }))
    }

    /// Smooths `labels` in place; returns how many labels changed.
    pub fn apply(&self, labels: &mut SlicePseudoLabels) -> usize {
        let mut kept: Vec<usize> = (0..labels.slices.len())
            .filter(|&i| labels.slices[i].kept)
            .collect();
        kept.sort_by_key(|&i| labels.slices[i].index);
        let before: Vec<(u32, u8)> = kept
            .iter()
            .map(|&i| (labels.slices[i].index, labels.slices[i].label))
            .collect();
        let mut changed = 0;
        for (pos, &slot) in kept.iter().enumerate() {
            let (z, label) = before[pos];
            let lo = pos.saturating_sub(self.neighbours_per_side);
            let hi = (pos + self.neighbours_per_side + 1).min(before.len());
            let votes: Vec<u8> = (lo..hi)
                .filter(|&j| j != pos && before[j].0.abs_diff(z) <= self.max_distance)
                .map(|j| before[j].1)
                .collect();
            if votes.len() <= self.min_votes {
                continue;
            }
            let ones = votes.iter().filter(|&&v| v == 1).count();
            let target = u8::from(ones > votes.len() - ones);
            if target != label {
                let s = &mut labels.slices[slot];
                s.label = target;
                s.probability = 1.0 - s.probability;
                changed += 1;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::RVec;
    use clisc_sdk::SliceLabel;

    fn labels(spec: &[(u8, bool)]) -> SlicePseudoLabels {
        let slices = spec
            .iter()
            .enumerate()
            .map(|(z, &(label, kept))| SliceLabel {
                index: z as u32,
                label,
                probability: 0.9,
                kept,
            })
            .collect::<Vec<_>>();
        SlicePseudoLabels {
            slices: RVec::from(slices),
        }
    }

    #[test]
    fn isolated_outlier_inside_a_run_is_flipped() {
        // 21 kept slices, all 1 except slice 10.
        let mut spec = vec![(1u8, true); 21];
        spec[10] = (0, true);
        let mut l = labels(&spec);
        assert_eq!(Smoothing::default().apply(&mut l), 1);
        assert_eq!(l.slices[10].label, 1);
        assert!((l.slices[10].probability - 0.1).abs() < 1e-6);
    }

    #[test]
    fn too_few_neighbours_leaves_the_label() {
        // Slice 0 has only 5 neighbours (one side): no change.
        let mut spec = vec![(1u8, true); 21];
        spec[0] = (0, true);
        let mut l = labels(&spec);
        Smoothing::default().apply(&mut l);
        assert_eq!(l.slices[0].label, 0);
    }

    #[test]
    fn distant_and_unkept_neighbours_do_not_vote() {
        // Slice 10 = 0; the kept slices around it are 1 but slices 7..=9 and 11..=13
        // are not kept, so its list neighbours are > 3 slices away; with max_distance 6
        // only 3 + 3 remain (<= 8): unchanged.
        let mut spec = vec![(1u8, true); 21];
        spec[10] = (0, true);
        for z in [7, 8, 9, 11, 12, 13] {
            spec[z] = (1, false);
        }
        let mut l = labels(&spec);
        assert_eq!(Smoothing::default().apply(&mut l), 0);
        assert_eq!(l.slices[10].label, 0);
        assert!(!l.slices[8].kept);
    }

    #[test]
    fn ties_give_zero() {
        // Slice 10 = 1 with five 1s below and five 0s above: a tie, so 0.
        let spec: Vec<(u8, bool)> = (0..21).map(|z| (u8::from(z <= 10), true)).collect();
        let mut l = labels(&spec);
        Smoothing::default().apply(&mut l);
        assert_eq!(l.slices[10].label, 0);
        // Slice 9 sees six 1s (slice 10 counted with its label before smoothing).
        assert_eq!(l.slices[9].label, 1);
    }
}
