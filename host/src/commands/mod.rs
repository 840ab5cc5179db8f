//! One module per `clisc` subcommand.

pub mod plugins;
