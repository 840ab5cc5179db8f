//! Parity of the TorchScript promptable adapter's `embed-decode` encoding
//! with Meta's `SamPredictor`: `tests/torchscript/make_sam.py` builds a
//! random-weight Segment Anything with Meta's classes at SAM's full input
//! size (1024), exports it with the recipe users follow
//! (`docs/examples/sam_torchscript.py`) and records `SamPredictor`'s
//! single-mask output for box, box + points and points-only prompt sets
//! (1 to 9 points) on a 1024 x 768 grey image. The adapter, given the same
//! image and prompts, must return the same masks, pixel for pixel.
//!
//! Needs `$CLISC_PYTHON` (set by `scripts/env.sh`: torch, segment-anything).

use abi_stable::std_types::{ROption, RResult};
use clisc_adapters::torchscript::TorchScriptPromptablePlugin;
use clisc_sdk::plugin::descriptor;
use clisc_sdk::stage::SliceImage;
use clisc_sdk::{BoxXyxy, HostContext, Image2d, PromptPoint, PromptSet, StageObject};
use std::path::PathBuf;
use std::process::Command;

/// Runs `make_sam.py` into a temporary folder.
fn exported_sam() -> tempfile::TempDir {
    let python = std::env::var("CLISC_PYTHON").expect(
        "CLISC_PYTHON is not set: `source scripts/env.sh` first (torch and segment-anything)",
    );
    let dir = tempfile::tempdir().unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/torchscript/make_sam.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("run make_sam.py");
    assert!(
        out.status.success(),
        "make_sam.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// A prompt set of `expected.json`.
fn prompt_set(p: &serde_json::Value) -> PromptSet {
    let bbox = match p["box"].as_array() {
        Some(b) => {
            let v: Vec<f32> = b.iter().map(|x| x.as_f64().unwrap() as f32).collect();
            ROption::RSome(BoxXyxy {
                x0: v[0],
                y0: v[1],
                x1: v[2],
                y1: v[3],
            })
        }
        None => ROption::RNone,
    };
    let points = p["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| PromptPoint {
            x: q[0].as_f64().unwrap() as f32,
            y: q[1].as_f64().unwrap() as f32,
            positive: q[2].as_bool().unwrap(),
        })
        .collect::<Vec<_>>();
    PromptSet {
        slice: 0,
        bbox,
        points: points.into(),
    }
}

#[test]
fn embed_decode_export_of_meta_sam_matches_sam_predictor() {
    let dir = exported_sam();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json")).unwrap())
            .unwrap();
    let (width, height) = (
        expected["width"].as_u64().unwrap() as u32,
        expected["height"].as_u64().unwrap() as u32,
    );
    let grey: Vec<f32> = std::fs::read(dir.path().join("image.u8"))
        .unwrap()
        .into_iter()
        .map(f32::from)
        .collect();
    assert_eq!(grey.len(), (width * height) as usize);

    let settings = format!(
        "model = {:?}\ninput_size = 1024\nkeep_aspect = true\ninput_channels = 3\nnormalization = \"uint8\"\nprompt_encoding = \"embed-decode\"\noutput = \"logits\"\n",
        dir.path().join("sam.pt").display().to_string()
    );
    let work = tempfile::tempdir().unwrap();
    let ctx = HostContext::for_tests(work.path().to_str().unwrap(), 7);
    let stage = match (descriptor::<TorchScriptPromptablePlugin>().create)(
        settings.as_str().into(),
        &ctx,
    ) {
        RResult::ROk(s) => s,
        RResult::RErr(e) => panic!("{e}"),
    };
    let StageObject::PromptableSegmenter(mut segmenter) = stage else {
        panic!("not a promptable segmenter");
    };
    let prompts: Vec<PromptSet> = expected["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(prompt_set)
        .collect();
    let slice = SliceImage {
        case_id: "grey".into(),
        index: 0,
        image: Image2d {
            width,
            height,
            channels: 1,
            data: grey.into(),
        },
    };
    let masks = match segmenter.segment(&slice, prompts.as_slice().into()) {
        RResult::ROk(m) => m,
        RResult::RErr(e) => panic!("{e}"),
    };
    assert_eq!(masks.len(), prompts.len());
    for (i, (mask, p)) in masks
        .iter()
        .zip(expected["prompts"].as_array().unwrap())
        .enumerate()
    {
        let want: Vec<u8> = p["mask"]
            .as_str()
            .unwrap()
            .bytes()
            .map(|b| b - b'0')
            .collect();
        assert_eq!((mask.width, mask.height), (width, height));
        let foreground = want.iter().filter(|&&v| v == 1).count();
        assert!(
            foreground > 0,
            "prompt set {i}: SamPredictor's mask is empty"
        );
        let differing = mask.data.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing, 0,
            "prompt set {i}: {differing} of {} pixels differ from SamPredictor ({foreground} foreground)",
            want.len()
        );
    }
}
