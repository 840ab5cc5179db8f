//! Bytes -> DICOM scanning, series assembly and voxel loading.
//!
//! The input is split into up to four files at each occurrence of
//! [`SEPARATOR`] (seeds are real files joined with it), written into a
//! fresh folder, scanned with `dicom::scan_dir`, and every series that
//! forms a volume is loaded with `dicom::load_data`. Any outcome but a
//! panic, a hang or an unbounded allocation is fine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const SEPARATOR: &[u8] = b"--clisc-fuzz-next-file--";

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temporary folder"))
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() < 3 {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// libfuzzer-sys's panic hook aborts at any panic, even one the code under
/// test catches (clisc contains panics of the pixel codecs in
/// `pixels::read_frames`). This hook only prints the panic, so caught ones
/// unwind; a panic nobody catches still reaches libfuzzer-sys's wrapper,
/// which aborts and reports the input.
fn quiet_panics() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}"))));
}

fuzz_target!(|data: &[u8]| {
    quiet_panics();
    let dir = scratch().path().join("study");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the study folder");
    for (i, part) in split(data).into_iter().enumerate() {
        std::fs::write(dir.join(format!("{i}.dcm")), part).expect("write a file");
    }
    let Ok(report) = clisc_dicom::scan_dir(&dir) else {
        return;
    };
    for series in report.volumes() {
        if let Ok((grid, voxels)) = clisc_dicom::convert::load_data(series) {
            assert_eq!(voxels.len(), grid.len());
        }
    }
});
