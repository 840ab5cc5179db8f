//! # clisc pipeline
//!
//! Everything between a pipeline file and a finished run: the file's
//! settings ([`config`]), datasets and splits ([`dataset`], [`splits`]),
//! preprocessing onto the working grid ([`preprocess`]), the plugin
//! registry and loader ([`registry`], [`loader`]), the runner that drives
//! the stages through the traits of `clisc-sdk` ([`run`]) and its work
//! folder of cached artefacts ([`workdir`]), evaluation ([`metrics`]), and
//! the model files a run leaves ([`model_file`]).
//!
//! Data flows one way: dataset -> stages -> artefacts in the work folder
//! -> summary (and `clisc-report`'s HTML report).

pub mod artefacts;
pub mod cases;
pub mod config;
pub mod device;
pub mod infer;
pub mod io;
pub mod loader;
pub mod lock;
pub mod model_file;
pub mod prepare;
pub mod progress;
pub mod registry;
pub mod run;
pub mod selection;
pub mod shard;
pub mod stages;
pub mod standalone;
pub mod summary;
pub mod weights;
pub mod workdir;

pub use config::{load, Pipeline, StageSlot, StageSpec};
pub use run::{RunOptions, Runner};
pub use summary::RunSummary;

// Unit tests validate pipelines against the built-in plugins.
#[cfg(test)]
use clisc_builtins as _;
