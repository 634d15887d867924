//! The key type of the keyspace tables: short keys live inside the table's bucket itself,
//! so finding one compares bytes already in the cache line the lookup loaded, and costs no
//! allocation of its own. Longer keys are boxed.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;

/// Keys up to this many bytes are stored inline (the enum is 24 bytes either way).
pub const INLINE: usize = 22;

/// A stored key. It hashes, compares and borrows as its bytes, so tables are looked up
/// with a plain `&[u8]`.
#[derive(Clone)]
pub enum Key {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Key {
    /// The key's bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, buf } => &buf[..*len as usize],
            Key::Heap(b) => b,
        }
    }

    /// The key as `Bytes` (a copy), for replies and messages.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.as_slice())
    }
}

impl From<&[u8]> for Key {
    #[inline]
    fn from(s: &[u8]) -> Self {
        if s.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..s.len()].copy_from_slice(s);
            Key::Inline {
                len: s.len() as u8,
                buf,
            }
        } else {
            Key::Heap(s.into())
        }
    }
}

impl Deref for Key {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Key {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for Key {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Hash for Key {
    // Exactly as `[u8]` hashes, which `Borrow<[u8]>` lookups require.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

/// A lookup by bytes that hashes exactly as a `Key` (and `[u8]`) does, with the hashing
/// always inlined where it is used: a plain `&[u8]` probe goes through `[u8]`'s generic
/// `Hash`, which the compiler may leave out of line on the GET path (seen: 38 instructions a
/// lookup, depending on how the crate was split for code generation).
#[derive(Clone, Copy)]
pub struct Probe<'a>(pub &'a [u8]);

impl Hash for Probe<'_> {
    #[inline(always)]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // `[u8]`'s hash: the length, then the bytes.
        state.write_usize(self.0.len());
        state.write(self.0);
    }
}

impl hashbrown::Equivalent<Key> for Probe<'_> {
    #[inline]
    fn equivalent(&self, key: &Key) -> bool {
        key.as_slice() == self.0
    }
}

impl PartialEq for Key {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl PartialEq<[u8]> for Key {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<Bytes> for Key {
    fn eq(&self, other: &Bytes) -> bool {
        self.as_slice() == &other[..]
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Bytes::copy_from_slice(self.as_slice()), f)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_hashes_as_key_and_bytes() {
        use std::hash::BuildHasher;
        let b = hashbrown::DefaultHashBuilder::default();
        for k in [&b""[..], b"a", b"key:000123", &[0u8; 100][..]] {
            let h = b.hash_one(super::Key::from(k));
            assert_eq!(h, b.hash_one(super::Probe(k)));
            assert_eq!(h, b.hash_one(k));
        }
    }

    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn h<T: Hash + ?Sized>(t: &T) -> u64 {
        let mut s = DefaultHasher::new();
        t.hash(&mut s);
        s.finish()
    }

    #[test]
    fn inline_and_heap_keys_behave_as_their_bytes() {
        assert_eq!(std::mem::size_of::<Key>(), 24);
        // A table bucket: 24-byte key, 40-byte value, expiry, access second, LFU counter.
        assert_eq!(std::mem::size_of::<super::super::Value>(), 40);
        assert_eq!(std::mem::size_of::<(Key, super::super::Entry)>(), 80);
        for s in [
            &b""[..],
            b"a",
            b"key:000000012345",
            &[7u8; 22],
            &[9u8; 23],
            &[1u8; 300],
        ] {
            let k = Key::from(s);
            assert_eq!(&*k, s);
            assert_eq!(h(&k), h(s));
            assert_eq!(k.to_bytes(), Bytes::copy_from_slice(s));
            assert_eq!(matches!(k, Key::Inline { .. }), s.len() <= INLINE);
        }
        let mut m = hashbrown::HashMap::new();
        m.insert(Key::from(&b"short"[..]), 1);
        m.insert(Key::from(&[b'x'; 40][..]), 2);
        assert_eq!(m.get(&b"short"[..]), Some(&1));
        assert_eq!(m.get(&[b'x'; 40][..]), Some(&2));
        assert_eq!(m.get(&b"shor"[..]), None);
    }
}
