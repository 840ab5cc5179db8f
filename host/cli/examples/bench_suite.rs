//! The clisc side of the side-by-side benchmark suite (`bench/suite/`).
//!
//! Each invocation runs one task on inputs prepared by `bench/suite/suite.py`
//! and prints one JSON line `{"task": ..., "seconds": {PHASE: [s, ...]}}`
//! with the wall-clock seconds of every timed repetition of each phase.
//! Loading weights and inputs happens before the clock starts, as in the
//! Python reference (`bench/suite/reference.py`), which implements the same
//! tasks with the tools labs use (nibabel, SimpleITK, pydicom, MedPy, the
//! official CLIP and SAM code, MONAI). Peak memory is measured by the driver.
//!
//! ```text
//! bench_suite nifti CASE_DIR OUT_DIR ITERS        read + write the 4 modalities
//! bench_suite dicom DIR ITERS                     every series under DIR to voxels
//! bench_suite metrics PRED REF ITERS              Dice and HD95 of two masks
//! bench_suite clip WEIGHTS THREADS ITERS BATCH [cuda]   CLIP image encoder
//! bench_suite sam WEIGHTS THREADS ITERS [cuda]          SAM embed + box-prompt decode
//! bench_suite sam2 WEIGHTS THREADS ITERS [cuda]         SAM 2.1 image encoder + 8-slice propagation
//! bench_suite unet X,Y,Z THREADS ITERS F1,F2,.. [cuda]  3D U-Net sliding-window inference
//! bench_suite unet-train X,Y,Z THREADS STEPS F1,F2,.. BATCH fp32|amp [cuda]
//!                                  3D U-Net training steps on X,Y,Z patches (the first 2 are warm-up;
//!                                  amp: fp16 autocast with loss scaling, CUDA only)
//! bench_suite cam-train SIZE,SLICES THREADS ITERS BATCH [cuda]
//!                                  one ResNet-18 CAM classifier training epoch (with its set-up and checkpoint)
//! ```
//!
//! Parity tasks (`bench/gpu/gpu.py`) write outputs instead of timings, for
//! comparison with the official code's on the same device:
//!
//! ```text
//! bench_suite sam-parity WEIGHTS THREADS OUT.safetensors [cuda]          embedding, low_res, iou
//! bench_suite clip-parity WEIGHTS THREADS OUT.safetensors BATCH [cuda]   features
//! bench_suite unet-parity F1,F2,.. THREADS CASE_DIR [cuda]
//!                                  seeded network and input saved to CASE_DIR, logits to clisc.safetensors
//! ```
//!
//! The model tasks run on the CPU unless `cuda` is given last (then on
//! the first CUDA device, each timed phase ending with a device
//! synchronisation).
//!
//! Build with `cargo build --release -p clisc --example bench_suite`.

use clisc_dicom as dicom;
use clisc_dicom::scan_dir;
use clisc_nifti as nifti_io;

use clisc_clip::model::Clip;
use clisc_sam::{SamPredictor, SamPrompt};
use clisc_unet3d::config::{Loss, UNetConfig};
use clisc_unet3d::infer::foreground_probability;
use clisc_unet3d::train::{time_training_steps, Model};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The modalities of a BraTS-style case, in the order they are read.
const MODALITIES: [&str; 4] = ["t1", "t1ce", "t2", "flair"];

/// Seconds of each repetition, per phase.
type Timings = BTreeMap<&'static str, Vec<f64>>;

fn usage() -> ! {
    eprintln!("usage: see the doc comment of host/cli/examples/bench_suite.rs");
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| usage())
}

fn list<T: std::str::FromStr>(text: &str) -> Vec<T> {
    text.split(',')
        .map(|v| v.parse().unwrap_or_else(|_| usage()))
        .collect()
}

/// Runs `f` `iters` times and records each run's seconds under `phase`.
fn time(t: &mut Timings, phase: &'static str, iters: usize, mut f: impl FnMut()) {
    for _ in 0..iters {
        let start = Instant::now();
        f();
        t.entry(phase)
            .or_default()
            .push(start.elapsed().as_secs_f64());
    }
}

/// The files of the four modalities in `dir` (`*_t1.nii.gz`, ... or `.nii`).
fn modality_files(dir: &Path) -> Vec<PathBuf> {
    let names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("case folder")
        .map(|e| e.expect("dir entry").path())
        .collect();
    MODALITIES
        .iter()
        .map(|m| {
            names
                .iter()
                .find(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.ends_with(&format!("_{m}.nii.gz")) || n.ends_with(&format!("_{m}.nii"))
                })
                .unwrap_or_else(|| panic!("no {m} file in {}", dir.display()))
                .clone()
        })
        .collect()
}

/// NIfTI read (scaled to f32, as the pipeline uses it) and float32 write.
fn nifti(case: &Path, out: &Path, iters: usize) -> Timings {
    let files = modality_files(case);
    let mut t = Timings::new();
    let mut volumes = Vec::new();
    time(&mut t, "read", iters, || {
        volumes = files
            .iter()
            .map(|f| nifti_io::read(f).expect("read"))
            .collect();
    });
    std::fs::create_dir_all(out).expect("output folder");
    time(&mut t, "write", iters, || {
        for (f, v) in files.iter().zip(&volumes) {
            let dst = out.join(f.file_name().unwrap());
            nifti_io::write_f32(&dst, &v.grid, &v.data, Some(&v.info)).expect("write");
        }
    });
    t
}

/// Scans a folder of DICOM files and decodes every volume series into f32
/// voxels on its grid (what `clisc dicom convert` does before writing).
fn dicom_series(dir: &Path, iters: usize) -> Timings {
    let mut t = Timings::new();
    time(&mut t, "load", iters, || {
        let report = scan_dir(dir).expect("scan");
        let mut voxels = 0;
        for s in report.volumes() {
            voxels += dicom::convert::load_data(s).expect("load").1.len();
        }
        assert!(voxels > 0, "no volume series under {}", dir.display());
    });
    t
}

/// Dice and HD95 (voxel spacing from the header) of two label files.
fn overlap_metrics(pred: &Path, reference: &Path, iters: usize) -> Timings {
    let (p, _) = nifti_io::read_labels(pred).expect("prediction");
    let (r, _) = nifti_io::read_labels(reference).expect("reference");
    let (dims, spacing) = (r.grid.dims(), r.grid.spacing);
    let binarise = |v: &[u8]| v.iter().map(|&x| u8::from(x > 0)).collect::<Vec<u8>>();
    let (p, r) = (binarise(&p.data), binarise(&r.data));
    let mut t = Timings::new();
    time(&mut t, "dice", iters, || {
        std::hint::black_box(clisc_metrics::dice(&p, &r));
    });
    time(&mut t, "hd95", iters, || {
        std::hint::black_box(clisc_metrics::hd95(&p, &r, dims, spacing));
    });
    t
}

/// Waits for the GPU's queued work, so that a timed phase includes it
/// (a no-op on the CPU).
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// CLIP image features of a batch of 224x224 images (already normalised).
fn clip(weights: &Path, iters: usize, batch: i64, device: Device) -> Timings {
    let model = Clip::load(weights, device).expect("CLIP weights");
    let x = ramp(&[batch, 3, 224, 224]).to_device(device);
    let mut t = Timings::new();
    let run = || {
        let _ = model.encode_image(&x).sum(Kind::Float).double_value(&[]);
        sync(device);
    };
    run(); // warm-up
    time(&mut t, "encode", iters, run);
    t
}

/// The SAM tasks' input (both sides): a deterministic 240x240 RGB slice
/// and one box prompt.
fn sam_slice_and_box() -> (Vec<u8>, usize, usize, SamPrompt) {
    let (w, h) = (240usize, 240usize);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7) % 251) as u8).collect();
    let prompt = SamPrompt {
        points: vec![],
        bbox: Some([60.0, 70.0, 150.0, 170.0]),
        mask_input: None,
    };
    (rgb, w, h, prompt)
}

/// SAM on one 240x240 RGB slice: image embedding (resize, normalise,
/// encoder) and the decoding of one box prompt with three masks (prompt
/// encoder, mask decoder, upscaling to the slice).
fn sam(weights: &Path, iters: usize, device: Device) -> Timings {
    let predictor = SamPredictor::load(weights, device).expect("SAM weights");
    let (rgb, w, h, prompt) = sam_slice_and_box();
    let mut t = Timings::new();
    let mut embedding = predictor.embed(&rgb, w, h).expect("embed"); // warm-up
    let _ = predictor.predict(&embedding, std::slice::from_ref(&prompt), true);
    time(&mut t, "embed", iters, || {
        embedding = predictor.embed(&rgb, w, h).expect("embed");
        let _ = embedding.features.sum(Kind::Float).double_value(&[]);
        sync(device);
    });
    time(&mut t, "decode", iters, || {
        let out = predictor
            .predict(&embedding, std::slice::from_ref(&prompt), true)
            .expect("predict");
        std::hint::black_box(out);
        sync(device);
    });
    t
}

/// The deterministic 8-bit RGB slices of the SAM 2 benchmark (both sides).
struct BenchSlices {
    slices: Vec<Vec<u8>>,
}

impl clisc_sam2::Frames for BenchSlices {
    fn frame_count(&self) -> usize {
        self.slices.len()
    }
    fn input(&self, k: usize) -> Result<Tensor, clisc_sdk::PluginError> {
        clisc_sam2::transforms::input_tensor(&self.slices[k], 240, 240, 1024)
    }
    fn frame_hw(&self) -> (usize, usize) {
        (240, 240)
    }
}

/// SAM 2.1 on 240x240 slices: the image encoder of one slice (transform,
/// Hiera, neck), and the propagation of a box on the first of 8 slices
/// through the others (the video predictor: 8 image encodings, 7 tracked
/// frames with memory attention and memory encoding), reported per slice.
fn sam2(weights: &Path, iters: usize, device: Device) -> Timings {
    let model = clisc_sam2::Sam2::load(weights, Some(1024), device).expect("SAM 2 weights");
    let slices: Vec<Vec<u8>> = (0..8)
        .map(|k| {
            (0..240 * 240 * 3)
                .map(|i| ((i * 7 + k * 13) % 251) as u8)
                .collect()
        })
        .collect();
    let frames = BenchSlices { slices };
    let prompt = clisc_sam2::Prompt {
        bbox: Some([60.0, 70.0, 150.0, 170.0]),
        ..Default::default()
    };
    let predictor = clisc_sam2::Sam2Predictor { model };
    let _ = predictor.embed(&frames.slices[0], 240, 240).expect("embed"); // warm-up
    let mut t = Timings::new();
    time(&mut t, "encode", iters, || {
        let e = predictor.embed(&frames.slices[0], 240, 240).expect("embed");
        let _ = e.image_embed().sum(Kind::Float).double_value(&[]);
        sync(device);
    });
    time(&mut t, "propagate, per slice", iters, || {
        let masks = clisc_sam2::Propagation::new(&predictor.model, &frames)
            .run(&[(0, prompt.clone())])
            .expect("propagation");
        std::hint::black_box(masks);
        sync(device);
    });
    for v in t.get_mut("propagate, per slice").expect("timed") {
        *v /= 8.0;
    }
    t
}

/// Foreground probabilities of a whole volume with the project's
/// Gaussian-weighted sliding windows (64^3 windows, overlap 0.5, two
/// windows per forward pass: the paper's settings).
fn unet(dims: [usize; 3], iters: usize, features: Vec<i64>, device: Device) -> Timings {
    let cfg = UNetConfig {
        features,
        ..UNetConfig::default()
    };
    let model = Model::new(&cfg, device, 0);
    let n: usize = dims.iter().product();
    let image: Vec<f32> = (0..n).map(|i| ((i % 4001) as f32) / 1000.0 - 2.0).collect();
    let mut t = Timings::new();
    time(&mut t, "infer", iters, || {
        let p = foreground_probability(&model, &cfg, &image, dims, -2.0);
        std::hint::black_box(p);
        sync(device);
    });
    t
}

/// The `sam` task's slice and box: image embedding, the three low-resolution
/// mask logits and their IoU predictions, written to `out`.
fn sam_parity(weights: &Path, out: &Path, device: Device) {
    let predictor = SamPredictor::load(weights, device).expect("SAM weights");
    let (rgb, w, h, prompt) = sam_slice_and_box();
    let embedding = predictor.embed(&rgb, w, h).expect("embed");
    let decoded = predictor
        .predict(&embedding, std::slice::from_ref(&prompt), true)
        .expect("predict");
    let iou = Tensor::from_slice(&decoded[0].iou);
    let cpu = |t: &Tensor| t.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
    Tensor::write_safetensors(
        &[
            ("embedding", &cpu(&embedding.features)),
            ("low_res", &cpu(&decoded[0].low_res)),
            ("iou", &iou),
        ],
        out,
    )
    .expect("write SAM outputs");
}

/// CLIP image features of the `clip` task's ramp batch, written to `out`.
fn clip_parity(weights: &Path, out: &Path, batch: i64, device: Device) {
    let model = Clip::load(weights, device).expect("CLIP weights");
    let x = ramp(&[batch, 3, 224, 224]).to_device(device);
    let features = tch::no_grad(|| model.encode_image(&x))
        .to_kind(Kind::Float)
        .to_device(Device::Cpu);
    Tensor::write_safetensors(&[("features", &features)], out).expect("write CLIP features");
}

/// A seeded U-Net with `features` (saved with the plugin's own checkpoint
/// writer), a seeded 64^3 input and `config.json` in `dir`, as the U-Net
/// parity test prepares them; the eval-mode logits on `device` go to
/// `dir/clisc.safetensors`.
fn unet_parity(features: Vec<i64>, dir: &Path, device: Device) {
    use clisc_unet3d::checkpoint::{self, CheckpointMeta};
    std::fs::create_dir_all(dir).expect("case folder");
    let cfg = UNetConfig {
        features: features.clone(),
        ..UNetConfig::default()
    };
    let model = Model::new(&cfg, device, 7);
    tch::manual_seed(1007);
    let x = Tensor::randn([1, 1, 64, 64, 64], (Kind::Float, Device::Cpu));
    let meta = CheckpointMeta {
        plugin_version: "bench".into(),
        config: cfg,
        step: 0,
        total_steps: 0,
        data_key: String::new(),
        loss: 0.0,
    };
    checkpoint::save(&model.vs, &meta, &dir.join("weights.safetensors")).expect("save weights");
    Tensor::write_safetensors(&[("input", &x)], dir.join("input.safetensors")).expect("input");
    let config = format!("{{\"in_channels\": 1, \"classes\": 2, \"features\": {features:?}}}");
    std::fs::write(dir.join("config.json"), config).expect("config.json");
    let logits = tch::no_grad(|| model.net.forward_t(&x.to_device(device), false))
        .to_kind(Kind::Float)
        .to_device(Device::Cpu);
    Tensor::write_safetensors(&[("logits", &logits)], dir.join("clisc.safetensors"))
        .expect("write logits");
}

/// Seconds of U-Net training steps (forward, Dice + cross-entropy loss as
/// `configs/weight-free-brats.toml` trains, backward, SGD with the
/// default momentum and weight decay) on one fixed batch of `patch`
/// patches, through the plugin's own training step; the first two steps
/// are warm-up and not reported. `amp`: fp16 autocast with loss scaling
/// (the plugin's `mixed_precision`, which needs CUDA).
fn unet_train(
    patch: [i64; 3],
    steps: usize,
    features: Vec<i64>,
    batch: i64,
    amp: bool,
    device: Device,
) -> Timings {
    if amp && !device.is_cuda() {
        eprintln!("unet-train: amp needs cuda");
        usage();
    }
    let cfg = UNetConfig {
        features,
        patch_size: patch,
        batch_size: batch as usize,
        loss: Loss::DiceCe,
        mixed_precision: amp,
        ..UNetConfig::default()
    };
    let seconds = time_training_steps(&cfg, device, batch, steps + 2);
    let mut t = Timings::new();
    t.insert("train step", seconds[2..].to_vec());
    t
}

/// The slices both sides train the CAM classifier on: `n` grey `size x
/// size` images in [0, 1] (a ramp with a bright disc on every third
/// slice, labelled tumour).
fn cam_slices(size: i64, n: i64) -> (Tensor, Tensor) {
    let ramp = (Tensor::arange(n * size * size, (Kind::Float, Device::Cpu)).remainder(997.0)
        / 997.0)
        .view([n, 1, size, size]);
    let labels = (Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3)).eq(0);
    let c = Tensor::arange(size, (Kind::Float, Device::Cpu)) - size as f64 / 2.0;
    let disc = (c.view([1, -1]).square() + c.view([-1, 1]).square())
        .le((size * size / 25) as f64)
        .view([1, 1, size, size]);
    let bright = disc.logical_and(&labels.view([-1, 1, 1, 1]));
    let images = ramp.where_self(&bright.logical_not(), &Tensor::ones_like(&ramp));
    (images, labels.to_kind(Kind::Int64))
}

/// Seconds of training a ResNet-18 CAM classifier for one epoch on
/// `slices` slices of `size` pixels, batches of `batch` (Adam, weighted
/// cross-entropy, random flips, as `cam` trains), through the plugin's own
/// `classifier::train`: building the network, the epoch and its
/// checkpoint.
fn cam_train(size: i64, slices: i64, iters: usize, batch: usize, device: Device) -> Timings {
    use clisc_cam::classifier::{train, TrainConfig};
    let (images, labels) = cam_slices(size, slices);
    let data = clisc_cam::slices::SliceSet {
        brain: Tensor::ones_like(&images),
        images,
        labels,
        size: size as usize,
    };
    let cfg = TrainConfig {
        arch: clisc_cam::resnet::Arch::ResNet18,
        epochs: 1,
        batch_size: batch,
        lr: 1e-4,
        lr_step: 7,
        lr_gamma: 0.1,
        class_weights: true,
        flips: true,
        pretrained: None,
        seed: 0,
        device,
    };
    let dir = tempfile::tempdir().expect("a temporary folder");
    let progress = clisc_sdk::Silent::boxed();
    let mut t = Timings::new();
    let mut round = 0;
    time(&mut t, "train epoch", iters, || {
        round += 1;
        let stem = dir.path().join(format!("classifier-{round}"));
        let trained = train(&data, &cfg, &stem, "cam", &progress).expect("training");
        std::hint::black_box(trained);
        sync(device);
    });
    t
}

/// Runs a parity task, which writes outputs rather than timings: no phases.
fn parity(write: impl FnOnce()) -> Timings {
    write();
    Timings::new()
}

/// The deterministic input used by both sides: a ramp in [-2, 2].
fn ramp(shape: &[i64]) -> Tensor {
    let n: i64 = shape.iter().product();
    (Tensor::arange(n, (Kind::Float, Device::Cpu)).remainder(4001.0) / 1000.0 - 2.0).view(shape)
}

fn main() {
    // As the `clisc` binary does (see `clisc::hugepages`).
    clisc::hugepages::enable_for_tensors();
    let args: Vec<String> = std::env::args().collect();
    let task = args.get(1).cloned().unwrap_or_else(|| usage());
    let timings = match task.as_str() {
        "nifti" => nifti(Path::new(&args[2]), Path::new(&args[3]), arg(&args, 4)),
        "dicom" => dicom_series(Path::new(&args[2]), arg(&args, 3)),
        "metrics" => overlap_metrics(Path::new(&args[2]), Path::new(&args[3]), arg(&args, 4)),
        "clip" | "sam" | "sam2" | "unet" | "unet-train" | "cam-train" | "sam-parity"
        | "clip-parity" | "unet-parity" => {
            tch::set_num_threads(arg(&args, 3));
            tch::set_num_interop_threads(1);
            // Optional last argument: the device (`cpu`, the default, or `cuda`),
            // resolved as the plugins resolve it.
            let device = match args.last().map(String::as_str) {
                Some("cuda") => clisc_nn::resolve_device("cuda").expect("a CUDA device"),
                _ => Device::Cpu,
            };
            match task.as_str() {
                "clip" => clip(Path::new(&args[2]), arg(&args, 4), arg(&args, 5), device),
                "sam" => sam(Path::new(&args[2]), arg(&args, 4), device),
                "sam2" => sam2(Path::new(&args[2]), arg(&args, 4), device),
                "sam-parity" => {
                    parity(|| sam_parity(Path::new(&args[2]), Path::new(&args[4]), device))
                }
                "clip-parity" => parity(|| {
                    clip_parity(
                        Path::new(&args[2]),
                        Path::new(&args[4]),
                        arg(&args, 5),
                        device,
                    )
                }),
                "unet-parity" => {
                    parity(|| unet_parity(list(&args[2]), Path::new(&args[4]), device))
                }
                "cam-train" => {
                    let v: Vec<i64> = list(&args[2]);
                    cam_train(v[0], v[1], arg(&args, 4), arg(&args, 5), device)
                }
                "unet-train" => {
                    let p: Vec<i64> = list(&args[2]);
                    unet_train(
                        [p[0], p[1], p[2]],
                        arg(&args, 4),
                        list(&args[5]),
                        arg(&args, 6),
                        match args.get(7).map(String::as_str) {
                            Some("fp32") => false,
                            Some("amp") => true,
                            _ => usage(),
                        },
                        device,
                    )
                }
                _ => {
                    let d: Vec<usize> = list(&args[2]);
                    unet([d[0], d[1], d[2]], arg(&args, 4), list(&args[5]), device)
                }
            }
        }
        _ => usage(),
    };
    let phases: Vec<String> = timings
        .iter()
        .map(|(k, v)| {
            let s: Vec<String> = v.iter().map(|x| format!("{x:.5}")).collect();
            format!("\"{k}\": [{}]", s.join(", "))
        })
        .collect();
    println!(
        "{{\"task\": \"{task}\", \"impl\": \"clisc\", \"seconds\": {{{}}}}}",
        phases.join(", ")
    );
}
