//! The `sam` promptable segmenter as a stage of a real pipeline, against
//! Meta's own code.
//!
//! `support/tiny_sam.py` (through `$CLISC_PYTHON`) builds a small Segment
//! Anything model with Meta's classes (`segment_anything.modeling`: the
//! official 1024 px input, 16 px patches and windows of 14, but width 32
//! and two encoder blocks, one windowed and one global; seeded random
//! weights) and saves its state dict with `torch.save`, as the official
//! `sam_vit_*.pth` checkpoints are; the loader must infer that
//! architecture from the tensor shapes. `clisc run` then runs the
//! weight-free stages up to the prompts (`flair-intensity`, a small `cam`,
//! `box-points`) and `sam` with that checkpoint on a tiny dataset whose
//! volumes have an oblique, anisotropic, translated affine, and stops
//! after the pseudo-masks; a second run in the same work folder redoes
//! only the pseudo-masks with `multimask = true`. The same script
//! reproduces each case's 3D pseudo-label from what the pipeline wrote
//! (its prompts JSON, the preprocessed slices, the raw FLAIR) with Meta's
//! `SamPredictor` after CLISC's slice preparation (min-max to 8 bits,
//! histogram equalisation, 3 channels), one mask per prompt set (or the
//! best of three), the slices stacked, restricted to the brain and put
//! back in the raw grid. The pipeline's outputs (`04-pseudo-masks/
//! original/`) must agree with it, be empty on slices without prompts and
//! outside the brain, and carry the raw FLAIR's shape and affine.
use clisc_pipeline::cases::Split;
use clisc_registry::Registry;
use clisc_sam::image_encoder::ImageEncoderConfig;
use clisc_sam::mask_decoder::MaskDecoderConfig;
use clisc_sam::{SamConfig, SamPlugin, SamPredictor};
use clisc_sdk::{Grid, LabelVolume, Plugin};
use clisc_tests::{manifest, read_json, run_support_script, write_tiny_dataset};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");

fn python(args: &[&str]) {
    run_support_script("tiny_sam.py", args, "Meta's segment-anything code");
}

/// An oblique (rotated about z), anisotropic, translated affine for `shape`.
fn oblique(shape: [u32; 3]) -> Grid {
    let (c, s) = (0.4f64.cos(), 0.4f64.sin());
    let spacing = [1.1, 0.9, 2.5];
    let rot = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
    let mut affine = [[0.0; 4]; 4];
    for (r, row) in rot.iter().enumerate() {
        for (k, v) in row.iter().enumerate() {
            affine[r][k] = v * spacing[k];
        }
    }
    affine[0][3] = 17.5;
    affine[1][3] = -42.25;
    affine[2][3] = 8.0;
    affine[3][3] = 1.0;
    Grid {
        shape,
        spacing,
        affine,
    }
}

/// Rewrites every FLAIR and segmentation of a tiny dataset on `grid`
/// (same voxels, other geometry).
fn regrid_dataset(root: &Path, grid: &Grid) {
    for entry in std::fs::read_dir(root).unwrap() {
        let dir = entry.unwrap().path();
        let id = dir.file_name().unwrap().to_str().unwrap().to_string();
        let flair = dir.join(format!("{id}_flair.nii.gz"));
        let volume = clisc_nifti::read(&flair).unwrap();
        assert_eq!(volume.grid.shape, grid.shape);
        clisc_nifti::write_f32(&flair, grid, &volume.data, None).unwrap();
        let seg = dir.join(format!("{id}_seg.nii.gz"));
        let (labels, _) = clisc_nifti::read_labels(&seg).unwrap();
        let labels = LabelVolume {
            grid: *grid,
            data: labels.data,
        };
        clisc_nifti::write_labels(&seg, &labels, None).unwrap();
    }
}

/// The weight-free stages up to the prompts, then `sam`; no network, so
/// the run ends after the pseudo-masks.
fn write_pipeline(dir: &Path, weights: &str, multimask: bool) -> PathBuf {
    let text = format!(
        r#"
[run]
output = "work"
device = "cpu"
seed = 4
threads = 2

[dataset]
root = "data"
modalities = ["flair"]
split = {{ ratios = [2.0, 1.0, 1.0], seed = 2 }}

# The tiny lesions span a few slices; z-smoothing would vote them away.
[stages.pseudo_labeler]
plugin = "flair-intensity"
settings = {{ smoothing = false }}

[stages.roi_extractor]
plugin = "cam"
settings = {{ arch = "resnet18", input_size = 32, epochs = 1, batch_size = 16, amda_rounds = 0, gate_classifier = false, threshold = "otsu" }}

[stages.prompt_generator]
plugin = "box-points"
settings = {{ box_dilation = 2 }}

[stages.promptable_segmenter]
plugin = "sam"
settings = {{ weights = "{weights}", multimask = {multimask} }}
"#
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// First voxel of the nonzero voxels' bounding box (x, y, z).
fn bbox_start(values: &[f32], grid: &Grid) -> [usize; 3] {
    let mut lo = grid.dims();
    for z in 0..grid.dims()[2] {
        for y in 0..grid.dims()[1] {
            for x in 0..grid.dims()[0] {
                if values[grid.index(x, y, z)] != 0.0 {
                    lo = [lo[0].min(x), lo[1].min(y), lo[2].min(z)];
                }
            }
        }
    }
    lo
}

/// Runs `clisc run --config CONFIG` in `root`; returns its wall time.
fn run(config: &Path, root: &Path) -> f64 {
    let t = Instant::now();
    let out = Command::new(CLI)
        .args(["run", "--config", config.to_str().unwrap()])
        .current_dir(root)
        .output()
        .expect("running clisc");
    assert!(
        out.status.success(),
        "clisc run --config {} failed:\n{}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

/// A row-major 4x4 affine from the report's nested lists.
fn affine_of(value: &serde_json::Value) -> Vec<f64> {
    value
        .as_array()
        .expect("a 4x4 affine")
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect()
}

/// The two `sam` settings checked: one mask per prompt set (CLISC), and
/// three with the best predicted IoU kept.
const MULTIMASK: [bool; 2] = [false, true];

#[test]
fn sam_pseudo_labels_in_a_pipeline_match_meta_code() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let shape = [32, 32, 12];
    let raw_grid = oblique(shape);
    write_tiny_dataset(&root.join("data"), 4, shape);
    regrid_dataset(&root.join("data"), &raw_grid);
    std::fs::create_dir_all(root.join("weights")).unwrap();
    let weights = root.join("weights/tiny-sam.pth");
    python(&["make", weights.to_str().unwrap()]);
    let made = started.elapsed().as_secs_f64();

    // The loader infers the tiny architecture from the tensor shapes alone,
    // including which encoder block attends globally.
    let loaded = SamPredictor::load_on(&weights, "cpu").expect("the tiny checkpoint loads");
    let expected = SamConfig {
        encoder: ImageEncoderConfig {
            embed_dim: 32,
            depth: 2,
            num_heads: 2,
            out_chans: 32,
            global_attn_indexes: vec![1],
            ..ImageEncoderConfig::vit_b()
        },
        prompt_embed_dim: 32,
        mask_in_chans: 16,
        decoder: MaskDecoderConfig {
            transformer_dim: 32,
            mlp_dim: 64,
            iou_head_hidden_dim: 32,
            ..MaskDecoderConfig::default()
        },
    };
    assert_eq!(loaded.model.config, expected);
    drop(loaded);

    // Both settings in the same work folder: the second run recomputes
    // only the pseudo-masks. Each run's original-grid outputs are kept.
    let work = root.join("work");
    let mut run_s = Vec::new();
    let mut outputs = Vec::new();
    for multimask in MULTIMASK {
        let config = write_pipeline(root, "weights/tiny-sam.pth", multimask);
        run_s.push(run(&config, root));
        let m = manifest(&work);
        let step = &m["steps"]["pseudo-masks"];
        assert_eq!(step["status"], "done", "{m}");
        assert_eq!(
            step["plugins"][0],
            format!("promptable_segmenter=sam@{}", SamPlugin::VERSION),
            "{m}"
        );
        // The pipeline ends after its last configured stage.
        assert!(m["steps"].get("network-1").is_none(), "{m}");
        let kept = root.join(format!("multimask-{multimask}"));
        std::fs::create_dir_all(&kept).unwrap();
        for entry in std::fs::read_dir(work.join("04-pseudo-masks/original")).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, kept.join(path.file_name().unwrap())).unwrap();
        }
        outputs.push(kept);
    }
    let steps: Vec<String> = manifest(&work)["steps"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, r)| format!("{name} {:.1}s", r["seconds"].as_f64().unwrap_or(0.0)))
        .collect();

    // The cases exactly as the stages saw them (preprocessed, cropped).
    let mut registry = Registry::builtin();
    let pipeline = clisc_pipeline::load(&root.join("pipeline.toml"), &mut registry)
        .expect("the pipeline loads");
    let cases = clisc_pipeline::prepare::prepare_cases(&pipeline).expect("the dataset prepares");

    let mut slices_file = std::fs::File::create(root.join("slices.f32")).unwrap();
    let mut offset = 0usize;
    let mut listed = Vec::new();
    let mut prompted: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (id, case) in &cases {
        let prompts_path = work.join(format!("03-prompts/{id}.json"));
        if case.split != Split::Train {
            for kept in &outputs {
                assert!(
                    !kept.join(format!("{id}.nii.gz")).exists(),
                    "{id} is not a training case but got a pseudo-label"
                );
            }
            continue;
        }
        let [nx, ny, nz] = case.input.image.grid.dims();
        let flair = case.input.image.require_channel("flair").unwrap();
        let zs: BTreeSet<usize> = read_json(&prompts_path)
            .as_array()
            .expect("a list of prompt sets")
            .iter()
            .map(|s| s["slice"].as_u64().unwrap() as usize)
            .collect();
        let mut slices = Vec::new();
        for &z in &zs {
            assert!(z < nz, "{id}: prompt on slice {z} of {nz}");
            for v in &flair[z * nx * ny..(z + 1) * nx * ny] {
                slices_file.write_all(&v.to_le_bytes()).unwrap();
            }
            slices.push(serde_json::json!({"z": z, "width": nx, "height": ny, "offset": offset}));
            offset += nx * ny;
        }
        let runs: Vec<serde_json::Value> = MULTIMASK
            .iter()
            .zip(&outputs)
            .map(|(multimask, kept)| {
                serde_json::json!({
                    "multimask": multimask,
                    "pseudo_label": kept.join(format!("{id}.nii.gz")),
                    "reference": kept.join(format!("{id}.reference.u8")),
                })
            })
            .collect();
        listed.push(serde_json::json!({
            "id": id,
            "flair": case.flair_path,
            "prompts": prompts_path,
            "slices": slices,
            "runs": runs,
        }));
        prompted.insert(id.clone(), zs);
    }
    drop(slices_file);
    let train_cases = prompted.len();
    assert!(train_cases >= 2, "{train_cases} training cases");
    let prompted_slices: usize = prompted.values().map(BTreeSet::len).sum();
    assert!(
        prompted_slices > 0,
        "no slice got a prompt: nothing to check"
    );

    // Meta's code on the same slices and prompts.
    let input = serde_json::json!({"cases": listed, "slices_file": root.join("slices.f32")});
    std::fs::write(root.join("reference-in.json"), input.to_string()).unwrap();
    let t = Instant::now();
    python(&[
        "reference",
        weights.to_str().unwrap(),
        root.join("reference-in.json").to_str().unwrap(),
        root.join("reference-out.json").to_str().unwrap(),
    ]);
    let reference_s = t.elapsed().as_secs_f64();
    let report = read_json(&root.join("reference-out.json"));

    let mut voxels = [0usize; 2];
    let mut removed = [0u64; 2];
    let mut differ = [0usize; 2];
    let mut min_dice = [1f64; 2];
    let mut settings_differ = 0usize;
    let mut unprompted_in_box = 0usize;
    for (id, zs) in &prompted {
        let case = &cases[id];
        let raw = clisc_nifti::read(&case.flair_path).unwrap();
        assert_eq!(raw.grid.shape, shape, "{id}");
        let r = &report[id.as_str()];
        assert_eq!(r["flair_shape"], serde_json::json!(shape), "{id}: {r}");
        let expected_affine: Vec<f64> = raw_grid.affine.iter().flatten().copied().collect();
        for (k, (a, b)) in affine_of(&r["flair_affine"])
            .iter()
            .zip(&expected_affine)
            .enumerate()
        {
            assert!(
                (a - b).abs() < 1e-5,
                "{id}: raw FLAIR affine element {k} is {a} in nibabel, {b} written"
            );
        }
        assert_eq!(r["prompted_slices"], zs.len(), "{id}");
        let z0 = bbox_start(&raw.data, &raw.grid)[2];
        let n = raw.grid.slice_len();
        let mut labels = Vec::new();
        for (k, (multimask, kept)) in MULTIMASK.iter().zip(&outputs).enumerate() {
            let what = format!("{id} (multimask = {multimask})");
            let (rust, _) = clisc_nifti::read_labels(&kept.join(format!("{id}.nii.gz"))).unwrap();
            // The original grid and affine, as clisc and nibabel read them.
            assert!(
                clisc_nifti::same_geometry(&rust.grid, &raw.grid, 1e-9),
                "{what}: pseudo-label grid {:?} is not the raw FLAIR's {:?}",
                rust.grid,
                raw.grid
            );
            let run = &r["runs"][k];
            assert_eq!(run["output_shape"], r["flair_shape"], "{what}: {r}");
            for (e, (a, b)) in affine_of(&run["output_affine"])
                .iter()
                .zip(&expected_affine)
                .enumerate()
            {
                assert!(
                    (a - b).abs() < 1e-5,
                    "{what}: nibabel affine element {e}: output {a}, raw FLAIR {b}"
                );
            }
            removed[k] += run["removed_outside_brain"].as_u64().unwrap();

            let reference = std::fs::read(kept.join(format!("{id}.reference.u8"))).unwrap();
            assert_eq!(reference.len(), rust.data.len(), "{what}");
            let d = clisc_imaging::overlap::dice(&rust.data, &reference);
            min_dice[k] = min_dice[k].min(d);
            differ[k] += rust
                .data
                .iter()
                .zip(&reference)
                .filter(|(a, b)| a != b)
                .count();
            assert!(d >= 0.999, "{what}: Dice {d} between clisc and Meta's code");

            // Slice by slice: same empty slices; only prompted slices have
            // labels; nothing outside the brain.
            for z in 0..shape[2] as usize {
                let ours = &rust.data[z * n..(z + 1) * n];
                let theirs = &reference[z * n..(z + 1) * n];
                let empty = |s: &[u8]| s.iter().all(|&v| v == 0);
                assert_eq!(
                    empty(ours),
                    empty(theirs),
                    "{what} slice {z}: empty here {}, in Meta's code {}",
                    empty(ours),
                    empty(theirs)
                );
                let in_box = z >= z0 && z - z0 < case.input.image.grid.dims()[2];
                if !(in_box && zs.contains(&(z - z0))) {
                    assert!(empty(ours), "{what} slice {z} has no prompt but has labels");
                    unprompted_in_box += usize::from(in_box);
                }
            }
            for (i, (&label, &value)) in rust.data.iter().zip(&raw.data).enumerate() {
                assert!(
                    label == 0 || value != 0.0,
                    "{what}: voxel {i} is labelled outside the brain"
                );
                assert!(label <= 1, "{what}: label {label} at voxel {i}");
            }
            voxels[k] += rust.count_nonzero();
            labels.push(rust);
        }
        settings_differ += labels[0]
            .data
            .iter()
            .zip(labels[1].data.iter())
            .filter(|(a, b)| a != b)
            .count();

        // The cropped copy later steps read holds the last run's labels.
        let (cropped, _) =
            clisc_nifti::read_labels(&work.join(format!("04-pseudo-masks/{id}.nii.gz"))).unwrap();
        assert_eq!(cropped.grid.shape, case.input.image.grid.shape, "{id}");
        assert!(
            case.restore(&cropped).unwrap().data == labels[1].data,
            "{id}: the cropped and original-grid pseudo-labels differ"
        );
    }
    // Guards against a vacuous pass.
    assert!(
        voxels.iter().all(|&v| v > 0),
        "every pseudo-label of a run is empty ({voxels:?} labelled voxels): a weak check"
    );
    assert!(
        unprompted_in_box > 0,
        "every brain slice got a prompt: the empty-slice rule is untested"
    );
    assert!(
        removed.iter().all(|&r| r > 0),
        "Meta's masks never left the brain ({removed:?} pixels): the brain restriction is untested"
    );
    assert!(
        settings_differ > 0,
        "multimask = true gave the same labels as false: the setting is untested"
    );

    eprintln!(
        "{prompted_slices} prompted slices in {train_cases} cases; single mask / multimask: \
         min Dice {:.6} / {:.6}, voxels differing from Meta's code {} / {}, labelled {} / {}, \
         mask pixels outside the brain removed {} / {}; the two settings differ on \
         {settings_differ} voxels; checkpoint {made:.1}s, clisc run {:.1}s + {:.1}s \
         (last run's steps: {}), reference {reference_s:.1}s, total {:.1}s",
        min_dice[0],
        min_dice[1],
        differ[0],
        differ[1],
        voxels[0],
        voxels[1],
        removed[0],
        removed[1],
        run_s[0],
        run_s[1],
        steps.join(", "),
        started.elapsed().as_secs_f64()
    );
}
