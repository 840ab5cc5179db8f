//! The optional `[slurm]` section of a pipeline file: how many shards the
//! per-case steps are split into, how jobs start (the `clisc` binary and
//! shell lines that prepare the environment), and the resources each job
//! asks for, with per-step overrides:
//!
//! ```toml
//! [slurm]
//! shards = 16                      # array tasks per per-case step
//! partition = "cpu"
//! cpus = 4                         # --cpus-per-task (default: [run] threads)
//! memory = "16G"                   # --mem
//! time = "02:00:00"                # --time
//! setup = ["source /shared/clisc/env.sh"]
//!
//! [slurm.steps.pseudo-masks]       # SAM: on GPUs
//! partition = "gpu"
//! gpus = 1
//!
//! [slurm.steps.network-1]
//! partition = "gpu"
//! gpus = 1
//! time = "12:00:00"
//! ```
//!
//! The section only describes resources: it is not part of any step's
//! fingerprint, so changing it never invalidates cached results.

use clisc_pipeline::config::{ConfigError, ConfigErrors};
use clisc_pipeline::Pipeline;
use clisc_workdir::Step;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Shards per per-case step when `[slurm] shards` is not given.
pub const DEFAULT_SHARDS: u32 = 4;

/// `[slurm]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlurm {
    shards: Option<Spanned<u32>>,
    clisc: Option<Spanned<String>>,
    #[serde(default)]
    setup: Vec<String>,
    partition: Option<Spanned<String>>,
    gpus: Option<u32>,
    cpus: Option<Spanned<u32>>,
    memory: Option<Spanned<String>>,
    time: Option<Spanned<String>>,
    #[serde(default)]
    extra: Vec<Spanned<String>>,
    #[serde(default)]
    steps: BTreeMap<Spanned<String>, Spanned<RawResources>>,
}

/// `[slurm.steps.<step>]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    partition: Option<Spanned<String>>,
    gpus: Option<u32>,
    cpus: Option<Spanned<u32>>,
    memory: Option<Spanned<String>>,
    time: Option<Spanned<String>>,
    #[serde(default)]
    extra: Vec<Spanned<String>>,
}

/// What one job asks Slurm for; `None` leaves the cluster's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// `--partition`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// GPUs per job (`--gres=gpu:N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// `--cpus-per-task`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// `--mem` (Slurm syntax: `16G`, `4000M`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// `--time` (Slurm syntax: `MM`, `HH:MM:SS`, `D-HH:MM`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Further `#SBATCH` options, verbatim (`--account=lab`, `--qos=long`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
}

impl Resources {
    /// `self` with every field that `over` sets replaced (extra options
    /// are appended).
    pub(crate) fn overridden_by(&self, over: &Resources) -> Resources {
        Resources {
            partition: over.partition.clone().or_else(|| self.partition.clone()),
            gpus: over.gpus.or(self.gpus),
            cpus: over.cpus.or(self.cpus),
            memory: over.memory.clone().or_else(|| self.memory.clone()),
            time: over.time.clone().or_else(|| self.time.clone()),
            extra: self.extra.iter().chain(&over.extra).cloned().collect(),
        }
    }
}

/// The validated `[slurm]` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlurmSettings {
    /// Array tasks per per-case step.
    pub shards: u32,
    /// The `clisc` binary jobs run (absolute); `None`: the one submitting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clisc: Option<PathBuf>,
    /// Shell lines run before `clisc` in every job (modules, libtorch
    /// environment).
    pub setup: Vec<String>,
    /// Resources of every job.
    #[serde(flatten)]
    pub defaults: Resources,
    /// Per-step overrides.
    pub steps: BTreeMap<Step, Resources>,
}

impl SlurmSettings {
    /// The resources of `step`'s jobs.
    pub fn resources(&self, step: Step) -> Resources {
        match self.steps.get(&step) {
            Some(over) => self.defaults.overridden_by(over),
            None => self.defaults.clone(),
        }
    }
}

/// Steps that run as jobs and so may have resources of their own.
fn job_steps() -> impl Iterator<Item = Step> {
    Step::ALL.into_iter().filter(|s| *s != Step::Report)
}

/// Reads and validates the `[slurm]` section of `pipeline` (`None` when
/// the file has none). The pipeline keeps the section as an opaque table;
/// this reads it again from the pipeline file so that every problem names
/// the file, line and column. Relative `clisc` paths are resolved against
/// the pipeline file's folder.
pub fn from_pipeline(pipeline: &Pipeline) -> Result<Option<SlurmSettings>, ConfigErrors> {
    if pipeline.slurm.is_none() {
        return Ok(None);
    }
    let file = &pipeline.source;
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigErrors(vec![ConfigError::at(
            file,
            "",
            None,
            format!("cannot read pipeline file: {e}"),
        )])
    })?;
    /// The one section of the file read here; the others are the pipeline's.
    #[derive(Deserialize)]
    struct SlurmSection {
        slurm: Option<RawSlurm>,
    }
    let section: SlurmSection = toml::from_str(&text).map_err(|e| {
        ConfigErrors(vec![ConfigError::at(
            file,
            &text,
            e.span(),
            e.message().trim().to_string(),
        )])
    })?;
    let Some(raw) = section.slurm else {
        return Ok(None);
    };
    let base = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    resolve(&raw, base).map(Some).map_err(|problems| {
        ConfigErrors(
            problems
                .into_iter()
                .map(|(span, m)| ConfigError::at(file, &text, Some(span), m))
                .collect(),
        )
    })
}

/// Validates `[slurm]`: returns the settings, or every problem with the
/// byte range it refers to. Relative `clisc` paths are resolved against
/// `base` (the pipeline file's folder).
fn resolve(raw: &RawSlurm, base: &Path) -> Result<SlurmSettings, Vec<(Range<usize>, String)>> {
    let mut errors = Vec::new();
    let shards = match &raw.shards {
        Some(s) if *s.get_ref() == 0 => {
            errors.push((s.span(), "[slurm] shards: must be at least 1".to_string()));
            1
        }
        Some(s) => *s.get_ref(),
        None => DEFAULT_SHARDS,
    };
    let clisc = raw.clisc.as_ref().map(|p| {
        let p = PathBuf::from(p.get_ref());
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    });
    let defaults = check_resources(
        "[slurm]",
        &RawResources {
            partition: raw.partition.clone(),
            gpus: raw.gpus,
            cpus: raw.cpus.clone(),
            memory: raw.memory.clone(),
            time: raw.time.clone(),
            extra: raw.extra.clone(),
        },
        &mut errors,
    );
    let mut steps = BTreeMap::new();
    for (name, resources) in &raw.steps {
        match job_steps().find(|s| s.name() == name.get_ref()) {
            Some(step) => {
                let table = format!("[slurm.steps.{}]", step.name());
                steps.insert(
                    step,
                    check_resources(&table, resources.get_ref(), &mut errors),
                );
            }
            None => {
                let names: Vec<&str> = job_steps().map(|s| s.name()).collect();
                errors.push((
                    name.span(),
                    format!(
                        "[slurm.steps]: unknown step `{}` (steps: {})",
                        name.get_ref(),
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(SlurmSettings {
            shards,
            clisc,
            setup: raw.setup.clone(),
            defaults,
            steps,
        })
    } else {
        Err(errors)
    }
}

fn check_resources(
    table: &str,
    raw: &RawResources,
    errors: &mut Vec<(Range<usize>, String)>,
) -> Resources {
    if let Some(c) = raw.cpus.as_ref().filter(|c| *c.get_ref() == 0) {
        errors.push((c.span(), format!("{table} cpus: must be at least 1")));
    }
    if let Some(m) = raw.memory.as_ref().filter(|m| !is_memory(m.get_ref())) {
        errors.push((
            m.span(),
            format!(
                "{table} memory: expected a Slurm size such as \"16G\" or \"4000M\", found {:?}",
                m.get_ref()
            ),
        ));
    }
    if let Some(t) = raw.time.as_ref().filter(|t| !is_time(t.get_ref())) {
        errors.push((
            t.span(),
            format!(
                "{table} time: expected a Slurm time limit such as \"90\", \"02:00:00\" or \"1-12:00:00\", found {:?}",
                t.get_ref()
            ),
        ));
    }
    if let Some(p) = raw.partition.as_ref().filter(|p| !is_word(p.get_ref())) {
        errors.push((
            p.span(),
            format!(
                "{table} partition: expected a partition name (letters, digits, `-`, `_`, `.`, `,`), found {:?}",
                p.get_ref()
            ),
        ));
    }
    for e in raw
        .extra
        .iter()
        .filter(|e| !e.get_ref().starts_with("--") || e.get_ref().contains('\n'))
    {
        errors.push((
            e.span(),
            format!(
                "{table} extra: expected one sbatch option starting with `--` (for example \"--account=lab\"), found {:?}",
                e.get_ref()
            ),
        ));
    }
    Resources {
        partition: raw.partition.as_ref().map(|p| p.get_ref().clone()),
        gpus: raw.gpus,
        cpus: raw.cpus.as_ref().map(|c| *c.get_ref()),
        memory: raw.memory.as_ref().map(|m| m.get_ref().clone()),
        time: raw.time.as_ref().map(|t| t.get_ref().clone()),
        extra: raw.extra.iter().map(|e| e.get_ref().clone()).collect(),
    }
}

/// `<digits>[K|M|G|T]`, as `sbatch --mem` takes it.
fn is_memory(s: &str) -> bool {
    let digits = s.trim_end_matches(['K', 'M', 'G', 'T']);
    !digits.is_empty() && digits.len() + 1 >= s.len() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The forms `sbatch --time` takes: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`,
/// `D-H:M:S`.
fn is_time(s: &str) -> bool {
    let number = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, s),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    days.map_or(true, number) && parts.len() <= 3 && parts.iter().all(|p| number(p))
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_sizes_and_times_are_recognised() {
        for ok in ["16G", "4000", "512M", "1T"] {
            assert!(is_memory(ok), "{ok}");
        }
        for bad in ["", "G", "16GB", "1.5G", "16 G"] {
            assert!(!is_memory(bad), "{bad}");
        }
        for ok in ["90", "30:00", "02:00:00", "1-12", "1-12:00", "2-00:00:00"] {
            assert!(is_time(ok), "{ok}");
        }
        for bad in ["", "2h", "1:2:3:4", "-1", "1-", "a:00"] {
            assert!(!is_time(bad), "{bad}");
        }
    }

    #[test]
    fn step_overrides_replace_only_what_they_set() {
        let defaults = Resources {
            partition: Some("cpu".into()),
            cpus: Some(4),
            memory: Some("8G".into()),
            extra: vec!["--account=lab".into()],
            ..Default::default()
        };
        let gpu = Resources {
            partition: Some("gpu".into()),
            gpus: Some(1),
            extra: vec!["--qos=long".into()],
            ..Default::default()
        };
        let r = defaults.overridden_by(&gpu);
        assert_eq!(r.partition.as_deref(), Some("gpu"));
        assert_eq!((r.gpus, r.cpus), (Some(1), Some(4)));
        assert_eq!(r.memory.as_deref(), Some("8G"));
        assert_eq!(r.extra, ["--account=lab", "--qos=long"]);
    }
}
