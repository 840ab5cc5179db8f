//! The `sam2` promptable segmenter propagating through volumes, as a stage
//! of a real pipeline and through `clisc sam --propagate`.
//!
//! A SAM 2.1 Hiera-tiny with seeded random weights (its occlusion head
//! biased towards "object present", as in the parity reference, so that
//! masks are not blanked) is saved as safetensors and run at a 256-pixel
//! input (any multiple of 32 works; the official models use 1024, MedSAM2
//! 512), which keeps the test quick. `clisc run` runs the weight-free
//! stages up to the prompts and `sam2` with `propagate = true`, and stops
//! after the pseudo-masks. For every training case:
//! * the pseudo-label in the raw grid has the raw FLAIR's shape and affine
//!   and is empty outside the brain;
//! * the pseudo-label on the stages' grid equals the plugin's own
//!   `segment_volume` on the same prepared case and prompts, restricted to
//!   the brain;
//! * and across the cases the masks reach slices that had no prompt (the
//!   propagation, not only the prompted slices).
//!
//! `clisc sam --plugin sam2 --propagate` on one raw FLAIR with a box on
//! one slice writes a mask on the input's grid that reaches other slices;
//! without `--propagate` the same plugin segments only that slice.

use clisc_pipeline::artefacts::{prompts_from_json, PromptSetRecord};
use clisc_pipeline::cases::Split;
use clisc_registry::Registry;
use clisc_sam2::config::Sam2Config;
use clisc_sam2::{Sam2, Sam2Plugin};
use clisc_sdk::config::Settings;
use clisc_sdk::{HostContext, LabelVolume, Plugin, StageObject};
use clisc_tests::{manifest, write_tiny_dataset};
use std::path::Path;
use std::process::Command;
use tch::{Device, Kind, Tensor};

const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");
const IMAGE_SIZE: i64 = 256;

/// A Hiera-tiny SAM 2.1 with seeded random weights, saved as safetensors.
fn write_random_sam2(path: &Path) {
    tch::manual_seed(11);
    let model = Sam2::new(
        &Sam2Config::official("hiera_t", IMAGE_SIZE).unwrap(),
        Device::Cpu,
    );
    tch::no_grad(|| {
        for (name, mut v) in model.vs.variables() {
            let size = v.size();
            let fan_in: i64 = size.iter().skip(1).product::<i64>().max(1);
            let random = Tensor::randn(&size, (Kind::Float, Device::Cpu));
            let value = if name.contains("norm") && name.ends_with("weight") {
                random * 0.1 + 1.0
            } else if size.len() == 1 {
                random * 0.02
            } else {
                random / (fan_in as f64).sqrt()
            };
            v.copy_(&value);
        }
        let mut bias = model.vs.variables()["sam_mask_decoder.pred_obj_score_head.layers.2.bias"]
            .shallow_clone();
        let _ = bias.fill_(2.0);
    });
    model.vs.save(path).unwrap();
}

fn write_pipeline(root: &Path) -> std::path::PathBuf {
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
plugin = "sam2"
settings = {{ weights = "weights/random-sam2.safetensors", propagate = true, image_size = {IMAGE_SIZE} }}
"#
    );
    let path = root.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn clisc(args: &[&str], root: &Path) -> String {
    let out = Command::new(CLI)
        .args(args)
        .current_dir(root)
        .output()
        .expect("running clisc");
    assert!(
        out.status.success(),
        "clisc {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Axial slices with at least one voxel set.
fn nonzero_slices(v: &LabelVolume) -> Vec<usize> {
    (0..v.grid.shape[2] as usize)
        .filter(|&z| v.axial_slice(z).data.iter().any(|&x| x != 0))
        .collect()
}

#[test]
fn sam2_propagates_pseudo_labels_in_a_pipeline_and_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tiny_dataset(&root.join("data"), 4, [32, 32, 12]);
    std::fs::create_dir_all(root.join("weights")).unwrap();
    let weights = root.join("weights/random-sam2.safetensors");
    write_random_sam2(&weights);

    let config = write_pipeline(root);
    clisc(&["run", "--config", config.to_str().unwrap()], root);
    let work = root.join("work");
    let m = manifest(&work);
    let step = &m["steps"]["pseudo-masks"];
    assert_eq!(step["status"], "done", "{m}");
    assert_eq!(
        step["plugins"][0],
        format!("promptable_segmenter=sam2@{}", Sam2Plugin::VERSION),
        "{m}"
    );

    // The plugin itself, on the cases as the stages saw them.
    let mut registry = Registry::builtin();
    let pipeline = clisc_pipeline::load(&config, &mut registry).expect("the pipeline loads");
    let cases = clisc_pipeline::prepare::prepare_cases(&pipeline).expect("the dataset prepares");
    let settings = Settings::parse(
        "sam2",
        &format!(
            "weights = {:?}\npropagate = true\nimage_size = {IMAGE_SIZE}",
            weights.display().to_string()
        ),
        &Sam2Plugin::settings(),
    )
    .unwrap();
    let ctx = HostContext::for_tests(root.join("plugin").to_str().unwrap(), 1);
    let Ok(StageObject::VolumePromptableSegmenter(mut segmenter)) =
        Sam2Plugin::create(settings, &ctx)
    else {
        panic!("propagate = true gives a volume promptable segmenter");
    };
    let (mut train_cases, mut unprompted_reached) = (0, 0);
    for (id, case) in &cases {
        if case.split != Split::Train {
            continue;
        }
        train_cases += 1;
        let records: Vec<PromptSetRecord> = serde_json::from_slice(
            &std::fs::read(work.join(format!("03-prompts/{id}.json"))).unwrap(),
        )
        .unwrap();
        let prompts = prompts_from_json(&records);
        let mut expected = segmenter
            .segment_volume(&case.input, &prompts)
            .into_result()
            .unwrap();
        for (v, &b) in expected
            .data
            .iter_mut()
            .zip(case.input.brain_mask.data.iter())
        {
            *v &= u8::from(b != 0);
        }
        let (written, _) =
            clisc_nifti::read_labels(&work.join(format!("04-pseudo-masks/{id}.nii.gz"))).unwrap();
        assert_eq!(
            written.data, expected.data,
            "{id}: pipeline and plugin differ"
        );
        let prompted: Vec<usize> = records.iter().map(|r| r.slice as usize).collect();
        unprompted_reached += nonzero_slices(&written)
            .iter()
            .filter(|z| !prompted.contains(z))
            .count();

        // The raw-grid pseudo-label overlays the raw FLAIR.
        let raw = clisc_nifti::read(&case.flair_path).unwrap();
        let (original, _) =
            clisc_nifti::read_labels(&work.join(format!("04-pseudo-masks/original/{id}.nii.gz")))
                .unwrap();
        assert_eq!(original.grid.shape, raw.grid.shape, "{id}");
        assert_eq!(original.grid.affine, raw.grid.affine, "{id}");
        for (&l, &f) in original.data.iter().zip(raw.data.iter()) {
            assert!(l == 0 || f != 0.0, "{id}: label outside the brain");
        }
    }
    assert!(train_cases >= 2, "{train_cases} training cases");
    assert!(
        unprompted_reached > 0,
        "no mask reached a slice without a prompt: nothing was propagated"
    );

    // `clisc sam`: one box on one slice of a raw FLAIR.
    let flair = root.join("data/BraTS20_Training_001/BraTS20_Training_001_flair.nii.gz");
    let common = [
        "sam",
        "--plugin",
        "sam2",
        "--weights",
        weights.to_str().unwrap(),
        "--set",
        "image_size=256",
        "--device",
        "cpu",
        "--image",
        flair.to_str().unwrap(),
        "--slice",
        "5",
        "--box",
        "6,6,18,18",
    ];
    let propagated = root.join("propagated.nii.gz");
    let mut args = common.to_vec();
    args.extend(["--propagate", "--out", propagated.to_str().unwrap()]);
    let stdout = clisc(&args, root);
    assert!(stdout.contains("voxels on"), "{stdout}");
    let raw = clisc_nifti::read(&flair).unwrap();
    let (mask, _) = clisc_nifti::read_labels(&propagated).unwrap();
    assert_eq!(mask.grid.shape, raw.grid.shape);
    assert_eq!(mask.grid.affine, raw.grid.affine);
    let reached = nonzero_slices(&mask);
    assert!(reached.len() >= 2 && reached.contains(&5), "{reached:?}");

    let single = root.join("single.nii.gz");
    let mut args = common.to_vec();
    args.extend(["--out", single.to_str().unwrap()]);
    clisc(&args, root);
    let (mask, _) = clisc_nifti::read_labels(&single).unwrap();
    assert_eq!(nonzero_slices(&mask), vec![5]);
}
