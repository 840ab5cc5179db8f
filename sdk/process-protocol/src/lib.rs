//! The `clisc-process` protocol that out-of-process plugins (a Python
//! script, a Julia program, any executable) and the clisc host speak over
//! the plugin's stdin and stdout.
//!
//! Two layers, kept apart as in nushell's `nu-plugin-protocol`:
//!
//! * [`frame`]: the byte format. Every message is a frame: magic `CLSC`,
//!   lengths, a JSON header and raw little-endian buffers (volumes, images,
//!   masks never travel as text). The decoder bounds what it allocates by
//!   the bytes that arrive, not by the lengths a peer claims.
//! * [`message`]: what the headers mean. Typed messages for each direction
//!   ([`HostMessage`], [`PluginMessage`]), one request variant per method
//!   ([`Call`]) and one result type per method, and a versioned handshake
//!   ([`Hello`]).
//!
//! The host side (starting, watching and restarting the process) is in
//! `clisc-adapters`; a dependency-free Python side ships as
//! `plugins/adapters/python/clisc_plugin.py`. The protocol is documented
//! for plugin authors in `docs/plugins-process.md`.
//!
//! ```
//! use clisc_process_protocol::{read_frame, Call, Frame, HostMessage};
//!
//! let call = HostMessage::Call(Call::Save { path: "model.bin".into() });
//! let bytes = Frame::from_message(&call).encode();
//! let frame = read_frame(&mut bytes.as_slice()).unwrap();
//! assert_eq!(frame.kind(), "call");
//! assert_eq!(frame.message::<HostMessage>("a call").unwrap(), call);
//! ```
#![warn(unreachable_pub)]

pub mod frame;
pub mod message;

pub use frame::{read_frame, write_frame, Buffer, Dtype, Frame, ReadError};
pub use message::{
    Call, CandidateHeader, CaseHeader, Decision, ErrorReport, ExtractResult, GridHeader, Hello,
    HostMessage, MessageError, MetricsResult, ModelSelection, PluginInfo, PluginMessage,
    PointHeader, ProgressReport, PromptSetHeader, PromptsResult, ResultFields, RoundHeader,
    RunContext, SelectResult, SettingSpec, SettingType, SliceLabelEntry, SliceLabelHeader,
    SliceLabelsResult, PROTOCOL, PROTOCOL_VERSION,
};
