//! # Built-in promptable segmenters
//!
//! Stage 2 of CLISC: turn box and point prompts on a slice into a mask.
//!
//! * `sam` ([`sam`]): Segment Anything in `tch`, loading the official
//!   checkpoints, with the official predictor's pre- and post-processing.
//! * `classic-prompt` ([`classic`]): weight-free seeded region growing with
//!   the same contract, so the pipeline runs without SAM weights.

pub mod classic;
pub mod sam;

/// Sets the number of intra-op CPU threads libtorch uses (process-wide),
/// for tools that drive SAM without a `HostContext`.
pub fn set_torch_threads(threads: usize) {
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
}

clisc_sdk::register_builtin!(sam::SamPlugin, classic::ClassicPromptPlugin);
