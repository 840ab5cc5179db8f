//! The model-file contract: what a trained volumetric network's file tells
//! the host besides its weights, so that `clisc infer` and the DICOM node
//! can rebuild the stage and preprocess new volumes as in training.
//!
//! A model file is a safetensors file (an 8-byte little-endian header
//! length, a JSON header whose `__metadata__` map holds strings, then the
//! tensor data). A plugin's `VolumetricSegmenter::save` writes
//! [`PLUGIN_KEY`], [`PLUGIN_VERSION_KEY`] and [`SETTINGS_KEY`]; the host
//! adds [`SPACING_KEY`], [`BIAS_CORRECTION_KEY`] and
//! [`REFINE_BOUNDARY_KEY`] after a pipeline trained the network. Every value is a string.
//!
//! A plugin whose `save` writes some other file (a TorchScript archive, a
//! process plugin's own format) need not know any of this: the host wraps
//! that file, byte for byte, as the one `u8` tensor [`PAYLOAD_TENSOR`] of
//! a model file it writes the metadata into, and hands the plugin's
//! `load` the payload again. The plugin's settings that are weight files
//! (`ConfigField::weights_file`) then name the payload.

/// The plugin that wrote the file (its registry name, e.g. `unet3d`).
pub const PLUGIN_KEY: &str = "clisc.plugin";

/// The version of that plugin.
pub const PLUGIN_VERSION_KEY: &str = "clisc.plugin_version";

/// The stage settings the network was built with, as a TOML table that
/// the plugin's schema accepts.
pub const SETTINGS_KEY: &str = "clisc.settings";

/// The working spacing the training cases were resampled to, `"x,y,z"`
/// in millimetres; absent when they kept their own grid.
pub const SPACING_KEY: &str = "clisc.spacing";

/// The `[dataset] bias_correction` the training cases had (`"polynomial"`);
/// absent means none.
pub const BIAS_CORRECTION_KEY: &str = "clisc.bias_correction";

/// The `[dataset] refine_boundary_mm` of the pipeline that trained the
/// network: the width in millimetres of the band in which predictions are
/// re-decided from FLAIR intensity on the input's own grid (a decimal
/// number such as `"4"`); absent means not refined.
pub const REFINE_BOUNDARY_KEY: &str = "clisc.refine_boundary_mm";

/// The tensor of a wrapped model file that holds, byte for byte, the file
/// the plugin's `save` wrote.
pub const PAYLOAD_TENSOR: &str = "clisc.payload";
