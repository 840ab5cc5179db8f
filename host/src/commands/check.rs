//! `clisc check FILE`: validate a pipeline and print it resolved.

use crate::loader::env_search_path;
use crate::pipeline;
use crate::registry::Registry;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `clisc check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The pipeline file.
    pub file: PathBuf,
}

/// Validates the file; prints the resolved pipeline (defaults filled in).
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let mut registry = Registry::with_search_path(&env_search_path())
        .context("loading plugins from CLISC_PLUGIN_PATH")?;
    let pipeline = pipeline::load(&args.file, &mut registry)?;
    print!("{}", pipeline.to_toml());
    Ok(())
}
