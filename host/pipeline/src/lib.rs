//! # clisc pipeline
//!
//! Everything between a pipeline file and a finished run: the file's
//! settings ([`config`]), the cases prepared for the stages ([`prepare`],
//! [`cases`]), the runner that drives the stages through the traits of
//! `clisc-sdk` ([`run`], [`stages`]) and the artefacts it caches in the
//! work folder of `clisc-workdir` ([`artefacts`], [`io`]), its errors
//! ([`error`]), shards of per-case steps ([`shard`]), the run summary ([`summary`]), and
//! the stages `clisc check` starts to check what they pass on ([`probe`]).
//! Progress is shown through `clisc-progress`.
//! The model files a run leaves are written with `clisc-inference`, which
//! also applies them to new volumes.
//!
//! Data flows one way: dataset (`clisc-dataset`) -> stages (found in
//! `clisc-registry`) -> artefacts in the work folder -> summary
//! (evaluated with `clisc-metrics`; `clisc-report` turns it into HTML).
#![warn(unreachable_pub)]

pub mod artefacts;
pub mod cases;
pub mod config;
pub mod error;
pub mod io;
pub mod prepare;
pub mod probe;
pub mod promptable;
pub mod run;
pub mod selection;
pub mod shard;
pub mod stages;
pub mod summary;
pub mod weights;

pub use config::{load, Pipeline, StageSlot, StageSpec};
pub use error::PipelineError;
pub use run::{RunOptions, Runner};
pub use summary::RunSummary;

// Unit tests validate pipelines against the built-in plugins.
#[cfg(test)]
use clisc_builtins as _;
