//! DEBUG DIGEST and DEBUG DIGEST-VALUE: Redis's dataset fingerprint, computed the same way
//! (SHA-1 mixing, unordered collections folded with XOR), so that the same data gives the
//! same digest here as in redis-server, whatever its encoding or the order of its elements.
//! Test suites compare digests before and after a reload, a restore or a resync.

use super::{Db, Entry, Value};

/// A 20-byte digest.
pub type Digest = [u8; 20];

fn sha1(data: &[u8]) -> Digest {
    sha1_smol::Sha1::from(data).digest().bytes()
}

/// Folds the hash of `data` into `d` with XOR (order-independent).
fn xor(d: &mut Digest, data: &[u8]) {
    for (a, b) in d.iter_mut().zip(sha1(data)) {
        *a ^= b;
    }
}

/// Folds `data` into `d` so that order matters: XOR its hash in, then hash the result.
fn mix(d: &mut Digest, data: &[u8]) {
    xor(d, data);
    *d = sha1(&d[..]);
}

/// Redis's object type numbers (`OBJ_STRING` ...), mixed in first.
fn type_code(v: &Value) -> u32 {
    match v {
        Value::Str(_) => 0,
        Value::List(_) => 1,
        Value::Set(_) => 2,
        Value::ZSet(_) => 3,
        Value::Hash(_) => 4,
        Value::Stream(_) => 6,
    }
}

/// The digest of one value (and whether it has a TTL), folded into `d`.
pub fn mix_value(d: &mut Digest, e: &Entry) {
    mix(d, &type_code(&e.value).to_be_bytes());
    match &e.value {
        Value::Str(s) => mix(d, s),
        Value::List(l) => {
            for x in l {
                mix(d, x);
            }
        }
        Value::Set(s) => {
            for x in s.iter() {
                xor(d, x);
            }
        }
        Value::ZSet(z) => {
            for (member, score) in z.dict.iter() {
                let mut el = [0u8; 20];
                mix(&mut el, member);
                mix(&mut el, crate::out::fmt_g17(*score).as_bytes());
                xor(d, &el);
            }
        }
        Value::Hash(h) => {
            for (field, value) in h.iter() {
                let mut el = [0u8; 20];
                mix(&mut el, field);
                mix(&mut el, value);
                xor(d, &el);
            }
        }
        Value::Stream(s) => {
            for (id, fields) in &s.entries {
                mix(d, format!("{}.{}", id.ms, id.seq).as_bytes());
                for f in fields {
                    mix(d, f);
                }
            }
        }
    }
    if e.expire_at != 0 {
        xor(d, b"!!expire!!");
    }
}

/// DEBUG DIGEST-VALUE's answer for one entry (all zeros for none).
pub fn value_digest(e: Option<&Entry>) -> Digest {
    let mut d = [0u8; 20];
    if let Some(e) = e {
        mix_value(&mut d, e);
    }
    d
}

impl Db {
    /// The XOR of the hashes of every key-value digest in this database (expired keys not yet removed
    /// included, as Redis counts them), or None when it holds no key at all.
    pub fn digest_part(&self) -> Option<Digest> {
        let mut acc = [0u8; 20];
        let mut any = false;
        for t in &self.slots {
            for (k, e) in t {
                any = true;
                let mut d = [0u8; 20];
                mix(&mut d, k);
                mix_value(&mut d, e);
                xor(&mut acc, &d);
            }
        }
        any.then_some(acc)
    }
}

/// Combines per-database parts (each the XOR over every shard's [`Db::digest_part`]) into
/// DEBUG DIGEST's answer: databases in order, each announced by its number.
pub fn dataset_digest(parts: &[Option<Digest>]) -> Digest {
    let mut fin = [0u8; 20];
    for (i, p) in parts.iter().enumerate() {
        if let Some(p) = p {
            mix(&mut fin, &(i as u32).to_be_bytes());
            for (a, b) in fin.iter_mut().zip(p) {
                *a ^= b;
            }
        }
    }
    fin
}

/// A digest as Redis prints it (40 lowercase hex digits).
pub fn hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn unordered_collections_do_not_depend_on_order_and_lists_do() {
        let set = |xs: &[&str]| {
            Entry::new(
                Value::Set(Box::new(
                    xs.iter().map(|x| Bytes::from(x.to_string())).collect(),
                )),
                0,
            )
        };
        let list = |xs: &[&str]| {
            Entry::new(
                Value::List(xs.iter().map(|x| Bytes::from(x.to_string())).collect()),
                0,
            )
        };
        assert_eq!(
            value_digest(Some(&set(&["a", "b", "c"]))),
            value_digest(Some(&set(&["c", "a", "b"])))
        );
        assert_ne!(
            value_digest(Some(&list(&["a", "b"]))),
            value_digest(Some(&list(&["b", "a"])))
        );
        assert_ne!(
            value_digest(Some(&list(&["a", "b"]))),
            value_digest(Some(&set(&["a", "b"])))
        );
        let mut with_ttl = list(&["a", "b"]);
        with_ttl.expire_at = 1;
        assert_ne!(
            value_digest(Some(&with_ttl)),
            value_digest(Some(&list(&["a", "b"])))
        );
        assert_eq!(hex(&value_digest(None)), "0".repeat(40));
        assert_eq!(hex(&dataset_digest(&[None, None])), "0".repeat(40));
    }
}
