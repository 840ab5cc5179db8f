//! # `unet3d`: the 3D U-Net of CLISC as a volumetric-segmenter plugin
//!
//! * [`network`]: the network (PyTorch `unet_3D` names);
//! * [`config`]: settings and validation;
//! * [`patches`]: in-memory cases, random augmented patches on a background thread;
//! * [`train`]: SGD with poly decay, CE / Dice+CE / GCE, fp16 on CUDA, resumable checkpoints;
//! * [`infer`]: Gaussian sliding windows or the reference resize mode;
//! * [`selection`]: keeps the checkpoint that scores best on held-out cases;
//! * [`checkpoint`]: one safetensors file with weights and settings;
//! * [`phantom`]: small synthetic cases for tests and benchmarks.
//!
//! Predictions are restricted to the case's brain mask and optionally
//! reduced to their largest 3D connected component.
#![warn(unreachable_pub)]

pub mod checkpoint;
pub mod config;
pub mod infer;
pub mod network;
pub mod patches;
pub mod phantom;
pub mod selection;
pub mod train;

use abi_stable::std_types::{ROption, RResult, RSlice, RStr};
use clisc_sdk::config::Settings;
use clisc_sdk::stage::{
    CaseInput, CheckpointChoice, StageReport, TrainingCase, ValidationCase, VolumetricSegmenter,
};
use clisc_sdk::{
    ConfigField, HostContext, LabelVolume, Plugin, PluginError, ProbabilityVolume, ProgressSinkBox,
    StageKind, StageObject,
};
use config::UNetConfig;
use patches::CaseArrays;
use selection::{HeldOutCase, ModelSelector};
use std::path::{Path, PathBuf};
use tch::Device;
use train::{Model, TrainMonitor};

/// Plugin name used in pipeline files.
pub const NAME: &str = "unet3d";
/// Plugin version (stored in checkpoints).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// File name of the resumable training checkpoint inside the work dir.
pub(crate) const TRAINING_CHECKPOINT: &str = "unet3d-training.safetensors";

/// Plugin registration of [`Unet3d`].
pub(crate) struct Unet3dPlugin;

impl Plugin for Unet3dPlugin {
    const NAME: &'static str = NAME;
    const KIND: StageKind = StageKind::VolumetricSegmenter;
    const VERSION: &'static str = VERSION;
    const DESCRIPTION: &'static str =
        "3D U-Net of CLISC (tch): patch training on pseudo-labels, Gaussian sliding-window inference, resumable checkpoints";

    fn settings() -> Vec<ConfigField> {
        UNetConfig::schema()
    }

    fn create(settings: Settings, ctx: &HostContext) -> Result<StageObject, PluginError> {
        let cfg = UNetConfig::from_settings(&settings)?;
        Ok(StageObject::volumetric_segmenter(Unet3d::new(cfg, ctx)?))
    }
}

/// The stage: its settings, where it runs, and the trained model once there is one.
pub struct Unet3d {
    cfg: UNetConfig,
    device: Device,
    seed: u64,
    threads: u32,
    work_dir: PathBuf,
    progress: ProgressSinkBox,
    model: Option<Model>,
}

struct Progress<'a>(&'a ProgressSinkBox);

impl TrainMonitor for Progress<'_> {
    fn step(&mut self, done: usize, total: usize, loss: f64, lr: f64) -> bool {
        self.0.report(
            "training".into(),
            done as u64,
            total as u64,
            format!("loss {loss:.4} lr {lr:.2e}").as_str().into(),
        );
        true
    }
    fn log(&mut self, message: &str) {
        // The host's sink logs it (prefixed with the plugin name).
        self.0.log(message.into());
    }
}

impl Unet3d {
    /// A stage with `cfg` in `ctx` (device, seed, threads, work dir, progress).
    pub fn new(cfg: UNetConfig, ctx: &HostContext) -> Result<Self, PluginError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            device: clisc_nn::resolve_device(ctx.device.as_str())?,
            seed: ctx.seed,
            threads: ctx.threads,
            work_dir: PathBuf::from(ctx.work_dir.as_str()),
            progress: ctx.progress.clone(),
            model: None,
        })
    }

    /// The configuration in use (after `load`, the checkpoint's network and
    /// training settings with this stage's inference settings).
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    fn set_threads(&self) {
        if self.threads > 0 && self.device == Device::Cpu {
            tch::set_num_threads(self.threads as i32);
        }
    }

    /// Trains a new network from scratch (or resumes the one in the work dir).
    pub fn train_cases(&mut self, cases: &[TrainingCase]) -> Result<StageReport, PluginError> {
        self.train_selecting(cases, &[])
    }

    /// Trains like [`Unet3d::train_cases`]; with `validation` cases, scores
    /// the network on them every `validation_every` steps and keeps the
    /// best-scoring weights instead of the last ones.
    pub(crate) fn train_selecting(
        &mut self,
        cases: &[TrainingCase],
        validation: &[ValidationCase],
    ) -> Result<StageReport, PluginError> {
        let arrays = cases
            .iter()
            .map(CaseArrays::from_training)
            .collect::<Result<Vec<_>, _>>()?;
        let held_out = validation
            .iter()
            .map(HeldOutCase::from_validation)
            .collect::<Result<Vec<_>, _>>()?;
        let mut selector =
            (!held_out.is_empty()).then(|| ModelSelector::new(held_out, self.cfg.validation_every));
        self.set_threads();
        let mut model = Model::new(&self.cfg, self.device, self.seed);
        let ckpt = self.work_dir.join(TRAINING_CHECKPOINT);
        let outcome = train::train(
            &mut model,
            arrays,
            self.seed,
            &ckpt,
            &mut Progress(&self.progress),
            selector.as_mut(),
        )?;
        self.model = Some(model);
        let mut report = StageReport::default();
        report.push("final_loss", outcome.final_loss);
        report.push("steps", outcome.total_steps as f64);
        report.push("resumed_from_step", outcome.resumed_from as f64);
        report.push("training_seconds", outcome.seconds);
        let run = outcome.total_steps - outcome.resumed_from;
        if run > 0 {
            report.push("seconds_per_step", outcome.seconds / run as f64);
        }
        if outcome.skipped_steps > 0 {
            report.push("fp16_skipped_steps", outcome.skipped_steps as f64);
        }
        if let Some(chosen) = outcome.selection {
            report.push("validation_cases", validation.len() as f64);
            report.selection = ROption::RSome(CheckpointChoice {
                step: chosen.step as u64,
                validation_dice: chosen.dice,
                last_validation_dice: ROption::RSome(chosen.last_dice),
                evaluations: ROption::RSome(chosen.evaluations as u32),
            });
        }
        Ok(report)
    }

    /// Binary prediction of one case on its grid (brain only).
    pub(crate) fn predict_case(&mut self, case: &CaseInput) -> Result<LabelVolume, PluginError> {
        Ok(self.predict_case_probability(case)?.labels())
    }

    /// Foreground probability of every voxel of a case (see
    /// [`infer::predict_probability`]); [`Unet3d::predict_case`] is this
    /// cut at one half.
    pub(crate) fn predict_case_probability(
        &mut self,
        case: &CaseInput,
    ) -> Result<ProbabilityVolume, PluginError> {
        let model = self
            .model
            .as_ref()
            .ok_or_else(|| PluginError::input("unet3d: predict called before train or load"))?;
        let grid = case.image.grid;
        let image = case.image.require_channel("flair")?;
        grid.check_len(image.len(), &format!("unet3d: case `{}` flair", case.id))?;
        if case.brain_mask.grid.shape != grid.shape {
            return Err(PluginError::input(format!(
                "unet3d: case `{}`: brain mask grid {:?} differs from the image grid {:?}",
                case.id, case.brain_mask.grid.shape, grid.shape
            )));
        }
        self.set_threads();
        let prob =
            infer::predict_probability(model, &self.cfg, image, &case.brain_mask.data, grid.dims());
        Ok(ProbabilityVolume {
            grid,
            data: prob.into(),
        })
    }

    /// Writes the trained model with its settings to `path`.
    pub(crate) fn save_model(&self, path: &Path) -> Result<(), PluginError> {
        let model = self
            .model
            .as_ref()
            .ok_or_else(|| PluginError::input("unet3d: nothing to save (not trained)"))?;
        let meta = checkpoint::CheckpointMeta {
            plugin_version: VERSION.to_string(),
            config: model.cfg.clone(),
            step: 0,
            total_steps: 0,
            data_key: String::new(),
            loss: f64::NAN,
        };
        checkpoint::save(&model.vs, &meta, path)
    }

    /// Loads a model written by [`Unet3d::save_model`] (or a training
    /// checkpoint): the network and training settings come from the file,
    /// the inference settings from this stage.
    pub(crate) fn load_model(&mut self, path: &Path) -> Result<(), PluginError> {
        let ck = checkpoint::read(path)?;
        let cfg = self.cfg.with_inference_of(&ck.meta.config);
        cfg.validate().map_err(|e| {
            PluginError::config(format!("{} (with the model {})", e.message, path.display()))
        })?;
        let mut model = Model::new(&cfg, self.device, self.seed);
        checkpoint::load_into(&mut model.vs, &ck.tensors, path)?;
        self.cfg = cfg;
        self.model = Some(model);
        Ok(())
    }
}

impl VolumetricSegmenter for Unet3d {
    fn train(&mut self, cases: RSlice<'_, TrainingCase>) -> RResult<StageReport, PluginError> {
        self.train_cases(cases.as_slice()).into()
    }
    fn train_with_validation(
        &mut self,
        cases: RSlice<'_, TrainingCase>,
        validation: RSlice<'_, ValidationCase>,
    ) -> RResult<StageReport, PluginError> {
        self.train_selecting(cases.as_slice(), validation.as_slice())
            .into()
    }
    fn predict(&mut self, case: &CaseInput) -> RResult<LabelVolume, PluginError> {
        self.predict_case(case).into()
    }
    fn predict_probability(&mut self, case: &CaseInput) -> RResult<ProbabilityVolume, PluginError> {
        self.predict_case_probability(case).into()
    }
    fn save(&self, path: RStr<'_>) -> RResult<(), PluginError> {
        self.save_model(Path::new(path.as_str())).into()
    }
    fn load(&mut self, path: RStr<'_>) -> RResult<(), PluginError> {
        self.load_model(Path::new(path.as_str())).into()
    }
}

/// Serialises the tests that use libtorch's process-wide random generator
/// (initialisation, dropout): tests run on parallel threads, and one that
/// compares two trainings needs the generator to itself.
#[cfg(test)]
pub(crate) fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

clisc_sdk::register_builtin!(Unet3dPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::{phantom, PhantomSpec};
    use clisc_imaging::overlap::dice;

    const SMALL: PhantomSpec = PhantomSpec {
        dims: [32, 32, 24],
        contrast: 4.0,
        noise: 0.15,
        lesion_size: 0.2,
    };

    fn config(extra: &str) -> UNetConfig {
        let patch = if extra.contains("patch_size") {
            ""
        } else {
            "patch_size = [32, 32, 16]\n"
        };
        let text = format!("features = [4, 8, 16]\n{patch}batch_size = 2\n{extra}");
        UNetConfig::from_settings(&Settings::parse(NAME, &text, &UNetConfig::schema()).unwrap())
            .unwrap()
    }

    fn stage(cfg: UNetConfig, dir: &Path) -> Unet3d {
        let ctx = HostContext::for_tests(dir.to_str().unwrap(), 7);
        Unet3d::new(cfg, &ctx).unwrap()
    }

    fn mean_dice(net: &mut Unet3d, cases: &[TrainingCase]) -> f64 {
        let total: f64 = cases
            .iter()
            .map(|c| dice(&net.predict_case(&c.case).unwrap().data, &c.target.data))
            .sum();
        total / cases.len() as f64
    }

    #[test]
    fn learns_to_segment_a_hyperintense_lesion() {
        let _rng = torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<TrainingCase> = (0..4).map(|s| phantom(SMALL, s)).collect();
        let unseen = phantom(SMALL, 99);
        let cfg = config(
            "patch_size = [32, 32, 24]\niterations = 120\nloss = \"dice_ce\"\nlearning_rate = 0.02\ndropout = 0.1",
        );
        let mut untrained = stage(cfg.clone(), dir.path());
        untrained.model = Some(Model::new(&cfg, Device::Cpu, 7));
        let before = mean_dice(&mut untrained, &cases);
        let mut net = stage(cfg, dir.path());
        let report = net.train_cases(&cases).unwrap();
        let train_dice = mean_dice(&mut net, &cases);
        let test_dice = mean_dice(&mut net, std::slice::from_ref(&unseen));
        eprintln!(
            "dice before {before:.3}, after: train {train_dice:.3}, unseen {test_dice:.3}; {:?}",
            report.metrics
        );
        assert!(
            before < 0.2,
            "an untrained network is near chance ({before})"
        );
        assert!(train_dice > 0.6, "training phantoms: Dice {train_dice}");
        assert!(test_dice > 0.4, "unseen phantom: Dice {test_dice}");
        let loss = report
            .metrics
            .iter()
            .find(|m| m.name.as_str() == "final_loss")
            .unwrap()
            .value;
        assert!(loss.is_finite() && loss < 0.8, "final loss {loss}");
    }

    #[test]
    fn saved_models_reload_with_their_settings_and_predict_identically() {
        let _rng = torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<TrainingCase> = (0..2).map(|s| phantom(SMALL, s)).collect();
        let mut net = stage(config("iterations = 3\ndropout = 0.1"), dir.path());
        assert!(net
            .predict_case(&cases[0].case)
            .unwrap_err()
            .message
            .contains("before train or load"));
        assert!(net.save_model(&dir.path().join("x")).is_err());
        net.train_cases(&cases).unwrap();
        let path = dir.path().join("model.ckpt");
        net.save_model(&path).unwrap();
        let expected = net.predict_case(&cases[1].case).unwrap();

        // A stage created with default settings takes the network from the
        // file and keeps its own inference settings.
        let mut other = stage(
            UNetConfig {
                overlap: 0.25,
                ..UNetConfig::default()
            },
            dir.path(),
        );
        other.load_model(&path).unwrap();
        assert_eq!(other.config().features, vec![4, 8, 16]);
        assert_eq!(other.config().dropout, 0.1);
        assert_eq!(other.config().overlap, 0.25);
        let mut same = stage(config("iterations = 3\ndropout = 0.1"), dir.path());
        same.load_model(&path).unwrap();
        assert_eq!(same.predict_case(&cases[1].case).unwrap(), expected);

        let ck = checkpoint::read(&path).unwrap();
        assert_eq!(ck.meta.plugin_version, VERSION);
        assert!(ck.tensors.contains_key("up_concat2.conv.conv2.0.weight"));
        // The stored settings are a valid settings table for the plugin.
        let text = ck.meta.config.to_settings_toml();
        assert!(
            Settings::parse(NAME, &text, &UNetConfig::schema()).is_ok(),
            "{text}"
        );

        let garbage = dir.path().join("garbage.safetensors");
        std::fs::write(&garbage, b"not a checkpoint").unwrap();
        let e = other.load_model(&garbage).unwrap_err();
        assert!(e.message.contains("garbage.safetensors"), "{}", e.message);
    }

    #[test]
    fn probabilities_cut_at_one_half_are_the_prediction() {
        let _rng = torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let case = phantom(SMALL, 3).case;
        let cfg = config("largest_component = true");
        let mut net = stage(cfg.clone(), dir.path());
        net.model = Some(Model::new(&cfg, Device::Cpu, 7));
        let probability = net.predict_case_probability(&case).unwrap();
        let labels = net.predict_case(&case).unwrap();
        assert_eq!(probability.labels(), labels);
        assert!(probability.data.iter().all(|p| (0.0..=1.0).contains(p)));
        // The labels are what the plugin predicted before it had
        // probabilities: the network's output cut at one half inside the
        // brain, then its largest component.
        let flair = case.image.require_channel("flair").unwrap();
        let dims = case.image.grid.dims();
        let pad = flair.iter().copied().fold(f32::INFINITY, f32::min);
        let raw =
            infer::foreground_probability(net.model.as_ref().unwrap(), &cfg, flair, dims, pad);
        let cut: Vec<u8> = raw
            .iter()
            .zip(case.brain_mask.data.iter())
            .map(|(&p, &b)| u8::from(p > 0.5 && b != 0))
            .collect();
        let expected = clisc_imaging::components::largest_component(
            &cut,
            dims,
            clisc_imaging::Connectivity::Full,
        );
        assert_eq!(labels.data.as_slice(), expected.as_slice());
        assert!(expected.iter().any(|&v| v != 0));
        let brain = &case.brain_mask.data;
        assert!(brain.contains(&0));
        assert!(probability
            .data
            .iter()
            .zip(brain.iter())
            .all(|(&p, &b)| b != 0 || p == 0.0));
    }

    struct StopAt(usize);
    impl TrainMonitor for StopAt {
        fn step(&mut self, done: usize, _: usize, _: f64, _: f64) -> bool {
            done < self.0
        }
        fn log(&mut self, _: &str) {}
    }

    #[test]
    fn interrupted_training_resumes_from_the_last_checkpoint() {
        let _rng = torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join(TRAINING_CHECKPOINT);
        let cases = || vec![CaseArrays::from_training(&phantom(SMALL, 1)).unwrap()];
        let cfg = config("iterations = 6\ncheckpoint_every = 3");
        let mut m = Model::new(&cfg, Device::Cpu, 1);
        let e = train::train(&mut m, cases(), 1, &ckpt, &mut StopAt(5), None).unwrap_err();
        assert!(e.message.contains("interrupted at step 5/6"));
        assert_eq!(checkpoint::read(&ckpt).unwrap().meta.step, 3);

        let resumable = checkpoint::read(&ckpt).unwrap();
        assert!(
            resumable.state.keys().any(|k| k.starts_with("momentum.")),
            "the periodic checkpoint carries the SGD momentum"
        );
        let mut m = Model::new(&cfg, Device::Cpu, 1);
        let out = train::train(&mut m, cases(), 1, &ckpt, &mut StopAt(usize::MAX), None).unwrap();
        assert_eq!((out.resumed_from, out.total_steps), (3, 6));
        let finished = checkpoint::read(&ckpt).unwrap();
        assert_eq!(finished.meta.step, 6);
        assert!(finished.state.is_empty(), "no training state once finished");

        // The resumed network is exactly the one an uninterrupted run trains
        // (same patches, dropout draws and momentum from the resumed step on).
        let other = tempfile::tempdir().unwrap();
        let mut whole = Model::new(&cfg, Device::Cpu, 1);
        let path = other.path().join(TRAINING_CHECKPOINT);
        train::train(&mut whole, cases(), 1, &path, &mut StopAt(usize::MAX), None).unwrap();
        let (a, b) = (m.vs.variables(), whole.vs.variables());
        assert_eq!(a.len(), b.len());
        for (name, t) in &a {
            assert!(t.equal(&b[name]), "{name} differs after resuming");
        }

        // A finished run is loaded, not retrained.
        let mut again = Model::new(&cfg, Device::Cpu, 2);
        let out =
            train::train(&mut again, cases(), 1, &ckpt, &mut StopAt(usize::MAX), None).unwrap();
        assert_eq!(out.resumed_from, 6);
        let w = |m: &Model| m.vs.variables()["final.weight"].copy();
        assert!(w(&again).equal(&w(&m)));

        // Other settings: the checkpoint is ignored and training restarts.
        let cfg2 = config("iterations = 4\ncheckpoint_every = 3");
        let mut fresh = Model::new(&cfg2, Device::Cpu, 1);
        assert_eq!(
            train::train(&mut fresh, cases(), 1, &ckpt, &mut StopAt(usize::MAX), None)
                .unwrap()
                .resumed_from,
            0
        );
    }

    #[test]
    fn model_selection_survives_an_interruption_and_reports_its_choice() {
        let _rng = torch_rng_lock();
        let cases = || vec![CaseArrays::from_training(&phantom(SMALL, 1)).unwrap()];
        let held_out = || {
            [5, 6]
                .map(|seed| {
                    let c = phantom(SMALL, seed);
                    let v = ValidationCase {
                        case: c.case,
                        target: c.target,
                    };
                    HeldOutCase::from_validation(&v).unwrap()
                })
                .into_iter()
                .collect::<Vec<_>>()
        };
        let cfg = config("iterations = 12\ncheckpoint_every = 4\nvalidation_every = 3");
        let run = |dir: &Path, stop: usize| {
            let mut sel = ModelSelector::new(held_out(), cfg.validation_every);
            let mut m = Model::new(&cfg, Device::Cpu, 1);
            let ckpt = dir.join(TRAINING_CHECKPOINT);
            let out = train::train(&mut m, cases(), 1, &ckpt, &mut StopAt(stop), Some(&mut sel));
            (out, sel, m)
        };
        let whole_dir = tempfile::tempdir().unwrap();
        let (out, sel, whole) = run(whole_dir.path(), usize::MAX);
        let chosen = out.unwrap().selection.expect("a choice");
        assert_eq!(chosen.evaluations, 4, "steps 3, 6, 9 and 12");
        assert_eq!(chosen.step % 3, 0);
        assert!(chosen.dice >= chosen.last_dice);
        assert_eq!(
            sel.score(&whole),
            chosen.dice,
            "the kept weights are the chosen ones"
        );

        // Interrupted at step 10 (last checkpoint at 8, after 2 scores), then
        // resumed: the same choice and the same weights.
        let dir = tempfile::tempdir().unwrap();
        assert!(run(dir.path(), 10).0.is_err());
        let (out, _, resumed) = run(dir.path(), usize::MAX);
        let out = out.unwrap();
        assert_eq!(out.resumed_from, 8);
        assert_eq!(out.selection, Some(chosen));
        for (name, t) in &resumed.vs.variables() {
            assert!(t.equal(&whole.vs.variables()[name]), "{name} differs");
        }
        // A finished run is loaded with its choice, not retrained.
        let (out, _, _) = run(dir.path(), usize::MAX);
        let out = out.unwrap();
        assert_eq!((out.resumed_from, out.selection), (12, Some(chosen)));
    }

    #[test]
    fn the_plugin_reports_model_selection_only_when_given_held_out_cases() {
        let _rng = torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let train = [phantom(SMALL, 1)];
        let c = phantom(SMALL, 5);
        let validation = [ValidationCase {
            case: c.case,
            target: c.target,
        }];
        let cfg = config("iterations = 4\nvalidation_every = 2");
        let mut net = stage(cfg.clone(), dir.path());
        let report = net.train_selecting(&train, &validation).unwrap();
        let ROption::RSome(chosen) = report.selection else {
            panic!("no checkpoint choice in {report:?}");
        };
        assert_eq!(chosen.evaluations, ROption::RSome(2));
        assert!(chosen.step == 2 || chosen.step == 4, "{chosen:?}");
        assert!((0.0..=1.0).contains(&chosen.validation_dice));

        let other = tempfile::tempdir().unwrap();
        let mut plain = stage(cfg, other.path());
        let report = plain.train_cases(&train).unwrap();
        assert_eq!(report.selection, ROption::RNone);
    }

    #[test]
    fn predictions_stay_in_the_brain_and_modes_and_options_apply() {
        let _rng = torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let mut case = phantom(SMALL, 3).case;
        let cfg = config("iterations = 1");
        let mut net = stage(cfg.clone(), dir.path());
        net.model = Some(Model::new(&cfg, Device::Cpu, 3));
        // Force a network that says "lesion" everywhere: bias of class 1 up.
        tch::no_grad(|| {
            let mut b = net.model.as_ref().unwrap().vs.variables()["final.bias"].shallow_clone();
            b.copy_(&tch::Tensor::from_slice(&[-50f32, 50.0]));
        });
        let p = net.predict_case(&case).unwrap();
        assert_eq!(
            p.data.as_slice(),
            case.brain_mask.data.as_slice(),
            "everything inside the brain, nothing outside"
        );

        // Two separate "brain" regions: largest_component keeps one.
        let n = case.brain_mask.data.len();
        for (i, v) in case.brain_mask.data.iter_mut().enumerate() {
            *v = u8::from(i < n / 4 || i > 3 * n / 4);
        }
        net.cfg.largest_component = true;
        let p = net.predict_case(&case).unwrap();
        assert_eq!(
            p.count_nonzero(),
            n / 4,
            "one of the two equal slabs is kept"
        );

        net.cfg.largest_component = false;
        net.cfg.inference = config::InferenceMode::Resize;
        net.cfg.resize_size = 16;
        let p = net.predict_case(&case).unwrap();
        assert_eq!(p.grid, case.image.grid);
        assert_eq!(p.data.as_slice(), case.brain_mask.data.as_slice());
    }
}
