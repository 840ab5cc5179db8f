//! # clisc weight-free stages
//!
//! The built-in stages that need no pretrained weights and no libtorch, so
//! that a whole pipeline runs on any machine without downloads:
//!
//! * `flair-intensity` (`flair_intensity`, a pseudo-labeler): slice
//!   labels from FLAIR hyperintensity statistics, in place of CLIP;
//! * `box-points` ([`box_points`], a prompt generator): per slice, the
//!   ROI's bounding box (dilated), positive points among the ROI's bright
//!   pixels and negative points at the box corners, as the CLISC code;
//! * `classic-prompt` ([`classic`], a promptable segmenter): seeded region
//!   growing with SAM's contract, in place of SAM;
//! * `s3f` ([`s3f`], a filter): the self-learning filter, which keeps the
//!   cases whose prediction agrees best with the re-prompted segmenter;
//! * [`smoothing`]: the reference code's neighbour-majority smoothing of
//!   slice labels along z (also used by `clip`).
//!
//! The JSON form of the prompts a pipeline saves per case is the host's
//! (`clisc_pipeline::artefacts::prompts_to_json`), shared by every prompt
//! generator.
#![warn(unreachable_pub)]

pub mod box_points;
pub mod classic;
pub(crate) mod flair_intensity;
pub mod s3f;
pub mod smoothing;

clisc_sdk::register_builtin!(
    flair_intensity::FlairIntensityPlugin,
    box_points::BoxPointsPlugin,
    classic::ClassicPromptPlugin,
    s3f::S3fPlugin
);
