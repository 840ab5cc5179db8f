//! Loading and preprocessing the dataset of a pipeline into [`Cases`].

use super::cases::{Cases, PreparedCase, Split};
use super::config::Pipeline;
use crate::dataset::{Dataset, DatasetLayout};
use crate::preprocess::{preprocess, PreprocessOptions};
use anyhow::{anyhow, Context};
use clisc_sdk::LabelVolume;
use std::path::Path;

/// Opens the dataset, writes the split to `<output>/splits.csv`, and
/// preprocesses every case of the split (FLAIR, CLISC preprocessing).
pub fn prepare_cases(pipeline: &Pipeline) -> anyhow::Result<Cases> {
    let layout = DatasetLayout::from_table(&pipeline.dataset.rest)
        .with_context(|| format!("{}: [dataset]", pipeline.source.display()))?;
    let root = Path::new(&pipeline.dataset.root);
    let dataset = Dataset::open(root, &layout)?;
    for skipped in &dataset.skipped {
        tracing::warn!("skipping case {}: {}", skipped.id, skipped.reason);
    }
    let splits = dataset.splits()?;
    std::fs::create_dir_all(&pipeline.run.output)?;
    crate::splits::write_csv(&pipeline.run.output.join("splits.csv"), &splits)?;
    let mut cases = Cases::new();
    for (id, split) in splits {
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
                restore: Box::new(move |l: &LabelVolume| {
                    crop.uncrop(l).expect("prediction on the cropped grid")
                }),
            },
        );
    }
    if !cases.values().any(|c| c.split == Split::Test) {
        tracing::warn!("the test split is empty: nothing will be evaluated");
    }
    Ok(cases)
}
