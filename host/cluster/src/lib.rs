//! Running a pipeline on a Slurm cluster: Slurm schedules, clisc only
//! writes the batch scripts.
//!
//! A run becomes a chain of jobs ([`plan`]): every per-case step is a job
//! array whose tasks are shards of the step (`clisc run --only STEP
//! --shard i/n`, see [`clisc_pipeline::shard`]) followed by a merge job
//! (`--merge`) that checks every case was done exactly once; training
//! steps are single jobs; a last job evaluates and writes the report. Each
//! job depends on the one before it. The plan starts from what the work
//! folder already holds, so submitting again after a failure resubmits only
//! the shards with missing cases and the steps after them. Resources come
//! from the pipeline's `[slurm]` section ([`settings`]); [`script`] renders
//! the sbatch scripts.
#![warn(unreachable_pub)]

pub mod plan;
pub mod script;
pub mod settings;
