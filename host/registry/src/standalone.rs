//! One stage outside a pipeline, as `clisc infer`, `clisc sam`, `clisc
//! clip` and the DICOM node use them: built through the registry (so an
//! external plugin works exactly like a built-in one), on a resolved
//! device, with a private work folder of its own that is removed after the
//! stage is dropped (a process plugin is shut down first).

use crate::device::DeviceError;
use crate::plugins::{Registry, RegistryError};
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

/// Why a stage could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// Unknown plugin, wrong kind, bad settings, or the plugin failed to start.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The device names no device of this machine.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The private work folder cannot be created.
    #[error("cannot create the stage's work folder {path}: {source}")]
    WorkFolder {
        /// The folder.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// A `--set` that is not `key = TOML value`.
    #[error("--set `{given}` is not `key = TOML value`: {message}")]
    Override {
        /// What was given.
        given: String,
        /// The TOML parser's complaint.
        message: String,
    },
}

/// A stage with its private work folder.
pub struct StandaloneStage {
    /// `None` only while dropping, so that the stage goes before its folder.
    stage: Option<StageObject>,
    work: PathBuf,
    /// The settings the stage was built with, defaults filled in.
    settings: toml::Table,
    /// The version of the plugin that built it.
    plugin_version: String,
}

impl StandaloneStage {
    /// Validates the settings against the plugin's schema, resolves the
    /// device, and builds the stage.
    pub fn create(registry: &Registry, request: &StageRequest) -> Result<Self, StandaloneError> {
        let resolved =
            registry.resolve_settings(request.plugin, request.kind, &request.settings)?;
        let device = crate::device::resolve("--device", request.device)?;
        let plugin_version = registry
            .find(request.plugin, request.kind)?
            .descriptor
            .info
            .version
            .to_string();
        let work = private_folder()?;
        let ctx = HostContext {
            device: device.into(),
            seed: 0,
            threads: request.threads,
            work_dir: work.display().to_string().into(),
            progress: Silent::boxed(),
        };
        match registry.create(request.plugin, request.kind, &resolved, &ctx) {
            Ok(stage) => Ok(Self {
                stage: Some(stage),
                work,
                settings: resolved,
                plugin_version,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                Err(e.into())
            }
        }
    }

    /// The stage.
    pub fn stage(&mut self) -> &mut StageObject {
        self.stage.as_mut().expect("present until dropped")
    }

    /// The stage's private work folder.
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// The settings the stage was built with (the plugin's defaults
    /// filled in).
    pub fn settings(&self) -> &toml::Table {
        &self.settings
    }

    /// The version of the plugin that built the stage.
    pub fn plugin_version(&self) -> &str {
        &self.plugin_version
    }
}

impl Drop for StandaloneStage {
    fn drop(&mut self) {
        // The stage first: a process plugin is asked to shut down while
        // its working folder still exists.
        drop(self.stage.take());
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Parses `key = TOML value` overrides (`--set`) into `settings`. A value
/// that is not TOML is taken as a string, so `--set model=net.pt` needs no
/// shell-escaped quotes (the plugin's schema still checks its type).
pub fn apply_overrides(
    settings: &mut toml::Table,
    overrides: &[String],
) -> Result<(), StandaloneError> {
    for kv in overrides {
        let t: toml::Table = toml::from_str(kv).or_else(|e| {
            let fail = || StandaloneError::Override {
                given: kv.clone(),
                message: e.message().to_string(),
            };
            let (key, value) = kv.split_once('=').ok_or_else(fail)?;
            let bare = format!("{} = {}", key.trim(), toml::Value::from(value.trim()));
            toml::from_str(&bare).map_err(|_| fail())
        })?;
        settings.extend(t);
    }
    Ok(())
}

/// The prefix of the private folders, under the system's temporary folder.
fn folder_prefix() -> String {
    format!("clisc-stage-{}-", std::process::id())
}

/// A fresh folder under the system's temporary folder.
fn private_folder() -> Result<PathBuf, StandaloneError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CREATED: AtomicUsize = AtomicUsize::new(0);
    let n = CREATED.fetch_add(1, Ordering::Relaxed);
    let work = std::env::temp_dir().join(format!("{}{n}", folder_prefix()));
    std::fs::create_dir_all(&work).map_err(|source| StandaloneError::WorkFolder {
        path: work.clone(),
        source,
    })?;
    Ok(work)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's private folders that exist now.
    fn leftover_folders() -> Vec<PathBuf> {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&folder_prefix()))
            })
            .collect()
    }

    #[test]
    fn overrides_are_toml_assignments() {
        let mut t = toml::Table::new();
        apply_overrides(&mut t, &["k = 2.5".into(), "names = [\"a\"]".into()]).unwrap();
        assert_eq!(t["k"].as_float(), Some(2.5));
        assert_eq!(t["names"].as_array().unwrap().len(), 1);
        let err = apply_overrides(&mut t, &["k 2".into()]).unwrap_err();
        assert!(err.to_string().contains("--set `k 2`"), "{err}");
        // A value that is not TOML is a string.
        apply_overrides(&mut t, &["model = models/net v2.pt".into()]).unwrap();
        assert_eq!(t["model"].as_str(), Some("models/net v2.pt"));
        let err = apply_overrides(&mut t, &["not a key = 1".into()]).unwrap_err();
        assert!(err.to_string().contains("--set `not a key = 1`"), "{err}");
    }

    /// The tests below look at this process's folders: one at a time.
    static FOLDERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A plugin that fails to start, registered for these tests only.
    struct FailingPlugin;

    impl clisc_sdk::Plugin for FailingPlugin {
        const NAME: &'static str = "test-failing";
        const KIND: StageKind = StageKind::PseudoLabeler;
        const VERSION: &'static str = "0.0.0";
        const DESCRIPTION: &'static str = "fails in create";
        fn settings() -> Vec<clisc_sdk::ConfigField> {
            vec![]
        }
        fn create(
            _: clisc_sdk::config::Settings,
            ctx: &HostContext,
        ) -> Result<StageObject, clisc_sdk::PluginError> {
            // The folder exists while the plugin starts.
            std::fs::write(Path::new(ctx.work_dir.as_str()).join("partial"), b"x").unwrap();
            Err(clisc_sdk::PluginError::config("test-failing: cannot start"))
        }
    }

    clisc_sdk::register_builtin!(FailingPlugin);

    fn request(plugin: &str, device: &str) -> StageRequest<'static> {
        StageRequest {
            plugin: Box::leak(plugin.to_string().into_boxed_str()),
            kind: StageKind::PseudoLabeler,
            settings: toml::Table::new(),
            device: Box::leak(device.to_string().into_boxed_str()),
            threads: 1,
        }
    }

    #[test]
    fn failures_are_named_and_leave_no_folder() {
        let _one = FOLDERS.lock().unwrap();
        let registry = Registry::builtin();
        for (req, expected) in [
            (request("no-such-plugin", "cpu"), "no-such-plugin"),
            (request("test-failing", "gpu"), "expected \"auto\""),
            (request("test-failing", "cpu"), "test-failing: cannot start"),
        ] {
            let err = StandaloneStage::create(&registry, &req).err().unwrap();
            assert!(err.to_string().contains(expected), "{err}");
            assert!(leftover_folders().is_empty(), "{:?}", leftover_folders());
        }
    }

    #[test]
    fn a_stage_folder_goes_with_the_stage() {
        let _one = FOLDERS.lock().unwrap();
        let work = private_folder().unwrap();
        std::fs::write(work.join("cache"), b"x").unwrap();
        let stage = StandaloneStage {
            stage: Some(StageObject::pseudo_labeler(Labeler)),
            work: work.clone(),
            settings: toml::Table::new(),
            plugin_version: "0.0.0".into(),
        };
        assert!(stage.work_dir().join("cache").is_file());
        drop(stage);
        assert!(!work.exists());
    }

    /// A stage that labels nothing.
    struct Labeler;

    impl clisc_sdk::PseudoLabeler for Labeler {
        fn label_slices(
            &mut self,
            _: &clisc_sdk::stage::CaseInput,
        ) -> abi_stable::std_types::RResult<clisc_sdk::SlicePseudoLabels, clisc_sdk::PluginError>
        {
            abi_stable::std_types::RResult::ROk(Default::default())
        }
    }
}
