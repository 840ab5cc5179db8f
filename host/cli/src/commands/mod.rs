//! One module per `clisc` subcommand.

pub mod check;
pub mod clip;
pub mod demo;
pub mod dicom;
pub mod eval;
pub mod infer;
pub mod plugins;
pub mod run;
pub mod sam;
pub mod slurm;
pub mod split;
pub mod synth;
