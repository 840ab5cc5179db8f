//! Loading external plugin libraries (`cdylib`s exporting an
//! [`clisc_sdk::plugin::PluginLibraryRef`] root module).
//!
//! Several libraries can be loaded side by side: each one is opened with
//! [`abi_stable::library::lib_header_from_path`] and its root module is
//! checked and initialised on its own (abi_stable's `load_from_file` would
//! cache the first library for the whole process).

use abi_stable::library::{lib_header_from_path, LibraryError};
use clisc_sdk::plugin::PluginLibraryRef;
use clisc_sdk::{sdk_versions_compatible, PluginDescriptor, SDK_VERSION};
use std::path::{Path, PathBuf};

/// The environment variable listing extra plugin files or folders
/// (separated like `PATH`).
pub(crate) const PLUGIN_PATH_VAR: &str = "CLISC_PLUGIN_PATH";

/// Why a plugin library could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file does not exist.
    #[error("plugin library {path} does not exist")]
    Missing { path: PathBuf },
    /// The OS loader refused the file.
    #[error("cannot open plugin library {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    /// The file is a shared library but not a clisc plugin.
    #[error("{path} is not a clisc plugin library (no clisc root module exported): {detail}")]
    NotAPlugin { path: PathBuf, detail: String },
    /// Built against an incompatible SDK.
    #[error("{path} was built against clisc-sdk {plugin_sdk}, which is incompatible with this host's clisc-sdk {host_sdk}; rebuild the plugin against clisc-sdk {host_sdk}")]
    IncompatibleSdk {
        path: PathBuf,
        plugin_sdk: String,
        host_sdk: String,
    },
    /// Layout of the shared types differs.
    #[error("{path} has an incompatible plugin interface layout (built against a different clisc-sdk?): {detail}")]
    Abi { path: PathBuf, detail: String },
    /// A plugin-path entry could not be read.
    #[error("cannot read plugin folder {path}: {detail}")]
    Folder { path: PathBuf, detail: String },
}

/// The search path from `PLUGIN_PATH_VAR`, if set.
pub fn env_search_path() -> Vec<PathBuf> {
    std::env::var_os(PLUGIN_PATH_VAR)
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn is_shared_library(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("so" | "dylib" | "dll")
    )
}

/// Expands folders on the search path into the shared libraries they hold;
/// files are taken as given.
pub fn find_libraries(search_path: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut libs = Vec::new();
    for entry in search_path {
        if entry.is_dir() {
            let read = std::fs::read_dir(entry).map_err(|e| LoadError::Folder {
                path: entry.clone(),
                detail: e.to_string(),
            })?;
            let mut found: Vec<PathBuf> = read
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_shared_library(p))
                .collect();
            found.sort();
            libs.extend(found);
        } else {
            libs.push(entry.clone());
        }
    }
    Ok(libs)
}

/// Opens `path`, checks its SDK version and interface layout, and returns
/// the descriptors of the plugins it provides.
pub(crate) fn load_library(path: &Path) -> Result<Vec<PluginDescriptor>, LoadError> {
    if !path.exists() {
        return Err(LoadError::Missing {
            path: path.to_path_buf(),
        });
    }
    let header = lib_header_from_path(path).map_err(|e| match e {
        LibraryError::OpenError { .. } => LoadError::Open {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        other => LoadError::NotAPlugin {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    })?;
    let module = header
        .init_root_module::<PluginLibraryRef>()
        .map_err(|e| match e {
            LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
                LoadError::IncompatibleSdk {
                    path: path.to_path_buf(),
                    plugin_sdk: actual_version.to_string(),
                    host_sdk: SDK_VERSION.to_string(),
                }
            }
            other => LoadError::Abi {
                path: path.to_path_buf(),
                detail: layout_summary(path, &other.to_string()),
            },
        })?;
    let plugin_sdk = module.sdk_version().as_str().to_string();
    if !sdk_versions_compatible(SDK_VERSION, &plugin_sdk) {
        return Err(LoadError::IncompatibleSdk {
            path: path.to_path_buf(),
            plugin_sdk,
            host_sdk: SDK_VERSION.to_string(),
        });
    }
    Ok(module.plugins()().into_vec())
}

/// Lines of abi_stable's layout report shown in the error (its head names
/// the type whose layout differs).
const LAYOUT_LINES_SHOWN: usize = 8;

/// The head of abi_stable's layout report for `path`; the whole report
/// (often thousands of lines) is logged at debug level.
fn layout_summary(path: &Path, report: &str) -> String {
    tracing::debug!("layout report of {}:\n{report}", path.display());
    let lines: Vec<&str> = report.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= LAYOUT_LINES_SHOWN {
        return lines.join("\n");
    }
    format!(
        "{}\n(+{} more lines; `CLISC_LOG=debug` prints the whole report)",
        lines[..LAYOUT_LINES_SHOWN].join("\n"),
        lines.len() - LAYOUT_LINES_SHOWN
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_layout_report_shows_its_head_and_how_to_see_the_rest() {
        let report: String = (1..=20).map(|i| format!("line {i}\n\n")).collect();
        let summary = layout_summary(Path::new("lib.so"), &report);
        assert!(summary.starts_with("line 1\nline 2\n"), "{summary}");
        assert!(
            summary.contains("line 8\n(+12 more lines; `CLISC_LOG=debug`"),
            "{summary}"
        );
        assert!(!summary.contains("line 9"), "{summary}");
        assert_eq!(layout_summary(Path::new("lib.so"), "a\n\nb\n"), "a\nb");
    }
}
