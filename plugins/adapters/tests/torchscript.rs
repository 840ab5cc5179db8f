//! The TorchScript adapters on small models built by
//! `tests/torchscript/make_models.py` (scripted and traced in the test run,
//! into a temporary folder), on a synthetic case with a known tumour.
//!
//! Needs `$CLISC_PYTHON` (set by `scripts/env.sh`).

use abi_stable::std_types::{ROption, RResult, RVec};
use clisc_adapters::torchscript::{
    TorchScriptLabelerPlugin, TorchScriptPromptablePlugin, TorchScriptVolumetricPlugin,
};
use clisc_sdk::plugin::descriptor;
use clisc_sdk::stage::{CaseInput, SliceImage, TrainingCase};
use clisc_sdk::{
    BoxXyxy, Grid, HostContext, LabelVolume, Plugin, PluginError, PromptPoint, PromptSet,
    StageObject, Volume,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn models() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let python = std::env::var("CLISC_PYTHON")
            .expect("CLISC_PYTHON is not set: `source scripts/env.sh` first (it provides torch for the test models)");
        let dir = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/torchscript/make_models.py");
        let out = Command::new(python).arg(&script).arg(dir.path()).output().expect("run make_models.py");
        assert!(out.status.success(), "make_models.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
        dir
    })
    .path()
}

fn model(name: &str) -> String {
    models().join(name).display().to_string()
}

fn create<P: Plugin>(settings: &str) -> Result<StageObject, PluginError> {
    let dir = tempfile::tempdir().unwrap();
    let ctx = HostContext::for_tests(dir.path().to_str().unwrap(), 7);
    match (descriptor::<P>().create)(settings.into(), &ctx) {
        RResult::ROk(s) => Ok(s),
        RResult::RErr(e) => Err(e),
    }
}

/// 16 x 12 x 8 volume, a bright 4x4 block (value 4) on slices 3..=5 at
/// x 5..=8, y 4..=7; background below 0.5.
fn synthetic_case() -> (CaseInput, LabelVolume) {
    let grid = Grid::new([16, 12, 8], [1.0; 3]);
    let mut flair = vec![0f32; grid.len()];
    let mut tumour = LabelVolume::zeros(grid);
    let mut brain = LabelVolume::zeros(grid);
    for z in 0..8 {
        for y in 0..12 {
            for x in 0..16 {
                let i = grid.index(x, y, z);
                brain.data[i] = u8::from(z != 7);
                flair[i] = ((x * 7 + y * 3 + z) % 5) as f32 * 0.1;
                if (3..=5).contains(&z) && (5..=8).contains(&x) && (4..=7).contains(&y) {
                    flair[i] = 4.0;
                    tumour.data[i] = 1;
                }
            }
        }
    }
    (
        CaseInput {
            id: "synthetic_001".into(),
            image: Volume::single(grid, "flair", flair),
            brain_mask: brain,
        },
        tumour,
    )
}

#[test]
fn scripted_slice_classifier_labels_the_tumour_slices() {
    let settings = format!(
        "model = {:?}\nbatch_size = 3\nkeep_confidence = 0.85",
        model("labeler.pt")
    );
    let Ok(StageObject::PseudoLabeler(mut stage)) = create::<TorchScriptLabelerPlugin>(&settings)
    else {
        panic!("labeler did not start")
    };
    let (case, _) = synthetic_case();
    let labels = stage.label_slices(&case).unwrap();
    let positive: Vec<u32> = labels
        .slices
        .iter()
        .filter(|s| s.label == 1)
        .map(|s| s.index)
        .collect();
    assert_eq!(positive, vec![3, 4, 5]);
    // Slice 7 has no brain: never kept. The others are confident.
    let kept: Vec<u32> = labels
        .slices
        .iter()
        .filter(|s| s.kept)
        .map(|s| s.index)
        .collect();
    assert_eq!(kept, vec![0, 1, 2, 3, 4, 5, 6]);
    // Resizing to the model's input size keeps the decision.
    let settings = format!("model = {:?}\ninput_size = 24", model("labeler.pt"));
    let Ok(StageObject::PseudoLabeler(mut stage)) = create::<TorchScriptLabelerPlugin>(&settings)
    else {
        panic!()
    };
    let labels = stage.label_slices(&case).unwrap();
    assert_eq!(labels.slices.iter().filter(|s| s.label == 1).count(), 3);
}

#[test]
fn box_points_model_segments_from_a_box_or_from_points() {
    let settings = format!("model = {:?}", model("box_points.pt"));
    let Ok(StageObject::PromptableSegmenter(mut stage)) =
        create::<TorchScriptPromptablePlugin>(&settings)
    else {
        panic!("promptable did not start")
    };
    let (case, tumour) = synthetic_case();
    let slice = SliceImage {
        case_id: case.id.clone(),
        index: 4,
        image: case.image.axial_slice("flair", 4).unwrap(),
    };
    let boxed = PromptSet {
        slice: 4,
        bbox: ROption::RSome(BoxXyxy {
            x0: 3.0,
            y0: 2.0,
            x1: 11.0,
            y1: 9.0,
        }),
        points: RVec::new(),
    };
    let pointed = PromptSet {
        slice: 4,
        bbox: ROption::RNone,
        points: vec![
            PromptPoint {
                x: 6.5,
                y: 5.5,
                positive: true,
            },
            PromptPoint {
                x: 0.0,
                y: 0.0,
                positive: false,
            },
        ]
        .into(),
    };
    let outside = PromptSet {
        slice: 4,
        bbox: ROption::RSome(BoxXyxy {
            x0: 12.0,
            y0: 0.0,
            x1: 15.0,
            y1: 3.0,
        }),
        points: RVec::new(),
    };
    let masks = stage
        .segment(
            &slice,
            vec![boxed.clone(), pointed, outside].as_slice().into(),
        )
        .unwrap();
    let expected = tumour.axial_slice(4);
    assert_eq!(masks[0], expected);
    assert_eq!(masks[1], expected);
    assert_eq!(masks[2].data.iter().filter(|&&v| v != 0).count(), 0);

    // The same model behind a resized input (prompts are rescaled, masks resized back).
    let settings = format!("model = {:?}\ninput_size = 32", model("box_points.pt"));
    let Ok(StageObject::PromptableSegmenter(mut stage)) =
        create::<TorchScriptPromptablePlugin>(&settings)
    else {
        panic!()
    };
    let masks = stage
        .segment(&slice, vec![boxed].as_slice().into())
        .unwrap();
    let agree = masks[0]
        .data
        .iter()
        .zip(expected.data.iter())
        .filter(|(a, b)| a == b)
        .count();
    assert!(
        agree as f64 / expected.data.len() as f64 > 0.9,
        "resized mask agrees on {agree} pixels"
    );
}

#[test]
fn traced_prompt_channel_model_with_tuple_output_and_probabilities() {
    let settings = format!(
        "model = {:?}\nprompt_encoding = \"prompt-channels\"\noutput = \"probabilities\"",
        model("prompt_channels.pt")
    );
    let Ok(StageObject::PromptableSegmenter(mut stage)) =
        create::<TorchScriptPromptablePlugin>(&settings)
    else {
        panic!("promptable did not start")
    };
    let (case, tumour) = synthetic_case();
    let slice = SliceImage {
        case_id: case.id.clone(),
        index: 3,
        image: case.image.axial_slice("flair", 3).unwrap(),
    };
    let set = PromptSet {
        slice: 3,
        bbox: ROption::RSome(BoxXyxy {
            x0: 4.0,
            y0: 3.0,
            x1: 10.0,
            y1: 8.0,
        }),
        points: RVec::new(),
    };
    let masks = stage.segment(&slice, vec![set].as_slice().into()).unwrap();
    assert_eq!(masks[0], tumour.axial_slice(3));
}

#[test]
fn traced_volumetric_model_native_padded_and_resized() {
    let (case, tumour) = synthetic_case();
    // Native size, padded to multiples of 5 and cropped back: exact.
    let settings = format!("model = {:?}\npad_multiple = 5", model("volumetric.pt"));
    let Ok(StageObject::VolumetricSegmenter(mut stage)) =
        create::<TorchScriptVolumetricPlugin>(&settings)
    else {
        panic!("volumetric did not start")
    };
    let report = stage
        .train(
            vec![TrainingCase {
                case: case.clone(),
                target: tumour.clone(),
            }]
            .as_slice()
            .into(),
        )
        .unwrap();
    assert_eq!(report.metrics[0].value, 1.0);
    assert_eq!(stage.predict(&case).unwrap(), tumour);
    // Save and load round trip.
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.pt");
    stage.save(saved.to_str().unwrap().into()).unwrap();
    stage.load(saved.to_str().unwrap().into()).unwrap();
    assert_eq!(stage.predict(&case).unwrap(), tumour);
    // Resized to a fixed input shape and back: close to the truth.
    let settings = format!(
        "model = {:?}\ninput_shape = [16, 24, 32]\nthreshold = 0.5",
        model("volumetric.pt")
    );
    let Ok(StageObject::VolumetricSegmenter(mut stage)) =
        create::<TorchScriptVolumetricPlugin>(&settings)
    else {
        panic!()
    };
    let d = clisc_imaging::overlap::dice(&stage.predict(&case).unwrap().data, &tumour.data);
    assert!(d > 0.8, "dice after resizing {d}");
}

#[test]
fn contract_errors_name_the_plugin_model_and_expectation() {
    let missing = create::<TorchScriptLabelerPlugin>("model = \"/nonexistent/model.pt\"")
        .err()
        .unwrap();
    assert!(
        missing.message.contains("torchscript-pseudo-labeler"),
        "{missing}"
    );
    assert!(
        missing
            .message
            .contains("/nonexistent/model.pt does not exist"),
        "{missing}"
    );

    let not_torchscript = models().join("not_a_model.pt");
    std::fs::write(&not_torchscript, b"definitely not a zip archive").unwrap();
    let err = create::<TorchScriptLabelerPlugin>(&format!(
        "model = {:?}",
        not_torchscript.display().to_string()
    ))
    .err()
    .unwrap();
    assert!(
        err.message.contains("is not a loadable TorchScript file"),
        "{err}"
    );

    let err = create::<TorchScriptLabelerPlugin>(&format!(
        "model = {:?}\nnormalization = \"imagenet\"",
        model("labeler.pt")
    ))
    .err()
    .unwrap();
    assert!(err.message.contains("needs input_channels = 3"), "{err}");

    // A volumetric model used as a slice classifier returns the wrong shape.
    let Ok(StageObject::PseudoLabeler(mut stage)) =
        create::<TorchScriptLabelerPlugin>(&format!("model = {:?}", model("volumetric.pt")))
    else {
        panic!()
    };
    let (case, _) = synthetic_case();
    let err = stage.label_slices(&case).unwrap_err();
    assert!(err.message.contains("volumetric.pt"), "{err}");
    assert!(err.message.contains("failed on inputs of shapes"), "{err}");

    // A class index outside the model's output.
    let Ok(StageObject::PseudoLabeler(mut stage)) = create::<TorchScriptLabelerPlugin>(&format!(
        "model = {:?}\nclass_index = 5",
        model("labeler.pt")
    )) else {
        panic!()
    };
    let err = stage.label_slices(&case).unwrap_err();
    assert!(
        err.message
            .contains("class_index 5 is outside the model's 2 output channels"),
        "{err}"
    );
}
