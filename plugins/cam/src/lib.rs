//! # `cam`: the CLISC ROI extractor
//!
//! Stage 1b of CLISC: learn from slice pseudo-labels where the tumor is.
//!
//! * `cam` ([`plugin`]): a torchvision-named ResNet slice classifier
//!   ([`resnet`], [`classifier`]) trained on the kept slices
//!   ([`slices`]), class activation maps ([`cam`]: LayerCAM, Grad-CAM,
//!   CAM), adaptive masking data augmentation ([`amda`]) and unsupervised
//!   3D ROIs ([`roi`]).

pub mod amda;
pub mod cam;
pub mod classifier;
pub mod plugin;
pub mod resnet;
pub mod roi;
pub mod slices;

clisc_sdk::register_builtin!(plugin::CamPlugin);
