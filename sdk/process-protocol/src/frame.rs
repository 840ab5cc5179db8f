//! The frame codec: length-prefixed frames, each a JSON header followed by
//! raw little-endian binary buffers. It knows nothing of what the headers
//! mean; [`crate::message`] gives them their types.
//!
//! ```text
//! frame   = magic "CLSC" (4 bytes)
//!           header_len  u32 little-endian
//!           payload_len u64 little-endian
//!           header      header_len bytes, a UTF-8 JSON object
//!           payload     payload_len bytes: the buffers, concatenated
//! ```
//!
//! The header's `buffers` array (may be absent when there are none) lists
//! `{"name", "dtype", "shape"}` for each buffer in payload order; `dtype`
//! is `"f32"` or `"u8"` and the buffer holds `product(shape)` values,
//! little-endian, C order (last index fastest). Volumes travel as
//! `[nz, ny, nx]` (so x is fastest, as in clisc), images as
//! `[height, width, channels]`, masks as `[n, height, width]`.
//! The messages and their order are in [`crate::message`] and
//! `docs/plugins-process.md`.

use serde_json::{json, Map, Value};
use std::io::{self, Read, Write};

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"CLSC";
/// Largest header accepted (a header is a small JSON object).
pub const MAX_HEADER: u32 = 64 << 20;
/// Largest payload accepted (a sanity bound against garbage lengths).
pub const MAX_PAYLOAD: u64 = 16 << 30;

/// Element type of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float, little-endian.
    F32,
    /// Unsigned byte.
    U8,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::U8 => 1,
        }
    }
    /// Name used in headers.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::U8 => "u8",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(Dtype::F32),
            "u8" => Some(Dtype::U8),
            _ => None,
        }
    }
}

/// One named binary buffer of a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Buffer {
    /// Name, e.g. `image/flair`, `brain_mask`, `masks`.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, C order.
    pub shape: Vec<usize>,
    /// `product(shape) * dtype.size()` bytes, little-endian.
    pub data: Vec<u8>,
}

impl Buffer {
    /// A float buffer.
    pub fn f32(name: &str, shape: Vec<usize>, values: &[f32]) -> Self {
        let mut data = Vec::with_capacity(values.len() * 4);
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        Self {
            name: name.to_string(),
            dtype: Dtype::F32,
            shape,
            data,
        }
    }
    /// A byte buffer.
    pub fn u8(name: &str, shape: Vec<usize>, values: &[u8]) -> Self {
        Self {
            name: name.to_string(),
            dtype: Dtype::U8,
            shape,
            data: values.to_vec(),
        }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The values as floats (u8 values are widened).
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            Dtype::F32 => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::U8 => self.data.iter().map(|&v| v as f32).collect(),
        }
    }
    /// The values as bytes (f32 values are thresholded at 0.5).
    pub fn to_u8(&self) -> Vec<u8> {
        match self.dtype {
            Dtype::U8 => self.data.clone(),
            Dtype::F32 => self
                .to_f32()
                .into_iter()
                .map(|v| u8::from(v > 0.5))
                .collect(),
        }
    }
}

/// One message: a JSON header object and its buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The header without its `buffers` entry.
    pub header: Map<String, Value>,
    /// The binary buffers, in payload order.
    pub buffers: Vec<Buffer>,
}

impl Frame {
    /// A frame of type `kind` with extra header fields from `fields` (an object).
    pub fn new(kind: &str, fields: Value) -> Self {
        let mut header = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        header.insert("type".into(), Value::String(kind.into()));
        Self {
            header,
            buffers: Vec::new(),
        }
    }
    /// Adds a buffer.
    pub fn with(mut self, buffer: Buffer) -> Self {
        self.buffers.push(buffer);
        self
    }
    /// The `type` field.
    pub fn kind(&self) -> &str {
        self.header
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    /// The buffer called `name`.
    pub fn buffer(&self, name: &str) -> Option<&Buffer> {
        self.buffers.iter().find(|b| b.name == name)
    }
    /// Serialises the frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut header = self.header.clone();
        if !self.buffers.is_empty() {
            let list: Vec<Value> = self
                .buffers
                .iter()
                .map(|b| json!({"name": b.name, "dtype": b.dtype.name(), "shape": b.shape}))
                .collect();
            header.insert("buffers".into(), Value::Array(list));
        }
        let header = serde_json::to_vec(&Value::Object(header)).expect("a JSON map serialises");
        let payload: usize = self.buffers.iter().map(|b| b.data.len()).sum();
        let mut out = Vec::with_capacity(16 + header.len() + payload);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&(payload as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for b in &self.buffers {
            out.extend_from_slice(&b.data);
        }
        out
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream ended cleanly before a new frame began.
    #[error("the stream closed")]
    Closed,
    /// Reading failed or the stream ended inside a frame.
    #[error("reading the stream failed: {0}")]
    Io(io::Error),
    /// The bytes are not a well-formed frame.
    #[error("{0}")]
    Malformed(String),
}

/// Writes one frame and flushes.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    w.write_all(&frame.encode())?;
    w.flush()
}

/// Reads one frame.
pub fn read_frame(r: &mut impl Read) -> Result<Frame, ReadError> {
    let mut prefix = [0u8; 16];
    let mut got = 0;
    while got < prefix.len() {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Err(ReadError::Closed),
            Ok(0) => {
                return Err(ReadError::Malformed(format!(
                    "stream ended after {got} bytes of a 16-byte frame prefix ({})",
                    printable(&prefix[..got])
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    if prefix[..4] != MAGIC {
        return Err(ReadError::Malformed(format!(
            "frame does not start with the magic bytes \"CLSC\" but with {} \
             (does the plugin print to stdout? log to stderr instead)",
            printable(&prefix)
        )));
    }
    let header_len = u32::from_le_bytes(prefix[4..8].try_into().expect("4 bytes"));
    let payload_len = u64::from_le_bytes(prefix[8..16].try_into().expect("8 bytes"));
    if header_len > MAX_HEADER {
        return Err(ReadError::Malformed(format!(
            "header length {header_len} exceeds {MAX_HEADER} bytes"
        )));
    }
    if payload_len > MAX_PAYLOAD {
        return Err(ReadError::Malformed(format!(
            "payload length {payload_len} exceeds {MAX_PAYLOAD} bytes"
        )));
    }
    // Memory grows with the bytes that actually arrive, never with a length
    // the peer merely claims.
    let header = read_exactly(r, header_len as u64, "the header")?;
    let header: Value = serde_json::from_slice(&header)
        .map_err(|e| ReadError::Malformed(format!("header is not JSON: {e}")))?;
    let Value::Object(mut header) = header else {
        return Err(ReadError::Malformed("header is not a JSON object".into()));
    };
    let specs = match header.remove("buffers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ReadError::Malformed("`buffers` is not an array".into())),
    };
    let mut buffers = Vec::with_capacity(specs.len());
    let mut expected: u64 = 0;
    for spec in &specs {
        let name = spec
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let dtype = spec
            .get("dtype")
            .and_then(Value::as_str)
            .and_then(Dtype::parse)
            .ok_or_else(|| {
                ReadError::Malformed(format!("buffer `{name}`: dtype must be \"f32\" or \"u8\""))
            })?;
        let shape: Vec<usize> = spec
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .map(|v| v.as_u64().map(|u| u as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                ReadError::Malformed(format!(
                    "buffer `{name}`: shape must be an array of non-negative integers"
                ))
            })?;
        let bytes = shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
            .filter(|&b| b <= MAX_PAYLOAD)
            .ok_or_else(|| {
                ReadError::Malformed(format!(
                    "buffer `{name}`: shape {shape:?} needs more than {MAX_PAYLOAD} bytes"
                ))
            })?;
        expected = expected.saturating_add(bytes);
        buffers.push((name, dtype, shape, bytes));
    }
    if expected != payload_len {
        return Err(ReadError::Malformed(format!(
            "payload is {payload_len} bytes but the buffers listed in the header need {expected}"
        )));
    }
    let buffers = buffers
        .into_iter()
        .map(|(name, dtype, shape, bytes)| {
            let data = read_exactly(r, bytes, &format!("buffer `{name}`"))?;
            Ok(Buffer {
                name,
                dtype,
                shape,
                data,
            })
        })
        .collect::<Result<Vec<_>, ReadError>>()?;
    Ok(Frame { header, buffers })
}

/// Reads exactly `len` bytes of `what`, growing the buffer as bytes arrive
/// (a stream that ends early costs only what it sent).
fn read_exactly(r: &mut impl Read, len: u64, what: &str) -> Result<Vec<u8>, ReadError> {
    let mut data = Vec::with_capacity(len.min(64 << 20) as usize);
    r.take(len).read_to_end(&mut data).map_err(ReadError::Io)?;
    if (data.len() as u64) < len {
        return Err(ReadError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the stream ended after {} of the {len} bytes of {what}",
                data.len()
            ),
        )));
    }
    Ok(data)
}

fn printable(bytes: &[u8]) -> String {
    let text: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect();
    format!("\"{text}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_buffers() {
        let frame = Frame::new("call", json!({"method": "predict"}))
            .with(Buffer::f32(
                "image/flair",
                vec![2, 1, 2],
                &[0.5, -1.0, 2.0, 3.25],
            ))
            .with(Buffer::u8("brain_mask", vec![2, 1, 2], &[1, 0, 1, 1]));
        let bytes = frame.encode();
        assert_eq!(&bytes[..4], b"CLSC");
        let back = read_frame(&mut bytes.as_slice()).unwrap();
        assert_eq!(back, frame);
        assert_eq!(
            back.buffer("image/flair").unwrap().to_f32(),
            vec![0.5, -1.0, 2.0, 3.25]
        );
        assert_eq!(back.kind(), "call");
    }

    #[test]
    fn numbers_in_headers_survive_a_round_trip() {
        // A 47-digit integer parsed by serde_json's default fast path came
        // back 1 ulp off after re-encoding (process_protocol fuzz target).
        let header = br#"{"kind":"log","slt":11111111111111111111111111111111111111111111111}"#;
        let mut bytes = b"CLSC".to_vec();
        bytes.extend((header.len() as u32).to_le_bytes());
        bytes.extend(0u32.to_le_bytes());
        bytes.extend(0u32.to_le_bytes());
        bytes.extend(header);
        let frame = read_frame(&mut bytes.as_slice());
        let Ok(frame) = frame else {
            panic!("the test frame does not decode: {frame:?}")
        };
        let again = read_frame(&mut frame.encode().as_slice()).unwrap();
        assert_eq!(again.header, frame.header);
        assert_eq!(frame.header["slt"].as_f64(), Some(1.111111111111111e46));
    }

    #[test]
    fn rejects_text_and_truncated_frames() {
        let err = read_frame(&mut &b"hello world, I am not a frame\n"[..]).unwrap_err();
        assert!(err.to_string().contains("magic bytes"), "{err}");
        assert!(err.to_string().contains("hello world"), "{err}");
        assert!(matches!(read_frame(&mut &b""[..]), Err(ReadError::Closed)));
        let mut bytes = Frame::new("x", json!({}))
            .with(Buffer::u8("m", vec![4], &[1, 2, 3, 4]))
            .encode();
        bytes.truncate(bytes.len() - 1);
        assert!(matches!(
            read_frame(&mut bytes.as_slice()),
            Err(ReadError::Io(_))
        ));
    }

    fn raw_frame(header: &str, payload_len: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&payload_len.to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn hostile_lengths_fail_with_what_arrived() {
        // A 12 GiB buffer announced, 3 bytes sent: the error says how much
        // arrived (memory follows the bytes received, not the claim).
        let header = r#"{"buffers":[{"name":"m","dtype":"f32","shape":[3,1073741824]}]}"#;
        let bytes = raw_frame(header, 12 << 30, &[1, 2, 3]);
        let err = read_frame(&mut bytes.as_slice()).unwrap_err().to_string();
        assert!(
            err.contains("ended after 3 of the 12884901888 bytes of buffer `m`"),
            "{err}"
        );
        // Shapes whose size overflows are rejected by name.
        let header =
            r#"{"buffers":[{"name":"big","dtype":"f32","shape":[4294967296,4294967296]}]}"#;
        let err = read_frame(&mut raw_frame(header, 16, &[]).as_slice())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("buffer `big`: shape [4294967296, 4294967296] needs more than"),
            "{err}"
        );
        // A header length beyond the stream.
        let mut bytes = raw_frame("{}", 0, &[]);
        bytes[4..8].copy_from_slice(&(60u32 << 20).to_le_bytes());
        let err = read_frame(&mut bytes.as_slice()).unwrap_err().to_string();
        assert!(
            err.contains("ended after 2 of the 62914560 bytes of the header"),
            "{err}"
        );
    }

    #[test]
    fn rejects_payload_that_disagrees_with_the_header() {
        let mut bytes = Frame::new("x", json!({}))
            .with(Buffer::u8("m", vec![4], &[1, 2, 3, 4]))
            .encode();
        bytes[8] = 3; // payload_len = 3, buffers need 4
        let err = read_frame(&mut bytes.as_slice()).unwrap_err();
        assert!(err.to_string().contains("need 4"), "{err}");
    }
}
