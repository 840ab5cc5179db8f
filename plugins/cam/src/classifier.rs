//! The slice classifier: a torchvision-named ResNet with the CLISC head,
//! trained with cross-entropy, Adam and step decay, with checkpoints in the
//! stage's work folder so an interrupted fit resumes.

use crate::resnet::{Arch, ResNet};
use crate::slices::{to_network_input, SliceSet};
use clisc_nn::weights::WeightFile;
use clisc_sdk::{PluginError, ProgressSinkBox};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

/// How to train one classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Backbone.
    pub arch: Arch,
    /// Epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Initial Adam learning rate (CLISC: 1e-4).
    pub lr: f64,
    /// StepLR period in epochs (CLISC: 7).
    pub lr_step: usize,
    /// StepLR factor (CLISC: 0.1).
    pub lr_gamma: f64,
    /// Weight the loss by inverse class frequency.
    pub class_weights: bool,
    /// Random horizontal and vertical flips.
    pub flips: bool,
    /// Optional torchvision ImageNet state dict for the backbone.
    pub pretrained: Option<PathBuf>,
    /// Seed of initialisation, shuffling and augmentation.
    pub seed: u64,
    /// Where tensors live.
    pub device: Device,
}

impl TrainConfig {
    fn key(&self) -> String {
        format!(
            "{}-e{}-b{}-lr{}-s{}-g{}-w{}-f{}-p{:?}-seed{}",
            self.arch.name(),
            self.epochs,
            self.batch_size,
            self.lr,
            self.lr_step,
            self.lr_gamma,
            self.class_weights,
            self.flips,
            self.pretrained,
            self.seed
        )
    }
}

/// A trained (or loaded) classifier; the var store owns the weights.
pub struct Classifier {
    /// The weights.
    pub vs: nn::VarStore,
    /// The network.
    pub net: ResNet,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Classifier({})", self.net.arch.name())
    }
}

impl Classifier {
    /// A freshly initialised network (torch RNG seeded with `seed`).
    pub fn new(arch: Arch, device: Device, seed: u64) -> Self {
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let net = ResNet::new(&vs.root(), arch);
        Self { vs, net }
    }

    /// Device of the weights.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Tumor probabilities of grey `[N, 1, S, S]` images, in batches, eval mode.
    pub fn predict(&self, grey: &Tensor, batch: usize) -> Tensor {
        let n = grey.size()[0];
        let mut out = Vec::new();
        tch::no_grad(|| {
            let mut i = 0;
            while i < n {
                let len = (batch as i64).min(n - i);
                let x = to_network_input(&grey.narrow(0, i, len), self.device());
                out.push(
                    self.net
                        .forward_t(&x, false)
                        .softmax(-1, Kind::Float)
                        .select(1, 1)
                        .to_device(Device::Cpu),
                );
                i += len;
            }
        });
        if out.is_empty() {
            Tensor::zeros([0], (Kind::Float, Device::Cpu))
        } else {
            Tensor::cat(&out, 0)
        }
    }
}

/// Loads a torchvision ImageNet state dict (`.pth`/`.pt` written by
/// `torch.save`, or `.safetensors`) into the backbone. The head (`fc.0`,
/// `fc.3`) keeps its initialisation; torchvision's `fc.weight`/`fc.bias`
/// and the BN `num_batches_tracked` counters are ignored. Missing,
/// mis-shaped or unexpected tensors are errors naming them.
pub fn load_torchvision_backbone(clf: &mut Classifier, path: &Path) -> Result<usize, PluginError> {
    load_state_dict(clf, path, false)
}

/// Loads a state dict into the classifier: the backbone always, the CLISC
/// head (`fc.0.*`, `fc.3.*`) too when `with_head` (e.g. a classifier
/// trained in PyTorch with the CLISC head; otherwise the head keeps its
/// current values). Reading and the checked copy are
/// [`clisc_nn::weights::WeightFile`]'s: missing, mis-shaped or unexpected
/// tensors are reported together, before anything is copied. Returns the
/// number of tensors taken from the file.
pub fn load_state_dict(
    clf: &mut Classifier,
    path: &Path,
    with_head: bool,
) -> Result<usize, PluginError> {
    let file = WeightFile::open(path)?;
    let vars = clf.vs.variables();
    let mut named = Vec::new();
    let mut from_file = 0;
    for name in file.names() {
        let head_of_file = name.starts_with("fc.");
        if name.ends_with("num_batches_tracked") || (head_of_file && !with_head) {
            continue;
        }
        named.push((
            name.to_string(),
            file.get(name).expect("listed").shallow_clone(),
        ));
        from_file += 1;
    }
    if !with_head {
        for (name, t) in vars.iter().filter(|(n, _)| n.starts_with("fc.")) {
            named.push((name.clone(), t.detach().copy()));
        }
    }
    WeightFile::from_tensors(path, file.format(), named)
        .copy_into(&clf.vs, &[])
        .map_err(|e| {
            PluginError::weights(format!(
                "{} (expected a torchvision {} state dict{})",
                e.message,
                clf.net.arch.name(),
                if with_head {
                    " with the CLISC head"
                } else {
                    ""
                }
            ))
        })?;
    Ok(from_file)
}

/// What training a classifier measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainStats {
    /// Mean loss of the last epoch.
    pub loss: f64,
    /// Training accuracy of the last epoch (augmented batches, train mode).
    pub accuracy: f64,
    /// Epochs run in this call (0 when loaded from a finished checkpoint).
    pub epochs_run: usize,
    /// Wall time of this call in seconds.
    pub seconds: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    key: String,
    data: String,
    epochs_done: usize,
    stats: TrainStats,
}

/// Trains a new classifier on `data`, saving `<stem>.safetensors` and
/// `<stem>.json` after every epoch; a checkpoint for the same settings and
/// data is resumed (a finished one is simply loaded). Adam's moments are
/// not checkpointed: a resumed run restarts them at the saved epoch.
pub fn train(
    data: &SliceSet,
    cfg: &TrainConfig,
    stem: &Path,
    task: &str,
    progress: &ProgressSinkBox,
) -> Result<(Classifier, TrainStats), PluginError> {
    if data.is_empty() {
        return Err(PluginError::input(format!(
            "{task}: no kept slices to train on"
        )));
    }
    let start = Instant::now();
    let mut clf = Classifier::new(cfg.arch, cfg.device, cfg.seed);
    if let Some(p) = &cfg.pretrained {
        let n = load_torchvision_backbone(&mut clf, p)?;
        tracing::info!("{task}: loaded {n} backbone tensors from {}", p.display());
    }
    let weights_path = stem.with_extension("safetensors");
    let meta_path = stem.with_extension("json");
    let key = cfg.key();
    let fingerprint = data.fingerprint();
    let mut epoch0 = 0;
    let mut stats = TrainStats::default();
    if let Ok(text) = std::fs::read_to_string(&meta_path) {
        if let Ok(meta) = serde_json::from_str::<CheckpointMeta>(&text) {
            if meta.key == key && meta.data == fingerprint && meta.epochs_done <= cfg.epochs {
                clf.vs.load(&weights_path).map_err(|e| {
                    PluginError::weights(format!(
                        "cannot resume from {}: {e}",
                        weights_path.display()
                    ))
                })?;
                epoch0 = meta.epochs_done;
                stats = meta.stats;
                progress.log(
                    format!(
                        "{task}: resuming from {} (epoch {epoch0})",
                        weights_path.display()
                    )
                    .as_str()
                    .into(),
                );
            }
        }
    }
    let n = data.len();
    let pos = data.positives();
    let class_weight = if cfg.class_weights && pos > 0 && pos < n {
        let w = [
            n as f32 / (2.0 * (n - pos) as f32),
            n as f32 / (2.0 * pos as f32),
        ];
        Some(Tensor::from_slice(&w).to_device(cfg.device))
    } else {
        None
    };
    let mut opt = nn::Adam::default()
        .build(&clf.vs, cfg.lr)
        .map_err(|e| PluginError::internal(e.to_string()))?;
    let batches_per_epoch = n.div_ceil(cfg.batch_size);
    let total = (batches_per_epoch * cfg.epochs) as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_c1a5);
    let mut order: Vec<i64> = (0..n as i64).collect();
    for epoch in epoch0..cfg.epochs {
        let lr = cfg.lr * cfg.lr_gamma.powi((epoch / cfg.lr_step.max(1)) as i32);
        opt.set_lr(lr);
        // Re-derive the epoch's RNG so a resumed run shuffles like a fresh one.
        rng =
            ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0i64, 0usize);
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            if chunk.len() < 2 && n >= 2 {
                continue; // BatchNorm needs more than one sample
            }
            let idx = Tensor::from_slice(chunk);
            let mut grey = data.images.index_select(0, &idx);
            if cfg.flips {
                let flip_h: Vec<bool> = chunk.iter().map(|_| rng.random::<bool>()).collect();
                let flip_v: Vec<bool> = chunk.iter().map(|_| rng.random::<bool>()).collect();
                let mh = Tensor::from_slice(&flip_h).view([-1, 1, 1, 1]);
                let mv = Tensor::from_slice(&flip_v).view([-1, 1, 1, 1]);
                grey = grey.flip([3]).where_self(&mh, &grey);
                grey = grey.flip([2]).where_self(&mv, &grey);
            }
            let x = to_network_input(&grey, cfg.device);
            let y = data.labels.index_select(0, &idx).to_device(cfg.device);
            let logits = clf.net.forward_t(&x, true);
            let loss =
                logits.cross_entropy_loss(&y, class_weight.as_ref(), Reduction::Mean, -100, 0.0);
            opt.backward_step(&loss);
            let l = loss.double_value(&[]);
            loss_sum += l * chunk.len() as f64;
            correct += logits
                .argmax(-1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[]);
            seen += chunk.len();
            let done = (epoch * batches_per_epoch + b + 1) as u64;
            if b % 4 == 0 || b + 1 == batches_per_epoch {
                let msg = format!(
                    "epoch {}/{} loss {:.3} acc {:.3}",
                    epoch + 1,
                    cfg.epochs,
                    loss_sum / seen as f64,
                    correct as f64 / seen as f64
                );
                progress.report(task.into(), done, total, msg.as_str().into());
            }
        }
        stats.loss = loss_sum / seen.max(1) as f64;
        stats.accuracy = correct as f64 / seen.max(1) as f64;
        stats.epochs_run += 1;
        tracing::info!(
            "{task}: epoch {} loss {:.4} acc {:.3} lr {lr:e}",
            epoch + 1,
            stats.loss,
            stats.accuracy
        );
        clf.vs.save(&weights_path).map_err(|e| {
            PluginError::io(format!(
                "cannot save checkpoint {}: {e}",
                weights_path.display()
            ))
        })?;
        let meta = CheckpointMeta {
            key: key.clone(),
            data: fingerprint.clone(),
            epochs_done: epoch + 1,
            stats: stats.clone(),
        };
        std::fs::write(
            &meta_path,
            serde_json::to_string_pretty(&meta).expect("serialisable"),
        )
        .map_err(|e| PluginError::io(format!("cannot write {}: {e}", meta_path.display())))?;
    }
    let _ = rng;
    stats.seconds = start.elapsed().as_secs_f64();
    Ok((clf, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bright square = tumor; the classifier must learn it in a few epochs.
    pub(crate) fn toy_set(n: usize, size: usize, seed: u64) -> SliceSet {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut images, mut brain, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let positive = i % 3 == 0;
            let (cx, cy) = (rng.random_range(8..size - 8), rng.random_range(8..size - 8));
            for y in 0..size {
                for x in 0..size {
                    let inside =
                        (x as i64 - cx as i64).abs() < 5 && (y as i64 - cy as i64).abs() < 5;
                    let v = 0.3
                        + 0.05 * rng.random::<f32>()
                        + if positive && inside { 0.6 } else { 0.0 };
                    images.push(v);
                    brain.push(1.0);
                }
            }
            labels.push(i64::from(positive));
        }
        SliceSet::from_parts(images, brain, labels, size)
    }

    #[test]
    fn learns_a_toy_task_and_resumes_from_checkpoint() {
        let _torch_rng = crate::torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let data = toy_set(48, 32, 1);
        let cfg = TrainConfig {
            arch: Arch::ResNet18,
            epochs: 4,
            batch_size: 16,
            lr: 1e-3,
            lr_step: 7,
            lr_gamma: 0.1,
            class_weights: true,
            flips: true,
            pretrained: None,
            seed: 3,
            device: Device::Cpu,
        };
        let stem = dir.path().join("round0");
        let silent = clisc_sdk::Silent::boxed();
        let (clf, stats) = train(&data, &cfg, &stem, "t", &silent).unwrap();
        assert_eq!(stats.epochs_run, 4);
        let p = clf.predict(&data.images, 16);
        let pred = p.ge(0.5).to_kind(Kind::Int64);
        let acc = pred
            .eq_tensor(&data.labels)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(acc > 0.8, "train accuracy {acc} (loss {})", stats.loss);
        // Same settings and data: the finished checkpoint is loaded, no epoch runs.
        let (again, stats2) = train(&data, &cfg, &stem, "t", &silent).unwrap();
        assert_eq!(stats2.epochs_run, 4, "stats come from the checkpoint");
        assert!(again
            .predict(&data.images, 16)
            .allclose(&p, 1e-5, 1e-6, false));
        // Different data: trains afresh.
        let other = toy_set(48, 32, 2);
        let (_, stats3) = train(
            &other,
            &TrainConfig {
                epochs: 1,
                ..cfg.clone()
            },
            &stem,
            "t",
            &silent,
        )
        .unwrap();
        assert_eq!(stats3.epochs_run, 1);
    }
}
