//! Bytes -> the NIfTI reader. Inputs starting with the gzip magic are
//! written as `.nii.gz`, others as `.nii`; the reader must return a
//! volume or an error, never panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temporary folder"))
}

fuzz_target!(|data: &[u8]| {
    let name = if data.starts_with(&[0x1f, 0x8b]) {
        "input.nii.gz"
    } else {
        "input.nii"
    };
    let path: PathBuf = scratch().path().join(name);
    std::fs::write(&path, data).expect("write the input");
    if let Ok(v) = clisc_nifti::read(&path) {
        assert_eq!(v.data.len(), v.grid.len());
    }
    let _ = clisc_nifti::read_header(&path);
});
