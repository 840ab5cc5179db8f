//! # `cam`: the CLISC ROI extractor
//!
//! Stage 1b of CLISC: learn from slice pseudo-labels where the tumor is.
//!
//! * `cam` ([`plugin`]): a torchvision-named ResNet slice classifier
//!   ([`resnet`], [`classifier`]) trained on the kept slices
//!   ([`slices`]), class activation maps ([`cam`]: LayerCAM, Grad-CAM,
//!   CAM), adaptive masking data augmentation ([`amda`]) and unsupervised
//!   3D ROIs ([`roi`]).
#![warn(unreachable_pub)]

pub mod amda;
pub mod cam;
pub mod classifier;
pub mod plugin;
pub mod resnet;
pub mod roi;
pub mod slices;

clisc_sdk::register_builtin!(plugin::CamPlugin);

/// Serialises the tests that seed or draw from libtorch's process-wide
/// random generator (`tch::manual_seed`, weight initialisation, dropout,
/// `Tensor::rand`): run in parallel they would draw from each other's
/// stream, and a trained classifier would depend on the test threads.
#[cfg(test)]
pub(crate) fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
