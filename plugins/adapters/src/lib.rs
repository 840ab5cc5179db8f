//! # clisc-adapters: bring your own model without writing Rust
//!
//! Two families of adapter plugins that turn a lab's own model into a
//! clisc pipeline stage purely from TOML:
//!
//! * [`torchscript`]: wrap any TorchScript file (`torch.jit.script` /
//!   `torch.jit.trace`) as a pseudo-labeler, a promptable segmenter or a
//!   volumetric segmenter. The model's contract (input size and channels,
//!   intensity normalisation, prompt encoding, output interpretation) is
//!   declared in the stage's settings.
//! * [`process`]: run any executable that speaks the small `clisc-process`
//!   protocol over stdin/stdout (a versioned handshake, then length-prefixed
//!   frames with a JSON header and raw little-endian buffers). The process
//!   is started once, reused for every call, stopped when the stage is
//!   dropped, and every failure (crash, timeout, malformed reply) becomes a
//!   [`clisc_sdk::PluginError`] naming the plugin and its command.
//!
//! See `docs/plugins-torchscript.md` and `docs/plugins-process.md`.
#![warn(unreachable_pub)]

pub mod process;
pub mod torchscript;

clisc_sdk::register_builtin!(
    torchscript::TorchScriptLabelerPlugin,
    torchscript::TorchScriptPromptablePlugin,
    torchscript::TorchScriptVolumetricPlugin,
    process::ProcessLabelerPlugin,
    process::ProcessRoiExtractorPlugin,
    process::ProcessPromptGeneratorPlugin,
    process::ProcessPromptablePlugin,
    process::ProcessVolumetricPlugin,
    process::ProcessFilterPlugin,
);
