//! # clisc host runtime
//!
//! The runtime side of clisc: plugin registry and loader, pipeline
//! configuration, NIfTI I/O, datasets, metrics, the pipeline runner, the
//! report and the `clisc` CLI. Stages are never called directly: every
//! stage, built-in or external, is reached through the traits of
//! [`clisc_sdk`].

pub mod cli;
pub mod commands;
pub mod progress;
pub mod loader;
pub mod dataset;
pub mod dicom;
pub mod metrics;
pub mod nifti_io;
pub mod preprocess;
pub mod splits;
pub mod synth;
pub mod pipeline;
pub mod registry;
pub mod report;
pub mod scaffold;
pub mod montage;

// Built-in plugin crates register themselves with `inventory`; naming them
// here makes sure the linker keeps them.
use clisc_adapters as _;
use clisc_filters as _;
use clisc_prompt_generators as _;
use clisc_promptable_segmenters as _;
use clisc_pseudo_labelers as _;
use clisc_roi_extractors as _;
use clisc_volumetric_segmenters as _;
