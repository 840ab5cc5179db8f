//! A walk over the element headers of a DICOM file that rejects, before the
//! file is parsed, any value claiming more bytes than the file has left.
//!
//! The parser behind `dicom-object` allocates (and zero-fills) an element's
//! claimed length before reading it, so a few bytes claiming a 4 GiB value
//! would take 4 GiB. This walk reads only the headers: sequences and items
//! are entered (their content is checked too), leaf values and the
//! fragments of encapsulated pixel data are skipped after their length was
//! checked. Deflated data sets cannot be checked this way and are passed
//! through; a walk that meets a truncated header stops and leaves the
//! message to the parser.

use super::DicomError;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const UNDEFINED: u32 = u32::MAX;

struct Walk<R> {
    r: R,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Walk<R> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).ok()?;
        self.pos += N as u64;
        Some(b)
    }
    fn u16(&mut self, big: bool) -> Option<u16> {
        let b = self.bytes::<2>()?;
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }
    fn u32(&mut self, big: bool) -> Option<u32> {
        let b = self.bytes::<4>()?;
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
    fn skip(&mut self, n: u64) -> bool {
        self.pos += n;
        self.r.seek(SeekFrom::Start(self.pos)).is_ok()
    }
}

/// One element header: tag, explicit VR (when the syntax has one), length.
fn header<R: Read + Seek>(
    w: &mut Walk<R>,
    explicit: bool,
    big: bool,
) -> Option<(Tag, Option<VR>, u32)> {
    let tag = Tag(w.u16(big)?, w.u16(big)?);
    if tag.0 == 0xFFFE || !explicit {
        return Some((tag, None, w.u32(big)?));
    }
    let code = w.bytes::<2>()?;
    // An unknown VR code is read as UN (reserved bytes, 32-bit length), as
    // dicom-parser does; reading it with a 16-bit length let a claimed
    // 1.9 GB value through (found by the `dicom` fuzz target).
    let vr = Some(VR::from_binary(code).unwrap_or(VR::UN));
    let long = matches!(
        vr,
        Some(
            VR::OB
                | VR::OD
                | VR::OF
                | VR::OL
                | VR::OV
                | VR::OW
                | VR::SQ
                | VR::SV
                | VR::UC
                | VR::UN
                | VR::UR
                | VR::UT
                | VR::UV
        )
    );
    let len = if long {
        w.bytes::<2>()?;
        w.u32(big)?
    } else {
        w.u16(big)? as u32
    };
    Some((tag, vr, len))
}

/// Bytes per value of a binary VR (1 for text and byte VRs).
fn value_size(vr: VR) -> usize {
    match vr {
        VR::FD | VR::SV | VR::UV | VR::OD | VR::OV => 8,
        VR::FL | VR::SL | VR::UL | VR::AT | VR::OF | VR::OL => 4,
        VR::SS | VR::US | VR::OW => 2,
        _ => 1,
    }
}

/// Checks every element length of `path` against the bytes left in the
/// file (see the module documentation).
pub(crate) fn check_lengths(path: &Path) -> Result<(), DicomError> {
    let io = |e: std::io::Error| DicomError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut w = Walk {
        r: std::io::BufReader::new(file),
        pos: 0,
        len,
    };
    let preamble = w.bytes::<132>();
    if !preamble.is_some_and(|p| &p[128..] == b"DICM") {
        w.pos = 0;
        if w.r.seek(SeekFrom::Start(0)).is_err() {
            return Ok(());
        }
    }
    let mut syntax = String::new();
    let mut in_meta = true;
    let (mut explicit, mut big) = (true, false);
    let mut fragments = false;
    while w.pos < w.len {
        let start = w.pos;
        let Some((tag, vr, n)) = header(&mut w, explicit, big) else {
            return Ok(());
        };
        if in_meta && tag.0 != 0x0002 {
            // The data set begins: switch to its transfer syntax.
            in_meta = false;
            let ts = syntax.trim_end_matches(['\0', ' ']);
            if ts == DEFLATED {
                return Ok(());
            }
            explicit = ts != IMPLICIT_LE;
            big = ts == EXPLICIT_BE;
            w.pos = start;
            if w.r.seek(SeekFrom::Start(start)).is_err() {
                return Ok(());
            }
            continue;
        }
        let left = w.len - w.pos;
        if n != UNDEFINED && n as u64 > left {
            return Err(DicomError::Read {
                path: path.to_path_buf(),
                message: format!(
                    "element ({:04X},{:04X}) at byte {start} claims {n} bytes, \
                     but only {left} are left in the file (truncated or corrupted)",
                    tag.0, tag.1
                ),
            });
        }
        let binary_vr = vr.or_else(|| match StandardDataDictionary.by_tag(tag)?.vr() {
            VirtualVr::Exact(v) => Some(v),
            _ => None,
        });
        let size = binary_vr.map_or(1, value_size);
        if tag.0 != 0xFFFE && n != UNDEFINED && n as usize % size != 0 {
            // dicom-parser reads whole values and leaves the rest unread,
            // so the next header would be read out of step (fuzz finding).
            return Err(DicomError::Read {
                path: path.to_path_buf(),
                message: format!(
                    "element ({:04X},{:04X}) at byte {start} has VR {} and length {n}, \
                     not a multiple of its {size}-byte values (corrupted)",
                    tag.0,
                    tag.1,
                    binary_vr.map_or("?", |v| v.to_string())
                ),
            });
        }
        let container = if tag.0 == 0xFFFE {
            if tag.1 == 0xE0DD {
                fragments = false;
            }
            // Items of a sequence hold data sets; fragments hold bytes.
            tag.1 == 0xE000 && !fragments || n == UNDEFINED
        } else if n == UNDEFINED {
            // An undefined-length pixel data element holds fragments.
            fragments = tag == Tag(0x7FE0, 0x0010);
            true
        } else {
            let sq = match vr {
                Some(vr) => vr == VR::SQ,
                None => StandardDataDictionary
                    .by_tag(tag)
                    .is_some_and(|e| matches!(e.vr(), VirtualVr::Exact(VR::SQ))),
            };
            sq
        };
        if !container && n != UNDEFINED {
            if in_meta && tag == Tag(0x0002, 0x0010) && n < 256 {
                let mut v = vec![0u8; n as usize];
                if w.r.read_exact(&mut v).is_err() {
                    return Ok(());
                }
                w.pos += n as u64;
                syntax = String::from_utf8_lossy(&v).into_owned();
            } else if !w.skip(n as u64) {
                return Ok(());
            }
        }
    }
    Ok(())
}
