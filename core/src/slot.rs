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
    if let Some(open) = memchr::memchr(b'{', key) {
        let rest = &key[open + 1..];
        if let Some(close) = memchr::memchr(b'}', rest) {
            return &rest[..close];
        }
    }
    key
}

/// Whether the key carries a hash tag (so that siblings sharing it move together).
#[inline]
pub fn has_tag(key: &[u8]) -> bool {
    hash_tag(key).len() != key.len()
}

/// CRC-32/IEEE of the key's hash tag (or of the whole key).
#[inline]
pub fn tag_crc(key: &[u8]) -> u32 {
    crc32fast::hash(hash_tag(key))
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
    fn shard_mapping() {
        assert_eq!(shard_of_slot(579, 2), 1);
        assert_eq!(shard_of_slot(870, 2), 0);
        assert_eq!(shard_of_slot(5, 0), 0);
    }
}
