//! Loading weight files as users download them, with errors that name the
//! file, the tensor and the expected shape.
//!
//! Two steps, shared by every built-in model (CLIP, SAM, ResNet, ...):
//!
//! 1. [`WeightFile::open`] reads a file into a `name -> tensor` map (CPU,
//!    dtype as stored). The format is detected from the content, not the
//!    extension (OpenAI ships TorchScript archives named `.pt`, SAM ships
//!    `torch.save` pickles named `.pth`):
//!    * **TorchScript archive** (`torch.jit.save`, e.g. OpenAI's
//!      `ViT-B-32.pt`): opened with `tch::CModule::load`; the names are
//!      the module's `named_parameters` (buffers and plain attributes are
//!      not exposed by libtorch's C API; models whose TorchScript files
//!      carry buffers they need should use a state dict instead).
//!    * **`torch.save` zip pickle** (a state dict, possibly nested such as
//!      `{"model": {...}}`, flattened with `.`): read by
//!      `torch_pickle`, because libtorch cannot read them.
//!    * **safetensors**.
//!
//!    The legacy (pre-1.6, non-zip) `torch.save` format is rejected with a
//!    message telling the user to re-save the file.
//! 2. The model builds its variables in a `tch::nn::VarStore` with the
//!    official parameter names, then [`WeightFile::copy_into`] checks the
//!    whole file against the store *before* copying anything: missing
//!    tensors, unexpected tensors and shape mismatches are all reported in
//!    one error. Values are converted to the variable's dtype (fp16 -> f32)
//!    and device while copying.
//!
//! Renaming helpers ([`WeightFile::strip_prefix`], [`WeightFile::rename`],
//! [`WeightFile::remove`]) adapt checkpoints whose names differ slightly
//! from the model's (a `module.` prefix, extra non-weight entries).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use clisc_sdk::PluginError;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// On-disk format of a weight file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// A TorchScript archive (`torch.jit.save`).
    TorchScript,
    /// A zip-format `torch.save` pickle of (nested) dictionaries of tensors.
    TorchPickle,
    /// A safetensors file.
    SafeTensors,
}

impl WeightFormat {
    /// Human-readable name used in messages.
    pub fn describe(self) -> &'static str {
        match self {
            WeightFormat::TorchScript => "TorchScript archive",
            WeightFormat::TorchPickle => "torch.save state dict",
            WeightFormat::SafeTensors => "safetensors file",
        }
    }

    /// Detects the format of `path` from its first bytes (and, for zip
    /// archives, from the entries inside).
    pub(crate) fn detect(path: &Path) -> Result<WeightFormat, PluginError> {
        let shown = path.display();
        let mut file = std::fs::File::open(path)
            .map_err(|e| PluginError::weights(format!("cannot open weight file `{shown}`: {e}")))?;
        let mut head = [0u8; 8];
        let n = file
            .read(&mut head)
            .map_err(|e| PluginError::weights(format!("cannot read `{shown}`: {e}")))?;
        let head = &head[..n];
        if head.starts_with(b"PK\x03\x04") {
            let zip = zip::ZipArchive::new(file).map_err(|e| {
                PluginError::weights(format!(
                    "`{shown}` starts like a zip archive (PyTorch format) but cannot be read: {e} (truncated download?)"
                ))
            })?;
            let names: Vec<&str> = zip.file_names().collect();
            let is_script = names.iter().any(|n| {
                n.ends_with("/constants.pkl")
                    || n.contains("/code/")
                    || n.ends_with("/bytecode.pkl")
            });
            if is_script {
                return Ok(WeightFormat::TorchScript);
            }
            if names
                .iter()
                .any(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
            {
                return Ok(WeightFormat::TorchPickle);
            }
            return Err(PluginError::weights(format!(
                "`{shown}` is a zip archive but neither a TorchScript archive nor a torch.save file (no data.pkl)"
            )));
        }
        if head.len() == 8 {
            let header_len = u64::from_le_bytes(head.try_into().unwrap_or([0; 8]));
            let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            let mut brace = [0u8; 1];
            let starts_json = file
                .read(&mut brace)
                .map(|k| k == 1 && brace[0] == b'{')
                .unwrap_or(false);
            if starts_json && header_len > 0 && header_len + 8 <= file_len {
                return Ok(WeightFormat::SafeTensors);
            }
            if starts_json {
                return Err(PluginError::weights(format!(
                    "`{shown}` looks like a safetensors file but its header ({header_len} bytes) does not fit in the \
                     file ({file_len} bytes): truncated download?"
                )));
            }
        }
        if head.first() == Some(&0x80) {
            return Err(PluginError::weights(format!(
                "`{shown}` is a legacy (pre-PyTorch-1.6) torch.save file; re-save it with a recent PyTorch \
                 (`torch.save(torch.load(f), f)`) or convert it to safetensors"
            )));
        }
        Err(PluginError::weights(format!(
            "`{shown}` is not a TorchScript archive, a torch.save state dict or a safetensors file"
        )))
    }
}

/// First line of a libtorch error (the rest is a C++ backtrace).
fn short(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or("").to_string()
}

/// The tensors of one weight file, by name (CPU, stored dtype).
#[derive(Debug)]
pub struct WeightFile {
    path: PathBuf,
    format: WeightFormat,
    tensors: BTreeMap<String, Tensor>,
}

impl WeightFile {
    /// Reads `path` (format detected from content; see the module docs).
    pub fn open(path: &Path) -> Result<WeightFile, PluginError> {
        let format = WeightFormat::detect(path)?;
        let shown = path.display();
        let named: Vec<(String, Tensor)> = match format {
            WeightFormat::TorchScript => {
                let module = tch::CModule::load_on_device(path, tch::Device::Cpu).map_err(|e| {
                    PluginError::weights(format!(
                        "cannot load TorchScript archive `{shown}`: {}",
                        short(e)
                    ))
                })?;
                module.named_parameters().map_err(|e| {
                    PluginError::weights(format!(
                        "cannot list the parameters of `{shown}`: {}",
                        short(e)
                    ))
                })?
            }
            WeightFormat::TorchPickle => {
                crate::torch_pickle::read_torch_zip(path).map_err(|e| {
                    PluginError::weights(format!("cannot read torch.save file `{shown}`: {e}"))
                })?
            }
            WeightFormat::SafeTensors => Tensor::read_safetensors(path).map_err(|e| {
                PluginError::weights(format!(
                    "cannot read safetensors file `{shown}`: {}",
                    short(e)
                ))
            })?,
        };
        tracing::debug!(file = %shown, format = format.describe(), tensors = named.len(), "weight file read");
        Ok(WeightFile::from_tensors(path, format, named))
    }

    /// Wraps tensors obtained elsewhere (tests, conversions).
    pub fn from_tensors(
        path: &Path,
        format: WeightFormat,
        named: Vec<(String, Tensor)>,
    ) -> WeightFile {
        WeightFile {
            path: path.to_path_buf(),
            format,
            tensors: named.into_iter().collect(),
        }
    }

    /// The file the tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its detected format.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the file held no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    /// The tensor called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The tensor called `name`, or an error naming the file and the tensor.
    pub fn require(&self, name: &str) -> Result<&Tensor, PluginError> {
        self.get(name).ok_or_else(|| {
            PluginError::weights(format!(
                "weight file `{}` has no tensor `{name}` (is it the right model?)",
                self.path.display()
            ))
        })
    }

    /// Shape of `name`, or an error naming the file and the tensor.
    pub fn shape(&self, name: &str) -> Result<Vec<i64>, PluginError> {
        Ok(self.require(name)?.size())
    }

    /// Removes and returns `name` (e.g. non-weight entries to ignore).
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    /// Renames every `prefix<rest>` to `<rest>` (e.g. a `module.` prefix
    /// left by `DataParallel`, or `state_dict.` from a wrapped checkpoint).
    pub fn strip_prefix(&mut self, prefix: &str) {
        self.rename(|n| n.strip_prefix(prefix).map(str::to_string));
    }

    /// Renames tensors: `f` returns the new name, or `None` to keep it.
    pub fn rename(&mut self, f: impl Fn(&str) -> Option<String>) {
        let old = std::mem::take(&mut self.tensors);
        self.tensors = old
            .into_iter()
            .map(|(n, t)| (f(&n).unwrap_or(n), t))
            .collect();
    }

    /// Checks the file against every variable of `vs`, then copies the
    /// values in (converted to each variable's dtype and device).
    ///
    /// Names in `ignore` (exact names, or prefixes ending with `.`) may be
    /// present in the file without a matching variable. Any missing
    /// variable, unexpected tensor or shape mismatch makes the whole call
    /// fail before anything is copied; the error lists them (up to 10 of
    /// each kind) with the expected shapes and names the file.
    pub fn copy_into(&self, vs: &VarStore, ignore: &[&str]) -> Result<CopyReport, PluginError> {
        let vars = vs.variables();
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        for (name, var) in &vars {
            match self.tensors.get(name) {
                None => missing.push(format!("`{name}` (expected shape {:?})", var.size())),
                Some(t) if t.size() != var.size() => mismatched.push(format!(
                    "`{name}`: file has shape {:?}, model expects {:?}",
                    t.size(),
                    var.size()
                )),
                Some(_) => {}
            }
        }
        let is_ignored = |n: &str| {
            ignore
                .iter()
                .any(|i| n == *i || (i.ends_with('.') && n.starts_with(i)))
        };
        let mut unexpected = Vec::new();
        let mut ignored = Vec::new();
        for name in self.tensors.keys() {
            if !vars.contains_key(name) {
                if is_ignored(name) {
                    ignored.push(name.clone());
                } else {
                    unexpected.push(format!("`{name}`"));
                }
            }
        }
        missing.sort();
        mismatched.sort();
        if !(missing.is_empty() && mismatched.is_empty() && unexpected.is_empty()) {
            let mut msg = format!(
                "weight file `{}` ({}) does not match the model:",
                self.path.display(),
                self.format.describe()
            );
            for (what, list) in [
                ("missing", &missing),
                ("wrong shape", &mismatched),
                ("unexpected", &unexpected),
            ] {
                if !list.is_empty() {
                    let more = if list.len() > 10 {
                        format!(" and {} more", list.len() - 10)
                    } else {
                        String::new()
                    };
                    let shown: Vec<&str> = list.iter().take(10).map(|s| s.as_str()).collect();
                    msg.push_str(&format!(
                        " {what} ({}): {}{more};",
                        list.len(),
                        shown.join(", ")
                    ));
                }
            }
            return Err(PluginError::weights(msg.trim_end_matches(';').to_string()));
        }
        tch::no_grad(|| -> Result<(), PluginError> {
            for (name, var) in &vars {
                let src = &self.tensors[name];
                let mut dst = var.shallow_clone();
                let converted = src
                    .f_to_device(dst.device())
                    .and_then(|t| t.f_to_kind(dst.kind()))
                    .map_err(|e| {
                        PluginError::weights(format!(
                            "tensor `{name}` of `{}`: {}",
                            self.path.display(),
                            short(e)
                        ))
                    })?;
                dst.f_copy_(&converted).map_err(|e| {
                    PluginError::weights(format!(
                        "tensor `{name}` of `{}`: {}",
                        self.path.display(),
                        short(e)
                    ))
                })?;
            }
            Ok(())
        })?;
        Ok(CopyReport {
            copied: vars.len(),
            ignored,
        })
    }

    /// Kinds present in the file (e.g. to log that fp16 weights were widened).
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = Vec::new();
        for t in self.tensors.values() {
            if !kinds.contains(&t.kind()) {
                kinds.push(t.kind());
            }
        }
        kinds
    }
}

/// What [`WeightFile::copy_into`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Number of variables filled.
    pub copied: usize,
    /// File tensors skipped because they matched an `ignore` entry.
    pub ignored: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::Init;

    fn store() -> VarStore {
        let vs = VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        let _ = root.sub("layer").var("weight", &[2, 3], Init::Const(0.0));
        let _ = root.sub("layer").var("bias", &[2], Init::Const(0.0));
        vs
    }

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn safetensors_round_trip_with_fp16_widening() {
        let d = dir();
        let path = d.path().join("w.safetensors");
        let w = Tensor::arange(6, (Kind::Float, tch::Device::Cpu))
            .view([2, 3])
            .to_kind(Kind::Half);
        let b = Tensor::from_slice(&[1.5f32, -2.0]);
        let extra = Tensor::from_slice(&[7i64]);
        Tensor::write_safetensors(
            &[
                ("layer.weight", &w),
                ("layer.bias", &b),
                ("input_resolution", &extra),
            ],
            &path,
        )
        .unwrap();
        let file = WeightFile::open(&path).unwrap();
        assert_eq!(file.format(), WeightFormat::SafeTensors);
        let vs = store();
        let err = file.copy_into(&vs, &[]).unwrap_err();
        assert!(
            err.message.contains("unexpected (1): `input_resolution`"),
            "{}",
            err.message
        );
        let report = file.copy_into(&vs, &["input_resolution"]).unwrap();
        assert_eq!(report.copied, 2);
        let got = vs.variables()["layer.weight"].shallow_clone();
        assert_eq!(got.kind(), Kind::Float);
        assert_eq!(f64::try_from(got.sum(Kind::Double)).unwrap(), 15.0);
    }

    #[test]
    fn reports_missing_and_mismatched_tensors_with_shapes() {
        let d = dir();
        let path = d.path().join("bad.safetensors");
        let w = Tensor::zeros([3, 3], (Kind::Float, tch::Device::Cpu));
        Tensor::write_safetensors(&[("layer.weight", &w)], &path).unwrap();
        let err = WeightFile::open(&path)
            .unwrap()
            .copy_into(&store(), &[])
            .unwrap_err();
        let m = err.message.to_string();
        assert!(m.contains("bad.safetensors"), "{m}");
        assert!(
            m.contains("missing (1): `layer.bias` (expected shape [2])"),
            "{m}"
        );
        assert!(
            m.contains("`layer.weight`: file has shape [3, 3], model expects [2, 3]"),
            "{m}"
        );
    }

    #[test]
    fn truncated_and_foreign_files_are_rejected_by_name() {
        let d = dir();
        let path = d.path().join("w.safetensors");
        let w = Tensor::zeros([64, 64], (Kind::Float, tch::Device::Cpu));
        Tensor::write_safetensors(&[("layer.weight", &w)], &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = WeightFile::open(&path).unwrap_err();
        assert!(err.message.contains("w.safetensors"), "{}", err.message);

        let text = d.path().join("notes.pt");
        std::fs::write(&text, b"hello, not weights").unwrap();
        let err = WeightFile::open(&text).unwrap_err();
        assert!(
            err.message.contains("notes.pt") && err.message.contains("not a TorchScript"),
            "{}",
            err.message
        );

        let zipped = d.path().join("trunc.pt");
        std::fs::write(&zipped, b"PK\x03\x04garbage").unwrap();
        let err = WeightFile::open(&zipped).unwrap_err();
        assert!(err.message.contains("truncated"), "{}", err.message);
    }

    #[test]
    fn renaming_helpers() {
        let t = Tensor::zeros([1], (Kind::Float, tch::Device::Cpu));
        let mut f = WeightFile::from_tensors(
            Path::new("x.pt"),
            WeightFormat::TorchPickle,
            vec![("module.a".into(), t.shallow_clone()), ("b".into(), t)],
        );
        f.strip_prefix("module.");
        assert_eq!(f.names().collect::<Vec<_>>(), vec!["a", "b"]);
        assert!(f.remove("b").is_some());
        assert!(f
            .require("b")
            .unwrap_err()
            .message
            .contains("no tensor `b`"));
    }
}
