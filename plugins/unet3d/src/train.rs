//! The training loop: SGD with poly decay on random patches, losses,
//! mixed precision on CUDA, resumable checkpoints in the work dir.

use super::checkpoint::{self, CheckpointMeta};
use super::config::{Loss, UNetConfig};
use super::network::UNet3d;
use super::patches::{Batch, CaseArrays, IntensityAugmentation, PatchSampler};
use super::selection::{HeldOutCase, ModelSelector, SelectionOutcome};
use clisc_sdk::PluginError;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tch::nn;
use tch::{Device, Kind, Reduction, Tensor};

/// A network with its parameters on a device.
pub struct Model {
    /// Parameters (PyTorch state-dict names).
    pub vs: nn::VarStore,
    /// The network.
    pub net: UNet3d,
    /// The configuration it was built (and trained) with.
    pub cfg: UNetConfig,
}

impl Model {
    /// A freshly initialised network; `seed` makes the initialisation reproducible.
    pub fn new(cfg: &UNetConfig, device: Device, seed: u64) -> Self {
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let net = UNet3d::new(&vs.root(), 1, 2, &cfg.features, cfg.dropout);
        Self {
            vs,
            net,
            cfg: cfg.clone(),
        }
    }

    /// The device holding the parameters.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Whether fp16 autocast is used (CUDA and `mixed_precision`).
    pub fn amp(&self) -> bool {
        self.cfg.mixed_precision && self.device().is_cuda()
    }

    /// Logits in fp32 of an input batch already on the device.
    pub fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        tch::autocast(self.amp(), || self.net.forward_t(x, train)).to_kind(Kind::Float)
    }
}

/// A short fingerprint of the training data: ids, grids and target sizes.
/// A checkpoint is resumed only for the same data.
pub fn data_key(cases: &[CaseArrays]) -> String {
    let h = fnv1a(cases.iter().map(|c| {
        format!(
            "{}|{:?}|{}|{};",
            c.id,
            c.dims,
            c.foreground.len(),
            c.image.iter().map(|v| *v as f64).sum::<f64>()
        )
    }));
    format!("{}cases-{h:016x}", cases.len())
}

/// Identifies held-out cases and how often they are scored, so a
/// checkpoint is resumed only with the same model selection.
fn held_out_key(cases: &[HeldOutCase], every: usize) -> String {
    let h = fnv1a(cases.iter().map(|c| {
        let target: usize = c.target.iter().map(|&v| usize::from(v)).sum();
        format!(
            "{}|{:?}|{target}|{};",
            c.id,
            c.dims,
            c.image.iter().map(|v| *v as f64).sum::<f64>()
        )
    }));
    format!("{}held-out-every-{every}-{h:016x}", cases.len())
}

/// FNV-1a over the parts' bytes: stable across runs and platforms.
fn fnv1a(parts: impl Iterator<Item = String>) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for text in parts {
        for b in text.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// The training loss of `logits` `[B, 2, D, H, W]` against `target` `[B, D, H, W]` (int64).
pub fn loss(kind: Loss, gce_q: f64, logits: &Tensor, target: &Tensor) -> Tensor {
    match kind {
        Loss::Ce => logits.cross_entropy_loss::<Tensor>(target, None, Reduction::Mean, -100, 0.0),
        Loss::DiceCe => {
            let ce = logits.cross_entropy_loss::<Tensor>(target, None, Reduction::Mean, -100, 0.0);
            let p = logits.softmax(1, Kind::Float).select(1, 1);
            let t = target.to_kind(Kind::Float);
            let inter = (&p * &t).sum(Kind::Float);
            let dice = (inter * 2.0 + 1e-5) / (p.sum(Kind::Float) + t.sum(Kind::Float) + 1e-5);
            ce - dice + 1.0
        }
        Loss::Gce => {
            let p = logits
                .softmax(1, Kind::Float)
                .gather(1, &target.unsqueeze(1), false)
                .squeeze_dim(1);
            let py = p.clamp_min(1e-7).pow_tensor_scalar(gce_q);
            ((py.neg() + 1.0) / gce_q).mean(Kind::Float)
        }
    }
}

/// `torch.optim.SGD` (dampening 0, not Nesterov), written out so that its
/// momentum buffers can go into resumable checkpoints: tch's optimizer keeps
/// them inside libtorch, out of reach, and a run resumed with empty buffers
/// would not continue the way the uninterrupted run does.
struct Sgd {
    /// Trainable parameters by state-dict name (sorted).
    params: Vec<(String, Tensor)>,
    momentum: f64,
    weight_decay: f64,
    /// Momentum buffer per parameter, created at its first step.
    buffers: HashMap<String, Tensor>,
}

/// Training-state name of a parameter's momentum buffer.
fn momentum_key(param: &str) -> String {
    format!("momentum.{param}")
}

/// Training-state name of the fp16 loss scaler's `[scale, good_steps]`.
const LOSS_SCALER_KEY: &str = "loss_scaler";

impl Sgd {
    fn new(vs: &nn::VarStore, momentum: f64, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            params,
            momentum,
            weight_decay,
            buffers: HashMap::new(),
        }
    }

    fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// One update: `d = grad + wd * p`; `buf = d` at the first step, then
    /// `buf = momentum * buf + d`; `p -= lr * buf`.
    fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for (name, p) in &mut self.params {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut d = if self.weight_decay != 0.0 {
                    &g + &*p * self.weight_decay
                } else {
                    g
                };
                if self.momentum != 0.0 {
                    d = match self.buffers.get_mut(name.as_str()) {
                        Some(buf) => {
                            let _ = buf.g_mul_scalar_(self.momentum);
                            let _ = buf.g_add_(&d);
                            buf.shallow_clone()
                        }
                        None => {
                            let buf = d.detach().copy();
                            self.buffers.insert(name.clone(), buf.shallow_clone());
                            buf
                        }
                    };
                }
                let _ = p.g_sub_(&(d * lr));
            }
        });
    }

    /// The momentum buffers as training state.
    fn state(&self, out: &mut HashMap<String, Tensor>) {
        for (name, buf) in &self.buffers {
            out.insert(momentum_key(name), buf.shallow_clone());
        }
    }

    /// Takes the momentum buffers back from a checkpoint's training state;
    /// returns how many there were.
    fn restore(
        &mut self,
        state: &HashMap<String, Tensor>,
        device: Device,
        path: &Path,
    ) -> Result<usize, PluginError> {
        for (name, p) in &self.params {
            if let Some(t) = state.get(&momentum_key(name)) {
                if t.size() != p.size() {
                    return Err(PluginError::weights(format!(
                        "unet3d: checkpoint {}: momentum of `{name}` has shape {:?}, expected {:?}",
                        path.display(),
                        t.size(),
                        p.size()
                    )));
                }
                self.buffers
                    .insert(name.clone(), t.to_device(device).to_kind(p.kind()));
            }
        }
        Ok(self.buffers.len())
    }
}

/// The seed of libtorch's generator (dropout) for SGD step `step`: set
/// before every step, so that a resumed run draws what the uninterrupted
/// run drew at the same step.
fn step_seed(seed: u64, step: usize) -> i64 {
    (seed ^ (step as u64 + 1).wrapping_mul(0x9e3779b97f4a7c15)) as i64
}

/// Dynamic loss scaling for fp16 training (what `torch.cuda.amp.GradScaler` does).
struct LossScaler {
    scale: f64,
    good_steps: usize,
}

impl LossScaler {
    fn new() -> Self {
        Self {
            scale: 65536.0,
            good_steps: 0,
        }
    }

    /// Backpropagates the scaled loss; unscales the gradients and returns
    /// true when they are finite (then the step may be taken), otherwise
    /// halves the scale, clears the gradients and returns false.
    fn backward(&mut self, loss: &Tensor, opt: &mut Sgd, vs: &nn::VarStore) -> bool {
        (loss * self.scale).backward();
        let grads: Vec<Tensor> = vs
            .trainable_variables()
            .iter()
            .map(|v| v.grad())
            .filter(|g| g.defined())
            .collect();
        // One reduction and one read back for all gradients: reading each
        // gradient's flag would wait for the device once per parameter.
        let finite = tch::no_grad(|| {
            let flags: Vec<Tensor> = grads.iter().map(|g| g.isfinite().all()).collect();
            flags.is_empty() || Tensor::stack(&flags, 0).all().int64_value(&[]) != 0
        });
        if finite {
            tch::no_grad(|| {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(1.0 / self.scale);
                }
            });
            self.good_steps += 1;
            if self.good_steps % 2000 == 0 {
                self.scale *= 2.0;
            }
        } else {
            opt.zero_grad();
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
        }
        finite
    }

    fn state(&self, out: &mut HashMap<String, Tensor>) {
        out.insert(
            LOSS_SCALER_KEY.into(),
            Tensor::from_slice(&[self.scale as f32, self.good_steps as f32]),
        );
    }

    fn restore(&mut self, state: &HashMap<String, Tensor>) {
        if let Some(t) = state.get(LOSS_SCALER_KEY) {
            if let Ok(v) = Vec::<f32>::try_from(t.flatten(0, -1)) {
                if let [scale, good] = v[..] {
                    self.scale = f64::from(scale);
                    self.good_steps = good as usize;
                }
            }
        }
    }
}

/// What one training run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOutcome {
    /// Steps planned.
    pub total_steps: usize,
    /// Step the run started from (0 unless resumed).
    pub resumed_from: usize,
    /// Smoothed loss at the end.
    pub final_loss: f64,
    /// Wall time of the steps run now.
    pub seconds: f64,
    /// Steps skipped by the fp16 loss scaler (non-finite gradients).
    pub skipped_steps: usize,
    /// The checkpoint kept by model selection (`None` without held-out cases).
    pub selection: Option<SelectionOutcome>,
}

/// Where the loop reports to.
pub trait TrainMonitor {
    /// After each step; returning false interrupts training (the last
    /// periodic checkpoint stays in place for a later resume).
    fn step(&mut self, done: usize, total: usize, loss: f64, lr: f64) -> bool;
    /// Log line.
    fn log(&mut self, message: &str);
}

fn batch_tensors(b: &Batch, device: Device) -> (Tensor, Tensor) {
    let [px, py, pz] = b.patch.map(|v| v as i64);
    let n = b.batch as i64;
    let x = Tensor::from_slice(&b.image)
        .view([n, 1, pz, py, px])
        .to_device(device);
    let y = Tensor::from_slice(&b.target)
        .view([n, pz, py, px])
        .to_device(device)
        .to_kind(Kind::Int64);
    (x, y)
}

/// One SGD step on a batch: forward in training mode, loss, backward
/// (through the fp16 loss scaler when there is one), update. Returns the
/// loss and whether the update was taken (the scaler skips steps with
/// non-finite gradients).
fn training_step(
    model: &Model,
    opt: &mut Sgd,
    scaler: Option<&mut LossScaler>,
    x: &Tensor,
    y: &Tensor,
    lr: f64,
) -> (Tensor, bool) {
    let logits = model.logits(x, true);
    let l = loss(model.cfg.loss, model.cfg.gce_q, &logits, y);
    opt.zero_grad();
    let take = match scaler {
        Some(s) => s.backward(&l, opt, &model.vs),
        None => {
            l.backward();
            true
        }
    };
    if take {
        opt.step(lr);
    }
    (l, take)
}

/// Seconds of each of `steps` training steps (the loop's own
/// `training_step`, without patch sampling) of a network built from
/// `cfg` on one fixed batch of `batch` patches of `cfg.patch_size`: the
/// training-step row of the benchmark suite (`bench/suite`), against the
/// same network, loss and `torch.optim.SGD` in PyTorch. The first step
/// (allocation, kernel selection) is included; callers drop warm-up steps.
pub fn time_training_steps(cfg: &UNetConfig, device: Device, batch: i64, steps: usize) -> Vec<f64> {
    let model = Model::new(cfg, device, 0);
    let mut opt = Sgd::new(&model.vs, cfg.momentum, cfg.weight_decay);
    let mut scaler = model.amp().then(LossScaler::new);
    let [px, py, pz] = cfg.patch_size;
    let n = batch * pz * py * px;
    let x = (Tensor::arange(n, (Kind::Float, Device::Cpu)).remainder(4001.0) / 1000.0 - 2.0)
        .view([batch, 1, pz, py, px])
        .to_device(device);
    let y = x.gt(1.0).to_kind(Kind::Int64).squeeze_dim(1);
    (0..steps)
        .map(|_| {
            let start = Instant::now();
            let (l, _) =
                training_step(&model, &mut opt, scaler.as_mut(), &x, &y, cfg.learning_rate);
            let _ = l.double_value(&[]); // waits for the device
            start.elapsed().as_secs_f64()
        })
        .collect()
}

/// Trains `model` on `cases`, resuming from `checkpoint` when it holds a
/// compatible, unfinished run (same training settings, data and plugin
/// version); saves `checkpoint` every `checkpoint_every` steps and at the end.
/// With a `selector`, the weights it scores best are the ones kept.
pub fn train(
    model: &mut Model,
    cases: Vec<CaseArrays>,
    seed: u64,
    checkpoint_path: &Path,
    monitor: &mut dyn TrainMonitor,
    mut selector: Option<&mut ModelSelector>,
) -> Result<TrainOutcome, PluginError> {
    if cases.is_empty() {
        return Err(PluginError::input("unet3d: no training cases"));
    }
    let cfg = model.cfg.clone();
    let total = cfg.total_steps(cases.len());
    let key = match selector.as_deref() {
        Some(s) => format!(
            "{}+{}",
            data_key(&cases),
            held_out_key(s.cases(), cfg.validation_every)
        ),
        None => data_key(&cases),
    };
    let mut start = 0;
    let mut smoothed = f64::NAN;
    let mut resumed_state = HashMap::new();
    if checkpoint_path.exists() {
        match checkpoint::read(checkpoint_path) {
            Ok(ck)
                if ck.meta.config.training_key() == cfg.training_key()
                    && ck.meta.data_key == key
                    && ck.meta.plugin_version == super::VERSION
                    && ck.meta.total_steps == total =>
            {
                checkpoint::load_into(&mut model.vs, &ck.tensors, checkpoint_path)?;
                start = ck.meta.step.min(total);
                smoothed = ck.meta.loss;
                resumed_state = ck.state;
                if let Some(s) = selector.as_deref_mut() {
                    s.restore(&resumed_state, model);
                }
                monitor.log(&format!(
                    "resuming from step {start}/{total} ({})",
                    checkpoint_path.display()
                ));
            }
            Ok(_) => monitor.log(&format!(
                "ignoring {} (other settings, data or plugin version); training from scratch",
                checkpoint_path.display()
            )),
            Err(e) => monitor.log(&format!("ignoring unreadable checkpoint: {}", e.message)),
        }
    }
    let started = Instant::now();
    if start >= total {
        return Ok(TrainOutcome {
            total_steps: total,
            resumed_from: start,
            final_loss: smoothed,
            seconds: 0.0,
            skipped_steps: 0,
            selection: selector.and_then(|s| s.outcome()),
        });
    }
    let device = model.device();
    let mut opt = Sgd::new(&model.vs, cfg.momentum, cfg.weight_decay);
    let mut scaler = model.amp().then(LossScaler::new);
    if start > 0 {
        let restored = opt.restore(&resumed_state, device, checkpoint_path)?;
        if restored == 0 && cfg.momentum != 0.0 {
            monitor.log("the checkpoint holds no SGD momentum (written by an older clisc); momentum restarts from zero");
        }
        if let Some(s) = scaler.as_mut() {
            s.restore(&resumed_state);
        }
    }
    let sampler = PatchSampler {
        cases: Arc::new(cases),
        patch: cfg.patch_size.map(|v| v as usize),
        foreground_fraction: cfg.foreground_fraction,
        flips: cfg.flips,
        rotations: cfg.rotations,
        intensity: IntensityAugmentation {
            scale: cfg.intensity_scale as f32,
            shift: cfg.intensity_shift as f32,
            ramp: cfg.intensity_ramp as f32,
        },
    };
    // A resumed run continues the patch stream of the uninterrupted run.
    let (batches, producer) = sampler.spawn_at(seed, start, total - start, cfg.batch_size);
    let mut skipped = 0;
    let save = |model: &Model, state: &HashMap<String, Tensor>, step: usize, loss: f64| {
        let meta = CheckpointMeta {
            plugin_version: super::VERSION.to_string(),
            config: cfg.clone(),
            step,
            total_steps: total,
            data_key: key.clone(),
            loss,
        };
        checkpoint::save_atomic(&model.vs, state, &meta, checkpoint_path)
    };
    for step in start..total {
        let lr = cfg.learning_rate * (1.0 - step as f64 / total as f64).powf(cfg.poly_power);
        tch::manual_seed(step_seed(seed, step));
        let batch = batches
            .recv()
            .map_err(|_| PluginError::internal("unet3d: the patch thread stopped early"))?;
        let (x, y) = batch_tensors(&batch, device);
        let (l, taken) = training_step(model, &mut opt, scaler.as_mut(), &x, &y, lr);
        if !taken {
            skipped += 1;
        }
        let value = l.double_value(&[]);
        if !value.is_finite() && scaler.is_none() {
            return Err(PluginError::internal(format!(
                "unet3d: training diverged at step {step} (loss {value}); lower `learning_rate`"
            )));
        }
        smoothed = if smoothed.is_finite() {
            0.9 * smoothed + 0.1 * value
        } else {
            value
        };
        if let Some(s) = selector.as_deref_mut().filter(|s| s.due(step + 1, total)) {
            let score = s.evaluate(model, step + 1);
            if let Some(best) = s.outcome() {
                monitor.log(&format!(
                    "step {}/{total}: validation Dice {score:.4} (best {:.4} at step {})",
                    step + 1,
                    best.dice,
                    best.step
                ));
            }
        }
        if (step + 1) % cfg.checkpoint_every == 0 && step + 1 < total {
            let mut state = HashMap::new();
            opt.state(&mut state);
            if let Some(s) = scaler.as_ref() {
                s.state(&mut state);
            }
            if let Some(s) = selector.as_deref() {
                s.state(&mut state, true);
            }
            save(model, &state, step + 1, smoothed)?;
        }
        if !monitor.step(step + 1, total, smoothed, lr) {
            return Err(PluginError::internal(format!(
                "unet3d: training interrupted at step {}/{total}",
                step + 1
            )));
        }
    }
    drop(batches);
    let _ = producer.join();
    let mut state = HashMap::new();
    if let Some(s) = selector.as_deref() {
        // The finished checkpoint holds the chosen weights and what was chosen.
        s.apply_best(model);
        s.state(&mut state, false);
    }
    save(model, &state, total, smoothed)?;
    Ok(TrainOutcome {
        total_steps: total,
        resumed_from: start,
        final_loss: smoothed,
        seconds: started.elapsed().as_secs_f64(),
        skipped_steps: skipped,
        selection: selector.and_then(|s| s.outcome()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_small_for_confident_correct_logits_and_large_otherwise() {
        let target = Tensor::from_slice(&[0i64, 1, 1, 0]).view([1, 1, 1, 4]);
        let good =
            Tensor::from_slice(&[5f32, -5., -5., 5., -5., 5., 5., -5.]).view([1, 2, 1, 1, 4]);
        let bad = -&good;
        for kind in [Loss::Ce, Loss::DiceCe, Loss::Gce] {
            let t = target.view([1, 1, 1, 4]);
            let lg = loss(kind, 0.7, &good, &t).double_value(&[]);
            let lb = loss(kind, 0.7, &bad, &t).double_value(&[]);
            assert!(lg < 0.01, "{kind:?}: {lg}");
            assert!(lb > 0.9, "{kind:?}: {lb}");
        }
        // GCE with q = 1 is 1 - p_y (mean absolute error on the probability).
        let zero = Tensor::zeros([1, 2, 1, 1, 4], (Kind::Float, Device::Cpu));
        let g = loss(Loss::Gce, 1.0, &zero, &target.view([1, 1, 1, 4])).double_value(&[]);
        assert!((g - 0.5).abs() < 1e-6);
    }
}
