//! `clisc model`: what a model file holds, and a model file made from a
//! model a lab already has.
//!
//! A model file (the SDK's `clisc_sdk::model_file` contract) is what
//! `clisc infer` and `clisc dicom serve` take: the network's plugin, its
//! version and settings, how new volumes are prepared for it, and its
//! weights. A pipeline run writes one for every network; `clisc model wrap`
//! writes one without a run, e.g. for a TorchScript network trained
//! elsewhere:
//!
//! ```text
//! clisc model wrap --plugin torchscript-volumetric-segmenter \
//!     --set model=my_unet.pt --set pad_multiple=16 --spacing 1,1,1 --out my_unet.ckpt
//! clisc model info my_unet.ckpt
//! ```

use super::StageOptions;
use anyhow::{bail, Context};
use clap::Subcommand;
use clisc_dataset::BiasCorrection;
use clisc_inference::model_file;
use clisc_sdk::{StageKind, StageObject};
use std::path::PathBuf;

/// `clisc model ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ModelCommand {
    /// Make a model file for `clisc infer` / `clisc dicom serve` from a
    /// volumetric-segmenter plugin and its settings (e.g. a TorchScript
    /// network and its contract), without running a pipeline.
    Wrap(WrapArgs),
    /// Print what a model file says about itself: plugin, version,
    /// settings, preprocessing, and whether it wraps a plugin's own file.
    Info(InfoArgs),
}

/// `clisc model wrap`.
#[derive(Debug, clap::Args)]
pub(crate) struct WrapArgs {
    /// The volumetric-segmenter plugin that runs the model, e.g.
    /// `torchscript-volumetric-segmenter`.
    #[arg(long)]
    pub plugin: String,
    #[command(flatten)]
    pub stage: StageOptions,
    /// Voxel size in mm, `x,y,z`, that new volumes are resampled to before
    /// the model sees them (default: each volume's own).
    #[arg(long, value_parser = parse_spacing)]
    pub spacing: Option<[f64; 3]>,
    /// Bias correction applied to new volumes, as to the model's training
    /// data: `none` or `polynomial`.
    #[arg(long, default_value = "none", value_parser = parse_bias_correction)]
    pub bias_correction: BiasCorrection,
    /// Width in mm of the band around each prediction's border that is
    /// re-decided from the FLAIR on the volume's own grid (default: not
    /// refined), as `[dataset] refine_boundary_mm` in a pipeline.
    #[arg(long, value_parser = parse_millimetres)]
    pub refine_boundary_mm: Option<f64>,
    /// The model file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// `clisc model info`.
#[derive(Debug, clap::Args)]
pub(crate) struct InfoArgs {
    /// A model file (`.../model.ckpt` of a run, or one `clisc model wrap` wrote).
    pub model: PathBuf,
}

fn parse_spacing(text: &str) -> Result<[f64; 3], String> {
    model_file::parse_spacing(text)
        .ok_or_else(|| format!("`{text}` is not three positive millimetre values x,y,z"))
}

fn parse_millimetres(text: &str) -> Result<f64, String> {
    model_file::parse_millimetres(text)
        .ok_or_else(|| format!("`{text}` is not a positive number of millimetres"))
}

fn parse_bias_correction(text: &str) -> Result<BiasCorrection, String> {
    BiasCorrection::parse(text).ok_or_else(|| {
        let names: Vec<&str> = BiasCorrection::ALL.iter().map(|b| b.as_str()).collect();
        format!("`{text}`: expected one of {}", names.join(", "))
    })
}

/// Runs a `clisc model` subcommand.
pub(crate) fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Wrap(args) => wrap(&args),
        ModelCommand::Info(args) => info(&args),
    }
}

/// Builds the stage (which checks the settings and loads the model), has
/// it save itself, and makes that a model file at `--out`.
fn wrap(args: &WrapArgs) -> anyhow::Result<()> {
    let mut stage = args
        .stage
        .build(
            &args.plugin,
            StageKind::VolumetricSegmenter,
            toml::Table::new(),
        )
        .with_context(|| format!("building plugin `{}`", args.plugin))?;
    let (settings, version) = (stage.settings().clone(), stage.plugin_version().to_string());
    let StageObject::VolumetricSegmenter(net) = stage.stage() else {
        bail!("plugin `{}` is not a volumetric segmenter", args.plugin);
    };
    let name = args
        .out
        .file_name()
        .with_context(|| format!("--out {} is not a file name", args.out.display()))?;
    let partial = args
        .out
        .with_file_name(format!(".partial.{}", name.to_string_lossy()));
    let written = (|| -> anyhow::Result<()> {
        if let abi_stable::std_types::RResult::RErr(e) =
            net.save(partial.display().to_string().as_str().into())
        {
            bail!("plugin `{}` could not save the model: {e}", args.plugin);
        }
        model_file::ensure_model_file(&partial, &args.plugin, &version, &settings)?;
        let preprocessing = model_file::Preprocessing {
            spacing: args.spacing,
            bias_correction: args.bias_correction,
            refine_boundary_mm: args.refine_boundary_mm,
        };
        model_file::record_preprocessing(&partial, &preprocessing)?;
        std::fs::rename(&partial, &args.out)
            .with_context(|| format!("writing {}", args.out.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written?;
    tracing::info!(
        "wrote {} (plugin {} {version})",
        args.out.display(),
        args.plugin
    );
    Ok(())
}

/// Prints the model file's metadata, one `key: value` line each.
fn info(args: &InfoArgs) -> anyhow::Result<()> {
    let path = &args.model;
    let metadata = model_file::read_metadata(path)?;
    if !metadata.contains_key(model_file::PLUGIN_KEY) {
        bail!(
            "{} is not a clisc model file: its metadata has no `{}` naming its plugin; `clisc model wrap` makes one",
            path.display(),
            model_file::PLUGIN_KEY
        );
    }
    for (key, value) in metadata {
        if key == model_file::SETTINGS_KEY {
            println!("{key}:");
            for line in value.lines() {
                println!("    {line}");
            }
        } else {
            println!("{key}: {value}");
        }
    }
    let wraps = if model_file::is_wrapped(path)? {
        "yes (the plugin's own file, byte for byte)"
    } else {
        "no (the plugin wrote the model file itself)"
    };
    println!("wraps a plugin file: {wraps}");
    Ok(())
}
