//! The typed messages of the protocol: what each frame's JSON header holds,
//! in which direction it travels and in which order.
//!
//! ```text
//! plugin -> host   hello                    (Hello, unprompted, first)
//! host -> plugin   configure                (HostMessage::Configure)
//! plugin -> host   ready | error
//! host -> plugin   call                     (HostMessage::Call, any number)
//! plugin -> host   log | progress ...       (any number, before the answer)
//! plugin -> host   result | error           (PluginMessage)
//! host -> plugin   shutdown
//! ```
//!
//! Headers are JSON objects with a `type` field; the binary buffers a
//! message needs (volumes, images, masks) travel beside it in the frame and
//! are named in the tables of `docs/plugins-process.md`. The handshake is
//! versioned: [`Hello::from_frame`] reads the protocol name and version
//! before anything else, so a plugin of another version is told so instead
//! of failing on a field it lays out differently.

use crate::frame::Frame;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Protocol name announced in the handshake.
pub const PROTOCOL: &str = "clisc-process";
/// Protocol version this crate speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// A header that does not hold the message its frame type promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The handshake names another protocol or version.
    #[error(
        "speaks protocol {} version {}; this side speaks {PROTOCOL:?} version {PROTOCOL_VERSION}",
        .protocol.as_ref().map_or("(none)".into(), |p| format!("{p:?}")),
        .version.map_or("(none)".into(), |v| v.to_string())
    )]
    Version {
        /// The protocol named, if any.
        protocol: Option<String>,
        /// The version named, if any.
        version: Option<u64>,
    },
    /// The frame is of another type than the one expected here.
    #[error("sent a frame of type {found:?} where {expected} was expected")]
    UnexpectedType {
        /// The frame's `type`.
        found: String,
        /// What was expected, e.g. `"result" or "error"`.
        expected: &'static str,
    },
    /// The header's fields do not match the message's type.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// The message, e.g. `the "hello" handshake` or `the result of label_slices`.
        what: String,
        /// What is wrong (serde's words: missing or mistyped field).
        reason: String,
    },
}

impl Frame {
    /// A frame whose header is `message` (a struct or an enum serialised
    /// with its `type` tag); add buffers with [`Frame::with`].
    pub fn from_message(message: &impl Serialize) -> Self {
        let header = match serde_json::to_value(message).expect("protocol messages serialise") {
            Value::Object(header) => header,
            other => panic!("a protocol message serialises to an object, not {other}"),
        };
        Self {
            header,
            buffers: Vec::new(),
        }
    }

    /// The header read as `T`; `what` names the message in the error,
    /// which names the field too (`plugin.version: invalid type: ...`).
    pub fn message<T: DeserializeOwned>(&self, what: &str) -> Result<T, MessageError> {
        read_as(Value::Object(self.header.clone()), what)
    }
}

/// Reads `value` as `T`; a problem names the message (`what`) and the
/// path of the field (`slices[2].probability: invalid type: ...`).
fn read_as<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, MessageError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let reason = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        };
        MessageError::Malformed {
            what: what.to_string(),
            reason,
        }
    })
}

/// A field that may be missing or null: both read as `T::default()`.
fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

// ------------------------------------------------------------- handshake

/// The plugin's first frame: who it is and the settings it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`PROTOCOL`].
    pub protocol: String,
    /// The version the plugin speaks; the host accepts [`PROTOCOL_VERSION`].
    pub protocol_version: u64,
    /// Name, stage kind, version and description.
    pub plugin: PluginInfo,
    /// The schema of the plugin's own settings.
    #[serde(default, deserialize_with = "null_as_default")]
    pub settings: Vec<SettingSpec>,
}

/// Who the plugin is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Plugin name (not empty).
    pub name: String,
    /// Stage kind, as the SDK names it (`pseudo-labeler`, ...).
    pub kind: String,
    /// Plugin version.
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    /// One-line description.
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: String,
}

/// One setting of the plugin's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingSpec {
    /// Key in the `settings` table.
    pub name: String,
    /// Value type (default `string`).
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub kind: SettingType,
    /// Default value; missing or null makes the setting required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// One-line description.
    #[serde(default, deserialize_with = "null_as_default")]
    pub doc: String,
    /// The allowed values of a string setting (empty: any).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub choices: Vec<String>,
}

/// The value types a plugin setting may have, by their names on the wire.
/// A name this version does not know is kept ([`SettingType::Unknown`]), so
/// the host can say which setting of the schema is unusable instead of
/// refusing the whole handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum SettingType {
    /// `float`: a number.
    Float,
    /// `integer`: a whole number.
    Integer,
    /// `bool`: `true` or `false`.
    Bool,
    /// `string`: text.
    #[default]
    String,
    /// `float_list`: a list of numbers.
    FloatList,
    /// `string_list`: a list of texts.
    StringList,
    /// Any other name.
    Unknown(String),
}

impl SettingType {
    /// The name on the wire.
    pub fn name(&self) -> &str {
        match self {
            SettingType::Float => "float",
            SettingType::Integer => "integer",
            SettingType::Bool => "bool",
            SettingType::String => "string",
            SettingType::FloatList => "float_list",
            SettingType::StringList => "string_list",
            SettingType::Unknown(name) => name,
        }
    }
}

impl From<String> for SettingType {
    fn from(name: String) -> Self {
        match name.as_str() {
            "float" => SettingType::Float,
            "integer" => SettingType::Integer,
            "bool" => SettingType::Bool,
            "string" => SettingType::String,
            "float_list" => SettingType::FloatList,
            "string_list" => SettingType::StringList,
            _ => SettingType::Unknown(name),
        }
    }
}

impl From<SettingType> for String {
    fn from(kind: SettingType) -> Self {
        kind.name().to_string()
    }
}

/// Only the fields every version of the handshake keeps.
#[derive(Deserialize)]
struct HandshakeVersion {
    protocol: Option<String>,
    protocol_version: Option<u64>,
}

impl Hello {
    /// A handshake of this protocol version.
    pub fn new(plugin: PluginInfo, settings: Vec<SettingSpec>) -> Self {
        Self {
            protocol: PROTOCOL.into(),
            protocol_version: PROTOCOL_VERSION,
            plugin,
            settings,
        }
    }

    /// Reads the handshake: the frame type, then the protocol name and
    /// version, then the rest (a plugin of another version gets
    /// [`MessageError::Version`], whatever else its handshake holds).
    pub fn from_frame(frame: &Frame) -> Result<Self, MessageError> {
        if frame.kind() != "hello" {
            return Err(MessageError::UnexpectedType {
                found: frame.kind().into(),
                expected: "the \"hello\" handshake",
            });
        }
        let what = "the \"hello\" handshake";
        let version: HandshakeVersion = frame.message(what)?;
        if version.protocol.as_deref() != Some(PROTOCOL)
            || version.protocol_version != Some(PROTOCOL_VERSION)
        {
            return Err(MessageError::Version {
                protocol: version.protocol,
                version: version.protocol_version,
            });
        }
        let hello: Hello = frame.message(what)?;
        if hello.plugin.name.is_empty() {
            return Err(MessageError::Malformed {
                what: what.into(),
                reason: "`plugin.name` is empty".into(),
            });
        }
        Ok(hello)
    }

    /// The frame that carries it (with its `type`).
    pub fn to_frame(&self) -> Frame {
        let mut frame = Frame::from_message(self);
        frame.header.insert("type".into(), "hello".into());
        frame
    }
}

// ------------------------------------------------------------- host -> plugin

/// Every frame the host sends after the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// The plugin's settings (resolved, defaults filled) and the run's context.
    Configure {
        /// Setting name -> value.
        settings: Map<String, Value>,
        /// Where and how the plugin runs.
        context: RunContext,
    },
    /// One method call; the plugin answers with `result` or `error`.
    Call(Call),
    /// The plugin should exit.
    Shutdown,
}

/// What the host tells a plugin about the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunContext {
    /// `cpu` or `cuda:N`, already resolved (never `auto`).
    pub device: String,
    /// Seed of the stage.
    pub seed: u64,
    /// CPU threads the plugin may use.
    pub threads: u32,
    /// A private folder for the plugin's files.
    pub work_dir: String,
}

/// A method call and its request fields; the buffers it needs are listed
/// per method in `docs/plugins-process.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Call {
    /// Pseudo-labeller: one label per slice ([`SliceLabelsResult`]).
    LabelSlices {
        /// The case; buffers `image/<channel>`, `brain_mask`.
        case: CaseHeader,
    },
    /// ROI extractor: train on labelled cases ([`MetricsResult`]).
    Fit {
        /// The cases, with `labels`; buffers under `case<i>/`.
        cases: Vec<CaseHeader>,
    },
    /// ROI extractor: activation maps and ROIs of a case ([`ExtractResult`]).
    Extract {
        /// The case, with `labels`.
        case: CaseHeader,
    },
    /// Prompt generator: prompts from a case and its ROI ([`PromptsResult`]).
    Prompts {
        /// The case; plus buffer `roi`.
        case: CaseHeader,
    },
    /// Promptable segmenter: one mask per prompt set (buffer `masks`).
    Segment {
        /// The case the slice comes from.
        case_id: String,
        /// The slice's index in the case.
        index: u32,
        /// The prompts; the image is buffer `image` `[h, w, c]`.
        prompts: Vec<PromptSetHeader>,
    },
    /// Volumetric segmenter: train ([`MetricsResult`]).
    Train {
        /// Training cases; buffers under `case<i>/`, with `target`.
        cases: Vec<CaseHeader>,
        /// Held-out cases for model selection (absent when there are
        /// none); buffers under `valid<i>/`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        validation: Option<Vec<CaseHeader>>,
    },
    /// Volumetric segmenter: a label volume (buffer `labels`).
    Predict {
        /// The case.
        case: CaseHeader,
    },
    /// Volumetric segmenter: write the trained model to `path`.
    Save {
        /// Where.
        path: String,
    },
    /// Volumetric segmenter: read a model written by `save`.
    Load {
        /// From where.
        path: String,
    },
    /// Filter: keep or drop each candidate ([`SelectResult`]).
    Select {
        /// The candidates; buffers `candidate<i>/pseudo_label`,
        /// `candidate<i>/reference`.
        candidates: Vec<CandidateHeader>,
    },
}

impl Call {
    /// The method's name on the wire.
    pub fn method(&self) -> &'static str {
        match self {
            Call::LabelSlices { .. } => "label_slices",
            Call::Fit { .. } => "fit",
            Call::Extract { .. } => "extract",
            Call::Prompts { .. } => "prompts",
            Call::Segment { .. } => "segment",
            Call::Train { .. } => "train",
            Call::Predict { .. } => "predict",
            Call::Save { .. } => "save",
            Call::Load { .. } => "load",
            Call::Select { .. } => "select",
        }
    }

    /// Whether the answer depends only on the request and the settings, so
    /// that a fresh process gives what a lost one would have. `fit`,
    /// `extract`, `train`, `predict`, `save` and `load` rely on what
    /// earlier calls left in the process.
    pub fn is_stateless(&self) -> bool {
        matches!(
            self,
            Call::LabelSlices { .. }
                | Call::Prompts { .. }
                | Call::Segment { .. }
                | Call::Select { .. }
        )
    }
}

/// A case in a request; its volumes are buffers `<prefix>image/<channel>`
/// (f32) and `<prefix>brain_mask` (u8), `[nz, ny, nx]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseHeader {
    /// Case identifier.
    pub id: String,
    /// The voxel grid.
    pub grid: GridHeader,
    /// Channel names, in buffer order.
    pub channels: Vec<String>,
    /// Slice labels (for `fit` and `extract`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<SliceLabelHeader>>,
}

/// A voxel grid: shape `[nx, ny, nz]`, spacing in mm, row-major affine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GridHeader {
    /// Voxels along x, y, z.
    pub shape: [u32; 3],
    /// Voxel size along x, y, z, in mm.
    pub spacing: [f64; 3],
    /// Voxel (i, j, k, 1) to world (x, y, z, 1).
    pub affine: [[f64; 4]; 4],
}

/// A slice's label as the host sends it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SliceLabelHeader {
    /// Slice index.
    pub index: u32,
    /// 1 = tumour, 0 = healthy.
    pub label: u8,
    /// Probability of the label.
    pub probability: f32,
    /// Whether the slice takes part (has brain).
    pub kept: bool,
}

/// Box and points on one slice, in pixel coordinates (`x` = column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSetHeader {
    /// Slice index.
    pub slice: u32,
    /// `[x0, y0, x1, y1]`, or none (`null` or absent).
    #[serde(rename = "box", default)]
    pub bbox: Option<[f32; 4]>,
    /// `[x, y, 1]` for a positive point, `[x, y, 0]` for a negative one.
    #[serde(default, deserialize_with = "null_as_default")]
    pub points: Vec<PointHeader>,
}

/// A prompt point, `[x, y, 1 or 0]` on the wire (any non-zero number is
/// positive when read).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointHeader {
    /// Column, in pixels.
    pub x: f32,
    /// Row, in pixels.
    pub y: f32,
    /// Inside the object (1) or outside (0).
    pub positive: bool,
}

impl Serialize for PointHeader {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.x, self.y, u8::from(self.positive)).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PointHeader {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (x, y, label) = <(f32, f32, f64)>::deserialize(deserializer)?;
        Ok(PointHeader {
            x,
            y,
            positive: label != 0.0,
        })
    }
}

/// A pseudo-label offered to a filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateHeader {
    /// Case identifier.
    pub case_id: String,
    /// The grid of both of its volumes.
    pub grid: GridHeader,
}

// ------------------------------------------------------------- plugin -> host

/// Every frame a plugin sends after its handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PluginMessage {
    /// `configure` was accepted.
    Ready,
    /// The answer to a call: its fields, read with [`ResultFields::read`]
    /// as the method's result type.
    Result(ResultFields),
    /// The call (or `configure`) failed; the plugin keeps serving.
    Error(ErrorReport),
    /// A line for the host's log.
    Log {
        /// The line.
        #[serde(default, deserialize_with = "null_as_default")]
        message: String,
    },
    /// Progress of a long call (each one counts as activity).
    Progress(ProgressReport),
}

/// The fields of a `result` frame, whose types depend on the method.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResultFields(pub Map<String, Value>);

impl ResultFields {
    /// The fields read as `T`, the result type of `method`; a problem
    /// names the field (`slices[2].probability: ...`).
    pub fn read<T: DeserializeOwned>(&self, method: &str) -> Result<T, MessageError> {
        read_as(
            Value::Object(self.0.clone()),
            &format!("the result of `{method}`"),
        )
    }
}

/// An `error` frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// What failed, in one line (`None`: the plugin sent none).
    #[serde(default)]
    pub message: Option<String>,
    /// More lines (a traceback), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// A `progress` frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressReport {
    /// The task (the method's name when absent).
    #[serde(default)]
    pub task: Option<String>,
    /// Units done.
    #[serde(default)]
    pub done: u64,
    /// Units in all (0: unknown).
    #[serde(default)]
    pub total: u64,
    /// A short note.
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: String,
}

/// The result of `label_slices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceLabelsResult {
    /// One entry per slice, in slice order.
    pub slices: Vec<SliceLabelEntry>,
}

/// One slice's label as a plugin sends it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SliceLabelEntry {
    /// Non-zero = tumour.
    pub label: f64,
    /// Probability of the label.
    pub probability: f32,
    /// Whether the slice takes part (absent or null: yes).
    #[serde(default)]
    pub kept: Option<bool>,
}

/// The result of `fit` and `train`. A model-selection choice is reported
/// as the metrics `selected_step` and `selected_validation_dice` (and,
/// optionally, `last_validation_dice` and `validation_evaluations`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetricsResult {
    /// Metric name -> value.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// A model-selection choice, as `train` reports it among its metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSelection {
    /// The training step whose weights were kept (metric `selected_step`).
    pub step: u64,
    /// Their Dice on the held-out cases (`selected_validation_dice`).
    pub validation_dice: f64,
    /// The last evaluation's Dice, when reported (`last_validation_dice`).
    pub last_validation_dice: Option<f64>,
    /// How many evaluations were made, when reported (`validation_evaluations`).
    pub evaluations: Option<u32>,
}

impl MetricsResult {
    /// Takes the model-selection metrics out of [`MetricsResult::metrics`]:
    /// none of `selected_step` and `selected_validation_dice` is no choice;
    /// both (a whole, non-negative step) are one; one without the other is
    /// an error.
    pub fn take_selection(&mut self) -> Result<Option<ModelSelection>, MessageError> {
        let step = self.metrics.remove("selected_step");
        let dice = self.metrics.remove("selected_validation_dice");
        let last = self.metrics.remove("last_validation_dice");
        let evaluations = self.metrics.remove("validation_evaluations");
        match (step, dice) {
            (Some(step), Some(dice)) if step >= 0.0 && step.fract() == 0.0 => {
                Ok(Some(ModelSelection {
                    step: step as u64,
                    validation_dice: dice,
                    last_validation_dice: last,
                    evaluations: evaluations.map(|n| n as u32),
                }))
            }
            (None, None) => Ok(None),
            _ => Err(MessageError::Malformed {
                what: "the model selection among the metrics".into(),
                reason: "it needs both `selected_step` (a whole step number) and `selected_validation_dice`".into(),
            }),
        }
    }
}

/// The result of `extract`: buffers `round<i>/cam` (f32) and
/// `round<i>/roi` (u8) per round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractResult {
    /// The rounds, in buffer order.
    pub rounds: Vec<RoundHeader>,
}

/// One round of ROI extraction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundHeader {
    /// Round name (absent or null: `round`).
    #[serde(default)]
    pub name: Option<String>,
}

/// The result of `prompts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptsResult {
    /// The prompt sets.
    pub sets: Vec<PromptSetHeader>,
}

/// The result of `select`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectResult {
    /// One decision per candidate, in order.
    pub decisions: Vec<Decision>,
}

/// A filter's decision on one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Consistency score.
    pub score: f64,
    /// Whether the candidate is kept.
    pub keep: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::read_frame;
    use serde_json::json;

    fn grid() -> GridHeader {
        GridHeader {
            shape: [2, 3, 4],
            spacing: [1.0, 1.0, 2.5],
            affine: [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 2.5, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        }
    }

    #[test]
    fn a_call_is_a_call_frame_with_its_method() {
        let call = HostMessage::Call(Call::Segment {
            case_id: "c1".into(),
            index: 3,
            prompts: vec![PromptSetHeader {
                slice: 3,
                bbox: Some([1.0, 2.0, 5.0, 6.0]),
                points: vec![PointHeader {
                    x: 3.0,
                    y: 4.0,
                    positive: true,
                }],
            }],
        });
        let frame = Frame::from_message(&call);
        assert_eq!(frame.kind(), "call");
        assert_eq!(
            Value::Object(frame.header.clone()),
            json!({"type": "call", "method": "segment", "case_id": "c1", "index": 3,
                   "prompts": [{"slice": 3, "box": [1.0, 2.0, 5.0, 6.0], "points": [[3.0, 4.0, 1]]}]})
        );
        let bytes = frame.encode();
        let back: HostMessage = read_frame(&mut bytes.as_slice())
            .unwrap()
            .message("a call")
            .unwrap();
        assert_eq!(back, call);
    }

    #[test]
    fn train_names_validation_only_when_there_is_some() {
        let case = CaseHeader {
            id: "a".into(),
            grid: grid(),
            channels: vec!["flair".into()],
            labels: None,
        };
        let train = |validation| {
            Frame::from_message(&HostMessage::Call(Call::Train {
                cases: vec![case.clone()],
                validation,
            }))
        };
        assert!(!train(None).header.contains_key("validation"));
        assert!(!train(None).header["cases"][0]
            .as_object()
            .unwrap()
            .contains_key("labels"));
        assert!(train(Some(vec![case.clone()]))
            .header
            .contains_key("validation"));
    }

    #[test]
    fn the_handshake_checks_the_version_before_the_rest() {
        let hello = Hello::new(
            PluginInfo {
                name: "p".into(),
                kind: "filter".into(),
                version: "1".into(),
                description: String::new(),
            },
            vec![],
        );
        assert_eq!(Hello::from_frame(&hello.to_frame()).unwrap(), hello);
        // A version-2 handshake whose `plugin` is laid out differently is
        // refused for its version, not for its layout.
        let v2 = Frame::new(
            "hello",
            json!({"protocol": "clisc-process", "protocol_version": 2, "plugin": "p"}),
        );
        let err = Hello::from_frame(&v2).unwrap_err();
        assert_eq!(
            err,
            MessageError::Version {
                protocol: Some(PROTOCOL.into()),
                version: Some(2)
            }
        );
        assert_eq!(
            err.to_string(),
            "speaks protocol \"clisc-process\" version 2; this side speaks \"clisc-process\" version 1"
        );
        let nameless = Frame::new(
            "hello",
            json!({"protocol": "clisc-process", "protocol_version": 1, "plugin": {"name": "", "kind": "filter"}}),
        );
        let err = Hello::from_frame(&nameless).unwrap_err().to_string();
        assert!(err.contains("`plugin.name` is empty"), "{err}");
        let wrong = Frame::new("ready", json!({}));
        let err = Hello::from_frame(&wrong).unwrap_err().to_string();
        assert!(err.contains("of type \"ready\""), "{err}");
    }

    #[test]
    fn handshake_fields_may_be_null_and_setting_types_unknown() {
        let frame = Frame::new(
            "hello",
            json!({"protocol": "clisc-process", "protocol_version": 1,
                   "plugin": {"name": "p", "kind": "filter", "description": null},
                   "settings": [{"name": "mode", "choices": ["a", "b"], "doc": null},
                                {"name": "k", "type": "complex"}]}),
        );
        let hello = Hello::from_frame(&frame).unwrap();
        assert_eq!(hello.plugin.description, "");
        assert_eq!(hello.settings[0].kind, SettingType::String);
        assert_eq!(hello.settings[0].default, None);
        assert_eq!(hello.settings[0].doc, "");
        // Kept by name: the host says which setting it cannot use.
        assert_eq!(
            hello.settings[1].kind,
            SettingType::Unknown("complex".into())
        );
        assert_eq!(hello.settings[1].kind.name(), "complex");
        // A mistyped field is named with its path.
        let frame = Frame::new(
            "hello",
            json!({"protocol": "clisc-process", "protocol_version": 1,
                   "plugin": {"name": "p", "kind": "filter", "version": 2}}),
        );
        let err = Hello::from_frame(&frame).unwrap_err().to_string();
        assert!(
            err.contains("plugin.version: invalid type: integer `2`, expected a string"),
            "{err}"
        );
    }

    #[test]
    fn replies_read_as_their_method_result() {
        let frame = Frame::new(
            "result",
            json!({"slices": [{"label": 1, "probability": 0.9}, {"label": 0, "probability": 1.0, "kept": false}]}),
        );
        let PluginMessage::Result(fields) = frame.message("a reply").unwrap() else {
            panic!("not a result")
        };
        let result: SliceLabelsResult = fields.read("label_slices").unwrap();
        assert_eq!(result.slices[0].label, 1.0);
        assert_eq!(result.slices[0].kept, None, "kept is optional");
        assert_eq!(result.slices[1].kept, Some(false));
        let err = fields
            .read::<SelectResult>("select")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the result of `select` is malformed: missing field `decisions`"),
            "{err}"
        );
        let progress: PluginMessage = Frame::new("progress", json!({"done": 2, "total": 5}))
            .message("a reply")
            .unwrap();
        assert_eq!(
            progress,
            PluginMessage::Progress(ProgressReport {
                task: None,
                done: 2,
                total: 5,
                message: String::new()
            })
        );
        let unknown = Frame::new("bogus", json!({})).message::<PluginMessage>("a reply");
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown variant `bogus`"));
    }

    #[test]
    fn a_model_selection_travels_as_two_metrics() {
        let mut result = MetricsResult {
            metrics: [
                ("loss", 0.5),
                ("selected_step", 300.0),
                ("selected_validation_dice", 0.8),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        };
        let choice = result.take_selection().unwrap().unwrap();
        assert_eq!((choice.step, choice.validation_dice), (300, 0.8));
        assert_eq!(result.metrics.keys().collect::<Vec<_>>(), ["loss"]);
        assert_eq!(result.take_selection(), Ok(None));
        result.metrics.insert("selected_step".into(), 2.5);
        result
            .metrics
            .insert("selected_validation_dice".into(), 0.8);
        assert!(result.take_selection().is_err(), "a fractional step");
        result.metrics.insert("selected_step".into(), 2.0);
        assert!(result.take_selection().is_err(), "a step without its Dice");
    }

    #[test]
    fn stateless_calls_are_the_retryable_ones() {
        let case = CaseHeader {
            id: "a".into(),
            grid: grid(),
            channels: vec![],
            labels: None,
        };
        assert!(Call::LabelSlices { case: case.clone() }.is_stateless());
        assert!(Call::Select { candidates: vec![] }.is_stateless());
        assert!(!Call::Predict { case }.is_stateless());
        assert!(!Call::Save { path: "m".into() }.is_stateless());
    }
}
