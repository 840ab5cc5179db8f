//! NIfTI-1 reading and writing (`.nii`, `.nii.gz`) into the SDK's
//! [`Volume`] / [`LabelVolume`] types, keeping the geometry exact.
//!
//! Reading accepts the common data types (u8, i8, u16, i16, u32, i32, u64,
//! i64, f32, f64), applies `scl_slope`/`scl_inter` (ignored when the slope
//! is 0 or not finite, as the NIfTI standard and nibabel do) and stores the
//! voxels as x-fastest `f32`. The voxel-to-world affine of the [`Grid`] is
//! chosen as the standard says: the sform when `sform_code > 0`, else the
//! qform built from the quaternion when `qform_code > 0`, else plain
//! scaling by `pixdim` (NIfTI "method 1"; nibabel instead centres the
//! volume in that last, rare case). Spacing is `|pixdim[1..4]|`.
//!
//! The header of the input is kept in a [`NiftiInfo`] so that outputs can be
//! written with the same codes, units, intent and description. Writers store
//! the grid's affine both as the sform and as the qform (nearest rigid +
//! scaling approximation for sheared affines), so outputs overlay the
//! inputs exactly in other tools (ITK-SNAP, FSLeyes, nibabel, 3D Slicer).
#![warn(unreachable_pub)]

use clisc_sdk::{Grid, LabelVolume, Volume};
use nifti::{Endianness, NiftiHeader, NiftiType};
use std::path::{Path, PathBuf};

/// A NIfTI read or write failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum NiftiError {
    /// The file could not be opened, decompressed or parsed.
    #[error("cannot read NIfTI file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file is readable but its content is not supported.
    #[error("unsupported NIfTI file {path}: {message}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is unsupported and what would be.
        message: String,
    },
    /// Writing failed.
    #[error("cannot write NIfTI file {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl From<NiftiError> for clisc_sdk::PluginError {
    fn from(e: NiftiError) -> Self {
        clisc_sdk::PluginError::io(e.to_string())
    }
}

/// Header facts of a file that was read, kept to write outputs that match it.
#[derive(Debug, Clone)]
pub struct NiftiInfo {
    /// The complete header as read (reference for writers).
    pub header: NiftiHeader,
    /// `sform_code` (0 = no sform).
    pub sform_code: i16,
    /// `qform_code` (0 = no qform).
    pub qform_code: i16,
    /// NIfTI datatype code on disk (2 = u8, 4 = i16, 16 = f32, ...).
    pub datatype: i16,
    /// `intent_code`.
    pub intent_code: i16,
    /// `descrip`, trimmed at the first NUL.
    pub description: String,
    /// Scaling applied when reading (`slope`, `inter`); `(1, 0)` when none.
    pub scaling: (f32, f32),
}

/// A volume read from disk: geometry, voxels and header facts.
#[derive(Debug, Clone)]
pub struct NiftiVolume {
    /// Geometry (shape, spacing, affine).
    pub grid: Grid,
    /// Scaled voxel values, x-fastest.
    pub data: Vec<f32>,
    /// Header facts of the file.
    pub info: NiftiInfo,
}

impl NiftiVolume {
    /// Wraps the voxels as a single-channel [`Volume`] named `channel`.
    pub(crate) fn into_volume(self, channel: &str) -> Volume {
        Volume::single(self.grid, channel, self.data)
    }
    /// Converts to labels (values rounded, clamped to 0..=255).
    pub(crate) fn into_labels(self) -> LabelVolume {
        LabelVolume {
            grid: self.grid,
            data: self
                .data
                .iter()
                .map(|&v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
        }
    }
}

fn read_err(path: &Path, message: impl Into<String>) -> NiftiError {
    NiftiError::Read {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn unsupported(path: &Path, message: impl Into<String>) -> NiftiError {
    NiftiError::Unsupported {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads only the header of `path` (fast: the voxel data is not decoded).
pub fn read_header(path: &Path) -> Result<NiftiHeader, NiftiError> {
    NiftiHeader::from_file(path).map_err(|e| read_err(path, e.to_string()))
}

/// The geometry a header describes (3D part only).
pub fn grid_from_header(path: &Path, h: &NiftiHeader) -> Result<Grid, NiftiError> {
    // `dim` holds signed 16-bit values; the reader stores them unsigned.
    let signed = h.dim.map(|d| d as i16);
    if !(1..=7).contains(&signed[0]) {
        return Err(unsupported(
            path,
            format!("dim[0] = {} (expected 1..7)", signed[0]),
        ));
    }
    let ndim = signed[0] as usize;
    if let Some(d) = (1..=ndim).find(|&d| signed[d] < 1) {
        return Err(read_err(
            path,
            format!(
                "dim[{d}] = {} (every dimension must be at least 1; dim = {:?})",
                signed[d],
                &signed[1..=ndim]
            ),
        ));
    }
    let mut shape = [1u32; 3];
    for (d, s) in shape.iter_mut().enumerate().take(3.min(ndim)) {
        *s = h.dim[d + 1] as u32;
    }
    let extra: usize = (4..=ndim).map(|d| h.dim[d] as usize).product();
    if extra > 1 {
        return Err(unsupported(
            path,
            format!(
                "{}D image with {} volumes; only single 3D volumes are supported (dim = {:?})",
                ndim,
                extra,
                &h.dim[1..=ndim]
            ),
        ));
    }
    let spacing = [1, 2, 3].map(|d| {
        let p = h.pixdim[d].abs() as f64;
        if p > 0.0 && p.is_finite() && d <= ndim.max(3) {
            p
        } else {
            1.0
        }
    });
    let affine = if h.sform_code > 0 {
        let mut a = [[0.0; 4]; 4];
        for (r, row) in [h.srow_x, h.srow_y, h.srow_z].iter().enumerate() {
            for c in 0..4 {
                a[r][c] = row[c] as f64;
            }
        }
        a[3][3] = 1.0;
        a
    } else if h.qform_code > 0 {
        qform_to_affine(h, spacing)
    } else {
        Grid::new(shape, spacing).affine
    };
    Ok(Grid {
        shape,
        spacing,
        affine,
    })
}

/// The qform affine of a header (NIfTI-1 quaternion formula).
fn qform_to_affine(h: &NiftiHeader, spacing: [f64; 3]) -> [[f64; 4]; 4] {
    let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    let a2 = 1.0 - (b * b + c * c + d * d);
    let a = if a2 < 1e-7 {
        // Nearly 180 degrees: renormalise (b, c, d) and take a = 0.
        0.0
    } else {
        a2.sqrt()
    };
    let (b, c, d) = if a2 < 1e-7 {
        let n = (b * b + c * c + d * d).sqrt();
        (b / n, c / n, d / n)
    } else {
        (b, c, d)
    };
    let r = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let scale = [spacing[0], spacing[1], spacing[2] * qfac];
    let mut m = [[0.0; 4]; 4];
    for i in 0..3 {
        for j in 0..3 {
            m[i][j] = r[i][j] * scale[j];
        }
    }
    m[0][3] = h.quatern_x as f64;
    m[1][3] = h.quatern_y as f64;
    m[2][3] = h.quatern_z as f64;
    m[3][3] = 1.0;
    m
}

fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

fn inv3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let d = det3(m);
    if d.abs() < 1e-12 {
        return None;
    }
    let mut r = [[0.0; 3]; 3];
    for (i, row) in r.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            let (i1, i2) = ((j + 1) % 3, (j + 2) % 3);
            let (j1, j2) = ((i + 1) % 3, (i + 2) % 3);
            *cell = (m[i1][j1] * m[i2][j2] - m[i1][j2] * m[i2][j1]) / d;
        }
    }
    Some(r)
}

/// Quaternion parameters `(b, c, d, qfac, pixdim)` of an affine's 3x3 part:
/// column norms give the voxel sizes, the closest rotation (polar
/// decomposition) gives the quaternion, a negative determinant gives qfac -1.
fn affine_to_quaternion(a: &[[f64; 4]; 4]) -> ([f64; 3], f64, [f64; 3]) {
    let mut r = [[0.0; 3]; 3];
    let mut zooms = [0.0; 3];
    for j in 0..3 {
        let n = (0..3).map(|i| a[i][j] * a[i][j]).sum::<f64>().sqrt();
        zooms[j] = if n > 0.0 { n } else { 1.0 };
        for i in 0..3 {
            r[i][j] = if n > 0.0 {
                a[i][j] / n
            } else if i == j {
                1.0
            } else {
                0.0
            };
        }
    }
    let mut qfac = 1.0;
    if det3(&r) < 0.0 {
        qfac = -1.0;
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
    }
    // Polar decomposition by Newton iteration: R <- (R + R^-T) / 2.
    for _ in 0..50 {
        let Some(inv) = inv3(&r) else { break };
        let mut next = [[0.0; 3]; 3];
        let mut delta = 0.0f64;
        for i in 0..3 {
            for j in 0..3 {
                next[i][j] = 0.5 * (r[i][j] + inv[j][i]);
                delta = delta.max((next[i][j] - r[i][j]).abs());
            }
        }
        r = next;
        if delta < 1e-15 {
            break;
        }
    }
    // Rotation matrix to quaternion (NIfTI reference algorithm).
    let (r11, r12, r13) = (r[0][0], r[0][1], r[0][2]);
    let (r21, r22, r23) = (r[1][0], r[1][1], r[1][2]);
    let (r31, r32, r33) = (r[2][0], r[2][1], r[2][2]);
    let trace = r11 + r22 + r33 + 1.0;
    let (mut qa, mut qb, mut qc, mut qd);
    if trace > 0.5 {
        qa = 0.5 * trace.sqrt();
        qb = 0.25 * (r32 - r23) / qa;
        qc = 0.25 * (r13 - r31) / qa;
        qd = 0.25 * (r21 - r12) / qa;
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            qb = 0.5 * xd.sqrt();
            qc = 0.25 * (r12 + r21) / qb;
            qd = 0.25 * (r13 + r31) / qb;
            qa = 0.25 * (r32 - r23) / qb;
        } else if yd > 1.0 {
            qc = 0.5 * yd.sqrt();
            qb = 0.25 * (r12 + r21) / qc;
            qd = 0.25 * (r23 + r32) / qc;
            qa = 0.25 * (r13 - r31) / qc;
        } else {
            qd = 0.5 * zd.sqrt();
            qb = 0.25 * (r13 + r31) / qd;
            qc = 0.25 * (r23 + r32) / qd;
            qa = 0.25 * (r21 - r12) / qd;
        }
        if qa < 0.0 {
            qa = -qa;
            qb = -qb;
            qc = -qc;
            qd = -qd;
        }
    }
    let _ = qa;
    ([qb, qc, qd], qfac, zooms)
}

/// Most voxels a file may claim (a 1024^3 volume, 4 GiB as `f32`); larger
/// headers are rejected before anything is allocated.
pub const MAX_VOXELS: u64 = 1 << 30;

/// Largest expansion factor of a deflate stream (about 1032:1, plus slack),
/// used to reject `.nii.gz` headers claiming more data than the file can hold.
const MAX_GZIP_RATIO: u64 = 1100;

/// Checks, before any voxel is read or allocated, that the header of `path`
/// describes a single-file image whose voxel data can fit in the file:
/// positive dimensions, a supported data type, at most [`MAX_VOXELS`]
/// voxels, and `vox_offset` plus the voxel bytes within the file's length
/// (for `.nii.gz`, within what a deflate stream of that length can expand
/// to). Truncated, corrupted and hostile headers thus fail here with a
/// message naming the field, instead of asking for gigabytes of memory.
pub(crate) fn check_claimed_size(path: &Path, h: &NiftiHeader) -> Result<(), NiftiError> {
    if h.magic != *b"n+1\0" {
        return Err(unsupported(
            path,
            format!(
                "magic {:?} is not \"n+1\" (single-file NIfTI-1); header/image pairs \
                 (.hdr/.img) are not supported",
                String::from_utf8_lossy(&h.magic).trim_end_matches('\0')
            ),
        ));
    }
    // `dim` holds signed 16-bit values; the reader stores them unsigned.
    let ndim = h.dim[0] as i16;
    if !(1..=7).contains(&ndim) {
        return Err(unsupported(
            path,
            format!("dim[0] = {ndim} (expected 1..7)"),
        ));
    }
    let dims: Vec<i16> = h.dim[1..=ndim as usize].iter().map(|&d| d as i16).collect();
    let dims = dims.as_slice();
    if let Some(d) = dims.iter().position(|&d| d < 1) {
        return Err(read_err(
            path,
            format!(
                "dim[{}] = {} (every dimension must be at least 1; dim = {dims:?})",
                d + 1,
                dims[d]
            ),
        ));
    }
    let voxels: u64 = dims.iter().map(|&d| d as u64).product();
    if voxels > MAX_VOXELS {
        return Err(unsupported(
            path,
            format!("the header claims {voxels} voxels (dim = {dims:?}), more than the {MAX_VOXELS} this reader accepts"),
        ));
    }
    let size = h
        .data_type()
        .map(|t| t.size_of())
        .map_err(|_| unsupported(path, format!("datatype code {}", h.datatype)))?;
    // The reader takes `bitpix / 8` bytes per voxel from the file.
    let bytes_per_voxel = size.max((h.bitpix.max(0) / 8) as usize) as u64;
    let needed = voxels * bytes_per_voxel;
    if !(h.vox_offset.is_finite() && h.vox_offset >= 0.0 && h.vox_offset < 1e12) {
        return Err(read_err(
            path,
            format!(
                "vox_offset = {} (expected a byte offset >= 352)",
                h.vox_offset
            ),
        ));
    }
    let offset = (h.vox_offset as u64).max(352);
    let file_len = std::fs::metadata(path)
        .map_err(|e| read_err(path, e.to_string()))?
        .len();
    let gz = path.extension().is_some_and(|e| e == "gz");
    let holds = if gz {
        file_len.saturating_mul(MAX_GZIP_RATIO)
    } else {
        file_len
    };
    if offset + needed > holds {
        let what = if gz {
            format!("a gzip file of {file_len} bytes cannot hold that")
        } else {
            format!("the file has only {file_len} bytes (truncated?)")
        };
        return Err(read_err(
            path,
            format!(
                "the header claims {needed} bytes of voxel data from byte {offset} \
                 (dim = {dims:?}, datatype {}, bitpix {}), but {what}",
                h.datatype, h.bitpix
            ),
        ));
    }
    Ok(())
}

/// Reads a `.nii` / `.nii.gz` file into a grid, `f32` voxels and header facts.
///
/// The header is checked with `check_claimed_size` before the voxels are
/// read.
pub fn read(path: &Path) -> Result<NiftiVolume, NiftiError> {
    let header = read_header(path)?;
    check_claimed_size(path, &header)?;
    let grid = grid_from_header(path, &header)?;
    let dtype = header
        .data_type()
        .map_err(|_| unsupported(path, format!("datatype code {}", header.datatype)))?;
    let n = grid.len();
    let (slope, inter) = (header.scl_slope, header.scl_inter);
    let scaling = if slope != 0.0 && slope.is_finite() && inter.is_finite() {
        (slope, inter)
    } else {
        (1.0, 0.0)
    };
    let data = read_voxels(path, &header, n, dtype, scaling)?;
    let description = {
        let end = header
            .descrip
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(header.descrip.len());
        String::from_utf8_lossy(&header.descrip[..end])
            .trim()
            .to_string()
    };
    let info = NiftiInfo {
        sform_code: header.sform_code,
        qform_code: header.qform_code,
        datatype: header.datatype,
        intent_code: header.intent_code,
        description,
        scaling,
        header,
    };
    Ok(NiftiVolume { grid, data, info })
}

/// Bytes of voxel data streamed through one buffer of this size: small
/// enough to stay in the CPU cache, so each voxel is copied from the page
/// cache (or the inflater) into its final `f32` slot in one pass.
const READ_CHUNK: usize = 256 << 10;

/// The `n` voxels of `path` (after `vox_offset`) as `f32`, with the
/// header's scaling applied, read straight from the file or its gzip
/// stream and decoded chunk by chunk into the output.
fn read_voxels(
    path: &Path,
    h: &NiftiHeader,
    n: usize,
    dtype: NiftiType,
    scaling: (f32, f32),
) -> Result<Vec<f32>, NiftiError> {
    use std::io::Read;
    let size = supported_size(path, dtype)?;
    let offset = (h.vox_offset as u64).max(352);
    let file = std::fs::File::open(path).map_err(|e| read_err(path, e.to_string()))?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let (mut reader, capacity): (Box<dyn Read>, usize) = if gz {
        // The claimed size is not yet proven by the compressed stream:
        // grow with the data instead of trusting it.
        let stream = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
        (Box::new(stream), n.min(4 << 20))
    } else {
        (Box::new(file), n)
    };
    let io = |e: std::io::Error| read_err(path, format!("reading the voxel data: {e}"));
    let skipped =
        std::io::copy(&mut (&mut reader).take(offset), &mut std::io::sink()).map_err(io)?;
    if skipped < offset {
        return Err(read_err(
            path,
            format!("the file ends at byte {skipped}, before the voxel data at byte {offset} (truncated)"),
        ));
    }
    let big = h.endianness == Endianness::Big;
    let want = n * size;
    let mut out = Vec::with_capacity(capacity);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut done = 0;
    while done < want {
        let len = (want - done).min(READ_CHUNK);
        let got = fill(&mut reader, &mut chunk[..len]).map_err(io)?;
        done += got;
        if got < len {
            return Err(read_err(
                path,
                format!("{done} bytes of voxel data, {want} expected (truncated)"),
            ));
        }
        decode_into(&chunk[..len], dtype, big, scaling, &mut out);
    }
    Ok(out)
}

/// Reads into `buf` until it is full or the stream ends; the byte count.
fn fill(reader: &mut dyn std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Bytes per voxel of the data types this reader decodes.
fn supported_size(path: &Path, dtype: NiftiType) -> Result<usize, NiftiError> {
    use NiftiType::*;
    match dtype {
        Uint8 | Int8 | Int16 | Uint16 | Int32 | Uint32 | Int64 | Uint64 | Float32 | Float64 => {
            Ok(dtype.size_of())
        }
        other => Err(unsupported(
            path,
            format!(
                "datatype {other:?} (supported: u8, i8, u16, i16, u32, i32, u64, i64, f32, f64)"
            ),
        )),
    }
}

/// Appends the voxel values of `bytes` (whole voxels of `dtype`) to `out`
/// as `f32`, with the header's scaling applied (computed in `f64`, as
/// NIfTI readers do).
fn decode_into(
    bytes: &[u8],
    dtype: NiftiType,
    big: bool,
    (slope, inter): (f32, f32),
    out: &mut Vec<f32>,
) {
    let scaled = (slope, inter) != (1.0, 0.0);
    let (s, i) = (slope as f64, inter as f64);
    let finish = |v: f64| if scaled { (v * s + i) as f32 } else { v as f32 };
    macro_rules! decode {
        ($t:ty, $w:expr) => {{
            let value = |c: &[u8]| -> $t {
                let arr: [u8; $w] = c.try_into().expect("chunk size");
                if big {
                    <$t>::from_be_bytes(arr)
                } else {
                    <$t>::from_le_bytes(arr)
                }
            };
            out.extend(bytes.chunks_exact($w).map(|c| finish(value(c) as f64)))
        }};
    }
    match dtype {
        // The common case (float32 in the machine's order, no scaling) is
        // a plain copy the compiler turns into a block move.
        NiftiType::Float32 if !scaled && !big => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("chunk size"))),
        ),
        NiftiType::Uint8 => out.extend(bytes.iter().map(|&b| finish(b as f64))),
        NiftiType::Int8 => out.extend(bytes.iter().map(|&b| finish(b as i8 as f64))),
        NiftiType::Int16 => decode!(i16, 2),
        NiftiType::Uint16 => decode!(u16, 2),
        NiftiType::Int32 => decode!(i32, 4),
        NiftiType::Uint32 => decode!(u32, 4),
        NiftiType::Int64 => decode!(i64, 8),
        NiftiType::Uint64 => decode!(u64, 8),
        NiftiType::Float32 => decode!(f32, 4),
        NiftiType::Float64 => decode!(f64, 8),
        other => unreachable!("datatype {other:?} was rejected by supported_size"),
    }
}

/// Whether `path` names a NIfTI file: `.nii` or `.nii.gz`, in any case.
pub fn is_nifti_path(path: &Path) -> bool {
    let name = path.to_string_lossy().to_ascii_lowercase();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

/// Reads a file as a single-channel [`Volume`] named `channel`.
pub fn read_volume(path: &Path, channel: &str) -> Result<(Volume, NiftiInfo), NiftiError> {
    let v = read(path)?;
    let info = v.info.clone();
    Ok((v.into_volume(channel), info))
}

/// Reads a label file (e.g. a BraTS `seg`) as a [`LabelVolume`]; values
/// must be integers in 0..=255.
pub fn read_labels(path: &Path) -> Result<(LabelVolume, NiftiInfo), NiftiError> {
    let v = read(path)?;
    if let Some(bad) = v
        .data
        .iter()
        .find(|&&x| !(0.0..=255.0).contains(&x) || x.fract() != 0.0)
    {
        return Err(unsupported(
            path,
            format!("label value {bad} (labels must be integers 0..=255)"),
        ));
    }
    let info = v.info.clone();
    Ok((v.into_labels(), info))
}

/// Builds the header for writing `grid` with `datatype`.
fn header_for(grid: &Grid, datatype: NiftiType, reference: Option<&NiftiInfo>) -> NiftiHeader {
    let mut h = match reference {
        Some(r) => r.header.clone(),
        None => NiftiHeader {
            xyzt_units: 2 | 8,
            ..NiftiHeader::default()
        },
    };
    // Geometry: always from the grid.
    h.dim = [
        3,
        grid.shape[0] as u16,
        grid.shape[1] as u16,
        grid.shape[2] as u16,
        1,
        1,
        1,
        1,
    ];
    h.datatype = datatype as i16;
    h.bitpix = (datatype.size_of() * 8) as i16;
    h.scl_slope = 1.0;
    h.scl_inter = 0.0;
    h.cal_min = 0.0;
    h.cal_max = 0.0;
    h.glmin = 0;
    h.glmax = 0;
    h.endianness = Endianness::Little;
    let (codes_s, codes_q) = match reference {
        Some(r) if r.sform_code > 0 || r.qform_code > 0 => (r.sform_code, r.qform_code),
        _ => (1, 1),
    };
    let a = &grid.affine;
    for (r, row) in [&mut h.srow_x, &mut h.srow_y, &mut h.srow_z]
        .into_iter()
        .enumerate()
    {
        for c in 0..4 {
            row[c] = a[r][c] as f32;
        }
    }
    let ([qb, qc, qd], qfac, zooms) = affine_to_quaternion(a);
    h.quatern_b = qb as f32;
    h.quatern_c = qc as f32;
    h.quatern_d = qd as f32;
    h.quatern_x = a[0][3] as f32;
    h.quatern_y = a[1][3] as f32;
    h.quatern_z = a[2][3] as f32;
    h.pixdim = [
        qfac as f32,
        zooms[0] as f32,
        zooms[1] as f32,
        zooms[2] as f32,
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    if reference.is_some_and(|r| r.header.pixdim[4] > 0.0) {
        h.pixdim[4] = reference.map(|r| r.header.pixdim[4]).unwrap_or(0.0);
    }
    h.sform_code = codes_s;
    h.qform_code = codes_q;
    if h.xyzt_units & 7 == 0 {
        h.xyzt_units |= 2; // millimetres
    }
    h
}

/// Voxels to write, in one of the two output types, borrowed from the
/// caller (no copy before encoding).
enum Payload<'a> {
    U8(&'a [u8]),
    F32(&'a [f32]),
}

impl Payload<'_> {
    fn len(&self) -> usize {
        match self {
            Payload::U8(v) => v.len(),
            Payload::F32(v) => v.len(),
        }
    }

    fn datatype(&self) -> NiftiType {
        match self {
            Payload::U8(_) => NiftiType::Uint8,
            Payload::F32(_) => NiftiType::Float32,
        }
    }

    /// Streams the voxels little-endian through one cache-sized buffer.
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        match self {
            Payload::U8(v) => out.write_all(v),
            Payload::F32(v) => {
                let mut chunk = Vec::with_capacity(READ_CHUNK);
                for block in v.chunks(READ_CHUNK / 4) {
                    chunk.clear();
                    chunk.extend(block.iter().flat_map(|x| x.to_le_bytes()));
                    out.write_all(&chunk)?;
                }
                Ok(())
            }
        }
    }
}

fn write_payload(
    path: &Path,
    grid: &Grid,
    data: Payload,
    reference: Option<&NiftiInfo>,
) -> Result<(), NiftiError> {
    use std::io::Write;
    let werr = |m: String| NiftiError::Write {
        path: path.to_path_buf(),
        message: m,
    };
    grid.check_len(data.len(), &path.display().to_string())
        .map_err(|e| werr(e.message.to_string()))?;
    let name = path.to_string_lossy();
    let gz = name.ends_with(".nii.gz");
    if !(gz || name.ends_with(".nii")) {
        return Err(werr("the file name must end in .nii or .nii.gz".into()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| werr(format!("creating {}: {e}", dir.display())))?;
    }
    let header = encode_header(&header_for(grid, data.datatype(), reference));
    let file = std::fs::File::create(path).map_err(|e| werr(e.to_string()))?;
    let io = |e: std::io::Error| werr(e.to_string());
    let body = |out: &mut dyn Write| {
        out.write_all(&header)?;
        data.write_to(out)
    };
    let mut f = std::io::BufWriter::with_capacity(READ_CHUNK, file);
    if gz {
        // Level 1, as nibabel, SimpleITK and the nifti crate write.
        let mut z = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        body(&mut z).map_err(io)?;
        f = z.finish().map_err(io)?;
    } else {
        body(&mut f).map_err(io)?;
    }
    f.flush().map_err(io)
}

/// The 348-byte NIfTI-1 header of `h` (little-endian, single file: magic
/// `n+1`, voxels at byte 352) followed by the 4-byte empty extension flag.
fn encode_header(h: &NiftiHeader) -> Vec<u8> {
    let mut b = Vec::with_capacity(352);
    let text = |b: &mut Vec<u8>, field: &[u8], len: usize| {
        let mut v = field[..field.len().min(len)].to_vec();
        v.resize(len, 0);
        b.extend_from_slice(&v);
    };
    b.extend(348i32.to_le_bytes());
    text(&mut b, &h.data_type, 10);
    text(&mut b, &h.db_name, 18);
    b.extend(h.extents.to_le_bytes());
    b.extend(h.session_error.to_le_bytes());
    b.extend([h.regular, h.dim_info]);
    h.dim.iter().for_each(|d| b.extend(d.to_le_bytes()));
    [h.intent_p1, h.intent_p2, h.intent_p3]
        .iter()
        .for_each(|x| b.extend(x.to_le_bytes()));
    [h.intent_code, h.datatype, h.bitpix, h.slice_start]
        .iter()
        .for_each(|x| b.extend(x.to_le_bytes()));
    h.pixdim.iter().for_each(|x| b.extend(x.to_le_bytes()));
    [352.0f32, h.scl_slope, h.scl_inter]
        .iter()
        .for_each(|x| b.extend(x.to_le_bytes()));
    b.extend(h.slice_end.to_le_bytes());
    b.extend([h.slice_code, h.xyzt_units]);
    [h.cal_max, h.cal_min, h.slice_duration, h.toffset]
        .iter()
        .for_each(|x| b.extend(x.to_le_bytes()));
    [h.glmax, h.glmin]
        .iter()
        .for_each(|x| b.extend(x.to_le_bytes()));
    text(&mut b, &h.descrip, 80);
    text(&mut b, &h.aux_file, 24);
    [h.qform_code, h.sform_code]
        .iter()
        .for_each(|x| b.extend(x.to_le_bytes()));
    [
        h.quatern_b,
        h.quatern_c,
        h.quatern_d,
        h.quatern_x,
        h.quatern_y,
        h.quatern_z,
    ]
    .iter()
    .chain(&h.srow_x)
    .chain(&h.srow_y)
    .chain(&h.srow_z)
    .for_each(|x| b.extend(x.to_le_bytes()));
    text(&mut b, &h.intent_name, 16);
    b.extend(b"n+1\0");
    debug_assert_eq!(b.len(), 348);
    b.extend([0u8; 4]);
    b
}

/// Writes `data` (x-fastest, `grid.len()` values) as a float32 NIfTI file.
///
/// The grid's affine becomes both the sform and the qform. Codes and other
/// header fields (units, intent, description, TR) come from `reference`
/// when given (codes 1 = scanner when the reference has none); data type,
/// dimensions, scaling and geometry always come from the arguments.
pub fn write_f32(
    path: &Path,
    grid: &Grid,
    data: &[f32],
    reference: Option<&NiftiInfo>,
) -> Result<(), NiftiError> {
    write_payload(path, grid, Payload::F32(data), reference)
}

/// Writes one channel of a volume as float32 (see [`write_f32`]).
pub fn write_volume_channel(
    path: &Path,
    volume: &Volume,
    channel: &str,
    reference: Option<&NiftiInfo>,
) -> Result<(), NiftiError> {
    let data = volume.channel(channel).ok_or_else(|| NiftiError::Write {
        path: path.to_path_buf(),
        message: format!("volume has no channel `{channel}`"),
    })?;
    write_f32(path, &volume.grid, data, reference)
}

/// Writes a label volume as uint8 NIfTI (see [`write_f32`] for the header).
pub fn write_labels(
    path: &Path,
    labels: &LabelVolume,
    reference: Option<&NiftiInfo>,
) -> Result<(), NiftiError> {
    write_payload(path, &labels.grid, Payload::U8(&labels.data), reference)
}

/// Returns true when two grids have the same shape and affines equal within
/// `tol_mm` per element (the check used between modalities of one case).
pub fn same_geometry(a: &Grid, b: &Grid, tol_mm: f64) -> bool {
    a.shape == b.shape
        && a.affine
            .iter()
            .flatten()
            .zip(b.affine.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= tol_mm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nifti_paths_are_recognised_in_any_case() {
        assert!(is_nifti_path(Path::new("x.NII.GZ")) && is_nifti_path(Path::new("a/b.nii")));
        assert!(!is_nifti_path(Path::new("x.png")) && !is_nifti_path(Path::new("x.nii.zip")));
    }

    /// A small oblique grid with a reference header that carries text
    /// fields, units and TR, as a converted scan would.
    fn oblique() -> (Grid, NiftiInfo, Vec<f32>) {
        let mut grid = Grid::new([5, 4, 3], [1.2, 0.9, 2.5]);
        grid.affine[0][1] = 0.1;
        grid.affine[0][3] = -40.0;
        grid.affine[2][3] = 12.5;
        let header = NiftiHeader {
            descrip: b"written by a test".to_vec(),
            intent_name: *b"label\0\0\0\0\0\0\0\0\0\0\0",
            xyzt_units: 2 | 8,
            pixdim: [1.0, 1.0, 1.0, 1.0, 2.5, 0.0, 0.0, 0.0],
            ..NiftiHeader::default()
        };
        let info = NiftiInfo {
            sform_code: 2,
            qform_code: 1,
            datatype: 16,
            intent_code: 0,
            description: "written by a test".into(),
            scaling: (1.0, 0.0),
            header,
        };
        let data = (0..grid.len()).map(|i| i as f32 * 0.5 - 7.0).collect();
        (grid, info, data)
    }

    #[test]
    fn files_are_byte_identical_to_the_nifti_crates_writer() {
        use ndarray::ShapeBuilder;
        let dir = tempfile::tempdir().unwrap();
        let (grid, info, data) = oblique();
        let ours = dir.path().join("ours.nii");
        write_f32(&ours, &grid, &data, Some(&info)).unwrap();
        let theirs = dir.path().join("theirs.nii");
        let [nx, ny, nz] = grid.dims();
        let arr = ndarray::Array3::from_shape_vec((nx, ny, nz).f(), data.clone()).unwrap();
        nifti::writer::WriterOptions::new(&theirs)
            .reference_header(&header_for(&grid, NiftiType::Float32, Some(&info)))
            .write_nifti(&arr)
            .unwrap();
        assert_eq!(
            std::fs::read(&ours).unwrap(),
            std::fs::read(&theirs).unwrap()
        );
    }

    #[test]
    fn written_files_read_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (grid, info, data) = oblique();
        for name in ["v.nii", "v.nii.gz"] {
            let path = dir.path().join(name);
            write_f32(&path, &grid, &data, Some(&info)).unwrap();
            let back = read(&path).unwrap();
            assert_eq!(back.data, data, "{name}");
            assert_eq!(back.grid.shape, grid.shape, "{name}");
            assert_eq!(back.info.description, "written by a test", "{name}");
            assert_eq!(
                (back.info.sform_code, back.info.qform_code),
                (2, 1),
                "{name}"
            );
        }
        let mut labels = LabelVolume::zeros(grid);
        labels
            .data
            .iter_mut()
            .enumerate()
            .for_each(|(i, l)| *l = (i % 3) as u8);
        let path = dir.path().join("labels.nii.gz");
        write_labels(&path, &labels, None).unwrap();
        assert_eq!(read_labels(&path).unwrap().0.data, labels.data);
    }

    /// Voxels longer than one read chunk, in a type that needs decoding,
    /// cross chunk boundaries intact; a file cut short is named.
    #[test]
    fn multi_chunk_voxels_decode_and_truncation_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (nx, ny, nz) = (200usize, 200, 8);
        let grid = Grid::new([nx as u32, ny as u32, nz as u32], [1.0; 3]);
        let values: Vec<i16> = (0..grid.len()).map(|i| (i % 5001) as i16 - 2500).collect();
        let mut header = header_for(&grid, NiftiType::Int16, None);
        header.scl_slope = 0.5;
        header.scl_inter = 3.0;
        let mut bytes = encode_header(&header);
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        assert!(bytes.len() > 2 * READ_CHUNK);
        let path = dir.path().join("i16.nii");
        std::fs::write(&path, &bytes).unwrap();
        let v = read(&path).unwrap();
        let expected: Vec<f32> = values
            .iter()
            .map(|&x| (x as f64 * 0.5 + 3.0) as f32)
            .collect();
        assert_eq!(v.data, expected);

        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("i16.nii"), "{err}");
    }
}
