//! Inputs the fuzzer once crashed on, replayed through both decoders (the same steps as
//! `fuzz/fuzz_targets/decode.rs`). Tests build with overflow checks, like fuzz builds.

use bytes::BytesMut;
use rcodis_core::resp::{to_vec, FrameDecoder, Limits, RequestDecoder};

fn replay(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let body = &data[1..];
    let split = (data[0] as usize % data.len()).min(body.len());
    let limits = Limits {
        max_bulk_len: 1 << 16,
        max_array_len: 1 << 12,
        max_inline_len: 1 << 12,
        max_depth: 16,
    };
    let mut d = FrameDecoder::new(limits);
    let mut buf = BytesMut::from(&body[..split]);
    if d.decode(&mut buf).is_ok() {
        buf.extend_from_slice(&body[split..]);
        while let Ok(Some(f)) = d.decode(&mut buf) {
            let bytes = to_vec(&f);
            let mut again = BytesMut::from(&bytes[..]);
            let g = FrameDecoder::new(limits)
                .decode(&mut again)
                .unwrap()
                .unwrap();
            assert_eq!(to_vec(&g), bytes);
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
}

#[test]
fn fuzz_regressions_do_not_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        replay(&std::fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0);
}
