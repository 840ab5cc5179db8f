//! The plugin registry: built-in plugins (collected with `inventory`) and
//! external plugin libraries loaded at run time, behind one lookup.

use crate::loader::{self, LoadError};
use abi_stable::std_types::RResult;
use clisc_sdk::config::resolve;
use clisc_sdk::plugin::builtin_plugins;
use clisc_sdk::{HostContext, PluginDescriptor, StageKind};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled into the `clisc` binary.
    Builtin,
    /// Loaded from a shared library.
    External(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::External(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A plugin the registry knows.
#[derive(Clone)]
pub struct RegisteredPlugin {
    /// Identity, schema and constructor.
    pub descriptor: PluginDescriptor,
    /// Where it was found.
    pub origin: Origin,
}

impl RegisteredPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.descriptor.info.name.as_str()
    }
    /// The plugin's stage kind.
    pub fn kind(&self) -> StageKind {
        self.descriptor.info.kind
    }
}

/// Errors of plugin lookup and construction.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No plugin of that name.
    #[error("no plugin named `{name}` (available {kind} plugins: {available})")]
    Unknown {
        name: String,
        kind: StageKind,
        available: String,
    },
    /// The plugin exists but is of another kind.
    #[error("plugin `{name}` is a {actual}, but this stage needs a {expected}")]
    WrongKind {
        name: String,
        expected: StageKind,
        actual: StageKind,
    },
    /// Two sources provide the same name.
    #[error("plugin `{name}` is provided twice: by {first} and by {second}")]
    Duplicate {
        name: String,
        first: Origin,
        second: Origin,
    },
    /// Settings rejected by the plugin's schema.
    #[error("settings of plugin `{name}`:\n  {}", problems.join("\n  "))]
    Settings { name: String, problems: Vec<String> },
    /// The constructor failed (including a caught panic).
    #[error("plugin `{name}` ({origin}) failed to start: {source}")]
    Create {
        name: String,
        origin: Origin,
        source: clisc_sdk::PluginError,
    },
    /// A library could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// All plugins available to this process.
#[derive(Clone, Default)]
pub struct Registry {
    plugins: Vec<RegisteredPlugin>,
}

impl Registry {
    /// The built-in plugins only.
    pub fn builtin() -> Self {
        let mut plugins: Vec<RegisteredPlugin> = builtin_plugins()
            .into_iter()
            .map(|descriptor| RegisteredPlugin {
                descriptor,
                origin: Origin::Builtin,
            })
            .collect();
        plugins.sort_by(|a, b| {
            (a.kind(), a.name().to_string()).cmp(&(b.kind(), b.name().to_string()))
        });
        Self { plugins }
    }

    /// Built-ins plus every plugin library found on `search_path`
    /// (files, or folders scanned for shared libraries).
    pub fn with_search_path(search_path: &[PathBuf]) -> Result<Self, RegistryError> {
        let mut registry = Self::builtin();
        for lib in loader::find_libraries(search_path)? {
            registry.load_library(&lib)?;
        }
        Ok(registry)
    }

    /// Loads one plugin library and registers its plugins.
    pub fn load_library(&mut self, path: &Path) -> Result<usize, RegistryError> {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self
            .plugins
            .iter()
            .any(|p| p.origin == Origin::External(path.clone()))
        {
            return Ok(0);
        }
        let descriptors = loader::load_library(&path)?;
        let n = descriptors.len();
        for descriptor in descriptors {
            self.add(RegisteredPlugin {
                descriptor,
                origin: Origin::External(path.clone()),
            })?;
        }
        Ok(n)
    }

    fn add(&mut self, plugin: RegisteredPlugin) -> Result<(), RegistryError> {
        if let Some(existing) = self.plugins.iter().find(|p| p.name() == plugin.name()) {
            return Err(RegistryError::Duplicate {
                name: plugin.name().to_string(),
                first: existing.origin.clone(),
                second: plugin.origin,
            });
        }
        self.plugins.push(plugin);
        Ok(())
    }

    /// Every plugin, built-ins first, by kind and name.
    pub fn plugins(&self) -> &[RegisteredPlugin] {
        &self.plugins
    }

    /// The plugin `name`, which must be of `kind`.
    pub fn find(&self, name: &str, kind: StageKind) -> Result<&RegisteredPlugin, RegistryError> {
        match self.plugins.iter().find(|p| p.name() == name) {
            Some(p) if p.kind() == kind => Ok(p),
            Some(p) => Err(RegistryError::WrongKind {
                name: name.into(),
                expected: kind,
                actual: p.kind(),
            }),
            None => {
                let available: Vec<&str> = self
                    .plugins
                    .iter()
                    .filter(|p| p.kind() == kind)
                    .map(|p| p.name())
                    .collect();
                Err(RegistryError::Unknown {
                    name: name.into(),
                    kind,
                    available: if available.is_empty() {
                        "none".into()
                    } else {
                        available.join(", ")
                    },
                })
            }
        }
    }

    /// Validates `settings` against the plugin's schema and fills defaults.
    pub fn resolve_settings(
        &self,
        name: &str,
        kind: StageKind,
        settings: &toml::Table,
    ) -> Result<toml::Table, RegistryError> {
        let plugin = self.find(name, kind)?;
        resolve(&plugin.descriptor.info.settings, settings).map_err(|problems| {
            RegistryError::Settings {
                name: name.into(),
                problems: problems.into_iter().map(|p| p.message).collect(),
            }
        })
    }

    /// Builds a stage from already resolved settings.
    pub fn create(
        &self,
        name: &str,
        kind: StageKind,
        resolved: &toml::Table,
        ctx: &HostContext,
    ) -> Result<clisc_sdk::StageObject, RegistryError> {
        let plugin = self.find(name, kind)?;
        let text = toml::to_string(resolved).expect("a TOML table serialises");
        match (plugin.descriptor.create)(text.as_str().into(), ctx) {
            RResult::ROk(stage) => Ok(stage),
            RResult::RErr(source) => Err(RegistryError::Create {
                name: name.into(),
                origin: plugin.origin.clone(),
                source,
            }),
        }
    }
}
