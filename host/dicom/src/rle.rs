//! RLE Lossless (PS3.5 Annex G) checks before decoding.
//!
//! The RLE decoder of `dicom-transfer-syntax-registry` 0.10 indexes its
//! input without checks: a fragment shorter than its header, more segments
//! than the header holds, or a segment that decodes to fewer bytes than a
//! frame needs make it panic (found by the `dicom` fuzz target). Files are
//! therefore checked here first and rejected with the frame and segment
//! named.

/// Checks the fragments of an RLE-compressed image: each of the first
/// `frames` fragments must hold a valid RLE header with `segments` segments
/// (samples per pixel x bytes per sample), each decoding to at least
/// `rows * columns` bytes.
pub(crate) fn check_fragments(
    fragments: &[Vec<u8>],
    frames: usize,
    segments: usize,
    rows: u32,
    columns: u32,
) -> Result<(), String> {
    if fragments.len() < frames {
        return Err(format!(
            "{frames} frame(s) but {} RLE fragment(s)",
            fragments.len()
        ));
    }
    let needed = rows as usize * columns as usize;
    for (f, fragment) in fragments.iter().take(frames).enumerate() {
        check_fragment(fragment, segments, needed).map_err(|e| format!("frame {}: {e}", f + 1))?;
    }
    Ok(())
}

fn check_fragment(fragment: &[u8], segments: usize, needed: usize) -> Result<(), String> {
    if fragment.len() < 64 {
        return Err(format!(
            "RLE fragment of {} bytes, shorter than its 64-byte header",
            fragment.len()
        ));
    }
    let word = |i: usize| u32::from_le_bytes(fragment[4 * i..4 * i + 4].try_into().unwrap());
    let count = word(0) as usize;
    if count != segments {
        return Err(format!(
            "the RLE header declares {count} segment(s), the image needs {segments}"
        ));
    }
    let mut offsets: Vec<usize> = (1..=count).map(|i| word(i) as usize).collect();
    offsets.push(fragment.len());
    for s in 0..count {
        let (start, end) = (offsets[s], offsets[s + 1]);
        if start < 64 || start > end || end > fragment.len() {
            return Err(format!(
                "RLE segment {} spans bytes {start}..{end} of a {}-byte fragment",
                s + 1,
                fragment.len()
            ));
        }
        let got = packbits_len(&fragment[start..end], needed);
        if got < needed {
            return Err(format!(
                "RLE segment {} decodes to {got} bytes, the frame needs {needed}",
                s + 1
            ));
        }
    }
    Ok(())
}

/// Bytes a PackBits segment decodes to, counting at most up to `limit`.
pub(crate) fn packbits_len(segment: &[u8], limit: usize) -> usize {
    let (mut i, mut out) = (0usize, 0usize);
    while i < segment.len() && out < limit {
        let n = segment[i] as i8;
        if n >= 0 {
            let literal = n as usize + 1;
            // A literal run cut short by the segment end yields what is left.
            out += literal.min(segment.len() - i - 1);
            i += 1 + literal;
        } else if n != -128 {
            if i + 1 < segment.len() {
                out += 1 + (-(n as i16)) as usize;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(segments: &[&[u8]]) -> Vec<u8> {
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(&(segments.len() as u32).to_le_bytes());
        let mut at = 64u32;
        for (i, s) in segments.iter().enumerate() {
            header[4 + 4 * i..8 + 4 * i].copy_from_slice(&at.to_le_bytes());
            at += s.len() as u32;
        }
        header.into_iter().chain(segments.concat()).collect()
    }

    #[test]
    fn packbits_lengths_follow_the_three_codes() {
        // literal of 3, run of 4 (0xFD = -3), no-op (0x80), literal of 1.
        assert_eq!(
            packbits_len(&[2, 1, 2, 3, 0xFD, 9, 0x80, 0, 7], 100),
            3 + 4 + 1
        );
        assert_eq!(
            packbits_len(&[5, 1, 2], 100),
            2,
            "a cut literal counts what is there"
        );
        assert_eq!(packbits_len(&[0xFD], 100), 0, "a run without its byte");
        assert_eq!(packbits_len(&[0x81, 1, 0x81, 1], 1000), 256);
        assert_eq!(
            packbits_len(&[0x81, 1, 0x81, 1], 10),
            128,
            "stops at the limit"
        );
    }

    #[test]
    fn good_fragments_pass_and_bad_ones_are_named() {
        // 2x2 frame, 16 bits: two segments of 4 bytes each.
        let seg: &[u8] = &[0xFD, 7];
        let good = fragment(&[seg, seg]);
        assert!(check_fragments(std::slice::from_ref(&good), 1, 2, 2, 2).is_ok());

        let e = check_fragments(std::slice::from_ref(&good), 2, 2, 2, 2).unwrap_err();
        assert!(e.contains("2 frame(s) but 1 RLE fragment(s)"), "{e}");
        let e = check_fragments(std::slice::from_ref(&good), 1, 1, 2, 2).unwrap_err();
        assert!(
            e.contains("declares 2 segment(s), the image needs 1"),
            "{e}"
        );
        let e = check_fragments(&[good[..40].to_vec()], 1, 2, 2, 2).unwrap_err();
        assert!(e.contains("shorter than its 64-byte header"), "{e}");
        let short = fragment(&[seg, &[0xFE, 7]]);
        let e = check_fragments(&[short], 1, 2, 2, 2).unwrap_err();
        assert!(
            e.contains("frame 1: RLE segment 2 decodes to 3 bytes, the frame needs 4"),
            "{e}"
        );
        let mut wild = good;
        wild[8..12].copy_from_slice(&9999u32.to_le_bytes());
        let e = check_fragments(&[wild], 1, 2, 2, 2).unwrap_err();
        assert!(e.contains("RLE segment 1 spans bytes 64..9999"), "{e}");
    }
}
