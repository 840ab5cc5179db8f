//! The one error type that crosses the plugin boundary.

use abi_stable::std_types::RString;
use abi_stable::StableAbi;
use std::fmt;

/// What went wrong, coarsely, so the host can decide how to react
/// (for example: a bad config is reported with its file position).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The stage's TOML settings are invalid.
    Config,
    /// The input data does not satisfy the stage's contract.
    Input,
    /// A weight or checkpoint file is missing, unreadable or of the wrong shape.
    Weights,
    /// Reading or writing a file failed.
    Io,
    /// The plugin panicked; the panic was caught on the plugin's side.
    Panicked,
    /// Any other failure inside the plugin.
    Internal,
}

/// An error reported by a plugin. `message` is meant for the user and
/// should name the file, field or tensor involved and what was expected.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// Category of the failure.
    pub kind: ErrorKind,
    /// Human-readable explanation.
    pub message: RString,
    /// The setting a [`ErrorKind::Config`] error is about, as a dotted
    /// path in the stage's settings (`settings.k` for key `k` of the
    /// table `settings`); empty when none. The host shows the error at
    /// that place of the pipeline file (added in SDK 0.3.0).
    pub setting: RString,
}

impl PluginError {
    /// Builds an error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: RString::from(message.into()),
            setting: RString::new(),
        }
    }
    /// The same error, about the setting at dotted path `path`.
    pub fn about_setting(mut self, path: impl Into<String>) -> Self {
        self.setting = RString::from(path.into());
        self
    }
    /// Invalid stage settings.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    /// Input that breaks the stage's contract.
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Input, message)
    }
    /// Missing or malformed weights.
    pub fn weights(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Weights, message)
    }
    /// File system failure.
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }
    /// Any other internal failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Config => "invalid settings",
            ErrorKind::Input => "invalid input",
            ErrorKind::Weights => "weights",
            ErrorKind::Io => "i/o",
            ErrorKind::Panicked => "plugin panicked",
            ErrorKind::Internal => "internal error",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<std::io::Error> for PluginError {
    fn from(e: std::io::Error) -> Self {
        Self::io(e.to_string())
    }
}

/// Turns a caught panic payload into a [`PluginError`].
pub fn panic_to_error(payload: Box<dyn std::any::Any + Send>) -> PluginError {
    let msg = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    };
    PluginError::new(ErrorKind::Panicked, msg)
}
