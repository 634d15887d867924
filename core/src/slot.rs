//! Key → slot, exactly as Codis computes it (codis-spec §1).
//!
//! The hash tag is the bytes between the first `{` and the first `}` after it; when both
//! exist the tag is hashed even if it is empty (Codis's rule, unlike Redis Cluster's).

/// Number of slots in a Codis cluster.
pub const NUM_SLOTS: usize = 1024;

/// A slot number in `0..NUM_SLOTS`.
pub type Slot = u16;

/// The bytes that decide a key's slot: its hash tag if it has one, else the whole key.
#[inline]
pub fn hash_tag(key: &[u8]) -> &[u8] {
    // Keys are usually short: eight bytes at a time beats memchr's setup cost there.
    let find = |hay: &[u8], b: u8| -> Option<usize> {
        if hay.len() < 64 {
            find_short(hay, b)
        } else {
            memchr::memchr(b, hay)
        }
    };
    if let Some(open) = find(key, b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = find(rest, b'}') {
            return &rest[..close];
        }
    }
    key
}

/// The first `b` in a short slice, a word of eight bytes at a time (SWAR: a byte of
/// `w ^ b*0x01..01` is zero exactly where `b` is; the classic has-zero-byte test finds the
/// first such byte, the lowest set high bit, without false positives below it).
#[inline]
fn find_short(hay: &[u8], b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pat = LO * b as u64;
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("eight bytes")) ^ pat;
        let z = w.wrapping_sub(LO) & !w & HI;
        if z != 0 {
            return Some(base + (z.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == b)
        .map(|i| base + i)
}

/// Whether the key carries a hash tag (so that siblings sharing it move together).
#[inline]
pub fn has_tag(key: &[u8]) -> bool {
    hash_tag(key).len() != key.len()
}

/// Slicing-by-8 tables for CRC-32/IEEE (reflected, polynomial 0xEDB88320), built at compile
/// time. Keys are short; for them this beats crc32fast, which re-checks CPU features on every
/// call and has no short-input fast path. Long inputs go to crc32fast's SIMD code.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
};

/// CRC-32/IEEE (the same function as `crc32fast::hash`, zlib's and Go's `ChecksumIEEE`).
#[inline]
pub fn crc32(data: &[u8]) -> u32 {
    if data.len() > 128 {
        return crc32fast::hash(data);
    }
    let t = &CRC_TABLES;
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ b as u32) & 0xff) as usize];
    }
    !crc
}

/// CRC-32/IEEE of the key's hash tag (or of the whole key).
#[inline]
pub fn tag_crc(key: &[u8]) -> u32 {
    crc32(hash_tag(key))
}

/// The slot a key lives in.
#[inline]
pub fn slot_of(key: &[u8]) -> Slot {
    (tag_crc(key) % NUM_SLOTS as u32) as Slot
}

/// The shard of a thread-per-core process that owns a slot.
#[inline]
pub fn shard_of_slot(slot: Slot, nr_shards: usize) -> usize {
    slot as usize % nr_shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_short_matches_a_plain_scan() {
        let samples: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"{".to_vec(),
            b"abcdefg{".to_vec(),
            b"abcdefgh{".to_vec(),
            b"key:000000012345".to_vec(),
            b"\x7b\xfb\x7a\x7c{{}}".to_vec(),
            (0u8..=255).collect(),
            vec![0xfb; 40],
            b"0123456789012345678901234567890{x}".to_vec(),
        ];
        for s in &samples {
            for b in [b'{', b'}', 0xfb, 0, b'x'] {
                for start in 0..s.len().min(9) {
                    let hay = &s[start..s.len().min(start + 63)];
                    assert_eq!(
                        find_short(hay, b),
                        hay.iter().position(|&c| c == b),
                        "{hay:?} {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn codis_vectors() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(slot_of(b"a"), 579);
        assert_eq!(slot_of(b"b"), 1017);
        assert_eq!(slot_of(b"c"), 879);
        assert_eq!(slot_of(b"foo"), 289);
        assert_eq!(tag_crc(b"{user1000}.following"), 0x125a_db66);
        assert_eq!(slot_of(b"{user1000}.following"), 870);
        assert_eq!(slot_of(b"{user1000}.followers"), 870);
    }

    #[test]
    fn tag_rules() {
        assert_eq!(hash_tag(b"foo{}{bar}"), b"");
        assert_eq!(slot_of(b"foo{}{bar}"), 0);
        assert_eq!(slot_of(b"{}abc"), 0);
        assert_eq!(slot_of(b"abc{}def"), 0);
        assert_eq!(slot_of(b""), 0);
        assert_eq!(hash_tag(b"}a{b}"), b"b");
        assert_eq!(slot_of(b"}a{b}"), 1017);
        assert_eq!(hash_tag(b"a{b"), b"a{b");
        assert_eq!(slot_of(b"a{b"), 76);
        assert_eq!(hash_tag(b"{{{abc1}abc2}"), b"{{abc1");
        assert_eq!(hash_tag(b"abc}{123}456"), b"123");
        assert!(has_tag(b"{x}y"));
        assert!(!has_tag(b"xy"));
        assert!(has_tag(b"{x}"));
    }

    #[test]
    fn table_crc_matches_crc32fast() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(
                crc32(&data[..len]),
                crc32fast::hash(&data[..len]),
                "len {len}"
            );
        }
    }

    #[test]
    fn shard_mapping() {
        assert_eq!(shard_of_slot(579, 2), 1);
        assert_eq!(shard_of_slot(870, 2), 0);
        assert_eq!(shard_of_slot(5, 0), 0);
    }
}
