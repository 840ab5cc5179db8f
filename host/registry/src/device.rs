//! The compute device a run uses, resolved once by the host so that every
//! plugin (native, TorchScript adapter or process) receives the concrete
//! device the SDK promises (`cpu` or `cuda:N`), never the `auto` of the
//! pipeline file.

/// A device setting that names no device this machine has.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Not a device name.
    #[error("{what} = {spec:?}: expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")]
    Unknown {
        /// Which setting (`[run] device`, `--device`).
        what: String,
        /// The value given.
        spec: String,
    },
    /// A GPU index libtorch does not see.
    #[error("{what} = {spec:?}: libtorch sees {gpus} CUDA device(s)")]
    Missing {
        /// Which setting.
        what: String,
        /// The value given.
        spec: String,
        /// GPUs visible.
        gpus: usize,
    },
}

/// Resolves a device setting (`what` names it in errors, e.g.
/// `[run] device` or `--device`): `auto` becomes `cuda:0` when libtorch sees a
/// GPU and `cpu` otherwise; `cuda` becomes `cuda:0`; `cpu` and `cuda:N`
/// are kept, a GPU index libtorch does not see is an error.
pub fn resolve(what: &str, spec: &str) -> Result<String, DeviceError> {
    // `cpu` needs no count (which loads libtorch's CUDA backend, if any).
    let gpus = match spec.trim() {
        "cpu" => 0,
        _ => clisc_nn::device::cuda_device_count(),
    };
    resolve_with(what, spec, gpus)
}

/// [`resolve`] with the number of visible GPUs given.
fn resolve_with(what: &str, spec: &str, gpus: usize) -> Result<String, DeviceError> {
    let spec = spec.trim();
    let index = match spec {
        "auto" if gpus == 0 => return Ok("cpu".into()),
        "cpu" => return Ok("cpu".into()),
        "auto" | "cuda" => 0,
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => {
                return Err(DeviceError::Unknown {
                    what: what.into(),
                    spec: spec.into(),
                })
            }
        },
    };
    if index >= gpus {
        return Err(DeviceError::Missing {
            what: what.into(),
            spec: spec.into(),
            gpus,
        });
    }
    Ok(format!("cuda:{index}"))
}

#[cfg(test)]
mod tests {
    use super::resolve_with;

    #[test]
    fn auto_becomes_a_concrete_device() {
        assert_eq!(resolve_with("[run] device", "auto", 0).unwrap(), "cpu");
        assert_eq!(resolve_with("[run] device", "auto", 2).unwrap(), "cuda:0");
        assert_eq!(resolve_with("[run] device", "cuda", 1).unwrap(), "cuda:0");
        assert_eq!(resolve_with("[run] device", " cpu ", 1).unwrap(), "cpu");
        assert_eq!(resolve_with("[run] device", "cuda:1", 2).unwrap(), "cuda:1");
    }

    #[test]
    fn a_missing_gpu_or_a_bad_name_is_an_error() {
        let e = resolve_with("[run] device", "cuda:1", 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cuda:1") && e.contains("sees 1"), "{e}");
        let e = resolve_with("[run] device", "gpu", 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"cuda:N\""), "{e}");
    }
}
