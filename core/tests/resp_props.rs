//! Property tests: encode → decode round trips, and any split of a valid byte stream into
//! chunks decodes to the same frames (replies and requests alike).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rcodis_core::resp::{encode, Frame, FrameDecoder, Request, RequestDecoder};

fn line_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..20,
    )
    .prop_map(Bytes::from)
}

fn bulk_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn frame() -> impl Strategy<Value = Frame> {
    let leaf = prop_oneof![
        line_bytes().prop_map(Frame::Simple),
        line_bytes().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        bulk_bytes().prop_map(Frame::Bulk),
        Just(Frame::NullBulk),
        Just(Frame::NullArray),
        Just(Frame::Null),
        any::<bool>().prop_map(Frame::Boolean),
        prop_oneof![
            any::<f64>().prop_filter("not NaN", |d| !d.is_nan()),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY)
        ]
        .prop_map(Frame::Double),
        "[1-9][0-9]{0,30}".prop_map(|s| Frame::BigNumber(Bytes::from(s))),
        bulk_bytes().prop_map(Frame::BulkError),
        ("[a-z]{3}", bulk_bytes()).prop_map(|(f, text)| Frame::Verbatim {
            format: f.as_bytes().try_into().unwrap(),
            text
        }),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Array),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Set),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Push),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Frame::Map),
        ]
    })
}

fn decode_in_chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Frame> {
    let mut d = FrameDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut last = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    for p in points {
        buf.extend_from_slice(&bytes[last..p]);
        last = p;
        while let Some(f) = d.decode(&mut buf).expect("valid stream") {
            out.push(f);
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_decode_round_trip(f in frame()) {
        let bytes = rcodis_core::resp::to_vec(&f);
        let mut buf = BytesMut::from(&bytes[..]);
        let got = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(got, f);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn any_split_decodes_the_same(frames in proptest::collection::vec(frame(), 1..6),
                                  cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let mut bytes = Vec::new();
        for f in &frames {
            encode(f, &mut bytes);
        }
        prop_assert_eq!(decode_in_chunks(&bytes, &cuts), frames);
    }

    #[test]
    fn requests_any_split(reqs in proptest::collection::vec(
                              proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..6), 1..6),
                          cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let mut bytes = Vec::new();
        for r in &reqs {
            Request::from_args(r).write_resp(&mut bytes);
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.push(bytes.len());
        points.sort_unstable();
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut last = 0;
        for p in points {
            buf.extend_from_slice(&bytes[last..p]);
            last = p;
            while let Some(r) = d.decode(&mut buf).unwrap() {
                got.push(r.args().map(|a| a.to_vec()).collect::<Vec<_>>());
            }
        }
        prop_assert_eq!(got, reqs);
    }

    /// Arbitrary bytes never panic either decoder; they decode, wait, or fail cleanly.
    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut buf = BytesMut::from(&data[..]);
        let mut d = FrameDecoder::default();
        while let Ok(Some(_)) = d.decode(&mut buf) {}
        let mut buf = BytesMut::from(&data[..]);
        let mut d = RequestDecoder::default();
        while let Ok(Some(_)) = d.decode(&mut buf) {}
    }

    /// Inline requests: quoting what split_inline reads gives the same arguments back.
    #[test]
    fn inline_quoting_round_trip(args in proptest::collection::vec("[a-zA-Z0-9 \"'\\\\]{0,12}", 1..5)) {
        let mut line = Vec::new();
        for a in &args {
            line.push(b'"');
            for c in a.bytes() {
                if c == b'"' || c == b'\\' {
                    line.push(b'\\');
                }
                line.push(c);
            }
            line.extend_from_slice(b"\" ");
        }
        line.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&line[..]);
        let r = RequestDecoder::default().decode(&mut buf).unwrap().unwrap();
        let got: Vec<String> = r.args().map(|a| String::from_utf8(a.to_vec()).unwrap()).collect();
        prop_assert_eq!(got, args);
    }
}
