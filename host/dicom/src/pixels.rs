//! Pixel data decoding: stored values of image frames, for native and
//! compressed transfer syntaxes.
//!
//! Decoding goes through `dicom-pixeldata` (pure Rust codecs): native
//! little-endian (implicit and explicit VR), deflated, RLE lossless, JPEG
//! baseline / extended / lossless, and JPEG 2000. JPEG-LS is not built (its
//! codec needs a C++ toolchain with CMake): such files fail with a clear
//! error naming the transfer syntax. Values are the *stored* values (sign
//! extended from BitsStored); the rescale (modality LUT) is applied per
//! slice by the caller, from each slice's own slope and intercept.

use super::DicomError;
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_pixeldata::PixelDecoder;
use std::path::Path;

/// Transfer syntaxes whose pixel data this build can decode.
pub(crate) const SUPPORTED_TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    ("1.2.840.10008.1.2", "Implicit VR Little Endian"),
    ("1.2.840.10008.1.2.1", "Explicit VR Little Endian"),
    (
        "1.2.840.10008.1.2.1.99",
        "Deflated Explicit VR Little Endian",
    ),
    ("1.2.840.10008.1.2.5", "RLE Lossless"),
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)"),
    ("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)"),
    ("1.2.840.10008.1.2.4.57", "JPEG Lossless (Process 14)"),
    (
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless SV1 (Process 14, selection value 1)",
    ),
    ("1.2.840.10008.1.2.4.90", "JPEG 2000 (lossless only)"),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000"),
];

/// RLE Lossless, checked by [`super::rle`] before decoding.
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// The name of a transfer syntax (its UID when unknown).
pub fn transfer_syntax_name(uid: &str) -> String {
    let known = SUPPORTED_TRANSFER_SYNTAXES
        .iter()
        .find(|(u, _)| *u == uid)
        .map(|(_, n)| n.to_string());
    known.unwrap_or_else(|| match uid {
        "1.2.840.10008.1.2.2" => "Explicit VR Big Endian (retired)".into(),
        "1.2.840.10008.1.2.4.80" => "JPEG-LS Lossless".into(),
        "1.2.840.10008.1.2.4.81" => "JPEG-LS Near-Lossless".into(),
        other => other.to_string(),
    })
}

/// Stored pixel values of frames of one file, each frame row-major
/// (`rows * columns` values, first row first).
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    /// Rows per frame.
    pub rows: u32,
    /// Columns per frame.
    pub columns: u32,
    /// One vector per requested frame, in the order requested.
    pub frames: Vec<Vec<f64>>,
}

fn decode_err(path: &Path, message: impl Into<String>) -> DicomError {
    DicomError::Decode {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Decodes frames `wanted` (0-based) of `path` into stored values.
pub fn read_frames(path: &Path, wanted: &[u32]) -> Result<Frames, DicomError> {
    super::guard::check_lengths(path)?;
    let obj = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| DicomError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let Some(pixel_data) = obj.get(tags::PIXEL_DATA) else {
        return Err(decode_err(path, "no PixelData"));
    };
    if ts == RLE_LOSSLESS {
        let number = |tag| {
            obj.get(tag)
                .and_then(|e| e.to_int::<u32>().ok())
                .unwrap_or(1)
        };
        let (rows, columns) = (number(tags::ROWS), number(tags::COLUMNS));
        let segments = number(tags::SAMPLES_PER_PIXEL) as usize
            * number(tags::BITS_ALLOCATED).div_ceil(8) as usize;
        let frames = number(tags::NUMBER_OF_FRAMES) as usize;
        let fragments = pixel_data.value().fragments().unwrap_or(&[]);
        super::rle::check_fragments(fragments, frames, segments, rows, columns)
            .map_err(|e| decode_err(path, format!("RLE Lossless: {e}")))?;
    }
    // The codecs of dicom-transfer-syntax-registry 0.10 index malformed
    // input without checks (the JPEG 2000 adapter panicked on a fuzzed
    // file): a panic in them is this file's decoding error, not a crash.
    let attempt =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| obj.decode_pixel_data()))
            .map_err(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("no message");
                decode_err(
                    path,
                    format!(
                        "the {} decoder failed on this file ({why}); the pixel data is malformed",
                        transfer_syntax_name(&ts)
                    ),
                )
            })?;
    let decoded = attempt.map_err(|e| {
        let supported: Vec<&str> = SUPPORTED_TRANSFER_SYNTAXES
            .iter()
            .map(|(_, n)| *n)
            .collect();
        decode_err(
            path,
            format!(
                "transfer syntax {} ({ts}): {e} (this build decodes: {})",
                transfer_syntax_name(&ts),
                supported.join(", ")
            ),
        )
    })?;
    let samples = decoded.samples_per_pixel();
    if samples != 1 {
        return Err(decode_err(
            path,
            format!("{samples} samples per pixel (colour); only grey images are supported"),
        ));
    }
    let (rows, columns) = (decoded.rows(), decoded.columns());
    let bits = decoded.bits_allocated();
    let stored = decoded.bits_stored().clamp(1, bits.max(1));
    let signed = matches!(
        decoded.pixel_representation(),
        dicom_pixeldata::PixelRepresentation::Signed
    );
    let n = rows as usize * columns as usize;
    let frame_bytes = n as u64 * bits.div_ceil(8) as u64;
    let mut frames = Vec::with_capacity(wanted.len());
    for &f in wanted {
        if f >= decoded.number_of_frames() {
            return Err(decode_err(
                path,
                format!("frame {} of {}", f + 1, decoded.number_of_frames()),
            ));
        }
        let available = decoded.data().len() as u64;
        if available < frame_bytes * (f as u64 + 1) {
            return Err(decode_err(
                path,
                format!(
                    "frame {}: {available} bytes of pixel data, {} expected \
                     ({rows} rows x {columns} columns x {} frame(s) of {bits}-bit pixels)",
                    f + 1,
                    frame_bytes * decoded.number_of_frames() as u64,
                    decoded.number_of_frames()
                ),
            ));
        }
        let bytes = decoded
            .frame_data(f)
            .map_err(|e| decode_err(path, format!("frame {}: {e}", f + 1)))?;
        let values = stored_values(bytes, bits, stored, signed, n)
            .map_err(|m| decode_err(path, format!("frame {}: {m}", f + 1)))?;
        frames.push(values);
    }
    Ok(Frames {
        rows,
        columns,
        frames,
    })
}

/// Interprets native-endian decoded bytes as `n` stored values: masks the
/// unused high bits, sign-extends from bit `stored - 1` when `signed`.
pub(crate) fn stored_values(
    bytes: &[u8],
    bits: u16,
    stored: u16,
    signed: bool,
    n: usize,
) -> Result<Vec<f64>, String> {
    let width = match bits {
        8 => 1,
        16 => 2,
        32 => 4,
        other => return Err(format!("BitsAllocated {other} (8, 16 or 32 supported)")),
    };
    if bytes.len() < n * width {
        return Err(format!(
            "{} bytes of pixel data, {} expected",
            bytes.len(),
            n * width
        ));
    }
    let stored = stored.min(bits) as u32;
    let mask: u64 = if stored >= 64 {
        u64::MAX
    } else {
        (1u64 << stored) - 1
    };
    let convert = |raw: u64| -> f64 {
        let v = raw & mask;
        if signed && stored < 64 && v >> (stored - 1) & 1 == 1 {
            (v as i64 - (1i64 << stored)) as f64
        } else {
            v as f64
        }
    };
    Ok(bytes[..n * width]
        .chunks_exact(width)
        .map(|c| {
            let raw = match width {
                1 => c[0] as u64,
                2 => u16::from_ne_bytes([c[0], c[1]]) as u64,
                _ => u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as u64,
            };
            convert(raw)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_extension_and_masking() {
        // 12-bit signed: 0x0FFF is -1, 0x0800 is -2048, high garbage bits ignored.
        let vals: Vec<u16> = vec![0x0FFF, 0x0800, 0x07FF, 0xF001];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(
            stored_values(&bytes, 16, 12, true, 4).unwrap(),
            vec![-1.0, -2048.0, 2047.0, 1.0]
        );
        assert_eq!(
            stored_values(&bytes, 16, 12, false, 4).unwrap(),
            vec![4095.0, 2048.0, 2047.0, 1.0]
        );
        assert_eq!(stored_values(&bytes, 16, 16, true, 4).unwrap()[3], -4095.0);
        assert_eq!(
            stored_values(&[200, 7], 8, 8, false, 2).unwrap(),
            vec![200.0, 7.0]
        );
        assert!(stored_values(&[1, 2], 16, 16, false, 2)
            .unwrap_err()
            .contains("4 expected"));
        assert!(stored_values(&[1, 2], 12, 12, false, 1)
            .unwrap_err()
            .contains("BitsAllocated 12"));
    }
}
