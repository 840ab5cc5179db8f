//! The pipeline: configuration, work folder with cached artefacts, and the
//! runner that drives the stages through the SDK traits.

pub mod artefacts;
pub mod cases;
pub mod config;
pub mod io;
pub mod prepare;
pub mod run;
pub mod selection;
pub mod shard;
pub mod stages;
pub mod summary;
pub mod weights;
pub mod workdir;

pub use config::{load, Pipeline, StageSlot, StageSpec};
pub use run::{RunOptions, Runner};
pub use summary::RunSummary;
