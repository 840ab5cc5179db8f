//! One module per `clisc` subcommand.

pub mod check;
pub mod clip;
pub mod demo;
pub mod dicom;
pub mod eval;
pub mod infer;
pub mod plugins;
pub mod run;
pub mod sam;
pub mod slurm;
pub mod split;
pub mod study_image;
pub mod synth;

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
    /// The built-in plugins plus those on `CLISC_PLUGIN_PATH` and `--plugin-path`.
    pub fn registry(&self) -> anyhow::Result<Registry> {
        let mut search = env_search_path();
        search.extend(self.plugin_path.iter().cloned());
        Ok(Registry::with_search_path(&search)?)
    }
}
