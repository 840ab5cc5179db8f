//! `clisc sam`: segment one axial slice of a volume, or one 2D image, from
//! box and point prompts with a promptable-segmenter plugin (default the
//! built-in `sam`; any other, external ones included, with `--plugin`).
//!
//! The slice reaches the plugin exactly as in a pipeline: the image is
//! cropped to its non-zero box, clipped and z-scored, and the plugin gets
//! that slice with the prompts moved into its coordinates (the built-in
//! `sam` then applies CLISC's slice preparation: min-max to 8 bits,
//! histogram equalisation, 3 channels). A 2D image (PNG, ...) is read as
//! a one-slice grey volume.
//!
//! The output is a PNG (0 / 255) or a NIfTI mask. For a NIfTI input, a
//! NIfTI output is the input's grid with the mask in slice `--slice`
//! (so it overlays the input); for a 2D input it is a one-slice volume.
//!
//! With `--propagate` (plugins that segment whole volumes, e.g. `sam2`
//! with its `propagate` setting) the prompts on `--slice` guide the whole
//! volume, and the NIfTI output holds the mask of every slice.

use super::study_image::StudyImage;
use super::StageOptions;
use abi_stable::std_types::{ROption, RResult, RSlice};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use clisc_nifti::is_nifti_path;
use clisc_sdk::stage::SliceImage;
use clisc_sdk::{
    BoxXyxy, CasePrompts, LabelVolume, Mask2d, PromptPoint, PromptSet, StageKind, StageObject,
};
use std::path::{Path, PathBuf};

/// Arguments of `clisc sam`.
#[derive(Debug, Args)]
pub(crate) struct SamArgs {
    /// The promptable-segmenter plugin.
    #[arg(long, default_value = "sam")]
    pub plugin: String,
    /// Input image: NIfTI volume (.nii / .nii.gz), or a 2D image (PNG, ...).
    #[arg(long)]
    pub image: PathBuf,
    /// Axial slice of a NIfTI volume (default: the middle slice).
    #[arg(long)]
    pub slice: Option<usize>,
    /// Box prompt `x0,y0,x1,y1` (x = column, y = row).
    #[arg(long = "box", value_parser = parse_box)]
    pub bbox: Option<[f64; 4]>,
    /// Foreground point `x,y` (repeatable).
    #[arg(long = "pos", value_parser = parse_point)]
    pub pos: Vec<[f64; 2]>,
    /// Background point `x,y` (repeatable).
    #[arg(long = "neg", value_parser = parse_point)]
    pub neg: Vec<[f64; 2]>,
    /// The plugin's `multimask` setting (`sam`: predict three masks and
    /// keep the one with the best predicted IoU).
    #[arg(long)]
    pub multimask: bool,
    /// Propagate from the prompted slice through the whole volume (sets
    /// the plugin's `propagate` setting: `--plugin sam2`); the output is a
    /// NIfTI volume, restricted to the brain as in a pipeline.
    #[arg(long)]
    pub propagate: bool,
    /// Output mask: `.png`, `.nii` or `.nii.gz`.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub stage: StageOptions,
}

fn parse_numbers<const N: usize>(s: &str, what: &str) -> Result<[f64; N], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .map_err(|_| format!("`{s}` is not {what}"))
        })
        .collect::<Result<_, _>>()?;
    v.try_into().map_err(|_| format!("`{s}` is not {what}"))
}

fn parse_box(s: &str) -> Result<[f64; 4], String> {
    parse_numbers::<4>(s, "a box x0,y0,x1,y1")
}

fn parse_point(s: &str) -> Result<[f64; 2], String> {
    parse_numbers::<2>(s, "a point x,y")
}

/// The prompts, moved by `(-dx, -dy)` into the stage input's coordinates.
fn prompt_set(args: &SamArgs, slice: u32, dx: f64, dy: f64) -> PromptSet {
    let point = |p: &[f64; 2], positive| PromptPoint {
        x: (p[0] - dx) as f32,
        y: (p[1] - dy) as f32,
        positive,
    };
    let mut points: Vec<PromptPoint> = args.pos.iter().map(|p| point(p, true)).collect();
    points.extend(args.neg.iter().map(|p| point(p, false)));
    PromptSet {
        slice,
        bbox: match args.bbox {
            Some([x0, y0, x1, y1]) => ROption::RSome(BoxXyxy {
                x0: (x0 - dx) as f32,
                y0: (y0 - dy) as f32,
                x1: (x1 - dx) as f32,
                y1: (y1 - dy) as f32,
            }),
            None => ROption::RNone,
        },
        points: points.into(),
    }
}

/// Runs the plugin on the slice with the given prompts and writes the mask.
pub(crate) fn run(args: SamArgs) -> anyhow::Result<()> {
    if args.bbox.is_none() && args.pos.is_empty() && args.neg.is_empty() {
        bail!("give at least one prompt: --box, --pos or --neg");
    }
    let image = StudyImage::read(&args.image)?;
    let (z, stage_z) = image.slice(&args.image, args.slice)?;
    let crop = *image.crop();
    let mut settings = toml::Table::new();
    if args.multimask {
        settings.insert("multimask".into(), true.into());
    }
    if args.propagate {
        settings.insert("propagate".into(), true.into());
    }
    let mut stage = args
        .stage
        .build(&args.plugin, StageKind::PromptableSegmenter, settings)?;
    let prompts = [prompt_set(
        &args,
        stage_z as u32,
        crop.offset[0] as f64,
        crop.offset[1] as f64,
    )];
    if args.propagate {
        return propagate(&args, stage.stage(), &image, &prompts);
    }
    let StageObject::PromptableSegmenter(segmenter) = stage.stage() else {
        bail!(
            "plugin `{}` segments whole volumes: add --propagate",
            args.plugin
        );
    };
    let slice = SliceImage {
        case_id: "image".into(),
        index: stage_z as u32,
        image: image.prepared.input.image.axial_slice("flair", stage_z)?,
    };
    let t = std::time::Instant::now();
    let masks = match segmenter.segment(&slice, RSlice::from_slice(&prompts)) {
        RResult::ROk(m) => m,
        RResult::RErr(e) => bail!("plugin `{}`: {e}", args.plugin),
    };
    tracing::info!("segmented in {:.2}s", t.elapsed().as_secs_f64());
    let cropped = masks
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("plugin `{}` returned no mask", args.plugin))?;
    let mask = uncrop_slice(&cropped, &image, z)?;
    let area = mask.iter().filter(|&&v| v != 0).count();
    println!("mask {}: {area} pixels", args.out.display());
    write_mask(&args.out, &mask, &image, z)
}

/// `--propagate`: the whole volume from the prompted slice, written as a
/// NIfTI mask on the input's grid.
fn propagate(
    args: &SamArgs,
    stage: &mut StageObject,
    image: &StudyImage,
    prompts: &[PromptSet],
) -> anyhow::Result<()> {
    if !is_nifti_path(&args.out) {
        bail!(
            "--out {}: --propagate writes a volume, use .nii or .nii.gz",
            args.out.display()
        );
    }
    let StageObject::VolumePromptableSegmenter(segmenter) = stage else {
        bail!(
            "plugin `{}` segments slice by slice; --propagate needs one that segments volumes (sam2)",
            args.plugin
        );
    };
    let case_prompts = CasePrompts {
        sets: prompts.to_vec().into(),
    };
    let t = std::time::Instant::now();
    let input = &image.prepared.input;
    let mut cropped = match segmenter.segment_volume(input, &case_prompts) {
        RResult::ROk(m) => m,
        RResult::RErr(e) => bail!("plugin `{}`: {e}", args.plugin),
    };
    if cropped.data.len() != input.brain_mask.data.len() {
        bail!(
            "plugin `{}` returned {} voxels for a volume of {}",
            args.plugin,
            cropped.data.len(),
            input.brain_mask.data.len()
        );
    }
    // As in a pipeline: nothing outside the brain (non-zero voxels).
    for (v, &b) in cropped.data.iter_mut().zip(input.brain_mask.data.iter()) {
        *v &= u8::from(b != 0);
    }
    tracing::info!("propagated in {:.2}s", t.elapsed().as_secs_f64());
    let full = image
        .crop()
        .uncrop(&cropped)
        .map_err(|e| anyhow!("placing the mask on the image: {e}"))?;
    let slices = (0..full.grid.shape[2] as usize)
        .filter(|&z| full.axial_slice(z).data.iter().any(|&v| v != 0))
        .count();
    let voxels = full.data.iter().filter(|&&v| v != 0).count();
    println!(
        "mask {}: {voxels} voxels on {slices} slices",
        args.out.display()
    );
    clisc_nifti::write_labels(&args.out, &full, image.nifti.as_ref())?;
    Ok(())
}

/// The stage's mask on the cropped slice, placed on the image's full slice.
fn uncrop_slice(mask: &Mask2d, image: &StudyImage, z: usize) -> anyhow::Result<Vec<u8>> {
    let crop = image.crop();
    let mut cropped = LabelVolume::zeros(crop.cropped_grid());
    cropped
        .set_axial_slice(z - crop.offset[2], mask)
        .map_err(|e| anyhow!("the plugin's mask: {e}"))?;
    let full = crop
        .uncrop(&cropped)
        .map_err(|e| anyhow!("placing the mask on the image: {e}"))?;
    Ok(full.axial_slice(z).data.to_vec())
}

fn write_mask(path: &Path, mask: &[u8], image: &StudyImage, z: usize) -> anyhow::Result<()> {
    let grid = image.volume.grid;
    if is_nifti_path(path) {
        let mut labels = LabelVolume::zeros(grid);
        let n = grid.slice_len();
        labels.data[z * n..(z + 1) * n].copy_from_slice(mask);
        clisc_nifti::write_labels(path, &labels, image.nifti.as_ref())?;
        return Ok(());
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext != "png" {
        bail!("--out {}: use .png, .nii or .nii.gz", path.display());
    }
    let pixels: Vec<u8> = mask.iter().map(|&v| if v != 0 { 255 } else { 0 }).collect();
    let img = image::GrayImage::from_raw(grid.shape[0], grid.shape[1], pixels)
        .ok_or_else(|| anyhow!("mask size does not match the image"))?;
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_parse() {
        assert_eq!(parse_box("1,2, 3,4").unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert!(parse_box("1,2,3").is_err());
        assert_eq!(parse_point("5.5,6").unwrap(), [5.5, 6.0]);
        assert!(parse_point("a,b").unwrap_err().contains("a point"));
    }
}
