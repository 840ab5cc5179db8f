//! `clisc clip --weights W --image FILE [--slice K] --text "..." --text "..."`:
//! CLIP zero-shot probabilities of the texts for one image.
//!
//! `FILE` is a NIfTI volume (`.nii`, `.nii.gz`; the axial slice `K`, by
//! default the middle one, min-max scaled to 8 bits per slice exactly as
//! the `clip` pseudo-labeler does) or an ordinary image (PNG; grey images
//! stay grey, others are read as RGB). The image then goes through CLIP's
//! own preprocessing (bicubic resize of the short side, centre crop,
//! normalisation), and the softmax over the texts' logits is printed, one
//! `probability<TAB>text` line per text.

use anyhow::{bail, Context};
use clap::Args;
use clisc_clip::{preprocess::slice_to_u8, zero_shot};
use std::path::{Path, PathBuf};

/// Arguments of `clisc clip`.
#[derive(Debug, Args)]
pub struct ClipArgs {
    /// CLIP checkpoint (OpenAI TorchScript `ViT-B-32.pt`, a state dict or safetensors).
    #[arg(long)]
    pub weights: PathBuf,
    /// The image: NIfTI volume (`.nii`/`.nii.gz`) or PNG.
    #[arg(long)]
    pub image: PathBuf,
    /// Axial slice of a NIfTI volume (default: the middle slice).
    #[arg(long)]
    pub slice: Option<usize>,
    /// A text to score; repeat for several.
    #[arg(long = "text", required = true)]
    pub texts: Vec<String>,
    /// Device: `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

fn is_nifti(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

/// 8-bit pixels, width, height and channels of the input.
fn read_image(args: &ClipArgs) -> anyhow::Result<(Vec<u8>, usize, usize, usize)> {
    if is_nifti(&args.image) {
        let (volume, _) = clisc_nifti::read_volume(&args.image, "image")
            .with_context(|| format!("reading {}", args.image.display()))?;
        let [nx, ny, nz] = volume.grid.dims();
        let z = args.slice.unwrap_or(nz / 2);
        if z >= nz {
            bail!(
                "--slice {z} is outside {} ({nz} axial slices)",
                args.image.display()
            );
        }
        let data = volume.require_channel("image")?;
        let n = nx * ny;
        return Ok((slice_to_u8(&data[z * n..(z + 1) * n]), nx, ny, 1));
    }
    if args.slice.is_some() {
        bail!(
            "--slice only applies to NIfTI volumes, {} is a 2D image",
            args.image.display()
        );
    }
    let img = image::open(&args.image)
        .with_context(|| format!("reading image {}", args.image.display()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if img.color().has_color() {
        Ok((img.to_rgb8().into_raw(), w, h, 3))
    } else {
        Ok((img.to_luma8().into_raw(), w, h, 1))
    }
}

/// Prints one `probability<TAB>text` line per text.
pub fn run(args: ClipArgs) -> anyhow::Result<()> {
    let (pixels, w, h, c) = read_image(&args)?;
    let probs = zero_shot(&args.weights, &args.device, &pixels, w, h, c, &args.texts)?;
    for (p, t) in probs.iter().zip(args.texts.iter()) {
        println!("{p:.6}\t{t}");
    }
    Ok(())
}
