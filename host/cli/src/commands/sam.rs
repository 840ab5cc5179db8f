//! `clisc sam`: segment one 2D image or one axial slice of a volume with
//! Segment Anything from box and point prompts.
//!
//! * PNG input is given to SAM as is (grey images are replicated to RGB),
//!   like the official predictor.
//! * NIfTI input (`.nii`, `.nii.gz`): axial slice `--slice` (default: the
//!   middle one) is prepared as CLISC does (min-max to 8 bits, histogram
//!   equalisation, 3 channels).
//!
//! The output is a PNG (0 / 255) or a NIfTI mask. For a NIfTI input, a
//! NIfTI output is the input's grid with the mask in slice `--slice`
//! (so it overlays the input); for a PNG input it is a one-slice volume.

use anyhow::{anyhow, bail, Context};
use clap::Args;
use clisc_sam::{slice_to_rgb, SamPredictor, SamPrompt};
use clisc_sdk::{Grid, LabelVolume};
use std::path::{Path, PathBuf};

/// Arguments of `clisc sam`.
#[derive(Debug, Args)]
pub struct SamArgs {
    /// SAM checkpoint as downloaded (sam_vit_b_01ec64.pth, ...) or .safetensors.
    #[arg(long)]
    pub weights: PathBuf,
    /// Input image: PNG, or NIfTI volume (.nii / .nii.gz).
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
    /// Predict three masks and keep the one with the best predicted IoU.
    #[arg(long)]
    pub multimask: bool,
    /// Output mask: `.png`, `.nii` or `.nii.gz`.
    #[arg(long)]
    pub out: PathBuf,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU threads for libtorch (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
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

fn is_nifti(path: &Path) -> bool {
    let name = path.to_string_lossy().to_ascii_lowercase();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

/// The image as RGB bytes, its size, and for NIfTI input the volume's
/// header and the chosen slice.
struct Input {
    rgb: Vec<u8>,
    width: usize,
    height: usize,
    nifti: Option<(clisc_nifti::NiftiInfo, Grid, usize)>,
}

fn read_input(args: &SamArgs) -> anyhow::Result<Input> {
    if is_nifti(&args.image) {
        let (volume, info) = clisc_nifti::read_volume(&args.image, "image")?;
        let nz = volume.grid.shape[2] as usize;
        let z = args.slice.unwrap_or(nz / 2);
        if z >= nz {
            bail!(
                "--slice {z} is out of range: {} has {nz} axial slices",
                args.image.display()
            );
        }
        let slice = volume.axial_slice("image", z)?;
        let rgb = slice_to_rgb(&slice)?;
        Ok(Input {
            rgb,
            width: slice.width as usize,
            height: slice.height as usize,
            nifti: Some((info, volume.grid, z)),
        })
    } else {
        if args.slice.is_some() {
            bail!(
                "--slice only applies to NIfTI volumes; {} is a 2D image",
                args.image.display()
            );
        }
        let img = image::open(&args.image)
            .with_context(|| format!("reading image {}", args.image.display()))?;
        let rgb = img.to_rgb8();
        let (w, h) = rgb.dimensions();
        Ok(Input {
            rgb: rgb.into_raw(),
            width: w as usize,
            height: h as usize,
            nifti: None,
        })
    }
}

/// Runs SAM on the image with the given prompts and writes the mask.
pub fn run(args: SamArgs) -> anyhow::Result<()> {
    if args.bbox.is_none() && args.pos.is_empty() && args.neg.is_empty() {
        bail!("give at least one prompt: --box, --pos or --neg");
    }
    let input = read_input(&args)?;
    clisc_sam::set_torch_threads(args.threads);
    let predictor = SamPredictor::load_on(&args.weights, &args.device)?;
    let t = std::time::Instant::now();
    let embedding = predictor.embed(&input.rgb, input.width, input.height)?;
    tracing::info!("image embedding in {:.2}s", t.elapsed().as_secs_f64());
    let mut points: Vec<([f64; 2], bool)> = args.pos.iter().map(|p| (*p, true)).collect();
    points.extend(args.neg.iter().map(|p| (*p, false)));
    let prompt = SamPrompt {
        points,
        bbox: args.bbox,
        mask_input: None,
    };
    let out = predictor
        .predict(&embedding, &[prompt], args.multimask)?
        .pop()
        .ok_or_else(|| anyhow!("no prediction"))?;
    let best = out.best();
    let mask = &out.masks[best];
    let area = mask.iter().filter(|&&v| v != 0).count();
    println!(
        "mask {}: {area} pixels, predicted IoU {:.4}",
        args.out.display(),
        out.iou[best]
    );
    write_mask(&args.out, mask, &input)
}

fn write_mask(path: &Path, mask: &[u8], input: &Input) -> anyhow::Result<()> {
    if is_nifti(path) {
        let labels = match &input.nifti {
            Some((_, grid, z)) => {
                let mut labels = LabelVolume::zeros(*grid);
                let n = grid.slice_len();
                labels.data[z * n..(z + 1) * n].copy_from_slice(mask);
                labels
            }
            None => {
                let grid = Grid::new([input.width as u32, input.height as u32, 1], [1.0; 3]);
                LabelVolume {
                    grid,
                    data: mask.to_vec().into(),
                }
            }
        };
        clisc_nifti::write_labels(path, &labels, input.nifti.as_ref().map(|(info, _, _)| info))?;
        Ok(())
    } else {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ext != "png" {
            bail!("--out {}: use .png, .nii or .nii.gz", path.display());
        }
        let pixels: Vec<u8> = mask.iter().map(|&v| if v != 0 { 255 } else { 0 }).collect();
        let img = image::GrayImage::from_raw(input.width as u32, input.height as u32, pixels)
            .ok_or_else(|| anyhow!("mask size does not match the image"))?;
        img.save(path)
            .with_context(|| format!("writing {}", path.display()))
    }
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
        assert!(is_nifti(Path::new("x.NII.GZ")) && !is_nifti(Path::new("x.png")));
    }
}
