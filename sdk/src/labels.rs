//! Per-slice pseudo-labels produced by a pseudo-labeler.

use abi_stable::std_types::RVec;
use abi_stable::StableAbi;

/// The pseudo-label of one axial slice.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct SliceLabel {
    /// Axial slice index `z` in the volume the labeler saw.
    pub index: u32,
    /// 1 = tumor, 0 = no tumor.
    pub label: u8,
    /// Probability of the chosen label (the labeler's confidence).
    pub probability: f32,
    /// Whether the slice is confident enough to train on.
    pub kept: bool,
}

/// Labels for every axial slice of one volume, in slice order.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct SlicePseudoLabels {
    /// One entry per slice.
    pub slices: RVec<SliceLabel>,
}

impl SlicePseudoLabels {
    /// Number of kept slices labelled tumor.
    pub fn kept_positive(&self) -> usize {
        self.slices
            .iter()
            .filter(|s| s.kept && s.label == 1)
            .count()
    }
    /// Number of kept slices labelled no tumor.
    pub fn kept_negative(&self) -> usize {
        self.slices
            .iter()
            .filter(|s| s.kept && s.label == 0)
            .count()
    }
}
