//! `clisc slurm submit --config PIPELINE.toml`: run a pipeline on a Slurm
//! cluster as a chain of job arrays and single jobs (see [`clisc_cluster`]).

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use clisc_cluster::plan::{self, Plan};
use clisc_cluster::script::{self, ScriptContext};
use clisc_cluster::settings::SlurmSettings;
use clisc_pipeline::config::{NetworkTargets, StageSlot};
use clisc_pipeline::stages::StageFactory;
use clisc_progress::Bars;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `clisc slurm ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum SlurmCommand {
    /// Write and submit the sbatch scripts that complete a run: job arrays
    /// for per-case steps, single jobs for training, chained by
    /// dependencies. Steps already done are skipped; after a failure,
    /// submitting again reruns only the shards with missing cases.
    Submit(SubmitArgs),
}

/// Arguments of `clisc slurm submit`.
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The pipeline file (its `[slurm]` section sets shards and resources).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print the scripts instead of submitting them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs a `clisc slurm` command.
pub(crate) fn run(command: SlurmCommand) -> anyhow::Result<()> {
    match command {
        SlurmCommand::Submit(args) => submit(&args),
    }
}

fn submit(args: &SubmitArgs) -> anyhow::Result<()> {
    let config = std::path::absolute(&args.config)
        .with_context(|| format!("resolving {}", args.config.display()))?;
    let mut registry = super::PluginPathArgs::default().registry()?;
    let pipeline = clisc_pipeline::load(&config, &mut registry)?;
    let supervised = pipeline
        .stage(StageSlot::VolumetricSegmenter)
        .is_some_and(|s| s.host.targets() == NetworkTargets::GroundTruth);
    if supervised {
        bail!(
            "{}: [stages.volumetric_segmenter] targets = \"ground-truth\" (the supervised baseline) is one network job with no per-case stage to shard; run it with `clisc run` (inside a single Slurm job if needed)",
            config.display()
        );
    }
    let settings = clisc_cluster::settings::from_pipeline(&pipeline)?.unwrap_or_else(|| {
        tracing::info!(
            "{} has no [slurm] section: {} shards per step, the cluster's default resources",
            config.display(),
            clisc_cluster::settings::DEFAULT_SHARDS
        );
        SlurmSettings {
            shards: clisc_cluster::settings::DEFAULT_SHARDS,
            clisc: None,
            setup: vec![],
            defaults: Default::default(),
            steps: Default::default(),
        }
    });
    let splits = clisc_pipeline::prepare::dataset_splits(&pipeline)
        .with_context(|| format!("reading the dataset of {}", config.display()))?;
    let factory = StageFactory {
        pipeline: &pipeline,
        registry: &registry,
        device: pipeline.run.device.clone(),
        bars: Bars::new(true),
    };
    let plan = plan::plan(&pipeline, &factory, &splits, &settings)
        .with_context(|| format!("reading the work folder {}", pipeline.run.output.display()))?;
    let done: Vec<&str> = plan.done.iter().map(|s| s.name()).collect();
    if !done.is_empty() {
        eprintln!("already done (skipped): {}", done.join(", "));
    }
    if plan.jobs.is_empty() {
        eprintln!(
            "nothing to submit: the run in {} is complete",
            pipeline.run.output.display()
        );
        return Ok(());
    }
    let clisc = match &settings.clisc {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating the clisc binary")?,
    };
    let dir = script::slurm_dir(&pipeline.run.output);
    let ctx = ScriptContext {
        clisc,
        config,
        logs: dir.join("logs"),
        setup: settings.setup.clone(),
    };
    if args.dry_run {
        print_scripts(&plan, &ctx)
    } else {
        submit_scripts(&plan, &ctx, &dir)
    }
}

fn print_scripts(plan: &Plan, ctx: &ScriptContext) -> anyhow::Result<()> {
    println!(
        "# {} jobs, each waiting for the ones named in its --dependency (<name>: the id of that job, known once submitted).",
        plan.jobs.len()
    );
    for (n, job) in plan.jobs.iter().enumerate() {
        let dependency = plan.dependency(n, |j| format!("<{}>", plan.jobs[j].name));
        let script = script::render(job, ctx, dependency.as_deref())?;
        println!(
            "\n# ==== {} ({})",
            script::file_name(n, job),
            script::describe(job)
        );
        print!("{script}");
    }
    Ok(())
}

fn submit_scripts(plan: &Plan, ctx: &ScriptContext, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(&ctx.logs)
        .with_context(|| format!("creating {}", ctx.logs.display()))?;
    let mut ids: Vec<String> = Vec::new();
    for (n, job) in plan.jobs.iter().enumerate() {
        let dependency = plan.dependency(n, |j| ids[j].clone());
        let script = script::render(job, ctx, dependency.as_deref())?;
        let path = dir.join(script::file_name(n, job));
        std::fs::write(&path, &script).with_context(|| format!("writing {}", path.display()))?;
        let id = sbatch(&path).map_err(|e| {
            if ids.is_empty() {
                e
            } else {
                anyhow!(
                    "{e:#}\nthe jobs submitted before it are queued: `scancel {}` cancels them",
                    ids.join(" ")
                )
            }
        })?;
        let array = match &job.task {
            plan::Task::Array { tasks, .. } => plan::array_spec(tasks),
            plan::Task::Single => "-".into(),
        };
        // job id, name, array tasks, dependency: one line per job, for
        // people and scripts.
        let after = dependency.unwrap_or_else(|| "-".into());
        println!("{id}\t{}\t{array}\t{after}", job.name);
        ids.push(id);
    }
    eprintln!(
        "submitted {} jobs; scripts in {}, logs in {}",
        plan.jobs.len(),
        dir.display(),
        ctx.logs.display()
    );
    Ok(())
}

/// Submits a script; returns the job id.
fn sbatch(script: &Path) -> anyhow::Result<String> {
    let output = Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("`sbatch` was not found on PATH: submit from a Slurm login node")
            } else {
                anyhow!("running sbatch: {e}")
            }
        })?;
    if !output.status.success() {
        bail!(
            "sbatch {} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    // `--parsable` prints `id` or `id;cluster`.
    let id = stdout
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        bail!("sbatch {} printed no job id: {stdout:?}", script.display());
    }
    Ok(id)
}
