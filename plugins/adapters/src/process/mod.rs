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
//!   ([`Call::is_stateless`]: `label_slices`, `prompts`, `segment`,
//!   `select`), never an exception the plugin reports;
//! * `settings`: the plugin's own settings, a TOML table validated against
//!   the schema the plugin announces (a problem names `settings.KEY`, which
//!   `clisc check` shows at its line and column).
//!
//! The process is started when the stage is created, reused for every
//! call and asked to shut down when the stage is dropped. A crash, an exit,
//! a timeout or a malformed reply is a [`PluginError`] that names the
//! adapter, the plugin, the command and the end of its stderr; the next
//! call starts a fresh process. The protocol (frames and typed messages)
//! is the crate `clisc-process-protocol`; the process management is in
//! `client`, and this module maps SDK data to protocol messages and back.

pub(crate) mod client;

use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RVec};
use client::{settings_to_json, CallLimits, PluginProcess, ProcessSpec, Reply};
use clisc_process_protocol::{
    Buffer, Call, CandidateHeader, CaseHeader, ExtractResult, GridHeader, MetricsResult,
    PointHeader, PromptSetHeader, PromptsResult, SelectResult, SliceLabelHeader, SliceLabelsResult,
};
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

/// The buffers of a request, gathered while its header is built.
#[derive(Default)]
struct Buffers(Vec<Buffer>);

impl Buffers {
    /// Adds a case's channels and brain mask under `prefix` and returns
    /// the case's header.
    fn case(&mut self, prefix: &str, case: &CaseInput) -> CaseHeader {
        let shape = volume_shape(&case.image.grid);
        let mut channels = Vec::new();
        for c in case.image.channels.iter() {
            let name = format!("{prefix}image/{}", c.name);
            self.0.push(Buffer::f32(&name, shape.clone(), &c.data));
            channels.push(c.name.to_string());
        }
        let mask = format!("{prefix}brain_mask");
        self.0.push(Buffer::u8(&mask, shape, &case.brain_mask.data));
        CaseHeader {
            id: case.id.to_string(),
            grid: grid_header(&case.image.grid),
            channels,
            labels: None,
        }
    }

    /// Adds a label volume as buffer `name`.
    fn labels(&mut self, name: &str, labels: &LabelVolume) {
        let shape = volume_shape(&labels.grid);
        self.0.push(Buffer::u8(name, shape, &labels.data));
    }
}

/// A volume's buffer shape, `[nz, ny, nx]` (the same bytes as clisc's
/// x-fastest volumes).
fn volume_shape(grid: &Grid) -> Vec<usize> {
    let [nx, ny, nz] = grid.dims();
    vec![nz, ny, nx]
}

fn grid_header(grid: &Grid) -> GridHeader {
    GridHeader {
        shape: grid.shape,
        spacing: grid.spacing,
        affine: grid.affine,
    }
}

fn label_headers(labels: &SlicePseudoLabels) -> Vec<SliceLabelHeader> {
    labels
        .slices
        .iter()
        .map(|s| SliceLabelHeader {
            index: s.index,
            label: s.label,
            probability: s.probability,
            kept: s.kept,
        })
        .collect()
}

fn prompt_header(set: &PromptSet) -> PromptSetHeader {
    PromptSetHeader {
        slice: set.slice,
        bbox: match &set.bbox {
            ROption::RSome(b) => Some([b.x0, b.y0, b.x1, b.y1]),
            ROption::RNone => None,
        },
        points: set
            .points
            .iter()
            .map(|q| PointHeader {
                x: q.x,
                y: q.y,
                positive: q.positive,
            })
            .collect(),
    }
}

fn prompt_set(header: PromptSetHeader) -> PromptSet {
    PromptSet {
        slice: header.slice,
        bbox: header
            .bbox
            .map(|[x0, y0, x1, y1]| BoxXyxy { x0, y0, x1, y1 })
            .into(),
        points: header
            .points
            .iter()
            .map(|q| PromptPoint {
                x: q.x,
                y: q.y,
                positive: q.positive,
            })
            .collect(),
    }
}

/// The metrics of a `fit` or `train` answer as a report; a model-selection
/// choice among them ([`MetricsResult::take_selection`]) becomes
/// [`StageReport::selection`].
fn metrics_report(reply: &Reply) -> Result<StageReport, PluginError> {
    let mut result: MetricsResult = reply.read()?;
    let selection = result.take_selection().map_err(|e| reply.invalid(e))?;
    let mut report = StageReport::default();
    if let Some(choice) = selection {
        report.selection = ROption::RSome(CheckpointChoice {
            step: choice.step,
            validation_dice: choice.validation_dice,
            last_validation_dice: choice.last_validation_dice.into(),
            evaluations: choice.evaluations.into(),
        });
    }
    for (k, v) in result.metrics {
        report.push(&k, v);
    }
    Ok(report)
}

// ---------------------------------------------------------------- stages

impl PseudoLabeler for ProcessLabeler {
    fn label_slices(&mut self, case: &CaseInput) -> RResult<SlicePseudoLabels, PluginError> {
        (|| {
            let mut buffers = Buffers::default();
            let call = Call::LabelSlices {
                case: buffers.case("", case),
            };
            let reply = self.lock().call(call, buffers.0)?;
            let SliceLabelsResult { slices: list } = reply.read()?;
            let nz = case.image.grid.shape[2] as usize;
            if list.len() != nz {
                return Err(reply.malformed(format!(
                    "{} slice labels for a volume of {nz} slices",
                    list.len()
                )));
            }
            let slices = list
                .iter()
                .enumerate()
                .map(|(z, s)| SliceLabel {
                    index: z as u32,
                    label: u8::from(s.label != 0.0),
                    probability: s.probability,
                    kept: s.kept.unwrap_or(true),
                })
                .collect();
            Ok(SlicePseudoLabels { slices })
        })()
        .into()
    }
}

impl RoiExtractor for ProcessRoiExtractor {
    fn fit(&mut self, cases: RSlice<'_, LabelledCase>) -> RResult<StageReport, PluginError> {
        (|| {
            let mut buffers = Buffers::default();
            let cases = cases
                .iter()
                .enumerate()
                .map(|(i, c)| CaseHeader {
                    labels: Some(label_headers(&c.labels)),
                    ..buffers.case(&format!("case{i}/"), &c.case)
                })
                .collect();
            let reply = self.lock().call(Call::Fit { cases }, buffers.0)?;
            metrics_report(&reply)
        })()
        .into()
    }
    fn extract(
        &mut self,
        case: &CaseInput,
        labels: &SlicePseudoLabels,
    ) -> RResult<RoiResult, PluginError> {
        (|| {
            let mut buffers = Buffers::default();
            let case_header = CaseHeader {
                labels: Some(label_headers(labels)),
                ..buffers.case("", case)
            };
            let call = Call::Extract { case: case_header };
            let reply = self.lock().call(call, buffers.0)?;
            let ExtractResult { rounds: headers } = reply.read()?;
            let grid = case.image.grid;
            let mut rounds = RVec::new();
            for (i, r) in headers.into_iter().enumerate() {
                let cam = reply.buffer(&format!("round{i}/cam"), grid.len())?.to_f32();
                let roi = reply.buffer(&format!("round{i}/roi"), grid.len())?.to_u8();
                rounds.push(RoiRound {
                    name: r.name.as_deref().unwrap_or("round").into(),
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

impl PromptGenerator for ProcessPromptGenerator {
    fn prompts(
        &mut self,
        case: &CaseInput,
        roi: &LabelVolume,
    ) -> RResult<CasePrompts, PluginError> {
        (|| {
            let mut buffers = Buffers::default();
            let call = Call::Prompts {
                case: buffers.case("", case),
            };
            buffers.labels("roi", roi);
            let reply = self.lock().call(call, buffers.0)?;
            let PromptsResult { sets } = reply.read()?;
            Ok(CasePrompts {
                sets: sets.into_iter().map(prompt_set).collect(),
            })
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
            let call = Call::Segment {
                case_id: slice.case_id.to_string(),
                index: slice.index,
                prompts: prompts.iter().map(prompt_header).collect(),
            };
            let shape = vec![h, w, img.channels as usize];
            let image = Buffer::f32("image", shape, &img.data);
            let reply = self.lock().call(call, vec![image])?;
            let masks = reply.buffer("masks", prompts.len() * w * h)?.to_u8();
            Ok(masks
                .chunks(w * h)
                .map(|m| Mask2d {
                    width: img.width,
                    height: img.height,
                    data: m.iter().map(|&v| u8::from(v != 0)).collect(),
                })
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
        let mut buffers = Buffers::default();
        let mut put = |prefix: &str, labelled: Vec<(&CaseInput, &LabelVolume)>| {
            let mut headers = Vec::new();
            for (i, (case, target)) in labelled.into_iter().enumerate() {
                let prefix = format!("{prefix}{i}/");
                headers.push(buffers.case(&prefix, case));
                buffers.labels(&format!("{prefix}target"), target);
            }
            headers
        };
        let cases = put("case", cases.iter().map(|c| (&c.case, &c.target)).collect());
        let validation = (!validation.is_empty()).then(|| {
            put(
                "valid",
                validation.iter().map(|c| (&c.case, &c.target)).collect(),
            )
        });
        let call = Call::Train { cases, validation };
        let reply = self.lock().call(call, buffers.0)?;
        metrics_report(&reply)
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
            let mut buffers = Buffers::default();
            let call = Call::Predict {
                case: buffers.case("", case),
            };
            let reply = self.lock().call(call, buffers.0)?;
            let grid = case.image.grid;
            let data = reply.buffer("labels", grid.len())?.to_u8();
            Ok(LabelVolume {
                grid,
                data: data.into_iter().map(|v| u8::from(v != 0)).collect(),
            })
        })()
        .into()
    }
    fn save(&self, path: RStr<'_>) -> RResult<(), PluginError> {
        let call = Call::Save {
            path: path.to_string(),
        };
        self.lock().call(call, Vec::new()).map(|_| ()).into()
    }
    fn load(&mut self, path: RStr<'_>) -> RResult<(), PluginError> {
        let call = Call::Load {
            path: path.to_string(),
        };
        self.lock().call(call, Vec::new()).map(|_| ()).into()
    }
}

impl Filter for ProcessFilter {
    fn select(
        &mut self,
        candidates: RSlice<'_, FilterCandidate>,
    ) -> RResult<RVec<FilterDecision>, PluginError> {
        (|| {
            let mut buffers = Buffers::default();
            let mut headers = Vec::new();
            for (i, c) in candidates.iter().enumerate() {
                buffers.labels(&format!("candidate{i}/pseudo_label"), &c.pseudo_label);
                buffers.labels(&format!("candidate{i}/reference"), &c.reference);
                headers.push(CandidateHeader {
                    case_id: c.case_id.to_string(),
                    grid: grid_header(&c.pseudo_label.grid),
                });
            }
            let call = Call::Select {
                candidates: headers,
            };
            let reply = self.lock().call(call, buffers.0)?;
            let SelectResult { decisions } = reply.read()?;
            if decisions.len() != candidates.len() {
                return Err(reply.malformed(format!(
                    "{} decisions for {} candidates",
                    decisions.len(),
                    candidates.len()
                )));
            }
            Ok(candidates
                .iter()
                .zip(decisions)
                .map(|(c, d)| FilterDecision {
                    case_id: c.case_id.clone(),
                    score: d.score,
                    keep: d.keep,
                })
                .collect())
        })()
        .into()
    }
}
