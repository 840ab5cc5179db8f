//! Helpers shared by the test suites of several clisc crates (a
//! dev-dependency only): the project's Python interpreter
//! (`$CLISC_PYTHON`, set by `source scripts/env.sh`), the parity tests'
//! reference folders, generated on first use, and (feature `tch`) the
//! largest difference between two tensors.
#![warn(unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// The Python interpreter of the project's environment, `$CLISC_PYTHON`.
/// Panics when it is unset or empty, telling how to set it; `why` says
/// what the test needs Python for (e.g. "it provides a Python with
/// nibabel").
#[track_caller]
pub fn python(why: &str) -> String {
    match std::env::var("CLISC_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => panic!("CLISC_PYTHON is not set: `source scripts/env.sh` first ({why})"),
    }
}

/// What a Python run printed.
#[derive(Debug, Clone)]
pub struct PythonOutput {
    pub stdout: String,
    pub stderr: String,
}

impl PythonOutput {
    /// Standard output followed by standard error.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `$CLISC_PYTHON ARGS` (see [`python`] for `why`), panicking with
/// both of its outputs when it cannot start or fails.
#[track_caller]
pub fn run_python(why: &str, args: &[&str]) -> PythonOutput {
    let python = python(why);
    let out = Command::new(&python)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} (CLISC_PYTHON): {e}"));
    let ran = PythonOutput {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        out.status.success(),
        "python {args:?} failed ({}):\n{}",
        out.status,
        ran.combined()
    );
    ran
}

/// `${CLISC_CACHE_DIR:-~/.cache/clisc}/parity/<name>`, where a parity
/// test keeps the reference files it generates.
pub fn parity_cache(name: &str) -> PathBuf {
    let base = std::env::var_os("CLISC_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/clisc")
        });
    base.join("parity").join(name)
}

/// The reference files of a parity test: a folder [`parity_cache`]`(name)`
/// that a Python script of the crate fills on first use.
#[derive(Debug, Clone, Copy)]
pub struct Reference<'a> {
    /// The crate's folder, `env!("CARGO_MANIFEST_DIR")`.
    pub crate_dir: &'a str,
    /// The folder under `parity/` (see [`parity_cache`]), e.g. `"clip-v1"`.
    pub name: &'a str,
    /// The generator, relative to `crate_dir`; it runs as
    /// `$CLISC_PYTHON SCRIPT FOLDER ARGS`.
    pub script: &'a str,
    /// Arguments after the folder.
    pub args: &'a [&'a str],
    /// Files in the folder once it is generated.
    pub files: &'a [&'a str],
    /// What the script needs (Python packages), for the message when
    /// `$CLISC_PYTHON` is unset.
    pub needs: &'a str,
}

impl Reference<'_> {
    /// The reference folder, generated first unless all of
    /// [`files`](Self::files) are there. One generation at a time in a
    /// test binary.
    #[track_caller]
    pub fn dir(&self) -> PathBuf {
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _lock = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = parity_cache(self.name);
        if self.files.iter().all(|f| dir.join(f).exists()) {
            return dir;
        }
        let python = python(&format!(
            "the parity test needs {} to generate {}",
            self.needs,
            dir.display()
        ));
        let script = PathBuf::from(self.crate_dir).join(self.script);
        let t = Instant::now();
        let status = Command::new(&python)
            .arg(&script)
            .arg(&dir)
            .args(self.args)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {python} (CLISC_PYTHON): {e}"));
        assert!(
            status.success(),
            "{python} {} {} failed: {status}",
            script.display(),
            dir.display()
        );
        eprintln!(
            "generated {} in {:.1}s",
            dir.display(),
            t.elapsed().as_secs_f64()
        );
        dir
    }
}

/// The largest absolute difference between two tensors of one shape (on
/// any devices, of any kinds), computed in `f64` on the CPU.
#[cfg(feature = "tch")]
pub fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    use tch::{Device, Kind};
    assert_eq!(a.size(), b.size(), "shapes differ");
    let cpu = |t: &tch::Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
    (cpu(a) - cpu(b)).abs().max().double_value(&[])
}
