//! The pipeline: configuration, work folder with cached artefacts, and the
//! runner that drives the stages through the SDK traits.

pub mod config;
pub mod workdir;

pub use config::{load, Pipeline, StageSlot, StageSpec};
