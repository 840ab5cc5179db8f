//! # Built-in filters
//!
//! The last stage family of CLISC: judge the quality of pseudo-labels
//! without ground truth and keep the trustworthy cases for retraining.
//!
//! * `s3f` ([`s3f`]): the self-learning filter (S3F). Scores each
//!   network prediction by its agreement with the promptable segmenter
//!   re-prompted from that prediction, and keeps the best fraction.
//!   [`s3f::reprompt_source`] prepares the prediction the re-prompt is
//!   built from (largest 3D connected component).

pub mod s3f;

clisc_sdk::register_builtin!(s3f::S3fPlugin);
