//! The report's error type.

use clisc_pipeline::PipelineError;

/// What stopped a report or a montage from being written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A montage PNG could not be encoded or written.
    #[error("{context}")]
    Image {
        /// What was being done, naming the path.
        context: String,
        /// The image codec's error.
        #[source]
        source: image::ImageError,
    },
    /// A file of the run or of the report could not be read or written
    /// (the error names it and keeps the cause); the work folder's
    /// artefacts and the report's files share the pipeline's I/O.
    #[error(transparent)]
    Artefact(#[from] PipelineError),
    /// The inputs of a montage do not fit together (a slice outside the
    /// volume, a contour on another grid, no FLAIR channel).
    #[error("{0}")]
    Montage(String),
}
