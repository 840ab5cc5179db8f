//! The `clip` pseudo-labeler as a stage of a real pipeline, and the shipped
//! `configs/swap-clip.toml`.
//!
//! `support/tiny_clip.py` (through `$CLISC_PYTHON`) builds a small CLIP with
//! OpenAI's own code (`clip.model.CLIP`: ViT-B/32's 224 px input and 32 px
//! patches, 2 layers of width 64 per tower, seeded random weights) and saves
//! it as OpenAI's checkpoints are: an fp16 TorchScript archive. The pipeline
//! (just the pseudo-labeler, the shortest prefix a pipeline may be) runs
//! through `clisc run` on a tiny dataset; then the same script labels every
//! slice the stage saw with OpenAI's code (`clip.load`, its PIL/torchvision
//! preprocessing, `model(images, tokens)`) after the 8-bit conversion the
//! plugin documents, and the two must agree.

use clisc_clip::{ClipPlugin, PROMPT_ABNORMAL, PROMPT_NORMAL};
use clisc_pipeline::cases::Split;
use clisc_registry::Registry;
use clisc_sdk::{Plugin, SliceLabel, SlicePseudoLabels};
use clisc_tests::{manifest, read_json, run_support_script, write_tiny_dataset};
use clisc_weight_free::smoothing::Smoothing;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");

/// Keep a slice when its label probability is at least this. The tiny
/// random model's probabilities fall on both sides of it.
const THRESHOLD: f64 = 0.6;

fn python(args: &[&str]) {
    run_support_script("tiny_clip.py", args, "OpenAI's CLIP code");
}

fn clisc(args: &[&str], cwd: &Path) -> Output {
    Command::new(CLI)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running clisc")
}

/// A pipeline with only the `clip` pseudo-labeler, writing into `work-{name}`.
fn write_pipeline(dir: &Path, name: &str, weights: &str, smoothing: &str) -> PathBuf {
    let text = format!(
        r#"
[run]
output = "work-{name}"
device = "cpu"
seed = 3
threads = 1

[dataset]
root = "data"
modalities = ["flair"]
split = {{ ratios = [4.0, 1.0, 1.0], seed = 2 }}

[stages.pseudo_labeler]
plugin = "clip"
settings = {{ weights = "{weights}", threshold = {THRESHOLD}, {smoothing}, batch_size = 16 }}
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(config: &Path, cwd: &Path) {
    let out = clisc(&["run", "--config", config.to_str().unwrap()], cwd);
    assert!(
        out.status.success(),
        "clisc run --config {} failed:\n{}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One slice label as written in `01-pseudo-labels/<case>.json`.
struct Label {
    index: u64,
    label: u64,
    probability: f64,
    kept: bool,
}

fn labels_of(path: &Path) -> Vec<Label> {
    read_json(path)
        .as_array()
        .expect("a list of slice labels")
        .iter()
        .map(|s| Label {
            index: s["index"].as_u64().unwrap(),
            label: s["label"].as_u64().unwrap(),
            probability: s["probability"].as_f64().unwrap(),
            kept: s["kept"].as_bool().unwrap(),
        })
        .collect()
}

#[test]
fn clip_labels_slices_in_a_pipeline_like_openai_code() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tiny_dataset(&root.join("data"), 6, [40, 40, 24]);
    std::fs::create_dir_all(root.join("weights")).unwrap();
    let weights = root.join("weights/tiny-clip-vit-b32.pt");
    python(&["make", weights.to_str().unwrap()]);
    let made = started.elapsed().as_secs_f64();

    // Smoothing off: every label is then CLIP's own, comparable with the
    // reference; the smoothed run is checked against it below.
    let config = write_pipeline(
        root,
        "raw",
        "weights/tiny-clip-vit-b32.pt",
        "smoothing = false",
    );
    let t = Instant::now();
    run(&config, root);
    let run_s = t.elapsed().as_secs_f64();
    let work = root.join("work-raw");

    let m = manifest(&work);
    let step = &m["steps"]["pseudo-labels"];
    assert_eq!(step["status"], "done", "{m}");
    assert_eq!(
        step["plugins"][0],
        format!("pseudo_labeler=clip@{}", ClipPlugin::VERSION),
        "{m}"
    );
    // The pipeline ends after its last configured stage.
    assert!(m["steps"].get("roi").is_none(), "{m}");

    // The cases exactly as the stage saw them (preprocessed, cropped).
    let mut registry = Registry::builtin();
    let pipeline = clisc_pipeline::load(&config, &mut registry).expect("the pipeline loads");
    let cases = clisc_pipeline::prepare::prepare_cases(&pipeline).expect("the dataset prepares");

    let mut slices_file = std::fs::File::create(root.join("slices.f32")).unwrap();
    let mut listed = Vec::new();
    let mut rust = Vec::new(); // (case, z, label, P(abnormal)) of every slice sent to CLIP
    let (mut total, mut kept, mut correct, mut correct_kept) = (0usize, 0usize, 0usize, 0usize);
    let mut raw_labels = BTreeMap::new();
    for (id, case) in &cases {
        let path = work.join(format!("01-pseudo-labels/{id}.json"));
        if case.split != Split::Train {
            assert!(
                !path.exists(),
                "{id} is not a training case but was labelled"
            );
            continue;
        }
        let labels = labels_of(&path);
        let [nx, ny, nz] = case.input.image.grid.dims();
        assert_eq!(labels.len(), nz, "{id}: one label per axial slice");
        let n = nx * ny;
        let flair = case.input.image.require_channel("flair").unwrap();
        let truth = case
            .truth
            .as_ref()
            .expect("the tiny dataset has ground truth");
        for (z, l) in labels.iter().enumerate() {
            assert_eq!(l.index, z as u64, "{id}: slices in z order");
            assert!(l.label <= 1, "{id} slice {z}: label {}", l.label);
            assert!(
                (0.5..=1.0).contains(&l.probability),
                "{id} slice {z}: probability {} of the chosen label",
                l.probability
            );
            assert_eq!(
                l.kept,
                l.probability >= THRESHOLD,
                "{id} slice {z}: kept must follow p >= {THRESHOLD} (p = {})",
                l.probability
            );
            let tumour = truth.data[z * n..(z + 1) * n].iter().any(|&v| v != 0);
            total += 1;
            kept += usize::from(l.kept);
            let ok = (l.label == 1) == tumour;
            correct += usize::from(ok);
            correct_kept += usize::from(ok && l.kept);
            if case.input.brain_mask.data[z * n..(z + 1) * n]
                .iter()
                .all(|&m| m == 0)
            {
                assert_eq!((l.label, l.probability, l.kept), (0, 1.0, false));
                continue;
            }
            for v in &flair[z * n..(z + 1) * n] {
                slices_file.write_all(&v.to_le_bytes()).unwrap();
            }
            listed.push(serde_json::json!({"case": id, "z": z, "width": nx, "height": ny}));
            let p_abnormal = if l.label == 1 {
                l.probability
            } else {
                1.0 - l.probability
            };
            rust.push((id.clone(), z, l.label, p_abnormal));
        }
        raw_labels.insert(id.clone(), labels);
    }
    let train_cases = raw_labels.len();
    drop(slices_file);
    assert!(train_cases >= 3, "{train_cases} training cases");
    assert!(
        kept > 0 && kept < total,
        "the threshold should keep some slices and drop others ({kept} of {total} kept)"
    );
    let tumour_labels = rust.iter().filter(|s| s.2 == 1).count();
    assert!(
        tumour_labels > 0 && tumour_labels < rust.len(),
        "both labels should occur ({tumour_labels} of {} slices labelled 1)",
        rust.len()
    );

    // The summary's slice-label statistics are those of these labels.
    let summary = read_json(&work.join("summary.json"));
    let stats = &summary["slice_labels"];
    assert!(stats.is_object(), "no slice-label statistics: {summary}");
    assert_eq!(stats["all"]["slices"], total, "{stats}");
    assert_eq!(stats["kept"]["slices"], kept, "{stats}");
    let close = |a: &serde_json::Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-12;
    assert!(
        close(&stats["kept_fraction"], kept as f64 / total as f64),
        "{stats}"
    );
    assert!(
        close(&stats["all"]["accuracy"], correct as f64 / total as f64),
        "{stats}"
    );
    assert!(
        close(
            &stats["kept"]["accuracy"],
            correct_kept as f64 / kept as f64
        ),
        "{stats}"
    );

    // OpenAI's code on the same slices.
    let input = serde_json::json!({
        "prompts": [PROMPT_NORMAL, PROMPT_ABNORMAL],
        "slices_file": root.join("slices.f32"),
        "slices": listed,
    });
    std::fs::write(root.join("reference-in.json"), input.to_string()).unwrap();
    let t = Instant::now();
    python(&[
        "reference",
        weights.to_str().unwrap(),
        root.join("reference-in.json").to_str().unwrap(),
        root.join("reference-out.json").to_str().unwrap(),
    ]);
    let reference_s = t.elapsed().as_secs_f64();
    let reference: Vec<f64> = serde_json::from_value(read_json(&root.join("reference-out.json")))
        .expect("a list of probabilities");
    assert_eq!(reference.len(), rust.len());
    let mut max_diff = 0f64;
    let (mut lo, mut hi) = (1f64, 0f64);
    for ((id, z, label, p), r) in rust.iter().zip(&reference) {
        let d = (p - r).abs();
        max_diff = max_diff.max(d);
        (lo, hi) = (lo.min(*r), hi.max(*r));
        assert!(
            d <= 1e-4,
            "{id} slice {z}: P(abnormal) {p} in the pipeline, {r} from OpenAI's code"
        );
        if (r - 0.5).abs() > 1e-4 {
            assert_eq!(*label, u64::from(*r > 0.5), "{id} slice {z}: p = {r}");
        }
    }

    // With smoothing on the stage relabels exactly as the shared smoothing
    // does on those raw labels; kept flags do not change. (Fewer votes than
    // the reference's more than 8: these small cases keep too few slices.)
    let smoothing = Smoothing {
        neighbours_per_side: 3,
        max_distance: 6,
        min_votes: 2,
    };
    let smoothed = write_pipeline(
        root,
        "smoothed",
        "weights/tiny-clip-vit-b32.pt",
        &format!(
            "smoothing = true, smoothing_neighbours = {}, smoothing_max_distance = {}, smoothing_min_votes = {}",
            smoothing.neighbours_per_side, smoothing.max_distance, smoothing.min_votes
        ),
    );
    run(&smoothed, root);
    let mut relabelled = 0;
    for (id, raw) in &raw_labels {
        let mut expected = SlicePseudoLabels {
            slices: raw
                .iter()
                .map(|l| SliceLabel {
                    index: l.index as u32,
                    label: l.label as u8,
                    probability: l.probability as f32,
                    kept: l.kept,
                })
                .collect(),
        };
        relabelled += smoothing.apply(&mut expected);
        let got = labels_of(&root.join(format!("work-smoothed/01-pseudo-labels/{id}.json")));
        assert_eq!(got.len(), expected.slices.len(), "{id}");
        for (g, e) in got.iter().zip(expected.slices.iter()) {
            assert_eq!(
                (g.index, g.label, g.kept),
                (u64::from(e.index), u64::from(e.label), e.kept),
                "{id}: smoothed slice {}",
                e.index
            );
            assert!(
                (g.probability - f64::from(e.probability)).abs() < 1e-6,
                "{id}"
            );
        }
    }
    assert!(relabelled > 0, "smoothing changed no label: a weak check");

    eprintln!(
        "{} slices of {train_cases} cases: max |P(abnormal) - reference| {max_diff:.2e}, \
         reference P(abnormal) in [{lo:.4}, {hi:.4}], {tumour_labels} labelled 1, {kept}/{total} kept, \
         {relabelled} relabelled by smoothing; checkpoint {made:.1}s, clisc run {run_s:.1}s, \
         reference {reference_s:.1}s",
        rust.len()
    );
}

/// `configs/swap-clip.toml` without `weights/ViT-B-32.pt`: `clisc check`
/// names the file, its setting and line, and where to download it. With a
/// file in place it is the demo pipeline with only the pseudo-labeler
/// swapped.
#[test]
fn swap_clip_config_names_the_missing_checkpoint_and_is_the_demo_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    std::fs::create_dir_all(root.join("configs")).unwrap();
    for name in ["swap-clip.toml", "demo.toml"] {
        std::fs::copy(configs.join(name), root.join("configs").join(name)).unwrap();
    }
    write_tiny_dataset(&root.join("data/demo"), 2, [24, 24, 16]);
    let text = std::fs::read_to_string(root.join("configs/swap-clip.toml")).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("../weights/ViT-B-32.pt"))
        .expect("the config names ../weights/ViT-B-32.pt")
        + 1;

    let out = clisc(&["check", "configs/swap-clip.toml"], &root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "clisc check succeeded:\n{stderr}");
    assert!(out.stdout.is_empty(), "check printed a pipeline");
    assert!(stderr.contains("1 weight file is missing"), "{stderr}");
    assert!(
        stderr.contains(&format!("swap-clip.toml:{line}:")),
        "line {line} not named:\n{stderr}"
    );
    assert!(
        stderr.contains("[stages.pseudo_labeler] settings.weights"),
        "{stderr}"
    );
    assert!(
        stderr.contains("weight file weights/ViT-B-32.pt does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt"),
        "{stderr}"
    );

    std::fs::create_dir_all(root.join("weights")).unwrap();
    std::fs::write(root.join("weights/ViT-B-32.pt"), b"placeholder").unwrap();
    let resolved = |name: &str| {
        let out = clisc(&["check", &format!("configs/{name}")], &root);
        assert!(
            out.status.success(),
            "clisc check {name}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (swap, demo) = (resolved("swap-clip.toml"), resolved("demo.toml"));
    assert!(swap.contains("plugin = \"clip\""), "{swap}");
    // Every table but the pseudo-labeler's and the work folder is the demo's.
    let tables = |text: &str| -> Vec<String> {
        text.split("\n[")
            .filter(|t| !t.starts_with("stages.pseudo_labeler"))
            .map(|t| {
                t.lines()
                    .filter(|l| !l.trim_start().starts_with("output ="))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect()
    };
    assert_eq!(
        tables(&swap),
        tables(&demo),
        "configs/swap-clip.toml should be configs/demo.toml with only the pseudo-labeler swapped"
    );
}
