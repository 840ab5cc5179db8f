//! # Built-in pseudo-labelers
//!
//! Stage 1a of CLISC: label every axial slice "tumor / no tumor" without
//! human annotations.
//!
//! * `flair-intensity` ([`flair_intensity`]): weight-free, from FLAIR
//!   hyperintensity statistics; lets the whole pipeline run without CLIP.

pub mod flair_intensity;

clisc_sdk::register_builtin!(flair_intensity::FlairIntensityPlugin);
