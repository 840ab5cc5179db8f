//! Parity of the Rust CLIP with OpenAI's reference code (`clip-anytorch`).
//!
//! `reference/make_clip_reference.py` (run through `$CLISC_PYTHON`) builds
//! CLIP ViT-B/32 at full size with seeded random weights and writes it as a
//! TorchScript archive with fp16 weights (like OpenAI's `ViT-B-32.pt`), as a
//! `torch.save` state dict and as safetensors, plus inputs, outputs and a
//! tokenizer corpus. The files go to
//! `${CLISC_CACHE_DIR:-~/.cache/clisc}/parity/clip-v1/` and are reused.
//!
//! Checked: image embeddings, text embeddings and logits (max relative
//! difference <= 1e-4 in f32) for every weight format; CLIP's preprocessing
//! of a raw 8-bit image (pixel-exact up to f32 rounding); token ids on the
//! corpus; error messages for truncated and mismatched files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clisc_clip::preprocess::preprocess_u8;
use clisc_clip::{Clip, ClipTokenizer, CONTEXT_LENGTH};
use clisc_nn::{WeightFile, WeightFormat};
use tch::{Device, Kind, Tensor};

fn reference_dir() -> PathBuf {
    clisc_test_harness::Reference {
        crate_dir: env!("CARGO_MANIFEST_DIR"),
        name: "clip-v1",
        script: "tests/reference/make_clip_reference.py",
        args: &[],
        files: &["DONE"],
        needs: "the CLIP reference code",
    }
    .dir()
}

fn reference() -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(reference_dir().join("reference.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// max |a - b| / max |b|
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double).to_device(Device::Cpu);
    let b = b.to_kind(Kind::Double);
    assert_eq!(a.size(), b.size());
    let num = f64::try_from((&a - &b).abs().max()).unwrap();
    let den = f64::try_from(b.abs().max()).unwrap();
    num / den
}

fn check_model(file: &str, expect: WeightFormat) {
    let r = reference();
    let t = Instant::now();
    let weights = WeightFile::open(&reference_dir().join(file)).unwrap();
    assert_eq!(weights.format(), expect);
    let model = Clip::from_weights(&weights, Device::Cpu).unwrap();
    drop(weights);
    let load_s = t.elapsed().as_secs_f64();
    assert_eq!(model.config, clisc_clip::ClipConfig::vit_b32());

    let t = Instant::now();
    let img = model.encode_image(&r["images"]);
    let txt = model.encode_text(&r["tokens"]);
    let logits = model.logits(&img, &txt);
    let raw = &r["raw_image"];
    let (h, w) = (raw.size()[0] as usize, raw.size()[1] as usize);
    let pixels = Vec::<u8>::try_from(raw.contiguous().view([-1])).unwrap();
    let pre = preprocess_u8(&pixels, w, h, 1, 224);
    let pre = Tensor::from_slice(&pre).view([1, 3, 224, 224]);
    let raw_feat = model.encode_image(&pre);
    let fwd_s = t.elapsed().as_secs_f64();

    let d_img = rel_diff(&img, &r["image_features"]);
    let d_txt = rel_diff(&txt, &r["text_features"]);
    let d_log = rel_diff(&logits, &r["logits_per_image"]);
    let d_pre = rel_diff(&pre.view([3, 224, 224]), &r["raw_preprocessed"]);
    let d_raw = rel_diff(&raw_feat, &r["raw_image_features"]);
    eprintln!(
        "{file}: load {load_s:.1}s, forward {fwd_s:.1}s; max rel diff: image {d_img:.2e}, text {d_txt:.2e}, \
         logits {d_log:.2e}, raw-image pixels {d_pre:.2e}, raw-image features {d_raw:.2e}"
    );
    for (what, d) in [
        ("image", d_img),
        ("text", d_txt),
        ("logits", d_log),
        ("raw pixels", d_pre),
        ("raw image", d_raw),
    ] {
        assert!(
            d <= 1e-4,
            "{file}: {what} max relative difference {d:.3e} > 1e-4"
        );
    }
}

#[test]
fn torchscript_archive_with_fp16_weights_matches_reference() {
    check_model("vit-b32-random.jit.pt", WeightFormat::TorchScript);
}

#[test]
fn torch_save_state_dict_matches_reference() {
    check_model("vit-b32-random.state_dict.pt", WeightFormat::TorchPickle);
}

#[test]
fn safetensors_matches_reference() {
    check_model("vit-b32-random.safetensors", WeightFormat::SafeTensors);
}

#[test]
fn truncated_and_mismatched_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // A truncated download of the state dict.
    let src = std::fs::read(reference_dir().join("vit-b32-random.state_dict.pt")).unwrap();
    let cut = dir.path().join("ViT-B-32-cut.pt");
    std::fs::write(&cut, &src[..src.len() / 3]).unwrap();
    let err = Clip::load(&cut, Device::Cpu).unwrap_err();
    assert!(err.message.contains("ViT-B-32-cut.pt"), "{}", err.message);

    // A wrong tensor shape.
    let mut named: Vec<(String, Tensor)> =
        Tensor::read_safetensors(reference_dir().join("vit-b32-random.safetensors")).unwrap();
    for (n, t) in named.iter_mut() {
        if n == "visual.ln_post.bias" {
            *t = Tensor::zeros([10], (Kind::Float, Device::Cpu));
        }
    }
    let bad = WeightFile::from_tensors(
        Path::new("bad.safetensors"),
        WeightFormat::SafeTensors,
        named,
    );
    let err = Clip::from_weights(&bad, Device::Cpu).unwrap_err();
    assert!(
        err.message
            .contains("`visual.ln_post.bias`: file has shape [10], model expects [768]"),
        "{}",
        err.message
    );
}

#[test]
fn tokenizer_matches_reference_corpus() {
    let text = std::fs::read_to_string(reference_dir().join("tokenizer.json")).unwrap();
    let corpus: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    // The corpus `make_clip_reference.py` writes: 4 prompts, 19 edge cases
    // (punctuation, accents, CJK, emoji, HTML entities, empty and blank
    // texts, special tokens) and 3 texts longer than the context.
    assert_eq!(corpus.len(), 26, "the reference corpus is incomplete");
    let tok = ClipTokenizer::shared().unwrap();
    let mut mismatches = Vec::new();
    for entry in &corpus {
        let t = entry["text"].as_str().unwrap();
        let ids: Vec<i64> = entry["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let row: Vec<i64> = entry["row"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let got = tok.encode(t);
        let got_row = tok.tokenize(t, CONTEXT_LENGTH, true).unwrap();
        if got != ids || got_row != row {
            mismatches.push(format!("{t:?}: expected {ids:?}, got {got:?}"));
        }
    }
    eprintln!(
        "tokenizer corpus: {} texts, {} mismatches",
        corpus.len(),
        mismatches.len()
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
