//! `clisc infer`: segment new volumes with a trained volumetric network.
//!
//! The model file is self-describing: its safetensors header metadata names
//! the plugin (`clisc.plugin`) and the settings it was trained with
//! (`clisc.settings`, TOML). The command rebuilds that stage through the
//! registry (built-ins, `CLISC_PLUGIN_PATH` and `--plugin-path`, so any
//! volumetric-segmenter plugin that writes these two keys works; see
//! `clisc_inference::engine`), applies `--set key=value` overrides (inference settings such as
//! `overlap`, `inference`, `largest_component`), loads the weights, and for
//! every input volume: CLISC preprocessing (crop to the brain, resample to
//! the spacing the network was trained at when the model file records one
//! (`clisc.spacing`), the bias correction it was trained with
//! (`clisc.bias_correction`), clip, z-score), prediction, labels back on the
//! original grid, and a uint8 NIfTI
//! written with the input's header geometry, so the output overlays the
//! input exactly.
//!
//! A folder of DICOM files is segmented study by study: the FLAIR series
//! (chosen by modality rules) is read on its own grid, segmented, and
//! written back as a DICOM SEG referencing it (and, on request, as NIfTI).

use super::PluginPathArgs;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use clisc_dicom::{safe_file_name, ModalityRules, SegOptions, SegSummary};
use clisc_inference::engine::{LoadOptions, Segmenter};
use clisc_nifti::is_nifti_path;
use std::path::{Path, PathBuf};

/// Arguments of `clisc infer`.
#[derive(Debug, Args)]
pub(crate) struct InferArgs {
    /// Model file written by a pipeline (`.../model.ckpt`) or a plugin's `save`.
    #[arg(long)]
    pub model: PathBuf,
    /// A FLAIR NIfTI file, a folder of them, a folder of case folders
    /// (each holding one `*flair*.nii[.gz]`), or a folder of DICOM files
    /// (any layout, one or more studies; read as DICOM when it holds no
    /// NIfTI file).
    #[arg(long)]
    pub input: PathBuf,
    /// Output file (single input) or folder (one `<case>.nii.gz` per input;
    /// for DICOM input one `<StudyInstanceUID>/seg.dcm` per study).
    #[arg(long)]
    pub out: PathBuf,
    /// DICOM input: also write the labels as `<StudyInstanceUID>/seg.nii.gz`.
    #[arg(long)]
    pub nifti: bool,
    /// DICOM input: modality rules choosing the FLAIR series (TOML file, or
    /// `brain`); default: the built-in `flair` rule alone.
    #[arg(long)]
    pub rules: Option<String>,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU threads for libtorch (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// Override a stored setting, e.g. `--set overlap=0.25` (TOML value).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub plugins: PluginPathArgs,
}

fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    name.trim_end_matches(".gz")
        .trim_end_matches(".nii")
        .to_string()
}

/// `(case id, FLAIR file)` for every input volume.
pub(crate) fn find_inputs(input: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    if input.is_file() {
        return Ok(vec![(stem(input), input.to_path_buf())]);
    }
    if !input.is_dir() {
        bail!("input {} does not exist", input.display());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("listing {}", input.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let files: Vec<&PathBuf> = entries
        .iter()
        .filter(|p| p.is_file() && is_nifti_path(p))
        .collect();
    let flair_named: Vec<&PathBuf> = files
        .iter()
        .copied()
        .filter(|p| stem(p).to_ascii_lowercase().contains("flair"))
        .collect();
    let mut out: Vec<(String, PathBuf)> = if flair_named.is_empty() {
        files
    } else {
        flair_named
    }
    .into_iter()
    .map(|p| (stem(p), p.clone()))
    .collect();
    for dir in entries.iter().filter(|p| p.is_dir()) {
        let mut inner: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_nifti_path(p) && stem(p).to_ascii_lowercase().contains("flair"))
            .collect();
        inner.sort();
        match inner.len() {
            0 => {}
            1 => out.push((
                dir.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string(),
                inner.remove(0),
            )),
            _ => bail!(
                "{}: several FLAIR files ({inner:?}); give one file as --input",
                dir.display()
            ),
        }
    }
    if out.is_empty() {
        bail!("no NIfTI volume found in {}", input.display());
    }
    Ok(out)
}

/// True when `input` is a folder holding no NIfTI file (directly or in a
/// case folder one level down): it is then read as DICOM.
pub(crate) fn is_dicom_input(input: &Path) -> bool {
    fn has_nifti(dir: &Path, depth: u32) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.filter_map(|e| e.ok().map(|e| e.path())).any(|p| {
            (p.is_file() && is_nifti_path(&p))
                || (depth > 0 && p.is_dir() && has_nifti(&p, depth - 1))
        })
    }
    input.is_dir() && !has_nifti(input, 1)
}

/// The modality rules `clisc infer` uses to find the FLAIR series of a
/// DICOM study: `spec` (`brain` or a TOML file) or, by default, the
/// built-in `flair` rule alone (other modalities are not needed).
pub(crate) fn flair_rules(spec: Option<&str>) -> anyhow::Result<ModalityRules> {
    let rules = match spec {
        None => {
            let mut r = ModalityRules::brain_mri();
            r.modalities.retain(|m, _| m == "flair");
            r
        }
        Some("brain") => ModalityRules::brain_mri(),
        Some(path) => ModalityRules::from_file(Path::new(path))?,
    };
    if !rules.modalities.contains_key("flair") {
        bail!("the modality rules define no `flair` modality, which `clisc infer` segments");
    }
    Ok(rules)
}

/// What [`segment_dicom_study`] wrote for one study.
#[derive(Debug, Clone)]
pub(crate) struct StudyResult {
    /// StudyInstanceUID.
    pub study_uid: String,
    /// The FLAIR series that was segmented ([`clisc_dicom::Series::label`]).
    pub series: String,
    /// The SEG written (and its UIDs).
    pub seg: SegSummary,
    /// The NIfTI labels, when asked for.
    pub nifti: Option<PathBuf>,
    /// Number of tumour voxels.
    pub tumour_voxels: usize,
}

/// Segments the FLAIR series (chosen by `rules`) of every study among
/// `series` and writes, per study, `<out>/<StudyInstanceUID>/seg.dcm` (a
/// DICOM SEG on the FLAIR series' grid, referencing that series, its frame
/// of reference, patient and study) and, with `nifti`, `seg.nii.gz` next
/// to it (the FLAIR grid and affine as `clisc dicom convert` writes them).
/// A study whose FLAIR cannot be chosen or read fails alone: its error is
/// returned in the second list, the other studies go on.
pub(crate) fn segment_dicom_studies(
    segmenter: &mut Segmenter,
    series: &[clisc_dicom::Series],
    rules: &ModalityRules,
    out: &Path,
    nifti: bool,
) -> (Vec<StudyResult>, Vec<(String, anyhow::Error)>) {
    let mut studies: Vec<&str> = Vec::new();
    for s in series {
        if !studies.contains(&s.study.study_uid.as_str()) {
            studies.push(&s.study.study_uid);
        }
    }
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for study in studies {
        let members: Vec<clisc_dicom::Series> = series
            .iter()
            .filter(|s| s.study.study_uid == study)
            .cloned()
            .collect();
        match segment_dicom_study(segmenter, &members, rules, out, nifti) {
            Ok(r) => done.push(r),
            Err(e) => failed.push((study.to_string(), e)),
        }
    }
    (done, failed)
}

/// [`segment_dicom_studies`] for the series of one study.
pub(crate) fn segment_dicom_study(
    segmenter: &mut Segmenter,
    study: &[clisc_dicom::Series],
    rules: &ModalityRules,
    out: &Path,
    nifti: bool,
) -> anyhow::Result<StudyResult> {
    let study_uid = study
        .first()
        .map(|s| s.study.study_uid.clone())
        .ok_or_else(|| anyhow!("no series"))?;
    let chosen = rules
        .select(study)
        .with_context(|| format!("study {study_uid}"))?;
    let (_, flair) = chosen
        .iter()
        .find(|(m, _)| m == "flair")
        .ok_or_else(|| anyhow!("study {study_uid}: no FLAIR series"))?;
    let volume = clisc_dicom::load_volume(flair, "flair")
        .with_context(|| format!("study {study_uid}: reading {}", flair.label()))?;
    let labels = segmenter
        .segment(&study_uid, &volume)
        .with_context(|| format!("study {study_uid}: segmenting {}", flair.label()))?;
    let dir = out.join(safe_file_name(&study_uid));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let seg = clisc_dicom::write_seg(flair, &labels, &SegOptions::default(), &dir.join("seg.dcm"))
        .with_context(|| format!("study {study_uid}: writing the SEG"))?;
    let nifti = if nifti {
        let path = dir.join("seg.nii.gz");
        clisc_pipeline::io::atomically(&path, |tmp| {
            Ok(clisc_nifti::write_labels(tmp, &labels, None)?)
        })?;
        Some(path)
    } else {
        None
    };
    Ok(StudyResult {
        study_uid,
        series: flair.label(),
        seg,
        nifti,
        tumour_voxels: labels.count_nonzero(),
    })
}

/// Runs `clisc infer`.
pub(crate) fn run(args: InferArgs) -> anyhow::Result<()> {
    let registry = args.plugins.registry()?;
    let options = LoadOptions {
        device: &args.device,
        threads: args.threads,
        overrides: &args.set,
    };
    let mut segmenter = Segmenter::load(&args.model, &registry, &options)?;
    if is_dicom_input(&args.input) {
        return run_dicom(&args, &mut segmenter);
    }
    if args.nifti || args.rules.is_some() {
        bail!(
            "--nifti and --rules apply to DICOM input only; {} holds NIfTI files",
            args.input.display()
        );
    }
    let inputs = find_inputs(&args.input)?;
    let single = args.input.is_file() && !args.out.is_dir();
    if !single {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
    }
    for (id, path) in &inputs {
        let (raw, info) = clisc_nifti::read_volume(path, "flair")
            .with_context(|| format!("reading {}", path.display()))?;
        let labels = segmenter
            .segment(id, &raw)
            .with_context(|| format!("segmenting {}", path.display()))?;
        let out = if single {
            args.out.clone()
        } else {
            args.out.join(format!("{id}.nii.gz"))
        };
        clisc_pipeline::io::atomically(&out, |tmp| {
            Ok(clisc_nifti::write_labels(tmp, &labels, Some(&info))?)
        })?;
        tracing::info!(
            "{id}: {} tumour voxels -> {}",
            labels.count_nonzero(),
            out.display()
        );
    }
    Ok(())
}

fn run_dicom(args: &InferArgs, segmenter: &mut Segmenter) -> anyhow::Result<()> {
    let rules = flair_rules(args.rules.as_deref())?;
    let scan = clisc_dicom::scan_dir(&args.input)
        .with_context(|| format!("scanning {}", args.input.display()))?;
    for f in &scan.skipped {
        tracing::warn!("skipped {}: {}", f.path.display(), f.reason);
    }
    if scan.series.is_empty() {
        bail!(
            "{} holds neither NIfTI files nor DICOM image series ({} file(s) skipped)",
            args.input.display(),
            scan.skipped.len()
        );
    }
    let (done, failed) =
        segment_dicom_studies(segmenter, &scan.series, &rules, &args.out, args.nifti);
    for r in &done {
        println!(
            "study {}: {} -> {} ({} tumour voxels, {} frames)",
            r.study_uid,
            r.series,
            r.seg.path.display(),
            r.tumour_voxels,
            r.seg.frames
        );
        if let Some(p) = &r.nifti {
            println!("  NIfTI {}", p.display());
        }
    }
    if !failed.is_empty() {
        let lines: Vec<String> = failed
            .iter()
            .map(|(s, e)| format!("  {s}: {e:#}"))
            .collect();
        bail!(
            "{} of {} studies could not be segmented:\n{}",
            failed.len(),
            failed.len() + done.len(),
            lines.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_flat_and_case_folder_inputs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(root.join("a_flair.nii.gz"), b"").unwrap();
        std::fs::write(root.join("a_seg.nii.gz"), b"").unwrap();
        std::fs::create_dir(root.join("case2")).unwrap();
        std::fs::write(root.join("case2/case2_flair.nii"), b"").unwrap();
        std::fs::write(root.join("case2/case2_t1.nii"), b"").unwrap();
        let found = find_inputs(root).unwrap();
        let ids: Vec<&str> = found.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["a_flair", "case2"]);
        assert_eq!(
            find_inputs(&root.join("a_seg.nii.gz")).unwrap()[0].0,
            "a_seg"
        );
        assert!(find_inputs(&root.join("missing")).is_err());
    }
}
