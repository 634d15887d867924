//! Command handlers, one file per family. A handler is a synchronous function over one
//! database of one shard (or a temporary database assembled by a multi-shard operation); it
//! writes its reply into the context's [`Out`]. No I/O, no awaits.

pub mod bitfield;
pub mod cmsgpack;
pub mod function;
pub mod geo;
pub mod hashes;
pub mod hll;
pub mod keys;
pub mod lists;
pub mod lua_struct;
pub mod script;
pub mod sets;
pub mod sort;
pub mod streams;
pub mod strings;
pub mod zsets;

use std::sync::OnceLock;

use bytes::Bytes;
use hashbrown::HashMap;
use rcodis_core::cmd::CommandSpec;
use rcodis_core::num::parse_i64;
use rcodis_core::resp::Request;

use crate::db::{Db, Entry, Value};
use crate::out::Out;

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub const NOT_INT: &str = "ERR value is not an integer or out of range";
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
pub const SYNTAX: &str = "ERR syntax error";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
pub const NO_KEY: &str = "ERR no such key";
pub const MUST_POSITIVE: &str = "ERR value is out of range, must be positive";

/// The error of a helper that has already written its error reply (WRONGTYPE, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replied;

/// What a handler works on.
pub struct Ctx<'a> {
    pub db: &'a mut Db,
    pub out: &'a mut Out,
    pub now: u64,
    /// Keys that received elements (for waking blocked clients).
    pub pushed: Vec<Bytes>,
    pub hits: u64,
    pub misses: u64,
}

impl<'a> Ctx<'a> {
    pub fn new(db: &'a mut Db, out: &'a mut Out, now: u64) -> Self {
        Ctx {
            db,
            out,
            now,
            pushed: Vec::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// The live entry of a key, counting a keyspace hit or miss.
    pub fn lookup(&mut self, key: &[u8]) -> Option<&mut Entry> {
        match self.db.get(key, self.now) {
            Some(e) => {
                self.hits += 1;
                Some(e)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }
}

/// A handler.
pub type Handler = fn(&mut Ctx<'_>, &Request);

fn registry() -> &'static HashMap<&'static str, Handler> {
    static R: OnceLock<HashMap<&'static str, Handler>> = OnceLock::new();
    R.get_or_init(|| {
        let mut m: HashMap<&'static str, Handler> = HashMap::new();
        strings::register(&mut m);
        bitfield::register(&mut m);
        keys::register(&mut m);
        lists::register(&mut m);
        hashes::register(&mut m);
        hll::register(&mut m);
        geo::register(&mut m);
        streams::register(&mut m);
        sets::register(&mut m);
        sort::register(&mut m);
        zsets::register(&mut m);
        script::register(&mut m);
        m
    })
}

/// The data handler for a command (or subcommand), if it is one.
#[inline]
pub fn handler(spec: &CommandSpec) -> Option<Handler> {
    static BY_ID: OnceLock<Vec<Option<Handler>>> = OnceLock::new();
    BY_ID.get_or_init(|| {
        (0..rcodis_core::cmd::NUM_SPECS as u16)
            .map(|id| registry().get(rcodis_core::cmd::by_id(id).name).copied())
            .collect()
    })[spec.id as usize]
}

/// Parses an integer argument, writing Redis's error when it is not one.
pub fn int_arg(out: &mut Out, b: &[u8]) -> Option<i64> {
    let v = parse_i64(b);
    if v.is_none() {
        out.err(NOT_INT);
    }
    v
}

/// The count of SRANDMEMBER, HRANDFIELD and ZRANDMEMBER, checked as Redis checks it before
/// the key is read: an integer from -i64::MAX to i64::MAX, and within half of that when the
/// reply has two items per element (`pairs`: WITHVALUES, WITHSCORES).
pub fn rand_count(out: &mut Out, arg: Option<&[u8]>, pairs: bool) -> Result<Option<i64>, Replied> {
    let Some(b) = arg else { return Ok(None) };
    match parse_i64(b) {
        None => {
            out.err(NOT_INT);
            Err(Replied)
        }
        Some(i64::MIN) => {
            out.err(
                "ERR value is out of range, value must between -9223372036854775807 and \
                 9223372036854775807",
            );
            Err(Replied)
        }
        Some(c) if pairs && !(-i64::MAX / 2..=i64::MAX / 2).contains(&c) => {
            out.err("ERR value is out of range");
            Err(Replied)
        }
        Some(c) => Ok(Some(c)),
    }
}

/// Parses a float as Redis's `string2d`: no leading space, whole string, not NaN.
pub fn parse_float(b: &[u8]) -> Option<f64> {
    if b.is_empty() || b[0].is_ascii_whitespace() {
        return None;
    }
    let s = std::str::from_utf8(b).ok()?;
    let v: f64 = s.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    Some(v)
}

/// Parses a float argument, writing `msg` when it is not one.
pub fn float_arg(out: &mut Out, b: &[u8], msg: &str) -> Option<f64> {
    let v = parse_float(b);
    if v.is_none() {
        out.err(msg);
    }
    v
}

/// Edits the string at `key` (which holds one) in place: its buffer is reused when nothing
/// else holds it and grows as Redis's strings grow (doubling), so repeated APPEND, SETRANGE,
/// SETBIT and BITFIELD cost what they change rather than a copy of the whole string. `f`
/// returns its result and whether it changed the string, which then becomes raw (as
/// Redis's modified strings) and is marked changed.
pub fn edit_string<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(&mut bytes::BytesMut) -> (R, bool),
) -> R {
    let now = ctx.now;
    let Some(e) = ctx.db.get(key, now) else {
        unreachable!("the caller checked the key holds a string")
    };
    let Value::Str(b) = &mut e.value else {
        unreachable!("the caller checked the key holds a string")
    };
    let mut m = match std::mem::take(b).try_into_mut() {
        Ok(m) => m,
        Err(shared) => bytes::BytesMut::from(&shared[..]),
    };
    let (r, changed) = f(&mut m);
    *b = m.freeze();
    if changed {
        e.str_enc = crate::db::StrEnc::Raw;
        ctx.db.touch_watched(key);
    }
    r
}

/// Case-insensitive comparison of an argument with an option name.
#[inline]
pub fn is(arg: &[u8], name: &str) -> bool {
    arg.eq_ignore_ascii_case(name.as_bytes())
}

/// A copied argument (stored values never keep the request buffer alive).
#[inline]
pub fn owned(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

/// Resolves Redis's negative indexes for a sequence of `len`, clamped like LRANGE.
pub fn range_indexes(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    if s < 0 {
        s = 0;
    }
    if s > e || s >= len {
        return None;
    }
    if e >= len {
        e = len - 1;
    }
    Some((s as usize, e as usize))
}

/// Reads a key expecting a type; `Err(Replied)` means another type (WRONGTYPE written).
macro_rules! typed {
    ($fn:ident, $fn_mut:ident, $variant:ident, $t:ty) => {
        pub fn $fn<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Result<Option<&'c mut $t>, Replied> {
            let found = ctx.lookup(key).is_some();
            if !found {
                return Ok(None);
            }
            // Re-borrow after the lookup so the reply buffer stays usable on errors.
            let is_type = matches!(
                ctx.db.get(key, ctx.now).map(|e| &e.value),
                Some(Value::$variant(_))
            );
            if !is_type {
                ctx.out.err(WRONGTYPE);
                return Err(Replied);
            }
            match ctx.db.get(key, ctx.now).map(|e| &mut e.value) {
                Some(Value::$variant(v)) => Ok(Some(v)),
                _ => unreachable!(),
            }
        }

        /// Like the reader, creating an empty value when the key is absent.
        pub fn $fn_mut<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Result<&'c mut $t, Replied> {
            let exists = $fn(ctx, key)?.is_some();
            if !exists {
                ctx.db
                    .set(key, Value::$variant(Default::default()), ctx.now);
            }
            match ctx.db.get(key, ctx.now).map(|e| &mut e.value) {
                Some(Value::$variant(v)) => Ok(v),
                _ => unreachable!(),
            }
        }
    };
}

typed!(
    get_list,
    list_or_new,
    List,
    std::collections::VecDeque<Bytes>
);
typed!(get_hash, hash_or_new, Hash, crate::db::HashVal);
typed!(get_set, set_or_new, Set, hashbrown::HashSet<Bytes>);
typed!(get_zset, zset_or_new, ZSet, Box<crate::db::ZSet>);

/// Removes a key whose collection became empty (Redis never keeps empty collections).
pub fn drop_if_empty(ctx: &mut Ctx<'_>, key: &[u8]) {
    let empty = match ctx.db.get(key, ctx.now).map(|e| &e.value) {
        Some(Value::List(l)) => l.is_empty(),
        Some(Value::Hash(h)) => h.is_empty(),
        Some(Value::Set(s)) => s.is_empty(),
        Some(Value::ZSet(z)) => z.is_empty(),
        _ => false,
    };
    if empty {
        ctx.db.remove(key, ctx.now);
    }
}
