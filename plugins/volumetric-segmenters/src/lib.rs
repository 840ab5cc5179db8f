//! # Built-in volumetric segmenters
//!
//! Stage 3 of CLISC: a 3D network trained on the (SAM or alternative)
//! pseudo-labels, then used for prediction and for the self-learning filter.
//!
//! * `unet3d` ([`unet3d`]): the 3D U-Net of the paper in `tch`.
//!
//! [`phantom`] makes small synthetic cases for tests and benchmarks.

pub mod phantom;
pub mod unet3d;

clisc_sdk::register_builtin!(unet3d::Unet3dPlugin);
