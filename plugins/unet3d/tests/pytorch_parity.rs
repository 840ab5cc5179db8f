//! Output parity of the Rust 3D U-Net with an independent PyTorch module.
//!
//! `tests/reference/unet_reference.py` writes the CLISC `unet_3D`
//! (SSL4MIS family) as a plain `nn.Module`, from the architecture alone.
//! For each configuration below the Rust side builds the network with
//! seeded random weights ([`Model::new`], as training does), saves them
//! with the plugin's own [`checkpoint::save`] and a seeded random input
//! with `Tensor::write_safetensors`; the script (run with `$CLISC_PYTHON`,
//! set by `source scripts/env.sh`) loads the weights with
//! `load_state_dict(strict=True)` (every name and shape must match), runs
//! the eval-mode forward and writes its logits. Logits must agree to
//! [`TOLERANCE`] and the argmax labels must be identical; the state-dict
//! names and parameter counts of both sides must be equal.
//!
//! The script runs once per test process, for all configurations. Without
//! `CLISC_PYTHON` the tests fail (they do not skip).

use clisc_unet3d::checkpoint::{self, CheckpointMeta};
use clisc_unet3d::config::UNetConfig;
use clisc_unet3d::train::Model;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Largest accepted |Rust logit - PyTorch logit| (fp32, CPU, logits of
/// magnitude up to about 7). Measured: 0 for every case, as both sides
/// run the same libtorch kernels (`LIBTORCH_USE_PYTORCH`); the margin only
/// allows for a different kernel choice (e.g. another thread count), not
/// for an architectural difference, which shows up as O(1).
const TOLERANCE: f64 = 1e-5;

struct Case {
    name: &'static str,
    features: &'static [i64],
    /// `[B, C, D, H, W]`.
    input: [i64; 5],
    seed: u64,
}

const CASES: [Case; 3] = [
    // Small, batch of two (instance norm is per sample), non-cubic.
    Case {
        name: "small",
        features: &[4, 8, 16],
        input: [2, 1, 24, 24, 16],
        seed: 11,
    },
    // `configs/weight-free-brats.toml`: features [8, 16, 32, 64], patch 48x48x32.
    Case {
        name: "brats",
        features: &[8, 16, 32, 64],
        input: [1, 1, 48, 48, 32],
        seed: 12,
    },
    // The paper's network (unet_3D, feature_scale = 4) on a small input.
    Case {
        name: "paper",
        features: &[16, 32, 64, 128, 256],
        input: [1, 1, 32, 32, 32],
        seed: 13,
    },
];

/// What each side produced for one case.
struct Outcome {
    rust_logits: Tensor,
    rust_names: BTreeSet<String>,
    rust_count: i64,
    py_logits: Tensor,
    py_names: BTreeSet<String>,
    py_count: i64,
}

fn config(features: &[i64]) -> UNetConfig {
    UNetConfig {
        features: features.to_vec(),
        ..UNetConfig::default()
    }
}

/// Builds the Rust network, writes weights, input and `config.json` to `dir`,
/// and returns the Rust eval-mode logits, state-dict names and parameter count.
fn prepare(case: &Case, dir: &Path) -> (Tensor, BTreeSet<String>, i64) {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = config(case.features);
    let model = Model::new(&cfg, Device::Cpu, case.seed);
    tch::manual_seed(case.seed as i64 + 1000);
    let x = Tensor::randn(case.input, (Kind::Float, Device::Cpu));
    let meta = CheckpointMeta {
        plugin_version: "parity".into(),
        config: cfg,
        step: 0,
        total_steps: 0,
        data_key: String::new(),
        loss: 0.0,
    };
    checkpoint::save(&model.vs, &meta, &dir.join("weights.safetensors")).unwrap();
    Tensor::write_safetensors(&[("input", &x)], dir.join("input.safetensors")).unwrap();
    let json = serde_json::json!({
        "in_channels": case.input[1],
        "classes": 2,
        "features": case.features,
    });
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let vars = model.vs.variables();
    let count = vars.values().map(|t| t.numel() as i64).sum();
    let names = vars.into_keys().collect();
    let logits = tch::no_grad(|| model.net.forward_t(&x, false));
    (logits, names, count)
}

/// Reads `output.safetensors` written by the script.
fn read_output(dir: &Path) -> (Tensor, BTreeSet<String>, i64) {
    let path = dir.join("output.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::tensor::SafeTensors::read_metadata(&bytes).unwrap();
    let info = header.metadata().clone().expect("output metadata");
    let names = info["names"].split(',').map(str::to_string).collect();
    let count = info["param_count"].parse().unwrap();
    let logits = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "logits")
        .expect("`logits` in the output")
        .1;
    (logits, names, count)
}

fn run_reference(dirs: &[PathBuf]) {
    let python = std::env::var("CLISC_PYTHON").unwrap_or_else(|_| {
        panic!(
            "CLISC_PYTHON is not set: `source scripts/env.sh` first (the U-Net parity test \
             needs Python with torch and safetensors to run the PyTorch reference)"
        )
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/unet_reference.py");
    let t = Instant::now();
    let status = Command::new(&python)
        .arg(&script)
        .args(dirs)
        .status()
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    assert!(
        status.success(),
        "{python} {} failed: {status}",
        script.display()
    );
    eprintln!("PyTorch reference ran in {:.1}s", t.elapsed().as_secs_f64());
}

fn outcomes() -> &'static Mutex<Vec<Outcome>> {
    static OUTCOMES: OnceLock<Mutex<Vec<Outcome>>> = OnceLock::new();
    OUTCOMES.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let dirs: Vec<PathBuf> = CASES.iter().map(|c| tmp.path().join(c.name)).collect();
        let rust: Vec<_> = CASES
            .iter()
            .zip(&dirs)
            .map(|(c, d)| prepare(c, d))
            .collect();
        eprintln!(
            "Rust networks built, saved and run in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        run_reference(&dirs);
        let all = rust
            .into_iter()
            .zip(&dirs)
            .map(|((rust_logits, rust_names, rust_count), d)| {
                let (py_logits, py_names, py_count) = read_output(d);
                Outcome {
                    rust_logits,
                    rust_names,
                    rust_count,
                    py_logits,
                    py_names,
                    py_count,
                }
            })
            .collect();
        Mutex::new(all)
    })
}

fn check(name: &str) {
    let index = CASES.iter().position(|c| c.name == name).unwrap();
    let case = &CASES[index];
    let all = outcomes().lock().unwrap_or_else(|e| e.into_inner());
    let o = &all[index];
    assert_eq!(o.rust_names, o.py_names, "{name}: state-dict names differ");
    assert_eq!(o.rust_count, o.py_count, "{name}: parameter counts differ");
    let mut expected = case.input.to_vec();
    expected[1] = 2;
    assert_eq!(o.rust_logits.size(), expected, "{name}: Rust output shape");
    assert_eq!(o.py_logits.size(), expected, "{name}: PyTorch output shape");
    let diff = (o.rust_logits.to_kind(Kind::Double) - o.py_logits.to_kind(Kind::Double)).abs();
    let max_diff = diff.max().double_value(&[]);
    let scale = o.py_logits.abs().max().double_value(&[]);
    let labels_rust = o.rust_logits.argmax(1, false);
    let labels_py = o.py_logits.argmax(1, false);
    let differing = labels_rust
        .ne_tensor(&labels_py)
        .sum(Kind::Int64)
        .int64_value(&[]);
    let foreground = labels_py.sum(Kind::Int64).int64_value(&[]);
    println!(
        "{name}: features {:?}, input {:?}, {} parameters: max |logit diff| {max_diff:.3e} \
         (max |logit| {scale:.3}), {differing} of {} argmax labels differ ({foreground} foreground)",
        case.features,
        case.input,
        o.rust_count,
        labels_py.numel()
    );
    assert!(
        max_diff <= TOLERANCE,
        "{name}: logits differ by up to {max_diff:e} (> {TOLERANCE:e})"
    );
    assert_eq!(differing, 0, "{name}: argmax labels differ");
    // Random weights must give a non-trivial segmentation, or the label check says little.
    assert!(
        foreground > 0 && foreground < labels_py.numel() as i64,
        "{name}: degenerate labels"
    );
}

#[test]
fn small_unet_matches_pytorch() {
    check("small");
}

#[test]
fn brats_config_unet_matches_pytorch() {
    check("brats");
}

#[test]
fn paper_unet_matches_pytorch() {
    check("paper");
    // The count the unit test `parameter_names_match_the_pytorch_reference` hard-codes.
    let all = outcomes().lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(all[2].py_count, 5_884_050);
}
