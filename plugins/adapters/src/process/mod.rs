//! Out-of-process plugins: any executable that speaks the `clisc-process`
//! protocol on stdin/stdout becomes a pipeline stage.
//!
//! One adapter plugin per stage kind (`process-pseudo-labeler`,
//! `process-roi-extractor`, `process-prompt-generator`,
//! `process-promptable-segmenter`, `process-volumetric-segmenter`,
//! `process-filter`), all with the same settings:
//!
//! * `command`: program and arguments, e.g. `["python3", "plugin.py"]`;
//! * `working_dir`: where the process runs (relative paths in `command`
//!   are resolved from there);
//! * `timeout_seconds`: the longest the plugin may stay silent while the
//!   host waits for its handshake or a reply (log and progress frames
//!   count as activity); on expiry the process is killed;
//! * `max_call_seconds`, `memory_limit_mb`: limits on every call,
//!   `train` included (its duration; the resident memory of the process
//!   and of the processes it started, its process group; 0 = none); a
//!   process over one is killed with its group and the call fails naming
//!   the limit;
//! * `retries`: how many times a call whose process was lost while it ran
//!   (crash, silence, broken limit) is tried again on a fresh process;
//!   only calls that need nothing from earlier calls are retried
//!   ([`client::RETRYABLE`]: `label_slices`, `prompts`, `segment`,
//!   `select`), never an exception the plugin reports;
//! * `settings`: the plugin's own settings, a TOML table validated against
//!   the schema the plugin announces (a problem names `settings.KEY`, which
//!   `clisc check` shows at its line and column).
//!
//! The process is started when the stage is created, reused for every
//! call and asked to shut down when the stage is dropped. A crash, an exit,
//! a timeout or a malformed reply is a [`PluginError`] that names the
//! adapter, the plugin, the command and the end of its stderr; the next
//! call starts a fresh process. The wire format is in [`protocol`], the
//! process management in [`client`].

pub mod client;
pub mod protocol;

use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RVec};
use client::{settings_to_json, CallLimits, PluginProcess, ProcessSpec};
use clisc_sdk::config::Settings;
use clisc_sdk::stage::{
    CaseInput, CheckpointChoice, Filter, FilterCandidate, FilterDecision, LabelledCase,
    PromptGenerator, PromptableSegmenter, PseudoLabeler, RoiExtractor, RoiResult, RoiRound,
    SliceImage, StageReport, TrainingCase, ValidationCase, VolumetricSegmenter,
};
use clisc_sdk::{
    BoxXyxy, CasePrompts, ConfigField, ConfigKind, Grid, HostContext, LabelVolume, Mask2d, Plugin,
    PluginError, PromptPoint, PromptSet, SliceLabel, SlicePseudoLabels, StageKind, StageObject,
    Volume,
};
use protocol::{Buffer, Frame};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The settings shared by every process adapter.
fn process_settings() -> Vec<ConfigField> {
    vec![
        ConfigField {
            name: "command".into(),
            kind: ConfigKind::StringList,
            default: ROption::RNone,
            optional: false,
            choices: RVec::new(),
            doc: "program and arguments of the plugin process, e.g. [\"python3\", \"plugin.py\"]".into(),
            weights_download: ROption::RNone,
        },
        ConfigField::optional_path("working_dir", "working directory of the process (default: the current one)"),
        ConfigField::float(
            "timeout_seconds",
            600.0,
            "longest silence allowed while waiting for the handshake or a reply; the process is then killed",
        ),
        ConfigField::float(
            "max_call_seconds",
            0.0,
            "longest any call (train included) may take, progress or not (0 = no limit); the process is then killed",
        ),
        ConfigField::integer(
            "memory_limit_mb",
            0,
            "largest resident memory of the process and those it started during a call, in MiB (0 = no limit); they are then killed",
        ),
        ConfigField::integer(
            "retries",
            0,
            "fresh attempts at a call whose process was lost while it ran (label_slices, prompts, segment and select only)",
        ),
        ConfigField::table(
            "settings",
            "the plugin's own settings, e.g. { k = 2.5 }, checked against the schema it announces (`clisc check` starts the process to do so)",
        ),
    ]
}

fn start(
    adapter: &'static str,
    kind: StageKind,
    settings: &Settings,
    ctx: &HostContext,
) -> Result<PluginProcess, PluginError> {
    let timeout = settings.f64("timeout_seconds")?;
    if !(timeout > 0.0 && timeout.is_finite()) {
        return Err(PluginError::config(format!(
            "{adapter}: `timeout_seconds` must be positive, found {timeout}"
        )));
    }
    let spec = ProcessSpec {
        adapter,
        kind: kind.as_str(),
        command: settings.str_list("command")?,
        working_dir: settings.path("working_dir")?,
        timeout: Duration::from_secs_f64(timeout),
        limits: call_limits(adapter, settings)?,
        settings: settings_to_json(&settings.table("settings")?),
    };
    PluginProcess::start(spec, ctx)
}

/// `max_call_seconds`, `memory_limit_mb` and `retries`, checked.
fn call_limits(adapter: &str, settings: &Settings) -> Result<CallLimits, PluginError> {
    let bad = |name: &str, value: String, expected: &str| {
        PluginError::config(format!(
            "{adapter}: `{name}` must be {expected}, found {value}"
        ))
        .about_setting(name)
    };
    let seconds = settings.f64("max_call_seconds")?;
    let max_call = if seconds == 0.0 {
        None
    } else {
        Some(Duration::try_from_secs_f64(seconds).map_err(|_| {
            bad(
                "max_call_seconds",
                seconds.to_string(),
                "0 (no limit) or a positive number of seconds",
            )
        })?)
    };
    let memory = settings.i64("memory_limit_mb")?;
    let memory_mb = match u64::try_from(memory) {
        Ok(0) => None,
        Ok(mb) if client::memory_is_observable() => Some(mb),
        Ok(_) => {
            return Err(bad(
                "memory_limit_mb",
                memory.to_string(),
                "0 here: this system has no /proc to watch a process's memory",
            ))
        }
        Err(_) => {
            return Err(bad(
                "memory_limit_mb",
                memory.to_string(),
                "0 (no limit) or positive",
            ))
        }
    };
    let retries = settings.i64("retries")?;
    let retries = u32::try_from(retries)
        .map_err(|_| bad("retries", retries.to_string(), "between 0 and 4294967295"))?;
    Ok(CallLimits {
        max_call,
        memory_mb,
        retries,
    })
}

macro_rules! process_plugin {
    ($plugin:ident, $name:literal, $kind:expr, $doc:literal, $stage:ident, $wrap:ident) => {
        #[doc = $doc]
        pub struct $plugin;

        impl Plugin for $plugin {
            const NAME: &'static str = $name;
            const KIND: StageKind = $kind;
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
            const DESCRIPTION: &'static str = $doc;
            fn settings() -> Vec<ConfigField> {
                process_settings()
            }
            fn create(settings: Settings, ctx: &HostContext) -> Result<StageObject, PluginError> {
                let process = start($name, $kind, &settings, ctx)?;
                Ok(StageObject::$wrap($stage {
                    process: std::sync::Mutex::new(process),
                }))
            }
        }

        /// The stage: a running plugin process (behind a lock because some
        /// SDK methods, like `save`, take `&self`).
        pub struct $stage {
            process: std::sync::Mutex<PluginProcess>,
        }

        impl $stage {
            fn lock(&self) -> std::sync::MutexGuard<'_, PluginProcess> {
                self.process
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            }
        }
    };
}

process_plugin!(
    ProcessLabelerPlugin,
    "process-pseudo-labeler",
    StageKind::PseudoLabeler,
    "Pseudo-labeler run by an external process speaking the clisc-process protocol (any language)",
    ProcessLabeler,
    pseudo_labeler
);
process_plugin!(
    ProcessRoiExtractorPlugin,
    "process-roi-extractor",
    StageKind::RoiExtractor,
    "ROI extractor run by an external process speaking the clisc-process protocol (any language)",
    ProcessRoiExtractor,
    roi_extractor
);
process_plugin!(
    ProcessPromptGeneratorPlugin,
    "process-prompt-generator",
    StageKind::PromptGenerator,
    "Prompt generator run by an external process speaking the clisc-process protocol (any language)",
    ProcessPromptGenerator,
    prompt_generator
);
process_plugin!(
    ProcessPromptablePlugin,
    "process-promptable-segmenter",
    StageKind::PromptableSegmenter,
    "Promptable 2D segmenter run by an external process speaking the clisc-process protocol (any language)",
    ProcessPromptable,
    promptable_segmenter
);
process_plugin!(
    ProcessVolumetricPlugin,
    "process-volumetric-segmenter",
    StageKind::VolumetricSegmenter,
    "Volumetric segmenter run by an external process speaking the clisc-process protocol (any language)",
    ProcessVolumetric,
    volumetric_segmenter
);
process_plugin!(
    ProcessFilterPlugin,
    "process-filter",
    StageKind::Filter,
    "Pseudo-label filter run by an external process speaking the clisc-process protocol (any language)",
    ProcessFilter,
    filter
);

// ---------------------------------------------------------------- encoding

fn volume_shape(grid: &Grid) -> Vec<usize> {
    let [nx, ny, nz] = grid.dims();
    vec![nz, ny, nx]
}

fn grid_json(grid: &Grid) -> Value {
    json!({"shape": grid.shape, "spacing": grid.spacing, "affine": grid.affine})
}

/// Adds a case (its channels and brain mask) under `prefix` and returns its header.
fn put_case(frame: &mut Frame, prefix: &str, case: &CaseInput) -> Value {
    let shape = volume_shape(&case.image.grid);
    let mut channels = Vec::new();
    for c in case.image.channels.iter() {
        frame.buffers.push(Buffer::f32(
            &format!("{prefix}image/{}", c.name),
            shape.clone(),
            &c.data,
        ));
        channels.push(c.name.to_string());
    }
    frame.buffers.push(Buffer::u8(
        &format!("{prefix}brain_mask"),
        shape,
        &case.brain_mask.data,
    ));
    json!({"id": case.id.as_str(), "grid": grid_json(&case.image.grid), "channels": channels})
}

fn put_labels(frame: &mut Frame, name: &str, labels: &LabelVolume) {
    frame
        .buffers
        .push(Buffer::u8(name, volume_shape(&labels.grid), &labels.data));
}

fn reply_err(p: &PluginProcess, what: String) -> PluginError {
    let name = p.hello().map(|h| h.name.as_str()).unwrap_or("?");
    PluginError::internal(format!("process plugin `{name}`: malformed result: {what}"))
}

/// The buffer `name` of `frame`, checked to hold `len` values.
fn take<'a>(
    p: &PluginProcess,
    frame: &'a Frame,
    name: &str,
    len: usize,
) -> Result<&'a Buffer, PluginError> {
    let b = frame
        .buffer(name)
        .ok_or_else(|| reply_err(p, format!("no buffer `{name}`")))?;
    if b.len() != len {
        return Err(reply_err(
            p,
            format!(
                "buffer `{name}` has {} values (shape {:?}), expected {len}",
                b.len(),
                b.shape
            ),
        ));
    }
    Ok(b)
}

fn get<'a>(p: &PluginProcess, v: &'a Value, key: &str) -> Result<&'a Value, PluginError> {
    v.get(key)
        .ok_or_else(|| reply_err(p, format!("missing `{key}`")))
}

fn num(p: &PluginProcess, v: &Value, key: &str) -> Result<f64, PluginError> {
    get(p, v, key)?
        .as_f64()
        .ok_or_else(|| reply_err(p, format!("`{key}` is not a number")))
}

fn header_array<'a>(
    p: &PluginProcess,
    frame: &'a Frame,
    key: &str,
) -> Result<&'a Vec<Value>, PluginError> {
    frame
        .header
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| reply_err(p, format!("no `{key}` array")))
}

/// The metrics of a training reply as a report. The protocol reports a
/// model-selection choice as the metrics `selected_step` and
/// `selected_validation_dice` (and, optionally, `last_validation_dice`
/// and `validation_evaluations`); they become [`StageReport::selection`].
fn metrics(p: &PluginProcess, frame: &Frame) -> Result<StageReport, PluginError> {
    let mut report = StageReport::default();
    let mut numbers = BTreeMap::new();
    if let Some(m) = frame.header.get("metrics") {
        let m = m
            .as_object()
            .ok_or_else(|| reply_err(p, "`metrics` is not an object".into()))?;
        for (k, v) in m {
            let v = v
                .as_f64()
                .ok_or_else(|| reply_err(p, format!("metric `{k}` is not a number")))?;
            numbers.insert(k.clone(), v);
        }
    }
    let step = numbers.remove("selected_step");
    let dice = numbers.remove("selected_validation_dice");
    let last = numbers.remove("last_validation_dice");
    let evaluations = numbers.remove("validation_evaluations");
    match (step, dice) {
        (Some(step), Some(dice)) if step >= 0.0 && step.fract() == 0.0 => {
            report.selection = ROption::RSome(CheckpointChoice {
                step: step as u64,
                validation_dice: dice,
                last_validation_dice: last.into(),
                evaluations: evaluations.map(|n| n as u32).into(),
            });
        }
        (None, None) => {}
        _ => {
            return Err(reply_err(
                p,
                "a model-selection choice needs both `selected_step` (a whole step number) and `selected_validation_dice`".into(),
            ))
        }
    }
    for (k, v) in numbers {
        report.push(&k, v);
    }
    Ok(report)
}

fn boxed_json(b: &ROption<BoxXyxy>) -> Value {
    match b {
        ROption::RSome(b) => json!([b.x0, b.y0, b.x1, b.y1]),
        ROption::RNone => Value::Null,
    }
}

fn points_json(points: &[PromptPoint]) -> Value {
    Value::Array(
        points
            .iter()
            .map(|q| json!([q.x, q.y, u8::from(q.positive)]))
            .collect(),
    )
}

fn parse_prompt_set(p: &PluginProcess, v: &Value) -> Result<PromptSet, PluginError> {
    let slice = num(p, v, "slice")? as u32;
    let bbox = match v.get("box") {
        None | Some(Value::Null) => ROption::RNone,
        Some(Value::Array(a)) if a.len() == 4 && a.iter().all(Value::is_number) => {
            let c: Vec<f32> = a.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect();
            ROption::RSome(BoxXyxy {
                x0: c[0],
                y0: c[1],
                x1: c[2],
                y1: c[3],
            })
        }
        Some(_) => {
            return Err(reply_err(
                p,
                "`box` must be [x0, y0, x1, y1] or null".into(),
            ))
        }
    };
    let mut points = RVec::new();
    for q in v
        .get("points")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let c = q
            .as_array()
            .filter(|a| a.len() == 3)
            .ok_or_else(|| reply_err(p, "a point must be [x, y, positive]".into()))?;
        let f = |i: usize| {
            c[i].as_f64()
                .ok_or_else(|| reply_err(p, "point coordinates must be numbers".into()))
        };
        points.push(PromptPoint {
            x: f(0)? as f32,
            y: f(1)? as f32,
            positive: f(2)? != 0.0,
        });
    }
    Ok(PromptSet {
        slice,
        bbox,
        points,
    })
}

// ---------------------------------------------------------------- stages

impl PseudoLabeler for ProcessLabeler {
    fn label_slices(&mut self, case: &CaseInput) -> RResult<SlicePseudoLabels, PluginError> {
        (|| {
            let mut frame = Frame::new("call", json!({}));
            let header = put_case(&mut frame, "", case);
            frame.header.insert("case".into(), header);
            let mut guard = self.lock();
            let reply = guard.call("label_slices", frame)?;
            let p = &*guard;
            let list = reply
                .header
                .get("slices")
                .and_then(Value::as_array)
                .ok_or_else(|| reply_err(p, "no `slices` array".into()))?;
            let nz = case.image.grid.shape[2] as usize;
            if list.len() != nz {
                return Err(reply_err(
                    p,
                    format!("{} slice labels for a volume of {nz} slices", list.len()),
                ));
            }
            let mut slices = RVec::new();
            for (z, s) in list.iter().enumerate() {
                let label = num(p, s, "label")?;
                let probability = num(p, s, "probability")? as f32;
                let kept = s.get("kept").and_then(Value::as_bool).unwrap_or(true);
                slices.push(SliceLabel {
                    index: z as u32,
                    label: u8::from(label != 0.0),
                    probability,
                    kept,
                });
            }
            Ok(SlicePseudoLabels { slices })
        })()
        .into()
    }
}

impl RoiExtractor for ProcessRoiExtractor {
    fn fit(&mut self, cases: RSlice<'_, LabelledCase>) -> RResult<StageReport, PluginError> {
        (|| {
            let mut frame = Frame::new("call", json!({}));
            let mut headers = Vec::new();
            for (i, c) in cases.iter().enumerate() {
                let mut h = put_case(&mut frame, &format!("case{i}/"), &c.case);
                h["labels"] = labels_json(&c.labels);
                headers.push(h);
            }
            frame.header.insert("cases".into(), Value::Array(headers));
            let mut guard = self.lock();
            let reply = guard.call("fit", frame)?;
            metrics(&guard, &reply)
        })()
        .into()
    }
    fn extract(
        &mut self,
        case: &CaseInput,
        labels: &SlicePseudoLabels,
    ) -> RResult<RoiResult, PluginError> {
        (|| {
            let mut frame = Frame::new("call", json!({}));
            let mut h = put_case(&mut frame, "", case);
            h["labels"] = labels_json(labels);
            frame.header.insert("case".into(), h);
            let mut guard = self.lock();
            let reply = guard.call("extract", frame)?;
            let p = &*guard;
            let grid = case.image.grid;
            let mut rounds = RVec::new();
            for (i, r) in header_array(p, &reply, "rounds")?.iter().enumerate() {
                let name = r
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("round")
                    .to_string();
                let cam = take(p, &reply, &format!("round{i}/cam"), grid.len())?.to_f32();
                let roi = take(p, &reply, &format!("round{i}/roi"), grid.len())?.to_u8();
                rounds.push(RoiRound {
                    name: name.into(),
                    cam: Volume::single(grid, "cam", cam),
                    roi: LabelVolume {
                        grid,
                        data: roi.into(),
                    },
                });
            }
            Ok(RoiResult { rounds })
        })()
        .into()
    }
}

fn labels_json(labels: &SlicePseudoLabels) -> Value {
    Value::Array(
        labels
            .slices
            .iter()
            .map(|s| json!({"index": s.index, "label": s.label, "probability": s.probability, "kept": s.kept}))
            .collect(),
    )
}

impl PromptGenerator for ProcessPromptGenerator {
    fn prompts(
        &mut self,
        case: &CaseInput,
        roi: &LabelVolume,
    ) -> RResult<CasePrompts, PluginError> {
        (|| {
            let mut frame = Frame::new("call", json!({}));
            let h = put_case(&mut frame, "", case);
            frame.header.insert("case".into(), h);
            put_labels(&mut frame, "roi", roi);
            let mut guard = self.lock();
            let reply = guard.call("prompts", frame)?;
            let p = &*guard;
            let mut sets = RVec::new();
            for s in header_array(p, &reply, "sets")? {
                sets.push(parse_prompt_set(p, s)?);
            }
            Ok(CasePrompts { sets })
        })()
        .into()
    }
}

impl PromptableSegmenter for ProcessPromptable {
    fn segment(
        &mut self,
        slice: &SliceImage,
        prompts: RSlice<'_, PromptSet>,
    ) -> RResult<RVec<Mask2d>, PluginError> {
        (|| {
            let img = &slice.image;
            let (w, h) = (img.width as usize, img.height as usize);
            let sets: Vec<Value> = prompts
                .iter()
                .map(|s| json!({"slice": s.slice, "box": boxed_json(&s.bbox), "points": points_json(&s.points)}))
                .collect();
            let frame = Frame::new("call", json!({"case_id": slice.case_id.as_str(), "index": slice.index, "prompts": sets}))
                .with(Buffer::f32("image", vec![h, w, img.channels as usize], &img.data));
            let mut guard = self.lock();
            let reply = guard.call("segment", frame)?;
            let masks = take(&guard, &reply, "masks", prompts.len() * w * h)?.to_u8();
            Ok(masks
                .chunks(w * h)
                .map(|m| Mask2d { width: img.width, height: img.height, data: m.iter().map(|&v| u8::from(v != 0)).collect() })
                .collect())
        })()
        .into()
    }
}

impl ProcessVolumetric {
    /// The `train` call: training cases under `case<i>/`, held-out cases
    /// (only when there are any, so older plugins see the same frame as
    /// before) under `valid<i>/` with the header key `validation`.
    fn train_on(
        &mut self,
        cases: &[TrainingCase],
        validation: &[ValidationCase],
    ) -> Result<StageReport, PluginError> {
        let mut frame = Frame::new("call", json!({}));
        let mut put = |key: &str, prefix: &str, labelled: Vec<(&CaseInput, &LabelVolume)>| {
            let mut headers = Vec::new();
            for (i, (case, target)) in labelled.into_iter().enumerate() {
                let prefix = format!("{prefix}{i}/");
                headers.push(put_case(&mut frame, &prefix, case));
                put_labels(&mut frame, &format!("{prefix}target"), target);
            }
            frame.header.insert(key.into(), Value::Array(headers));
        };
        put(
            "cases",
            "case",
            cases.iter().map(|c| (&c.case, &c.target)).collect(),
        );
        if !validation.is_empty() {
            let held_out = validation.iter().map(|c| (&c.case, &c.target)).collect();
            put("validation", "valid", held_out);
        }
        let mut guard = self.lock();
        let reply = guard.call("train", frame)?;
        metrics(&guard, &reply)
    }
}

impl VolumetricSegmenter for ProcessVolumetric {
    fn train(&mut self, cases: RSlice<'_, TrainingCase>) -> RResult<StageReport, PluginError> {
        self.train_on(cases.as_slice(), &[]).into()
    }
    fn train_with_validation(
        &mut self,
        cases: RSlice<'_, TrainingCase>,
        validation: RSlice<'_, ValidationCase>,
    ) -> RResult<StageReport, PluginError> {
        self.train_on(cases.as_slice(), validation.as_slice())
            .into()
    }
    fn predict(&mut self, case: &CaseInput) -> RResult<LabelVolume, PluginError> {
        (|| {
            let mut frame = Frame::new("call", json!({}));
            let h = put_case(&mut frame, "", case);
            frame.header.insert("case".into(), h);
            let mut guard = self.lock();
            let reply = guard.call("predict", frame)?;
            let grid = case.image.grid;
            let data = take(&guard, &reply, "labels", grid.len())?.to_u8();
            Ok(LabelVolume {
                grid,
                data: data.into_iter().map(|v| u8::from(v != 0)).collect(),
            })
        })()
        .into()
    }
    fn save(&self, path: RStr<'_>) -> RResult<(), PluginError> {
        self.lock()
            .call("save", Frame::new("call", json!({"path": path.as_str()})))
            .map(|_| ())
            .into()
    }
    fn load(&mut self, path: RStr<'_>) -> RResult<(), PluginError> {
        self.lock()
            .call("load", Frame::new("call", json!({"path": path.as_str()})))
            .map(|_| ())
            .into()
    }
}

impl Filter for ProcessFilter {
    fn select(
        &mut self,
        candidates: RSlice<'_, FilterCandidate>,
    ) -> RResult<RVec<FilterDecision>, PluginError> {
        (|| {
            let mut frame = Frame::new("call", json!({}));
            let mut headers = Vec::new();
            for (i, c) in candidates.iter().enumerate() {
                put_labels(
                    &mut frame,
                    &format!("candidate{i}/pseudo_label"),
                    &c.pseudo_label,
                );
                put_labels(&mut frame, &format!("candidate{i}/reference"), &c.reference);
                headers.push(
                    json!({"case_id": c.case_id.as_str(), "grid": grid_json(&c.pseudo_label.grid)}),
                );
            }
            frame
                .header
                .insert("candidates".into(), Value::Array(headers));
            let mut guard = self.lock();
            let reply = guard.call("select", frame)?;
            let p = &*guard;
            let list = header_array(p, &reply, "decisions")?;
            if list.len() != candidates.len() {
                return Err(reply_err(
                    p,
                    format!(
                        "{} decisions for {} candidates",
                        list.len(),
                        candidates.len()
                    ),
                ));
            }
            let mut out = RVec::new();
            for (c, d) in candidates.iter().zip(list) {
                let keep = get(p, d, "keep")?
                    .as_bool()
                    .ok_or_else(|| reply_err(p, "`keep` is not a boolean".into()))?;
                out.push(FilterDecision {
                    case_id: c.case_id.clone(),
                    score: num(p, d, "score")?,
                    keep,
                });
            }
            Ok(out)
        })()
        .into()
    }
}
