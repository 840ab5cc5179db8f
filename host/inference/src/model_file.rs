//! The header metadata of a model file (safetensors): what a trained
//! volumetric network carries besides its weights.
//!
//! The keys are the SDK's contract ([`clisc_sdk::model_file`]): a plugin's
//! `save` writes [`PLUGIN_KEY`] and [`SETTINGS_KEY`]; the host adds
//! [`SPACING_KEY`], the voxel size the network was trained at, and
//! [`BIAS_CORRECTION_KEY`], so `clisc infer` and the DICOM node preprocess
//! new volumes the same way. This module reads and rewrites that header.
//! A safetensors file is an 8-byte little-endian header length, a JSON
//! header (tensor names, dtypes, shapes, offsets into the data, and a
//! `__metadata__` map of strings) and the tensor data; the offsets are
//! relative to the data, so the header can be rewritten without touching
//! the data.

use clisc_dataset::BiasCorrection;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use clisc_sdk::model_file::{
    BIAS_CORRECTION_KEY, PAYLOAD_TENSOR, PLUGIN_KEY, PLUGIN_VERSION_KEY, REFINE_BOUNDARY_KEY,
    SETTINGS_KEY, SPACING_KEY,
};

/// A model file that cannot be read or rewritten, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ModelFileError {
    /// The model file.
    pub path: PathBuf,
    /// What is wrong (and, for I/O, the system's error).
    pub message: String,
}

impl ModelFileError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Largest header accepted (the safetensors format's own limit).
const MAX_HEADER: u64 = 100 << 20;

/// Reads the JSON header of a safetensors file.
fn read_header(
    path: &Path,
) -> Result<(serde_json::Map<String, serde_json::Value>, u64), ModelFileError> {
    let fail = |message: String| ModelFileError::new(path, message);
    let mut f = std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| fail(format!("too short for a model file: {e}")))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(fail(format!(
            "not a safetensors model file (header of {n} bytes)"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| fail(format!("truncated header: {e}")))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| fail(format!("header is not JSON: {e}")))?;
    match json {
        serde_json::Value::Object(map) => Ok((map, 8 + n)),
        _ => Err(fail("header is not a JSON object".into())),
    }
}

/// The `__metadata__` map of a model file (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>, ModelFileError> {
    let (header, _) = read_header(path)?;
    let Some(meta) = header.get("__metadata__") else {
        return Ok(BTreeMap::new());
    };
    let meta = meta
        .as_object()
        .ok_or_else(|| ModelFileError::new(path, "`__metadata__` is not a JSON object"))?;
    meta.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(ModelFileError::new(
                path,
                format!("metadata `{k}` is not a string"),
            )),
        })
        .collect()
}

/// Sets `key` to `value` in the metadata of a model file, rewriting the
/// header (atomically: a temporary sibling renamed over the file).
pub(crate) fn set_metadata(path: &Path, key: &str, value: &str) -> Result<(), ModelFileError> {
    let (mut header, data_start) = read_header(path)?;
    let meta = header
        .entry("__metadata__")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    let meta = meta
        .as_object_mut()
        .ok_or_else(|| ModelFileError::new(path, "`__metadata__` is not a JSON object"))?;
    meta.insert(key.into(), value.into());
    let header = serde_json::Value::Object(header);
    let tmp = path.with_extension("metadata-tmp");
    let write = || -> std::io::Result<()> {
        let mut src = std::fs::File::open(path)?;
        let mut out = std::fs::File::create(&tmp)?;
        write_header(&mut out, &header)?;
        std::io::Seek::seek(&mut src, std::io::SeekFrom::Start(data_start))?;
        std::io::copy(&mut src, &mut out)?;
        out.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ModelFileError::new(path, format!("cannot write metadata `{key}`: {e}"))
    })
}

/// Writes a safetensors header: its length (8 bytes, little-endian) and
/// the JSON, padded with spaces so that the data stays 8-byte aligned, as
/// safetensors writers do.
fn write_header(out: &mut impl Write, header: &serde_json::Value) -> std::io::Result<()> {
    let mut json = serde_json::to_vec(header).expect("a JSON value serialises");
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    out.write_all(&(json.len() as u64).to_le_bytes())?;
    out.write_all(&json)
}

/// Whether `path` is a model file: a safetensors file whose metadata
/// names the plugin that wrote it.
pub(crate) fn is_model_file(path: &Path) -> bool {
    read_metadata(path).is_ok_and(|m| m.contains_key(PLUGIN_KEY))
}

/// Writes `out`, a model file with `metadata` whose one tensor
/// ([`PAYLOAD_TENSOR`], `u8`) holds the bytes of `payload`: how the host
/// keeps a plugin's own file format (a TorchScript archive, a process
/// plugin's file) inside the one model-file contract.
pub(crate) fn wrap(
    payload: &Path,
    metadata: &BTreeMap<String, String>,
    out: &Path,
) -> Result<(), ModelFileError> {
    let about = std::fs::metadata(payload).map_err(|e| {
        ModelFileError::new(payload, format!("cannot read what the plugin saved: {e}"))
    })?;
    if about.is_dir() {
        return Err(ModelFileError::new(
            payload,
            "the plugin's `save` wrote a folder; a model must be one file",
        ));
    }
    let len = about.len();
    if len == 0 {
        return Err(ModelFileError::new(
            payload,
            "the plugin's `save` wrote an empty file",
        ));
    }
    let mut src = std::fs::File::open(payload).map_err(|e| {
        ModelFileError::new(payload, format!("cannot read what the plugin saved: {e}"))
    })?;
    let header = serde_json::json!({
        "__metadata__": metadata,
        PAYLOAD_TENSOR: {"dtype": "U8", "shape": [len], "data_offsets": [0, len]},
    });
    let mut write = || -> std::io::Result<()> {
        let mut dst = std::fs::File::create(out)?;
        write_header(&mut dst, &header)?;
        let copied = std::io::copy(&mut src, &mut dst)?;
        if copied != len {
            return Err(std::io::Error::other(format!(
                "{} changed while it was copied",
                payload.display()
            )));
        }
        dst.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(out);
        ModelFileError::new(out, format!("cannot write the wrapped model: {e}"))
    })
}

/// Makes `saved`, the file a volumetric segmenter's `save` wrote, a model
/// file: one the plugin wrote in the contract is kept as it is; any other
/// (a TorchScript archive, a process plugin's file) is `wrap`ped with
/// the plugin's name, version and settings (TOML) in its place.
pub fn ensure_model_file(
    saved: &Path,
    plugin: &str,
    version: &str,
    settings: &toml::Table,
) -> Result<(), ModelFileError> {
    if is_model_file(saved) {
        return Ok(());
    }
    let settings = toml::to_string(settings)
        .map_err(|e| ModelFileError::new(saved, format!("settings cannot be written: {e}")))?;
    let metadata = BTreeMap::from([
        (PLUGIN_KEY.to_string(), plugin.to_string()),
        (PLUGIN_VERSION_KEY.to_string(), version.to_string()),
        (SETTINGS_KEY.to_string(), settings),
    ]);
    let name = saved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let wrapped = saved.with_file_name(format!(".wrapping.{name}"));
    wrap(saved, &metadata, &wrapped)?;
    std::fs::rename(&wrapped, saved).map_err(|e| {
        let _ = std::fs::remove_file(&wrapped);
        ModelFileError::new(
            saved,
            format!("cannot replace it with its wrapped form: {e}"),
        )
    })
}

/// How new volumes are prepared for a network and its predictions
/// brought back to their grid: what a model file records besides its
/// weights, from the `[dataset]` table of the pipeline that trained it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Preprocessing {
    /// The working spacing it was trained at (`None`: each volume's own).
    pub spacing: Option<[f64; 3]>,
    /// The bias correction of its training data.
    pub bias_correction: BiasCorrection,
    /// The band (mm) in which predictions are re-decided from the FLAIR on
    /// the volume's own grid (`None`: not refined).
    pub refine_boundary_mm: Option<f64>,
}

/// Records `preprocessing` in a model file (settings at their defaults
/// are left out).
pub fn record_preprocessing(
    path: &Path,
    preprocessing: &Preprocessing,
) -> Result<(), ModelFileError> {
    if let Some(mm) = preprocessing.spacing {
        set_metadata(path, SPACING_KEY, &spacing_text(mm))?;
    }
    if preprocessing.bias_correction != BiasCorrection::None {
        set_metadata(
            path,
            BIAS_CORRECTION_KEY,
            preprocessing.bias_correction.as_str(),
        )?;
    }
    if let Some(mm) = preprocessing.refine_boundary_mm {
        set_metadata(path, REFINE_BOUNDARY_KEY, &mm.to_string())?;
    }
    Ok(())
}

/// The preprocessing a model file records (defaults for what it leaves
/// out).
pub fn preprocessing(path: &Path) -> Result<Preprocessing, ModelFileError> {
    Ok(Preprocessing {
        spacing: spacing(path)?,
        bias_correction: bias_correction(path)?,
        refine_boundary_mm: refine_boundary_mm(path)?,
    })
}

/// Where the payload of a wrapped model file lies (byte range in the
/// file); `None` for a model file its plugin wrote itself.
fn payload_range(path: &Path) -> Result<Option<(u64, u64)>, ModelFileError> {
    let (header, data_start) = read_header(path)?;
    let Some(entry) = header.get(PAYLOAD_TENSOR) else {
        return Ok(None);
    };
    let offsets = entry
        .get("data_offsets")
        .and_then(|o| o.as_array())
        .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)));
    match offsets {
        Some((a, b)) if a <= b => Ok(Some((data_start + a, data_start + b))),
        _ => Err(ModelFileError::new(
            path,
            format!("tensor `{PAYLOAD_TENSOR}` has no valid `data_offsets`"),
        )),
    }
}

/// Whether `path` wraps a plugin's own file (`wrap`).
pub fn is_wrapped(path: &Path) -> Result<bool, ModelFileError> {
    Ok(payload_range(path)?.is_some())
}

/// The file to give the plugin's `load` for the model file `model`: the
/// payload of a wrapped model, copied into `scratch` (created if needed),
/// or `model` itself.
pub fn plugin_file(model: &Path, scratch: &Path) -> Result<PathBuf, ModelFileError> {
    let Some((start, end)) = payload_range(model)? else {
        return Ok(model.to_path_buf());
    };
    let out = scratch.join("plugin-model");
    let copy = || -> std::io::Result<()> {
        std::fs::create_dir_all(scratch)?;
        let mut src = std::fs::File::open(model)?;
        std::io::Seek::seek(&mut src, std::io::SeekFrom::Start(start))?;
        let mut dst = std::fs::File::create(&out)?;
        let copied = std::io::copy(&mut src.take(end - start), &mut dst)?;
        if copied != end - start {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the payload ends after {copied} of {} bytes", end - start),
            ));
        }
        Ok(())
    };
    copy().map_err(|e| {
        ModelFileError::new(
            model,
            format!(
                "cannot extract the plugin's model to {}: {e}",
                out.display()
            ),
        )
    })?;
    Ok(out)
}

/// The working spacing stored in a model file, if any.
pub fn spacing(path: &Path) -> Result<Option<[f64; 3]>, ModelFileError> {
    let Some(text) = read_metadata(path)?.remove(SPACING_KEY) else {
        return Ok(None);
    };
    parse_spacing(&text).map(Some).ok_or_else(|| {
        ModelFileError::new(
            path,
            format!("`{SPACING_KEY}` = {text:?} is not three positive millimetre values x,y,z"),
        )
    })
}

/// Three positive millimetre values written `x,y,z` (as [`SPACING_KEY`]
/// stores them).
pub fn parse_spacing(text: &str) -> Option<[f64; 3]> {
    let values: Vec<f64> = text
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .ok()?;
    match values[..] {
        [x, y, z] if values.iter().all(|v| v.is_finite() && *v > 0.0) => Some([x, y, z]),
        _ => None,
    }
}

/// The bias correction stored in a model file (none when absent).
pub fn bias_correction(path: &Path) -> Result<BiasCorrection, ModelFileError> {
    match read_metadata(path)?.remove(BIAS_CORRECTION_KEY) {
        None => Ok(BiasCorrection::None),
        Some(text) => BiasCorrection::parse(&text).ok_or_else(|| {
            let expected: Vec<String> = BiasCorrection::ALL
                .iter()
                .map(|v| format!("{:?}", v.as_str()))
                .collect();
            ModelFileError::new(
                path,
                format!(
                    "`{BIAS_CORRECTION_KEY}` = {text:?}: expected {}",
                    expected.join(" or ")
                ),
            )
        }),
    }
}

/// The boundary refinement band stored in a model file, if any.
pub fn refine_boundary_mm(path: &Path) -> Result<Option<f64>, ModelFileError> {
    let Some(text) = read_metadata(path)?.remove(REFINE_BOUNDARY_KEY) else {
        return Ok(None);
    };
    parse_millimetres(&text).map(Some).ok_or_else(|| {
        ModelFileError::new(
            path,
            format!("`{REFINE_BOUNDARY_KEY}` = {text:?} is not a positive number of millimetres"),
        )
    })
}

/// A positive number of millimetres written as a decimal (as
/// [`REFINE_BOUNDARY_KEY`] stores it).
pub fn parse_millimetres(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|mm| mm.is_finite() && *mm > 0.0)
}

/// `"x,y,z"`, as [`spacing`] reads it back.
fn spacing_text(mm: [f64; 3]) -> String {
    format!("{},{},{}", mm[0], mm[1], mm[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal safetensors file: one f32 tensor of 3 values.
    fn model(dir: &Path) -> std::path::PathBuf {
        let header = br#"{"__metadata__":{"clisc.plugin":"unet3d"},"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        for v in [1.0f32, 2.0, 3.0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let path = dir.join("model.ckpt");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn metadata_is_added_and_the_data_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = model(dir.path());
        assert_eq!(spacing(&path).unwrap(), None);
        set_metadata(&path, SPACING_KEY, &spacing_text([2.0, 2.0, 2.5])).unwrap();
        assert_eq!(spacing(&path).unwrap(), Some([2.0, 2.0, 2.5]));
        let meta = read_metadata(&path).unwrap();
        assert_eq!(meta["clisc.plugin"], "unet3d");
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let data: Vec<f32> = bytes[8 + n..]
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(data, [1.0, 2.0, 3.0]);
        set_metadata(&path, SPACING_KEY, "1,x,2").unwrap();
        let e = spacing(&path).unwrap_err().to_string();
        assert!(
            e.contains("clisc.spacing") && e.contains("model.ckpt"),
            "{e}"
        );
    }

    #[test]
    fn a_wrapped_file_comes_back_byte_for_byte_and_takes_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let payload = dir.path().join("module.pt");
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&payload, &bytes).unwrap();
        let wrapped = dir.path().join("model.ckpt");
        let meta = BTreeMap::from([(PLUGIN_KEY.to_string(), "some-adapter".to_string())]);
        wrap(&payload, &meta, &wrapped).unwrap();
        assert!(is_model_file(&wrapped) && is_wrapped(&wrapped).unwrap());
        set_metadata(&wrapped, SPACING_KEY, "2,2,2").unwrap();
        assert_eq!(spacing(&wrapped).unwrap(), Some([2.0; 3]));
        let out = plugin_file(&wrapped, &dir.path().join("scratch")).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), bytes);
        // A model file its plugin wrote itself is handed over as it is.
        let own_dir = dir.path().join("own");
        std::fs::create_dir(&own_dir).unwrap();
        let own = model(&own_dir);
        assert!(!is_wrapped(&own).unwrap());
        assert_eq!(plugin_file(&own, dir.path()).unwrap(), own);
        // A TorchScript archive is no model file.
        assert!(!is_model_file(&payload));
        // Nothing saved, or a folder saved: named as the plugin's output.
        let empty = dir.path().join("empty.pt");
        std::fs::write(&empty, b"").unwrap();
        let e = wrap(&empty, &meta, &dir.path().join("x.ckpt"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("empty.pt") && e.contains("wrote an empty file"),
            "{e}"
        );
        let e = wrap(dir.path(), &meta, &dir.path().join("x.ckpt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrote a folder"), "{e}");
        // A truncated wrapped file names itself.
        let all = std::fs::read(&wrapped).unwrap();
        std::fs::write(&wrapped, &all[..all.len() - 10]).unwrap();
        let e = plugin_file(&wrapped, &dir.path().join("s2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.ckpt") && e.contains("ends after"), "{e}");
    }

    #[test]
    fn bias_correction_round_trips_and_a_bad_value_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = model(dir.path());
        assert_eq!(bias_correction(&path).unwrap(), BiasCorrection::None);
        set_metadata(
            &path,
            BIAS_CORRECTION_KEY,
            BiasCorrection::Polynomial.as_str(),
        )
        .unwrap();
        assert_eq!(bias_correction(&path).unwrap(), BiasCorrection::Polynomial);
        set_metadata(&path, BIAS_CORRECTION_KEY, "n4").unwrap();
        let e = bias_correction(&path).unwrap_err().to_string();
        assert!(
            e.contains("model.ckpt")
                && e.contains("clisc.bias_correction")
                && e.contains("polynomial"),
            "{e}"
        );
    }

    #[test]
    fn preprocessing_round_trips_and_a_bad_band_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = model(dir.path());
        assert_eq!(preprocessing(&path).unwrap(), Preprocessing::default());
        let recorded = Preprocessing {
            spacing: Some([2.5, 2.5, 2.0]),
            bias_correction: BiasCorrection::Polynomial,
            refine_boundary_mm: Some(4.0),
        };
        record_preprocessing(&path, &recorded).unwrap();
        assert_eq!(preprocessing(&path).unwrap(), recorded);
        set_metadata(&path, REFINE_BOUNDARY_KEY, "-1").unwrap();
        let e = preprocessing(&path).unwrap_err().to_string();
        assert!(
            e.contains("model.ckpt") && e.contains("clisc.refine_boundary_mm"),
            "{e}"
        );
    }
}
