//! Bytes -> the `clisc-process` frame decoder (what the host reads from an
//! out-of-process plugin's stdout). Frames are read until the stream ends
//! or one is rejected; a decoded frame must encode back to bytes that
//! decode to the same frame.
#![no_main]

use clisc_process_protocol::{read_frame, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut stream = data;
    while let Ok(frame) = read_frame(&mut stream) {
        let bytes = frame.encode();
        let again: Frame = read_frame(&mut bytes.as_slice()).expect("re-encoded frame decodes");
        assert_eq!(again.buffers, frame.buffers);
        assert_eq!(again.header, frame.header);
    }
});
