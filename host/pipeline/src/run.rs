//! The pipeline runner: drives the configured stages over the dataset,
//! step by step, with cached artefacts in the work folder.

use super::artefacts::{
    decisions_to_json, labels_from_json, labels_to_json, prompts_from_json, prompts_to_json,
    PromptSetRecord, SliceLabelRecord,
};
use super::cases::{case_file, ids_in, Cases, PreparedCase, Split};
use super::config::{ModelSelection, NetworkTargets, Pipeline, RetrainTargets, StageSlot};
use super::io::{self, read_json, read_json_if_present, write_json};
use super::promptable::{segment_case, PromptableStage};
use super::selection::{partition, Partition};
use super::shard::{self, ShardRole};
use super::stages::{StageFactory, StageSeed};
use super::summary::{
    CaseScore, ChosenCheckpoint, ModelSelectionRecord, RunSummary, SliceLabelStats,
};
use crate::error::{invalid, WithContext};
use abi_stable::std_types::{RResult, RSlice};
use clisc_imaging::components::largest_component;
use clisc_imaging::Connectivity;
use clisc_progress::Bars;
use clisc_registry::Registry;
use clisc_sdk::stage::{
    FilterCandidate, LabelledCase, PromptGeneratorBox, RoiResult, TrainingCase, ValidationCase,
    VolumetricSegmenterBox,
};
use clisc_sdk::{CasePrompts, LabelVolume, PluginError, SlicePseudoLabels};
use clisc_workdir::{
    fingerprint, FileRecord, InputRecord, Manifest, Step, StepRecord, StepStatus, WorkDir,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which steps to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Rerun this step and everything after it.
    pub from: Option<Step>,
    /// Rerun only this step (earlier steps must be cached).
    pub only: Option<Step>,
    /// Run the `only` step (a per-case step) as one shard of several, or
    /// merge its shards (see [`super::shard`]).
    pub shard: Option<ShardRole>,
}

/// A training step's own numbers, as kept in `stage-reports.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct KeptReport {
    /// Fingerprint of the step that trained.
    fingerprint: String,
    /// The numbers, as in the summary's `stage_reports`.
    metrics: BTreeMap<String, f64>,
    /// The checkpoint a network kept by model selection, if it chose.
    #[serde(default)]
    chosen: Option<ChosenCheckpoint>,
}

/// Converts a plugin result into an error naming the stage and case.
pub(crate) fn plugin<T>(r: RResult<T, PluginError>, what: &str) -> crate::error::Result<T> {
    r.into_result().with_context(|| what)
}

/// A run in progress.
pub struct Runner<'a> {
    factory: StageFactory<'a>,
    work: WorkDir,
    manifest: Manifest,
    options: RunOptions,
    cases: Cases,
    /// Every case id of each split, also those a shard did not prepare.
    split_ids: BTreeMap<Split, Vec<String>>,
    /// Metrics gathered for the report.
    pub summary: RunSummary,
}

impl<'a> Runner<'a> {
    /// Prepares a run of `pipeline` on already prepared `cases`.
    pub fn new(
        pipeline: &'a Pipeline,
        registry: &'a Registry,
        device: String,
        cases: Cases,
        bars: Bars,
        options: RunOptions,
    ) -> crate::error::Result<Self> {
        if options.shard.is_some() && !options.only.is_some_and(shard::is_per_case) {
            let names: Vec<&str> = shard::PER_CASE.iter().map(|s| s.name()).collect();
            return Err(invalid(format!(
                "sharding needs --only with a per-case step ({})",
                names.join(", ")
            )));
        }
        let work = WorkDir::open(&pipeline.run.output)
            .with_context(|| format!("creating work folder {}", pipeline.run.output.display()))?;
        let mut manifest = work.read_manifest();
        manifest.clisc_version = env!("CARGO_PKG_VERSION").into();
        manifest.pipeline_file = pipeline.source.display().to_string();
        manifest.config_hash = fingerprint(&[pipeline.to_toml()]);
        manifest.seed = pipeline.run.seed;
        manifest.device = device.clone();
        manifest.threads = pipeline.run.threads;
        manifest.pipeline = pipeline.to_toml();
        for case in cases.values() {
            let files = case
                .sources
                .iter()
                .map(|p| FileRecord::of(p).with_context(|| format!("hashing {}", p.display())))
                .collect::<crate::error::Result<Vec<_>>>()?;
            let split = case.split.as_str().to_string();
            manifest
                .inputs
                .insert(case.id().to_string(), InputRecord { split, files });
        }
        let mut summary = RunSummary::new(pipeline);
        summary.working_spacing = cases.values().find_map(|c| c.working_spacing);
        let layout = super::prepare::layout(pipeline)?;
        summary.bias_correction = layout.bias_correction;
        summary.refine_boundary_mm = layout.refine_boundary_mm;
        let split_ids = [Split::Train, Split::Valid, Split::Test]
            .into_iter()
            .map(|s| (s, ids_in(&cases, s)))
            .collect();
        Ok(Self {
            factory: StageFactory {
                pipeline,
                registry,
                device,
                bars,
            },
            work,
            manifest,
            options,
            cases,
            split_ids,
            summary,
        })
    }

    /// Declares the whole split when `cases` holds only some of its cases
    /// (a shard prepares only its own): fingerprints and shard membership
    /// are computed over every case of `splits`.
    pub fn with_splits(mut self, splits: &clisc_dataset::splits::Splits) -> Self {
        for ids in self.split_ids.values_mut() {
            ids.clear();
        }
        for (id, split) in splits {
            self.split_ids.entry(*split).or_default().push(id.clone());
        }
        self
    }

    /// Whether this invocation runs one shard of a step.
    fn is_part(&self) -> bool {
        matches!(self.options.shard, Some(ShardRole::Part(_)))
    }

    /// The work folder.
    pub fn work_dir(&self) -> &Path {
        self.work.root()
    }

    /// The prepared cases.
    pub fn cases(&self) -> &Cases {
        &self.cases
    }

    /// Decides whether `step` must run, clearing stale artefacts; returns
    /// its folder, or `None` when the step is not part of this run.
    fn begin(&mut self, step: Step, fp: &str) -> crate::error::Result<Option<PathBuf>> {
        let record = self.manifest.steps.get(step.name()).cloned();
        let cached = record
            .as_ref()
            .is_some_and(|r| r.fingerprint == fp && r.status == StepStatus::Done);
        let forced = match (self.options.only, self.options.from) {
            (Some(only), _) => {
                if step < only && !cached {
                    return Err(invalid(format!(
                        "--only {}: step `{}` has no valid cached results; run without --only first",
                        only.name(),
                        step.name()
                    )));
                }
                if step > only {
                    return Ok(None);
                }
                step == only
            }
            (None, Some(from)) => step >= from,
            (None, None) => false,
        };
        let stale = record.as_ref().is_some_and(|r| r.fingerprint != fp);
        // A sharded step's folder is shared by all its shards: never cleared
        // here (each shard clears only its own stale cases).
        let sharded = self.options.shard.is_some() && self.options.only == Some(step);
        if (forced || stale) && !sharded {
            self.work
                .clear_step(step)
                .with_context(|| format!("clearing step {}", step.folder()))?;
        }
        let dir = self
            .work
            .step_dir(step)
            .with_context(|| format!("creating step folder {}", step.folder()))?;
        if sharded {
            let two_networks = self.factory.pipeline.stage(StageSlot::Filter).is_some();
            let split = shard::split_of(step);
            match self.options.shard {
                Some(ShardRole::Part(part)) => {
                    shard::start_part(step, &dir, fp, part, &self.ids(split), two_networks)?
                }
                _ => shard::check_complete(step, &dir, fp, &self.split_ids[&split], two_networks)?,
            }
        }
        self.manifest.steps.insert(
            step.name().into(),
            StepRecord {
                fingerprint: fp.into(),
                status: if cached && !forced {
                    StepStatus::Done
                } else {
                    StepStatus::Running
                },
                plugins: vec![],
                seconds: record.map(|r| r.seconds).unwrap_or_default(),
                finished_at: String::new(),
            },
        );
        // Shards run at the same time: none of them writes the manifest.
        if !self.is_part() {
            self.work
                .write_manifest(&self.manifest)
                .with_context(|| "writing the work folder's manifest")?;
        }
        Ok(Some(dir))
    }

    fn finish(
        &mut self,
        step: Step,
        plugins: Vec<String>,
        started: Instant,
    ) -> crate::error::Result<()> {
        if let Some(ShardRole::Part(part)) = self.options.shard {
            if self.options.only == Some(step) {
                let dir = self
                    .work
                    .step_dir(step)
                    .with_context(|| format!("creating step folder {}", step.folder()))?;
                let ids = self.ids(shard::split_of(step));
                shard::finish_part(step, &dir, &self.step_fp(step), part, &ids)?;
            }
            return Ok(());
        }
        if let Some(r) = self.manifest.steps.get_mut(step.name()) {
            if r.status != StepStatus::Done {
                r.seconds = started.elapsed().as_secs_f64();
            }
            r.status = StepStatus::Done;
            r.plugins = plugins;
            r.finished_at = chrono::Utc::now().to_rfc3339();
            self.summary.timings.insert(step.name().into(), r.seconds);
        }
        self.work
            .write_manifest(&self.manifest)
            .with_context(|| "writing the work folder's manifest")?;
        Ok(())
    }

    /// The cases of `split` this invocation works on: all of them, or a
    /// shard's share.
    fn ids(&self, split: Split) -> Vec<String> {
        let all = self.split_ids.get(&split).cloned().unwrap_or_default();
        match self.options.shard {
            Some(ShardRole::Part(part)) => part.select(&all),
            _ => all,
        }
    }

    fn case(&self, id: &str) -> &PreparedCase {
        &self.cases[id]
    }

    /// Runs every step; returns the summary (also written to `summary.json`).
    pub fn run(&mut self) -> crate::error::Result<()> {
        let (train, test) = (
            &self.split_ids[&Split::Train],
            &self.split_ids[&Split::Test],
        );
        if train.is_empty() {
            return Err(invalid(
                "the training split is empty: nothing to learn from",
            ));
        }
        let data_fp = data_fingerprint(self.factory.pipeline, &train.join(","), &test.join(","));
        if self.supervised() {
            return self.run_supervised(&data_fp);
        }

        let Some(labels) = self.pseudo_labels(&data_fp)? else {
            return self.stop();
        };
        if !self.configured(StageSlot::RoiExtractor) {
            return self.stop();
        }
        let roi_fp = self.fp(Step::Roi, &[&data_fp, &self.step_fp(Step::PseudoLabels)]);
        let Some(rois) = self.rois(&roi_fp, &labels)? else {
            return self.stop();
        };
        if !self.configured(StageSlot::PromptGenerator) {
            return self.stop();
        }
        let Some(prompts) = self.prompts(&rois)? else {
            return self.stop();
        };
        if !self.configured(StageSlot::PromptableSegmenter) {
            return self.stop();
        }
        let Some(masks) = self.pseudo_masks(&prompts)? else {
            return self.stop();
        };
        if !self.configured(StageSlot::VolumetricSegmenter) {
            return self.stop();
        }
        let Some(net1) =
            self.network(Step::Network1, &masks, &[self.step_fp(Step::PseudoMasks)])?
        else {
            return self.stop();
        };
        let final_model = if self.factory.pipeline.stage(StageSlot::Filter).is_some() {
            let Some(kept_targets) = self.filter(&net1)? else {
                return self.stop();
            };
            let fp = self.step_fp(Step::Filter);
            match self.network(Step::Network2, &kept_targets, &[fp])? {
                Some(net2) => Some(net2),
                None => return self.stop(),
            }
        } else {
            None
        };
        self.predict_and_evaluate(&net1, final_model.as_ref())?;
        self.stop()
    }

    /// Whether the network learns the ground truth (the supervised
    /// baseline) instead of pseudo-labels.
    fn supervised(&self) -> bool {
        self.factory
            .pipeline
            .stage(StageSlot::VolumetricSegmenter)
            .is_some_and(|s| s.host.targets() == NetworkTargets::GroundTruth)
    }

    /// The supervised baseline: the volumetric segmenter learns the
    /// training cases' whole-tumour ground truth (on the working grid); no
    /// pseudo-labelling stage and no filter run.
    fn run_supervised(&mut self, data_fp: &str) -> crate::error::Result<()> {
        self.summary.supervised = true;
        let mut targets = BTreeMap::new();
        let mut unlabelled = Vec::new();
        for id in &self.split_ids[&Split::Train] {
            match self.cases.get(id).map(|c| c.truth.as_ref()) {
                Some(Some(truth)) => {
                    targets.insert(id.clone(), truth.clone());
                }
                Some(None) => unlabelled.push(id.as_str()),
                // A shard holds only its own cases; the network step is
                // not sharded, so every training case is here when it runs.
                None => {}
            }
        }
        if !unlabelled.is_empty() {
            return Err(invalid(format!(
                "[stages.volumetric_segmenter] targets = \"ground-truth\" needs a segmentation for every training case; none for: {}",
                unlabelled.join(", ")
            )));
        }
        let upstream = [fingerprint(&[data_fp, "ground-truth"])];
        let Some(net) = self.network(Step::Network1, &targets, &upstream)? else {
            return self.stop();
        };
        self.predict_and_evaluate(&net, None)?;
        self.stop()
    }

    /// Whether the pipeline has `slot`; a pipeline ends before its first
    /// missing stage.
    fn configured(&self, slot: StageSlot) -> bool {
        let present = self.factory.pipeline.stage(slot).is_some();
        if !present {
            tracing::info!("the pipeline has no [stages.{}]: it ends here", slot.key());
        }
        present
    }

    fn stop(&mut self) -> crate::error::Result<()> {
        if self.is_part() {
            return Ok(()); // the merge writes the summary
        }
        let summary = self.work.root().join("summary.json");
        write_json(&summary, &self.summary)?;
        Ok(())
    }

    fn step_fp(&self, step: Step) -> String {
        self.manifest
            .steps
            .get(step.name())
            .map(|r| r.fingerprint.clone())
            .unwrap_or_default()
    }

    /// The configured post-processing of stacked pseudo-labels.
    fn keep_largest_components(&self) -> Option<usize> {
        self.factory
            .pipeline
            .stage(StageSlot::PromptableSegmenter)
            .and_then(|s| s.host.keep_largest_components())
    }

    /// What the final network trains on for the cases the filter keeps.
    fn retrain_on(&self) -> RetrainTargets {
        self.factory
            .pipeline
            .stage(StageSlot::Filter)
            .map(|s| s.host.retrain_on())
            .unwrap_or_default()
    }

    fn fp(&self, step: Step, upstream: &[&str]) -> String {
        step_fingerprint(&self.factory, step, upstream)
    }

    fn pseudo_labels(
        &mut self,
        data_fp: &str,
    ) -> crate::error::Result<Option<BTreeMap<String, SlicePseudoLabels>>> {
        let started = Instant::now();
        let fp = self.fp(Step::PseudoLabels, &[data_fp]);
        let Some(dir) = self.begin(Step::PseudoLabels, &fp)? else {
            return Ok(None);
        };
        let json = |id: &str| dir.join(format!("{id}.json"));
        let out = self.each_training_case(
            Step::PseudoLabels,
            |id| {
                let records = read_json_if_present::<Vec<SliceLabelRecord>>(&json(id))?;
                Ok(records.map(|r| labels_from_json(&r)))
            },
            |factory| {
                factory.pseudo_labeler(
                    StageSlot::PseudoLabeler,
                    &dir.join("plugin"),
                    StageSeed::PseudoLabels,
                )
            },
            |stage, case| {
                let labels = plugin(
                    stage.label_slices(&case.input),
                    &format!("pseudo-labeler on case {}", case.id()),
                )?;
                write_json(&json(case.id()), &labels_to_json(&labels))?;
                Ok(labels)
            },
        )?;
        self.summary.slice_labels = Some(SliceLabelStats::measure(&self.cases, &out));
        self.finish(
            Step::PseudoLabels,
            vec![self.factory.stamp(StageSlot::PseudoLabeler)],
            started,
        )?;
        Ok(Some(out))
    }

    fn rois(
        &mut self,
        fp: &str,
        labels: &BTreeMap<String, SlicePseudoLabels>,
    ) -> crate::error::Result<Option<BTreeMap<String, RoiResult>>> {
        let started = Instant::now();
        let Some(dir) = self.begin(Step::Roi, fp)? else {
            return Ok(None);
        };
        let ids = self.ids(Split::Train);
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !dir.join(format!("{id}.rounds.json")).exists())
            .collect();
        let mut out = BTreeMap::new();
        if !missing.is_empty() {
            let mut stage = self.factory.roi_extractor(
                StageSlot::RoiExtractor,
                &dir.join("plugin"),
                StageSeed::Roi,
            )?;
            let training: Vec<LabelledCase> = ids
                .iter()
                .map(|id| LabelledCase {
                    case: self.case(id).input.clone(),
                    labels: labels[id].clone(),
                })
                .collect();
            let report = plugin(
                stage.fit(RSlice::from_slice(&training)),
                "roi-extractor training",
            )?;
            drop(training);
            self.summary.add_stage_report("roi-extractor", &report);
            for (i, id) in missing.iter().enumerate() {
                let result = plugin(
                    stage.extract(&self.case(id).input, &labels[*id]),
                    &format!("roi-extractor on case {id}"),
                )?;
                io::write_roi_result(&dir, id, &result)?;
                self.factory
                    .bars
                    .update("rois", i as u64 + 1, missing.len() as u64, id);
            }
        }
        self.keep_stage_report(Step::Roi, "roi-extractor")?;
        for id in &ids {
            out.insert(id.clone(), io::read_roi_result(&dir, id)?);
        }
        self.summary.measure_rois(&self.cases, &out);
        self.finish(
            Step::Roi,
            vec![self.factory.stamp(StageSlot::RoiExtractor)],
            started,
        )?;
        Ok(Some(out))
    }

    fn prompts(
        &mut self,
        rois: &BTreeMap<String, RoiResult>,
    ) -> crate::error::Result<Option<BTreeMap<String, CasePrompts>>> {
        let started = Instant::now();
        let fp = self.fp(Step::Prompts, &[&self.step_fp(Step::Roi)]);
        let Some(dir) = self.begin(Step::Prompts, &fp)? else {
            return Ok(None);
        };
        let json = |id: &str| dir.join(format!("{id}.json"));
        let out = self.each_training_case(
            Step::Prompts,
            |id| {
                let records = read_json_if_present::<Vec<PromptSetRecord>>(&json(id))?;
                Ok(records.map(|r| prompts_from_json(&r)))
            },
            |factory| {
                factory.prompt_generator(
                    StageSlot::PromptGenerator,
                    &dir.join("plugin"),
                    StageSeed::Prompts,
                )
            },
            |stage, case| {
                let id = case.id();
                let roi = &rois[id]
                    .final_round()
                    .ok_or_else(|| invalid(format!("roi-extractor returned no round for {id}")))?
                    .roi;
                let prompts = plugin(
                    stage.prompts(&case.input, roi),
                    &format!("prompt-generator on case {id}"),
                )?;
                write_json(&json(id), &prompts_to_json(&prompts))?;
                Ok(prompts)
            },
        )?;
        self.summary.measure_prompts(&self.cases, &out);
        self.finish(
            Step::Prompts,
            vec![self.factory.stamp(StageSlot::PromptGenerator)],
            started,
        )?;
        Ok(Some(out))
    }

    fn pseudo_masks(
        &mut self,
        prompts: &BTreeMap<String, CasePrompts>,
    ) -> crate::error::Result<Option<BTreeMap<String, LabelVolume>>> {
        let started = Instant::now();
        let fp = self.fp(Step::PseudoMasks, &[&self.step_fp(Step::Prompts)]);
        let Some(dir) = self.begin(Step::PseudoMasks, &fp)? else {
            return Ok(None);
        };
        // `<id>.nii.gz` on the cropped grid (what later steps read) and
        // `original/<id>.nii.gz` in the raw FLAIR's grid and header,
        // rewritten whenever the cropped one is computed.
        let cropped = |id: &str| case_file(&dir, id, "");
        let original = |id: &str| case_file(&dir.join("original"), id, "");
        let keep_largest = self.keep_largest_components();
        let out = self.each_training_case(
            Step::PseudoMasks,
            |id| {
                if !cropped(id).exists() {
                    return Ok(None);
                }
                let mask = io::read_labels(&cropped(id))?;
                if !original(id).exists() {
                    write_original(self.case(id), &mask, &original(id))?;
                }
                Ok(Some(mask))
            },
            |factory| {
                factory.promptable_stage(
                    StageSlot::PromptableSegmenter,
                    &dir.join("plugin"),
                    StageSeed::PseudoMasks,
                )
            },
            |stage, case| {
                let mask = segment_case(stage, case, &prompts[case.id()], keep_largest)?;
                write_original(case, &mask, &original(case.id()))?;
                io::write_labels(&cropped(case.id()), &mask)?;
                Ok(mask)
            },
        )?;
        self.summary.pseudo_masks = self.score_against_truth(&out);
        self.finish(
            Step::PseudoMasks,
            vec![self.factory.stamp(StageSlot::PromptableSegmenter)],
            started,
        )?;
        Ok(Some(out))
    }

    /// The skeleton of a per-case step on the training cases of this
    /// invocation: each case's artefact is read back by `cached` when it
    /// is there, otherwise `compute`d (which also writes it) by the step's
    /// stage, which `create` makes on the first case that needs it, so a
    /// step whose cases are all cached starts no stage. Progress is shown
    /// under the step's name.
    fn each_training_case<S, T>(
        &self,
        step: Step,
        cached: impl Fn(&str) -> crate::error::Result<Option<T>>,
        create: impl FnOnce(&StageFactory<'_>) -> crate::error::Result<S>,
        mut compute: impl FnMut(&mut S, &PreparedCase) -> crate::error::Result<T>,
    ) -> crate::error::Result<BTreeMap<String, T>> {
        let ids = self.ids(Split::Train);
        let mut create = Some(create);
        let mut stage = None;
        let mut out = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            let value = match cached(id)? {
                Some(value) => value,
                None => {
                    if stage.is_none() {
                        let create = create.take().expect("the stage is created once");
                        stage = Some(create(&self.factory)?);
                    }
                    compute(stage.as_mut().expect("created above"), self.case(id))?
                }
            };
            self.factory
                .bars
                .update(step.name(), i as u64 + 1, ids.len() as u64, id);
            out.insert(id.clone(), value);
        }
        Ok(out)
    }

    /// Dice, precision and recall ([`CaseScore::overlap`]) of masks
    /// against the working-grid ground truth (report only).
    fn score_against_truth(&self, masks: &BTreeMap<String, LabelVolume>) -> Vec<CaseScore> {
        masks
            .iter()
            .filter_map(|(id, m)| {
                let truth = self.case(id).truth.as_ref()?;
                Some(CaseScore::overlap(id, &m.data, &truth.data))
            })
            .collect()
    }

    /// Trains (or loads) a network on `targets`; returns the model file.
    fn network(
        &mut self,
        step: Step,
        targets: &BTreeMap<String, LabelVolume>,
        upstream: &[String],
    ) -> crate::error::Result<Option<PathBuf>> {
        let started = Instant::now();
        let up: Vec<&str> = upstream.iter().map(String::as_str).collect();
        let fp = self.fp(step, &up);
        let Some(dir) = self.begin(step, &fp)? else {
            return Ok(None);
        };
        let model = dir.join("model.ckpt");
        let seed = if step == Step::Network1 {
            StageSeed::Network1
        } else {
            StageSeed::Network2
        };
        let parts = self.selection_partition(step, targets, seed)?;
        if !model.exists() {
            let (training, validation) = self.selection_sets(&parts, targets)?;
            let mut net = self.factory.volumetric_segmenter(
                StageSlot::VolumetricSegmenter,
                &dir.join("plugin"),
                seed,
            )?;
            let report = plugin(
                net.train_with_validation(
                    RSlice::from_slice(&training),
                    RSlice::from_slice(&validation),
                ),
                &format!("{} training", step.name()),
            )?;
            self.summary.add_stage_report(step.name(), &report);
            let tmp = clisc_workdir::temporary_sibling(&model);
            let saved = plugin(
                net.save(tmp.display().to_string().as_str().into()),
                &format!("saving the network to {}", tmp.display()),
            )
            .and_then(|()| self.ensure_model_file(&tmp))
            .and_then(|()| self.record_preprocessing(&tmp))
            .and_then(|()| {
                std::fs::rename(&tmp, &model)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), model.display()))
            });
            if let Err(e) = saved {
                // A half-written model must not be mistaken for one later.
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        self.keep_stage_report(step, step.name())?;
        self.finish(
            step,
            vec![self.factory.stamp(StageSlot::VolumetricSegmenter)],
            started,
        )?;
        Ok(Some(model))
    }

    /// Makes the file the network's plugin saved a model file
    /// ([`clisc_inference::model_file::ensure_model_file`]), so `clisc infer` and the
    /// DICOM node can rebuild the stage from it alone.
    fn ensure_model_file(&self, saved: &Path) -> crate::error::Result<()> {
        let slot = StageSlot::VolumetricSegmenter;
        let spec = self
            .factory
            .pipeline
            .stage(slot)
            .ok_or_else(|| invalid(format!("the pipeline has no `[stages.{}]`", slot.key())))?;
        let registered = self.factory.registry.find(&spec.plugin, slot.kind())?;
        let version = registered.descriptor.info.version.as_str();
        clisc_inference::model_file::ensure_model_file(
            saved,
            &spec.plugin,
            version,
            &spec.settings,
        )?;
        Ok(())
    }

    /// Writes how the cases were prepared and predictions brought back
    /// (working spacing, bias correction, boundary refinement) into a saved
    /// model, so `clisc infer` treats new volumes as the pipeline treated
    /// its cases. A model file that cannot take them gets a warning.
    fn record_preprocessing(&self, model: &Path) -> crate::error::Result<()> {
        let preprocessing = clisc_inference::model_file::Preprocessing {
            spacing: self.summary.working_spacing,
            bias_correction: self.summary.bias_correction,
            refine_boundary_mm: self.summary.refine_boundary_mm,
        };
        if let Err(e) = clisc_inference::model_file::record_preprocessing(model, &preprocessing) {
            tracing::warn!(
                "the network's model file cannot record how its cases were prepared ({preprocessing:?}): {e:#}; `clisc infer` with it will not prepare new volumes alike"
            );
        }
        Ok(())
    }

    /// The model selection of the pipeline.
    fn model_selection(&self) -> ModelSelection {
        self.factory
            .pipeline
            .stage(StageSlot::VolumetricSegmenter)
            .map(|s| s.host.model_selection())
            .unwrap_or_default()
    }

    /// Which cases a network step trains on and which it holds out for
    /// model selection; recorded in the summary.
    fn selection_partition(
        &mut self,
        step: Step,
        targets: &BTreeMap<String, LabelVolume>,
        seed: StageSeed,
    ) -> crate::error::Result<Partition> {
        let selection = self.model_selection();
        let ids: Vec<String> = targets.keys().cloned().collect();
        let seed = seed.seed(self.factory.pipeline.run.seed);
        let parts = partition(selection, &ids, &self.split_ids[&Split::Valid], seed)?;
        self.summary.ground_truth_used_for_choices |=
            selection == ModelSelection::GroundTruthValidation;
        self.summary.model_selection.insert(
            step.name().into(),
            ModelSelectionRecord {
                mode: selection.name().into(),
                description: selection.describe(),
                held_out: parts.held_out.clone(),
                chosen: None,
            },
        );
        Ok(parts)
    }

    /// The training and held-out cases of `parts`: held-out cases are
    /// scored against their pseudo-label, or against their ground truth
    /// under `ground-truth-validation`.
    fn selection_sets(
        &self,
        parts: &Partition,
        targets: &BTreeMap<String, LabelVolume>,
    ) -> crate::error::Result<(Vec<TrainingCase>, Vec<ValidationCase>)> {
        let truth = self.model_selection() == ModelSelection::GroundTruthValidation;
        let mut validation = Vec::with_capacity(parts.held_out.len());
        for id in &parts.held_out {
            let target = if truth {
                self.case(id).truth.clone().ok_or_else(|| {
                    invalid(format!("model_selection = \"ground-truth-validation\": validation case `{id}` has no ground-truth label to score checkpoints against"))
                })?
            } else {
                targets[id].clone()
            };
            let case = self.case(id).input.clone();
            validation.push(ValidationCase { case, target });
        }
        let training = parts
            .training
            .iter()
            .map(|id| TrainingCase {
                case: self.case(id).input.clone(),
                target: targets[id].clone(),
            })
            .collect();
        Ok((training, validation))
    }

    /// Keeps a training step's report (`name` in the summary) in
    /// `stage-reports.json` of the work folder when this run trained, and
    /// reads it back into the summary when the training was cached (a
    /// resumed run, or a cluster run whose training ran in another job).
    /// Each report is kept with its step's fingerprint, so a stale one is
    /// never shown.
    fn keep_stage_report(&mut self, step: Step, name: &str) -> crate::error::Result<()> {
        let path = self.work.root().join("stage-reports.json");
        let mut kept: BTreeMap<String, KeptReport> = if path.exists() {
            read_json(&path)?
        } else {
            BTreeMap::new()
        };
        let fingerprint = self.step_fp(step);
        let record = self.summary.model_selection.get_mut(name);
        match self.summary.stage_reports.get(name) {
            Some(metrics) => {
                let report = KeptReport {
                    fingerprint,
                    metrics: metrics.clone(),
                    chosen: record.and_then(|r| r.chosen),
                };
                kept.insert(name.into(), report);
                write_json(&path, &kept)
            }
            None => {
                if let Some(r) = kept.remove(name).filter(|r| r.fingerprint == fingerprint) {
                    if let Some(record) = record {
                        record.chosen = r.chosen;
                    }
                    self.summary.stage_reports.insert(name.into(), r.metrics);
                }
                Ok(())
            }
        }
    }

    fn load_network(
        &self,
        model: &Path,
        work: &Path,
    ) -> crate::error::Result<VolumetricSegmenterBox> {
        let mut net = self.factory.volumetric_segmenter(
            StageSlot::VolumetricSegmenter,
            work,
            StageSeed::LoadedNetwork,
        )?;
        let file = clisc_inference::model_file::plugin_file(model, work)?;
        plugin(
            net.load(file.display().to_string().as_str().into()),
            &format!("loading {}", model.display()),
        )?;
        Ok(net)
    }

    /// S3F: predict training cases, re-prompt, score, select. Returns the
    /// kept cases' targets (the network's predictions).
    fn filter(
        &mut self,
        net1: &Path,
    ) -> crate::error::Result<Option<BTreeMap<String, LabelVolume>>> {
        let started = Instant::now();
        let fp = self.fp(Step::Filter, &[&self.step_fp(Step::Network1)]);
        let Some(dir) = self.begin(Step::Filter, &fp)? else {
            return Ok(None);
        };
        let (pred_dir, reprompt_dir) = (dir.join("predictions"), dir.join("reprompted"));
        std::fs::create_dir_all(&pred_dir)
            .with_context(|| format!("creating {}", pred_dir.display()))?;
        std::fs::create_dir_all(&reprompt_dir)
            .with_context(|| format!("creating {}", reprompt_dir.display()))?;
        let ids = self.ids(Split::Train);
        let mut net: Option<VolumetricSegmenterBox> = None;
        let mut generator: Option<PromptGeneratorBox> = None;
        let mut segmenter: Option<PromptableStage> = None;
        let mut candidates = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let (p_path, r_path) = (
                case_file(&pred_dir, id, ""),
                case_file(&reprompt_dir, id, ""),
            );
            let prediction = if p_path.exists() {
                io::read_labels(&p_path)?
            } else {
                if net.is_none() {
                    net = Some(self.load_network(net1, &dir.join("network"))?);
                }
                let raw = plugin(
                    net.as_mut().expect("loaded").predict(&self.case(id).input),
                    &format!("predicting {id}"),
                )?;
                let kept = LabelVolume {
                    grid: raw.grid,
                    data: largest_component(&raw.data, raw.grid.dims(), Connectivity::Full).into(),
                };
                io::write_labels(&p_path, &kept)?;
                kept
            };
            let reference = if r_path.exists() {
                io::read_labels(&r_path)?
            } else {
                if generator.is_none() {
                    generator = Some(self.factory.prompt_generator(
                        StageSlot::RepromptGenerator,
                        &dir.join("reprompt-generator"),
                        StageSeed::FilterReprompts,
                    )?);
                    segmenter = Some(self.factory.promptable_stage(
                        StageSlot::PromptableSegmenter,
                        &dir.join("segmenter"),
                        StageSeed::FilterSegmenter,
                    )?);
                }
                let prompts = plugin(
                    generator
                        .as_mut()
                        .expect("created")
                        .prompts(&self.case(id).input, &prediction),
                    &format!("re-prompting {id}"),
                )?;
                let m = segment_case(
                    segmenter.as_mut().expect("created"),
                    self.case(id),
                    &prompts,
                    self.keep_largest_components(),
                )?;
                io::write_labels(&r_path, &m)?;
                m
            };
            self.factory
                .bars
                .update("self-learning filter", i as u64 + 1, ids.len() as u64, id);
            candidates.push(FilterCandidate {
                case_id: id.as_str().into(),
                pseudo_label: prediction,
                reference,
            });
        }
        if self.is_part() {
            // A shard does only the per-case part; the merge selects among
            // all cases. A later step's shard needs no kept set: the final
            // network is already trained.
            self.finish(Step::Filter, vec![], started)?;
            return Ok(Some(BTreeMap::new()));
        }
        let mut filter =
            self.factory
                .filter(StageSlot::Filter, &dir.join("plugin"), StageSeed::Filter)?;
        let decisions = plugin(
            filter.select(RSlice::from_slice(&candidates)),
            "filter selection",
        )?;
        if decisions.len() != candidates.len() {
            return Err(invalid(format!(
                "the filter returned {} decisions for {} cases",
                decisions.len(),
                candidates.len()
            )));
        }
        write_json(&dir.join("decisions.json"), &decisions_to_json(&decisions))?;
        self.summary
            .measure_filter(&self.cases, &candidates, &decisions);
        let retrain_on = self.retrain_on();
        let kept: BTreeMap<String, LabelVolume> = candidates
            .into_iter()
            .zip(decisions.iter())
            .filter(|(_, d)| d.keep)
            .map(|(c, _)| {
                let target = match retrain_on {
                    RetrainTargets::Predictions => c.pseudo_label,
                    RetrainTargets::Reprompted => c.reference,
                };
                (c.case_id.to_string(), target)
            })
            .collect();
        if kept.is_empty() {
            return Err(invalid(
                "the filter kept no case; nothing to train the final network on",
            ));
        }
        let plugins = [
            StageSlot::RepromptGenerator,
            StageSlot::PromptableSegmenter,
            StageSlot::Filter,
        ]
        .iter()
        .map(|s| self.factory.stamp(*s))
        .collect();
        self.finish(Step::Filter, plugins, started)?;
        Ok(Some(kept))
    }

    fn predict_and_evaluate(
        &mut self,
        net1: &Path,
        net2: Option<&PathBuf>,
    ) -> crate::error::Result<()> {
        let started = Instant::now();
        let last = if net2.is_some() {
            Step::Network2
        } else {
            Step::Network1
        };
        let fp = self.fp(
            Step::Predictions,
            &[&self.step_fp(Step::Network1), &self.step_fp(last)],
        );
        let Some(dir) = self.begin(Step::Predictions, &fp)? else {
            return Ok(());
        };
        let test = self.ids(Split::Test);
        let mut models: Vec<(&str, &Path)> = vec![("network-1", net1)];
        if let Some(n2) = net2 {
            models.push(("final", n2.as_path()));
        }
        let mut predictions: BTreeMap<&str, BTreeMap<String, LabelVolume>> = BTreeMap::new();
        for (name, model) in &models {
            let out_dir = if *name == "final" || net2.is_none() {
                dir.clone()
            } else {
                dir.join(name)
            };
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            let mut net = None;
            let mut preds = BTreeMap::new();
            let refine = self.summary.refine_boundary_mm;
            for (i, id) in test.iter().enumerate() {
                let path = case_file(&out_dir, id, "");
                let case = self.case(id);
                // The report overlays the working-grid labels of `cropped/`.
                let working_path = case_file(&out_dir.join("cropped"), id, "");
                let pred = if working_path.exists() && path.exists() {
                    case.geometry
                        .crop
                        .crop_labels(&io::read_labels(&path)?)
                        .with_context(|| format!("{}", path.display()))?
                } else {
                    if net.is_none() {
                        net = Some(self.load_network(model, &dir.join(format!("{name}-plugin")))?);
                    }
                    let net = net.as_mut().expect("loaded");
                    write_prediction(net, case, refine, &path, &working_path)?
                };
                self.factory.bars.update(
                    &format!("predict ({name})"),
                    i as u64 + 1,
                    test.len() as u64,
                    id,
                );
                preds.insert(id.clone(), pred);
            }
            predictions.insert(name, preds);
        }
        self.finish(
            Step::Predictions,
            vec![self.factory.stamp(StageSlot::VolumetricSegmenter)],
            started,
        )?;

        let started = Instant::now();
        let fp = self.fp(Step::Evaluation, &[&self.step_fp(Step::Predictions)]);
        let Some(eval_dir) = self.begin(Step::Evaluation, &fp)? else {
            return Ok(());
        };
        for (name, preds) in &predictions {
            let scores = io::evaluate(&self.cases, preds)?;
            if !scores.is_empty() {
                io::write_scores(&eval_dir, name, &scores)?;
            }
            self.summary.test.insert(name.to_string(), scores);
        }
        self.finish(Step::Evaluation, vec![], started)?;
        Ok(())
    }
}

/// The fingerprint of the data every step starts from: the training and
/// test case ids (comma-separated) and, when they are not the defaults,
/// the `[dataset] spacing` the cases are resampled to, their
/// `bias_correction` and the `refine_boundary_mm` of their predictions.
/// Shared with the Slurm planner.
pub fn data_fingerprint(pipeline: &Pipeline, train: &str, test: &str) -> String {
    let mut parts = vec![train.to_string(), test.to_string()];
    let setting = |key: &str, default: &str| {
        pipeline
            .dataset
            .rest
            .get(key)
            .map(|v| v.to_string())
            .filter(|v| v != default)
            .map(|v| format!("{key}={v}"))
    };
    parts.extend(setting("spacing", "\"native\""));
    parts.extend(setting("bias_correction", "\"none\""));
    parts.extend(setting("refine_boundary_mm", ""));
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    fingerprint(&parts)
}

/// The fingerprint of `step` (see [`clisc_workdir`]): its name, the seed,
/// the plugins and settings of its slots, and `upstream` (the data and the
/// fingerprints of the steps it reads). Shared with the Slurm planner,
/// which predicts every step's fingerprint before anything runs.
pub fn step_fingerprint(factory: &StageFactory<'_>, step: Step, upstream: &[&str]) -> String {
    let slots: &[StageSlot] = match step {
        Step::PseudoLabels => &[StageSlot::PseudoLabeler],
        Step::Roi => &[StageSlot::RoiExtractor],
        Step::Prompts => &[StageSlot::PromptGenerator],
        Step::PseudoMasks => &[StageSlot::PromptableSegmenter],
        Step::Network1 | Step::Network2 => &[StageSlot::VolumetricSegmenter],
        Step::Filter => &[
            StageSlot::RepromptGenerator,
            StageSlot::PromptableSegmenter,
            StageSlot::Filter,
        ],
        _ => &[],
    };
    let mut parts: Vec<String> = vec![step.name().into(), factory.pipeline.run.seed.to_string()];
    parts.extend(slots.iter().map(|s| factory.identity(*s)));
    parts.extend(upstream.iter().map(|s| s.to_string()));
    fingerprint(&parts)
}

/// Predicts a test case and writes the prediction twice: on the working
/// grid to `working_path` (what the report overlays) and on the raw
/// FLAIR's grid and header to `path` (brought back from the network's
/// probabilities, see [`clisc_dataset::preprocess::Geometry::probability_to_cropped`],
/// its border refined there from the raw FLAIR with `refine_boundary_mm`).
/// Returns it on the crop box at the original spacing, where it is scored.
fn write_prediction(
    net: &mut VolumetricSegmenterBox,
    case: &PreparedCase,
    refine_boundary_mm: Option<f64>,
    path: &Path,
    working_path: &Path,
) -> crate::error::Result<LabelVolume> {
    let id = case.id();
    let probability = plugin(
        net.predict_probability(&case.input),
        &format!("predicting {id}"),
    )?;
    if let Some(dir) = working_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    io::write_labels(working_path, &probability.labels())?;
    let mut on_box = case
        .geometry
        .probability_to_cropped(&probability)
        .with_context(|| format!("case {id}"))?;
    if let Some(mm) = refine_boundary_mm {
        let raw = clisc_nifti::read(&case.flair_path)
            .with_context(|| format!("reading {}", case.flair_path.display()))?;
        on_box = case
            .geometry
            .refine_on_crop_box(id, on_box, &raw.data, mm)
            .map_err(|e| {
                invalid(format!(
                    "case {id}: refining the border on {}: {e}",
                    case.flair_path.display()
                ))
            })?;
    }
    let original = case
        .geometry
        .crop
        .uncrop(&on_box)
        .with_context(|| format!("case {id}"))?;
    io::write_labels_like(path, &original, &case.flair_path)?;
    Ok(on_box)
}

/// Writes labels on a case's cropped grid back in the grid and header of
/// its raw FLAIR.
fn write_original(
    case: &PreparedCase,
    labels: &LabelVolume,
    path: &Path,
) -> crate::error::Result<()> {
    io::write_labels_like(path, &case.restore(labels)?, &case.flair_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    /// A weight-free pipeline; `edit` replaces one line of it.
    const PIPELINE: &str = r#"
[run]
output = "work"
seed = 7

[dataset]
root = "data"
layout = "brats2020"
modalities = ["flair"]

[stages.pseudo_labeler]
plugin = "flair-intensity"

[stages.roi_extractor]
plugin = "cam"
settings = { epochs = 1 }

[stages.prompt_generator]
plugin = "box-points"
settings = { box_dilation = 5 }

[stages.promptable_segmenter]
plugin = "classic-prompt"

[stages.volumetric_segmenter]
plugin = "unet3d"
settings = { iterations = 10 }

[stages.reprompt_generator]
plugin = "box-points"

[stages.filter]
plugin = "s3f"
"#;

    /// Every step's own fingerprint (no upstream) for `PIPELINE` with
    /// `from` replaced by `to`.
    fn fingerprints(from: &str, to: &str) -> BTreeMap<Step, String> {
        assert!(PIPELINE.contains(from), "{from:?} is not in the pipeline");
        let text = PIPELINE.replacen(from, to, 1);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let mut registry = Registry::builtin();
        let pipeline = parse(&dir.path().join("p.toml"), &text, &mut registry).unwrap();
        let factory = StageFactory {
            pipeline: &pipeline,
            registry: &registry,
            device: "cpu".into(),
            bars: Bars::new(true),
        };
        Step::ALL
            .iter()
            .map(|&s| (s, step_fingerprint(&factory, s, &[])))
            .collect()
    }

    /// The steps whose fingerprint differs between `PIPELINE` and the edit.
    fn rerun_after(from: &str, to: &str) -> Vec<Step> {
        let before = fingerprints("", "");
        let after = fingerprints(from, to);
        Step::ALL
            .into_iter()
            .filter(|s| before[s] != after[s])
            .collect()
    }

    #[test]
    fn a_stage_setting_reruns_the_steps_that_use_its_slot() {
        // Each step's own fingerprint; steps downstream rerun as well
        // because the runner passes every step the fingerprints it reads
        // (`upstream_fingerprints_propagate`).
        assert_eq!(
            rerun_after("box_dilation = 5", "box_dilation = 4"),
            [Step::Prompts]
        );
        assert_eq!(
            rerun_after("iterations = 10", "iterations = 20"),
            [Step::Network1, Step::Network2]
        );
        // The promptable segmenter also re-prompts inside the filter.
        assert_eq!(
            rerun_after(
                "plugin = \"classic-prompt\"",
                "plugin = \"classic-prompt\"\nkeep_largest_components = 1"
            ),
            [Step::PseudoMasks, Step::Filter]
        );
        assert_eq!(
            rerun_after(
                "plugin = \"s3f\"",
                "plugin = \"s3f\"\nretrain_on = \"reprompted\""
            ),
            [Step::Filter]
        );
    }

    #[test]
    fn the_seed_reruns_everything_and_the_output_folder_nothing() {
        assert_eq!(rerun_after("seed = 7", "seed = 8"), Step::ALL);
        assert!(rerun_after("output = \"work\"", "output = \"elsewhere\"").is_empty());
    }

    #[test]
    fn upstream_fingerprints_propagate() {
        let pipeline_fp = fingerprints("", "");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let mut registry = Registry::builtin();
        let pipeline = parse(&dir.path().join("p.toml"), PIPELINE, &mut registry).unwrap();
        let factory = StageFactory {
            pipeline: &pipeline,
            registry: &registry,
            device: "cpu".into(),
            bars: Bars::new(true),
        };
        let alone = step_fingerprint(&factory, Step::Roi, &[]);
        assert_eq!(alone, pipeline_fp[&Step::Roi]);
        let a = step_fingerprint(&factory, Step::Roi, &["labels-a"]);
        let b = step_fingerprint(&factory, Step::Roi, &["labels-b"]);
        assert!(a != alone && a != b);
    }

    /// The data fingerprint of `PIPELINE` with `from` replaced by `to`.
    fn data_fp(from: &str, to: &str) -> String {
        let text = PIPELINE.replacen(from, to, 1);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let mut registry = Registry::builtin();
        let pipeline = parse(&dir.path().join("p.toml"), &text, &mut registry).unwrap();
        data_fingerprint(&pipeline, "a,b", "c")
    }

    #[test]
    fn dataset_settings_that_change_the_data_change_its_fingerprint() {
        let base = data_fp("", "");
        let line = "modalities = [\"flair\"]";
        let with = |extra: &str| data_fp(line, &format!("{line}\n{extra}"));
        // Defaults written out are the same data.
        assert_eq!(with("spacing = \"native\""), base);
        assert_eq!(with("bias_correction = \"none\""), base);
        for setting in [
            "spacing = [2.5, 2.5, 2.5]",
            "bias_correction = \"polynomial\"",
            "refine_boundary_mm = 4.0",
        ] {
            assert_ne!(with(setting), base, "{setting}");
        }
        assert_ne!(
            with("refine_boundary_mm = 4.0"),
            with("refine_boundary_mm = 3.0")
        );
    }
}
