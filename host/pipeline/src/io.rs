//! Reading and writing the runner's artefacts in the work folder (NIfTI
//! volumes and JSON records), atomically.

use crate::error::{invalid, WithContext};
use clisc_sdk::stage::{RoiResult, RoiRound};
use clisc_sdk::{LabelVolume, Volume};
use clisc_workdir::temporary_sibling;
use std::path::Path;

/// Reads a JSON record; errors name the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> crate::error::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// [`read_json`] of a record that may not have been written (yet).
pub fn read_json_if_present<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> crate::error::Result<Option<T>> {
    path.exists().then(|| read_json(path)).transpose()
}

/// Writes a JSON record (pretty-printed), atomically.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> crate::error::Result<()> {
    let bytes =
        serde_json::to_vec_pretty(value).with_context(|| format!("writing {}", path.display()))?;
    clisc_workdir::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

/// Reads a label volume written by [`write_labels`].
pub fn read_labels(path: &Path) -> crate::error::Result<LabelVolume> {
    Ok(clisc_nifti::read_labels(path)
        .with_context(|| format!("reading {}", path.display()))?
        .0)
}

/// Writes a label volume on its own grid, atomically.
pub fn write_labels(path: &Path, labels: &LabelVolume) -> crate::error::Result<()> {
    atomically(path, |tmp| {
        Ok(clisc_nifti::write_labels(tmp, labels, None)?)
    })
}

/// Writes a label volume with the header conventions (sform/qform codes)
/// of the reference image `like`, atomically.
pub(crate) fn write_labels_like(
    path: &Path,
    labels: &LabelVolume,
    like: &Path,
) -> crate::error::Result<()> {
    let reference = clisc_nifti::read(like)
        .with_context(|| format!("reading reference header {}", like.display()))?
        .info;
    atomically(path, |tmp| {
        Ok(clisc_nifti::write_labels(tmp, labels, Some(&reference))?)
    })
}

/// Runs `write` on a temporary sibling of `path` and renames the result into
/// place (creating the folder first): readers and resumed runs see the old
/// file or the complete new one. When `write` fails (e.g. a full disk) the
/// temporary file is removed and the error names `path`.
pub fn atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the folder of {}", path.display()))?;
    }
    let tmp = temporary_sibling(path);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Writes every round of an ROI result: `<case>.<round>.cam.nii.gz`,
/// `<case>.<round>.roi.nii.gz`, then `<case>.rounds.json` (last, so its
/// presence means the case is complete).
pub fn write_roi_result(dir: &Path, case: &str, result: &RoiResult) -> crate::error::Result<()> {
    let mut names = Vec::new();
    for round in result.rounds.iter() {
        let name = round.name.to_string();
        let cam = round
            .cam
            .require_channel("cam")
            .with_context(|| format!("case {case} round {name}"))?;
        let cam_path = dir.join(format!("{case}.{name}.cam.nii.gz"));
        atomically(&cam_path, |tmp| {
            Ok(clisc_nifti::write_f32(tmp, &round.cam.grid, cam, None)?)
        })?;
        write_labels(&dir.join(format!("{case}.{name}.roi.nii.gz")), &round.roi)?;
        names.push(name);
    }
    write_json(&dir.join(format!("{case}.rounds.json")), &names)
}

/// Reads back what [`write_roi_result`] wrote.
pub fn read_roi_result(dir: &Path, case: &str) -> crate::error::Result<RoiResult> {
    let names: Vec<String> = read_json(&dir.join(format!("{case}.rounds.json")))?;
    let mut rounds = Vec::new();
    for name in names {
        let cam_path = dir.join(format!("{case}.{name}.cam.nii.gz"));
        let (cam, _) = clisc_nifti::read_volume(&cam_path, "cam")
            .with_context(|| format!("reading {}", cam_path.display()))?;
        let roi = read_labels(&dir.join(format!("{case}.{name}.roi.nii.gz")))?;
        rounds.push(RoiRound {
            name: name.into(),
            cam: Volume {
                grid: cam.grid,
                channels: cam.channels,
            },
            roi,
        });
    }
    Ok(RoiResult {
        rounds: rounds.into(),
    })
}

/// Scores predictions of test cases that have ground truth, on the crop
/// box at the original spacing (where the labels are, whatever grid the
/// network saw): whole tumor (TC/ET too for a prediction with BraTS
/// sub-region labels; the network's predictions are binary).
pub fn evaluate(
    cases: &super::cases::Cases,
    predictions: &std::collections::BTreeMap<String, LabelVolume>,
) -> crate::error::Result<Vec<super::summary::CaseScore>> {
    use clisc_metrics::{evaluate_case, Region};
    let mut scores = Vec::new();
    for (id, pred) in predictions {
        let Some(case) = cases.get(id) else {
            continue;
        };
        let Some(labels) = case.labels.as_ref() else {
            continue;
        };
        let m = evaluate_case(id, pred, labels).map_err(|e| invalid(format!("{e}")))?;
        let wt = m.regions[&Region::WholeTumour];
        let mut extra = std::collections::BTreeMap::new();
        extra.insert("sensitivity".to_string(), wt.sensitivity);
        extra.insert("specificity".to_string(), wt.specificity);
        // Predicted over true whole-tumour volume: below 1 under-segments.
        let truth_voxels = labels.data.iter().filter(|&&v| v > 0).count();
        if truth_voxels > 0 {
            let predicted = pred.data.iter().filter(|&&v| v > 0).count();
            extra.insert(
                "volume_ratio".to_string(),
                predicted as f64 / truth_voxels as f64,
            );
        }
        scores.push(super::summary::CaseScore {
            case: id.clone(),
            dice: wt.dice,
            hd95: wt.hd95,
            extra,
        });
    }
    Ok(scores)
}

/// Writes `<name>.csv` and `<name>.json` with per-case scores.
pub(crate) fn write_scores(
    dir: &Path,
    name: &str,
    scores: &[super::summary::CaseScore],
) -> crate::error::Result<()> {
    let mut csv = String::from("case,dice,hd95_mm,sensitivity,specificity\n");
    for s in scores {
        let hd = s
            .hd95
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "undefined".into());
        let get = |k: &str| {
            s.extra
                .get(k)
                .map(|v| format!("{v:.6}"))
                .unwrap_or_default()
        };
        csv += &format!(
            "{},{:.6},{hd},{},{}\n",
            s.case,
            s.dice,
            get("sensitivity"),
            get("specificity")
        );
    }
    let csv_path = dir.join(format!("{name}.csv"));
    clisc_workdir::write_atomic(&csv_path, csv.as_bytes())
        .with_context(|| format!("writing {}", csv_path.display()))?;
    write_json(&dir.join(format!("{name}.json")), &scores)
}
