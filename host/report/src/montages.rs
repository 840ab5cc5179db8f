//! The report's per-case montages, drawn from whatever artefacts a run
//! (finished or partial) left in its work folder: a missing artefact is
//! simply not drawn, and a case with none is not shown.
//!
//! Training cases: FLAIR, one CAM column per ROI round, and an overlay with
//! the final ROI, the prompts, the promptable segmenter's pseudo-label, the
//! first network's prediction (made for the self-learning filter) and the
//! ground truth. Test cases: FLAIR and an overlay with the final model's
//! prediction and the ground truth.

use crate::error::ReportError;
use crate::montage::{
    choose_slices, write_montage, Contour, MontageInput, BOX_COLOUR, GROUND_TRUTH_COLOUR,
    NEGATIVE_COLOUR, POSITIVE_COLOUR, PREDICTION_COLOUR, PSEUDO_LABEL_COLOUR, ROI_COLOUR,
};
use clisc_pipeline::artefacts::{prompts_from_json, PromptSetRecord};
use clisc_pipeline::cases::{case_file, ids_in, Cases, PreparedCase, Split};
use clisc_pipeline::io;
use clisc_sdk::{CasePrompts, LabelVolume, RoiResult};
use clisc_workdir::Step;
use std::path::{Path, PathBuf};

/// At most this many training cases get a montage.
pub const MAX_TRAINING: usize = 4;
/// At most this many test cases get a montage.
pub const MAX_TEST: usize = 4;

/// What each colour of a montage means, in drawing order (a later one is
/// drawn over an earlier one).
pub const LEGEND: [(&str, [u8; 3]); 7] = [
    ("pseudo-label (promptable segmenter)", PSEUDO_LABEL_COLOUR),
    ("network prediction", PREDICTION_COLOUR),
    ("ground truth", GROUND_TRUTH_COLOUR),
    ("final ROI", ROI_COLOUR),
    ("prompt box", BOX_COLOUR),
    ("positive point", POSITIVE_COLOUR),
    ("negative point", NEGATIVE_COLOUR),
];

/// One montage PNG of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Montage {
    /// Case identifier.
    pub case: String,
    /// What the columns and rows show.
    pub caption: String,
    /// The PNG file.
    pub png: PathBuf,
}

/// The artefacts of one case found in the work folder.
#[derive(Default)]
struct Found {
    roi: Option<RoiResult>,
    prompts: Option<CasePrompts>,
    pseudo_label: Option<LabelVolume>,
    prediction: Option<LabelVolume>,
}

impl Found {
    fn is_empty(&self) -> bool {
        self.roi.is_none()
            && self.prompts.is_none()
            && self.pseudo_label.is_none()
            && self.prediction.is_none()
    }
}

/// Writes the montages of up to [`MAX_TRAINING`] training and [`MAX_TEST`]
/// test cases into `out` (`train-<case>.png`, `test-<case>.png`). A case
/// whose artefacts cannot be read is logged and skipped: the report of a
/// damaged run still gets written.
pub(crate) fn write_montages(work: &Path, cases: &Cases, out: &Path) -> Vec<Montage> {
    remove_old_montages(out);
    let mut montages = Vec::new();
    let splits = [(Split::Train, MAX_TRAINING), (Split::Test, MAX_TEST)];
    for (split, max) in splits {
        for id in ids_in(cases, split).iter().take(max) {
            match case_montage(work, &cases[id], out) {
                Ok(Some(m)) => montages.push(m),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    "report: no montage of case {id}: {}",
                    clisc_pipeline::error::display_chain(&e)
                ),
            }
        }
    }
    montages
}

/// Removes the montages of an earlier report (its cases may differ).
fn remove_old_montages(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        let name = name.unwrap_or_default();
        if name.ends_with(".png") && (name.starts_with("train-") || name.starts_with("test-")) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn case_montage(
    work: &Path,
    case: &PreparedCase,
    out: &Path,
) -> Result<Option<Montage>, ReportError> {
    let train = case.split == Split::Train;
    let found = if train {
        training_artefacts(work, case.id())?
    } else {
        test_artefacts(work, case.id())?
    };
    if found.is_empty() {
        return Ok(None);
    }
    let mut input = MontageInput::new(&case.input);
    input.roi = found.roi.as_ref();
    input.prompts = found.prompts.as_ref();
    let layers = [
        ("pseudo-label", &found.pseudo_label, PSEUDO_LABEL_COLOUR),
        ("prediction", &found.prediction, PREDICTION_COLOUR),
        ("ground truth", &case.truth, GROUND_TRUTH_COLOUR),
    ];
    for (name, labels, colour) in layers {
        if let Some(labels) = labels {
            input.contours.push(Contour {
                name,
                labels,
                colour,
            });
        }
    }
    input.contours_column = true;
    input.scale = scale_for(case.input.image.grid.dims());
    input.slices = Some(union_slices(&input));
    let kind = if train { "train" } else { "test" };
    let png = out.join(format!("{kind}-{}.png", case.id()));
    let slices = write_montage(&input, &png)?;
    if slices.is_empty() {
        return Ok(None);
    }
    Ok(Some(Montage {
        case: case.id().to_string(),
        caption: caption(train, &found, input.contours.len(), &slices),
        png,
    }))
}

/// Tiles of about 200 pixels (a montage of 5 columns fits the page): small
/// synthetic volumes are enlarged more than BraTS-sized ones.
fn scale_for([w, h, _]: [usize; 3]) -> usize {
    (200 / w.max(h).max(1)).clamp(1, 6)
}

/// Slices where anything drawn (final ROI or any contour) is present, so
/// that neither a missed tumour nor a false positive is left out.
fn union_slices(input: &MontageInput<'_>) -> Vec<usize> {
    let grid = input.case.image.grid;
    let mut union = LabelVolume::zeros(grid);
    let final_roi = input.roi.and_then(|r| r.final_round()).map(|r| &r.roi);
    let masks = input.contours.iter().map(|c| c.labels).chain(final_roi);
    for mask in masks {
        for (u, &v) in union.data.iter_mut().zip(mask.data.iter()) {
            *u |= u8::from(v != 0);
        }
    }
    let mut probe = MontageInput::new(input.case);
    probe.contours.push(Contour {
        name: "union",
        labels: &union,
        colour: [0; 3],
    });
    choose_slices(&probe, input.max_slices)
}

fn caption(train: bool, found: &Found, contours: usize, slices: &[usize]) -> String {
    let mut columns = vec!["FLAIR".to_string()];
    if let Some(roi) = &found.roi {
        columns.extend(roi.rounds.iter().map(|r| format!("CAM ({})", r.name)));
    }
    if found.roi.is_some() || found.prompts.is_some() {
        columns.push("final ROI and prompts".into());
    }
    if contours > 0 {
        columns.push("contours".into());
    }
    let slices: Vec<String> = slices.iter().map(|z| z.to_string()).collect();
    format!(
        "{} case. Columns: {}. Rows: axial slices {} (cropped grid).",
        if train { "Training" } else { "Test" },
        columns.join(", "),
        slices.join(", ")
    )
}

fn training_artefacts(work: &Path, id: &str) -> Result<Found, ReportError> {
    let roi_dir = work.join(Step::Roi.folder());
    let roi = if roi_dir.join(format!("{id}.rounds.json")).exists() {
        Some(io::read_roi_result(&roi_dir, id)?)
    } else {
        None
    };
    let prompts_path = work.join(Step::Prompts.folder()).join(format!("{id}.json"));
    let prompts = io::read_json_if_present::<Vec<PromptSetRecord>>(&prompts_path)?
        .map(|records| prompts_from_json(&records));
    let filter_predictions = work.join(Step::Filter.folder()).join("predictions");
    Ok(Found {
        roi,
        prompts,
        pseudo_label: labels_if_present(&case_file(
            &work.join(Step::PseudoMasks.folder()),
            id,
            "",
        ))?,
        prediction: labels_if_present(&case_file(&filter_predictions, id, ""))?,
    })
}

fn test_artefacts(work: &Path, id: &str) -> Result<Found, ReportError> {
    // The final model's predictions on the cropped grid (the first network's
    // when the pipeline has no filter).
    let cropped = work.join(Step::Predictions.folder()).join("cropped");
    Ok(Found {
        prediction: labels_if_present(&case_file(&cropped, id, ""))?,
        ..Found::default()
    })
}

fn labels_if_present(path: &Path) -> Result<Option<LabelVolume>, ReportError> {
    if path.exists() {
        Ok(Some(io::read_labels(path)?))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clisc_sdk::stage::{CaseInput, RoiRound};
    use clisc_sdk::{Grid, Volume};

    fn case(id: &str, split: Split, grid: Grid, truth: &LabelVolume) -> PreparedCase {
        let flair: Vec<f32> = (0..grid.len()).map(|i| (i % 13) as f32).collect();
        PreparedCase {
            input: CaseInput {
                id: id.into(),
                image: Volume::single(grid, "flair", flair),
                brain_mask: LabelVolume {
                    grid,
                    data: vec![1u8; grid.len()].into(),
                },
            },
            truth: Some(truth.clone()),
            labels: None,
            split,
            flair_path: PathBuf::new(),
            sources: Vec::new(),
            geometry: clisc_dataset::preprocess::Geometry::identity(grid),
            working_spacing: None,
        }
    }

    /// A run that stopped after the pseudo-masks: training montages from
    /// what exists, no test montage (no prediction yet), stale PNGs gone.
    #[test]
    fn partial_run_gets_training_montages_only() {
        let grid = Grid::new([12, 10, 6], [1.0; 3]);
        let mut blob = LabelVolume::zeros(grid);
        for z in 2..4 {
            for y in 3..6 {
                for x in 4..8 {
                    blob.data[grid.index(x, y, z)] = 1;
                }
            }
        }
        let mut cases = Cases::new();
        cases.insert("a".into(), case("a", Split::Train, grid, &blob));
        cases.insert("b".into(), case("b", Split::Train, grid, &blob));
        cases.insert("t".into(), case("t", Split::Test, grid, &blob));
        let work = tempfile::tempdir().unwrap();
        let roi = RoiResult {
            rounds: vec![RoiRound {
                name: "initial".into(),
                cam: Volume::single(grid, "cam", vec![0.7; grid.len()]),
                roi: blob.clone(),
            }]
            .into(),
        };
        let roi_dir = work.path().join(Step::Roi.folder());
        std::fs::create_dir_all(&roi_dir).unwrap();
        io::write_roi_result(&roi_dir, "a", &roi).unwrap();
        let masks = work.path().join(Step::PseudoMasks.folder());
        io::write_labels(&case_file(&masks, "b", ""), &blob).unwrap();
        let out = work.path().join(Step::Report.folder());
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("test-old.png"), b"stale").unwrap();

        let montages = write_montages(work.path(), &cases, &out);
        let names: Vec<&str> = montages.iter().map(|m| m.case.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(montages.iter().all(|m| m.png.exists()));
        assert!(montages[0].caption.contains("CAM (initial)"));
        assert!(!montages[1].caption.contains("CAM"));
        assert!(!out.join("test-old.png").exists());
        let img = image::open(&montages[0].png).unwrap().to_rgb8();
        let has = |c: [u8; 3]| img.pixels().any(|p| p.0 == c);
        assert!(has(ROI_COLOUR) && !has(PSEUDO_LABEL_COLOUR));
    }
}
