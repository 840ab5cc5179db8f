//! `clisc eval --pred DIR --gt DIR`: scores predictions against ground
//! truth (Dice, HD95, sensitivity, specificity; WT and, when both carry
//! BraTS labels, TC and ET), prints a table and writes CSV and JSON.

use anyhow::{bail, Context};
use clap::Args;
use clisc_metrics::{evaluate_case, Evaluation};
use clisc_workdir::write_atomic;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Arguments of `clisc eval`.
#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// Predictions: `<case>.nii[.gz]` files, or BraTS-style folders
    /// `<case>/<case>_seg.nii[.gz]` (or `<case>/<case>.nii[.gz]`).
    #[arg(long)]
    pub pred: PathBuf,
    /// Ground truth in either layout (also `<case>_seg.nii[.gz]` files).
    #[arg(long)]
    pub gt: PathBuf,
    /// Where to write `metrics.csv` and `metrics.json` (default: the
    /// prediction folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn strip_nifti(name: &str) -> Option<&str> {
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
}

/// Label files in `dir` by case id: `<id>.nii[.gz]` and `<id>_seg.nii[.gz]`
/// files, and `<id>/<id>_seg.nii[.gz]` or `<id>/<id>.nii[.gz]` folders.
pub(crate) fn find_label_files(dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            let candidates = ["_seg.nii.gz", "_seg.nii", ".nii.gz", ".nii"]
                .map(|s| p.join(format!("{name}{s}")));
            if let Some(f) = candidates.into_iter().find(|c| c.is_file()) {
                out.insert(name, f);
            }
        } else if let Some(stem) = strip_nifti(&name) {
            let id = stem.strip_suffix("_seg").unwrap_or(stem).to_string();
            if let Some(prev) = out.insert(id.clone(), p.clone()) {
                bail!(
                    "case {id} has two label files: {} and {}",
                    prev.display(),
                    p.display()
                );
            }
        }
    }
    Ok(out)
}

/// Runs the evaluation.
pub(crate) fn run(args: EvalArgs) -> anyhow::Result<()> {
    let preds = find_label_files(&args.pred)?;
    let gts = find_label_files(&args.gt)?;
    let ids: Vec<&String> = preds.keys().filter(|id| gts.contains_key(*id)).collect();
    let no_gt: Vec<&String> = preds.keys().filter(|id| !gts.contains_key(*id)).collect();
    let no_pred: Vec<&String> = gts.keys().filter(|id| !preds.contains_key(*id)).collect();
    if ids.is_empty() {
        bail!(
            "no case has both a prediction in {} ({} files) and ground truth in {} ({} files)",
            args.pred.display(),
            preds.len(),
            args.gt.display(),
            gts.len()
        );
    }
    if !no_gt.is_empty() {
        tracing::warn!(
            "{} prediction(s) without ground truth, not scored (e.g. {})",
            no_gt.len(),
            no_gt[0]
        );
    }
    if !no_pred.is_empty() {
        tracing::info!(
            "{} ground-truth case(s) without prediction, not scored (e.g. {})",
            no_pred.len(),
            no_pred[0]
        );
    }
    let mut cases = Vec::new();
    for id in ids {
        let (pred, _) = clisc_nifti::read_labels(&preds[id])?;
        let (gt, _) = clisc_nifti::read_labels(&gts[id])?;
        cases.push(
            evaluate_case(id, &pred, &gt)
                .map_err(|e| anyhow::anyhow!("{}: {e}", preds[id].display()))?,
        );
    }
    let eval = Evaluation::from_cases(cases);
    print!("{}", eval.table());
    let out = args.out.unwrap_or(args.pred);
    write_evaluation(&eval, &out)
        .with_context(|| format!("writing metrics to {}", out.display()))?;
    println!(
        "wrote {} and {}",
        out.join("metrics.csv").display(),
        out.join("metrics.json").display()
    );
    Ok(())
}

/// Writes `metrics.csv` and `metrics.json` into `dir` (created), each
/// through a temporary file and a rename.
fn write_evaluation(eval: &Evaluation, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_atomic(&dir.join("metrics.csv"), eval.to_csv().as_bytes())?;
    write_atomic(&dir.join("metrics.json"), eval.to_json().as_bytes())
}
