//! Settings of the `unet3d` plugin: schema, typed form and validation.
//!
//! [`UNetConfig`] uses the setting names as field names, so the same value
//! serialises to the stage's TOML settings (stored in checkpoints, so that
//! `clisc infer` can rebuild the stage) and to JSON.

use clisc_sdk::config::Settings;
use clisc_sdk::{plugin_settings, setting_choice, PluginError};
use serde::{Deserialize, Serialize};

setting_choice! {
    /// Training loss.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Loss {
        /// Cross-entropy (the paper).
        Ce = "ce",
        /// Cross-entropy plus soft Dice of the foreground.
        DiceCe = "dice_ce",
        /// Generalised cross-entropy `(1 - p_y^q) / q` (robust to label noise).
        Gce = "gce",
    }
}

setting_choice! {
    /// How a whole case is predicted.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum InferenceMode {
        /// Gaussian-weighted overlapping windows of `patch_size` at native resolution.
        Sliding = "sliding",
        /// The reference code: resize the volume to `resize_size`^3 (nearest), predict, resize back.
        Resize = "resize",
    }
}

setting_choice! {
    /// Which flips of each window are predicted and averaged at test time.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub(crate) enum Mirroring {
        /// The window as it is (the paper).
        #[default]
        Off = "off",
        /// The 4 combinations of flips along x and y.
        Axial = "axial",
        /// The 8 combinations of flips along x, y and z.
        All = "all",
    }
}

/// Serialises the choice enums by their settings names, so the config's
/// TOML (stored in checkpoints) and JSON hold the names the user writes.
macro_rules! serde_by_name {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                Self::from_name(&name)
                    .ok_or_else(|| serde::de::Error::unknown_variant(&name, Self::NAMES))
            }
        }
    )*};
}

serde_by_name!(Loss, InferenceMode, Mirroring);

impl Mirroring {
    /// The flipped tensor dimensions (`[B, C, z, y, x]`) of each extra
    /// pass; the unflipped pass is implied.
    pub(crate) fn flips(self) -> &'static [&'static [i64]] {
        match self {
            Mirroring::Off => &[],
            Mirroring::Axial => &[&[4], &[3], &[4, 3]],
            Mirroring::All => &[&[4], &[3], &[4, 3], &[2], &[4, 2], &[3, 2], &[4, 3, 2]],
        }
    }
}

plugin_settings! {
    /// Every setting of `unet3d`, typed; the field names are the setting keys.
    #[derive(Debug, Clone, PartialEq, Serialize)]
    pub struct UNetConfig {
        /// channels per level, last = bottleneck (paper: [16, 32, 64, 128, 256]); depth follows the list
        pub features: Vec<i64> = float_list(&[16.0, 32.0, 64.0, 128.0, 256.0]),
        /// dropout after the bottleneck and before the final 1x1x1 conv (paper: 0.3)
        pub dropout: f64 = float(0.3),
        /// training patch = inference window, voxels [x, y, z] (paper: 128^3); multiples of 2^(levels-1)
        pub patch_size: [i64; 3] = float_list(&[64.0, 64.0, 64.0]),
        /// patches per SGD step (paper: 2)
        pub batch_size: usize = integer(2),
        /// SGD steps (used when `epochs` = 0)
        pub iterations: usize = integer(1000),
        /// when > 0, train epochs * ceil(cases / batch_size) steps instead of `iterations`
        pub epochs: usize = integer(0),
        /// initial SGD learning rate (paper: 0.01)
        pub learning_rate: f64 = float(0.01),
        /// SGD momentum (paper: 0.9)
        pub momentum: f64 = float(0.9),
        /// SGD weight decay (paper: 1e-4)
        pub weight_decay: f64 = float(1e-4),
        /// poly decay lr = lr0 * (1 - step/steps)^power (paper: 0.9)
        pub poly_power: f64 = float(0.9),
        /// cross-entropy (paper), CE + soft Dice, or generalised CE
        pub loss: Loss = choice(Loss::Ce.name(), Loss::NAMES),
        /// q of the generalised cross-entropy (0 < q <= 1)
        pub gce_q: f64 = float(0.7),
        /// probability that a patch is centred on a target voxel (0 = uniform random crops as the paper)
        pub foreground_fraction: f64 = float(0.33),
        /// random flips along x, y and z
        pub flips: bool = bool(true),
        /// random 90-degree rotations in the axial plane (180 only if x and y patch sizes differ)
        pub rotations: bool = bool(true),
        /// random gain of brain intensities in [1 - s, 1 + s] per patch (0 = off, as the paper)
        pub intensity_scale: f64 = float(0.0),
        /// random offset of brain intensities in [-s, s] z-score units per patch (0 = off)
        pub intensity_shift: f64 = float(0.0),
        /// random linear field over a patch, up to this many z-score units at its faces (0 = off)
        pub intensity_ramp: f64 = float(0.0),
        /// fp16 autocast with loss scaling on CUDA (ignored on the CPU)
        pub mixed_precision: bool = bool(true),
        /// steps between resumable checkpoints in the work dir
        pub checkpoint_every: usize = integer(100),
        /// steps between scores on the held-out cases when the pipeline asks for model selection
        /// (the best-scoring weights are kept)
        pub validation_every: usize = integer(100),
        /// sliding: Gaussian-weighted windows at native resolution; resize: the reference code's
        /// whole volume resized to resize_size^3
        pub inference: InferenceMode = choice(InferenceMode::Sliding.name(), InferenceMode::NAMES),
        /// overlap of neighbouring windows in sliding mode, in [0, 1)
        pub overlap: f64 = float(0.5),
        /// windows per forward pass in sliding mode
        pub window_batch: usize = integer(2),
        /// cube side of the resize mode (paper: 128)
        pub resize_size: i64 = integer(128),
        /// keep only the largest 3D connected component of each prediction
        pub largest_component: bool = bool(false),
        /// test-time mirroring: average each window's prediction over its flips along x and y
        /// (axial: 4 passes) or x, y and z (all: 8 passes); off in the paper
        pub mirroring: Mirroring = choice(Mirroring::Off.name(), Mirroring::NAMES),
    }
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self::defaults().expect("unet3d declares a default for every setting")
    }
}

impl UNetConfig {
    /// Reads and validates the resolved settings.
    pub fn from_settings(s: &Settings) -> Result<Self, PluginError> {
        let cfg = Self::read(s)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and the patch / depth compatibility.
    pub fn validate(&self) -> Result<(), PluginError> {
        let err = |m: String| Err(PluginError::config(format!("unet3d: {m}")));
        if self.features.len() < 2 || self.features.iter().any(|&f| f < 1) {
            return err(format!(
                "`features` needs at least 2 positive entries, found {:?}",
                self.features
            ));
        }
        let multiple = self.size_multiple();
        if self.patch_size.iter().any(|&p| p < 1 || p % multiple != 0) {
            return err(format!(
                "`patch_size` {:?} must be multiples of {multiple} (2^{} poolings for {} feature levels)",
                self.patch_size,
                self.features.len() - 1,
                self.features.len()
            ));
        }
        if self.inference == InferenceMode::Resize
            && (self.resize_size < 1 || self.resize_size % multiple != 0)
        {
            return err(format!(
                "`resize_size` {} must be a positive multiple of {multiple}",
                self.resize_size
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(format!(
                "`dropout` must be in [0, 1), found {}",
                self.dropout
            ));
        }
        if self.batch_size == 0
            || self.window_batch == 0
            || self.checkpoint_every == 0
            || self.validation_every == 0
        {
            return err(
                "`batch_size`, `window_batch`, `checkpoint_every` and `validation_every` must be at least 1".into(),
            );
        }
        let non_negative = |v: f64| v >= 0.0 && v.is_finite();
        let ranges_ok = (0.0..1.0).contains(&self.intensity_scale)
            && non_negative(self.intensity_shift)
            && non_negative(self.intensity_ramp);
        if !ranges_ok {
            return err(format!(
                "`intensity_scale` must be in [0, 1) and `intensity_shift`, `intensity_ramp` finite and >= 0, found {}, {}, {}",
                self.intensity_scale, self.intensity_shift, self.intensity_ramp
            ));
        }
        if self.epochs == 0 && self.iterations == 0 {
            return err("set `iterations` or `epochs` above 0".into());
        }
        if self.learning_rate.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            || self.momentum < 0.0
            || self.weight_decay < 0.0
            || self.poly_power < 0.0
        {
            return err(
                "`learning_rate` must be > 0 and `momentum`, `weight_decay`, `poly_power` >= 0"
                    .into(),
            );
        }
        if !(self.gce_q > 0.0 && self.gce_q <= 1.0) {
            return err(format!("`gce_q` must be in (0, 1], found {}", self.gce_q));
        }
        if !(0.0..=1.0).contains(&self.foreground_fraction) {
            return err(format!(
                "`foreground_fraction` must be in [0, 1], found {}",
                self.foreground_fraction
            ));
        }
        if !(0.0..1.0).contains(&self.overlap) {
            return err(format!(
                "`overlap` must be in [0, 1), found {}",
                self.overlap
            ));
        }
        Ok(())
    }

    /// Input sizes must be multiples of this (`2^(levels - 1)`).
    pub(crate) fn size_multiple(&self) -> i64 {
        1 << (self.features.len() - 1)
    }

    /// Number of SGD steps for `cases` training cases.
    pub fn total_steps(&self, cases: usize) -> usize {
        if self.epochs > 0 {
            self.epochs * cases.div_ceil(self.batch_size).max(1)
        } else {
            self.iterations
        }
    }

    /// The settings as a TOML table text, accepted by the plugin's schema.
    pub(crate) fn to_settings_toml(&self) -> String {
        toml::to_string(self).expect("the config serialises to TOML")
    }

    /// The part of the config that decides what training produces; a
    /// checkpoint can be resumed only when this is unchanged.
    pub(crate) fn training_key(&self) -> String {
        let mut t = self.clone();
        t.checkpoint_every = 0;
        t.validation_every = 0;
        t.inference = InferenceMode::Sliding;
        t.overlap = 0.0;
        t.window_batch = 1;
        t.resize_size = 0;
        t.largest_component = false;
        t.mirroring = Mirroring::Off;
        serde_json::to_string(&t).expect("the config serialises to JSON")
    }

    /// Replaces the architecture and training fields by `stored`'s and keeps
    /// this config's inference fields (used when loading a checkpoint).
    pub(crate) fn with_inference_of(&self, stored: &UNetConfig) -> UNetConfig {
        UNetConfig {
            inference: self.inference,
            overlap: self.overlap,
            window_batch: self.window_batch,
            resize_size: self.resize_size,
            largest_component: self.largest_component,
            mirroring: self.mirroring,
            ..stored.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<UNetConfig, PluginError> {
        UNetConfig::from_settings(&Settings::parse("unet3d", text, &UNetConfig::schema())?)
    }

    #[test]
    fn defaults_are_the_paper_network_and_round_trip_through_toml() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg, UNetConfig::default());
        assert_eq!(cfg.features, vec![16, 32, 64, 128, 256]);
        let again = parse(&cfg.to_settings_toml()).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn rejects_patches_the_depth_cannot_pool() {
        let e = parse("features = [8, 16, 32, 64]\npatch_size = [48, 48, 36]").unwrap_err();
        assert!(e.message.contains("multiples of 8"), "{}", e.message);
        assert!(parse("features = [8, 16, 32, 64]\npatch_size = [48, 48, 32]").is_ok());
        assert!(parse("features = [8.5, 16]")
            .unwrap_err()
            .message
            .contains("whole numbers"));
        assert!(parse("features = [0, 16]")
            .unwrap_err()
            .message
            .contains("positive entries"));
        assert!(parse("patch_size = [64, 64]")
            .unwrap_err()
            .message
            .contains("3 whole numbers"));
        assert!(parse("overlap = 1.0")
            .unwrap_err()
            .message
            .contains("overlap"));
    }

    #[test]
    fn epochs_override_iterations() {
        let cfg = parse("epochs = 3\nbatch_size = 2").unwrap();
        assert_eq!(cfg.total_steps(5), 9);
        assert_eq!(parse("iterations = 7").unwrap().total_steps(5), 7);
    }
}
