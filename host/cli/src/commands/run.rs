//! `clisc run --config PIPELINE.toml`: run a pipeline end to end.

use anyhow::Context;
use clap::Args;
use clisc_pipeline::shard::{Shard, ShardRole};
use clisc_pipeline::{cases::Split, RunOptions};
use clisc_progress::Bars;
use clisc_workdir::lock::{LockMode, RunLock};
use clisc_workdir::Step;
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
    /// Run the `--only` step (pseudo-labels, prompts, pseudo-masks, filter
    /// or predictions) for one shard of its cases: `i/n` (0-based), or
    /// `slurm` to take it from the Slurm array task (`SLURM_ARRAY_TASK_ID`
    /// of `SLURM_ARRAY_TASK_COUNT`). Shards share the work folder.
    #[arg(long, requires = "only", value_name = "i/n|slurm")]
    pub shard: Option<String>,
    /// Finish the sharded `--only` step: check that every case was done
    /// exactly once by a finished shard (listing the missing ones), then
    /// do what remains (summary, filter selection).
    #[arg(long, requires = "only", conflicts_with = "shard")]
    pub merge: bool,
    /// Print the run summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn shard_role(args: &RunArgs) -> anyhow::Result<Option<ShardRole>> {
    Ok(match (&args.shard, args.merge) {
        (Some(spec), _) if spec == "slurm" => Some(ShardRole::Part(Shard::from_slurm_env(|k| {
            std::env::var(k).ok()
        })?)),
        (Some(spec), _) => Some(ShardRole::Part(Shard::parse(spec)?)),
        (None, true) => Some(ShardRole::Merge),
        (None, false) => None,
    })
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
            shard: shard_role(&args)?,
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
) -> anyhow::Result<clisc_pipeline::RunSummary> {
    let mut registry = super::PluginPathArgs::default().registry()?;
    let pipeline = clisc_pipeline::load(config, &mut registry)?;
    let device = clisc_registry::device::resolve("[run] device", &pipeline.run.device)
        .with_context(|| format!("{}", config.display()))?;
    tracing::info!("device: {device}");
    let bars = Bars::new(quiet);
    let preparing = || format!("preparing the dataset of {}", config.display());
    let part = match options.shard {
        Some(ShardRole::Part(part)) => Some(part),
        _ => None,
    };
    // Before any work: a second run on the same folder stops here.
    let (mode, what) = match (options.shard, options.only) {
        (Some(ShardRole::Part(part)), Some(step)) => {
            (LockMode::Shared, format!("shard {part} of {}", step.name()))
        }
        _ => (LockMode::Exclusive, "clisc run".to_string()),
    };
    let _lock = RunLock::acquire(&pipeline.run.output, mode, &what)?;
    let Some(part) = part else {
        let cases = clisc_pipeline::prepare::prepare_cases(&pipeline).with_context(preparing)?;
        let mut runner =
            clisc_pipeline::Runner::new(&pipeline, &registry, device, cases, bars, options)?;
        return finish(runner.run(), &runner);
    };
    // A shard prepares only its own cases (of every split: its share of
    // the training cases and of the test cases) and writes no report.
    let splits = clisc_pipeline::prepare::dataset_splits(&pipeline).with_context(preparing)?;
    let mut mine = std::collections::BTreeSet::new();
    for split in [Split::Train, Split::Test] {
        let ids: Vec<String> = splits
            .iter()
            .filter(|(_, s)| **s == split)
            .map(|(id, _)| id.clone())
            .collect();
        mine.extend(part.select(&ids));
    }
    let (cases, splits) =
        clisc_pipeline::prepare::prepare_selected(&pipeline, &|id| mine.contains(id))
            .with_context(preparing)?;
    let mut runner =
        clisc_pipeline::Runner::new(&pipeline, &registry, device, cases, bars, options)?
            .with_splits(&splits);
    runner.run()?;
    tracing::info!(
        "shard {part} of step `{}` done",
        options.only.map_or("", |s| s.name())
    );
    Ok(runner.summary.clone())
}

/// Writes the report of a finished (or failed) run; the run's own error
/// comes first.
fn finish(
    outcome: Result<(), clisc_pipeline::PipelineError>,
    runner: &clisc_pipeline::Runner<'_>,
) -> anyhow::Result<clisc_pipeline::RunSummary> {
    // A failed run still gets a report of what it did; its error comes first.
    let report = clisc_report::write_report(runner.work_dir(), &runner.summary, runner.cases());
    if let (Err(_), Ok(path)) = (&outcome, &report) {
        tracing::info!("report of the partial run: {}", path.display());
    }
    outcome?;
    let report =
        report.with_context(|| format!("writing the report in {}", runner.work_dir().display()))?;
    tracing::info!("report: {}", report.display());
    Ok(runner.summary.clone())
}
