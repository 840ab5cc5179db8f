//! Progress reporting from plugins back to the host's progress bars.

use abi_stable::sabi_trait;
use abi_stable::std_types::{RArc, RStr};

/// Where a plugin reports the progress of its long steps (training epochs,
/// slices, cases). The host draws one progress bar per `task`.
#[sabi_trait]
pub trait ProgressSink: Clone + Send + Sync {
    /// `done` of `total` units of `task` are finished; `message` is a short
    /// status such as `"loss 0.213 acc 0.91"` (may be empty).
    fn report(&self, task: RStr<'_>, done: u64, total: u64, message: RStr<'_>);

    /// An informational log line from the plugin.
    fn log(&self, message: RStr<'_>);
}

/// A shareable, ABI-stable handle to a [`ProgressSink`].
pub type ProgressSinkBox = ProgressSink_TO<'static, RArc<()>>;

/// A sink that ignores everything (for tests and standalone use).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl ProgressSink for Silent {
    fn report(&self, _: RStr<'_>, _: u64, _: u64, _: RStr<'_>) {}
    fn log(&self, _: RStr<'_>) {}
}

impl Silent {
    /// A [`ProgressSinkBox`] that ignores everything.
    pub fn boxed() -> ProgressSinkBox {
        ProgressSink_TO::from_ptr(RArc::new(Silent), abi_stable::sabi_trait::TD_Opaque)
    }
}
