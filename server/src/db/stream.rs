//! Stream: entries by ID, consumer groups with their pending entries, and the layout Redis
//! would give the entries in its listpack nodes.
//!
//! Redis keeps a stream's entries in listpacks of at most `stream-node-max-entries` entries
//! (live and deleted) and `stream-node-max-bytes` bytes, each node starting with a "master
//! entry" whose fields later entries may share. Which entries share a node decides what
//! approximate trimming (`MAXLEN ~`, `MINID ~`) removes, since it only drops whole nodes.
//! So the nodes are modelled here, with the byte size each listpack would have (integers and
//! strings in listpack encodings, back-lengths, the master entry), and the same rules for
//! opening a node, deleting in place and dropping an emptied node: the same commands trim
//! the same entries as in Redis.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    pub fn is_zero(&self) -> bool {
        self.ms == 0 && self.seq == 0
    }

    /// The next ID, if there is one.
    pub fn incr(self) -> Option<StreamId> {
        if self.seq < u64::MAX {
            Some(StreamId::new(self.ms, self.seq + 1))
        } else if self.ms < u64::MAX {
            Some(StreamId::new(self.ms + 1, 0))
        } else {
            None
        }
    }

    /// The previous ID, if there is one.
    pub fn decr(self) -> Option<StreamId> {
        if self.seq > 0 {
            Some(StreamId::new(self.ms, self.seq - 1))
        } else if self.ms > 0 {
            Some(StreamId::new(self.ms - 1, u64::MAX))
        } else {
            None
        }
    }

    pub fn to_bytes(self) -> Bytes {
        Bytes::from(format!("{}-{}", self.ms, self.seq))
    }

    /// The 16-byte big-endian form (radix-tree keys, RDB PELs).
    pub fn encode(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.ms.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<StreamId> {
        if b.len() != 16 {
            return None;
        }
        Some(StreamId::new(
            u64::from_be_bytes(b[..8].try_into().ok()?),
            u64::from_be_bytes(b[8..].try_into().ok()?),
        ))
    }
}

/// `stream-node-max-bytes` and `stream-node-max-entries`.
pub static NODE_MAX_BYTES: AtomicUsize = AtomicUsize::new(4096);
pub static NODE_MAX_ENTRIES: AtomicUsize = AtomicUsize::new(100);
/// Applies `stream-node-max-bytes` (memory units allowed) and `stream-node-max-entries`.
pub fn set_node_limits(bytes: &str, entries: &str) {
    if let Some(b) = crate::config::parse_memory(bytes) {
        NODE_MAX_BYTES.store(b as usize, Ordering::Relaxed);
    }
    if let Ok(e) = entries.parse::<usize>() {
        NODE_MAX_ENTRIES.store(e, Ordering::Relaxed);
    }
}

/// The largest listpack Redis builds (1 GiB).
const LISTPACK_MAX: usize = 1 << 30;

/// A pending (delivered, not acknowledged) entry of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Nack {
    pub consumer: Bytes,
    pub delivery_time: u64,
    pub delivery_count: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Consumer {
    pub seen_time: u64,
    pub pel: BTreeSet<StreamId>,
}

/// Redis's "invalid entries-read" marker.
pub const INVALID_READ: i64 = -1;

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub last_id: StreamId,
    pub entries_read: i64,
    pub pel: BTreeMap<StreamId, Nack>,
    pub consumers: BTreeMap<Bytes, Consumer>,
}

impl Group {
    pub fn new(last_id: StreamId, entries_read: i64) -> Self {
        Group {
            last_id,
            entries_read,
            pel: BTreeMap::new(),
            consumers: BTreeMap::new(),
        }
    }
}

/// One listpack node as Redis would have it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The master entry's fields.
    pub fields: Vec<Bytes>,
    /// Live and deleted entries.
    pub count: u64,
    pub deleted: u64,
    /// Bytes of the entries' listpack elements (deleted ones keep theirs).
    pub entry_bytes: usize,
    /// The last entry's ID (live or deleted).
    pub last: StreamId,
}

impl Node {
    /// The listpack's total size in bytes.
    fn bytes(&self) -> usize {
        // Header (6), master entry (count, deleted, field count, fields, 0), entries, end.
        6 + int_size(self.count as i64)
            + int_size(self.deleted as i64)
            + int_size(self.fields.len() as i64)
            + self.fields.iter().map(|f| str_size(f)).sum::<usize>()
            + int_size(0)
            + self.entry_bytes
            + 1
    }
}

fn backlen(l: usize) -> usize {
    match l {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2097150 => 3,
        2097151..=268435454 => 4,
        _ => 5,
    }
}

/// A listpack integer element's size.
pub fn int_size(v: i64) -> usize {
    let enc = if (0..=127).contains(&v) {
        1
    } else if (-4096..=4095).contains(&v) {
        2
    } else if (-32768..=32767).contains(&v) {
        3
    } else if (-8_388_608..=8_388_607).contains(&v) {
        4
    } else if (i32::MIN as i64..=i32::MAX as i64).contains(&v) {
        5
    } else {
        9
    };
    enc + backlen(enc)
}

/// Whether a string is stored as an integer in a listpack (lpStringToInt64).
pub fn lp_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    if digits.first().is_none_or(|d| !(b'1'..=b'9').contains(d)) {
        return None;
    }
    rcodis_core::num::parse_i64(s)
}

/// A listpack string element's size (integers stored as such).
pub fn str_size(s: &[u8]) -> usize {
    if let Some(v) = lp_int(s) {
        return int_size(v);
    }
    let enc = if s.len() < 64 {
        1 + s.len()
    } else if s.len() < 4096 {
        2 + s.len()
    } else {
        5 + s.len()
    };
    enc + backlen(enc)
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stream {
    /// Live entries: field, value, field, value, ...
    pub entries: BTreeMap<StreamId, Vec<Bytes>>,
    /// Listpack nodes by master ID.
    pub nodes: BTreeMap<StreamId, Node>,
    pub last_id: StreamId,
    pub first_id: StreamId,
    pub max_deleted_id: StreamId,
    pub entries_added: u64,
    pub groups: BTreeMap<Bytes, Group>,
}

/// Why an append failed.
pub enum AppendError {
    /// The ID is not greater than the last one.
    Order,
    /// The fields and values are larger than a listpack can hold.
    TooLarge,
}

impl Stream {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends an entry with the given ID (checked to be above the last one).
    pub fn append(&mut self, id: StreamId, fv: Vec<Bytes>) -> Result<(), AppendError> {
        if id <= self.last_id {
            return Err(AppendError::Order);
        }
        let total: usize = fv.iter().map(|b| b.len()).sum();
        if total > LISTPACK_MAX {
            return Err(AppendError::TooLarge);
        }
        let max_bytes = match NODE_MAX_BYTES.load(Ordering::Relaxed) {
            0 => LISTPACK_MAX,
            n => n.min(LISTPACK_MAX),
        };
        let max_entries = NODE_MAX_ENTRIES.load(Ordering::Relaxed) as u64;
        let open_new = match self.nodes.last_key_value() {
            None => true,
            Some((_, n)) => {
                n.bytes() + total >= max_bytes
                    || (max_entries > 0 && n.count + n.deleted >= max_entries)
            }
        };
        if open_new {
            let fields = fv.iter().step_by(2).cloned().collect();
            self.nodes.insert(
                id,
                Node {
                    fields,
                    count: 0,
                    deleted: 0,
                    entry_bytes: 0,
                    last: id,
                },
            );
        }
        let (master, node) = self.nodes.iter_mut().next_back().expect("a tail node");
        let nfields = fv.len() / 2;
        let same = node.fields.len() == nfields
            && node
                .fields
                .iter()
                .zip(fv.iter().step_by(2))
                .all(|(a, b)| a == b);
        let mut bytes = int_size(if same { 2 } else { 0 })
            + int_size((id.ms.wrapping_sub(master.ms)) as i64)
            + int_size((id.seq.wrapping_sub(master.seq)) as i64);
        let mut lp_count = nfields as i64 + 3;
        if same {
            bytes += fv
                .iter()
                .skip(1)
                .step_by(2)
                .map(|v| str_size(v))
                .sum::<usize>();
        } else {
            bytes += int_size(nfields as i64) + fv.iter().map(|b| str_size(b)).sum::<usize>();
            lp_count += nfields as i64 + 1;
        }
        bytes += int_size(lp_count);
        node.entry_bytes += bytes;
        node.count += 1;
        node.last = id;
        self.entries.insert(id, fv);
        self.last_id = id;
        self.entries_added += 1;
        if self.entries.len() == 1 {
            self.first_id = id;
        }
        Ok(())
    }

    /// The master ID of the node holding `id`.
    fn node_of(&self, id: StreamId) -> Option<StreamId> {
        self.nodes.range(..=id).next_back().map(|(m, _)| *m)
    }

    /// Deletes one entry (marked deleted in its node; an emptied node goes). Whether it was
    /// there.
    pub fn delete(&mut self, id: StreamId) -> bool {
        if self.entries.remove(&id).is_none() {
            return false;
        }
        if let Some(m) = self.node_of(id) {
            let node = self.nodes.get_mut(&m).expect("node");
            if node.count == 1 {
                self.nodes.remove(&m);
            } else {
                node.count -= 1;
                node.deleted += 1;
            }
        }
        true
    }

    /// Re-reads the first live ID (0-0 when empty).
    pub fn refresh_first(&mut self) {
        self.first_id = self.entries.keys().next().copied().unwrap_or_default();
    }

    /// The last live ID (0-0 when empty).
    pub fn last_valid_id(&self) -> StreamId {
        self.entries.keys().next_back().copied().unwrap_or_default()
    }

    /// Trims to `maxlen` entries or to IDs from `minid` on, as Redis's streamTrim: whole
    /// nodes first; with `approx`, only whole nodes; `limit` (if not 0) bounds the entries
    /// removed through whole nodes. Returns how many entries went.
    pub fn trim(
        &mut self,
        maxlen: Option<u64>,
        minid: Option<StreamId>,
        approx: bool,
        limit: u64,
    ) -> u64 {
        let mut deleted = 0u64;
        while let Some((&master, node)) = self.nodes.first_key_value() {
            let len = self.entries.len() as u64;
            if let Some(m) = maxlen {
                if len <= m {
                    break;
                }
            }
            let entries = node.count;
            if limit > 0 && deleted + entries > limit {
                break;
            }
            let remove = match (maxlen, minid) {
                (Some(m), _) => len - entries >= m,
                (None, Some(min)) => node.last < min,
                _ => false,
            };
            if remove {
                let next = self.nodes.range(master..).nth(1).map(|(k, _)| *k);
                let gone: Vec<StreamId> = match next {
                    Some(n) => self.entries.range(master..n).map(|(k, _)| *k).collect(),
                    None => self.entries.range(master..).map(|(k, _)| *k).collect(),
                };
                for k in gone {
                    self.entries.remove(&k);
                }
                self.nodes.remove(&master);
                deleted += entries;
                continue;
            }
            if approx {
                break;
            }
            // Mark entries of this node deleted, in order, until the target is reached.
            let next = self.nodes.range(master..).nth(1).map(|(k, _)| *k);
            let ids: Vec<StreamId> = match next {
                Some(n) => self.entries.range(master..n).map(|(k, _)| *k).collect(),
                None => self.entries.range(master..).map(|(k, _)| *k).collect(),
            };
            let mut from_node = 0u64;
            for id in ids {
                let stop = match (maxlen, minid) {
                    (Some(m), _) => self.entries.len() as u64 <= m,
                    (None, Some(min)) => id >= min,
                    _ => true,
                };
                if stop {
                    break;
                }
                self.entries.remove(&id);
                from_node += 1;
            }
            let node = self.nodes.get_mut(&master).expect("node");
            node.count -= from_node;
            node.deleted += from_node;
            deleted += from_node;
            break;
        }
        self.refresh_first();
        deleted
    }

    /// Whether an XDEL tombstone lies in `start..=end` (Redis's streamRangeHasTombstones).
    pub fn has_tombstones(&self, start: Option<StreamId>, end: Option<StreamId>) -> bool {
        if self.entries.is_empty() || self.max_deleted_id.is_zero() {
            return false;
        }
        if self.first_id > self.max_deleted_id {
            return false;
        }
        let s = start.unwrap_or_default();
        let e = end.unwrap_or(StreamId::MAX);
        s <= self.max_deleted_id && self.max_deleted_id <= e
    }

    /// How many entries were ever added up to `id`, if that can be known
    /// (streamEstimateDistanceFromFirstEverEntry).
    pub fn distance_from_first(&self, id: StreamId) -> i64 {
        if self.entries_added == 0 {
            return 0;
        }
        if self.entries.is_empty() && id <= self.last_id {
            return self.entries_added as i64;
        }
        match id.cmp(&self.last_id) {
            std::cmp::Ordering::Equal => return self.entries_added as i64,
            std::cmp::Ordering::Greater => return INVALID_READ,
            _ => {}
        }
        if self.max_deleted_id.is_zero() || self.max_deleted_id < self.first_id {
            match id.cmp(&self.first_id) {
                std::cmp::Ordering::Less => {
                    return (self.entries_added - self.entries.len() as u64) as i64
                }
                std::cmp::Ordering::Equal => {
                    return (self.entries_added - self.entries.len() as u64 + 1) as i64
                }
                _ => {}
            }
        }
        INVALID_READ
    }

    /// Rough heap size.
    pub fn mem_size(&self) -> usize {
        self.entries
            .values()
            .map(|fv| fv.iter().map(|b| b.len() + 16).sum::<usize>() + 48)
            .sum::<usize>()
            + self.nodes.len() * 64
            + self
                .groups
                .values()
                .map(|g| 64 + g.pel.len() * 64 + g.consumers.len() * 64)
                .sum::<usize>()
    }
}

// --- RDB (RDB_TYPE_STREAM_LISTPACKS_2, what Redis 7.0 writes) -----------------------------

pub const RDB_TYPE_STREAM_LISTPACKS: u8 = 15;
pub const RDB_TYPE_STREAM_LISTPACKS_2: u8 = 19;
pub const RDB_TYPE_STREAM_LISTPACKS_3: u8 = 21;

fn lp_put_backlen(out: &mut Vec<u8>, l: usize) {
    // The element's length written backwards, 7 bits per byte, high bit on all but the
    // first byte read (the last written).
    let mut v = l;
    let mut bytes = Vec::with_capacity(5);
    loop {
        bytes.push((v & 127) as u8);
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    // Highest bits first (plain), then the rest with the continuation bit.
    for (i, b) in bytes.iter().rev().enumerate() {
        out.push(if i == 0 { *b } else { *b | 128 });
    }
}

fn lp_put_int(out: &mut Vec<u8>, v: i64) {
    let start = out.len();
    if (0..=127).contains(&v) {
        out.push(v as u8);
    } else if (-4096..=4095).contains(&v) {
        let u = (v as u64) & 0x1fff;
        out.push(0xc0 | (u >> 8) as u8);
        out.push(u as u8);
    } else if (-32768..=32767).contains(&v) {
        out.push(0xf1);
        out.extend_from_slice(&(v as i16).to_le_bytes());
    } else if (-8_388_608..=8_388_607).contains(&v) {
        out.push(0xf2);
        out.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
    } else if (i32::MIN as i64..=i32::MAX as i64).contains(&v) {
        out.push(0xf3);
        out.extend_from_slice(&(v as i32).to_le_bytes());
    } else {
        out.push(0xf4);
        out.extend_from_slice(&v.to_le_bytes());
    }
    let l = out.len() - start;
    lp_put_backlen(out, l);
}

fn lp_put_str(out: &mut Vec<u8>, s: &[u8]) {
    if let Some(v) = lp_int(s) {
        return lp_put_int(out, v);
    }
    let start = out.len();
    if s.len() < 64 {
        out.push(0x80 | s.len() as u8);
    } else if s.len() < 4096 {
        out.push(0xe0 | (s.len() >> 8) as u8);
        out.push(s.len() as u8);
    } else {
        out.push(0xf0);
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(s);
    let l = out.len() - start;
    lp_put_backlen(out, l);
}

/// A listpack of the given elements (already encoded), with its header and end.
fn listpack(elements: &[u8], count: usize) -> Vec<u8> {
    let total = 6 + elements.len() + 1;
    let mut lp = Vec::with_capacity(total);
    lp.extend_from_slice(&(total as u32).to_le_bytes());
    lp.extend_from_slice(&(count.min(65535) as u16).to_le_bytes());
    lp.extend_from_slice(elements);
    lp.push(0xff);
    lp
}

/// The stream's part of an RDB value (after the type byte): nodes of live entries (up to
/// 100 per node, each starting its own master entry), metadata, groups.
pub fn rdb_encode(s: &Stream, out: &mut Vec<u8>) {
    use super::dump::{put_len, put_str};
    let ids: Vec<(&StreamId, &Vec<Bytes>)> = s.entries.iter().collect();
    let chunks: Vec<&[(&StreamId, &Vec<Bytes>)]> = ids.chunks(100).collect();
    put_len(out, chunks.len() as u64);
    for chunk in chunks {
        let (master, first) = chunk[0];
        let fields: Vec<&Bytes> = first.iter().step_by(2).collect();
        let mut el = Vec::new();
        let mut n = 0usize;
        lp_put_int(&mut el, chunk.len() as i64);
        lp_put_int(&mut el, 0);
        lp_put_int(&mut el, fields.len() as i64);
        for f in &fields {
            lp_put_str(&mut el, f);
        }
        lp_put_int(&mut el, 0);
        n += 4 + fields.len();
        for (id, fv) in chunk {
            let nf = fv.len() / 2;
            let same = nf == fields.len()
                && fields
                    .iter()
                    .zip(fv.iter().step_by(2))
                    .all(|(a, b)| *a == b);
            lp_put_int(&mut el, if same { 2 } else { 0 });
            lp_put_int(&mut el, id.ms.wrapping_sub(master.ms) as i64);
            lp_put_int(&mut el, id.seq.wrapping_sub(master.seq) as i64);
            n += 3;
            let mut lp_count = nf as i64 + 3;
            if same {
                for v in fv.iter().skip(1).step_by(2) {
                    lp_put_str(&mut el, v);
                }
                n += nf;
            } else {
                lp_put_int(&mut el, nf as i64);
                for b in fv.iter() {
                    lp_put_str(&mut el, b);
                }
                n += 1 + 2 * nf;
                lp_count += nf as i64 + 1;
            }
            lp_put_int(&mut el, lp_count);
            n += 1;
        }
        put_str(out, &master.encode());
        put_str(out, &listpack(&el, n));
    }
    put_len(out, s.entries.len() as u64);
    for id in [s.last_id, s.first_id, s.max_deleted_id] {
        put_len(out, id.ms);
        put_len(out, id.seq);
    }
    put_len(out, s.entries_added);
    put_len(out, s.groups.len() as u64);
    for (name, g) in &s.groups {
        put_str(out, name);
        put_len(out, g.last_id.ms);
        put_len(out, g.last_id.seq);
        put_len(out, g.entries_read as u64);
        put_len(out, g.pel.len() as u64);
        for (id, n) in &g.pel {
            out.extend_from_slice(&id.encode());
            out.extend_from_slice(&n.delivery_time.to_le_bytes());
            put_len(out, n.delivery_count);
        }
        put_len(out, g.consumers.len() as u64);
        for (cname, c) in &g.consumers {
            put_str(out, cname);
            out.extend_from_slice(&c.seen_time.to_le_bytes());
            put_len(out, c.pel.len() as u64);
            for id in &c.pel {
                out.extend_from_slice(&id.encode());
            }
        }
    }
}

/// Reads the entries of one stream listpack node into `s` (as Redis lays them out: master
/// entry, then flags, ID deltas, optional fields, values, lp-count).
pub fn load_node(s: &mut Stream, master: StreamId, elems: &[Bytes]) -> Option<()> {
    let int = |b: &Bytes| rcodis_core::num::parse_i64(b);
    let mut it = elems.iter();
    let count = int(it.next()?)?;
    let deleted = int(it.next()?)?;
    let nf = int(it.next()?)? as usize;
    let fields: Vec<Bytes> = (0..nf).map(|_| it.next().cloned()).collect::<Option<_>>()?;
    if int(it.next()?)? != 0 {
        return None;
    }
    let mut node = Node {
        fields: fields.clone(),
        count: count as u64,
        deleted: deleted as u64,
        entry_bytes: 0,
        last: master,
    };
    let mut live = 0;
    while let Some(flags) = it.next() {
        let flags = int(flags)?;
        let ms = master.ms.wrapping_add(int(it.next()?)? as u64);
        let seq = master.seq.wrapping_add(int(it.next()?)? as u64);
        let id = StreamId::new(ms, seq);
        let same = flags & 2 != 0;
        let mut bytes = int_size(flags)
            + int_size(ms.wrapping_sub(master.ms) as i64)
            + int_size(seq.wrapping_sub(master.seq) as i64);
        let mut fv = Vec::new();
        if same {
            for f in &fields {
                let v = it.next()?.clone();
                bytes += str_size(&v);
                fv.push(f.clone());
                fv.push(v);
            }
        } else {
            let n = int(it.next()?)? as usize;
            bytes += int_size(n as i64);
            for _ in 0..2 * n {
                let b = it.next()?.clone();
                bytes += str_size(&b);
                fv.push(b);
            }
        }
        let lp_count = it.next()?;
        bytes += str_size(lp_count);
        node.entry_bytes += bytes;
        node.last = id;
        if flags & 1 == 0 {
            s.entries.insert(id, fv);
            live += 1;
        }
    }
    if live != count {
        return None;
    }
    s.nodes.insert(master, node);
    Some(())
}
