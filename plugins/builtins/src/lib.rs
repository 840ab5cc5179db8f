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

use clisc_adapters as _;
use clisc_filters as _;
use clisc_prompt_generators as _;
use clisc_promptable_segmenters as _;
use clisc_pseudo_labelers as _;
use clisc_roi_extractors as _;
use clisc_volumetric_segmenters as _;
