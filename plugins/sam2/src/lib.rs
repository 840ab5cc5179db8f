//! # `sam2`: SAM 2 / SAM 2.1 and MedSAM2 in `tch`
//!
//! Meta's Segment Anything 2 (Hiera image encoder, memory attention,
//! memory encoder, SAM heads) under the official parameter names, loading
//! the checkpoints users download (`sam2.1_hiera_{tiny,small,base_plus,large}.pt`,
//! `sam2_hiera_*.pt`, MedSAM2's `MedSAM2_latest.pt`), with the semantics of
//! the official image predictor ([`predictor`]) and video predictor
//! ([`propagation`], the axial slices of a volume as the frames of a
//! video), and the `sam2` promptable segmenter ([`plugin`]).
#![warn(unreachable_pub)]

pub mod config;
mod hiera;
mod holes;
mod image_encoder;
mod mask_decoder;
mod memory_attention;
mod memory_encoder;
pub mod model;
pub mod plugin;
pub mod predictor;
pub mod propagation;
pub mod transforms;

pub use config::Sam2Config;
pub use model::Sam2;
pub use plugin::{Sam2Plugin, Sam2Segmenter};
pub use predictor::Sam2Predictor;
pub use propagation::{Frames, Propagation};
pub use transforms::Prompt;
