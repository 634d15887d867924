//! Redis's DUMP payload: one RDB-serialised value, then the RDB version (2 bytes, little
//! endian) and a CRC-64/Jones (8 bytes, little endian) of everything before it.
//!
//! Writing uses the plain RDB types every Redis since 2.x loads (string, list, set, hash,
//! zset with binary scores), so a payload from rcodis restores into Redis 7.0. Reading also
//! accepts what Redis 7.0's own DUMP emits: listpack hashes and zsets, quicklist-2 lists,
//! intset sets, integer-encoded and LZF-compressed strings.

use std::collections::VecDeque;

use bytes::Bytes;
use hashbrown::HashSet;

use super::stream::StreamId;
use super::{Stream, Value, ZSet};

/// The RDB version Redis 7.0 writes and the newest it accepts.
pub const RDB_VERSION: u16 = 10;

const T_STRING: u8 = 0;
const T_LIST: u8 = 1;
const T_SET: u8 = 2;
const T_ZSET: u8 = 3;
const T_HASH: u8 = 4;
const T_ZSET_2: u8 = 5;
const T_SET_INTSET: u8 = 11;
const T_HASH_LISTPACK: u8 = 16;
const T_ZSET_LISTPACK: u8 = 17;
const T_LIST_QUICKLIST_2: u8 = 18;

const CRC64_TABLE: [u64; 256] = {
    // Reflected form of the Jones polynomial 0xad93d23594c935a9.
    const POLY: u64 = 0x95AC_9329_AC4B_C9B5;
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Redis's CRC-64 (Jones, reflected, init 0, no final xor).
pub fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    for &b in data {
        crc = CRC64_TABLE[((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

pub(super) fn put_len(out: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else if n <= u32::MAX as u64 {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Serialises a value as a DUMP payload.
pub fn dump(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Value::Str(s) => {
            out.push(T_STRING);
            put_str(&mut out, s);
        }
        Value::List(l) => {
            out.push(T_LIST);
            put_len(&mut out, l.len() as u64);
            for e in l {
                put_str(&mut out, e);
            }
        }
        Value::Set(s) => {
            out.push(T_SET);
            put_len(&mut out, s.len() as u64);
            for m in s.iter() {
                put_str(&mut out, m);
            }
        }
        Value::Hash(h) => {
            out.push(T_HASH);
            put_len(&mut out, h.len() as u64);
            for (k, v) in h.iter() {
                put_str(&mut out, k);
                put_str(&mut out, v);
            }
        }
        Value::ZSet(z) => {
            out.push(T_ZSET_2);
            put_len(&mut out, z.len() as u64);
            // Redis writes from the highest score down; any order loads.
            for (s, m) in z.iter().rev() {
                put_str(&mut out, m);
                out.extend_from_slice(&s.0.to_le_bytes());
            }
        }
        Value::Stream(st) => {
            out.push(super::stream::RDB_TYPE_STREAM_LISTPACKS_2);
            super::stream::rdb_encode(st, &mut out);
        }
    }
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The start of an RDB file as Redis 7.0 writes it (version 10): the magic, the auxiliary
/// fields a loader reports, and the function libraries (their code).
pub fn rdb_header(functions: &[Bytes], ctime_unix: u64) -> Vec<u8> {
    const AUX: u8 = 250;
    let mut out = format!("REDIS{RDB_VERSION:04}").into_bytes();
    for (k, v) in [
        ("redis-ver", crate::server_cmds::REDIS_VERSION.to_string()),
        ("redis-bits", "64".to_string()),
        ("ctime", ctime_unix.to_string()),
        ("aof-base", "0".to_string()),
    ] {
        out.push(AUX);
        put_str(&mut out, k.as_bytes());
        put_str(&mut out, v.as_bytes());
    }
    for c in functions {
        out.push(OPCODE_FUNCTION2);
        put_str(&mut out, c);
    }
    out
}

/// RDB_OPCODE_SELECTDB: the keys that follow are in database `db`.
pub fn rdb_select(out: &mut Vec<u8>, db: usize) {
    out.push(254);
    put_len(out, db as u64);
}

/// One key of an RDB file: its expiry (unix ms, 0 for none), the value's type, the key and the
/// value as DUMP encodes it.
pub fn rdb_entry(out: &mut Vec<u8>, key: &[u8], v: &Value, expire_at: u64) {
    if expire_at != 0 {
        out.push(252);
        out.extend_from_slice(&expire_at.to_le_bytes());
    }
    let p = dump(v);
    // The payload is type, value, version (2 bytes) and checksum (8).
    out.push(p[0]);
    put_str(out, key);
    out.extend_from_slice(&p[1..p.len() - 10]);
}

/// The end of an RDB file: RDB_OPCODE_EOF and the CRC-64 of everything before it and of
/// itself (`crc` is the CRC-64 so far).
pub fn rdb_footer(crc: u64) -> [u8; 9] {
    let crc = crc64(crc, &[255]);
    let mut f = [255u8; 9];
    f[1..].copy_from_slice(&crc.to_le_bytes());
    f
}

/// RDB_OPCODE_FUNCTION2: a library's code follows (FUNCTION DUMP's payload).
const OPCODE_FUNCTION2: u8 = 245;

/// FUNCTION DUMP's payload: each library's code, as Redis 7 writes it.
pub fn dump_functions(codes: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in codes {
        out.push(OPCODE_FUNCTION2);
        put_str(&mut out, c);
    }
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The libraries' code in a FUNCTION DUMP payload (ours or Redis's); `Err` is the reply.
pub fn restore_functions(payload: &[u8]) -> Result<Vec<Bytes>, &'static str> {
    const WRONG: &str = "ERR DUMP payload version or checksum are wrong";
    if payload.len() < 10 {
        return Err(WRONG);
    }
    let body_end = payload.len() - 10;
    let version = u16::from_le_bytes([payload[body_end], payload[body_end + 1]]);
    let crc = u64::from_le_bytes(payload[payload.len() - 8..].try_into().expect("8 bytes"));
    if version > RDB_VERSION || crc64(0, &payload[..payload.len() - 8]) != crc {
        return Err(WRONG);
    }
    let mut r = Reader {
        b: &payload[..body_end],
        pos: 0,
    };
    let mut codes = Vec::new();
    while r.pos < body_end {
        if r.byte() != Some(OPCODE_FUNCTION2) {
            return Err("ERR given type is not a function");
        }
        codes.push(
            r.string()
                .ok_or("ERR failed loading the given functions payload")?,
        );
    }
    Ok(codes)
}

/// Why a payload was refused, in RESTORE's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpError {
    /// Short payload, newer RDB version, or checksum mismatch.
    VersionOrChecksum,
    /// The payload does not parse as a value.
    BadFormat,
}

impl DumpError {
    pub fn message(self) -> &'static str {
        match self {
            DumpError::VersionOrChecksum => "ERR DUMP payload version or checksum are wrong",
            DumpError::BadFormat => "ERR Bad data format",
        }
    }
}

/// Checks the footer and parses a DUMP payload.
pub fn restore(payload: &[u8]) -> Result<Value, DumpError> {
    if payload.len() < 10 {
        return Err(DumpError::VersionOrChecksum);
    }
    let body_end = payload.len() - 10;
    let version = u16::from_le_bytes([payload[body_end], payload[body_end + 1]]);
    if version > RDB_VERSION {
        return Err(DumpError::VersionOrChecksum);
    }
    let crc = u64::from_le_bytes(payload[payload.len() - 8..].try_into().expect("8 bytes"));
    if crc64(0, &payload[..payload.len() - 8]) != crc {
        return Err(DumpError::VersionOrChecksum);
    }
    let mut r = Reader {
        b: &payload[..body_end],
        pos: 0,
    };
    let v = r.value().ok_or(DumpError::BadFormat)?;
    if r.pos != body_end {
        return Err(DumpError::BadFormat);
    }
    Ok(v)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

enum Len {
    Plain(u64),
    /// Special string encodings: 0 int8, 1 int16, 2 int32, 3 LZF.
    Special(u8),
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn len_enc(&mut self) -> Option<Len> {
        let b = self.byte()?;
        Some(match b >> 6 {
            0 => Len::Plain((b & 0x3f) as u64),
            1 => Len::Plain((((b & 0x3f) as u64) << 8) | self.byte()? as u64),
            2 => match b {
                0x80 => Len::Plain(u32::from_be_bytes(self.take(4)?.try_into().ok()?) as u64),
                0x81 => Len::Plain(u64::from_be_bytes(self.take(8)?.try_into().ok()?)),
                _ => return None,
            },
            _ => Len::Special(b & 0x3f),
        })
    }

    fn len(&mut self) -> Option<usize> {
        match self.len_enc()? {
            Len::Plain(n) if n <= (1 << 40) => Some(n as usize),
            _ => None,
        }
    }

    fn string(&mut self) -> Option<Bytes> {
        match self.len_enc()? {
            Len::Plain(n) => {
                let n = usize::try_from(n).ok()?;
                Some(Bytes::copy_from_slice(self.take(n)?))
            }
            Len::Special(0) => Some(Bytes::from((self.byte()? as i8).to_string())),
            Len::Special(1) => Some(Bytes::from(
                i16::from_le_bytes(self.take(2)?.try_into().ok()?).to_string(),
            )),
            Len::Special(2) => Some(Bytes::from(
                i32::from_le_bytes(self.take(4)?.try_into().ok()?).to_string(),
            )),
            Len::Special(3) => {
                let clen = self.len()?;
                let ulen = self.len()?;
                let data = self.take(clen)?;
                lzf_decompress(data, ulen).map(Bytes::from)
            }
            Len::Special(_) => None,
        }
    }

    fn value(&mut self) -> Option<Value> {
        let t = self.byte()?;
        Some(match t {
            T_STRING => Value::Str(self.string()?),
            T_LIST => {
                let n = self.len()?;
                let mut l = VecDeque::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    l.push_back(self.string()?);
                }
                Value::List(l)
            }
            T_SET => {
                let n = self.len()?;
                let mut s = HashSet::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    s.insert(self.string()?);
                }
                Value::Set(Box::new(s))
            }
            T_HASH => {
                let n = self.len()?;
                let mut h =
                    super::HashVal::with_capacity_and_hasher(n.min(1 << 16), Default::default());
                for _ in 0..n {
                    let k = self.string()?;
                    let v = self.string()?;
                    h.insert(k, v);
                }
                Value::Hash(Box::new(h))
            }
            T_ZSET | T_ZSET_2 => {
                let n = self.len()?;
                let mut z = ZSet::default();
                for _ in 0..n {
                    let m = self.string()?;
                    let s = if t == T_ZSET_2 {
                        f64::from_le_bytes(self.take(8)?.try_into().ok()?)
                    } else {
                        self.legacy_double()?
                    };
                    if s.is_nan() {
                        return None;
                    }
                    z.insert(m, s);
                }
                Value::ZSet(Box::new(z))
            }
            T_SET_INTSET => {
                let blob = self.string()?;
                Value::Set(Box::new(
                    intset(&blob)?
                        .into_iter()
                        .map(|v| Bytes::from(v.to_string()))
                        .collect(),
                ))
            }
            T_HASH_LISTPACK => {
                let items = listpack(&self.string()?)?;
                if items.len() % 2 != 0 {
                    return None;
                }
                let mut h =
                    super::HashVal::with_capacity_and_hasher(items.len() / 2, Default::default());
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    h.insert(k, v);
                }
                Value::Hash(Box::new(h))
            }
            T_ZSET_LISTPACK => {
                let items = listpack(&self.string()?)?;
                if items.len() % 2 != 0 {
                    return None;
                }
                let mut z = ZSet::default();
                let mut it = items.into_iter();
                while let (Some(m), Some(s)) = (it.next(), it.next()) {
                    let s: f64 = std::str::from_utf8(&s).ok()?.parse().ok()?;
                    z.insert(m, s);
                }
                Value::ZSet(Box::new(z))
            }
            T_LIST_QUICKLIST_2 => {
                let nodes = self.len()?;
                let mut l = VecDeque::new();
                for _ in 0..nodes {
                    let container = self.len()?;
                    let blob = self.string()?;
                    match container {
                        1 => l.push_back(blob),
                        2 => l.extend(listpack(&blob)?),
                        _ => return None,
                    }
                }
                Value::List(l)
            }
            super::stream::RDB_TYPE_STREAM_LISTPACKS
            | super::stream::RDB_TYPE_STREAM_LISTPACKS_2
            | super::stream::RDB_TYPE_STREAM_LISTPACKS_3 => {
                Value::Stream(Box::new(self.stream(t)?))
            }
            _ => return None,
        })
    }

    fn u64_len(&mut self) -> Option<u64> {
        match self.len_enc()? {
            Len::Plain(n) => Some(n),
            Len::Special(_) => None,
        }
    }

    fn stream_id(&mut self) -> Option<StreamId> {
        Some(StreamId::new(self.u64_len()?, self.u64_len()?))
    }

    fn millis(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A stream (RDB_TYPE_STREAM_LISTPACKS, _2 from Redis 7.0, _3 from 7.2).
    fn stream(&mut self, t: u8) -> Option<Stream> {
        use super::stream::{
            Consumer, Group, Nack, RDB_TYPE_STREAM_LISTPACKS, RDB_TYPE_STREAM_LISTPACKS_3,
        };
        let mut s = Stream::default();
        let nodes = self.len()?;
        for _ in 0..nodes {
            let master = StreamId::decode(&self.string()?)?;
            let elems = listpack(&self.string()?)?;
            if elems.is_empty() {
                return None;
            }
            super::stream::load_node(&mut s, master, &elems)?;
        }
        let length = self.u64_len()?;
        if length != s.entries.len() as u64 {
            return None;
        }
        s.last_id = self.stream_id()?;
        if t != RDB_TYPE_STREAM_LISTPACKS {
            s.first_id = self.stream_id()?;
            s.max_deleted_id = self.stream_id()?;
            s.entries_added = self.u64_len()?;
        } else {
            s.refresh_first();
            s.entries_added = length;
        }
        let groups = self.len()?;
        for _ in 0..groups {
            let name = self.string()?;
            let last = self.stream_id()?;
            let read = if t != RDB_TYPE_STREAM_LISTPACKS {
                self.u64_len()? as i64
            } else {
                s.distance_from_first(last)
            };
            let mut g = Group::new(last, read);
            let n = self.len()?;
            for _ in 0..n {
                let id = StreamId::decode(self.take(16)?)?;
                let delivery_time = self.millis()?;
                let delivery_count = self.u64_len()?;
                g.pel.insert(
                    id,
                    Nack {
                        consumer: Bytes::new(),
                        delivery_time,
                        delivery_count,
                    },
                );
            }
            let nc = self.len()?;
            for _ in 0..nc {
                let cname = self.string()?;
                let seen_time = self.millis()?;
                if t == RDB_TYPE_STREAM_LISTPACKS_3 {
                    self.millis()?; // active time (Redis 7.2)
                }
                let mut c = Consumer {
                    seen_time,
                    pel: Default::default(),
                };
                let np = self.len()?;
                for _ in 0..np {
                    let id = StreamId::decode(self.take(16)?)?;
                    g.pel.get_mut(&id)?.consumer = cname.clone();
                    c.pel.insert(id);
                }
                g.consumers.insert(cname, c);
            }
            // Every pending entry belongs to a consumer.
            if g.pel.values().any(|n| n.consumer.is_empty()) {
                return None;
            }
            s.groups.insert(name, g);
        }
        Some(s)
    }

    /// RDB_TYPE_ZSET's text doubles: 253 nan, 254 +inf, 255 -inf, else a length and text.
    fn legacy_double(&mut self) -> Option<f64> {
        match self.byte()? {
            253 => Some(f64::NAN),
            254 => Some(f64::INFINITY),
            255 => Some(f64::NEG_INFINITY),
            n => std::str::from_utf8(self.take(n as usize)?)
                .ok()?
                .parse()
                .ok(),
        }
    }
}

/// The integers of an intset blob.
fn intset(b: &[u8]) -> Option<Vec<i64>> {
    if b.len() < 8 {
        return None;
    }
    let enc = u32::from_le_bytes(b[0..4].try_into().ok()?) as usize;
    let n = u32::from_le_bytes(b[4..8].try_into().ok()?) as usize;
    if !matches!(enc, 2 | 4 | 8) || b.len() != 8 + n.checked_mul(enc)? {
        return None;
    }
    Some(
        b[8..]
            .chunks_exact(enc)
            .map(|c| match enc {
                2 => i16::from_le_bytes([c[0], c[1]]) as i64,
                4 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
                _ => i64::from_le_bytes(c.try_into().expect("8 bytes")),
            })
            .collect(),
    )
}

/// The elements of a listpack blob, integers rendered as text.
fn listpack(b: &[u8]) -> Option<Vec<Bytes>> {
    if b.len() < 7 {
        return None;
    }
    let total = u32::from_le_bytes(b[0..4].try_into().ok()?) as usize;
    if total != b.len() {
        return None;
    }
    let mut out = Vec::new();
    let mut p = 6;
    loop {
        let e = *b.get(p)?;
        if e == 0xFF {
            break;
        }
        let (value, entry_len): (Bytes, usize) = if e & 0x80 == 0 {
            (Bytes::from((e & 0x7f).to_string()), 1)
        } else if e & 0xC0 == 0x80 {
            let n = (e & 0x3f) as usize;
            (Bytes::copy_from_slice(b.get(p + 1..p + 1 + n)?), 1 + n)
        } else if e & 0xE0 == 0xC0 {
            let v = (((e & 0x1f) as i64) << 8) | *b.get(p + 1)? as i64;
            let v = if v >= 1 << 12 { v - (1 << 13) } else { v };
            (Bytes::from(v.to_string()), 2)
        } else if e & 0xF0 == 0xE0 {
            let n = (((e & 0x0f) as usize) << 8) | *b.get(p + 1)? as usize;
            (Bytes::copy_from_slice(b.get(p + 2..p + 2 + n)?), 2 + n)
        } else {
            let int = |len: usize| -> Option<i64> {
                let mut buf = [0u8; 8];
                buf[..len].copy_from_slice(b.get(p + 1..p + 1 + len)?);
                let v = i64::from_le_bytes(buf);
                let shift = 64 - 8 * len as u32;
                Some((v << shift) >> shift)
            };
            match e {
                0xF0 => {
                    let n = u32::from_le_bytes(b.get(p + 1..p + 5)?.try_into().ok()?) as usize;
                    (Bytes::copy_from_slice(b.get(p + 5..p + 5 + n)?), 5 + n)
                }
                0xF1 => (Bytes::from(int(2)?.to_string()), 3),
                0xF2 => (Bytes::from(int(3)?.to_string()), 4),
                0xF3 => (Bytes::from(int(4)?.to_string()), 5),
                0xF4 => (Bytes::from(int(8)?.to_string()), 9),
                _ => return None,
            }
        };
        let backlen = match entry_len {
            0..=127 => 1,
            128..=16382 => 2,
            16383..=2097150 => 3,
            2097151..=268435454 => 4,
            _ => 5,
        };
        out.push(value);
        p += entry_len + backlen;
    }
    Some(out)
}

/// LZF decompression (the format Redis's lzf_compress writes).
fn lzf_decompress(input: &[u8], out_len: usize) -> Option<Vec<u8>> {
    // LZF expands at most 264 bytes from 3 of input: a claimed length past that is refused
    // below without first reserving it.
    let mut out: Vec<u8> = Vec::with_capacity(out_len.min(input.len().saturating_mul(88)));
    let mut ip = 0;
    while ip < input.len() {
        let ctrl = input[ip] as usize;
        ip += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            out.extend_from_slice(input.get(ip..ip + n)?);
            ip += n;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += *input.get(ip)? as usize;
                ip += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + *input.get(ip)? as usize + 1;
            ip += 1;
            let start = out.len().checked_sub(back)?;
            for i in 0..len + 2 {
                let b = out[start + i];
                out.push(b);
            }
        }
        if out.len() > out_len {
            return None;
        }
    }
    (out.len() == out_len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_check_value() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn round_trips() {
        let mut z = ZSet::default();
        z.insert(Bytes::from_static(b"a"), 1.5);
        z.insert(Bytes::from_static(b"b"), f64::NEG_INFINITY);
        let values = vec![
            Value::Str(Bytes::from_static(b"hello")),
            Value::Str(Bytes::from(vec![7u8; 20000])),
            Value::List((0..100).map(|i| Bytes::from(i.to_string())).collect()),
            Value::Set(Box::new(
                (0..10).map(|i| Bytes::from(format!("m{i}"))).collect(),
            )),
            Value::Hash(Box::new(
                [(Bytes::from_static(b"f"), Bytes::from_static(b"v"))]
                    .into_iter()
                    .collect(),
            )),
            Value::ZSet(Box::new(z)),
        ];
        for v in values {
            assert_eq!(restore(&dump(&v)).unwrap(), v);
        }
    }

    #[test]
    fn rejects_damage() {
        let mut p = dump(&Value::Str(Bytes::from_static(b"x")));
        let n = p.len();
        p[n - 1] ^= 1;
        assert_eq!(restore(&p), Err(DumpError::VersionOrChecksum));
        assert_eq!(restore(b"short"), Err(DumpError::VersionOrChecksum));
        let mut bad = vec![99u8, 0];
        bad.extend_from_slice(&RDB_VERSION.to_le_bytes());
        let crc = crc64(0, &bad);
        bad.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(restore(&bad), Err(DumpError::BadFormat));
    }

    #[test]
    fn lzf_back_references() {
        // "aaaaaaaaaa": literal 'a', then a back-reference of length 9 at distance 1.
        let c = [0x00, b'a', 0xE0, 0x00, 0x00];
        assert_eq!(lzf_decompress(&c, 10).unwrap(), b"aaaaaaaaaa");
    }
}
