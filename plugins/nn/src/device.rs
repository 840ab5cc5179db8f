//! Mapping the pipeline's device string to a `tch::Device`.

use clisc_sdk::PluginError;
use tch::Device;

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` picks CUDA device 0
/// when libtorch sees a GPU, otherwise the CPU. Asking for a GPU that is
/// not there is an error, not a silent CPU fallback.
pub fn resolve_device(spec: &str) -> Result<Device, PluginError> {
    let spec = spec.trim();
    match spec {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        _ => {
            let index = match spec {
                "cuda" => Some(0),
                s => s
                    .strip_prefix("cuda:")
                    .and_then(|n| n.parse::<usize>().ok()),
            };
            let Some(index) = index else {
                return Err(PluginError::config(format!(
                    "device `{spec}` is not one of `auto`, `cpu`, `cuda`, `cuda:N`"
                )));
            };
            let available = tch::Cuda::device_count() as usize;
            if index >= available {
                return Err(PluginError::config(format!(
                    "device `{spec}` requested but libtorch sees {available} CUDA device(s)"
                )));
            }
            Ok(Device::Cuda(index))
        }
    }
}

/// The number of CUDA devices libtorch sees (0 without a GPU or a CUDA
/// build): what the host resolves `[run] device = "auto"` with.
pub fn cuda_device_count() -> usize {
    tch::Cuda::device_count().max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_strings() {
        assert_eq!(resolve_device("cpu").unwrap(), Device::Cpu);
        assert!(resolve_device("gpu")
            .unwrap_err()
            .message
            .contains("not one of"));
        if !tch::Cuda::is_available() {
            assert_eq!(resolve_device("auto").unwrap(), Device::Cpu);
            assert!(resolve_device("cuda:0")
                .unwrap_err()
                .message
                .contains("sees 0"));
        }
    }
}
