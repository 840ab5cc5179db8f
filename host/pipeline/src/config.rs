//! Pipeline files: parsing with positions, validation against each
//! plugin's settings schema, and the resolved form `clisc check` prints.
//!
//! A pipeline file names the run (output folder, device, seed), the
//! dataset, extra plugin libraries, and for each stage the plugin and its
//! settings:
//!
//! ```toml
//! [run]
//! output = "work/demo"
//! device = "auto"
//! seed = 7
//!
//! [dataset]
//! root = "data/demo"
//!
//! [stages.pseudo_labeler]
//! plugin = "flair-intensity"
//! settings = { k = 3.0 }
//! ```
//!
//! Relative paths (output, dataset, plugin paths and `path` settings) are
//! relative to the pipeline file. Every problem is reported with the file,
//! line and column. Weight files (see [`super::weights`]) and the dataset
//! folder must exist: a run never starts, and `clisc check` fails, while
//! one is missing; all missing ones are listed in the same error.

use super::weights::{describe, lexically_normal, weights_source, MissingWeights};
use clisc_registry::{Registry, RegistryError};
use clisc_sdk::config::{resolve, ProblemKind};
use clisc_sdk::{ConfigKind, StageKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A problem in a pipeline file, with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The pipeline file.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

/// All problems found in one pipeline file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// The stage slots of a CLISC pipeline, in execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageSlot {
    /// Slice pseudo-labels (CLIP or weight-free).
    PseudoLabeler,
    /// Classifier + CAM + ROIs.
    RoiExtractor,
    /// ROI -> prompts for the first pseudo-labels.
    PromptGenerator,
    /// Promptable segmenter (SAM or weight-free).
    PromptableSegmenter,
    /// The 3D network.
    VolumetricSegmenter,
    /// Prediction -> prompts for the self-learning filter's re-prompting.
    RepromptGenerator,
    /// Pseudo-label selection (S3F).
    Filter,
}

impl StageSlot {
    /// Every slot in execution order.
    pub const ALL: [StageSlot; 7] = [
        StageSlot::PseudoLabeler,
        StageSlot::RoiExtractor,
        StageSlot::PromptGenerator,
        StageSlot::PromptableSegmenter,
        StageSlot::VolumetricSegmenter,
        StageSlot::RepromptGenerator,
        StageSlot::Filter,
    ];
    /// The key under `[stages]`.
    pub fn key(self) -> &'static str {
        match self {
            StageSlot::PseudoLabeler => "pseudo_labeler",
            StageSlot::RoiExtractor => "roi_extractor",
            StageSlot::PromptGenerator => "prompt_generator",
            StageSlot::PromptableSegmenter => "promptable_segmenter",
            StageSlot::VolumetricSegmenter => "volumetric_segmenter",
            StageSlot::RepromptGenerator => "reprompt_generator",
            StageSlot::Filter => "filter",
        }
    }
    /// The plugin kind the slot needs.
    pub fn kind(self) -> StageKind {
        match self {
            StageSlot::PseudoLabeler => StageKind::PseudoLabeler,
            StageSlot::RoiExtractor => StageKind::RoiExtractor,
            StageSlot::PromptGenerator | StageSlot::RepromptGenerator => StageKind::PromptGenerator,
            StageSlot::PromptableSegmenter => StageKind::PromptableSegmenter,
            StageSlot::VolumetricSegmenter => StageKind::VolumetricSegmenter,
            StageSlot::Filter => StageKind::Filter,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    run: Spanned<RawRun>,
    dataset: Spanned<RawDataset>,
    #[serde(default)]
    plugins: Option<RawPlugins>,
    stages: Spanned<BTreeMap<Spanned<String>, Spanned<RawStage>>>,
    #[serde(default)]
    slurm: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    output: Spanned<String>,
    #[serde(default = "default_device")]
    device: Spanned<String>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    threads: Option<u32>,
}

fn default_device() -> Spanned<String> {
    Spanned::new(0..0, "auto".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugins {
    #[serde(default)]
    paths: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    plugin: Spanned<String>,
    #[serde(default)]
    settings: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    keep_largest_components: Option<Spanned<i64>>,
    #[serde(default)]
    model_selection: Option<Spanned<String>>,
    #[serde(default)]
    holdout_fraction: Option<Spanned<f64>>,
    #[serde(default)]
    retrain_on: Option<Spanned<String>>,
    #[serde(default)]
    targets: Option<Spanned<String>>,
}

/// What the volumetric segmenter learns from (`targets` in
/// `[stages.volumetric_segmenter]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkTargets {
    /// The promptable segmenter's pseudo-labels (CLISC, no human label).
    #[default]
    PseudoLabels,
    /// The training split's ground-truth labels: the supervised baseline
    /// the unsupervised result is compared with. The pseudo-labelling
    /// stages and the filter are skipped; the summary and the report flag
    /// the run as supervised.
    GroundTruth,
}

impl NetworkTargets {
    /// The TOML value.
    pub fn name(self) -> &'static str {
        match self {
            NetworkTargets::PseudoLabels => "pseudo-labels",
            NetworkTargets::GroundTruth => "ground-truth",
        }
    }

    /// Whether this is the default (unsupervised).
    pub(crate) fn is_default(&self) -> bool {
        *self == NetworkTargets::PseudoLabels
    }
}

/// What the final network learns from for the cases the filter keeps
/// (`retrain_on` in `[stages.filter]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetrainTargets {
    /// The first network's predictions, largest component (the reference code).
    #[default]
    Predictions,
    /// The promptable segmenter's masks re-prompted from those predictions.
    Reprompted,
}

impl RetrainTargets {
    /// The TOML value.
    pub fn name(self) -> &'static str {
        match self {
            RetrainTargets::Predictions => "predictions",
            RetrainTargets::Reprompted => "reprompted",
        }
    }

    /// Whether this is the default (the reference code's targets).
    pub(crate) fn is_default(&self) -> bool {
        *self == RetrainTargets::Predictions
    }
}

/// Which of a volumetric segmenter's checkpoints a run keeps
/// (`model_selection` in `[stages.volumetric_segmenter]`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelSelection {
    /// The last checkpoint (default): no case is held out, no label is used.
    #[default]
    Last,
    /// Without ground truth: `fraction` of each network's training cases
    /// (seeded) is held out of training and checkpoints are scored against
    /// their pseudo-labels.
    PseudoLabelHoldout {
        /// Fraction of the training cases held out (0 < f < 1).
        fraction: f64,
    },
    /// The paper's choice, which uses human labels: checkpoints are scored
    /// against the ground truth of the dataset's validation split.
    GroundTruthValidation,
}

impl ModelSelection {
    /// Spelling in pipeline files.
    pub const NAMES: [&'static str; 3] =
        ["last", "pseudo-label-holdout", "ground-truth-validation"];
    /// Default `holdout_fraction`.
    pub(crate) const DEFAULT_FRACTION: f64 = 0.2;

    /// The name used in pipeline files, summaries and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Last => Self::NAMES[0],
            Self::PseudoLabelHoldout { .. } => Self::NAMES[1],
            Self::GroundTruthValidation => Self::NAMES[2],
        }
    }

    /// Whether this is the default.
    pub fn is_last(&self) -> bool {
        *self == Self::Last
    }

    /// What it means, for reports.
    pub fn describe(&self) -> String {
        match self {
            Self::Last => "last checkpoint (no held-out cases, no labels)".into(),
            Self::PseudoLabelHoldout { fraction } => format!(
                "best Dice against the pseudo-labels of {:.0}% of the training cases, held out of training (no human labels)",
                fraction * 100.0
            ),
            Self::GroundTruthValidation => {
                "best Dice against the GROUND TRUTH of the validation split (uses human labels, as the paper)".into()
            }
        }
    }
}

/// Where and how a run happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSettings {
    /// Work folder for all artefacts.
    pub output: PathBuf,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Seed of everything random.
    pub seed: u64,
    /// Threads for libtorch and parallel loops.
    pub threads: u32,
}

/// The dataset section as written (interpreted by [`clisc_dataset`],
/// which rejects unknown keys; see [`parse`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawDataset {
    /// Dataset root folder.
    pub root: String,
    /// Layout and split settings, passed through to the dataset module.
    #[serde(flatten)]
    pub rest: toml::Table,
}

/// One resolved stage: plugin name, complete settings and the host's
/// options for its slot.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSpec {
    /// Plugin name.
    pub plugin: String,
    /// Settings with defaults filled in and paths made absolute.
    pub settings: toml::Table,
    /// What the host does around this stage, typed by its slot.
    pub host: HostOptions,
}

impl StageSpec {
    /// The host's options of this stage as a pipeline file writes them
    /// next to `plugin` (defaults left out): the one place that spells
    /// them, for the resolved pipeline ([`Pipeline::to_toml`]) and for the
    /// steps' fingerprints.
    pub(crate) fn host_options(&self) -> toml::Table {
        self.host.to_table()
    }
}

/// The host's options of a stage, next to `plugin` in its table: each
/// slot has its own (or none), so an option cannot be set on a stage it
/// does not apply to.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum HostOptions {
    /// The slot takes no host option.
    #[default]
    None,
    /// `[stages.promptable_segmenter]`.
    PromptableSegmenter {
        /// Post-processing of the stacked 3D pseudo-labels: keep only this
        /// many largest 3D components (all when `None`).
        keep_largest_components: Option<usize>,
    },
    /// `[stages.volumetric_segmenter]`.
    VolumetricSegmenter {
        /// Which checkpoint of the network to keep.
        model_selection: ModelSelection,
        /// What the network learns from.
        targets: NetworkTargets,
    },
    /// `[stages.filter]`.
    Filter {
        /// The final network's targets for the kept cases.
        retrain_on: RetrainTargets,
    },
}

impl HostOptions {
    /// `keep_largest_components` of a promptable segmenter (else `None`).
    pub fn keep_largest_components(&self) -> Option<usize> {
        match self {
            Self::PromptableSegmenter {
                keep_largest_components,
            } => *keep_largest_components,
            _ => None,
        }
    }

    /// `model_selection` of a volumetric segmenter (else the default).
    pub fn model_selection(&self) -> ModelSelection {
        match self {
            Self::VolumetricSegmenter {
                model_selection, ..
            } => *model_selection,
            _ => ModelSelection::default(),
        }
    }

    /// `targets` of a volumetric segmenter (else the default).
    pub fn targets(&self) -> NetworkTargets {
        match self {
            Self::VolumetricSegmenter { targets, .. } => *targets,
            _ => NetworkTargets::default(),
        }
    }

    /// `retrain_on` of a filter (else the default).
    pub(crate) fn retrain_on(&self) -> RetrainTargets {
        match self {
            Self::Filter { retrain_on } => *retrain_on,
            _ => RetrainTargets::default(),
        }
    }

    /// The options as a pipeline file writes them, defaults left out.
    fn to_table(self) -> toml::Table {
        let mut t = toml::Table::new();
        match self {
            Self::None => {}
            Self::PromptableSegmenter {
                keep_largest_components,
            } => {
                if let Some(n) = keep_largest_components {
                    t.insert("keep_largest_components".into(), (n as i64).into());
                }
            }
            Self::VolumetricSegmenter {
                model_selection,
                targets,
            } => {
                if !model_selection.is_last() {
                    t.insert("model_selection".into(), model_selection.name().into());
                }
                if let ModelSelection::PseudoLabelHoldout { fraction } = model_selection {
                    t.insert("holdout_fraction".into(), fraction.into());
                }
                if !targets.is_default() {
                    t.insert("targets".into(), targets.name().into());
                }
            }
            Self::Filter { retrain_on } => {
                if !retrain_on.is_default() {
                    t.insert("retrain_on".into(), retrain_on.name().into());
                }
            }
        }
        t
    }
}

/// A validated pipeline ([`Pipeline::to_toml`] writes it back).
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// The file it came from.
    pub source: PathBuf,
    /// Run settings.
    pub run: RunSettings,
    /// Dataset section (root made absolute).
    pub dataset: RawDataset,
    /// External plugin libraries or folders (absolute).
    pub plugin_paths: Vec<PathBuf>,
    /// Stages by slot.
    pub stages: BTreeMap<StageSlot, StageSpec>,
    /// The `[slurm]` section as written, when given. The pipeline does not
    /// read it: `clisc-cluster` validates it (with file positions) and
    /// turns it into jobs.
    pub slurm: Option<toml::Table>,
}

impl Pipeline {
    /// The stage in `slot`, if configured.
    pub fn stage(&self, slot: StageSlot) -> Option<&StageSpec> {
        self.stages.get(&slot)
    }

    /// The resolved pipeline as TOML (what `clisc check` prints).
    pub fn to_toml(&self) -> String {
        let mut doc = toml::Table::new();
        doc.insert(
            "run".into(),
            toml::Value::try_from(&self.run).expect("run serialises"),
        );
        doc.insert(
            "dataset".into(),
            toml::Value::try_from(&self.dataset).expect("dataset serialises"),
        );
        let paths: Vec<toml::Value> = self
            .plugin_paths
            .iter()
            .map(|p| toml::Value::from(p.display().to_string()))
            .collect();
        let mut plugins = toml::Table::new();
        plugins.insert("paths".into(), toml::Value::Array(paths));
        doc.insert("plugins".into(), toml::Value::Table(plugins));
        let mut stages = toml::Table::new();
        for (slot, spec) in &self.stages {
            let mut t = toml::Table::new();
            t.insert("plugin".into(), spec.plugin.clone().into());
            t.insert("settings".into(), toml::Value::Table(spec.settings.clone()));
            t.extend(spec.host_options());
            stages.insert(slot.key().into(), toml::Value::Table(t));
        }
        doc.insert("stages".into(), toml::Value::Table(stages));
        if let Some(slurm) = &self.slurm {
            doc.insert("slurm".into(), toml::Value::Table(slurm.clone()));
        }
        toml::to_string_pretty(&doc).expect("pipeline serialises")
    }
}

/// Maps byte offsets of a source text to line/column.
struct Positions<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Positions<'_> {
    fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, self.text, span, message)
    }
}

impl ConfigError {
    /// An error about the bytes `span` of pipeline `text` (read from
    /// `file`), located as 1-based line and column; 0:0 without a span.
    pub fn at(
        file: &Path,
        text: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = match span {
            Some(r) if r.end > 0 || r.start > 0 => {
                let before = &text[..r.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                (line, column)
            }
            _ => (0, 0),
        };
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Reads and validates a pipeline file against the plugins in `registry`
/// (external libraries named in the file are loaded into it first).
pub fn load(path: &Path, registry: &mut Registry) -> Result<Pipeline, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read pipeline file: {e}"),
        }])
    })?;
    parse(path, &text, registry)
}

/// Validates pipeline `text` (from `path`, used for messages and relative paths).
pub fn parse(path: &Path, text: &str, registry: &mut Registry) -> Result<Pipeline, ConfigErrors> {
    let pos = Positions { file: path, text };
    let raw: RawPipeline = toml::from_str(text)
        .map_err(|e| ConfigErrors(vec![pos.error(e.span(), e.message().trim().to_string())]))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let absolute = |p: &str| -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    let mut errors = Vec::new();

    let plugin_paths: Vec<PathBuf> = raw
        .plugins
        .map(|p| p.paths.iter().map(|s| absolute(s.get_ref())).collect())
        .unwrap_or_default();
    for lib in clisc_registry::loader::find_libraries(&plugin_paths).unwrap_or_default() {
        if let Err(e) = registry.load_library(&lib) {
            errors.push(pos.error(None, e.to_string()));
        }
    }

    let run_in = raw.run.get_ref();
    let device = run_in.device.get_ref().clone();
    if !is_device(&device) {
        errors.push(pos.error(
            Some(run_in.device.span()),
            format!("`device` must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", found {device:?}"),
        ));
    }
    let run = RunSettings {
        output: absolute(run_in.output.get_ref()),
        device,
        seed: run_in.seed,
        threads: run_in.threads.unwrap_or_else(default_threads),
    };
    let slurm = raw.slurm.clone();
    let mut dataset = raw.dataset.get_ref().clone();
    dataset.root = absolute(&dataset.root).display().to_string();
    if let Err(e) = clisc_dataset::DatasetLayout::from_table(&dataset.rest) {
        errors.push(pos.error(Some(raw.dataset.span()), format!("[dataset]: {e}")));
    }

    // Input files that do not exist are gathered and reported together,
    // after the other problems: every missing weight file, then the dataset.
    let mut missing: Vec<ConfigError> = Vec::new();
    let mut stages = BTreeMap::new();
    for (key, stage) in raw.stages.get_ref() {
        let Some(slot) = StageSlot::ALL
            .iter()
            .copied()
            .find(|s| s.key() == key.get_ref())
        else {
            let known: Vec<&str> = StageSlot::ALL.iter().map(|s| s.key()).collect();
            errors.push(pos.error(
                Some(key.span()),
                format!("unknown stage `{}` (stages: {known:?})", key.get_ref()),
            ));
            continue;
        };
        match resolve_stage(slot, stage, registry, &pos, &absolute) {
            Ok((spec, mut absent)) => {
                stages.insert(slot, spec);
                missing.append(&mut absent);
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    let present: Vec<&str> = raw
        .stages
        .get_ref()
        .keys()
        .map(|k| k.get_ref().as_str())
        .collect();
    // A pipeline may stop early (e.g. only pseudo-labels), but it may not
    // skip a stage in the middle: every stage needs the previous one. The
    // supervised baseline learns the ground truth, so its network needs no
    // stage before it (any that are given are not run).
    let supervised = stages
        .get(&StageSlot::VolumetricSegmenter)
        .is_some_and(|s| s.host.targets() == NetworkTargets::GroundTruth);
    let chain = [
        StageSlot::PseudoLabeler,
        StageSlot::RoiExtractor,
        StageSlot::PromptGenerator,
        StageSlot::PromptableSegmenter,
        StageSlot::VolumetricSegmenter,
    ];
    if let Some(last) = chain.iter().rposition(|s| present.contains(&s.key())) {
        let needed = if supervised {
            &chain[..0]
        } else {
            &chain[..last]
        };
        for slot in needed {
            if !present.contains(&slot.key()) {
                errors.push(pos.error(
                    Some(raw.stages.span()),
                    format!(
                        "missing stage `[stages.{}]` (a {} plugin): `[stages.{}]` needs it",
                        slot.key(),
                        slot.kind(),
                        chain[last].key()
                    ),
                ));
            }
        }
    } else {
        errors.push(pos.error(
            Some(raw.stages.span()),
            "no stage configured: give at least `[stages.pseudo_labeler]`",
        ));
    }
    if present.contains(&StageSlot::Filter.key())
        != present.contains(&StageSlot::RepromptGenerator.key())
    {
        errors.push(pos.error(
            Some(raw.stages.span()),
            "`[stages.filter]` and `[stages.reprompt_generator]` go together (the self-learning filter re-prompts the segmenter); give both or neither",
        ));
    }
    if !missing.is_empty() {
        let n = missing.len();
        errors.push(pos.error(
            None,
            format!(
                "{n} weight file{} missing, so the pipeline cannot start; download each one to the path shown (or point its setting at your copy):",
                if n == 1 { " is" } else { "s are" },
            ),
        ));
        missing.sort_by_key(|e| (e.line, e.column));
        errors.append(&mut missing);
    }
    if !Path::new(&dataset.root).is_dir() {
        errors.push(pos.error(
            Some(raw.dataset.span()),
            format!(
                "[dataset] root: dataset folder {} does not exist",
                lexically_normal(Path::new(&dataset.root)).display()
            ),
        ));
    }
    if errors.is_empty() {
        Ok(Pipeline {
            source: path.to_path_buf(),
            run,
            dataset,
            plugin_paths,
            stages,
            slurm,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

fn resolve_stage(
    slot: StageSlot,
    stage: &Spanned<RawStage>,
    registry: &Registry,
    pos: &Positions<'_>,
    absolute: &dyn Fn(&str) -> PathBuf,
) -> Result<(StageSpec, Vec<ConfigError>), Vec<ConfigError>> {
    let raw = stage.get_ref();
    let name = raw.plugin.get_ref();
    let plugin = registry
        .find(name, slot.kind())
        .map_err(|e| vec![pos.error(Some(raw.plugin.span()), e.to_string())])?;
    let schema = &plugin.descriptor.info.settings;
    let mut table = toml::Table::new();
    for (k, v) in &raw.settings {
        table.insert(k.get_ref().clone(), v.get_ref().clone());
    }
    let mut resolved = match resolve(schema, &table) {
        Ok(t) => t,
        Err(problems) => {
            return Err(problems
                .into_iter()
                .map(|p| {
                    let span = raw
                        .settings
                        .iter()
                        .find(|(k, _)| *k.get_ref() == p.key)
                        .map(|(k, v)| {
                            if p.kind == ProblemKind::Unknown {
                                k.span()
                            } else {
                                v.span()
                            }
                        })
                        .unwrap_or_else(|| raw.plugin.span());
                    pos.error(
                        Some(span),
                        format!("[stages.{}] {name}: {}", slot.key(), p.message),
                    )
                })
                .collect())
        }
    };
    let mut missing = Vec::new();
    for field in schema.iter().filter(|f| f.kind == ConfigKind::Path) {
        if let Some(toml::Value::String(s)) = resolved.get_mut(field.name.as_str()) {
            let path = absolute(s);
            *s = path.display().to_string();
            if let Some(download) = weights_source(field, &path).filter(|_| !path.exists()) {
                let span = raw
                    .settings
                    .iter()
                    .find(|(k, _)| k.get_ref() == field.name.as_str())
                    .map_or_else(|| raw.plugin.span(), |(_, v)| v.span());
                let m = MissingWeights {
                    setting: format!("[stages.{}] settings.{}", slot.key(), field.name),
                    plugin: name.clone(),
                    path,
                    download,
                };
                missing.push(pos.error(Some(span), describe(&m)));
            }
        }
    }
    let host = host_options(slot, raw, pos)?;
    Ok((
        StageSpec {
            plugin: name.clone(),
            settings: resolved,
            host,
        },
        missing,
    ))
}

/// The host options of a stage table, typed by its slot; an option given
/// to a slot it does not apply to is an error at its position.
fn host_options(
    slot: StageSlot,
    raw: &RawStage,
    pos: &Positions,
) -> Result<HostOptions, Vec<ConfigError>> {
    let keep_largest_components = keep_largest_components(slot, raw, pos)?;
    let model_selection = model_selection(slot, raw, pos)?;
    let retrain_on = retrain_on(slot, raw, pos)?;
    let targets = network_targets(slot, raw, pos)?;
    Ok(match slot {
        StageSlot::PromptableSegmenter => HostOptions::PromptableSegmenter {
            keep_largest_components,
        },
        StageSlot::VolumetricSegmenter => HostOptions::VolumetricSegmenter {
            model_selection,
            targets,
        },
        StageSlot::Filter => HostOptions::Filter { retrain_on },
        StageSlot::PseudoLabeler
        | StageSlot::RoiExtractor
        | StageSlot::PromptGenerator
        | StageSlot::RepromptGenerator => HostOptions::None,
    })
}

/// `keep_largest_components` of a stage table (`[stages.promptable_segmenter]` only).
fn keep_largest_components(
    slot: StageSlot,
    raw: &RawStage,
    pos: &Positions,
) -> Result<Option<usize>, Vec<ConfigError>> {
    match &raw.keep_largest_components {
        None => Ok(None),
        Some(v) if slot != StageSlot::PromptableSegmenter => Err(vec![pos.error(
            Some(v.span()),
            format!(
                "[stages.{}] `keep_largest_components` applies to `[stages.promptable_segmenter]` only (it post-processes the stacked pseudo-labels)",
                slot.key()
            ),
        )]),
        Some(v) if *v.get_ref() < 1 => Err(vec![pos.error(
            Some(v.span()),
            format!(
                "[stages.promptable_segmenter] `keep_largest_components` must be an integer >= 1 (leave it out to keep every component), found {}",
                v.get_ref()
            ),
        )]),
        Some(v) => Ok(Some(*v.get_ref() as usize)),
    }
}

/// `retrain_on` of a stage table (`[stages.filter]` only).
fn retrain_on(
    slot: StageSlot,
    raw: &RawStage,
    pos: &Positions,
) -> Result<RetrainTargets, Vec<ConfigError>> {
    let Some(v) = &raw.retrain_on else {
        return Ok(RetrainTargets::default());
    };
    let fail = |message: String| Err(vec![pos.error(Some(v.span()), message)]);
    if slot != StageSlot::Filter {
        return fail(format!(
            "[stages.{}] `retrain_on` applies to `[stages.filter]` only (it names the final network's targets)",
            slot.key()
        ));
    }
    match v.get_ref().as_str() {
        "predictions" => Ok(RetrainTargets::Predictions),
        "reprompted" => Ok(RetrainTargets::Reprompted),
        other => fail(format!(
            "[stages.filter] `retrain_on` must be \"predictions\" (the first network's, as the reference code) or \"reprompted\" (the promptable segmenter's re-prompted masks), found \"{other}\""
        )),
    }
}

/// `targets` of a stage table (`[stages.volumetric_segmenter]` only).
fn network_targets(
    slot: StageSlot,
    raw: &RawStage,
    pos: &Positions,
) -> Result<NetworkTargets, Vec<ConfigError>> {
    let Some(v) = &raw.targets else {
        return Ok(NetworkTargets::default());
    };
    let fail = |message: String| Err(vec![pos.error(Some(v.span()), message)]);
    if slot != StageSlot::VolumetricSegmenter {
        return fail(format!(
            "[stages.{}] `targets` applies to `[stages.volumetric_segmenter]` only (it names what the network learns from)",
            slot.key()
        ));
    }
    match v.get_ref().as_str() {
        "pseudo-labels" => Ok(NetworkTargets::PseudoLabels),
        "ground-truth" => Ok(NetworkTargets::GroundTruth),
        other => fail(format!(
            "[stages.volumetric_segmenter] `targets` must be \"pseudo-labels\" (CLISC, no human label) or \"ground-truth\" (the supervised baseline: the training split's labels), found \"{other}\""
        )),
    }
}

/// `model_selection` and `holdout_fraction` of a stage table.
fn model_selection(
    slot: StageSlot,
    raw: &RawStage,
    pos: &Positions,
) -> Result<ModelSelection, Vec<ConfigError>> {
    let here = |span: Range<usize>, message: String| Err(vec![pos.error(Some(span), message)]);
    let volumetric = StageSlot::VolumetricSegmenter;
    if slot != volumetric {
        let given = raw
            .model_selection
            .as_ref()
            .map(|v| (v.span(), "model_selection"))
            .or_else(|| {
                raw.holdout_fraction
                    .as_ref()
                    .map(|v| (v.span(), "holdout_fraction"))
            });
        if let Some((span, key)) = given {
            return here(
                span,
                format!(
                    "[stages.{}] `{key}` applies to `[stages.{}]` only (it chooses the network's checkpoint)",
                    slot.key(),
                    volumetric.key()
                ),
            );
        }
        return Ok(ModelSelection::Last);
    }
    let table = format!("[stages.{}]", volumetric.key());
    let mode = raw.model_selection.as_ref();
    let chosen = match mode.map(|m| m.get_ref().as_str()) {
        None | Some("last") => ModelSelection::Last,
        Some("pseudo-label-holdout") => ModelSelection::PseudoLabelHoldout {
            fraction: ModelSelection::DEFAULT_FRACTION,
        },
        Some("ground-truth-validation") => ModelSelection::GroundTruthValidation,
        Some(other) => {
            return here(
                mode.map(|m| m.span()).unwrap_or_default(),
                format!(
                    "{table} `model_selection` must be one of {}, found \"{other}\"",
                    ModelSelection::NAMES.map(|n| format!("\"{n}\"")).join(", ")
                ),
            )
        }
    };
    match (chosen, &raw.holdout_fraction) {
        (_, None) => Ok(chosen),
        (ModelSelection::PseudoLabelHoldout { .. }, Some(f)) => {
            let fraction = *f.get_ref();
            if fraction > 0.0 && fraction < 1.0 {
                Ok(ModelSelection::PseudoLabelHoldout { fraction })
            } else {
                here(
                    f.span(),
                    format!("{table} `holdout_fraction` must lie strictly between 0 and 1, found {fraction}"),
                )
            }
        }
        (_, Some(f)) => here(
            f.span(),
            format!(
                "{table} `holdout_fraction` applies only with `model_selection = \"pseudo-label-holdout\"` (here \"{}\")",
                chosen.name()
            ),
        ),
    }
}

fn is_device(s: &str) -> bool {
    matches!(s, "auto" | "cpu" | "cuda")
        || s.strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<u32>().is_ok())
}

fn default_threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Turns a registry error into a config error without position.
impl From<(PathBuf, RegistryError)> for ConfigErrors {
    fn from((file, e): (PathBuf, RegistryError)) -> Self {
        ConfigErrors(vec![ConfigError {
            file,
            line: 0,
            column: 0,
            message: e.to_string(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(dir: &Path, stages: &str) -> (PathBuf, String) {
        let text = format!(
            "[run]\noutput = \"work\"\n\n[dataset]\nroot = \"data\"\nmodalities = [\"flair\"]\n\n{stages}"
        );
        let path = dir.join("p.toml");
        std::fs::write(&path, &text).unwrap();
        (path, text)
    }

    #[test]
    fn every_missing_weight_file_is_reported_with_its_line_and_source() {
        let dir = tempfile::tempdir().unwrap();
        let (path, text) = pipeline(
            dir.path(),
            "[stages.pseudo_labeler]\nplugin = \"torchscript-pseudo-labeler\"\nsettings = { model = \"m/labeler.pt\" }\n\n\
             [stages.roi_extractor]\nplugin = \"cam\"\nsettings = { pretrained = \"w/resnet18-f37072fd.pth\", arch = \"resnet18\" }\n",
        );
        let errors = parse(&path, &text, &mut Registry::builtin()).unwrap_err();
        let lines: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[0].contains("2 weight files are missing"),
            "{}",
            lines[0]
        );
        // Declared by the plugin (SDK weights_file): its own hint.
        assert_eq!((errors.0[1].line, errors.0[1].column), (10, 22));
        assert!(lines[1].contains("[stages.pseudo_labeler] settings.model"));
        assert!(lines[1].contains(&format!("{}", dir.path().join("m/labeler.pt").display())));
        assert!(lines[1].contains("torch.jit.script"), "{}", lines[1]);
        // A plain optional path naming an official file: recognised by name.
        assert_eq!(errors.0[2].line, 14);
        assert!(lines[2].contains("[stages.roi_extractor] settings.pretrained"));
        assert!(lines[2].contains("https://download.pytorch.org/models/resnet18-f37072fd.pth"));
        // Then the dataset folder.
        assert!(lines[3].contains("dataset folder"), "{}", lines[3]);

        // With the files in place the same pipeline is valid.
        for f in ["m/labeler.pt", "w/resnet18-f37072fd.pth"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let ok = parse(&path, &text, &mut Registry::builtin()).unwrap();
        assert_eq!(ok.stages.len(), 2);
    }

    #[test]
    fn model_selection_is_parsed_validated_and_kept_in_the_resolved_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let net = "[stages.pseudo_labeler]\nplugin = \"flair-intensity\"\n\n[stages.roi_extractor]\nplugin = \"cam\"\n\n\
                   [stages.prompt_generator]\nplugin = \"box-points\"\n\n[stages.promptable_segmenter]\nplugin = \"classic-prompt\"\n\n\
                   [stages.volumetric_segmenter]\nplugin = \"unet3d\"\n";
        let parsed = |extra: &str| {
            let (path, text) = pipeline(dir.path(), &format!("{net}{extra}"));
            parse(&path, &text, &mut Registry::builtin())
        };
        let selection = |p: &Pipeline| {
            p.stage(StageSlot::VolumetricSegmenter)
                .unwrap()
                .host
                .model_selection()
        };
        let default = parsed("").unwrap();
        assert_eq!(selection(&default), ModelSelection::Last);
        assert!(!default.to_toml().contains("model_selection"));

        let holdout = parsed("model_selection = \"pseudo-label-holdout\"\n").unwrap();
        assert_eq!(
            selection(&holdout),
            ModelSelection::PseudoLabelHoldout { fraction: 0.2 }
        );
        let resolved = holdout.to_toml();
        assert!(resolved.contains("model_selection = \"pseudo-label-holdout\""));
        assert!(resolved.contains("holdout_fraction = 0.2"), "{resolved}");
        let holdout =
            parsed("model_selection = \"pseudo-label-holdout\"\nholdout_fraction = 0.3\n").unwrap();
        assert_eq!(
            selection(&holdout),
            ModelSelection::PseudoLabelHoldout { fraction: 0.3 }
        );
        // What the step fingerprints are built from: exactly the keys a
        // pipeline file writes (work folders made before the options were
        // typed per slot keep their fingerprints).
        let options = holdout
            .stage(StageSlot::VolumetricSegmenter)
            .unwrap()
            .host_options();
        let expected: toml::Table =
            toml::from_str("model_selection = \"pseudo-label-holdout\"\nholdout_fraction = 0.3")
                .unwrap();
        assert_eq!(options, expected);
        assert!(default
            .stage(StageSlot::VolumetricSegmenter)
            .unwrap()
            .host_options()
            .is_empty());
        let truth = parsed("model_selection = \"ground-truth-validation\"\n").unwrap();
        assert_eq!(selection(&truth), ModelSelection::GroundTruthValidation);
        assert!(truth.to_toml().contains("ground-truth-validation"));

        let e = parsed("model_selection = \"best\"\n").unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (22, 19), "{e}");
        assert!(
            e.0[0].message.contains("\"ground-truth-validation\""),
            "{e}"
        );
        let e = parsed("model_selection = \"pseudo-label-holdout\"\nholdout_fraction = 1.0\n")
            .unwrap_err();
        assert_eq!(e.0[0].line, 23, "{e}");
        assert!(e.0[0].message.contains("strictly between 0 and 1"), "{e}");
        let e = parsed("holdout_fraction = 0.1\n").unwrap_err();
        assert!(e.0[0].message.contains("only with `model_selection"), "{e}");

        let (path, text) = pipeline(
            dir.path(),
            "[stages.pseudo_labeler]\nplugin = \"flair-intensity\"\nmodel_selection = \"last\"\n",
        );
        let e = parse(&path, &text, &mut Registry::builtin()).unwrap_err();
        assert_eq!(e.0[0].line, 10, "{e}");
        assert!(e.0[0].message.contains("volumetric_segmenter"), "{e}");
    }

    #[test]
    fn retrain_on_belongs_to_the_filter_and_is_kept_in_the_resolved_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let filter = |extra: &str| {
            format!(
                "[stages.pseudo_labeler]\nplugin = \"flair-intensity\"\n[stages.roi_extractor]\nplugin = \"cam\"\n\
                 [stages.prompt_generator]\nplugin = \"box-points\"\n[stages.promptable_segmenter]\nplugin = \"classic-prompt\"\n\
                 [stages.volumetric_segmenter]\nplugin = \"unet3d\"\n[stages.reprompt_generator]\nplugin = \"box-points\"\n\
                 [stages.filter]\nplugin = \"s3f\"\n{extra}"
            )
        };
        let (path, text) = pipeline(dir.path(), &filter(""));
        let default = parse(&path, &text, &mut Registry::builtin()).unwrap();
        let spec = default.stage(StageSlot::Filter).unwrap();
        assert_eq!(spec.host.retrain_on(), RetrainTargets::Predictions);
        assert!(!default.to_toml().contains("retrain_on"));

        let (path, text) = pipeline(dir.path(), &filter("retrain_on = \"reprompted\"\n"));
        let ok = parse(&path, &text, &mut Registry::builtin()).unwrap();
        let spec = ok.stage(StageSlot::Filter).unwrap();
        assert_eq!(spec.host.retrain_on(), RetrainTargets::Reprompted);
        assert!(ok.to_toml().contains("retrain_on = \"reprompted\""));

        let (path, text) = pipeline(dir.path(), &filter("retrain_on = \"sam\"\n"));
        let e = parse(&path, &text, &mut Registry::builtin()).unwrap_err();
        let line = text
            .lines()
            .position(|l| l.starts_with("retrain_on"))
            .unwrap()
            + 1;
        assert_eq!((e.0[0].line, e.0[0].column), (line, 14), "{e}");
        assert!(e.0[0].message.contains("\"predictions\""), "{e}");
        assert!(e.0[0].message.contains("found \"sam\""), "{e}");

        let (path, text) = pipeline(
            dir.path(),
            "[stages.pseudo_labeler]\nplugin = \"flair-intensity\"\nretrain_on = \"reprompted\"\n",
        );
        let e = parse(&path, &text, &mut Registry::builtin()).unwrap_err();
        assert!(
            e.0[0].message.contains("[stages.pseudo_labeler]")
                && e.0[0].message.contains("[stages.filter]"),
            "{e}"
        );
    }

    #[test]
    fn ground_truth_targets_need_no_earlier_stage_and_belong_to_the_network() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let parsed = |stages: &str| {
            let (path, text) = pipeline(dir.path(), stages);
            parse(&path, &text, &mut Registry::builtin())
        };
        let net = "[stages.volumetric_segmenter]\nplugin = \"unet3d\"\n";
        // Without ground-truth targets the network needs the four stages
        // before it.
        let e = parsed(net).unwrap_err();
        assert!(
            e.to_string()
                .contains("missing stage `[stages.pseudo_labeler]`"),
            "{e}"
        );

        let ok = parsed(&format!("{net}targets = \"ground-truth\"\n")).unwrap();
        let spec = ok.stage(StageSlot::VolumetricSegmenter).unwrap();
        assert_eq!(spec.host.targets(), NetworkTargets::GroundTruth);
        assert!(ok.to_toml().contains("targets = \"ground-truth\""));
        let default = parsed(&format!("{net}targets = \"pseudo-labels\"\n")).unwrap_err();
        assert!(default.to_string().contains("missing stage"), "{default}");

        let e = parsed(&format!("{net}targets = \"truth\"\n")).unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (10, 11), "{e}");
        assert!(
            e.0[0].message.contains("\"ground-truth\"")
                && e.0[0].message.contains("found \"truth\""),
            "{e}"
        );
        let e = parsed(
            "[stages.pseudo_labeler]\nplugin = \"flair-intensity\"\ntargets = \"ground-truth\"\n",
        )
        .unwrap_err();
        assert!(
            e.0[0]
                .message
                .contains("applies to `[stages.volumetric_segmenter]` only"),
            "{e}"
        );
    }

    #[test]
    fn keep_largest_components_belongs_to_the_promptable_segmenter() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let chain = "[stages.pseudo_labeler]\nplugin = \"flair-intensity\"\n\n[stages.roi_extractor]\nplugin = \"cam\"\n\n\
                     [stages.prompt_generator]\nplugin = \"box-points\"\n\n[stages.promptable_segmenter]\nplugin = \"classic-prompt\"\n";
        let (path, text) = pipeline(dir.path(), &format!("{chain}keep_largest_components = 2\n"));
        let ok = parse(&path, &text, &mut Registry::builtin()).unwrap();
        let spec = ok.stage(StageSlot::PromptableSegmenter).unwrap();
        assert_eq!(spec.host.keep_largest_components(), Some(2));
        assert!(ok.to_toml().contains("keep_largest_components = 2"));
        assert_eq!(
            ok.stage(StageSlot::PseudoLabeler).unwrap().host,
            HostOptions::None
        );

        let (path, text) = pipeline(dir.path(), &format!("{chain}keep_largest_components = 0\n"));
        let e = parse(&path, &text, &mut Registry::builtin()).unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (19, 27), "{e}");
        assert!(e.0[0].message.contains("integer >= 1"), "{e}");

        let (path, text) = pipeline(
            dir.path(),
            "[stages.pseudo_labeler]\nplugin = \"flair-intensity\"\nkeep_largest_components = 1\n",
        );
        let e = parse(&path, &text, &mut Registry::builtin()).unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (10, 27), "{e}");
        assert!(
            e.0[0].message.contains("[stages.pseudo_labeler]")
                && e.0[0].message.contains("promptable_segmenter"),
            "{e}"
        );
    }

    #[test]
    fn absent_optional_weights_and_other_paths_are_not_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let (path, text) = pipeline(
            dir.path(),
            "[stages.pseudo_labeler]\nplugin = \"flair-intensity\"\n\n[stages.roi_extractor]\nplugin = \"cam\"\n",
        );
        parse(&path, &text, &mut Registry::builtin()).unwrap();
    }
}
