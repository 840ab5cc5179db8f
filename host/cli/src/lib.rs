//! # clisc command-line tool
//!
//! Argument parsing and printing only: every command is a thin layer over
//! the library crates (`clisc-pipeline` for runs, inference and the plugin
//! registry, `clisc-dicom` and `clisc-dicom-node` for DICOM, `clisc-cluster`
//! for Slurm, `clisc-report`, `clisc-synth`). Stages are never called
//! directly: every stage, built-in or external, is reached through the
//! registry and the traits of [`clisc_sdk`]. See docs/architecture.md.
#![warn(unreachable_pub)]

pub mod cli;
pub mod commands;
pub mod hugepages;
pub mod scaffold;

// The built-in plugins register themselves with `inventory` when linked.
use clisc_builtins as _;
