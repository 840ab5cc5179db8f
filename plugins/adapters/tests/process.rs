//! Out-of-process plugins through the `process-*` adapters: the shipped
//! Python example on a synthetic case, pure-Python plugins (no numpy) of
//! three more kinds, and crashing, hanging and garbage-speaking processes,
//! each of which must give a clear, quick error.
//!
//! Needs `$CLISC_PYTHON` (set by `scripts/env.sh`).

use abi_stable::std_types::{ROption, RResult, RVec};
use clisc_adapters::process::{
    ProcessFilterPlugin, ProcessLabelerPlugin, ProcessPromptablePlugin, ProcessVolumetricPlugin,
};
use clisc_sdk::plugin::descriptor;
use clisc_sdk::stage::{CaseInput, FilterCandidate, SliceImage, TrainingCase, ValidationCase};
use clisc_sdk::{
    BoxXyxy, Grid, HostContext, LabelVolume, Plugin, PluginError, PromptSet, StageObject, Volume,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn python() -> String {
    clisc_test_harness::python("it points at the cached Python environment")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn fixture(name: &str) -> String {
    repo()
        .join("plugins/adapters/tests/process")
        .join(name)
        .display()
        .to_string()
}

fn create<P: Plugin>(settings: &str) -> Result<StageObject, PluginError> {
    let dir = tempfile::tempdir().unwrap();
    let ctx = HostContext::for_tests(dir.path().to_str().unwrap(), 7);
    match (descriptor::<P>().create)(settings.into(), &ctx) {
        RResult::ROk(s) => Ok(s),
        RResult::RErr(e) => Err(e),
    }
}

fn command(parts: &[&str]) -> String {
    let quoted: Vec<String> = parts.iter().map(|p| format!("{p:?}")).collect();
    format!("command = [{}]", quoted.join(", "))
}

/// 16 x 12 x 8 volume, brain everywhere but the border, a bright 4x4 block
/// (value 4) on slices 3..=5 at x 5..=8, y 4..=7.
fn synthetic_case() -> (CaseInput, LabelVolume) {
    let grid = Grid::new([16, 12, 8], [1.0; 3]);
    let mut flair = vec![0f32; grid.len()];
    let mut brain = LabelVolume::zeros(grid);
    let mut tumour = LabelVolume::zeros(grid);
    for z in 0..8 {
        for y in 0..12 {
            for x in 0..16 {
                let i = grid.index(x, y, z);
                brain.data[i] = u8::from(x > 0 && y > 0 && x < 15 && y < 11);
                flair[i] = ((x * 7 + y * 3 + z) % 5) as f32 * 0.1;
                if (3..=5).contains(&z) && (5..=8).contains(&x) && (4..=7).contains(&y) {
                    flair[i] = 4.0;
                    tumour.data[i] = 1;
                }
            }
        }
    }
    let case = CaseInput {
        id: "synthetic_001".into(),
        image: Volume::single(grid, "flair", flair),
        brain_mask: brain,
    };
    (case, tumour)
}

#[test]
fn python_example_labels_the_bright_slices_and_is_reused_across_calls() {
    let script = repo().join("plugins/examples/python-labeler/plugin.py");
    let settings = format!(
        "{}\nsettings = {{ k = 2.0, min_fraction = 0.05 }}",
        command(&[&python(), script.to_str().unwrap()])
    );
    let Ok(StageObject::PseudoLabeler(mut stage)) = create::<ProcessLabelerPlugin>(&settings)
    else {
        panic!("could not start the python example")
    };
    let (case, _) = synthetic_case();
    let t = Instant::now();
    for _ in 0..3 {
        let labels = stage.label_slices(&case).unwrap();
        let positive: Vec<u32> = labels
            .slices
            .iter()
            .filter(|s| s.label == 1)
            .map(|s| s.index)
            .collect();
        assert_eq!(positive, vec![3, 4, 5]);
        assert!(labels.slices.iter().all(|s| s.kept));
    }
    // The same process answers every call (start-up happens once, in create).
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "3 calls took {:?}",
        t.elapsed()
    );
}

#[test]
fn plugin_settings_are_checked_against_the_announced_schema() {
    let script = repo().join("plugins/examples/python-labeler/plugin.py");
    let settings = format!(
        "{}\nsettings = {{ kk = 1 }}",
        command(&[&python(), script.to_str().unwrap()])
    );
    let err = create::<ProcessLabelerPlugin>(&settings)
        .err()
        .expect("unknown setting must be refused");
    assert!(err.message.contains("unknown setting `kk`"), "{err}");
    assert!(err.message.contains("python-labeler"), "{err}");
    // The host is told which setting, to show it in the pipeline file.
    assert_eq!(err.setting.as_str(), "settings.kk");
    // The old form, TOML text in a string, is refused by the schema.
    let old = format!(
        "{}\nsettings = \"k = 2.0\"",
        command(&[&python(), script.to_str().unwrap()])
    );
    let err = create::<ProcessLabelerPlugin>(&old)
        .err()
        .expect("a string is no table");
    assert!(
        err.message
            .contains("`settings` must be a table, found string"),
        "{err}"
    );
}

#[test]
fn pure_python_volumetric_segmenter_trains_predicts_saves_and_loads() {
    let settings = command(&[
        "env",
        "CLISC_PLUGIN_NUMPY=0",
        &python(),
        &fixture("pure_python.py"),
        "volumetric-segmenter",
    ]);
    let Ok(StageObject::VolumetricSegmenter(mut stage)) =
        create::<ProcessVolumetricPlugin>(&settings)
    else {
        panic!("could not start the pure-python volumetric plugin")
    };
    let (case, tumour) = synthetic_case();
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
    assert_eq!(report.metrics[0].name.as_str(), "threshold");
    assert!((report.metrics[0].value - 2.0).abs() < 1e-6);
    assert_eq!(report.metrics.len(), 1, "no held-out cases, no selection");
    // Held-out cases reach a plugin whose train takes `validation`.
    let held_out = [ValidationCase {
        case: case.clone(),
        target: tumour.clone(),
    }];
    let report = stage
        .train_with_validation(
            vec![TrainingCase {
                case: case.clone(),
                target: tumour.clone(),
            }]
            .as_slice()
            .into(),
            held_out.as_slice().into(),
        )
        .unwrap();
    let metric = |name: &str| {
        report
            .metrics
            .iter()
            .find(|m| m.name.as_str() == name)
            .map(|m| m.value)
    };
    assert_eq!(metric("validation_cases"), Some(1.0));
    // The protocol's `selected_step` / `selected_validation_dice` metrics
    // arrive as the report's typed checkpoint choice, not as metrics.
    let abi_stable::std_types::ROption::RSome(chosen) = report.selection else {
        panic!("no checkpoint choice in {report:?}");
    };
    assert_eq!((chosen.step, chosen.validation_dice), (1, 1.0));
    assert_eq!(metric("selected_step"), None);
    let predicted = stage.predict(&case).unwrap();
    assert_eq!(predicted, tumour);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.txt");
    stage.save(path.to_str().unwrap().into()).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "2.0");
}

#[test]
fn pure_python_promptable_segmenter_and_filter() {
    let settings = command(&[
        "env",
        "CLISC_PLUGIN_NUMPY=0",
        &python(),
        &fixture("pure_python.py"),
        "promptable-segmenter",
    ]);
    let Ok(StageObject::PromptableSegmenter(mut stage)) =
        create::<ProcessPromptablePlugin>(&settings)
    else {
        panic!("could not start the pure-python promptable plugin")
    };
    let (case, tumour) = synthetic_case();
    let image = case.image.axial_slice("flair", 4).unwrap();
    let slice = SliceImage {
        case_id: case.id.clone(),
        index: 4,
        image,
    };
    let prompt = PromptSet {
        slice: 4,
        bbox: ROption::RSome(BoxXyxy {
            x0: 3.0,
            y0: 3.0,
            x1: 10.0,
            y1: 9.0,
        }),
        points: RVec::new(),
    };
    let masks = stage
        .segment(&slice, vec![prompt.clone(), prompt].as_slice().into())
        .unwrap();
    assert_eq!(masks.len(), 2);
    assert_eq!(masks[0], tumour.axial_slice(4));

    let settings = command(&[
        "env",
        "CLISC_PLUGIN_NUMPY=0",
        &python(),
        &fixture("pure_python.py"),
        "filter",
    ]);
    let Ok(StageObject::Filter(mut filter)) = create::<ProcessFilterPlugin>(&settings) else {
        panic!("could not start the pure-python filter")
    };
    let empty = LabelVolume::zeros(tumour.grid);
    let candidates = vec![
        FilterCandidate {
            case_id: "a".into(),
            pseudo_label: tumour.clone(),
            reference: tumour.clone(),
        },
        FilterCandidate {
            case_id: "b".into(),
            pseudo_label: tumour.clone(),
            reference: empty,
        },
    ];
    let decisions = filter.select(candidates.as_slice().into()).unwrap();
    assert_eq!((decisions[0].keep, decisions[0].score), (true, 1.0));
    assert_eq!((decisions[1].keep, decisions[1].score), (false, 0.0));
    assert_eq!(decisions[1].case_id.as_str(), "b");
}

fn misbehaving(mode: &str, timeout: f64) -> Result<StageObject, PluginError> {
    let settings = format!(
        "{}\ntimeout_seconds = {timeout:?}",
        command(&[&python(), &fixture("misbehaving.py"), mode])
    );
    create::<ProcessLabelerPlugin>(&settings)
}

#[test]
fn a_crashing_process_is_a_clear_error_and_the_next_call_restarts_it() {
    let Ok(StageObject::PseudoLabeler(mut stage)) = misbehaving("crash", 20.0) else {
        panic!("handshake failed")
    };
    let (case, _) = synthetic_case();
    let err = stage.label_slices(&case).unwrap_err();
    let m = err.message.as_str();
    assert!(
        m.contains("process-pseudo-labeler `misbehaving-crash`"),
        "{m}"
    );
    assert!(m.contains("misbehaving.py"), "command missing: {m}");
    assert!(m.contains("crashed (exit status 3)"), "{m}");
    assert!(m.contains("label_slices"), "{m}");
    assert!(
        m.contains("segmentation model exploded"),
        "stderr tail missing: {m}"
    );
    // A fresh process is started for the next call (and crashes again).
    let again = stage.label_slices(&case).unwrap_err();
    assert!(again.message.contains("exit status 3"), "{again}");
}

/// Labels the synthetic case with a stage that must fail after 1 s (a
/// limit of one second): between 0.9 and 10 s.
fn fails_after_about_a_second(stage: &mut clisc_sdk::PseudoLabelerBox) -> PluginError {
    let (case, _) = synthetic_case();
    let t = Instant::now();
    let err = stage.label_slices(&case).unwrap_err();
    let elapsed = t.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    err
}

#[test]
fn a_hanging_process_is_killed_after_the_timeout() {
    let Ok(StageObject::PseudoLabeler(mut stage)) = misbehaving("hang", 1.0) else {
        panic!("handshake failed")
    };
    let err = fails_after_about_a_second(&mut stage);
    let m = err.message.as_str();
    assert!(m.contains("misbehaving-hang"), "{m}");
    assert!(m.contains("sent nothing for 1.0 s"), "{m}");
    assert!(m.contains("killed"), "{m}");
}

/// The `misbehaving.py` pseudo-labeler in `mode` (with `args`) and extra
/// adapter settings.
fn misbehaving_with(mode: &str, args: &[&str], extra: &str) -> StageObject {
    let fixture = fixture("misbehaving.py");
    let mut parts = vec![python(), fixture, mode.to_string()];
    parts.extend(args.iter().map(|a| a.to_string()));
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let settings = format!("{}\ntimeout_seconds = 20.0\n{extra}", command(&parts));
    create::<ProcessLabelerPlugin>(&settings).unwrap_or_else(|e| panic!("handshake failed: {e}"))
}

#[test]
fn a_call_over_its_time_limit_is_killed_although_it_reports_progress() {
    let StageObject::PseudoLabeler(mut stage) =
        misbehaving_with("busy", &[], "max_call_seconds = 1.0")
    else {
        panic!("wrong kind")
    };
    let err = fails_after_about_a_second(&mut stage);
    let m = err.message.as_str();
    assert!(
        m.contains("misbehaving-busy")
            && m.contains("took more than 1.0 s (max_call_seconds)")
            && m.contains("label_slices")
            && m.contains("killed"),
        "{m}"
    );
}

#[test]
fn a_process_over_its_memory_limit_is_killed_and_named() {
    // Started through a shell that stays the direct child: the limit
    // counts the plugin's whole process group.
    let script = format!("{:?} {:?} hog; true", python(), fixture("misbehaving.py"));
    let settings = format!(
        "{}\ntimeout_seconds = 20.0\nmemory_limit_mb = 300",
        command(&["sh", "-c", &script])
    );
    let Ok(StageObject::PseudoLabeler(mut stage)) = create::<ProcessLabelerPlugin>(&settings)
    else {
        panic!("handshake failed")
    };
    let (case, _) = synthetic_case();
    let t = Instant::now();
    let err = stage.label_slices(&case).unwrap_err();
    // 50 MiB every 0.1 s passes 300 MiB within about a second.
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let m = err.message.as_str();
    assert!(
        m.contains("misbehaving-hog")
            && m.contains("over memory_limit_mb = 300")
            && m.contains("killed"),
        "{m}"
    );
}

#[test]
fn a_crashed_call_is_tried_again_on_a_fresh_process_when_retries_allow() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed-once");
    let marker = marker.to_str().unwrap();
    let (case, _) = synthetic_case();
    // Without retries the first call fails and leaves the marker.
    let StageObject::PseudoLabeler(mut once) = misbehaving_with("flaky", &[marker], "") else {
        panic!("wrong kind")
    };
    let err = once.label_slices(&case).unwrap_err();
    assert!(err.message.contains("exit status 3"), "{err}");
    std::fs::remove_file(marker).unwrap();
    // With one retry the call succeeds on the second process.
    let StageObject::PseudoLabeler(mut retried) =
        misbehaving_with("flaky", &[marker], "retries = 1")
    else {
        panic!("wrong kind")
    };
    let labels = retried.label_slices(&case).unwrap();
    assert_eq!(labels.slices.len(), case.image.grid.shape[2] as usize);
    assert!(std::path::Path::new(marker).exists());
}

#[test]
fn an_exception_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let StageObject::PseudoLabeler(mut stage) =
        misbehaving_with("error", &[calls.to_str().unwrap()], "retries = 2")
    else {
        panic!("wrong kind")
    };
    let (case, _) = synthetic_case();
    let err = stage.label_slices(&case).unwrap_err();
    assert!(err.message.contains("RuntimeError"), "{err}");
    let attempts = std::fs::read_to_string(&calls).unwrap().lines().count();
    assert_eq!(attempts, 1);
}

#[test]
fn a_process_of_another_protocol_version_is_told_so() {
    let err = misbehaving("future", 20.0)
        .err()
        .expect("a version-2 handshake must be refused");
    let m = err.message.as_str();
    assert!(
        m.contains("speaks protocol \"clisc-process\" version 2; this side speaks \"clisc-process\" version 1"),
        "{m}"
    );
}

#[test]
fn a_result_of_the_wrong_shape_names_the_method_and_the_field() {
    let Ok(StageObject::PseudoLabeler(mut stage)) = misbehaving("mistyped", 20.0) else {
        panic!("handshake failed")
    };
    let (case, _) = synthetic_case();
    let err = stage.label_slices(&case).unwrap_err();
    let m = err.message.as_str();
    assert!(m.contains("process plugin `misbehaving-mistyped`"), "{m}");
    assert!(
        m.contains("the result of `label_slices` is malformed: slices[0].probability: invalid type: string \"high\", expected f32"),
        "{m}"
    );
}

#[test]
fn a_bad_progress_frame_is_skipped_not_fatal() {
    let Ok(StageObject::PseudoLabeler(mut stage)) = misbehaving("chatty", 20.0) else {
        panic!("handshake failed")
    };
    let (case, _) = synthetic_case();
    let labels = stage.label_slices(&case).unwrap();
    assert_eq!(labels.slices.len(), case.image.grid.shape[2] as usize);
}

#[test]
fn a_garbage_speaking_process_is_refused_at_the_handshake() {
    let t = Instant::now();
    let err = misbehaving("garbage", 20.0)
        .err()
        .expect("garbage must not pass the handshake");
    assert!(t.elapsed() < Duration::from_secs(10));
    let m = err.message.as_str();
    assert!(m.contains("process-pseudo-labeler"), "{m}");
    assert!(m.contains("misbehaving.py"), "{m}");
    assert!(m.contains("magic bytes"), "{m}");
    assert!(
        m.contains("hello from a p"),
        "the offending bytes should be shown: {m}"
    );
}

#[test]
fn an_exception_in_the_plugin_is_reported_and_the_process_keeps_serving() {
    let Ok(StageObject::PseudoLabeler(mut stage)) = misbehaving("error", 20.0) else {
        panic!("handshake failed")
    };
    let (case, _) = synthetic_case();
    for _ in 0..2 {
        let err = stage.label_slices(&case).unwrap_err();
        assert!(err.message.contains("misbehaving-error"), "{err}");
        assert!(
            err.message
                .contains("RuntimeError: label_slices is not implemented"),
            "{err}"
        );
        // The plugin's traceback (its last lines) comes with the message,
        // once.
        assert!(
            err.message.contains("Traceback (most recent call last)")
                || err.message.contains("misbehaving.py\", line"),
            "no traceback: {err}"
        );
        assert_eq!(
            err.message.matches("raise RuntimeError").count(),
            1,
            "{err}"
        );
        assert_eq!(
            err.message
                .matches("RuntimeError: label_slices is not implemented")
                .count(),
            1,
            "the message is repeated: {err}"
        );
    }
}

#[test]
fn a_missing_program_is_a_config_error() {
    let err = create::<ProcessLabelerPlugin>(&command(&["/nonexistent/clisc-plugin"]))
        .err()
        .unwrap();
    assert!(err.message.contains("cannot start command"), "{err}");
    assert!(err.message.contains("/nonexistent/clisc-plugin"), "{err}");
}
