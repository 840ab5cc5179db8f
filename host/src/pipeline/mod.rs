//! The pipeline: configuration, work folder with cached artefacts, and the
//! runner that drives the stages through the SDK traits.

pub mod artefacts;
pub mod config;
pub mod stages;
pub mod workdir;

pub use config::{load, Pipeline, StageSlot, StageSpec};
