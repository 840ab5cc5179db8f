//! Mapping the pipeline's device string to a `tch::Device`, and making
//! sure a CUDA build of libtorch can see its GPUs.

use std::path::PathBuf;
use std::sync::Once;

use clisc_sdk::PluginError;
use tch::Device;

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` picks CUDA device 0
/// when libtorch sees a GPU, otherwise the CPU. Asking for a GPU that is
/// not there is an error, not a silent CPU fallback.
pub fn resolve_device(spec: &str) -> Result<Device, PluginError> {
    let spec = spec.trim();
    match spec {
        "auto" => {
            load_cuda_backend();
            Ok(Device::cuda_if_available())
        }
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
    load_cuda_backend();
    tch::Cuda::device_count().max(0) as usize
}

/// The library of libtorch's CUDA kernels. It registers the CUDA backend
/// with libtorch when it is loaded; nothing calls it by name.
const CUDA_BACKEND: &str = "libtorch_cuda.so";

/// Loads libtorch's CUDA backend once per process, where libtorch has one.
///
/// Rust links with `--as-needed`, so a binary built against a CUDA build
/// of libtorch drops `libtorch_cuda.so` (no symbol of it is referenced)
/// and libtorch then reports no GPU at all. Loading it by hand restores
/// the GPUs; a CPU-only libtorch has no such file and stays on the CPU.
/// The backend must be the one of the libtorch this process already
/// mapped, so it is looked up beside that `libtorch_cpu.so`; only when
/// none is mapped (a static build) is it looked up by name. Only device
/// settings that can mean a GPU (`auto`, `cuda`, `cuda:N`) load it.
fn load_cuda_backend() {
    static LOAD: Once = Once::new();
    LOAD.call_once(|| {
        let candidate = match mapped_libtorch_dir() {
            Some(dir) if !dir.join(CUDA_BACKEND).exists() => {
                tracing::debug!("CPU-only libtorch in {}: no CUDA backend", dir.display());
                return;
            }
            Some(dir) => dir.join(CUDA_BACKEND),
            None => PathBuf::from(CUDA_BACKEND),
        };
        // SAFETY: libtorch_cuda's initialisers only register its backend
        // with the libtorch already loaded in this process (the one beside it).
        match unsafe { libloading::Library::new(&candidate) } {
            Ok(library) => {
                tracing::debug!(library = %candidate.display(), "loaded libtorch's CUDA backend");
                // Kept for the life of the process: libtorch holds pointers into it.
                std::mem::forget(library);
            }
            Err(error) if candidate.is_absolute() => tracing::warn!(
                "{} is there but could not be loaded ({error}); libtorch will see no GPU",
                candidate.display()
            ),
            Err(error) => {
                tracing::debug!(library = %candidate.display(), %error, "no CUDA backend")
            }
        }
    });
}

/// The directory of the `libtorch_cpu.so` mapped into this process, read
/// from `/proc/self/maps` (Linux); `None` elsewhere or when not found.
fn mapped_libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(PathBuf::from)
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name == "libtorch_cpu.so")
        })
        .and_then(|path| path.parent().map(PathBuf::from))
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
        if cuda_device_count() == 0 {
            assert_eq!(resolve_device("auto").unwrap(), Device::Cpu);
            assert!(resolve_device("cuda:0")
                .unwrap_err()
                .message
                .contains("sees 0"));
        }
    }

    /// A CUDA build of libtorch (the PyPI wheel the dev environment uses
    /// is one) has `libtorch_cuda.so` beside `libtorch_cpu.so`; asking for
    /// devices must map it, or a machine with a GPU would report none.
    #[test]
    fn maps_the_cuda_backend_of_a_cuda_build() {
        cuda_device_count();
        let dir = mapped_libtorch_dir().expect("libtorch_cpu.so is mapped");
        if !dir.join(CUDA_BACKEND).exists() {
            eprintln!("CPU-only libtorch at {}: nothing to load", dir.display());
            return;
        }
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(
            maps.contains(CUDA_BACKEND),
            "{CUDA_BACKEND} is in {} but was not loaded",
            dir.display()
        );
    }
}
