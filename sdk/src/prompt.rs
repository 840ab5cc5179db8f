//! Prompts for promptable segmenters (boxes and points on a slice).

use abi_stable::std_types::{ROption, RVec};
use abi_stable::StableAbi;

/// A box in pixel coordinates, corners inclusive: `x` = column, `y` = row.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct BoxXyxy {
    /// Left column.
    pub x0: f32,
    /// Top row.
    pub y0: f32,
    /// Right column.
    pub x1: f32,
    /// Bottom row.
    pub y1: f32,
}

/// A point prompt; `positive` = inside the object, otherwise background.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct PromptPoint {
    /// Column.
    pub x: f32,
    /// Row.
    pub y: f32,
    /// Foreground (true) or background (false) click.
    pub positive: bool,
}

/// All prompts for one object on one axial slice.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct PromptSet {
    /// Axial slice index `z`.
    pub slice: u32,
    /// Optional box.
    pub bbox: ROption<BoxXyxy>,
    /// Positive and negative points.
    pub points: RVec<PromptPoint>,
}

/// The prompts of one case: zero or more prompt sets per slice; slices
/// without a prompt set are background.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct CasePrompts {
    /// Prompt sets, ordered by slice.
    pub sets: RVec<PromptSet>,
}
