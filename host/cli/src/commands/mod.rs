//! One module per `clisc` subcommand.

pub(crate) mod check;
pub(crate) mod clip;
pub(crate) mod demo;
pub(crate) mod dicom;
pub(crate) mod eval;
pub(crate) mod infer;
pub(crate) mod model;
pub mod plugins;
pub mod run;
pub(crate) mod sam;
pub(crate) mod slurm;
pub(crate) mod split;
pub(crate) mod study_image;
pub(crate) mod synth;

use anyhow::Context;
use clisc_registry::loader::env_search_path;
use clisc_registry::Registry;
use std::path::PathBuf;

/// `--plugin-path`, for commands that look plugins up by name.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PluginPathArgs {
    /// Extra plugin libraries or folders (in addition to CLISC_PLUGIN_PATH).
    #[arg(long = "plugin-path", value_name = "PATH")]
    pub plugin_path: Vec<PathBuf>,
}

impl PluginPathArgs {
    /// The built-in plugins plus those on `CLISC_PLUGIN_PATH` and
    /// `--plugin-path` (commands without the flag use the default: none).
    pub fn registry(&self) -> anyhow::Result<Registry> {
        let mut search = env_search_path();
        search.extend(self.plugin_path.iter().cloned());
        let from = if self.plugin_path.is_empty() {
            "CLISC_PLUGIN_PATH"
        } else {
            "CLISC_PLUGIN_PATH and --plugin-path"
        };
        Registry::with_search_path(&search).with_context(|| format!("loading plugins from {from}"))
    }
}

/// How `clisc sam` and `clisc clip` build their stage, besides which plugin.
#[derive(Debug, Clone, clap::Args)]
pub struct StageOptions {
    /// The plugin's `weights` setting, e.g. a SAM or CLIP checkpoint as
    /// downloaded.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Set any other plugin setting, e.g. `--set threshold=0.7` (TOML value).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU threads for libtorch (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    #[command(flatten)]
    pub plugins: PluginPathArgs,
}

impl StageOptions {
    /// Builds plugin `plugin` as a stage of `kind`, with `extra` settings
    /// (from the command's own flags) under `--weights` and `--set`.
    pub fn build(
        &self,
        plugin: &str,
        kind: clisc_sdk::StageKind,
        extra: toml::Table,
    ) -> anyhow::Result<clisc_registry::standalone::StandaloneStage> {
        use clisc_registry::standalone::{apply_overrides, StageRequest, StandaloneStage};
        let mut settings = extra;
        if let Some(w) = &self.weights {
            settings.insert("weights".into(), w.display().to_string().into());
        }
        apply_overrides(&mut settings, &self.set)?;
        let request = StageRequest {
            plugin,
            kind,
            settings,
            device: &self.device,
            threads: self.threads,
        };
        Ok(StandaloneStage::create(
            &self.plugins.registry()?,
            &request,
        )?)
    }
}
