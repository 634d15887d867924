//! Feeds arbitrary bytes, split at an arbitrary point, to both decoders. A decoder may
//! decode, wait for more, or return a protocol error; it must never panic, loop, or
//! return a frame whose re-encoding does not decode to the same frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rcodis_core::resp::{to_vec, FrameDecoder, Limits, RequestDecoder};

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = data[0] as usize % data.len();
    let body = &data[1..];
    let split = split.min(body.len());
    let limits = Limits { max_bulk_len: 1 << 16, max_array_len: 1 << 12, max_inline_len: 1 << 12, max_depth: 16 };

    let mut d = FrameDecoder::new(limits);
    let mut buf = BytesMut::from(&body[..split]);
    let mut ok = true;
    if d.decode(&mut buf).is_err() {
        ok = false;
    }
    if ok {
        buf.extend_from_slice(&body[split..]);
        while let Ok(Some(f)) = d.decode(&mut buf) {
            let bytes = to_vec(&f);
            let mut again = BytesMut::from(&bytes[..]);
            let g = FrameDecoder::new(limits).decode(&mut again).expect("re-encoded frame decodes");
            // NaN doubles are not equal to themselves; compare encodings instead.
            assert_eq!(to_vec(&g.expect("whole frame")), bytes);
        }
    }

    let mut r = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(&body[..split]);
    if r.decode(&mut buf).is_ok() {
        buf.extend_from_slice(&body[split..]);
        while let Ok(Some(req)) = r.decode(&mut buf) {
            assert!(!req.is_empty());
        }
    }
});
