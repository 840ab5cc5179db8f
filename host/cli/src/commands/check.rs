//! `clisc check FILE`: validate a pipeline and print it resolved.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `clisc check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The pipeline file.
    pub file: PathBuf,
}

/// Validates the file; prints the resolved pipeline (defaults filled in)
/// and, as a closing comment, the device a run would use on this machine
/// (or why it could not run here).
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let mut registry = super::PluginPathArgs::default().registry()?;
    let mut pipeline = clisc_pipeline::load(&args.file, &mut registry)?;
    // `[slurm]` belongs to clisc-cluster: validated there, printed resolved.
    if let Some(slurm) = clisc_cluster::settings::from_pipeline(&pipeline)? {
        let resolved = toml::Table::try_from(&slurm).context("printing [slurm]")?;
        pipeline.slurm = Some(resolved);
    }
    print!("{}", pipeline.to_toml());
    // Which device is a fact of this machine, not of the file: a `cuda`
    // pipeline checked on a GPU-less login node is still valid.
    match clisc_registry::device::resolve("[run] device", &pipeline.run.device) {
        Ok(device) => println!("# a run on this machine would use device {device}"),
        Err(e) => println!("# a run on this machine would fail: {e}"),
    }
    Ok(())
}
