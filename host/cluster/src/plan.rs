//! Which jobs a run needs on the cluster, given what its work folder
//! already holds.

use super::settings::{Resources, SlurmSettings};
use clisc_dataset::splits::{Split, Splits};
use clisc_pipeline::config::{Pipeline, StageSlot};
use clisc_pipeline::run::{data_fingerprint, step_fingerprint};
use clisc_pipeline::shard::{self, Shard};
use clisc_pipeline::stages::StageFactory;
use clisc_workdir::{Manifest, Step, StepStatus, WorkDir};
use std::collections::BTreeMap;

/// How a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// A job array: tasks `tasks` (shard indices) of `shards`.
    Array {
        /// Number of shards of the step.
        shards: u32,
        /// The shards still to do.
        tasks: Vec<u32>,
    },
    /// One job.
    Single,
}

/// When a job may start, relative to the job before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Once it succeeded (`afterok`).
    Success,
    /// Once it ended, successfully or not (`afterany`): a merge runs even
    /// when array tasks failed, to name the missing cases.
    End,
}

impl After {
    /// The `--dependency` keyword.
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            After::Success => "afterok",
            After::End => "afterany",
        }
    }
}

/// One job of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Short name (`pseudo-masks`, `pseudo-masks-merge`, `network-1`, `finish`).
    pub name: String,
    /// The step it runs.
    pub step: Step,
    /// Array or single job.
    pub task: Task,
    /// `clisc run` arguments after `--config FILE`.
    pub args: Vec<String>,
    /// What it asks Slurm for.
    pub resources: Resources,
    /// The earlier jobs of the plan (by position) it waits for, and how.
    pub after: Vec<(After, usize)>,
}

/// The jobs still needed, in order, and what is already done.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The chain to submit (empty when the run is complete).
    pub jobs: Vec<Job>,
    /// Steps found done (with their current fingerprint), skipped.
    pub done: Vec<Step>,
}

impl Plan {
    /// The `--dependency` value of job `n` (`afterany:12,afterok:11`),
    /// naming earlier jobs with `id`; `None` for a job that waits for none.
    pub fn dependency(&self, n: usize, id: impl Fn(usize) -> String) -> Option<String> {
        let parts: Vec<String> = self.jobs[n]
            .after
            .iter()
            .map(|(after, job)| format!("{}:{}", after.keyword(), id(*job)))
            .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }

    /// Waiting for the last job so far to succeed.
    fn after_last(&self) -> Vec<(After, usize)> {
        self.jobs
            .len()
            .checked_sub(1)
            .map(|last| vec![(After::Success, last)])
            .unwrap_or_default()
    }
}

/// The steps of `pipeline`, in order, that run as jobs.
pub(crate) fn steps_of(pipeline: &Pipeline) -> Vec<Step> {
    let has = |slot| pipeline.stage(slot).is_some();
    let mut steps = vec![Step::PseudoLabels];
    for (slot, step) in [
        (StageSlot::RoiExtractor, Step::Roi),
        (StageSlot::PromptGenerator, Step::Prompts),
        (StageSlot::PromptableSegmenter, Step::PseudoMasks),
        (StageSlot::VolumetricSegmenter, Step::Network1),
    ] {
        if !has(slot) {
            return steps;
        }
        steps.push(step);
    }
    if has(StageSlot::Filter) {
        steps.extend([Step::Filter, Step::Network2]);
    }
    steps.extend([Step::Predictions, Step::Evaluation]);
    steps
}

/// Every step's fingerprint as [`clisc_pipeline::Runner::run`] will
/// compute it for these cases: the same chain of inputs, known before
/// anything runs because fingerprints depend only on the pipeline and the
/// case ids.
pub(crate) fn expected_fingerprints(
    factory: &StageFactory<'_>,
    splits: &Splits,
) -> BTreeMap<Step, String> {
    let ids = |split: Split| -> String {
        let v: Vec<&str> = splits
            .iter()
            .filter(|(_, s)| **s == split)
            .map(|(id, _)| id.as_str())
            .collect();
        v.join(",")
    };
    let data = data_fingerprint(factory.pipeline, &ids(Split::Train), &ids(Split::Test));
    let mut fps = BTreeMap::new();
    let mut put = |step: Step, upstream: &[&str]| -> String {
        let fp = step_fingerprint(factory, step, upstream);
        fps.insert(step, fp.clone());
        fp
    };
    let labels = put(Step::PseudoLabels, &[&data]);
    let roi = put(Step::Roi, &[&data, &labels]);
    let prompts = put(Step::Prompts, &[&roi]);
    let masks = put(Step::PseudoMasks, &[&prompts]);
    let net1 = put(Step::Network1, &[&masks]);
    let filter = put(Step::Filter, &[&net1]);
    let net2 = put(Step::Network2, &[&filter]);
    let last = if factory.pipeline.stage(StageSlot::Filter).is_some() {
        &net2
    } else {
        &net1
    };
    let predictions = put(Step::Predictions, &[&net1, last]);
    put(Step::Evaluation, &[&predictions]);
    fps
}

/// The jobs that complete the run of `pipeline`, given its work folder:
/// steps recorded done with their current fingerprint are skipped, and a
/// per-case step gets array tasks only for the shards that have not
/// finished all their cases (its merge always runs).
pub fn plan(
    pipeline: &Pipeline,
    factory: &StageFactory<'_>,
    splits: &Splits,
    settings: &SlurmSettings,
) -> std::io::Result<Plan> {
    let fps = expected_fingerprints(factory, splits);
    let work = WorkDir::open(&pipeline.run.output)?;
    let manifest: Manifest = work.read_manifest();
    let two_networks = pipeline.stage(StageSlot::Filter).is_some();
    let resources = |step: Step| {
        let mut r = settings.resources(step);
        r.cpus = r.cpus.or(Some(pipeline.run.threads));
        r
    };
    let mut out = Plan::default();
    for step in steps_of(pipeline) {
        let fp = &fps[&step];
        let done = manifest
            .steps
            .get(step.name())
            .is_some_and(|r| &r.fingerprint == fp && r.status == StepStatus::Done);
        if done && step != Step::Evaluation {
            out.done.push(step);
            continue;
        }
        if step == Step::Evaluation {
            // Evaluation, summary and report: everything else is cached by now.
            if !(done && work.root().join("summary.json").exists() && out.jobs.is_empty()) {
                out.jobs.push(Job {
                    name: "finish".into(),
                    step,
                    task: Task::Single,
                    args: vec![],
                    resources: resources(step),
                    after: out.after_last(),
                });
            } else {
                out.done.push(step);
            }
            continue;
        }
        let only = vec!["--only".to_string(), step.name().to_string()];
        if !shard::is_per_case(step) {
            out.jobs.push(Job {
                name: step.name().into(),
                step,
                task: Task::Single,
                args: only,
                resources: resources(step),
                after: out.after_last(),
            });
            continue;
        }
        let dir = work.root().join(step.folder());
        let ids: Vec<String> = splits
            .iter()
            .filter(|(_, s)| **s == shard::split_of(step))
            .map(|(id, _)| id.clone())
            .collect();
        let records = shard::read_records(&dir);
        let tasks: Vec<u32> = (0..settings.shards)
            .filter(|&index| {
                let part = Shard {
                    index,
                    count: settings.shards,
                };
                let finished = records.iter().any(|r| {
                    r.shard == part
                        && &r.fingerprint == fp
                        && r.status == StepStatus::Done
                        && r.cases == part.select(&ids)
                        && r.cases.iter().all(|id| {
                            shard::case_artefacts(step, &dir, id, two_networks)
                                .iter()
                                .all(|f| f.exists())
                        })
                });
                !finished
            })
            .collect();
        if !tasks.is_empty() {
            let mut args = only.clone();
            args.push("--shard".into());
            out.jobs.push(Job {
                name: step.name().into(),
                step,
                task: Task::Array {
                    shards: settings.shards,
                    tasks,
                },
                args,
                resources: resources(step),
                after: out.after_last(),
            });
        }
        // The merge runs once the array ended, even when tasks failed (to
        // name the missing cases), but not when the job before the array
        // failed: then the array never ran.
        let after = match out.jobs.last() {
            Some(array) if array.step == step => {
                let a = out.jobs.len() - 1;
                let mut after = vec![(After::End, a)];
                after.extend(a.checked_sub(1).map(|b| (After::Success, b)));
                after
            }
            _ => out.after_last(),
        };
        let mut merge = resources(step);
        merge.gpus = None; // checks files and selects; no network runs
        let mut args = only;
        args.push("--merge".into());
        out.jobs.push(Job {
            name: format!("{}-merge", step.name()),
            step,
            task: Task::Single,
            args,
            resources: merge,
            after,
        });
    }
    Ok(out)
}

/// `0-3`, `1,3`, `0-2,5`: Slurm's `--array` form of sorted task ids.
pub fn array_spec(tasks: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tasks.len() {
        let mut j = i;
        while j + 1 < tasks.len() && tasks[j + 1] == tasks[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", tasks[i], tasks[j])
        } else {
            tasks[i].to_string()
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_compress_runs() {
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[1, 3]), "1,3");
        assert_eq!(array_spec(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(array_spec(&[4]), "4");
    }
}
