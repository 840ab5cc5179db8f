//! # Built-in pseudo-labelers
//!
//! Stage 1a of CLISC: label every axial slice "tumor / no tumor" without
//! human annotations.
//!
//! * `flair-intensity` ([`flair_intensity`]): weight-free, from FLAIR
//!   hyperintensity statistics; lets the whole pipeline run without CLIP.
//! * `clip` ([`clip`]): zero-shot CLIP ViT labels with the paper's prompts.
//! * [`smoothing`]: the reference code's neighbour-majority smoothing along z.

pub mod clip;
pub mod flair_intensity;
pub mod smoothing;

clisc_sdk::register_builtin!(flair_intensity::FlairIntensityPlugin);
clisc_sdk::register_builtin!(clip::ClipPlugin);
