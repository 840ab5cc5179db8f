//! TorchScript adapters: any `torch.jit` file as a pseudo-labeler, a
//! promptable segmenter or a volumetric segmenter, with the model's
//! contract declared in TOML (see [`contract`] and
//! `docs/plugins-torchscript.md`).
//!
//! Tensor layouts (clisc's volumes are x-fastest, so a volume is the tensor
//! `[D, H, W] = [nz, ny, nx]` and a slice `[H, W] = [ny, nx]`):
//!
//! * pseudo-labeler: input `[B, C, S, S]` (a batch of axial slices),
//!   output `[B, K]`, `[B, 1]` or `[B]` scores per slice;
//! * promptable segmenter: box/point prompts as tensors, as two extra
//!   input channels, or SAM-style `embed` + `decode` (see [`promptable`]'s
//!   module documentation);
//! * volumetric segmenter: input `[1, C, D, H, W]`, output
//!   `[1, K, D, H, W]` or `[1, D, H, W]`.

pub mod contract;
pub mod promptable;

pub use promptable::{TorchScriptPromptable, TorchScriptPromptablePlugin};

use abi_stable::std_types::{RResult, RSlice, RStr};
use clisc_sdk::config::Settings;
use clisc_sdk::stage::{CaseInput, PseudoLabeler, StageReport, TrainingCase, VolumetricSegmenter};
use clisc_sdk::{
    plugin_settings, ConfigField, HostContext, LabelVolume, Plugin, PluginError, SliceLabel,
    SlicePseudoLabels, StageKind, StageObject,
};
use contract::{load_module, Contract, ContractSettings, OutputKind};
use tch::{Kind, Tensor};

fn tensor_err(plugin: &str, e: tch::TchError) -> PluginError {
    PluginError::internal(format!("{plugin}: tensor operation failed: {e}"))
}

// ---------------------------------------------------------------- labeler

/// `torchscript-pseudo-labeler`: a slice classifier exported from Python.
pub struct TorchScriptLabelerPlugin;

impl Plugin for TorchScriptLabelerPlugin {
    const NAME: &'static str = "torchscript-pseudo-labeler";
    const KIND: StageKind = StageKind::PseudoLabeler;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Any TorchScript slice classifier as a pseudo-labeler; input/output contract declared in TOML";

    fn settings() -> Vec<ConfigField> {
        LabelerSettings::schema()
    }

    fn create(settings: Settings, ctx: &HostContext) -> Result<StageObject, PluginError> {
        let s = LabelerSettings::read(&settings)?;
        Ok(StageObject::pseudo_labeler(TorchScriptLabeler {
            contract: Contract::load(Self::NAME, s.contract, ctx.device.as_str())?,
            input_size: s.input_size,
            batch_size: s.batch_size.max(1),
            keep_confidence: s.keep_confidence,
        }))
    }
}

plugin_settings! {
    /// The settings of `torchscript-pseudo-labeler`.
    struct LabelerSettings {
        /// The model contract.
        contract: ContractSettings = group(ContractSettings::schema(), ContractSettings::read),
        /// side of the square input the model expects (0 = native slice size)
        input_size: i64 = integer(0),
        /// slices per forward pass
        batch_size: usize = integer(16),
        /// a slice is kept for training when the probability of its label is at least this
        keep_confidence: f32 = float(0.0),
    }
}

/// The stage of `torchscript-pseudo-labeler`.
pub(crate) struct TorchScriptLabeler {
    contract: Contract,
    input_size: i64,
    batch_size: usize,
    keep_confidence: f32,
}

impl TorchScriptLabeler {
    fn run(&self, case: &CaseInput) -> Result<SlicePseudoLabels, PluginError> {
        let c = &self.contract;
        let data = case.image.require_channel(&c.channel)?;
        let [nx, ny, nz] = case.image.grid.dims();
        let volume = Tensor::from_slice(data)
            .to_device(c.device)
            .reshape([nz as i64, 1, ny as i64, nx as i64]);
        let per_slice = nx * ny;
        let mut probabilities: Vec<f32> = Vec::with_capacity(nz);
        tch::no_grad(|| -> Result<(), PluginError> {
            for start in (0..nz).step_by(self.batch_size) {
                let n = self.batch_size.min(nz - start);
                let mut x = c.prepare(&volume.narrow(0, start as i64, n as i64));
                if self.input_size > 0 {
                    x = x.upsample_bilinear2d(
                        [self.input_size, self.input_size],
                        false,
                        None,
                        None,
                    );
                }
                let out = c.forward(&[x])?;
                let scores = match out.size().as_slice() {
                    [b] if *b == n as i64 => out.reshape([n as i64, 1]),
                    [b, _] if *b == n as i64 => out,
                    s => {
                        return Err(c.bad_output(
                            s,
                            &format!("[{n}, K] or [{n}] scores for a batch of {n} slices"),
                        ))
                    }
                };
                let p = c
                    .tumour_probability(&scores)?
                    .to_device(tch::Device::Cpu)
                    .to_kind(Kind::Float);
                let p: Vec<f32> = Vec::<f32>::try_from(&p).map_err(|e| tensor_err(c.plugin, e))?;
                probabilities.extend(p);
            }
            Ok(())
        })?;
        let brain = &case.brain_mask.data;
        let slices = probabilities
            .iter()
            .enumerate()
            .map(|(z, &p)| {
                let label = u8::from(p as f64 >= c.threshold);
                let confidence = if label == 1 { p } else { 1.0 - p };
                let has_brain = brain[z * per_slice..(z + 1) * per_slice]
                    .iter()
                    .any(|&m| m != 0);
                SliceLabel {
                    index: z as u32,
                    label,
                    probability: confidence,
                    kept: has_brain && confidence >= self.keep_confidence,
                }
            })
            .collect();
        Ok(SlicePseudoLabels { slices })
    }
}

impl PseudoLabeler for TorchScriptLabeler {
    fn label_slices(&mut self, case: &CaseInput) -> RResult<SlicePseudoLabels, PluginError> {
        self.run(case).into()
    }
}

// ---------------------------------------------------------------- volumetric

/// `torchscript-volumetric-segmenter`: a pretrained 3D network.
pub struct TorchScriptVolumetricPlugin;

impl Plugin for TorchScriptVolumetricPlugin {
    const NAME: &'static str = "torchscript-volumetric-segmenter";
    const KIND: StageKind = StageKind::VolumetricSegmenter;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Any pretrained TorchScript 3D segmenter (inference only: `train` keeps the exported weights)";

    fn settings() -> Vec<ConfigField> {
        VolumetricSettings::schema()
    }

    fn create(settings: Settings, ctx: &HostContext) -> Result<StageObject, PluginError> {
        let s = VolumetricSettings::read(&settings)?;
        let contract = Contract::load(Self::NAME, s.contract, ctx.device.as_str())?;
        let shape = s.input_shape;
        let input_shape = match shape.as_slice() {
            [] => None,
            [d, h, w] if [d, h, w].iter().all(|v| **v >= 1.0 && v.fract() == 0.0) => Some([*d as i64, *h as i64, *w as i64]),
            other => {
                return Err(PluginError::config(format!(
                    "{}: `input_shape` must be empty or three positive integers [D, H, W], found {other:?}",
                    Self::NAME
                )))
            }
        };
        let pad_multiple = s.pad_multiple;
        if pad_multiple < 1 {
            return Err(PluginError::config(format!(
                "{}: `pad_multiple` must be at least 1, found {pad_multiple}",
                Self::NAME
            )));
        }
        Ok(StageObject::volumetric_segmenter(TorchScriptVolumetric {
            contract,
            input_shape,
            pad_multiple,
        }))
    }
}

plugin_settings! {
    /// The settings of `torchscript-volumetric-segmenter`.
    struct VolumetricSettings {
        /// The model contract.
        contract: ContractSettings = group(ContractSettings::schema(), ContractSettings::read),
        /// [D, H, W] the model expects (volume resized trilinearly); empty = native size
        input_shape: Vec<f64> = float_list(&[]),
        /// with a native-size input, zero-pad D, H, W up to a multiple of this (e.g. 16 for a
        /// 4-level U-Net)
        pad_multiple: i64 = integer(1),
    }
}

/// The stage of `torchscript-volumetric-segmenter`.
pub(crate) struct TorchScriptVolumetric {
    contract: Contract,
    input_shape: Option<[i64; 3]>,
    pad_multiple: i64,
}

impl TorchScriptVolumetric {
    fn run(&self, case: &CaseInput) -> Result<LabelVolume, PluginError> {
        let c = &self.contract;
        let data = case.image.require_channel(&c.channel)?;
        let [nx, ny, nz] = case.image.grid.dims().map(|d| d as i64);
        tch::no_grad(|| {
            let x = c.prepare(
                &Tensor::from_slice(data)
                    .to_device(c.device)
                    .reshape([1, 1, nz, ny, nx]),
            );
            let (x, target) = match self.input_shape {
                Some(s) => (x.upsample_trilinear3d(s, false, None, None, None), s),
                None => {
                    let m = self.pad_multiple;
                    let padded = [nz, ny, nx].map(|d| (d + m - 1) / m * m);
                    let pad = [0, padded[2] - nx, 0, padded[1] - ny, 0, padded[0] - nz];
                    (x.constant_pad_nd(pad), padded)
                }
            };
            let out = c.forward(&[x])?;
            let scores = match out.size().as_slice() {
                [1, _, d, h, w] if [*d, *h, *w] == target => out,
                [1, d, h, w] if [*d, *h, *w] == target => out.unsqueeze(1),
                s => {
                    return Err(c.bad_output(
                        s,
                        &format!(
                            "[1, K, {}, {}, {}] or [1, {0}, {1}, {2}]",
                            target[0], target[1], target[2]
                        ),
                    ))
                }
            };
            // Scores are resized (or cropped) back to the volume before the
            // tumour decision, as for the promptable adapter's slices.
            let scores = scores.to_kind(Kind::Float);
            let scores = if self.input_shape.is_some() {
                if c.output == OutputKind::Mask {
                    scores.upsample_nearest3d([nz, ny, nx], None, None, None)
                } else {
                    scores.upsample_trilinear3d([nz, ny, nx], false, None, None, None)
                }
            } else {
                scores.narrow(2, 0, nz).narrow(3, 0, ny).narrow(4, 0, nx)
            };
            let mask = c
                .tumour_mask(&scores)?
                .to_kind(Kind::Uint8)
                .to_device(tch::Device::Cpu)
                .contiguous()
                .reshape([-1]);
            let labels: Vec<u8> =
                Vec::<u8>::try_from(&mask).map_err(|e| tensor_err(c.plugin, e))?;
            Ok(LabelVolume {
                grid: case.image.grid,
                data: labels.into(),
            })
        })
    }
}

impl VolumetricSegmenter for TorchScriptVolumetric {
    fn train(&mut self, cases: RSlice<'_, TrainingCase>) -> RResult<StageReport, PluginError> {
        // The exported weights are used as they are: fine-tune in Python and
        // export again. The cases are still checked so a pipeline that
        // feeds the wrong channel fails here, not at prediction time.
        for t in cases.iter() {
            if let Err(e) = t.case.image.require_channel(&self.contract.channel) {
                return RResult::RErr(e);
            }
        }
        tracing::info!(
            "{}: pretrained TorchScript model {} is used as is ({} training cases ignored)",
            self.contract.plugin,
            self.contract.model_path.display(),
            cases.len()
        );
        let mut report = StageReport::default();
        report.push("training_cases_ignored", cases.len() as f64);
        RResult::ROk(report)
    }
    fn predict(&mut self, case: &CaseInput) -> RResult<LabelVolume, PluginError> {
        self.run(case).into()
    }
    fn save(&self, path: RStr<'_>) -> RResult<(), PluginError> {
        let c = &self.contract;
        c.module
            .save(path.as_str())
            .map_err(|e| {
                PluginError::io(format!(
                    "{}: cannot save the model to {}: {e}",
                    c.plugin,
                    path.as_str()
                ))
            })
            .into()
    }
    fn load(&mut self, path: RStr<'_>) -> RResult<(), PluginError> {
        let c = &mut self.contract;
        match load_module(c.plugin, std::path::Path::new(path.as_str()), c.device) {
            Ok(m) => {
                c.module = m;
                c.model_path = path.as_str().into();
                RResult::ROk(())
            }
            Err(e) => RResult::RErr(e),
        }
    }
}
