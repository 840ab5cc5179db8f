//! `clisc check FILE`: validate a pipeline and print it resolved.

use anyhow::Context;
use clap::Args;
use clisc_pipeline::probe::build_passthrough_stages;
use std::path::PathBuf;

/// Arguments of `clisc check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The pipeline file.
    pub file: PathBuf,
    /// Do not start the stages that pass settings on (process plugins),
    /// e.g. on a login node without their programs: what they receive is
    /// then checked when a run starts them.
    #[arg(long)]
    pub no_start: bool,
}

/// Validates the file (starting, once, each stage that passes settings on
/// to something only it can start, such as a process plugin); prints the
/// resolved pipeline (defaults filled in) and, as closing comments, the
/// stages so started and the device a run would use on this machine (or
/// why it could not run here).
pub(crate) fn run(args: CheckArgs) -> anyhow::Result<()> {
    let mut registry = super::PluginPathArgs::default().registry()?;
    let mut pipeline = clisc_pipeline::load(&args.file, &mut registry)?;
    // `[slurm]` belongs to clisc-cluster: validated there, printed resolved.
    if let Some(slurm) = clisc_cluster::settings::from_pipeline(&pipeline)? {
        let resolved = toml::Table::try_from(&slurm).context("printing [slurm]")?;
        pipeline.slurm = Some(resolved);
    }
    // Which device is a fact of this machine, not of the file: a `cuda`
    // pipeline checked on a GPU-less login node is still valid.
    let device = clisc_registry::device::resolve("[run] device", &pipeline.run.device);
    // Stages that pass settings on (process plugins) are started once, so
    // that what they receive is checked too.
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let on = device.as_deref().unwrap_or("cpu");
    let started = if args.no_start {
        Vec::new()
    } else {
        build_passthrough_stages(&pipeline, &args.file, &text, &registry, on)?
    };
    print!("{}", pipeline.to_toml());
    for slot in started {
        println!(
            "# [stages.{}] was started once to check the settings it passes on: accepted",
            slot.key()
        );
    }
    match device {
        Ok(device) => println!("# a run on this machine would use device {device}"),
        Err(e) => println!("# a run on this machine would fail: {e}"),
    }
    Ok(())
}
