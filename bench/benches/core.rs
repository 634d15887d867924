//! Criterion benches for rcodis-core's hot functions.
//!
//! Not measured here: socket reads and writes, buffer growth across reads, the cost of
//! dispatching a decoded request, or cache effects of a real server's working set. These
//! are pure CPU costs on warm caches.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rcodis_core::cmd;
use rcodis_core::resp::{self, Frame, FrameDecoder, Request, RequestDecoder};
use rcodis_core::slot::slot_of;

fn pipeline_of_gets(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        Request::from_args(["GET", &format!("key:{i:012}")]).write_resp(&mut v);
    }
    v
}

/// Decoding a batch of 16 pipelined `GET key` requests, as a server sees one read.
/// Does not measure: copying the bytes in from the socket (the buffer is pre-filled by a
/// memcpy that is included, a lower bound of what a read costs).
fn decode_requests(c: &mut Criterion) {
    let batch = pipeline_of_gets(16);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(16));
    g.bench_function("request_pipeline_16_get", |b| {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::with_capacity(batch.len() * 2);
        b.iter(|| {
            buf.extend_from_slice(&batch);
            let mut n = 0;
            while let Some(r) = d.decode(&mut buf).unwrap() {
                n += r.len();
            }
            black_box(n)
        })
    });
    let mut replies = Vec::new();
    for i in 0..16 {
        resp::encode(&Frame::bulk(format!("value-{i:026}")), &mut replies);
    }
    g.bench_function("reply_frames_16_bulk", |b| {
        let mut d = FrameDecoder::default();
        let mut buf = BytesMut::with_capacity(replies.len() * 2);
        b.iter(|| {
            buf.extend_from_slice(&replies);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                black_box(f);
            }
        })
    });
    g.bench_function("reply_raw_16_bulk", |b| {
        let mut d = FrameDecoder::default();
        let mut buf = BytesMut::with_capacity(replies.len() * 2);
        b.iter(|| {
            buf.extend_from_slice(&replies);
            while let Some(f) = d.decode_raw(&mut buf).unwrap() {
                black_box(f);
            }
        })
    });
    g.finish();
}

/// Encoding replies into a reused buffer. Does not measure writing them to a socket.
fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(16));
    let value = vec![b'x'; 32];
    g.bench_function("bulk_32b_x16", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            for _ in 0..16 {
                resp::encode::write_bulk(&mut out, black_box(&value));
            }
            black_box(out.len())
        })
    });
    let arr = Frame::Array(
        (0..16)
            .map(|i| Frame::bulk(format!("member-{i}")))
            .collect(),
    );
    g.bench_function("array_of_16_bulk", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            resp::encode(black_box(&arr), &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

/// slot_of on typical key shapes. Does not measure the table lookup that follows.
fn slots(c: &mut Criterion) {
    let mut g = c.benchmark_group("slot_of");
    g.bench_function("plain_16b", |b| {
        b.iter(|| slot_of(black_box(b"key:000000012345")))
    });
    g.bench_function("tagged", |b| {
        b.iter(|| slot_of(black_box(b"{user1000}.following")))
    });
    g.finish();
}

/// Command lookup (case-insensitive) and key extraction. Does not measure arity checks
/// or dispatch.
fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("command");
    g.bench_function("lookup_get_upper", |b| {
        b.iter(|| cmd::lookup(black_box(b"GET")))
    });
    g.bench_function("lookup_zrangebyscore", |b| {
        b.iter(|| cmd::lookup(black_box(b"zrangebyscore")))
    });
    let args: Vec<&[u8]> = vec![b"zunionstore", b"d", b"2", b"a", b"b"];
    let spec = cmd::lookup(b"zunionstore").unwrap();
    g.bench_function("keys_zunionstore", |b| {
        b.iter(|| cmd::key_indexes(spec, black_box(&args), false).unwrap())
    });
    g.finish();
}

criterion_group!(benches, decode_requests, encode, slots, lookup);
criterion_main!(benches);
