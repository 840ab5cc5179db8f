//! `s3f`: the self-learning filter of CLISC.
//!
//! The pipeline predicts every training case with the first network,
//! keeps the prediction's largest 3D component (26-connectivity, as CLISC
//! does before re-prompting SAM), re-prompts the promptable segmenter
//! from it (box without dilation, same points) and hands this plugin one [`FilterCandidate`] per case:
//! `pseudo_label` = the network's prediction, `reference` = the
//! re-prompted segmentation. The filter scores each case by the overlap of
//! the two (`similarity`: Dice, the paper, or IoU), ranks the cases and
//! keeps the top `keep_fraction` (0.8 in the paper) to retrain on.
//!
//! Rules, chosen so that the selection is deterministic and never empty
//! when there are candidates:
//! * **Count kept**: `ceil(keep_fraction * n)`, at least `min(min_keep, n)`
//!   and at most `n`. One candidate is always kept (with the defaults).
//! * **Ties**: equal scores are ordered by case id (ascending), so the
//!   cut at the boundary does not depend on the order of the input.
//! * **Empty masks**: an empty pseudo-label scores 0 whatever the reference
//!   (nothing to learn from: in this task every training case has a
//!   lesion, so an empty prediction is a failure, and two empty masks must
//!   not count as perfect agreement). A non-empty pseudo-label against an
//!   empty reference scores 0 through the overlap itself.
//! * Decisions come back in the input order, one per candidate.
//!
//! **Size strata** (`size_strata`, default 1 = the paper): agreement is
//! lower for small lesions (a few voxels of boundary disagreement weigh
//! more), so a global ranking drops small tumours first and the retrained
//! network stops seeing them. With `k > 1` the cases are split by the voxel
//! count of their pseudo-label into `k` groups of (nearly) equal size and
//! the top `keep_fraction` is kept within each group; `min_keep` still
//! holds overall. No ground truth is involved. On the demo data (17
//! training cases, 96x96x64) the global ranking dropped 3 of the 4 smallest
//! tumours.

use abi_stable::std_types::{RResult, RSlice, RVec};
use clisc_sdk::config::Settings;
use clisc_sdk::stage::{Filter, FilterCandidate, FilterDecision};
use clisc_sdk::{
    plugin_settings, ConfigField, HostContext, Plugin, PluginError, StageKind, StageObject,
};

clisc_sdk::setting_choice! {
    /// How two masks are compared.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Similarity {
        /// `2|A∩B| / (|A|+|B|)` (the paper).
        Dice = "dice",
        /// `|A∩B| / |A∪B|` (Jaccard).
        Iou = "iou",
    }
}

/// Overlap of two binary masks (nonzero = set) of the same length. Two
/// empty masks give 1.0 (the mathematical convention; the filter itself
/// treats empty pseudo-labels separately, see the module docs).
pub(crate) fn similarity(a: &[u8], b: &[u8], kind: Similarity) -> f64 {
    assert_eq!(a.len(), b.len(), "similarity of masks of different sizes");
    let (mut inter, mut sa, mut sb) = (0usize, 0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x != 0, y != 0);
        inter += usize::from(x && y);
        sa += usize::from(x);
        sb += usize::from(y);
    }
    if sa + sb == 0 {
        return 1.0;
    }
    match kind {
        Similarity::Dice => 2.0 * inter as f64 / (sa + sb) as f64,
        Similarity::Iou => inter as f64 / (sa + sb - inter) as f64,
    }
}

/// Plugin registration of [`S3f`].
pub(crate) struct S3fPlugin;

impl Plugin for S3fPlugin {
    const NAME: &'static str = "s3f";
    const KIND: StageKind = StageKind::Filter;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Self-learning filter: rank cases by agreement of the network prediction with the re-prompted segmenter, keep the top fraction";

    fn settings() -> Vec<ConfigField> {
        S3fSettings::schema()
    }

    fn create(settings: Settings, _ctx: &HostContext) -> Result<StageObject, PluginError> {
        let s = S3fSettings::read(&settings)?;
        let filter =
            S3f::new(s.similarity, s.keep_fraction, s.min_keep)?.with_size_strata(s.size_strata)?;
        Ok(StageObject::filter(filter))
    }
}

plugin_settings! {
    /// The settings of `s3f`, as declared (checked by [`S3f::new`]).
    struct S3fSettings {
        /// agreement measure between prediction and re-prompted mask
        similarity: Similarity = choice(Similarity::Dice.name(), Similarity::NAMES),
        /// fraction of cases kept, ceil(fraction * n) (paper: 0.8)
        keep_fraction: f64 = float(0.8),
        /// keep at least this many cases (when there are that many)
        min_keep: usize = integer(1),
        /// rank within this many groups of cases by pseudo-label size, keeping the top fraction
        /// of each (1 = one global ranking, the paper)
        size_strata: usize = integer(1),
    }
}

/// The filter with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct S3f {
    /// Agreement measure.
    pub similarity: Similarity,
    /// Fraction of cases kept.
    pub keep_fraction: f64,
    /// Lower bound on the number kept.
    pub min_keep: usize,
    /// Number of pseudo-label size groups ranked separately (1 = global).
    pub size_strata: usize,
}

impl S3f {
    /// Validates and builds the filter.
    pub(crate) fn new(
        similarity: Similarity,
        keep_fraction: f64,
        min_keep: usize,
    ) -> Result<Self, PluginError> {
        if !(keep_fraction > 0.0 && keep_fraction <= 1.0) {
            return Err(PluginError::config(format!(
                "s3f: `keep_fraction` must be in (0, 1], found {keep_fraction}"
            )));
        }
        Ok(Self {
            similarity,
            keep_fraction,
            min_keep,
            size_strata: 1,
        })
    }

    /// Ranks within `k` pseudo-label size groups (see the module docs).
    pub(crate) fn with_size_strata(mut self, k: usize) -> Result<Self, PluginError> {
        if k == 0 {
            return Err(PluginError::config(
                "s3f: `size_strata` must be at least 1 (1 = one global ranking)",
            ));
        }
        self.size_strata = k;
        Ok(self)
    }

    /// How many of `n` candidates are kept.
    pub(crate) fn keep_count(&self, n: usize) -> usize {
        self.fraction_of(n).max(self.min_keep.min(n)).min(n)
    }

    /// `ceil(keep_fraction * n)`, tolerant of rounding just above an integer.
    fn fraction_of(&self, n: usize) -> usize {
        (self.keep_fraction * n as f64 - 1e-9).ceil().max(0.0) as usize
    }

    /// The score of one candidate (see the module docs for empty masks).
    pub(crate) fn score(&self, c: &FilterCandidate) -> Result<f64, PluginError> {
        if c.pseudo_label.grid.shape != c.reference.grid.shape
            || c.pseudo_label.data.len() != c.reference.data.len()
        {
            return Err(PluginError::input(format!(
                "s3f: case `{}`: pseudo-label grid {:?} and reference grid {:?} differ",
                c.case_id, c.pseudo_label.grid.shape, c.reference.grid.shape
            )));
        }
        c.pseudo_label.grid.check_len(
            c.pseudo_label.data.len(),
            &format!("s3f: case `{}` pseudo-label", c.case_id),
        )?;
        if c.pseudo_label.data.iter().all(|&v| v == 0) {
            return Ok(0.0);
        }
        Ok(similarity(
            &c.pseudo_label.data,
            &c.reference.data,
            self.similarity,
        ))
    }

    /// One decision per candidate, in input order.
    pub(crate) fn decide(
        &self,
        candidates: &[FilterCandidate],
    ) -> Result<Vec<FilterDecision>, PluginError> {
        let scores = candidates
            .iter()
            .map(|c| self.score(c))
            .collect::<Result<Vec<f64>, _>>()?;
        let id = |i: usize| candidates[i].case_id.as_str();
        let by_score = |a: &usize, b: &usize| {
            scores[*b]
                .total_cmp(&scores[*a])
                .then_with(|| id(*a).cmp(id(*b)))
        };
        let n = candidates.len();
        let mut keep = vec![false; n];
        // Groups by pseudo-label size (rank order), then the top fraction of each.
        let size = |i: usize| {
            candidates[i]
                .pseudo_label
                .data
                .iter()
                .filter(|&&v| v != 0)
                .count()
        };
        let mut by_size: Vec<usize> = (0..n).collect();
        by_size.sort_by(|&a, &b| size(a).cmp(&size(b)).then_with(|| id(a).cmp(id(b))));
        let k = self.size_strata.min(n.max(1));
        for g in 0..k {
            let mut group: Vec<usize> = by_size[g * n / k..(g + 1) * n / k].to_vec();
            group.sort_by(by_score);
            for &i in group.iter().take(self.fraction_of(group.len())) {
                keep[i] = true;
            }
        }
        // At least `min_keep` overall: the best-scoring of the rest.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(by_score);
        let missing = self
            .keep_count(n)
            .saturating_sub(keep.iter().filter(|&&k| k).count());
        let extra: Vec<usize> = order
            .into_iter()
            .filter(|&i| !keep[i])
            .take(missing)
            .collect();
        for i in extra {
            keep[i] = true;
        }
        Ok(candidates
            .iter()
            .zip(scores)
            .zip(keep)
            .map(|((c, score), keep)| FilterDecision {
                case_id: c.case_id.clone(),
                score,
                keep,
            })
            .collect())
    }
}

impl Filter for S3f {
    fn select(
        &mut self,
        candidates: RSlice<'_, FilterCandidate>,
    ) -> RResult<RVec<FilterDecision>, PluginError> {
        self.decide(candidates.as_slice()).map(RVec::from).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clisc_sdk::{Grid, LabelVolume};

    fn mask(bits: &[u8]) -> LabelVolume {
        LabelVolume {
            grid: Grid::new([bits.len() as u32, 1, 1], [1.0; 3]),
            data: bits.to_vec().into(),
        }
    }

    fn cand(id: &str, p: &[u8], r: &[u8]) -> FilterCandidate {
        FilterCandidate {
            case_id: id.into(),
            pseudo_label: mask(p),
            reference: mask(r),
        }
    }

    fn filter(fraction: f64) -> S3f {
        S3f::new(Similarity::Dice, fraction, 1).unwrap()
    }

    #[test]
    fn keeps_the_best_agreeing_fraction_in_input_order() {
        let cs = vec![
            cand("a", &[1, 1, 0, 0], &[1, 0, 0, 0]), // dice 2/3
            cand("b", &[1, 1, 0, 0], &[1, 1, 0, 0]), // 1
            cand("c", &[1, 1, 0, 0], &[0, 0, 1, 1]), // 0
            cand("d", &[1, 1, 1, 1], &[1, 1, 1, 0]), // 6/7
            cand("e", &[1, 0, 0, 0], &[1, 1, 1, 1]), // 2/5
        ];
        let d = filter(0.8).decide(&cs).unwrap();
        let ids: Vec<&str> = d.iter().map(|x| x.case_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d", "e"]);
        assert_eq!(
            d.iter().map(|x| x.keep).collect::<Vec<_>>(),
            [true, true, false, true, true]
        );
        assert!((d[0].score - 2.0 / 3.0).abs() < 1e-12);
        assert!((d[3].score - 6.0 / 7.0).abs() < 1e-12);
        let kept_by_half: Vec<bool> = filter(0.5)
            .decide(&cs)
            .unwrap()
            .iter()
            .map(|x| x.keep)
            .collect();
        assert_eq!(
            kept_by_half,
            [true, true, false, true, false],
            "ceil(2.5) = 3 kept"
        );
    }

    #[test]
    fn size_strata_keep_the_best_of_small_and_large_lesions() {
        let cs = vec![
            cand("s1", &[1, 0, 0, 0], &[1, 1, 0, 0]), // small, 2/3
            cand("l1", &[1, 1, 1, 1], &[1, 1, 1, 1]), // large, 1
            cand("s2", &[0, 1, 0, 0], &[0, 0, 1, 0]), // small, 0
            cand("l2", &[1, 1, 1, 1], &[1, 1, 1, 0]), // large, 6/7
            cand("s3", &[0, 0, 1, 0], &[0, 0, 1, 1]), // small, 2/3
            cand("l3", &[1, 1, 1, 0], &[1, 1, 0, 0]), // large, 4/5
        ];
        let kept = |f: S3f| -> Vec<String> {
            f.decide(&cs)
                .unwrap()
                .iter()
                .filter(|d| d.keep)
                .map(|d| d.case_id.to_string())
                .collect()
        };
        // One global ranking keeps the three large lesions only.
        assert_eq!(kept(filter(0.5)), ["l1", "l2", "l3"]);
        // Two size groups: the best ceil(1.5) = 2 of each.
        let strata = filter(0.5).with_size_strata(2).unwrap();
        assert_eq!(kept(strata), ["s1", "l1", "l2", "s3"]);
        // More groups than cases: every case is its own group.
        assert_eq!(kept(filter(0.5).with_size_strata(9).unwrap()).len(), 6);
        // min_keep still holds overall.
        let min = S3f::new(Similarity::Dice, 0.1, 5)
            .unwrap()
            .with_size_strata(2)
            .unwrap();
        assert_eq!(kept(min).len(), 5);
        assert!(filter(0.5).with_size_strata(0).is_err());
    }

    #[test]
    fn iou_is_jaccard() {
        let s = S3f::new(Similarity::Iou, 1.0, 1).unwrap();
        let d = s
            .decide(&[cand("a", &[1, 1, 0, 0], &[1, 0, 1, 0])])
            .unwrap();
        assert!((d[0].score - 1.0 / 3.0).abs() < 1e-12);
        assert!(d[0].keep);
    }

    #[test]
    fn ties_are_broken_by_case_id_not_input_order() {
        let same = |id: &str| cand(id, &[1, 0], &[1, 0]);
        let d1 = filter(0.5)
            .decide(&[same("z"), same("m"), same("a"), same("q")])
            .unwrap();
        let kept: Vec<&str> = d1
            .iter()
            .filter(|x| x.keep)
            .map(|x| x.case_id.as_str())
            .collect();
        assert_eq!(kept, ["m", "a"]);
        let d2 = filter(0.5)
            .decide(&[same("a"), same("q"), same("m"), same("z")])
            .unwrap();
        let kept2: Vec<&str> = d2
            .iter()
            .filter(|x| x.keep)
            .map(|x| x.case_id.as_str())
            .collect();
        assert_eq!(kept2, ["a", "m"]);
    }

    #[test]
    fn empty_predictions_score_zero_and_small_sets_keep_one() {
        let d = filter(0.8)
            .decide(&[cand("a", &[0, 0], &[0, 0]), cand("b", &[1, 0], &[0, 0])])
            .unwrap();
        assert_eq!(d[0].score, 0.0, "two empty masks are not an agreement");
        assert_eq!(d[1].score, 0.0);
        assert_eq!(d.iter().filter(|x| x.keep).count(), 2, "ceil(0.8 * 2) = 2");
        let one = filter(0.1).decide(&[cand("only", &[1], &[0])]).unwrap();
        assert!(one[0].keep, "a single candidate is kept");
        assert!(filter(0.8).decide(&[]).unwrap().is_empty());
        let none_min = S3f::new(Similarity::Dice, 0.1, 0).unwrap();
        assert_eq!(none_min.keep_count(3), 1);
        assert_eq!(none_min.keep_count(0), 0);
        assert_eq!(
            filter(0.8).keep_count(10),
            8,
            "no rounding up from float noise"
        );
        assert_eq!(
            S3f::new(Similarity::Dice, 0.5, 4).unwrap().keep_count(5),
            4,
            "min_keep wins"
        );
    }

    #[test]
    fn rejects_bad_settings_and_mismatched_grids() {
        assert!(S3f::new(Similarity::Dice, 0.0, 1).is_err());
        assert!(S3f::new(Similarity::Dice, 1.5, 1).is_err());
        let e = filter(0.8)
            .decide(&[cand("a", &[1, 0], &[1, 0, 0])])
            .unwrap_err();
        assert!(e.message.contains("`a`"), "{}", e.message);
    }

    #[test]
    fn plugin_reads_its_settings() {
        let s = Settings::parse(
            "s3f",
            "similarity = \"iou\"\nkeep_fraction = 0.5",
            &S3fPlugin::settings(),
        )
        .unwrap();
        let ctx = HostContext::for_tests("/tmp", 0);
        let StageObject::Filter(mut f) = S3fPlugin::create(s, &ctx).unwrap() else {
            panic!("not a filter")
        };
        let cs = [cand("a", &[1, 1], &[1, 0]), cand("b", &[1, 1], &[1, 1])];
        let d = f.select(RSlice::from_slice(&cs)).unwrap();
        assert!((d[0].score - 0.5).abs() < 1e-12 && !d[0].keep && d[1].keep);
    }
}
