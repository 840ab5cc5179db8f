//! # clisc-sdk: the stable contract between the clisc host and its plugins
//!
//! A clisc pipeline is a chain of *stages* (pseudo-labeler, ROI extractor,
//! prompt generator, promptable segmenter, volumetric segmenter, filter).
//! Every stage is implemented by a *plugin*: built-in plugins are compiled
//! into the `clisc` binary and registered with [`register_builtin!`];
//! external plugins are shared libraries exported with [`export_plugins!`]
//! and loaded at run time. Both go through exactly the same traits
//! ([`stage`]) and the same descriptor ([`plugin::PluginDescriptor`]).
//!
//! Everything that crosses the boundary is `#[repr(C)]` and
//! [`abi_stable::StableAbi`], so a plugin built with another compiler
//! version still loads, and a plugin built against an incompatible SDK is
//! refused with a clear message instead of crashing. No libtorch type is
//! part of this contract: plugins that use `tch` keep it inside.
//!
//! Panics never unwind across the boundary: every call into a plugin is run
//! under [`std::panic::catch_unwind`] on the plugin's side of the boundary
//! and comes back as [`PluginError`] of kind [`ErrorKind::Panicked`].
//!
//! ## Conventions
//! * Volumes are stored x-fastest (NIfTI order): voxel `(x, y, z)` is at
//!   `x + nx * (y + ny * z)`. An axial slice `z` is therefore contiguous and
//!   becomes an [`Image2d`] with `width = nx` (columns, x) and
//!   `height = ny` (rows, y).
//! * Points and boxes are in pixel coordinates of that slice: `x` is the
//!   column, `y` is the row (the convention of Segment Anything).
#![warn(unreachable_pub)]
#![allow(non_local_definitions)] // emitted by abi_stable's #[sabi_trait] expansion

pub mod config;
pub mod data;
pub mod declare;
pub mod error;
pub mod labels;
pub mod model_file;
pub mod plugin;
pub mod progress;
pub mod prompt;
pub mod stage;

pub use config::{ConfigField, ConfigKind};
pub use data::{Channel, Grid, Image2d, LabelVolume, Mask2d, ProbabilityVolume, Volume};
pub use error::{ErrorKind, PluginError};
pub use labels::{SliceLabel, SlicePseudoLabels};
pub use plugin::{BuiltinPlugin, HostContext, Plugin, PluginDescriptor, PluginInfo, StageKind};
pub use progress::{ProgressSink, ProgressSinkBox, Silent};
pub use prompt::{BoxXyxy, CasePrompts, PromptPoint, PromptSet};
pub use stage::*;

/// Re-exported so that plugin crates use the same `abi_stable` as the SDK.
pub use abi_stable;
/// Re-exported for [`register_builtin!`].
pub use inventory;

/// Semantic version of this SDK. The host accepts an external plugin
/// library whose SDK version is compatible with its own (same major
/// version, or for 0.x the same minor version) and refuses the others.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// True when a plugin built against SDK `plugin` can be used by a host
/// built against SDK `host` (semver rules; for `0.y.z`, `y` must match).
pub fn sdk_versions_compatible(host: &str, plugin: &str) -> bool {
    fn parse(v: &str) -> Option<(u64, u64)> {
        let mut it = v.trim().split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some((major, minor))
    }
    match (parse(host), parse(plugin)) {
        (Some((0, hm)), Some((0, pm))) => hm == pm,
        (Some((hma, _)), Some((pma, _))) => hma == pma,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_rules() {
        assert!(sdk_versions_compatible("0.1.0", "0.1.7"));
        assert!(!sdk_versions_compatible("0.1.0", "0.2.0"));
        assert!(!sdk_versions_compatible("0.3.0", "0.2.0"));
        assert!(sdk_versions_compatible("0.3.0", "0.3.1"));
        assert!(sdk_versions_compatible("1.2.0", "1.0.3"));
        assert!(!sdk_versions_compatible("1.2.0", "2.0.0"));
        assert!(!sdk_versions_compatible("1.2.0", "garbage"));
    }
}
