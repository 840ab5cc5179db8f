//! Shared helpers of the DICOM tests: the generated test series (written by
//! `tests/reference/dicom/make_series.py` with pydicom and DCMTK) and the
//! external tools (dcm2niix, Python).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Python interpreter of the project's venv (`source scripts/env.sh`).
pub fn python() -> String {
    clisc_test_harness::python(
        "the DICOM tests write their test series with pydicom and read DICOM SEG back with highdicom",
    )
}

/// Runs an external tool, panicking with its output when it fails.
pub fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot start {:?}: {e} (install the test tools with `scripts/ci-deps.sh`)",
            cmd.get_program()
        )
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

/// One generated case (see `make_series.py`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub compare: bool,
    pub warnings: Vec<String>,
    pub lossy: bool,
    pub syntax: String,
    pub series: Vec<CaseSeries>,
}

/// One series written for a case.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CaseSeries {
    pub series_uid: String,
    pub number: i64,
    pub description: String,
    pub slices: usize,
    pub positions: Vec<[f64; 3]>,
}

#[derive(serde::Deserialize)]
struct Manifest {
    cases: Vec<Case>,
}

struct Generated {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cases: Vec<Case>,
}

static GENERATED: OnceLock<Generated> = OnceLock::new();

fn generated() -> &'static Generated {
    GENERATED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary folder");
        let root = dir.path().join("series");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/dicom/make_series.py");
        run(
            Command::new(python()).arg(&script).arg(&root),
            "writing the DICOM test series (make_series.py)",
        );
        let text = std::fs::read_to_string(root.join("cases.json")).expect("cases.json");
        let manifest: Manifest = serde_json::from_str(&text).expect("cases.json parses");
        Generated {
            _dir: dir,
            root,
            cases: manifest.cases,
        }
    })
}

/// All generated cases.
pub fn cases() -> &'static [Case] {
    &generated().cases
}

/// The case called `name`.
pub fn case(name: &str) -> &'static Case {
    cases()
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no generated case `{name}`"))
}

/// A scratch folder inside the generated tree.
pub fn scratch(name: &str) -> PathBuf {
    let p = generated().root.join("..").join(name);
    std::fs::create_dir_all(&p).expect("scratch folder");
    p
}

/// Runs Debian's dcm2niix on `dir`, writing `<SeriesInstanceUID>_<echo>.nii`
/// files into `out`; returns its log.
pub fn dcm2niix(dir: &Path, out: &Path) -> String {
    std::fs::create_dir_all(out).expect("output folder");
    run(
        Command::new("dcm2niix")
            .args(["-f", "%j_%e", "-z", "n", "-b", "n", "-o"])
            .arg(out)
            .arg(dir),
        &format!("dcm2niix on {}", dir.display()),
    )
}
