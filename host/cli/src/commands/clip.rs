//! `clisc clip`: the slice pseudo-labels a pseudo-labeler plugin (default
//! the built-in `clip`; any other, external ones included, with
//! `--plugin`) gives one volume or one 2D image, as in the first step of a
//! pipeline.
//!
//! The image reaches the plugin exactly as in a pipeline: cropped to its
//! non-zero box, clipped and z-scored (the built-in `clip` then scales
//! each slice to 8 bits and applies CLIP's own preprocessing). A 2D image
//! (PNG, ...) is read as a one-slice grey volume. One line per axial slice
//! of the image: `slice<TAB>label<TAB>probability<TAB>kept`, slice indices
//! of the image; slices outside the non-zero box are not labelled.
//!
//! The built-in `clip` compares each slice with its prompts
//! (`--set prompts_abnormal=["..."]`, `--set prompts_normal=["..."]`).

use super::study_image::StudyImage;
use super::StageOptions;
use abi_stable::std_types::RResult;
use anyhow::bail;
use clap::Args;
use clisc_sdk::{StageKind, StageObject};
use std::path::PathBuf;

/// Arguments of `clisc clip`.
#[derive(Debug, Args)]
pub(crate) struct ClipArgs {
    /// The pseudo-labeler plugin.
    #[arg(long, default_value = "clip")]
    pub plugin: String,
    /// The image: NIfTI volume (`.nii`/`.nii.gz`) or a 2D image (PNG, ...).
    #[arg(long)]
    pub image: PathBuf,
    /// Print this axial slice only (default: every labelled slice).
    #[arg(long)]
    pub slice: Option<usize>,
    #[command(flatten)]
    pub stage: StageOptions,
}

/// Prints one `slice<TAB>label<TAB>probability<TAB>kept` line per slice.
pub(crate) fn run(args: ClipArgs) -> anyhow::Result<()> {
    let image = StudyImage::read(&args.image)?;
    let only = match args.slice {
        Some(z) => Some(image.slice(&args.image, Some(z))?.0),
        None => None,
    };
    let mut stage = args
        .stage
        .build(&args.plugin, StageKind::PseudoLabeler, toml::Table::new())?;
    let StageObject::PseudoLabeler(labeler) = stage.stage() else {
        bail!("plugin `{}` is not a pseudo-labeler", args.plugin);
    };
    let labels = match labeler.label_slices(&image.prepared.input) {
        RResult::ROk(l) => l,
        RResult::RErr(e) => bail!("plugin `{}`: {e}", args.plugin),
    };
    let oz = image.crop().offset[2];
    for s in labels.slices.iter() {
        let z = s.index as usize + oz;
        if only.map_or(true, |o| o == z) {
            println!("{z}\t{}\t{:.6}\t{}", s.label, s.probability, s.kept);
        }
    }
    Ok(())
}
