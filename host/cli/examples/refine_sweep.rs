//! Whole-tumour Dice of a run's test predictions before and after
//! boundary refinement ([`clisc_imaging::refine`]) with several band
//! widths: how `refine_boundary_mm` is chosen on a tune cohort. Prints one
//! Markdown table row per case and the means.
//!
//! ```sh
//! refine_sweep DATA PREDICTIONS BAND_MM...
//! ```
//!
//! `DATA` holds BraTS 2020 case folders (`<id>/<id>_flair.nii.gz`,
//! `<id>/<id>_seg.nii.gz`); `PREDICTIONS` holds a run's unrefined
//! predictions on each case's own grid (`<id>.nii.gz`, the run's
//! `08-predictions/` with `refine_boundary_mm` left out). The brain is
//! the FLAIR's nonzero voxels, as in a run. Run through
//! `bench/refine_sweep.sh`, which records the table.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

fn read(path: &Path) -> anyhow::Result<clisc_nifti::NiftiVolume> {
    clisc_nifti::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Dice of the prediction, then of its refinement with each band.
fn case_dice(data: &Path, prediction: &Path, id: &str, bands: &[f64]) -> anyhow::Result<Vec<f64>> {
    let flair = read(&data.join(id).join(format!("{id}_flair.nii.gz")))?;
    let truth: Vec<u8> = read(&data.join(id).join(format!("{id}_seg.nii.gz")))?
        .data
        .iter()
        .map(|&v| u8::from(v > 0.0))
        .collect();
    let predicted: Vec<u8> = read(prediction)?
        .data
        .iter()
        .map(|&v| u8::from(v > 0.5))
        .collect();
    if predicted.len() != truth.len() || flair.data.len() != truth.len() {
        bail!("{id}: prediction, FLAIR and segmentation differ in size");
    }
    let brain: Vec<u8> = flair.data.iter().map(|&v| u8::from(v != 0.0)).collect();
    let grid = flair.grid;
    let mut dice = vec![clisc_imaging::overlap::dice(&predicted, &truth)];
    for &band in bands {
        let refined = clisc_imaging::refine::refine_boundary(
            &predicted,
            &flair.data,
            &brain,
            grid.dims(),
            grid.spacing,
            band,
        )
        .map(|r| r.mask)
        .unwrap_or_else(|_| predicted.clone());
        dice.push(clisc_imaging::overlap::dice(&refined, &truth));
    }
    Ok(dice)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: refine_sweep DATA PREDICTIONS BAND_MM...");
    }
    let (data, predictions) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let bands: Vec<f64> = args[2..]
        .iter()
        .map(|b| {
            b.parse()
                .with_context(|| format!("band `{b}` is not a number of mm"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&predictions)
        .with_context(|| format!("listing {}", predictions.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.to_string_lossy().ends_with(".nii.gz"));
    files.sort();
    let header: Vec<String> = bands.iter().map(|b| format!("{b} mm")).collect();
    println!("| case | unrefined | {} |", header.join(" | "));
    println!("|---|---|{}", "---|".repeat(bands.len()));
    let mut sums = vec![0.0; bands.len() + 1];
    for file in &files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let id = name.trim_end_matches(".nii.gz");
        let dice = case_dice(&data, file, id, &bands)?;
        let cells: Vec<String> = dice.iter().map(|d| format!("{d:.3}")).collect();
        println!("| {id} | {} |", cells.join(" | "));
        sums.iter_mut().zip(&dice).for_each(|(s, d)| *s += d);
    }
    if files.is_empty() {
        bail!("no predictions (*.nii.gz) in {}", predictions.display());
    }
    let means: Vec<String> = sums
        .iter()
        .map(|s| format!("**{:.3}**", s / files.len() as f64))
        .collect();
    println!("| mean of {} | {} |", files.len(), means.join(" | "));
    Ok(())
}
