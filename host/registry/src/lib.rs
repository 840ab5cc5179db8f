//! # clisc registry
//!
//! Finding plugins and building stages from them, the one way every part
//! of clisc reaches a stage:
//!
//! * [`plugins`]: the registry of built-in plugins (collected with
//!   `inventory`) and external libraries, settings validated against each
//!   plugin's schema;
//! * [`loader`]: loading external plugin libraries (`cdylib`s) side by side;
//! * [`device`]: the compute device a stage gets, resolved before any
//!   plugin sees it (`auto` becomes `cpu` or `cuda:N`);
//! * [`standalone`]: one stage outside a pipeline, with a private work
//!   folder (`clisc infer`, `clisc sam`, `clisc clip`, the DICOM node).
#![warn(unreachable_pub)]

pub mod device;
pub mod loader;
pub mod plugins;
pub mod standalone;

pub use plugins::{Origin, RegisteredPlugin, Registry, RegistryError};
