//! Settings that only a started stage can check.
//!
//! A plugin with a `table` setting ([`ConfigKind::Table`]) passes it on as
//! it is: a process plugin's own settings go to the process, which
//! announces their schema only in its handshake. `clisc check` builds such
//! stages once (and drops them at once), so those settings are checked
//! before a run; an error the plugin ties to a setting
//! ([`clisc_sdk::PluginError::setting`], e.g. `settings.k`) is shown at
//! that setting's line and column of the pipeline file.

use crate::config::{ConfigError, ConfigErrors, Pipeline, StageSlot};
use clisc_registry::Registry;
use clisc_sdk::config::ConfigKind;
use clisc_sdk::{ErrorKind, HostContext, Silent};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// The stages of a pipeline file with the positions of their settings.
#[derive(Deserialize)]
struct SpannedStages {
    #[serde(default)]
    stages: BTreeMap<String, SpannedStage>,
}

#[derive(Deserialize)]
struct SpannedStage {
    plugin: Spanned<String>,
    #[serde(default)]
    settings: SpannedTable,
}

type SpannedTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// An inline table parsed on its own (`v = { ... }`).
#[derive(Deserialize)]
struct Inline {
    v: SpannedTable,
}

/// Builds every stage of `pipeline` that has a table setting, on
/// `device`, and returns their slots; the problems they report are placed
/// in `text` (the pipeline file at `path`).
pub fn build_passthrough_stages(
    pipeline: &Pipeline,
    path: &Path,
    text: &str,
    registry: &Registry,
    device: &str,
) -> Result<Vec<StageSlot>, ConfigErrors> {
    let spans: SpannedStages = toml::from_str(text)
        .map_err(|e| ConfigErrors(vec![ConfigError::at(path, text, e.span(), e.to_string())]))?;
    let mut built = Vec::new();
    let mut errors = Vec::new();
    for (&slot, spec) in &pipeline.stages {
        let plugin = registry
            .find(&spec.plugin, slot.kind())
            .map_err(|e| ConfigErrors(vec![ConfigError::at(path, text, None, e.to_string())]))?;
        let passes_on = plugin
            .descriptor
            .info
            .settings
            .iter()
            .any(|f| f.kind == ConfigKind::Table);
        if !passes_on {
            continue;
        }
        let work = tempfile::tempdir().map_err(|e| {
            ConfigErrors(vec![ConfigError::at(
                path,
                text,
                None,
                format!("creating a temporary folder: {e}"),
            )])
        })?;
        let ctx = HostContext {
            device: device.into(),
            seed: pipeline.run.seed,
            threads: pipeline.run.threads,
            work_dir: work.path().display().to_string().into(),
            progress: Silent::boxed(),
        };
        built.push(slot);
        let Err(e) = registry.create(&spec.plugin, slot.kind(), &spec.settings, &ctx) else {
            continue;
        };
        let stage = spans.stages.get(slot.key());
        let span = match (&e, stage) {
            (clisc_registry::RegistryError::Create { source, .. }, Some(stage))
                if source.kind == ErrorKind::Config =>
            {
                setting_span(stage, text, source.setting.as_str())
                    .or_else(|| Some(stage.plugin.span()))
            }
            (_, Some(stage)) => Some(stage.plugin.span()),
            _ => None,
        };
        errors.push(ConfigError::at(
            path,
            text,
            span,
            format!("[stages.{}] {e}", slot.key()),
        ));
    }
    if errors.is_empty() {
        Ok(built)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Where the setting at dotted path `setting` (`k`, or `table.k` inside
/// an inline table) is written in a stage: the key's span, or the
/// enclosing table's key when the inner key cannot be placed.
fn setting_span(stage: &SpannedStage, text: &str, setting: &str) -> Option<Range<usize>> {
    let mut parts = setting.splitn(2, '.');
    let first = parts.next().filter(|p| !p.is_empty())?;
    let (key, value) = stage.settings.iter().find(|(k, _)| k.get_ref() == first)?;
    let Some(rest) = parts.next() else {
        return Some(key.span());
    };
    let outer = value.span();
    let inner = text.get(outer.clone()).and_then(|written| {
        let prefix = "v = ";
        let parsed: Inline = toml::from_str(&format!("{prefix}{written}")).ok()?;
        let (k, _) = parsed.v.iter().find(|(k, _)| k.get_ref() == rest)?;
        let shift = outer.start as isize - prefix.len() as isize;
        let at = |i: usize| (i as isize + shift) as usize;
        Some(at(k.span().start)..at(k.span().end))
    });
    Some(inner.unwrap_or_else(|| key.span()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(text: &str) -> SpannedStage {
        let stages: SpannedStages = toml::from_str(text).unwrap();
        stages.stages.into_values().next().unwrap()
    }

    #[test]
    fn settings_are_placed_in_inline_tables_and_on_their_own_lines() {
        let text = "[stages.roi_extractor]\nplugin = \"p\"\nsettings = { command = [\"x\"], settings = { k = 1, kk = 2 } }\n";
        let s = stage(text);
        let at = |setting: &str| setting_span(&s, text, setting).map(|r| &text[r]);
        assert_eq!(at("settings.kk"), Some("kk"));
        assert_eq!(at("command"), Some("command"));
        // An inner key that is not written: the enclosing table's key.
        assert_eq!(at("settings.missing"), Some("settings"));
        assert_eq!(at("nope"), None);
        assert_eq!(at(""), None);
        let text = "[stages.roi_extractor]\nplugin = \"p\"\n[stages.roi_extractor.settings]\ncommand = [\"x\"]\nsettings = { kk = 2 }\n";
        let s = stage(text);
        let r = setting_span(&s, text, "settings.kk").unwrap();
        assert_eq!(&text[r.clone()], "kk");
        assert_eq!(text[..r.start].matches('\n').count() + 1, 5);
    }
}
