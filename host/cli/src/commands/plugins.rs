//! `clisc plugins ...`: list the available plugins.

use clap::Subcommand;
use clisc_registry::Registry;

/// Plugin inspection commands.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List every plugin (built-in and from the plugin path) with kind,
    /// version and origin.
    List {
        #[command(flatten)]
        plugins: super::PluginPathArgs,
        /// Also show each plugin's settings with defaults.
        #[arg(long)]
        settings: bool,
    },
    /// Scaffold a ready-to-build external plugin crate (cdylib) with a
    /// working example implementation of KIND and a unit test.
    New(crate::scaffold::NewArgs),
}

/// Runs a `plugins` subcommand.
pub fn run(cmd: PluginsCommand) -> anyhow::Result<()> {
    match cmd {
        PluginsCommand::List { plugins, settings } => {
            let registry = plugins.registry()?;
            print!("{}", render_list(&registry, settings));
            Ok(())
        }
        PluginsCommand::New(args) => crate::scaffold::run(args),
    }
}

/// The table printed by `clisc plugins list`.
pub fn render_list(registry: &Registry, settings: bool) -> String {
    let mut out = format!(
        "{:<22} {:<22} {:<9} {}\n",
        "NAME", "KIND", "VERSION", "ORIGIN"
    );
    for p in registry.plugins() {
        let info = &p.descriptor.info;
        out += &format!(
            "{:<22} {:<22} {:<9} {}\n",
            info.name, info.kind, info.version, p.origin
        );
        out += &format!("    {}\n", info.description);
        if settings {
            for f in info.settings.iter() {
                let default = match &f.default {
                    abi_stable::std_types::ROption::RSome(d) => format!("= {d}"),
                    _ if f.optional => "(optional)".to_string(),
                    _ => "(required)".to_string(),
                };
                let kind = if f.is_weights_file() {
                    "weight file".to_string()
                } else if !f.choices.is_empty() {
                    let choices: Vec<&str> = f.choices.iter().map(|c| c.as_str()).collect();
                    format!("one of {}", choices.join(", "))
                } else {
                    f.kind.name().to_string()
                };
                out += &format!("      {} ({kind}) {default}  {}\n", f.name, f.description());
                if let Some(hint) = f.download_hint().filter(|h| !h.is_empty()) {
                    out += &format!("        source: {hint}\n");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_listing_shows_defaults_and_allowed_values() {
        let listing = render_list(&Registry::builtin(), true);
        let line = listing
            .lines()
            .find(|l| l.trim_start().starts_with("prompt_encoding "))
            .expect("the TorchScript promptable adapter's prompt_encoding");
        assert!(
            line.contains("(one of box-points, prompt-channels, embed-decode) = \"box-points\""),
            "{line}"
        );
    }
}
