//! # clisc-nn: libtorch helpers shared by the built-in plugins
//!
//! Device selection from the pipeline's `device` string and loading of
//! weight files in the formats users actually download, with errors that
//! name the file and the tensor involved. Not part of the plugin ABI:
//! plugins use it internally.

pub mod device;

pub use device::resolve_device;
