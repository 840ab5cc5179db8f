//! # clisc-nn: libtorch helpers shared by the built-in plugins
//!
//! Device selection from the pipeline's `device` string and loading of
//! weight files in the formats users actually download, with errors that
//! name the file and the tensor involved. Not part of the plugin ABI:
//! plugins use it internally.
//!
//! * [`device`]: `auto` / `cpu` / `cuda:N` -> `tch::Device`.
//! * [`weights`]: TorchScript archives, `torch.save` state dicts and
//!   safetensors -> `name -> tensor`, then a checked copy into a
//!   `VarStore` (see the module docs for the recipe).
//! * `torch_pickle`: the `torch.save` reader behind [`weights`].
#![warn(unreachable_pub)]

pub mod device;
pub(crate) mod torch_pickle;
pub mod weights;

pub use device::resolve_device;
pub use weights::{CopyReport, WeightFile, WeightFormat};
