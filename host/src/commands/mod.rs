//! One module per `clisc` subcommand.

pub mod check;
pub mod dicom;
pub mod plugins;
pub mod sam;
