//! One stage outside a pipeline, as `clisc infer`, `clisc sam`, `clisc
//! clip` and the DICOM node use them: built through the registry (so an
//! external plugin works exactly like a built-in one), on a resolved
//! device, with a private work folder of its own that is removed when the
//! stage is dropped.

use crate::registry::Registry;
use anyhow::Context;
use clisc_sdk::{HostContext, Silent, StageKind, StageObject};
use std::path::{Path, PathBuf};

/// How to build a stage: which plugin, with which settings, where.
#[derive(Debug, Clone)]
pub struct StageRequest<'a> {
    /// The plugin's registry name.
    pub plugin: &'a str,
    /// The stage kind the caller needs.
    pub kind: StageKind,
    /// Settings as written (the plugin's schema fills in defaults).
    pub settings: toml::Table,
    /// `auto`, `cpu`, `cuda` or `cuda:N`; resolved before the plugin sees it.
    pub device: &'a str,
    /// libtorch CPU threads (0 = its default).
    pub threads: u32,
}

/// A stage with its private work folder.
pub struct StandaloneStage {
    /// The stage object.
    pub stage: StageObject,
    work: PathBuf,
}

impl StandaloneStage {
    /// Validates the settings against the plugin's schema and builds the
    /// stage.
    pub fn create(registry: &Registry, request: &StageRequest) -> anyhow::Result<Self> {
        let resolved =
            registry.resolve_settings(request.plugin, request.kind, &request.settings)?;
        let work = private_folder()?;
        let ctx = HostContext {
            device: crate::device::resolve("--device", request.device)?.into(),
            seed: 0,
            threads: request.threads,
            work_dir: work.display().to_string().into(),
            progress: Silent::boxed(),
        };
        let stage = match registry.create(request.plugin, request.kind, &resolved, &ctx) {
            Ok(stage) => stage,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                return Err(e.into());
            }
        };
        Ok(Self { stage, work })
    }

    /// The stage's private work folder.
    pub fn work_dir(&self) -> &Path {
        &self.work
    }
}

impl Drop for StandaloneStage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Parses `key = TOML value` overrides (`--set`) into `settings`.
pub fn apply_overrides(settings: &mut toml::Table, overrides: &[String]) -> anyhow::Result<()> {
    for kv in overrides {
        let t: toml::Table = toml::from_str(kv)
            .map_err(|e| anyhow::anyhow!("--set `{kv}` is not `key = TOML value`: {e}"))?;
        settings.extend(t);
    }
    Ok(())
}

/// A fresh folder under the system's temporary folder.
fn private_folder() -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CREATED: AtomicUsize = AtomicUsize::new(0);
    let n = CREATED.fetch_add(1, Ordering::Relaxed);
    let work = std::env::temp_dir().join(format!("clisc-stage-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    Ok(work)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_toml_assignments() {
        let mut t = toml::Table::new();
        apply_overrides(&mut t, &["k = 2.5".into(), "names = [\"a\"]".into()]).unwrap();
        assert_eq!(t["k"].as_float(), Some(2.5));
        assert_eq!(t["names"].as_array().unwrap().len(), 1);
        let err = apply_overrides(&mut t, &["k 2".into()]).unwrap_err();
        assert!(err.to_string().contains("--set `k 2`"), "{err}");
    }

    #[test]
    fn an_unknown_plugin_is_named_and_leaves_no_folder() {
        let registry = Registry::builtin();
        let request = StageRequest {
            plugin: "no-such-plugin",
            kind: StageKind::PromptableSegmenter,
            settings: toml::Table::new(),
            device: "cpu",
            threads: 1,
        };
        let err = StandaloneStage::create(&registry, &request).err().unwrap();
        assert!(err.to_string().contains("no-such-plugin"), "{err}");
    }
}
