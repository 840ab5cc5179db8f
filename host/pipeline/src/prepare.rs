//! Loading and preprocessing the dataset of a pipeline into [`Cases`].

use super::cases::{Cases, PreparedCase, Split};
use super::config::Pipeline;
use crate::error::{invalid, WithContext};
use clisc_dataset::preprocess::{preprocess, PreprocessOptions};
use clisc_dataset::splits::Splits;
use clisc_dataset::{Dataset, DatasetLayout, TargetSpacing};
use clisc_sdk::LabelVolume;
use std::path::Path;

/// Opens the dataset, writes the split to `<output>/splits.csv`, and
/// preprocesses every case of the split (FLAIR, CLISC preprocessing at the
/// `[dataset] spacing`).
pub fn prepare_cases(pipeline: &Pipeline) -> crate::error::Result<Cases> {
    let (dataset, splits) = open_dataset(pipeline)?;
    std::fs::create_dir_all(&pipeline.run.output)
        .with_context(|| format!("creating work folder {}", pipeline.run.output.display()))?;
    let csv = pipeline.run.output.join("splits.csv");
    clisc_dataset::splits::write_csv(&csv, &splits)
        .with_context(|| format!("writing {}", csv.display()))?;
    prepare(pipeline, &dataset, &splits, &|_| true)
}

/// The split of the pipeline's dataset (every case id and its split),
/// without reading any image: what the Slurm planner and a shard need to
/// know which cases exist.
pub fn dataset_splits(pipeline: &Pipeline) -> crate::error::Result<Splits> {
    Ok(open_dataset(pipeline)?.1)
}

/// Like [`prepare_cases`], but preprocesses only the cases `keep` accepts
/// (a shard's own) and does not write `splits.csv` (shards run at the same
/// time; the merges write it). Returns the whole split with them.
pub fn prepare_selected(
    pipeline: &Pipeline,
    keep: &dyn Fn(&str) -> bool,
) -> crate::error::Result<(Cases, Splits)> {
    let (dataset, splits) = open_dataset(pipeline)?;
    let cases = prepare(pipeline, &dataset, &splits, keep)?;
    Ok((cases, splits))
}

/// The pipeline's `[dataset]` table as a layout, errors naming the file.
pub(crate) fn layout(pipeline: &Pipeline) -> crate::error::Result<DatasetLayout> {
    DatasetLayout::from_table(&pipeline.dataset.rest)
        .with_context(|| format!("{}: [dataset]", pipeline.source.display()))
}

fn open_dataset(pipeline: &Pipeline) -> crate::error::Result<(Dataset, Splits)> {
    let layout = layout(pipeline)?;
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
) -> crate::error::Result<Cases> {
    let root = Path::new(&pipeline.dataset.root);
    let layout = layout(pipeline)?;
    let spacing = working_spacing(layout.spacing, dataset, splits)?;
    match spacing {
        Some(s) => tracing::info!("stages work at {:.3} x {:.3} x {:.3} mm", s[0], s[1], s[2]),
        None => tracing::info!("stages work at each case's own spacing"),
    }
    let options = PreprocessOptions {
        spacing,
        bias_correction: layout.bias_correction,
        ..PreprocessOptions::default()
    };
    let mut cases = Cases::new();
    for (id, split) in splits.iter().filter(|(id, _)| keep(id)) {
        let (id, split) = (id.clone(), *split);
        let files = dataset.case(&id).ok_or_else(|| {
            invalid(format!(
                "split names case {id}, which is not in {}",
                root.display()
            ))
        })?;
        let (raw, _) = files.load_image(&["flair"])?;
        let pre = preprocess(&id, &raw, &options).with_context(|| format!("case {id}"))?;
        let geometry = pre.geometry;
        let labels = match files.load_seg()? {
            Some(seg) => Some(
                geometry
                    .crop
                    .crop_labels(&seg)
                    .with_context(|| format!("case {id} seg"))?,
            ),
            None => None,
        };
        // Whole tumour on the working grid: resampled as one label, so its
        // border is that of the union of the tumour classes.
        let truth = labels
            .as_ref()
            .map(|l| {
                let whole = LabelVolume {
                    grid: l.grid,
                    data: l.data.iter().map(|&v| u8::from(v > 0)).collect(),
                };
                geometry.to_working(&geometry.crop.uncrop(&whole)?)
            })
            .transpose()
            .with_context(|| format!("case {id} seg"))?;
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
                geometry,
                working_spacing: spacing,
            },
        );
    }
    if !splits.values().any(|s| *s == Split::Test) {
        tracing::warn!("the test split is empty: nothing will be evaluated");
    }
    Ok(cases)
}

/// The voxel size the stages work at: `None` keeps each case's own;
/// `auto` is the per-axis median of the training cases' spacings, read
/// from their FLAIR headers.
fn working_spacing(
    rule: TargetSpacing,
    dataset: &Dataset,
    splits: &Splits,
) -> crate::error::Result<Option<[f64; 3]>> {
    match rule {
        TargetSpacing::Native => Ok(None),
        TargetSpacing::Mm(mm) => Ok(Some(mm)),
        TargetSpacing::Auto => {
            let mut per_axis: [Vec<f64>; 3] = Default::default();
            for (id, _) in splits.iter().filter(|(_, s)| **s == Split::Train) {
                let Some(files) = dataset.case(id) else {
                    continue;
                };
                let path = files.modality_path("flair")?;
                let header = clisc_nifti::read_header(path)?;
                let grid = clisc_nifti::grid_from_header(path, &header)?;
                for (axis, s) in per_axis.iter_mut().zip(grid.spacing) {
                    axis.push(s);
                }
            }
            if per_axis[0].is_empty() {
                return Err(invalid("[dataset] spacing = \"auto\": the training split has no case to take the median spacing of"));
            }
            Ok(Some(per_axis.map(|mut v| {
                v.sort_by(f64::total_cmp);
                let n = v.len();
                if n % 2 == 1 {
                    v[n / 2]
                } else {
                    (v[n / 2 - 1] + v[n / 2]) / 2.0
                }
            })))
        }
    }
}
