//! Parity of the Rust SAM with Meta's `segment-anything` (full ViT-B,
//! seeded random weights saved with `torch.save(state_dict)` like the
//! official checkpoints).
//!
//! The reference files are generated on first use by
//! `tests/reference/make_sam_reference.py` (run with `$CLISC_PYTHON`) into
//! `${CLISC_CACHE_DIR:-~/.cache/clisc}/parity/sam/v1/` and reused after.
//! The image embedding is computed once per test process and shared.

use clisc_nn::WeightFile;
use clisc_sam::{ImageEmbedding, Sam, SamOutput, SamPredictor, SamPrompt};
use clisc_test_harness::max_abs_diff;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Generates the reference files if they are not there yet.
fn reference_dir() -> PathBuf {
    clisc_test_harness::Reference {
        crate_dir: env!("CARGO_MANIFEST_DIR"),
        name: "sam/v1",
        script: "tests/reference/make_sam_reference.py",
        args: &[],
        files: &["reference.pt", "sam_vit_b_random.pth"],
        needs: "Meta's segment-anything",
    }
    .dir()
}

struct Fixture {
    predictor: SamPredictor,
    reference: WeightFile,
    embedding: ImageEmbedding,
    rgb: Vec<u8>,
    size: (usize, usize),
}

fn fixture() -> &'static Mutex<Fixture> {
    static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = reference_dir();
        let t = Instant::now();
        let predictor = SamPredictor::load(&dir.join("sam_vit_b_random.pth"), Device::Cpu)
            .expect("loading the random ViT-B");
        eprintln!("loaded ViT-B in {:.1}s", t.elapsed().as_secs_f64());
        let reference = WeightFile::open(&dir.join("reference.pt")).expect("reading reference.pt");
        let image = reference.require("image").unwrap();
        let (h, w) = (image.size()[0] as usize, image.size()[1] as usize);
        let rgb: Vec<u8> = Vec::<u8>::try_from(image.to_kind(Kind::Uint8).view([-1])).unwrap();
        let t = Instant::now();
        let embedding = predictor.embed(&rgb, w, h).unwrap();
        eprintln!("ViT-B image embedding in {:.1}s", t.elapsed().as_secs_f64());
        Mutex::new(Fixture {
            predictor,
            reference,
            embedding,
            rgb,
            size: (h, w),
        })
    })
}

#[test]
fn preprocessing_matches_pil_resize_and_normalisation() {
    let f = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let (x, input_size) = f.predictor.preprocess(&f.rgb, f.size.1, f.size.0).unwrap();
    assert_eq!(input_size, (768, 1024));
    let diff = max_abs_diff(&x, f.reference.require("input").unwrap());
    eprintln!("preprocessed input: max abs diff {diff:e}");
    assert!(diff < 1e-5, "preprocessed input differs by {diff}");
}

#[test]
fn image_embedding_matches() {
    let f = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let reference = f.reference.require("features").unwrap();
    let diff = max_abs_diff(&f.embedding.features, reference);
    let scale = reference.abs().max().double_value(&[]);
    eprintln!("image embedding: max abs diff {diff:e} (max |value| {scale:.3})");
    assert!(diff <= 1e-3, "image embedding differs by {diff}");
}

fn prompt_set(reference: &WeightFile, k: usize) -> (SamPrompt, bool) {
    let get = |name: &str| reference.get(&format!("p{k}.{name}"));
    let mut prompt = SamPrompt::default();
    if let Some(coords) = get("coords") {
        let labels = get("labels").expect("labels with coords");
        let c: Vec<f32> = Vec::<f32>::try_from(coords.view([-1])).unwrap();
        let l: Vec<i64> = Vec::<i64>::try_from(labels.view([-1])).unwrap();
        prompt.points = c
            .chunks(2)
            .zip(l)
            .map(|(xy, l)| ([xy[0] as f64, xy[1] as f64], l == 1))
            .collect();
    }
    if let Some(b) = get("box") {
        let b: Vec<f32> = Vec::<f32>::try_from(b.view([-1])).unwrap();
        prompt.bbox = Some([b[0] as f64, b[1] as f64, b[2] as f64, b[3] as f64]);
    }
    if let Some(from) = get("mask_from") {
        // The reference fed its own best low-res logits of an earlier set.
        let from = from.int64_value(&[0]);
        let low = reference.require(&format!("p{from}.low_res")).unwrap();
        let iou = reference.require(&format!("p{from}.iou")).unwrap();
        let best = iou.argmax(0, false).int64_value(&[]);
        prompt.mask_input = Some(low.get(best).unsqueeze(0));
    }
    let multimask = get("multimask").unwrap().int64_value(&[0]) == 1;
    (prompt, multimask)
}

fn check_output(k: usize, out: &SamOutput, reference: &WeightFile) -> (f64, f64, f64) {
    let low = reference.require(&format!("p{k}.low_res")).unwrap();
    let iou = reference.require(&format!("p{k}.iou")).unwrap();
    let masks = reference.require(&format!("p{k}.masks")).unwrap();
    let d_low = max_abs_diff(&out.low_res, low);
    let d_iou = max_abs_diff(&Tensor::from_slice(&out.iou), iou);
    let mut min_dice: f64 = 1.0;
    for (j, m) in out.masks.iter().enumerate() {
        let r: Vec<u8> =
            Vec::<u8>::try_from(masks.get(j as i64).to_kind(Kind::Uint8).view([-1])).unwrap();
        min_dice = min_dice.min(clisc_imaging::overlap::dice(m, &r));
    }
    (d_low, d_iou, min_dice)
}

#[test]
fn masks_ious_and_logits_match_for_every_prompt_kind() {
    let f = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let n = f
        .reference
        .require("num_prompt_sets")
        .unwrap()
        .int64_value(&[0]) as usize;
    let (mut worst_low, mut worst_iou, mut worst_dice) = (0f64, 0f64, 1f64);
    for k in 0..n {
        let (prompt, multimask) = prompt_set(&f.reference, k);
        let t = Instant::now();
        let out = f
            .predictor
            .predict(&f.embedding, std::slice::from_ref(&prompt), multimask)
            .unwrap();
        let (d_low, d_iou, d) = check_output(k, &out[0], &f.reference);
        eprintln!(
            "prompt set {k}: low-res max abs diff {d_low:.2e}, IoU diff {d_iou:.2e}, Dice {d:.6} ({:.0} ms)",
            t.elapsed().as_secs_f64() * 1e3
        );
        worst_low = worst_low.max(d_low);
        worst_iou = worst_iou.max(d_iou);
        worst_dice = worst_dice.min(d);
        assert!(
            d_low <= 1e-3,
            "prompt set {k}: low-res logits differ by {d_low}"
        );
        assert!(
            d_iou <= 1e-4,
            "prompt set {k}: IoU predictions differ by {d_iou}"
        );
        assert!(d >= 0.999, "prompt set {k}: mask Dice {d}");
    }
    eprintln!("worst over {n} prompt sets: logits {worst_low:.2e}, IoU {worst_iou:.2e}, Dice {worst_dice:.6}");
}

#[test]
fn batched_prompts_equal_one_by_one() {
    let f = fixture().lock().unwrap_or_else(|e| e.into_inner());
    // Sets 0 and 5 share a shape only with a mask; 0 and a shifted box batch together.
    let (a, _) = prompt_set(&f.reference, 0);
    let (b, _) = prompt_set(&f.reference, 1);
    let (c, _) = prompt_set(&f.reference, 3);
    let batch = f
        .predictor
        .predict(&f.embedding, &[a, b, c], false)
        .unwrap();
    for (i, k) in [0usize, 1, 3].into_iter().enumerate() {
        let (p, _) = prompt_set(&f.reference, k);
        let single = f.predictor.predict(&f.embedding, &[p], false).unwrap();
        let d = max_abs_diff(&batch[i].low_res, &single[0].low_res);
        assert!(d <= 1e-4, "batched set {k} differs from single by {d}");
    }
}

#[test]
fn safetensors_export_loads_to_the_same_model() {
    let f = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sam_vit_b.safetensors");
    let vars = f.predictor.model.vs.variables();
    let named: Vec<(&str, &Tensor)> = vars.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&named, &file).unwrap();
    let loaded = Sam::load(&file, Device::Cpu).unwrap();
    assert_eq!(loaded.config, f.predictor.model.config);
    let other = loaded.vs.variables();
    for (name, t) in &vars {
        assert_eq!(max_abs_diff(t, &other[name]), 0.0, "{name}");
    }
}

#[test]
fn wrong_files_are_rejected_with_the_file_and_tensor_named() {
    let dir = reference_dir();
    let reference = dir.join("reference.pt");
    let err = Sam::load(&reference, Device::Cpu).unwrap_err();
    assert!(
        err.message.contains("reference.pt") && err.message.contains("not a SAM checkpoint"),
        "{}",
        err.message
    );

    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("sam_vit_b_01ec64.pth");
    std::fs::write(&text, "<html>404 Not Found</html>").unwrap();
    let err = Sam::load(&text, Device::Cpu).unwrap_err();
    assert!(
        err.message.contains("sam_vit_b_01ec64.pth"),
        "{}",
        err.message
    );

    // A checkpoint with one tensor of the wrong shape names that tensor.
    let vs = Sam::new(&clisc_sam::SamConfig::vit_b(), Device::Cpu).vs;
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    for (name, t) in named.iter_mut() {
        if name == "mask_decoder.iou_token.weight" {
            *t = Tensor::zeros([1, 128], (Kind::Float, Device::Cpu));
        }
    }
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let bad = tmp.path().join("bad.safetensors");
    Tensor::write_safetensors(&refs, &bad).unwrap();
    let err = Sam::load(&bad, Device::Cpu).unwrap_err();
    assert!(
        err.message.contains("mask_decoder.iou_token.weight")
            && err.message.contains("bad.safetensors"),
        "{}",
        err.message
    );
}
