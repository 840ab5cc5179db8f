//! Measures `unet3d` on synthetic phantoms: seconds per training step and
//! Dice on unseen phantoms (`UNET_SAVE=path` also saves the model, e.g. for
//! trying `clisc infer`). Settings come from the environment:
//!
//! ```sh
//! UNET_SETTINGS='features = [8, 16, 32, 64]
//! patch_size = [48, 48, 32]
//! iterations = 150' UNET_CASES=20 UNET_TEST=4 UNET_THREADS=2 \
//!   cargo run --release -p clisc-unet3d --example unet3d_bench
//! ```

use abi_stable::std_types::RSlice;
use clisc_imaging::overlap::dice;
use clisc_sdk::config::Settings;
use clisc_sdk::{HostContext, VolumetricSegmenter};
use clisc_unet3d::phantom::{phantom, PhantomSpec};
use clisc_unet3d::{config, Unet3d};
use std::time::Instant;

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// User + system CPU seconds of this process (from /proc), to estimate the
/// cost of a step on a busy machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let text = env(
        "UNET_SETTINGS",
        "features = [8, 16, 32, 64]\npatch_size = [48, 48, 32]\niterations = 100",
    );
    let n_train: u64 = env("UNET_CASES", "20").parse().unwrap();
    let n_test: u64 = env("UNET_TEST", "4").parse().unwrap();
    let threads: u32 = env("UNET_THREADS", "2").parse().unwrap();
    let dims: Vec<usize> = env("UNET_DIMS", "96,96,64")
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    let spec = PhantomSpec {
        dims: [dims[0], dims[1], dims[2]],
        ..Default::default()
    };
    let cfg = config::UNetConfig::from_settings(
        &Settings::parse("unet3d", &text, &config::UNetConfig::schema()).unwrap(),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut ctx = HostContext::for_tests(work.path().to_str().unwrap(), 1);
    ctx.threads = threads;
    let train: Vec<_> = (0..n_train).map(|s| phantom(spec, s)).collect();
    let test: Vec<_> = (1000..1000 + n_test).map(|s| phantom(spec, s)).collect();
    let mut net = Unet3d::new(cfg, &ctx).unwrap();
    let (t, c) = (Instant::now(), cpu_seconds());
    let report = net.train(RSlice::from_slice(&train)).unwrap();
    let train_s = t.elapsed().as_secs_f64();
    let train_cpu = cpu_seconds() - c;
    for m in report.metrics.iter() {
        println!("{} = {:.4}", m.name, m.value);
    }
    if let Ok(path) = std::env::var("UNET_SAVE") {
        net.save(path.as_str().into()).unwrap();
        println!("model saved to {path}");
    }
    let (t, c) = (Instant::now(), cpu_seconds());
    let dices: Vec<f64> = test
        .iter()
        .map(|c| dice(&net.predict(&c.case).unwrap().data, &c.target.data))
        .collect();
    let pred_s = t.elapsed().as_secs_f64() / test.len().max(1) as f64;
    let pred_cpu = (cpu_seconds() - c) / test.len().max(1) as f64;
    let mean = dices.iter().sum::<f64>() / dices.len().max(1) as f64;
    println!(
        "train {train_s:.1} s wall, {train_cpu:.1} s CPU; predict {pred_s:.2} s wall, {pred_cpu:.2} s CPU per case; test Dice {mean:.4} {dices:.3?}"
    );
}
