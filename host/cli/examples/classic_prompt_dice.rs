//! Measures the `classic-prompt` segmenter against ground truth, prompted
//! the way CLISC prompts SAM but from the ground-truth mask (so the
//! figure isolates the segmenter from ROI quality):
//!
//! * per axial slice holding tumour: box = the mask's bounding box dilated
//!   by 10 px; 5 positive points among the mask pixels whose normalised
//!   intensity is above 0.6 of the mask's range (first, n/3, n/2, 2n/3 and
//!   last in row-major order); 4 negative points at the box corners;
//! * slices are the preprocessed (cropped, clipped, z-scored) FLAIR;
//! * 3D mask = the stacked slice masks restricted to the brain.
//!
//! Reports mean slice Dice (slices with tumour) and mean 3D Dice per case.
//!
//! Usage: `cargo run -p clisc --example classic_prompt_dice -- DATA_DIR
//! [alpha]` where DATA_DIR holds BraTS-2020-style case folders
//! (`<case>/<case>_flair.nii.gz`, `<case>/<case>_seg.nii.gz`), e.g.
//! written by `clisc synth --out DATA_DIR`.
use clisc_dataset::preprocess::{preprocess, PreprocessOptions};
use clisc_imaging::overlap::{bbox_2d, dice};
use clisc_sdk::abi_stable::std_types::ROption;
use clisc_sdk::stage::CaseInput;
use clisc_sdk::{BoxXyxy, Image2d, LabelVolume, PluginError, PromptPoint, PromptSet};
use clisc_weight_free::classic::ClassicPrompt;
use std::path::{Path, PathBuf};

/// CLISC's prompts for one slice from a binary mask (see the module docs).
fn prompts_from_mask(image: &Image2d, mask: &[u8], z: u32) -> Option<PromptSet> {
    let (w, h) = (image.width as usize, image.height as usize);
    let [x0, y0, x1, y1] = bbox_2d(mask, w)?;
    let d = 10usize;
    let b = BoxXyxy {
        x0: x0.saturating_sub(d) as f32,
        y0: y0.saturating_sub(d) as f32,
        x1: (x1 + d).min(w - 1) as f32,
        y1: (y1 + d).min(h - 1) as f32,
    };
    let roi: Vec<usize> = (0..mask.len()).filter(|&i| mask[i] != 0).collect();
    let (lo, hi) = roi
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &i| {
            (lo.min(image.data[i]), hi.max(image.data[i]))
        });
    let bright: Vec<usize> = if hi > lo {
        roi.iter()
            .copied()
            .filter(|&i| (image.data[i] - lo) / (hi - lo) > 0.6)
            .collect()
    } else {
        roi.clone()
    };
    let n = bright.len();
    let mut points: Vec<PromptPoint> = [0, n / 3, n / 2, 2 * n / 3, n - 1]
        .iter()
        .map(|&k| PromptPoint {
            x: (bright[k] % w) as f32,
            y: (bright[k] / w) as f32,
            positive: true,
        })
        .collect();
    for (x, y) in [(b.x0, b.y0), (b.x1, b.y0), (b.x0, b.y1), (b.x1, b.y1)] {
        points.push(PromptPoint {
            x,
            y,
            positive: false,
        });
    }
    Some(PromptSet {
        slice: z,
        bbox: ROption::RSome(b),
        points: points.into(),
    })
}

/// Segments every tumour slice of a preprocessed case from prompts derived
/// from `truth` (labels > 0 = whole tumour); returns the slice Dices and
/// the 3D Dice of the stacked masks restricted to the brain.
pub fn measure_case(
    seg: &ClassicPrompt,
    case: &CaseInput,
    truth: &LabelVolume,
) -> Result<(Vec<f64>, f64), PluginError> {
    let grid = case.image.grid;
    let mut pred = LabelVolume::zeros(grid);
    let mut slices = Vec::new();
    for z in 0..grid.shape[2] as usize {
        let gt: Vec<u8> = truth
            .axial_slice(z)
            .data
            .iter()
            .map(|&v| u8::from(v > 0))
            .collect();
        let image = case.image.axial_slice("flair", z)?;
        let Some(set) = prompts_from_mask(&image, &gt, z as u32) else {
            continue;
        };
        let mut m = seg.segment_one(&image, &set)?;
        let brain = case.brain_mask.axial_slice(z);
        for (v, b) in m.data.iter_mut().zip(brain.data.iter()) {
            *v &= u8::from(*b != 0);
        }
        slices.push(dice(&m.data, &gt));
        pred.set_axial_slice(z, &m)?;
    }
    let gt3: Vec<u8> = truth.data.iter().map(|&v| u8::from(v > 0)).collect();
    Ok((slices, dice(&pred.data, &gt3)))
}

fn find(dir: &Path, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            name.ends_with(&format!("{suffix}.nii.gz")) || name.ends_with(&format!("{suffix}.nii"))
        })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let root = PathBuf::from(
        args.get(1)
            .ok_or_else(|| anyhow::anyhow!("usage: classic_prompt_dice DATA_DIR [alpha]"))?,
    );
    let mut seg = ClassicPrompt::default();
    if let Some(a) = args.get(2) {
        seg.alpha = a.parse()?;
    }
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let (mut slice_dices, mut case_dices) = (Vec::new(), Vec::new());
    for dir in cases {
        let (Some(flair), Some(seg_file)) = (find(&dir, "_flair"), find(&dir, "_seg")) else {
            continue;
        };
        let id = dir.file_name().unwrap().to_string_lossy().to_string();
        let (raw, _) = clisc_nifti::read_volume(&flair, "flair")?;
        let (labels, _) = clisc_nifti::read_labels(&seg_file)?;
        let pre = preprocess(&id, &raw, &PreprocessOptions::default())?;
        let truth = pre.geometry.to_working(&labels)?;
        let (case_slices, d3) = measure_case(&seg, &pre.input, &truth)?;
        let mean = case_slices.iter().sum::<f64>() / case_slices.len().max(1) as f64;
        println!(
            "{id}: 3D Dice {d3:.4}, mean slice Dice {mean:.4} over {} slices",
            case_slices.len()
        );
        slice_dices.extend(case_slices);
        case_dices.push(d3);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "classic-prompt (alpha {}): {} cases, mean 3D Dice {:.4}; {} slices, mean slice Dice {:.4}",
        seg.alpha,
        case_dices.len(),
        mean(&case_dices),
        slice_dices.len(),
        mean(&slice_dices)
    );
    Ok(())
}
