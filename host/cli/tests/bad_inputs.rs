//! Truncated, corrupted and hostile NIfTI and DICOM files: each gives an
//! error naming the file and the problem, and none makes the reader ask
//! for a large block of memory (a counting allocator checks the largest
//! single allocation of the test's own thread). The fuzz targets in
//! `fuzz/` explore the same readers with generated inputs; these are the
//! cases worth keeping in the normal suite (see docs/reliability.md).

use clisc_dicom as dicom;
use clisc_nifti as nifti_io;
use clisc_sdk::Grid;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

/// Records, per thread, the largest single allocation.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// No single allocation of these small inputs may exceed this.
const SMALL: usize = 16 << 20;

/// Runs `f` and returns its result and the largest allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    let out = f();
    (out, LARGEST.with(|m| m.get()))
}

/// Asserts `result` is an error whose message names `path` and contains
/// every one of `words`, and that producing it allocated little.
fn assert_clear_error<T: std::fmt::Debug, E: std::fmt::Display>(
    (result, largest): (Result<T, E>, usize),
    path: &Path,
    words: &[&str],
) -> String {
    let message = result.expect_err("a bad file must be rejected").to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the error does not name {}: {message}",
        path.display()
    );
    for w in words {
        assert!(message.contains(w), "expected {w:?} in: {message}");
    }
    assert!(
        largest < SMALL,
        "rejecting {} allocated {largest} bytes at once: {message}",
        path.display()
    );
    message
}

// ---------------------------------------------------------------- NIfTI --

fn small_volume(dir: &Path, name: &str) -> PathBuf {
    let grid = Grid::new([6, 5, 4], [1.0, 1.0, 2.0]);
    let data: Vec<f32> = (0..grid.len()).map(|i| i as f32 * 0.5).collect();
    let path = dir.join(name);
    nifti_io::write_f32(&path, &grid, &data, None).expect("write a test volume");
    path
}

fn uncompressed(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = small_volume(dir, "good.nii");
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

fn set_i16(bytes: &mut [u8], offset: usize, value: i16) {
    bytes[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

/// Byte offset of `dim[i]` in a NIfTI-1 header.
fn dim_at(i: usize) -> usize {
    40 + 2 * i
}

#[test]
fn nifti_good_files_still_read() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["good.nii", "good.nii.gz"] {
        let path = small_volume(dir.path(), name);
        let (v, largest) = largest_allocation(|| nifti_io::read(&path));
        let v = v.unwrap();
        assert_eq!(v.grid.shape, [6, 5, 4]);
        assert_eq!(v.data[7], 3.5);
        assert!(largest < SMALL);
    }
}

#[test]
fn nifti_truncated_and_corrupted_files_name_the_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (_, good) = uncompressed(dir.path());

    let cut = dir.path().join("cut.nii");
    std::fs::write(&cut, &good[..good.len() - 10]).unwrap();
    let m = assert_clear_error(
        largest_allocation(|| nifti_io::read(&cut)),
        &cut,
        &["truncated", "480 bytes of voxel data"],
    );
    assert!(
        m.contains(&format!("only {} bytes", good.len() - 10)),
        "{m}"
    );

    let header_only = dir.path().join("header-only.nii");
    std::fs::write(&header_only, &good[..348]).unwrap();
    assert_clear_error(
        largest_allocation(|| nifti_io::read(&header_only)),
        &header_only,
        &["truncated"],
    );

    let short = dir.path().join("short.nii");
    std::fs::write(&short, &good[..100]).unwrap();
    assert_clear_error(largest_allocation(|| nifti_io::read(&short)), &short, &[]);

    let empty = dir.path().join("empty.nii");
    std::fs::write(&empty, b"").unwrap();
    assert_clear_error(largest_allocation(|| nifti_io::read(&empty)), &empty, &[]);

    let garbage = dir.path().join("garbage.nii");
    std::fs::write(&garbage, vec![0xA5u8; 2000]).unwrap();
    assert_clear_error(
        largest_allocation(|| nifti_io::read(&garbage)),
        &garbage,
        &[],
    );

    // A gzip stream cut in the middle, and one with its deflate data damaged.
    let gz = small_volume(dir.path(), "good.nii.gz");
    let gz_bytes = std::fs::read(&gz).unwrap();
    let cut_gz = dir.path().join("cut.nii.gz");
    std::fs::write(&cut_gz, &gz_bytes[..gz_bytes.len() / 2]).unwrap();
    assert_clear_error(largest_allocation(|| nifti_io::read(&cut_gz)), &cut_gz, &[]);
    let bad_gz = dir.path().join("corrupt.nii.gz");
    let mut damaged = gz_bytes.clone();
    for b in &mut damaged[12..gz_bytes.len() - 8] {
        *b ^= 0x5A;
    }
    std::fs::write(&bad_gz, &damaged).unwrap();
    assert_clear_error(largest_allocation(|| nifti_io::read(&bad_gz)), &bad_gz, &[]);
}

#[test]
fn nifti_absurd_header_sizes_are_rejected_before_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let (_, good) = uncompressed(dir.path());

    // 32767^3 voxels claimed by a 500-byte file.
    let mut huge = good.clone();
    for i in 1..=3 {
        set_i16(&mut huge, dim_at(i), i16::MAX);
    }
    let path = dir.path().join("huge.nii");
    std::fs::write(&path, &huge).unwrap();
    assert_clear_error(
        largest_allocation(|| nifti_io::read(&path)),
        &path,
        &[
            "claims 35181150961663 voxels",
            "dim = [32767, 32767, 32767]",
        ],
    );

    // Within the voxel limit but far beyond the file: the same claim gzipped
    // is rejected by the deflate expansion bound.
    let mut big = good.clone();
    set_i16(&mut big, dim_at(1), 1000);
    set_i16(&mut big, dim_at(2), 1000);
    set_i16(&mut big, dim_at(3), 200);
    for name in ["big.nii", "big.nii.gz"] {
        let path = dir.path().join(name);
        if name.ends_with(".gz") {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&big).unwrap();
            std::fs::write(&path, enc.finish().unwrap()).unwrap();
        } else {
            std::fs::write(&path, &big).unwrap();
        }
        assert_clear_error(
            largest_allocation(|| nifti_io::read(&path)),
            &path,
            &["claims 800000000 bytes of voxel data"],
        );
    }

    // Negative and zero dimensions.
    for (value, field) in [(-4i16, "dim[2] = -4"), (0, "dim[2] = 0")] {
        let mut bad = good.clone();
        set_i16(&mut bad, dim_at(2), value);
        let path = dir.path().join(format!("dim{value}.nii"));
        std::fs::write(&path, &bad).unwrap();
        assert_clear_error(
            largest_allocation(|| nifti_io::read(&path)),
            &path,
            &[field],
        );
        assert_clear_error(
            largest_allocation(|| {
                nifti_io::read_header(&path).and_then(|h| nifti_io::grid_from_header(&path, &h))
            }),
            &path,
            &[field],
        );
    }

    // dim[0] out of range, an unknown datatype, a non-finite vox_offset.
    let mut bad = good.clone();
    set_i16(&mut bad, dim_at(0), 0);
    let path = dir.path().join("ndim.nii");
    std::fs::write(&path, &bad).unwrap();
    assert_clear_error(
        largest_allocation(|| nifti_io::read(&path)),
        &path,
        &["dim[0] = 0 (expected 1..7)"],
    );
    let mut bad = good.clone();
    set_i16(&mut bad, 70, 1234);
    let path = dir.path().join("datatype.nii");
    std::fs::write(&path, &bad).unwrap();
    assert_clear_error(
        largest_allocation(|| nifti_io::read(&path)),
        &path,
        &["datatype code 1234"],
    );
    let mut bad = good.clone();
    bad[108..112].copy_from_slice(&f32::NAN.to_le_bytes());
    let path = dir.path().join("offset.nii");
    std::fs::write(&path, &bad).unwrap();
    assert_clear_error(
        largest_allocation(|| nifti_io::read(&path)),
        &path,
        &["vox_offset = NaN"],
    );

    // An .hdr/.img pair header in a .nii file would send the reader to
    // another file.
    let mut bad = good;
    bad[344..348].copy_from_slice(b"ni1\0");
    let path = dir.path().join("pair.nii");
    std::fs::write(&path, &bad).unwrap();
    assert_clear_error(
        largest_allocation(|| nifti_io::read(&path)),
        &path,
        &["\"ni1\"", ".hdr/.img"],
    );
}

// ---------------------------------------------------------------- DICOM --

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: PrimitiveValue) {
    obj.put(DataElement::new(tag, vr, value));
}

fn strs(values: &[&str]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|v| v.to_string()).collect())
}

/// One classic MR slice, `rows` x `columns` 16-bit pixels at height `z`;
/// `pixels` overrides the pixel data bytes.
fn mr_slice(
    path: &Path,
    series_uid: &str,
    z: f64,
    rows: u16,
    columns: u16,
    pixels: Option<Vec<u8>>,
) {
    let sop_uid = format!("2.25.{}", 1000 + (z * 10.0) as u64);
    let mut obj = InMemDicomObject::new_empty();
    let mr = "1.2.840.10008.5.1.4.1.1.4";
    put(&mut obj, tags::SOP_CLASS_UID, VR::UI, mr.into());
    put(
        &mut obj,
        tags::SOP_INSTANCE_UID,
        VR::UI,
        sop_uid.as_str().into(),
    );
    put(&mut obj, tags::MODALITY, VR::CS, "MR".into());
    put(
        &mut obj,
        tags::PATIENT_NAME,
        VR::PN,
        "Test^Bad^Inputs".into(),
    );
    put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, "2.25.77".into());
    put(
        &mut obj,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        series_uid.into(),
    );
    put(&mut obj, tags::SERIES_NUMBER, VR::IS, "3".into());
    put(
        &mut obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        "AX FLAIR".into(),
    );
    put(
        &mut obj,
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        strs(&["0", "0", &format!("{z}")]),
    );
    put(
        &mut obj,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        strs(&["1", "0", "0", "0", "1", "0"]),
    );
    put(&mut obj, tags::PIXEL_SPACING, VR::DS, strs(&["1", "1"]));
    put(&mut obj, tags::SAMPLES_PER_PIXEL, VR::US, 1u16.into());
    put(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2".into(),
    );
    put(&mut obj, tags::ROWS, VR::US, rows.into());
    put(&mut obj, tags::COLUMNS, VR::US, columns.into());
    put(&mut obj, tags::BITS_ALLOCATED, VR::US, 16u16.into());
    put(&mut obj, tags::BITS_STORED, VR::US, 16u16.into());
    put(&mut obj, tags::HIGH_BIT, VR::US, 15u16.into());
    put(&mut obj, tags::PIXEL_REPRESENTATION, VR::US, 0u16.into());
    let bytes = pixels.unwrap_or_else(|| {
        (0..rows as usize * columns as usize)
            .flat_map(|i| (i as u16).to_le_bytes())
            .collect()
    });
    put(
        &mut obj,
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U8(bytes.into()),
    );
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax("1.2.840.10008.1.2.1")
                .media_storage_sop_class_uid(mr)
                .media_storage_sop_instance_uid(sop_uid.as_str()),
        )
        .unwrap();
    file.write_to_file(path).unwrap();
}

/// A two-slice series in a fresh folder; returns the folder and the files.
fn two_slices(root: &Path, name: &str, rows: u16, columns: u16) -> (PathBuf, [PathBuf; 2]) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let files = [dir.join("a.dcm"), dir.join("b.dcm")];
    for (k, f) in files.iter().enumerate() {
        mr_slice(f, "2.25.500", k as f64 * 2.0, rows, columns, None);
    }
    (dir, files)
}

fn only_volume(dir: &Path) -> dicom::Series {
    let report = dicom::scan_dir(dir).unwrap();
    let mut volumes: Vec<_> = report.volumes().cloned().collect();
    assert_eq!(volumes.len(), 1, "{:?}", report.skipped);
    volumes.remove(0)
}

#[test]
fn dicom_good_series_still_loads() {
    let root = tempfile::tempdir().unwrap();
    let (dir, _) = two_slices(root.path(), "good", 3, 4);
    let (r, largest) = largest_allocation(|| dicom::convert::load_data(&only_volume(&dir)));
    let (grid, data) = r.unwrap();
    assert_eq!(grid.shape, [4, 3, 2]);
    // DICOM row 0 is the volume's top row (y = 2).
    assert_eq!(&data[8..12], &[0.0, 1.0, 2.0, 3.0]);
    assert!(largest < SMALL);
}

#[test]
fn dicom_truncated_and_corrupted_files_name_the_file_and_problem() {
    let root = tempfile::tempdir().unwrap();

    // Cut inside the pixel data: the scan skips the file, saying why, and
    // reading its pixels fails naming it.
    let (dir, files) = two_slices(root.path(), "cut", 16, 16);
    let bytes = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[1], &bytes[..bytes.len() - 100]).unwrap();
    let report = dicom::scan_dir(&dir).unwrap();
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].path, files[1]);
    assert!(
        report.skipped[0]
            .reason
            .contains("element (7FE0,0010) at byte"),
        "{}",
        report.skipped[0].reason
    );
    assert_clear_error(
        largest_allocation(|| dicom::pixels::read_frames(&files[1], &[0])),
        &files[1],
        &["claims 512 bytes, but only 412 are left in the file (truncated or corrupted)"],
    );

    // Pixel data shorter than Rows x Columns says.
    let dir = root.path().join("short-pixels");
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("a.dcm");
    let b = dir.join("b.dcm");
    mr_slice(&a, "2.25.501", 0.0, 8, 8, Some(vec![0u8; 16]));
    mr_slice(&b, "2.25.501", 2.0, 8, 8, Some(vec![0u8; 16]));
    let series = only_volume(&dir);
    assert_clear_error(
        largest_allocation(|| dicom::convert::load_data(&series)),
        &a,
        &["16 bytes of pixel data, 128 expected", "8 rows x 8 columns"],
    );

    // Files cut inside the header, garbage and an empty file are skipped,
    // each with a reason naming it.
    let (dir, files) = two_slices(root.path(), "header-cut", 4, 4);
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &bytes[..200]).unwrap();
    std::fs::write(dir.join("garbage.dcm"), vec![0x42u8; 700]).unwrap();
    std::fs::write(dir.join("empty.dcm"), b"").unwrap();
    let (report, largest) = largest_allocation(|| dicom::scan_dir(&dir).unwrap());
    assert!(largest < SMALL);
    let skipped: Vec<String> = report
        .skipped
        .iter()
        .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in ["a.dcm", "garbage.dcm", "empty.dcm"] {
        assert!(
            skipped.contains(&name.to_string()),
            "{name} not skipped: {skipped:?}"
        );
    }
    assert!(report.skipped.iter().all(|s| !s.reason.is_empty()));
}

#[test]
fn dicom_absurd_image_sizes_are_rejected_before_allocation() {
    let root = tempfile::tempdir().unwrap();

    // 65535 x 65535 pixels claimed over 32 bytes of pixel data, two slices:
    // 8.6e9 voxels; the volume must not be allocated before the pixels are seen.
    let dir = root.path().join("huge");
    std::fs::create_dir_all(&dir).unwrap();
    let files = [dir.join("a.dcm"), dir.join("b.dcm")];
    for (k, f) in files.iter().enumerate() {
        mr_slice(f, "2.25.502", k as f64, 65535, 65535, Some(vec![7u8; 32]));
    }
    let report = dicom::scan_dir(&dir).unwrap();
    let series = report.series.first().expect("a series");
    assert_clear_error(
        largest_allocation(|| dicom::convert::load_data(series)),
        &files[0],
        &["8589672450 voxels"],
    );

    // 20000 x 20000 (4e8 voxels per slice, within the voxel limit) over 32 bytes.
    let dir = root.path().join("big");
    std::fs::create_dir_all(&dir).unwrap();
    let files = [dir.join("a.dcm"), dir.join("b.dcm")];
    for (k, f) in files.iter().enumerate() {
        mr_slice(f, "2.25.503", k as f64, 20000, 20000, Some(vec![7u8; 32]));
    }
    let series = only_volume(&dir);
    assert_clear_error(
        largest_allocation(|| dicom::convert::load_data(&series)),
        &files[0],
        &["32 bytes of pixel data"],
    );

    // An element claiming 3.4 GB in a small file (the parser would allocate
    // the claim before reading): rejected by the header walk, naming the tag.
    let dir = root.path().join("claim");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a.dcm");
    mr_slice(&file, "2.25.505", 0.0, 2, 2, None);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(&[0xE1, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0]);
    bytes.extend_from_slice(&3_400_000_000u32.to_le_bytes());
    bytes.extend_from_slice(&[1, 2, 3]);
    std::fs::write(&file, &bytes).unwrap();
    let (report, largest) = largest_allocation(|| dicom::scan_dir(&dir).unwrap());
    assert!(
        largest < SMALL,
        "scanning allocated {largest} bytes at once"
    );
    assert_eq!(report.skipped.len(), 1, "{:?}", report.series);
    let reason = &report.skipped[0].reason;
    assert!(
        reason.contains("element (7FE1,0010)") && reason.contains("claims 3400000000 bytes"),
        "{reason}"
    );
    assert_clear_error(
        largest_allocation(|| dicom::pixels::read_frames(&file, &[0])),
        &file,
        &["claims 3400000000 bytes", "only 3 are left"],
    );

    // Rows = 0 is not an image.
    let dir = root.path().join("zero");
    std::fs::create_dir_all(&dir).unwrap();
    mr_slice(&dir.join("a.dcm"), "2.25.504", 0.0, 0, 4, Some(vec![]));
    let report = dicom::scan_dir(&dir).unwrap();
    assert!(report.series.is_empty());
    assert_eq!(report.skipped.len(), 1);
    assert!(
        report.skipped[0]
            .reason
            .contains("Rows = 0 (expected 1..65535)"),
        "{}",
        report.skipped[0].reason
    );
}

/// `path` (a native 2 x 2 slice from [`mr_slice`]) rewritten as RLE
/// Lossless with one fragment made of `segments`.
fn as_rle(path: &Path, segments: &[&[u8]]) {
    use dicom_core::value::{PixelFragmentSequence, Value};
    let mut fragment = vec![0u8; 64];
    fragment[..4].copy_from_slice(&(segments.len() as u32).to_le_bytes());
    let mut at = 64u32;
    for (i, s) in segments.iter().enumerate() {
        fragment[4 + 4 * i..8 + 4 * i].copy_from_slice(&at.to_le_bytes());
        at += s.len() as u32;
    }
    fragment.extend(segments.concat());
    let file = dicom_object::open_file(path).unwrap();
    let sop_class = file.meta().media_storage_sop_class_uid().to_string();
    let sop_instance = file.meta().media_storage_sop_instance_uid().to_string();
    let mut obj = file.into_inner();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::PixelSequence(PixelFragmentSequence::new(vec![], vec![fragment])),
    ));
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax("1.2.840.10008.1.2.5")
            .media_storage_sop_class_uid(sop_class.trim_end_matches('\0'))
            .media_storage_sop_instance_uid(sop_instance.trim_end_matches('\0')),
    )
    .unwrap()
    .write_to_file(path)
    .unwrap();
}

#[test]
fn dicom_rle_segments_too_short_for_the_frame_are_an_error_not_a_panic() {
    let root = tempfile::tempdir().unwrap();
    let (_, files) = two_slices(root.path(), "rle", 2, 2);
    // Pixels 0, 1, 2, 3 (16 bits): high bytes a run of four zeros, low
    // bytes a literal 0, 1, 2, 3.
    as_rle(&files[0], &[&[0xFD, 0], &[3, 0, 1, 2, 3]]);
    let frames = dicom::pixels::read_frames(&files[0], &[0]).unwrap();
    assert_eq!(frames.frames[0], vec![0.0, 1.0, 2.0, 3.0]);

    // Low bytes one short: the decoder of dicom-transfer-syntax-registry
    // would index past its buffer (panic); the file is rejected first.
    as_rle(&files[1], &[&[0xFD, 0], &[2, 0, 1, 2]]);
    assert_clear_error(
        largest_allocation(|| dicom::pixels::read_frames(&files[1], &[0])),
        &files[1],
        &["RLE Lossless: frame 1: RLE segment 2 decodes to 3 bytes, the frame needs 4"],
    );
    // A header declaring more segments than the image has.
    as_rle(&files[1], &[&[0xFD, 0], &[3, 0, 1, 2, 3], &[0xFD, 0]]);
    assert_clear_error(
        largest_allocation(|| dicom::pixels::read_frames(&files[1], &[0])),
        &files[1],
        &["declares 3 segment(s), the image needs 2"],
    );
}

#[test]
fn dicom_unknown_vr_codes_are_checked_with_the_parsers_reading() {
    // An element with the unknown VR code "\0P" claiming 1.9 GB: the parser
    // reads unknown codes as UN (reserved bytes, 32-bit length) and would
    // allocate the claimed length; the length check must read it the same
    // way (fuzz finding).
    let root = tempfile::tempdir().unwrap();
    let (dir, files) = two_slices(root.path(), "unknown-vr", 4, 4);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let pixel_data = bytes
        .windows(4)
        .position(|w| w == [0xE0, 0x7F, 0x10, 0x00])
        .unwrap();
    let mut element = vec![0x64, 0x10, 0x00, 0x10, 0x00, b'P', 0x00, 0x00];
    element.extend(1_936_020_480u32.to_le_bytes());
    element.extend(b"Test^Ph");
    bytes.splice(pixel_data..pixel_data, element);
    std::fs::write(&files[0], &bytes).unwrap();
    let (report, largest) = largest_allocation(|| dicom::scan_dir(&dir).unwrap());
    assert!(largest < SMALL, "largest allocation {largest} bytes");
    let skipped = report
        .skipped
        .iter()
        .find(|s| s.path == files[0])
        .expect("the file is skipped");
    assert!(
        skipped.reason.contains("claims 1936020480 bytes"),
        "{}",
        skipped.reason
    );
}

#[test]
fn dicom_binary_values_of_odd_lengths_are_rejected() {
    // PixelRepresentation written with VR FD and length 2: dicom-parser
    // reads whole 8-byte values (none), leaves the 2 bytes, and reads the
    // next header out of step: the pixel data's tag became a 4 GB value
    // (fuzz finding). The file is rejected first.
    let root = tempfile::tempdir().unwrap();
    let (_, files) = two_slices(root.path(), "odd-length", 4, 4);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == [0x28, 0x00, 0x03, 0x01, b'U', b'S'])
        .unwrap();
    bytes[at + 4..at + 6].copy_from_slice(b"FD");
    std::fs::write(&files[0], &bytes).unwrap();
    assert_clear_error(
        largest_allocation(|| dicom::pixels::read_frames(&files[0], &[0])),
        &files[0],
        &[
            "element (0028,0103)",
            "has VR FD and length 2, not a multiple of its 8-byte values",
        ],
    );
}

#[test]
fn dicom_a_panicking_pixel_codec_is_an_error_naming_the_file() {
    // A fuzzed JPEG 2000 study (the `dicom` fuzz target's input format: files
    // joined by a separator) on which dicom-transfer-syntax-registry's JPEG
    // 2000 adapter indexes past a buffer and panics.
    let input = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/seeds/dicom/regression-crash-jpeg2k-b0724d4a"
    ))
    .unwrap();
    let separator = b"--clisc-fuzz-next-file--";
    let root = tempfile::tempdir().unwrap();
    let mut rest = &input[..];
    for i in 0.. {
        let at = rest.windows(separator.len()).position(|w| w == separator);
        let part = &rest[..at.unwrap_or(rest.len())];
        std::fs::write(root.path().join(format!("{i}.dcm")), part).unwrap();
        match at {
            Some(at) => rest = &rest[at + separator.len()..],
            None => break,
        }
    }
    let report = dicom::scan_dir(root.path()).unwrap();
    let errors: Vec<String> = report
        .volumes()
        .filter_map(|s| dicom::convert::load_data(s).err())
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("decoder failed on this file") && e.contains(".dcm")),
        "{errors:?}"
    );
}
