//! HyperLogLog: PFADD, PFCOUNT, PFMERGE, PFDEBUG (and PFSELFTEST's checks).
//!
//! A HyperLogLog is a string in Redis's own layout, byte for byte, so that GET, SET, DUMP and
//! RESTORE move it between rcodis-server and redis-server: a 16-byte header (`HYLL`, the
//! encoding, three unused bytes, the cached cardinality as 8 little-endian bytes whose top
//! bit marks it stale), then 16,384 six-bit registers, either dense (packed, 12,288 bytes) or
//! sparse (run-length opcodes: ZERO `00xxxxxx` for 1-64 empty registers, XZERO `01xxxxxx
//! yyyyyyyy` for up to 16,384, VAL `1vvvvvxx` for 1-4 registers holding 1-32). Elements are
//! hashed with MurmurHash64A (seed 0xadc83b19); the low 14 bits pick the register, the run
//! of zeros above them (plus one) is the value. Sparse strings turn dense past
//! `hll-sparse-max-bytes` or when a value exceeds 32. The cardinality is Otmar Ertl's
//! estimator from the register histogram, as Redis 5+ computes it; same registers, same
//! answer.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use hashbrown::HashMap;
use rcodis_core::resp::Request;

use super::strings::get_str;
use super::{Ctx, Handler, Replied};
use crate::db::{Entry, StrEnc, Value};

const P: u32 = 14;
const Q: u32 = 64 - P;
const REGISTERS: usize = 1 << P;
const P_MASK: u64 = REGISTERS as u64 - 1;
const REGISTER_MAX: u32 = 63;
const HDR: usize = 16;
const DENSE_SIZE: usize = HDR + (REGISTERS * 6).div_ceil(8);
const DENSE: u8 = 0;
const SPARSE: u8 = 1;
const VAL_MAX_VALUE: u8 = 32;
const VAL_MAX_LEN: usize = 4;
const ZERO_MAX_LEN: usize = 64;
const XZERO_MAX_LEN: usize = 16384;
/// 0.5 / ln(2), the estimator's constant for m → ∞.
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

pub const INVALID: &str = "INVALIDOBJ Corrupted HLL object detected";
const NOT_HLL: &str = "WRONGTYPE Key is not a valid HyperLogLog string value.";

/// `hll-sparse-max-bytes`: a sparse string longer than this turns dense.
static SPARSE_MAX: AtomicUsize = AtomicUsize::new(3000);

/// Applies `CONFIG SET hll-sparse-max-bytes` (and the configured value at start).
pub fn set_sparse_max(v: &str) {
    if let Ok(n) = v.parse::<usize>() {
        SPARSE_MAX.store(n, Ordering::Relaxed);
    }
}

pub fn register(m: &mut HashMap<&'static str, Handler>) {
    m.insert("pfadd", pfadd);
    m.insert("pfcount", pfcount);
    m.insert("pfmerge", pfmerge);
    m.insert("pfdebug", pfdebug);
}

/// A sparse representation that is not well formed.
#[derive(Debug)]
struct Corrupt;

/// MurmurHash64A as Redis has it (little-endian words, the tail folded in byte by byte).
fn murmur64a(key: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(M);
    let mut words = key.chunks_exact(8);
    for w in &mut words {
        let mut k = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate().rev() {
            h ^= (b as u64) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register an element lands in and the value it offers (1..=51).
fn pattern(ele: &[u8]) -> (usize, u8) {
    let hash = murmur64a(ele, 0xadc8_3b19);
    let index = (hash & P_MASK) as usize;
    let rest = (hash >> P) | (1u64 << Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

// Sparse opcodes.
fn is_zero(b: u8) -> bool {
    b & 0xc0 == 0
}
fn is_xzero(b: u8) -> bool {
    b & 0xc0 == 0x40
}
fn is_val(b: u8) -> bool {
    b & 0x80 != 0
}
fn zero_len(b: u8) -> usize {
    (b & 0x3f) as usize + 1
}
fn xzero_len(b0: u8, b1: u8) -> usize {
    (((b0 & 0x3f) as usize) << 8 | b1 as usize) + 1
}
fn val_value(b: u8) -> u8 {
    ((b >> 2) & 0x1f) + 1
}
fn val_len(b: u8) -> usize {
    (b & 0x3) as usize + 1
}
fn val_op(value: u8, len: usize) -> u8 {
    ((value - 1) << 2) | (len as u8 - 1) | 0x80
}
fn xzero_op(len: usize) -> [u8; 2] {
    let l = len - 1;
    [(l >> 8) as u8 | 0x40, (l & 0xff) as u8]
}

/// One sparse opcode at `p`: (registers it covers, its length in bytes). A truncated
/// XZERO reads its missing byte as 0, as Redis reads the string's terminator.
fn op_at(v: &[u8], p: usize) -> (usize, usize) {
    let b = v[p];
    if is_zero(b) {
        (zero_len(b), 1)
    } else if is_val(b) {
        (val_len(b), 1)
    } else {
        (xzero_len(b, v.get(p + 1).copied().unwrap_or(0)), 2)
    }
}

fn dense_get(r: &[u8], i: usize) -> u8 {
    let byte = i * 6 / 8;
    let fb = (i * 6) & 7;
    let b0 = r[byte] as u32;
    let b1 = r.get(byte + 1).copied().unwrap_or(0) as u32;
    (((b0 >> fb) | (b1 << (8 - fb))) & REGISTER_MAX) as u8
}

fn dense_put(r: &mut [u8], i: usize, val: u8) {
    let byte = i * 6 / 8;
    let fb = (i * 6) & 7;
    let v = val as u32;
    r[byte] &= !(REGISTER_MAX << fb) as u8;
    r[byte] |= (v << fb) as u8;
    if let Some(b) = r.get_mut(byte + 1) {
        *b &= !(REGISTER_MAX >> (8 - fb)) as u8;
        *b |= (v >> (8 - fb)) as u8;
    }
}

/// Raises a dense register to `count`; whether it changed.
fn dense_set(v: &mut [u8], index: usize, count: u8) -> bool {
    let r = &mut v[HDR..];
    if count > dense_get(r, index) {
        dense_put(r, index, count);
        true
    } else {
        false
    }
}

/// An empty sparse HyperLogLog (cached cardinality 0, valid).
fn new_sparse() -> Vec<u8> {
    let mut v = Vec::with_capacity(HDR + 2 * REGISTERS.div_ceil(XZERO_MAX_LEN));
    v.extend_from_slice(b"HYLL");
    v.push(SPARSE);
    v.resize(HDR, 0);
    let mut left = REGISTERS;
    while left > 0 {
        let n = left.min(XZERO_MAX_LEN);
        v.extend_from_slice(&xzero_op(n));
        left -= n;
    }
    v
}

fn invalidate_cache(v: &mut [u8]) {
    v[15] |= 0x80;
}

/// Whether a string holds a HyperLogLog Redis would accept.
fn is_hll(s: &[u8]) -> bool {
    s.len() >= HDR
        && &s[..4] == b"HYLL"
        && s[4] <= SPARSE
        && (s[4] != DENSE || s.len() == DENSE_SIZE)
}

/// Rewrites a sparse HyperLogLog as dense (header kept).
fn sparse_to_dense(v: &mut Vec<u8>) -> Result<(), Corrupt> {
    if v[4] == DENSE {
        return Ok(());
    }
    let mut dense = vec![0u8; DENSE_SIZE];
    dense[..HDR].copy_from_slice(&v[..HDR]);
    dense[4] = DENSE;
    let mut idx = 0usize;
    let mut p = HDR;
    while p < v.len() {
        let b = v[p];
        let (span, oplen) = op_at(v, p);
        if is_val(b) {
            if idx + span > REGISTERS {
                break;
            }
            for i in idx..idx + span {
                dense_put(&mut dense[HDR..], i, val_value(b));
            }
        }
        idx += span;
        p += oplen;
    }
    if idx != REGISTERS {
        return Err(Corrupt);
    }
    *v = dense;
    Ok(())
}

/// Raises a sparse register to `count`, splitting and merging opcodes exactly as Redis does
/// (so both produce the same bytes); turns the string dense when it must.
fn sparse_set(v: &mut Vec<u8>, index: usize, count: u8) -> Result<bool, Corrupt> {
    if count > VAL_MAX_VALUE {
        return promote(v, index, count);
    }
    let mut end = v.len();
    let mut p = HDR;
    let mut first = 0usize;
    let mut prev = None;
    let mut span = 0usize;
    let mut oplen = 1;
    while p < end {
        (span, oplen) = op_at(v, p);
        if index < first + span {
            break;
        }
        prev = Some(p);
        p += oplen;
        first += span;
    }
    if span == 0 || p + oplen > end {
        return Err(Corrupt);
    }
    let b = v[p];
    let direct = (is_val(b) && val_len(b) == 1) || (is_zero(b) && zero_len(b) == 1);
    if is_val(b) && val_value(b) >= count {
        return Ok(false);
    }
    if direct {
        v[p] = val_op(count, 1);
    } else {
        // Split the opcode around the register: at most XZERO-VAL-XZERO.
        let mut seq = [0u8; 5];
        let mut n = 0;
        let last = first + span - 1;
        let run = |seq: &mut [u8; 5], n: &mut usize, len: usize| {
            if is_val(b) {
                seq[*n] = val_op(val_value(b), len);
                *n += 1;
            } else if len > ZERO_MAX_LEN {
                seq[*n..*n + 2].copy_from_slice(&xzero_op(len));
                *n += 2;
            } else {
                seq[*n] = (len - 1) as u8;
                *n += 1;
            }
        };
        if index != first {
            run(&mut seq, &mut n, index - first);
        }
        seq[n] = val_op(count, 1);
        n += 1;
        if index != last {
            run(&mut seq, &mut n, last - index);
        }
        if n > oplen && v.len() + (n - oplen) > SPARSE_MAX.load(Ordering::Relaxed) {
            return promote(v, index, count);
        }
        v.splice(p..p + oplen, seq[..n].iter().copied());
        end = v.len();
    }
    // Merge adjacent VAL opcodes of one value, scanning up to five opcodes from the one
    // before the change.
    let mut p = prev.unwrap_or(HDR);
    let mut scan = 5;
    while p < end && scan > 0 {
        scan -= 1;
        let b = v[p];
        if is_xzero(b) {
            p += 2;
            continue;
        }
        if is_zero(b) {
            p += 1;
            continue;
        }
        if p + 1 < end && is_val(v[p + 1]) {
            let next = v[p + 1];
            let len = val_len(b) + val_len(next);
            if val_value(b) == val_value(next) && len <= VAL_MAX_LEN {
                v[p + 1] = val_op(val_value(b), len);
                v.remove(p);
                end -= 1;
                continue;
            }
        }
        p += 1;
    }
    invalidate_cache(v);
    Ok(true)
}

fn promote(v: &mut Vec<u8>, index: usize, count: u8) -> Result<bool, Corrupt> {
    sparse_to_dense(v)?;
    dense_set(v, index, count);
    Ok(true)
}

/// Adds one element; whether a register changed.
fn add(v: &mut Vec<u8>, ele: &[u8]) -> Result<bool, Corrupt> {
    let (index, count) = pattern(ele);
    if v[4] == DENSE {
        Ok(dense_set(v, index, count))
    } else {
        sparse_set(v, index, count)
    }
}

/// Raises `max[i]` to each register of a HyperLogLog.
fn merge_into(max: &mut [u8; REGISTERS], v: &[u8]) -> Result<(), Corrupt> {
    if v[4] == DENSE {
        for (i, m) in max.iter_mut().enumerate() {
            *m = (*m).max(dense_get(&v[HDR..], i));
        }
        return Ok(());
    }
    let mut i = 0usize;
    let mut p = HDR;
    while p < v.len() {
        let b = v[p];
        let (span, oplen) = op_at(v, p);
        if is_val(b) {
            if i + span > REGISTERS {
                break;
            }
            for m in &mut max[i..i + span] {
                *m = (*m).max(val_value(b));
            }
        }
        i += span;
        p += oplen;
    }
    if i != REGISTERS {
        return Err(Corrupt);
    }
    Ok(())
}

/// How many registers hold each value.
fn histogram(v: &[u8]) -> Result<[u32; 64], Corrupt> {
    let mut h = [0u32; 64];
    if v[4] == DENSE {
        for i in 0..REGISTERS {
            h[dense_get(&v[HDR..], i) as usize] += 1;
        }
        return Ok(h);
    }
    let mut idx = 0usize;
    let mut p = HDR;
    while p < v.len() {
        let b = v[p];
        let (span, oplen) = op_at(v, p);
        let value = if is_val(b) { val_value(b) as usize } else { 0 };
        h[value] += span as u32;
        idx += span;
        p += oplen;
    }
    if idx != REGISTERS {
        return Err(Corrupt);
    }
    Ok(h)
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if prev == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        // `powf` is the C library's `pow`, as in Redis: the same doubles, the same answer.
        z -= (1.0 - x).powf(2.0) * y;
        if prev == z {
            return z / 3.0;
        }
    }
}

/// The cardinality estimate of a register histogram (Ertl, arXiv:1702.01284).
fn estimate(h: &[u32; 64]) -> u64 {
    let m = REGISTERS as f64;
    let mut z = m * tau((m - h[Q as usize + 1] as f64) / m);
    for j in (1..=Q as usize).rev() {
        z += h[j] as f64;
        z *= 0.5;
    }
    z += m * sigma(h[0] as f64 / m);
    (ALPHA_INF * m * m / z).round() as u64
}

/// The HyperLogLog at a key, copied out for reading: `Ok(None)` absent, `Err` replied
/// (another type, or a string that is not a HyperLogLog).
fn read(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Option<Bytes>, Replied> {
    match get_str(ctx, key)? {
        None => Ok(None),
        Some(s) if is_hll(&s) => Ok(Some(s)),
        Some(_) => {
            ctx.out.err(NOT_HLL);
            Err(Replied)
        }
    }
}

/// Takes a key's HyperLogLog out of its entry to change it in place (no copy when the
/// value is not shared); `put_back` returns it.
fn take(ctx: &mut Ctx<'_>, key: &[u8]) -> Vec<u8> {
    match ctx.db.get(key, ctx.now).map(|e| &mut e.value) {
        Some(Value::Str(s)) => Vec::from(std::mem::take(s)),
        _ => unreachable!("checked by read"),
    }
}

fn put_back(ctx: &mut Ctx<'_>, key: &[u8], v: Vec<u8>, changed: bool) {
    if let Some(e) = ctx.db.get(key, ctx.now) {
        e.value = Value::Str(Bytes::from(v));
        if changed {
            e.str_enc = StrEnc::Raw;
        }
    }
    if changed {
        ctx.db.touch_watched(key);
    }
}

fn pfadd(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    let Ok(cur) = read(ctx, key) else { return };
    let (mut v, mut updated) = match cur {
        None => {
            ctx.db
                .set_entry(key, Entry::string(Bytes::new(), ctx.now, StrEnc::Raw));
            (new_sparse(), true)
        }
        Some(_) => {
            drop(cur);
            (take(ctx, key), false)
        }
    };
    let mut corrupt = false;
    for ele in req.args().skip(2) {
        match add(&mut v, ele) {
            Ok(changed) => updated |= changed,
            Err(Corrupt) => {
                corrupt = true;
                break;
            }
        }
    }
    if updated && !corrupt {
        invalidate_cache(&mut v);
    }
    put_back(ctx, key, v, updated);
    if corrupt {
        ctx.out.err(INVALID)
    } else {
        ctx.out.int(updated as i64)
    }
}

fn pfcount(ctx: &mut Ctx<'_>, req: &Request) {
    if req.len() > 2 {
        // The cardinality of the union, with nothing cached.
        let mut max = Box::new([0u8; REGISTERS]);
        for key in req.args().skip(1) {
            let Ok(cur) = read(ctx, key) else { return };
            if let Some(s) = cur {
                if merge_into(&mut max, &s).is_err() {
                    return ctx.out.err(INVALID);
                }
            }
        }
        let mut h = [0u32; 64];
        for &r in max.iter() {
            h[r as usize] += 1;
        }
        return ctx.out.int(estimate(&h) as i64);
    }
    let key = req.arg(1);
    let Ok(cur) = read(ctx, key) else { return };
    let Some(s) = cur else {
        return ctx.out.int(0);
    };
    if s[15] & 0x80 == 0 {
        let card = u64::from_le_bytes(s[8..16].try_into().expect("8 bytes"));
        return ctx.out.int(card as i64);
    }
    let Ok(h) = histogram(&s) else {
        return ctx.out.err(INVALID);
    };
    let card = estimate(&h);
    drop(s);
    // Cache it: a HyperLogLog is a string, so this changes the value (as in Redis).
    let mut v = take(ctx, key);
    v[8..16].copy_from_slice(&card.to_le_bytes());
    put_back(ctx, key, v, true);
    ctx.out.int(card as i64)
}

fn pfmerge(ctx: &mut Ctx<'_>, req: &Request) {
    let mut max = Box::new([0u8; REGISTERS]);
    let mut dense = false;
    for key in req.args().skip(1) {
        let Ok(cur) = read(ctx, key) else { return };
        if let Some(s) = cur {
            dense |= s[4] == DENSE;
            if merge_into(&mut max, &s).is_err() {
                return ctx.out.err(INVALID);
            }
        }
    }
    let key = req.arg(1);
    let mut v = if ctx.db.get(key, ctx.now).is_some() {
        take(ctx, key)
    } else {
        ctx.db
            .set_entry(key, Entry::string(Bytes::new(), ctx.now, StrEnc::Raw));
        new_sparse()
    };
    if dense && sparse_to_dense(&mut v).is_err() {
        put_back(ctx, key, v, false);
        return ctx.out.err(INVALID);
    }
    for (i, &m) in max.iter().enumerate() {
        if m == 0 {
            continue;
        }
        if v[4] == DENSE {
            dense_set(&mut v, i, m);
        } else {
            // Redis goes on past a corrupt destination here; so do we.
            let _ = sparse_set(&mut v, i, m);
        }
    }
    invalidate_cache(&mut v);
    put_back(ctx, key, v, true);
    ctx.out.ok()
}

fn pfdebug(ctx: &mut Ctx<'_>, req: &Request) {
    let sub = req.arg(1);
    let key = req.arg(2);
    let Ok(cur) = read(ctx, key) else { return };
    let Some(s) = cur else {
        return ctx.out.err("ERR The specified key does not exist");
    };
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    if is("getreg") || is("todense") {
        let sparse = s[4] == SPARSE;
        drop(s);
        let mut v = take(ctx, key);
        if sparse && sparse_to_dense(&mut v).is_err() {
            put_back(ctx, key, v, false);
            return ctx.out.err(INVALID);
        }
        if is("todense") {
            put_back(ctx, key, v, sparse);
            return ctx.out.int(sparse as i64);
        }
        ctx.out.array(REGISTERS);
        for i in 0..REGISTERS {
            ctx.out.int(dense_get(&v[HDR..], i) as i64);
        }
        put_back(ctx, key, v, sparse);
    } else if is("decode") {
        if s[4] != SPARSE {
            return ctx.out.err("ERR HLL encoding is not sparse");
        }
        let mut text = String::new();
        let mut p = HDR;
        while p < s.len() {
            let b = s[p];
            let (span, oplen) = op_at(&s, p);
            let item = if is_zero(b) {
                format!("z:{span} ")
            } else if is_xzero(b) {
                format!("Z:{span} ")
            } else {
                format!("v:{},{span} ", val_value(b))
            };
            text.push_str(&item);
            p += oplen;
        }
        ctx.out.bulk(text.trim_matches(' ').as_bytes())
    } else if is("encoding") {
        ctx.out
            .simple(if s[4] == DENSE { "dense" } else { "sparse" })
    } else {
        ctx.out.err(&format!(
            "ERR Unknown PFDEBUG subcommand '{}'",
            String::from_utf8_lossy(sub)
        ))
    }
}

/// PFSELFTEST: the dense register packing over every register, and sparse and dense
/// representations fed the same elements giving the same registers and estimates within
/// the expected error.
pub fn selftest() -> Result<(), String> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut regs = vec![0u8; DENSE_SIZE - HDR];
    let mut want = vec![0u8; REGISTERS];
    for _ in 0..4 {
        for (i, w) in want.iter_mut().enumerate() {
            *w = (rand() & REGISTER_MAX as u64) as u8;
            dense_put(&mut regs, i, *w);
        }
        for (i, &w) in want.iter().enumerate() {
            let got = dense_get(&regs, i);
            if got != w {
                return Err(format!(
                    "ERR TESTFAILED Register error, count: {i} should be {w}, but is {got}"
                ));
            }
        }
    }
    let mut sparse = new_sparse();
    let mut dense = new_sparse();
    sparse_to_dense(&mut dense).map_err(|_| "ERR TESTFAILED dense conversion".to_string())?;
    let rel_err = 1.04 / (REGISTERS as f64).sqrt();
    let mut checkpoint = 1u64;
    for j in 1..=100_000u64 {
        let ele = rand().to_le_bytes();
        let a = add(&mut sparse, &ele).map_err(|_| "ERR TESTFAILED corrupt sparse".to_string())?;
        let b = add(&mut dense, &ele).map_err(|_| "ERR TESTFAILED corrupt dense".to_string())?;
        if a != b {
            return Err(format!("ERR TESTFAILED sparse and dense disagree at {j}"));
        }
        if j == checkpoint {
            let hs = histogram(&sparse).map_err(|_| "ERR TESTFAILED corrupt sparse".to_string())?;
            let hd = histogram(&dense).map_err(|_| "ERR TESTFAILED corrupt dense".to_string())?;
            let (es, ed) = (estimate(&hs), estimate(&hd));
            if es != ed {
                return Err(format!("ERR TESTFAILED sparse {es} and dense {ed} at {j}"));
            }
            let maxerr = (rel_err * 6.0 * j as f64).max(1.0);
            if (ed as f64 - j as f64).abs() > maxerr {
                return Err(format!(
                    "ERR TESTFAILED too big error. card:{j} abserr:{}",
                    (ed as f64 - j as f64).abs()
                ));
            }
            checkpoint *= 10;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_sparse_is_redis_empty_hll() {
        let v = new_sparse();
        assert_eq!(v.len(), 18);
        assert_eq!(&v[16..], &[0x7f, 0xff]);
        assert_eq!(histogram(&v).unwrap()[0], REGISTERS as u32);
        assert_eq!(estimate(&histogram(&v).unwrap()), 0);
    }

    #[test]
    fn selftest_passes() {
        selftest().unwrap();
    }
}
