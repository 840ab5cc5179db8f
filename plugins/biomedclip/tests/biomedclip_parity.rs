//! Parity of the Rust BiomedCLIP with open_clip 3.3.0 (timm ViT-B/16 +
//! `transformers` BERT), at full size with random weights.
//!
//! `reference/make_biomedclip_reference.py` (run through `$CLISC_PYTHON`)
//! writes a folder like the published model's (`open_clip_pytorch_model.bin`
//! as `torch.save(model.state_dict())`, a random 30522-token `vocab.txt`,
//! the open_clip and BERT configurations), loads it back the way users
//! load BiomedCLIP and runs open_clip's tokenizer, PIL transform and model
//! on three 8-bit slices and the paper's two prompts. The files go to
//! `${CLISC_CACHE_DIR:-~/.cache/clisc}/parity/biomedclip-v1/` and are
//! reused.
//!
//! Checked: the parameter count; token ids (identical, prompts and a corpus
//! of edge cases); the transformed pixels; image and text features and
//! logits within 1e-3, probabilities within 1e-4, through the model and
//! through the `biomedclip` slice labeler; errors for a truncated file and
//! a mis-shaped tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clisc_biomedclip::{
    BiomedClip, BiomedClipConfig, BiomedClipLabeler, BiomedClipZeroShot, WordPieceTokenizer,
    CONTEXT_LENGTH,
};
use clisc_clip::preprocess::preprocess_u8;
use clisc_clip::{LabelerOptions, ZeroShotModel, PROMPT_ABNORMAL, PROMPT_NORMAL};
use clisc_nn::{WeightFile, WeightFormat};
use clisc_test_harness::max_abs_diff;
use tch::{Device, Kind, Tensor};

const WEIGHTS: &str = "open_clip_pytorch_model.bin";

/// The reference folder, generated on first use.
fn reference_dir() -> PathBuf {
    clisc_test_harness::Reference {
        crate_dir: env!("CARGO_MANIFEST_DIR"),
        name: "biomedclip-v1",
        script: "tests/reference/make_biomedclip_reference.py",
        args: &[],
        files: &["DONE"],
        needs: "open_clip",
    }
    .dir()
}

fn reference() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(reference_dir().join("reference.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(reference_dir().join(name)).unwrap()).unwrap()
}

fn ids(row: &serde_json::Value) -> Vec<i64> {
    row.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

#[test]
fn model_tokenizer_and_labeler_match_open_clip() {
    let r = reference();
    let dir = reference_dir();
    let t = Instant::now();
    let weights = WeightFile::open(&dir.join(WEIGHTS)).unwrap();
    assert_eq!(weights.format(), WeightFormat::TorchPickle);
    let model = BiomedClip::from_weights(&weights, Device::Cpu).unwrap();
    drop(weights);
    let load_s = t.elapsed().as_secs_f64();
    assert_eq!(model.config, BiomedClipConfig::published());
    let parameters = model.parameter_count();
    assert_eq!(
        parameters,
        json("info.json")["parameters"].as_i64().unwrap()
    );

    // Token ids of the prompts.
    let tokenizer = WordPieceTokenizer::from_file(&dir.join("vocab.txt")).unwrap();
    let zero_shot = BiomedClipZeroShot { model, tokenizer };
    let prompts = vec![PROMPT_NORMAL.to_string(), PROMPT_ABNORMAL.to_string()];
    let tokens = zero_shot.tokenize(&prompts).unwrap();
    assert_eq!(tokens.size(), vec![2, CONTEXT_LENGTH as i64]);
    assert_eq!(max_abs_diff(&tokens, &r["tokens"]), 0.0, "token ids differ");

    // open_clip's transform of each slice, then the towers.
    let t = Instant::now();
    let mut pixels = Vec::new();
    let mut d_pixels: f64 = 0.0;
    for i in 0..3 {
        let raw = &r[&format!("raw_{i}")];
        let (h, w) = (raw.size()[0] as usize, raw.size()[1] as usize);
        let grey = Vec::<u8>::try_from(raw.contiguous().view([-1])).unwrap();
        let p = Tensor::from_slice(&preprocess_u8(&grey, w, h, 1, 224)).view([3, 224, 224]);
        d_pixels = d_pixels.max(max_abs_diff(&p, &r[&format!("pixels_{i}")]));
        pixels.push(p);
    }
    let images = Tensor::stack(&pixels, 0);
    let image_features = zero_shot.encode_image(&images);
    let text_features = zero_shot.encode_texts(&prompts).unwrap();
    let logits = zero_shot.logits(&image_features, &text_features);
    let probs = logits.softmax(-1, Kind::Float);
    let forward_s = t.elapsed().as_secs_f64();

    // The slice labeler's P(abnormal) from the same images.
    let labeler = BiomedClipLabeler::new(zero_shot, LabelerOptions::default()).unwrap();
    let abnormal = Tensor::from_slice(&labeler.abnormal_probability(&images));

    let d_img = max_abs_diff(&image_features, &r["image_features"]);
    let d_txt = max_abs_diff(&text_features, &r["text_features"]);
    let d_log = max_abs_diff(&logits, &r["logits"]);
    let d_prob = max_abs_diff(&probs, &r["probs"]);
    let d_label = max_abs_diff(&abnormal, &r["probs"].select(1, 1));
    eprintln!(
        "BiomedCLIP ({parameters} parameters): load {load_s:.1}s, 3 images + 2 prompts {forward_s:.1}s; \
         max abs diff: pixels {d_pixels:.2e}, image features {d_img:.2e}, text features {d_txt:.2e}, \
         logits {d_log:.2e}, probabilities {d_prob:.2e}, labeler P(abnormal) {d_label:.2e}"
    );
    // One grey level is 1/255/std ~ 0.015 after normalisation; the
    // resize is bit-exact, so only f32 rounding may differ.
    assert!(d_pixels <= 1e-5, "pixels differ by {d_pixels:.3e}");
    for (what, d, tol) in [
        ("image features", d_img, 1e-3),
        ("text features", d_txt, 1e-3),
        ("logits", d_log, 1e-3),
        ("probabilities", d_prob, 1e-4),
        ("labeler P(abnormal)", d_label, 1e-4),
    ] {
        assert!(d <= tol, "{what}: max abs difference {d:.3e} > {tol:e}");
    }
}

#[test]
fn tokenizer_matches_open_clip_on_a_corpus() {
    let corpus = json("tokenizer.json");
    let tokenizer = WordPieceTokenizer::from_file(&reference_dir().join("vocab.txt")).unwrap();
    let mut mismatches = Vec::new();
    let entries = corpus.as_array().unwrap();
    for entry in entries {
        let text = entry["text"].as_str().unwrap();
        let expected = ids(&entry["row"]);
        let got = tokenizer.tokenize(text, CONTEXT_LENGTH);
        if got != expected {
            mismatches.push(format!(
                "{text:?}:\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    eprintln!(
        "tokenizer corpus: {} texts, {} mismatches",
        entries.len(),
        mismatches.len()
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn truncated_and_mismatched_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // A truncated download.
    let cut = dir.path().join(WEIGHTS);
    let src = std::fs::File::open(reference_dir().join(WEIGHTS)).unwrap();
    let len = src.metadata().unwrap().len();
    std::io::copy(
        &mut std::io::Read::take(src, len / 3),
        &mut std::fs::File::create(&cut).unwrap(),
    )
    .unwrap();
    let err = BiomedClip::load(&cut, Device::Cpu).unwrap_err();
    assert!(
        err.message.contains(&cut.display().to_string()),
        "{}",
        err.message
    );

    // A tensor of the wrong shape.
    let weights = WeightFile::open(&reference_dir().join(WEIGHTS)).unwrap();
    let name = "text.transformer.encoder.layer.3.attention.output.LayerNorm.bias";
    let named: Vec<(String, Tensor)> = weights
        .names()
        .map(|n| {
            let t = match n == name {
                true => Tensor::zeros([10], (Kind::Float, Device::Cpu)),
                false => weights.get(n).unwrap().shallow_clone(),
            };
            (n.to_string(), t)
        })
        .collect();
    let bad = WeightFile::from_tensors(Path::new("bad.bin"), WeightFormat::TorchPickle, named);
    let err = BiomedClip::from_weights(&bad, Device::Cpu).unwrap_err();
    assert!(
        err.message.contains(&format!(
            "`{name}`: file has shape [10], model expects [768]"
        )) && err.message.contains("bad.bin"),
        "{}",
        err.message
    );
}
