//! Loading and preprocessing the dataset of a pipeline into [`Cases`].

use super::cases::{Cases, PreparedCase, Split};
use super::config::Pipeline;
use crate::dataset::{Dataset, DatasetLayout};
use crate::preprocess::{preprocess, PreprocessOptions};
use crate::splits::Splits;
use anyhow::{anyhow, Context};
use clisc_sdk::LabelVolume;
use std::path::Path;

/// Opens the dataset, writes the split to `<output>/splits.csv`, and
/// preprocesses every case of the split (FLAIR, CLISC preprocessing).
pub fn prepare_cases(pipeline: &Pipeline) -> anyhow::Result<Cases> {
    let (dataset, splits) = open_dataset(pipeline)?;
    std::fs::create_dir_all(&pipeline.run.output)?;
    crate::splits::write_csv(&pipeline.run.output.join("splits.csv"), &splits)?;
    prepare(pipeline, &dataset, &splits, &|_| true)
}

/// The split of the pipeline's dataset (every case id and its split),
/// without reading any image: what the Slurm planner and a shard need to
/// know which cases exist.
pub fn dataset_splits(pipeline: &Pipeline) -> anyhow::Result<Splits> {
    Ok(open_dataset(pipeline)?.1)
}

/// Like [`prepare_cases`], but preprocesses only the cases `keep` accepts
/// (a shard's own) and does not write `splits.csv` (shards run at the same
/// time; the merges write it). Returns the whole split with them.
pub fn prepare_selected(
    pipeline: &Pipeline,
    keep: &dyn Fn(&str) -> bool,
) -> anyhow::Result<(Cases, Splits)> {
    let (dataset, splits) = open_dataset(pipeline)?;
    let cases = prepare(pipeline, &dataset, &splits, keep)?;
    Ok((cases, splits))
}

fn open_dataset(pipeline: &Pipeline) -> anyhow::Result<(Dataset, Splits)> {
    let layout = DatasetLayout::from_table(&pipeline.dataset.rest)
        .with_context(|| format!("{}: [dataset]", pipeline.source.display()))?;
    let root = Path::new(&pipeline.dataset.root);
    let dataset = Dataset::open(root, &layout)?;
    for skipped in &dataset.skipped {
        tracing::warn!("skipping case {}: {}", skipped.id, skipped.reason);
    }
    let splits = dataset.splits()?;
    Ok((dataset, splits))
}

fn prepare(
    pipeline: &Pipeline,
    dataset: &Dataset,
    splits: &Splits,
    keep: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Cases> {
    let root = Path::new(&pipeline.dataset.root);
    let mut cases = Cases::new();
    for (id, split) in splits.iter().filter(|(id, _)| keep(id)) {
        let (id, split) = (id.clone(), *split);
        let files = dataset
            .case(&id)
            .ok_or_else(|| anyhow!("split names case {id}, which is not in {}", root.display()))?;
        let (raw, _) = files.load_image(&["flair"])?;
        let pre = preprocess(&id, &raw, &PreprocessOptions::default())
            .map_err(|e| anyhow!("case {id}: {e}"))?;
        let labels = match files.load_seg()? {
            Some(seg) => Some(
                pre.crop
                    .crop_labels(&seg)
                    .map_err(|e| anyhow!("case {id} seg: {e}"))?,
            ),
            None => None,
        };
        let truth = labels.as_ref().map(|l| LabelVolume {
            grid: l.grid,
            data: l.data.iter().map(|&v| u8::from(v > 0)).collect(),
        });
        let crop = pre.crop;
        cases.insert(
            id.clone(),
            PreparedCase {
                input: pre.input,
                truth,
                labels,
                split,
                flair_path: files.modality_path("flair")?.to_path_buf(),
                sources: std::iter::once(files.modality_path("flair")?.to_path_buf())
                    .chain(files.seg.clone())
                    .collect(),
                restore: Box::new(move |l: &LabelVolume| {
                    crop.uncrop(l).expect("prediction on the cropped grid")
                }),
            },
        );
    }
    if !splits.values().any(|s| *s == Split::Test) {
        tracing::warn!("the test split is empty: nothing will be evaluated");
    }
    Ok(cases)
}
