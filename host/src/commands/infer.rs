//! `clisc infer`: segment new volumes with a trained volumetric network.
//!
//! The model file is self-describing: its safetensors header metadata names
//! the plugin (`clisc.plugin`) and the settings it was trained with
//! (`clisc.settings`, TOML). The command rebuilds that stage through the
//! registry (so any volumetric-segmenter plugin that writes these two keys
//! works), applies `--set key=value` overrides (inference settings such as
//! `overlap`, `inference`, `largest_component`), loads the weights, and for
//! every input volume: CLISC preprocessing (crop to the brain, clip,
//! z-score), prediction, uncrop to the original grid, and a uint8 NIfTI
//! written with the input's header geometry, so the output overlays the
//! input exactly.

use crate::nifti_io;
use crate::preprocess::{preprocess, PreprocessOptions};
use crate::registry::Registry;
use abi_stable::std_types::RResult;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use clisc_sdk::{HostContext, Silent, StageKind, StageObject};
use std::path::{Path, PathBuf};

/// Arguments of `clisc infer`.
#[derive(Debug, Args)]
pub struct InferArgs {
    /// Model file written by a pipeline (`.../model.ckpt`) or a plugin's `save`.
    #[arg(long)]
    pub model: PathBuf,
    /// A FLAIR NIfTI file, a folder of them, or a folder of case folders
    /// (each holding one `*flair*.nii[.gz]`).
    #[arg(long)]
    pub input: PathBuf,
    /// Output file (single input) or folder (one `<case>.nii.gz` per input).
    #[arg(long)]
    pub out: PathBuf,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU threads for libtorch (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// Override a stored setting, e.g. `--set overlap=0.25` (TOML value).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// The plugin name and settings stored in a model file's safetensors header.
pub fn model_identity(path: &Path) -> anyhow::Result<(String, toml::Table)> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("opening model {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("{}: too short for a model file", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        bail!(
            "{}: not a safetensors model file (header of {n} bytes)",
            path.display()
        );
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("{}: truncated header", path.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .with_context(|| format!("{}: header is not JSON", path.display()))?;
    let meta = json
        .get("__metadata__")
        .ok_or_else(|| anyhow!("{}: the header has no metadata", path.display()))?;
    let get = |k: &str| {
        meta.get(k).and_then(|v| v.as_str()).ok_or_else(|| {
            anyhow!(
                "{}: metadata key `{k}` is missing (not a clisc model?)",
                path.display()
            )
        })
    };
    let plugin = get("clisc.plugin")?.to_string();
    let settings: toml::Table = toml::from_str(get("clisc.settings")?)
        .with_context(|| format!("{}: `clisc.settings` is not a TOML table", path.display()))?;
    Ok((plugin, settings))
}

fn is_nifti(path: &Path) -> bool {
    let name = path.to_string_lossy().to_ascii_lowercase();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
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
pub fn find_inputs(input: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
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
        .filter(|p| p.is_file() && is_nifti(p))
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
            .filter(|p| is_nifti(p) && stem(p).to_ascii_lowercase().contains("flair"))
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

/// Runs `clisc infer`.
pub fn run(args: InferArgs) -> anyhow::Result<()> {
    let (plugin, mut settings) = model_identity(&args.model)?;
    for kv in &args.set {
        let t: toml::Table = toml::from_str(kv)
            .map_err(|e| anyhow!("--set `{kv}` is not `key = TOML value`: {e}"))?;
        settings.extend(t);
    }
    let registry = Registry::builtin();
    let resolved = registry.resolve_settings(&plugin, StageKind::VolumetricSegmenter, &settings)?;
    // The stage's private folder; inference writes nothing there.
    let work = std::env::temp_dir().join(format!("clisc-infer-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let ctx = HostContext {
        device: args.device.clone().into(),
        seed: 0,
        threads: args.threads,
        work_dir: work.display().to_string().into(),
        progress: Silent::boxed(),
    };
    let StageObject::VolumetricSegmenter(mut net) =
        registry.create(&plugin, StageKind::VolumetricSegmenter, &resolved, &ctx)?
    else {
        bail!("plugin `{plugin}` is not a volumetric segmenter");
    };
    if let RResult::RErr(e) = net.load(args.model.display().to_string().as_str().into()) {
        bail!("loading {}: {e}", args.model.display());
    }
    let inputs = find_inputs(&args.input)?;
    let single = args.input.is_file() && !args.out.is_dir();
    if !single {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
    }
    for (id, path) in &inputs {
        let (raw, info) = nifti_io::read_volume(path, "flair")
            .with_context(|| format!("reading {}", path.display()))?;
        let pre = preprocess(id, &raw, &PreprocessOptions::default())
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let cropped = match net.predict(&pre.input) {
            RResult::ROk(p) => p,
            RResult::RErr(e) => bail!("predicting {}: {e}", path.display()),
        };
        let labels = pre
            .crop
            .uncrop(&cropped)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let out = if single {
            args.out.clone()
        } else {
            args.out.join(format!("{id}.nii.gz"))
        };
        nifti_io::write_labels(&out, &labels, Some(&info))
            .with_context(|| format!("writing {}", out.display()))?;
        tracing::info!(
            "{id}: {} tumour voxels -> {}",
            labels.count_nonzero(),
            out.display()
        );
    }
    let _ = std::fs::remove_dir_all(&work);
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

    #[test]
    fn rejects_files_without_clisc_metadata() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.safetensors");
        let header = br#"{"__metadata__":{"format":"pt"}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        std::fs::write(&p, &bytes).unwrap();
        assert!(model_identity(&p)
            .unwrap_err()
            .to_string()
            .contains("clisc.plugin"));
        std::fs::write(&p, b"xx").unwrap();
        assert!(model_identity(&p).is_err());
    }
}
