//! # clisc host runtime
//!
//! The runtime side of clisc: plugin registry and loader, pipeline
//! configuration, NIfTI I/O, datasets, metrics, the pipeline runner, the
//! report and the `clisc` CLI. Stages are never called directly: every
//! stage, built-in or external, is reached through the traits of
//! [`clisc_sdk`].

pub mod cli;
pub mod commands;
pub mod dataset;
pub mod device;
pub mod dicom;
pub mod hugepages;
pub mod loader;
pub mod metrics;
pub mod model_file;
pub mod montage;
pub mod nifti_io;
pub mod pipeline;
pub mod preprocess;
pub mod progress;
pub mod registry;
pub mod report;
pub mod scaffold;
pub mod slurm;
pub mod splits;
pub mod synth;

// Built-in plugin crates register themselves with `inventory`; naming them
// here makes sure the linker keeps them.
use clisc_adapters as _;
use clisc_filters as _;
use clisc_prompt_generators as _;
use clisc_promptable_segmenters as _;
use clisc_pseudo_labelers as _;
use clisc_roi_extractors as _;
use clisc_volumetric_segmenters as _;
