//! One module per `clisc` subcommand.

pub mod check;
pub mod demo;
pub mod clip;
pub mod dicom;
pub mod infer;
pub mod plugins;
pub mod run;
pub mod sam;
pub mod synth;
pub mod eval;
pub mod split;
