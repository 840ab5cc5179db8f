//! # Built-in prompt generators
//!
//! Stage 2a of CLISC: turn an ROI into prompts for a promptable segmenter.
//!
//! * `box-points` ([`box_points`]): per slice, the ROI's bounding box
//!   (dilated), positive points among the ROI's bright pixels and negative
//!   points at the box corners, as in the CLISC reference code.
//!
//! The JSON form of the prompts a pipeline saves per case is the host's
//! (`clisc_pipeline::artefacts::prompts_to_json`), shared by every
//! prompt generator.

pub mod box_points;

clisc_sdk::register_builtin!(box_points::BoxPointsPlugin);
