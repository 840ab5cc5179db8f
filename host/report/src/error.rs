//! The report's error type.

use clisc_pipeline::PipelineError;

/// What stopped a report or a montage from being written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A file or folder could not be read, written or made.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON artefact of the run could not be parsed.
    #[error("{context}")]
    Json {
        /// What was being done, naming the path.
        context: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A montage PNG could not be encoded or written.
    #[error("{context}")]
    Image {
        /// What was being done, naming the path.
        context: String,
        /// The image codec's error.
        #[source]
        source: image::ImageError,
    },
    /// A run artefact (a volume, the ROI rounds) could not be read.
    #[error(transparent)]
    Artefact(#[from] PipelineError),
    /// The inputs of a montage do not fit together (a slice outside the
    /// volume, a contour on another grid, no FLAIR channel).
    #[error("{0}")]
    Montage(String),
}

/// `.with_context(|| ...)` naming what was being done, for the causes
/// [`ReportError`] wraps.
pub(crate) trait WithContext<T> {
    fn with_context<C: std::fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T, ReportError>;
}

macro_rules! with_context {
    ($($cause:ty => $variant:ident),*) => {$(
        impl<T> WithContext<T> for Result<T, $cause> {
            fn with_context<C: std::fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T, ReportError> {
                self.map_err(|source| ReportError::$variant { context: f().to_string(), source })
            }
        }
    )*};
}

with_context!(std::io::Error => Io, serde_json::Error => Json, image::ImageError => Image);
