//! `clisc run --config PIPELINE.toml`: run a pipeline end to end.

use crate::loader::env_search_path;
use crate::pipeline::{self, workdir::Step, RunOptions};
use crate::progress::Bars;
use crate::registry::Registry;
use anyhow::{anyhow, Context};
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `clisc run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Rerun this step and every later one (pseudo-labels, roi, prompts,
    /// pseudo-masks, network-1, filter, network-2, predictions, evaluation).
    #[arg(long, value_parser = parse_step)]
    pub from: Option<Step>,
    /// Rerun only this step; earlier steps must already be cached.
    #[arg(long, value_parser = parse_step, conflicts_with = "from")]
    pub only: Option<Step>,
    /// Print the run summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_step(s: &str) -> Result<Step, String> {
    Step::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        format!("unknown step `{s}` (steps: {})", names.join(", "))
    })
}

/// Runs the pipeline; writes the report into the work folder.
pub fn run(args: RunArgs, quiet: bool) -> anyhow::Result<()> {
    let summary = run_pipeline(
        &args.config,
        RunOptions {
            from: args.from,
            only: args.only,
        },
        quiet,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(())
}

/// Loads, validates and runs a pipeline file; returns its summary.
pub fn run_pipeline(
    config: &Path,
    options: RunOptions,
    quiet: bool,
) -> anyhow::Result<pipeline::RunSummary> {
    let mut registry = Registry::with_search_path(&env_search_path())
        .context("loading plugins from CLISC_PLUGIN_PATH")?;
    let pipeline = pipeline::load(config, &mut registry)?;
    let bars = Bars::new(quiet);
    let cases = pipeline::prepare::prepare_cases(&pipeline)
        .with_context(|| format!("preparing the dataset of {}", config.display()))?;
    let mut runner = pipeline::Runner::new(
        &pipeline,
        &registry,
        pipeline.run.device.clone(),
        cases,
        bars,
        options,
    )?;
    let outcome = runner.run();
    // A failed run still gets a report of what it did; its error comes first.
    let report = crate::report::write_report(&runner);
    if let (Err(_), Ok(path)) = (&outcome, &report) {
        tracing::info!("report of the partial run: {}", path.display());
    }
    outcome?;
    let report = report.map_err(|e| {
        anyhow!(
            "writing the report in {}: {e:#}",
            runner.work_dir().display()
        )
    })?;
    tracing::info!("report: {}", report.display());
    Ok(runner.summary.clone())
}
