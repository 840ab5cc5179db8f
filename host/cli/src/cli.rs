//! Command-line interface: argument parsing and dispatch to `commands::*`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Unsupervised brain tumor segmentation (CLISC) with pluggable stages.
#[derive(Debug, Parser)]
#[command(name = "clisc", version, about)]
pub(crate) struct Cli {
    /// Only errors on stderr; no progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Inspect the available plugins.
    #[command(subcommand)]
    Plugins(crate::commands::plugins::PluginsCommand),
    /// Validate a pipeline file and print it resolved (defaults filled in).
    Check(crate::commands::check::CheckArgs),
    /// Write BraTS-like synthetic cases (four modalities + labels, BraTS 2020 layout).
    Synth(crate::commands::synth::SynthArgs),
    /// Score predictions against ground truth (Dice, HD95, sensitivity, specificity).
    Eval(crate::commands::eval::EvalArgs),
    /// Write a reproducible train/valid/test split of a dataset as CSV.
    Split(crate::commands::split::SplitArgs),
    /// DICOM studies: list series, convert to NIfTI.
    #[command(subcommand)]
    Dicom(crate::commands::dicom::DicomCommand),
    /// Run a pipeline end to end (cached, resumable).
    Run(crate::commands::run::RunArgs),
    /// Synthesise a small dataset, run the weight-free demo pipeline, write the report.
    Demo(crate::commands::demo::DemoArgs),
    /// Segment one slice of a volume (or a 2D image) from box/point prompts with a promptable-segmenter plugin (default `sam`).
    Sam(crate::commands::sam::SamArgs),
    /// Slice pseudo-labels of one volume (or 2D image) from a pseudo-labeler plugin (default `clip`).
    Clip(crate::commands::clip::ClipArgs),
    /// Segment new volumes with a trained network (model file from a pipeline run).
    Infer(crate::commands::infer::InferArgs),
    /// Model files: make one from a model you already have, or look inside one.
    #[command(subcommand)]
    Model(crate::commands::model::ModelCommand),
    /// Run a pipeline on a Slurm cluster (job arrays for per-case steps).
    #[command(subcommand)]
    Slurm(crate::commands::slurm::SlurmCommand),
}

/// Parses arguments, sets up logging, runs the command, reports errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet);
    let result = match cli.command {
        Command::Plugins(cmd) => crate::commands::plugins::run(cmd),
        Command::Check(args) => crate::commands::check::run(args),
        Command::Synth(args) => crate::commands::synth::run(args),
        Command::Eval(args) => crate::commands::eval::run(args),
        Command::Split(args) => crate::commands::split::run(args),
        Command::Dicom(cmd) => crate::commands::dicom::run(cmd),
        Command::Run(args) => crate::commands::run::run(args, cli.quiet),
        Command::Demo(args) => crate::commands::demo::run(args, cli.quiet),
        Command::Sam(args) => crate::commands::sam::run(args),
        Command::Clip(args) => crate::commands::clip::run(args),
        Command::Infer(args) => crate::commands::infer::run(args),
        Command::Model(cmd) => crate::commands::model::run(cmd),
        Command::Slurm(cmd) => crate::commands::slurm::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(quiet: bool) {
    let default = if quiet { "error" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLISC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in a file (a Slurm log, `nohup`, CI).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
