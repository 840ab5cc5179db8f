//! Settings of the `unet3d` plugin: schema, typed form and validation.
//!
//! [`UNetConfig`] uses the setting names as field names, so the same value
//! serialises to the stage's TOML settings (stored in checkpoints, so that
//! `clisc infer` can rebuild the stage) and to JSON.

use clisc_sdk::config::Settings;
use clisc_sdk::{ConfigField, PluginError};
use serde::{Deserialize, Serialize};

/// Training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Cross-entropy (the paper).
    Ce,
    /// Cross-entropy plus soft Dice of the foreground.
    DiceCe,
    /// Generalised cross-entropy `(1 - p_y^q) / q` (robust to label noise).
    Gce,
}

/// How a whole case is predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferenceMode {
    /// Gaussian-weighted overlapping windows of `patch_size` at native resolution.
    Sliding,
    /// The reference code: resize the volume to `resize_size`^3 (nearest), predict, resize back.
    Resize,
}

/// Which flips of each window are predicted and averaged at test time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mirroring {
    /// The window as it is (the paper).
    #[default]
    Off,
    /// The 4 combinations of flips along x and y.
    Axial,
    /// The 8 combinations of flips along x, y and z.
    All,
}

impl Mirroring {
    /// The flipped tensor dimensions (`[B, C, z, y, x]`) of each extra
    /// pass; the unflipped pass is implied.
    pub fn flips(self) -> &'static [&'static [i64]] {
        match self {
            Mirroring::Off => &[],
            Mirroring::Axial => &[&[4], &[3], &[4, 3]],
            Mirroring::All => &[&[4], &[3], &[4, 3], &[2], &[4, 2], &[3, 2], &[4, 3, 2]],
        }
    }
}

/// Every setting of `unet3d`, typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Channels per level; the last entry is the bottleneck. Depth = len - 1 poolings.
    pub features: Vec<i64>,
    /// Dropout probability after the bottleneck and before the final conv.
    pub dropout: f64,
    /// Training patch and inference window, voxels along x, y, z.
    pub patch_size: [i64; 3],
    /// Patches per SGD step.
    pub batch_size: usize,
    /// SGD steps (ignored when `epochs` > 0).
    pub iterations: usize,
    /// When > 0: `epochs * ceil(cases / batch_size)` steps.
    pub epochs: usize,
    /// Initial SGD learning rate.
    pub learning_rate: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// SGD weight decay.
    pub weight_decay: f64,
    /// Exponent of the poly learning-rate decay.
    pub poly_power: f64,
    /// Training loss.
    pub loss: Loss,
    /// `q` of the generalised cross-entropy.
    pub gce_q: f64,
    /// Probability that a patch is centred on a target voxel.
    pub foreground_fraction: f64,
    /// Random flips along x, y and z.
    pub flips: bool,
    /// Random 90-degree rotations in the axial plane.
    pub rotations: bool,
    /// Random gain of brain intensities in `[1 - s, 1 + s]` (0 = off).
    #[serde(default)]
    pub intensity_scale: f64,
    /// Random offset of brain intensities in `[-s, s]`, z-score units (0 = off).
    #[serde(default)]
    pub intensity_shift: f64,
    /// Random linear field over a patch, up to this many z-score units at its faces (0 = off).
    #[serde(default)]
    pub intensity_ramp: f64,
    /// Mixed precision (fp16 autocast with loss scaling) when on CUDA.
    pub mixed_precision: bool,
    /// Save a resumable checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// Score the network on the held-out cases every this many steps (and
    /// at the end) when the host passes any for model selection.
    pub validation_every: usize,
    /// Whole-case prediction mode.
    pub inference: InferenceMode,
    /// Fraction of overlap between neighbouring windows (sliding mode).
    pub overlap: f64,
    /// Windows per forward pass (sliding mode).
    pub window_batch: usize,
    /// Cube side of the resize mode.
    pub resize_size: i64,
    /// Keep only the largest 3D connected component of predictions.
    pub largest_component: bool,
    /// Test-time mirroring of each window.
    #[serde(default)]
    pub mirroring: Mirroring,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self {
            features: vec![16, 32, 64, 128, 256],
            dropout: 0.3,
            patch_size: [64, 64, 64],
            batch_size: 2,
            iterations: 1000,
            epochs: 0,
            learning_rate: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            poly_power: 0.9,
            loss: Loss::Ce,
            gce_q: 0.7,
            foreground_fraction: 0.33,
            flips: true,
            rotations: true,
            intensity_scale: 0.0,
            intensity_shift: 0.0,
            intensity_ramp: 0.0,
            mixed_precision: true,
            checkpoint_every: 100,
            validation_every: 100,
            inference: InferenceMode::Sliding,
            overlap: 0.5,
            window_batch: 2,
            resize_size: 128,
            largest_component: false,
            mirroring: Mirroring::Off,
        }
    }
}

/// The settings schema of `unet3d`, defaults from [`UNetConfig::default`].
pub fn schema() -> Vec<ConfigField> {
    let d = UNetConfig::default();
    let f: Vec<f64> = d.features.iter().map(|&v| v as f64).collect();
    let p: Vec<f64> = d.patch_size.iter().map(|&v| v as f64).collect();
    vec![
        ConfigField::float_list("features", &f, "channels per level, last = bottleneck (paper: [16, 32, 64, 128, 256]); depth follows the list"),
        ConfigField::float("dropout", d.dropout, "dropout after the bottleneck and before the final 1x1x1 conv (paper: 0.3)"),
        ConfigField::float_list("patch_size", &p, "training patch = inference window, voxels [x, y, z] (paper: 128^3); multiples of 2^(levels-1)"),
        ConfigField::integer("batch_size", d.batch_size as i64, "patches per SGD step (paper: 2)"),
        ConfigField::integer("iterations", d.iterations as i64, "SGD steps (used when `epochs` = 0)"),
        ConfigField::integer("epochs", d.epochs as i64, "when > 0, train epochs * ceil(cases / batch_size) steps instead of `iterations`"),
        ConfigField::float("learning_rate", d.learning_rate, "initial SGD learning rate (paper: 0.01)"),
        ConfigField::float("momentum", d.momentum, "SGD momentum (paper: 0.9)"),
        ConfigField::float("weight_decay", d.weight_decay, "SGD weight decay (paper: 1e-4)"),
        ConfigField::float("poly_power", d.poly_power, "poly decay lr = lr0 * (1 - step/steps)^power (paper: 0.9)"),
        ConfigField::choice("loss", "ce", &["ce", "dice_ce", "gce"], "cross-entropy (paper), CE + soft Dice, or generalised CE"),
        ConfigField::float("gce_q", d.gce_q, "q of the generalised cross-entropy (0 < q <= 1)"),
        ConfigField::float(
            "foreground_fraction",
            d.foreground_fraction,
            "probability that a patch is centred on a target voxel (0 = uniform random crops as the paper)",
        ),
        ConfigField::bool("flips", d.flips, "random flips along x, y and z"),
        ConfigField::bool("rotations", d.rotations, "random 90-degree rotations in the axial plane (180 only if x and y patch sizes differ)"),
        ConfigField::float("intensity_scale", d.intensity_scale, "random gain of brain intensities in [1 - s, 1 + s] per patch (0 = off, as the paper)"),
        ConfigField::float("intensity_shift", d.intensity_shift, "random offset of brain intensities in [-s, s] z-score units per patch (0 = off)"),
        ConfigField::float("intensity_ramp", d.intensity_ramp, "random linear field over a patch, up to this many z-score units at its faces (0 = off)"),
        ConfigField::bool("mixed_precision", d.mixed_precision, "fp16 autocast with loss scaling on CUDA (ignored on the CPU)"),
        ConfigField::integer("checkpoint_every", d.checkpoint_every as i64, "steps between resumable checkpoints in the work dir"),
        ConfigField::integer("validation_every", d.validation_every as i64, "steps between scores on the held-out cases when the pipeline asks for model selection (the best-scoring weights are kept)"),
        ConfigField::choice(
            "inference",
            "sliding",
            &["sliding", "resize"],
            "sliding: Gaussian-weighted windows at native resolution; resize: the reference code's whole volume resized to resize_size^3",
        ),
        ConfigField::float("overlap", d.overlap, "overlap of neighbouring windows in sliding mode, in [0, 1)"),
        ConfigField::integer("window_batch", d.window_batch as i64, "windows per forward pass in sliding mode"),
        ConfigField::integer("resize_size", d.resize_size, "cube side of the resize mode (paper: 128)"),
        ConfigField::bool("largest_component", d.largest_component, "keep only the largest 3D connected component of each prediction"),
        ConfigField::choice(
            "mirroring",
            "off",
            &["off", "axial", "all"],
            "test-time mirroring: average each window's prediction over its flips along x and y (axial: 4 passes) or x, y and z (all: 8 passes); off in the paper",
        ),
    ]
}

fn int_list<const N: usize>(key: &str, values: Vec<f64>) -> Result<Vec<i64>, PluginError> {
    let bad = || {
        PluginError::config(format!(
            "unet3d: `{key}` must hold positive integers, found {values:?}"
        ))
    };
    if N > 0 && values.len() != N {
        return Err(PluginError::config(format!(
            "unet3d: `{key}` must have {N} entries, found {}",
            values.len()
        )));
    }
    values
        .iter()
        .map(|&v| {
            if v >= 1.0 && v.fract() == 0.0 {
                Ok(v as i64)
            } else {
                Err(bad())
            }
        })
        .collect()
}

impl UNetConfig {
    /// Reads and validates the resolved settings.
    pub fn from_settings(s: &Settings) -> Result<Self, PluginError> {
        let features = int_list::<0>("features", s.f64_list("features")?)?;
        let patch = int_list::<3>("patch_size", s.f64_list("patch_size")?)?;
        let loss = match s.str("loss")? {
            "ce" => Loss::Ce,
            "dice_ce" => Loss::DiceCe,
            _ => Loss::Gce,
        };
        let inference = match s.str("inference")? {
            "resize" => InferenceMode::Resize,
            _ => InferenceMode::Sliding,
        };
        let cfg = Self {
            features,
            dropout: s.f64("dropout")?,
            patch_size: [patch[0], patch[1], patch[2]],
            batch_size: s.usize("batch_size")?,
            iterations: s.usize("iterations")?,
            epochs: s.usize("epochs")?,
            learning_rate: s.f64("learning_rate")?,
            momentum: s.f64("momentum")?,
            weight_decay: s.f64("weight_decay")?,
            poly_power: s.f64("poly_power")?,
            loss,
            gce_q: s.f64("gce_q")?,
            foreground_fraction: s.f64("foreground_fraction")?,
            flips: s.bool("flips")?,
            rotations: s.bool("rotations")?,
            intensity_scale: s.f64("intensity_scale")?,
            intensity_shift: s.f64("intensity_shift")?,
            intensity_ramp: s.f64("intensity_ramp")?,
            mixed_precision: s.bool("mixed_precision")?,
            checkpoint_every: s.usize("checkpoint_every")?,
            validation_every: s.usize("validation_every")?,
            inference,
            overlap: s.f64("overlap")?,
            window_batch: s.usize("window_batch")?,
            resize_size: s.i64("resize_size")?,
            largest_component: s.bool("largest_component")?,
            mirroring: match s.str("mirroring")? {
                "axial" => Mirroring::Axial,
                "all" => Mirroring::All,
                _ => Mirroring::Off,
            },
        };
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
    pub fn size_multiple(&self) -> i64 {
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
    pub fn to_settings_toml(&self) -> String {
        toml::to_string(self).expect("the config serialises to TOML")
    }

    /// The part of the config that decides what training produces; a
    /// checkpoint can be resumed only when this is unchanged.
    pub fn training_key(&self) -> String {
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
    pub fn with_inference_of(&self, stored: &UNetConfig) -> UNetConfig {
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
        UNetConfig::from_settings(&Settings::parse("unet3d", text, &schema())?)
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
            .contains("positive integers"));
        assert!(parse("patch_size = [64, 64]")
            .unwrap_err()
            .message
            .contains("3 entries"));
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
