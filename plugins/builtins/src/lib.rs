//! # clisc built-in plugins
//!
//! Every plugin crate that ships with clisc registers its stages with
//! [`inventory`](https://docs.rs/inventory) when it is linked. A program
//! that wants them in `Registry::builtin()` (the `clisc` binary, fuzz
//! targets, tests) names this crate once:
//!
//! ```ignore
//! use clisc_builtins as _;
//! ```
//!
//! Nothing here is called: the stages are reached only through the
//! registry and the traits of `clisc-sdk`.
#![warn(unreachable_pub)]

use clisc_adapters as _;
use clisc_biomedclip as _;
use clisc_cam as _;
use clisc_clip as _;
use clisc_sam as _;
use clisc_sam2 as _;
use clisc_unet3d as _;
use clisc_weight_free as _;
