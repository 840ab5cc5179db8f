//! sbatch scripts for the jobs of a [`super::plan::Plan`].

use super::plan::{array_spec, Job, Task};
use std::path::{Path, PathBuf};

/// What every script of a run shares.
#[derive(Debug, Clone)]
pub struct ScriptContext {
    /// The `clisc` binary the jobs run (absolute, on the shared file system).
    pub clisc: PathBuf,
    /// The pipeline file (absolute).
    pub config: PathBuf,
    /// Folder of the job logs.
    pub logs: PathBuf,
    /// Shell lines run before `clisc` (environment).
    pub setup: Vec<String>,
}

/// Problems that keep a script from being written.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// `#SBATCH` lines cannot quote, so a log folder with white space
    /// would be cut apart.
    #[error("the Slurm log folder {0} contains white space, which #SBATCH lines cannot hold; use a work folder ([run] output) without spaces")]
    Whitespace(PathBuf),
}

/// Quotes `s` for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The sbatch script of `job`. `dependency` is the `--dependency` value
/// (`afterok:1234`), if the job waits for another.
pub fn render(
    job: &Job,
    ctx: &ScriptContext,
    dependency: Option<&str>,
) -> Result<String, ScriptError> {
    if ctx.logs.display().to_string().contains(char::is_whitespace) {
        return Err(ScriptError::Whitespace(ctx.logs.clone()));
    }
    let log = |pattern: &str| ctx.logs.join(format!("{}-{pattern}.out", job.name));
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("#SBATCH --job-name=clisc-{}", job.name),
    ];
    let mut sbatch = |option: String| lines.push(format!("#SBATCH {option}"));
    match &job.task {
        Task::Array { tasks, .. } => {
            sbatch(format!("--array={}", array_spec(tasks)));
            sbatch(format!("--output={}", log("%A_%a").display()));
        }
        Task::Single => sbatch(format!("--output={}", log("%j").display())),
    }
    let r = &job.resources;
    if let Some(p) = &r.partition {
        sbatch(format!("--partition={p}"));
    }
    if let Some(c) = r.cpus {
        sbatch(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = &r.memory {
        sbatch(format!("--mem={m}"));
    }
    if let Some(t) = &r.time {
        sbatch(format!("--time={t}"));
    }
    if let Some(g) = r.gpus.filter(|g| *g > 0) {
        sbatch(format!("--gres=gpu:{g}"));
    }
    for e in &r.extra {
        sbatch(e.clone());
    }
    if let Some(d) = dependency {
        sbatch(format!("--dependency={d}"));
        // A job whose dependency can never be met (an earlier job failed)
        // is cancelled instead of waiting forever.
        sbatch("--kill-on-invalid-dep=yes".into());
    }
    lines.push(String::new());
    lines.push(format!(
        "# {}: written by `clisc slurm submit --config {}`",
        describe(job),
        ctx.config.display()
    ));
    lines.push("set -euo pipefail".into());
    lines.extend(ctx.setup.iter().cloned());
    let mut command = vec![
        "exec".to_string(),
        shell_quote(&ctx.clisc.display().to_string()),
        "run".into(),
        "--config".into(),
        shell_quote(&ctx.config.display().to_string()),
    ];
    command.extend(job.args.iter().map(|a| shell_quote(a)));
    if let Task::Array { shards, .. } = &job.task {
        // The shard count is written out: a resubmitted partial array
        // (`--array=1,3`) does not know it from its environment.
        command.push(format!("\"${{SLURM_ARRAY_TASK_ID}}/{shards}\""));
    }
    lines.push(command.join(" "));
    lines.push(String::new());
    Ok(lines.join("\n"))
}

/// One line about what a job does.
pub fn describe(job: &Job) -> String {
    match &job.task {
        Task::Array { shards, tasks } => format!(
            "step `{}`, {} of {shards} shard{} as array tasks {}",
            job.step.name(),
            tasks.len(),
            if *shards == 1 { "" } else { "s" },
            array_spec(tasks)
        ),
        Task::Single if job.name.ends_with("-merge") => {
            format!("merge of step `{}`", job.step.name())
        }
        Task::Single if job.args.is_empty() => {
            "evaluation, summary and report (earlier steps are cached)".into()
        }
        Task::Single => format!("step `{}`", job.step.name()),
    }
}

/// The file name of job `n` of a chain (`03-roi.sbatch`).
pub fn file_name(n: usize, job: &Job) -> String {
    format!("{:02}-{}.sbatch", n + 1, job.name)
}

/// Where the scripts and logs of a run go: `<work>/slurm`.
pub fn slurm_dir(work: &Path) -> PathBuf {
    work.join("slurm")
}
