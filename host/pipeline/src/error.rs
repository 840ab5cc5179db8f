//! The pipeline's error type: what failed, typed by its cause, with the
//! file, case or stage it concerns.
//!
//! Each variant but [`PipelineError::Invalid`] keeps its cause as
//! [`std::error::Error::source`], so the CLI prints the whole chain
//! (`writing 03-roi/a.json: No space left on device`) and a caller can
//! match on what kind of thing failed: a file, a plugin, the dataset.

use std::fmt::Display;

use clisc_sdk::PluginError;

/// What stopped a pipeline function.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A file or folder could not be read, written, renamed or made.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON artefact could not be parsed or written.
    #[error("{context}")]
    Json {
        /// What was being done, naming the path.
        context: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A NIfTI volume could not be read or written (the error names the file).
    #[error(transparent)]
    Nifti(#[from] clisc_nifti::NiftiError),
    /// The dataset, its split or a case's preprocessing failed (the error
    /// names the case or file).
    #[error(transparent)]
    Dataset(#[from] clisc_dataset::DatasetError),
    /// The split of the dataset could not be made, read or written.
    #[error(transparent)]
    Split(#[from] clisc_dataset::splits::SplitError),
    /// A plugin named by the pipeline could not be found or started.
    #[error(transparent)]
    Registry(#[from] clisc_registry::RegistryError),
    /// A model file could not be read or written.
    #[error(transparent)]
    ModelFile(#[from] clisc_inference::model_file::ModelFileError),
    /// A plugin (a stage) returned an error.
    #[error("{context}")]
    Plugin {
        /// The stage call, and the case where there is one.
        context: String,
        /// The plugin's error.
        #[source]
        source: PluginError,
    },
    /// The run lock of the work folder.
    #[error(transparent)]
    Lock(#[from] clisc_workdir::lock::LockError),
    /// A shard of a per-case step.
    #[error(transparent)]
    Shard(#[from] crate::shard::ShardError),
    /// Another pipeline error, with what was being done when it happened.
    #[error("{context}")]
    Context {
        /// What was being done.
        context: String,
        /// The error underneath.
        #[source]
        source: Box<PipelineError>,
    },
    /// The run cannot go on as configured or with what it has: an empty
    /// training split, a filter that kept no case, a stage that returned
    /// something unusable (a mask of the wrong size, no ROI round), volumes
    /// that do not fit together; the message says which and where.
    #[error("{0}")]
    Invalid(String),
}

/// The result of a pipeline function.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// `.with_context(|| ...)` for the causes [`PipelineError`] wraps: names
/// what was being done (usually with the path) and keeps the cause.
pub trait WithContext<T> {
    /// Wraps the error, if any, with the context `f` returns.
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

/// Implements [`WithContext`] for causes that have their own variant
/// (`cause => Variant`) and for those that are wrapped in
/// [`PipelineError::Context`] (`cause`).
macro_rules! with_context {
    ($($cause:ty => $variant:ident),*; $($wrapped:ty),*) => {
        $(impl<T> WithContext<T> for std::result::Result<T, $cause> {
            fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
                self.map_err(|source| PipelineError::$variant {
                    context: f().to_string(),
                    source,
                })
            }
        })*
        $(impl<T> WithContext<T> for std::result::Result<T, $wrapped> {
            fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
                self.map_err(|source| PipelineError::Context {
                    context: f().to_string(),
                    source: Box::new(PipelineError::from(source)),
                })
            }
        })*
    };
}

with_context! {
    std::io::Error => Io, serde_json::Error => Json, PluginError => Plugin;
    PipelineError, clisc_nifti::NiftiError, clisc_dataset::DatasetError, clisc_dataset::splits::SplitError,
    clisc_registry::RegistryError, clisc_inference::model_file::ModelFileError
}

/// An error and its causes joined by `: `, for a log line (what the CLI
/// prints for an error that stops it).
pub fn display_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// A [`PipelineError::Invalid`] from a message.
pub(crate) fn invalid(message: impl Display) -> PipelineError {
    PipelineError::Invalid(message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn keeps_the_cause_as_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
        let err = Err::<(), _>(io)
            .with_context(|| "writing a.json")
            .unwrap_err();
        assert_eq!(err.to_string(), "writing a.json");
        assert_eq!(err.source().unwrap().to_string(), "disk full");
        assert!(matches!(err, PipelineError::Io { .. }));

        let outer = Err::<(), _>(err).with_context(|| "step roi").unwrap_err();
        assert_eq!(display_chain(&outer), "step roi: writing a.json: disk full");
    }
}
