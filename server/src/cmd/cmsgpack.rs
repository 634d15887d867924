//! The `cmsgpack` library of Redis's Lua scripts (lua-cmsgpack 0.4): `pack`, `unpack`,
//! `unpack_one`, `unpack_limit`, with its encoding choices (smallest integer forms, floats
//! that fit in 32 bits as such, tables as arrays when their keys are exactly 1..n, 16 levels
//! of nesting) and the formats it decodes. Job queues such as BullMQ pack their arguments
//! with it.

use mlua::{Lua, MultiValue, Table, Value};

/// Tables nested deeper are packed as nil.
const MAX_NESTING: usize = 16;

/// Tables nested deeper fail to unpack, where redis-server's Lua stack (8,000 slots, two
/// per level) runs out.
const MAX_DECODE_DEPTH: usize = 3999;

/// `luaL_where(L, 1)`: the position of the Lua code that called the library function.
fn where_(lua: &Lua) -> String {
    lua.inspect_stack(1, |d| {
        let src = d.source();
        let line = d.current_line().unwrap_or(0);
        match src.short_src.as_deref() {
            Some(s) if line > 0 => format!("{s}:{line}: "),
            _ => String::new(),
        }
    })
    .unwrap_or_default()
}

/// A Lua error raised at the calling script's position, as `luaL_error` raises it.
pub(super) fn error(lua: &Lua, msg: &str) -> mlua::Error {
    mlua::Error::runtime(format!("{}{msg}", where_(lua)))
}

/// The `cmsgpack` table.
pub fn library(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "pack",
        lua.create_function(|lua, args: MultiValue| {
            if args.is_empty() {
                return Err(error(
                    lua,
                    "bad argument #0 to 'pack' (MessagePack pack needs input.)",
                ));
            }
            let mut out = Vec::new();
            for v in args.iter() {
                encode(&mut out, v, 0)?;
            }
            lua.create_string(&out)
        })?,
    )?;
    t.raw_set(
        "unpack",
        lua.create_function(|lua, args: MultiValue| unpack(lua, &args, "unpack", None))?,
    )?;
    t.raw_set(
        "unpack_one",
        lua.create_function(|lua, args: MultiValue| unpack(lua, &args, "unpack_one", Some(1)))?,
    )?;
    t.raw_set(
        "unpack_limit",
        lua.create_function(|lua, args: MultiValue| unpack(lua, &args, "unpack_limit", Some(0)))?,
    )?;
    Ok(t)
}

/// Argument `n` (from 1) of library function `f`, checked as `luaL_checklstring` checks it;
/// `present` is how many argument slots the C function sees (past them: "no value").
pub(super) fn arg_string(
    lua: &Lua,
    args: &[Value],
    n: usize,
    f: &str,
    present: usize,
) -> mlua::Result<Vec<u8>> {
    let v = args.get(n - 1).cloned().unwrap_or(Value::Nil);
    let got = arg_type(&v, n, present);
    match lua.coerce_string(v) {
        Ok(Some(s)) => Ok(s.as_bytes().to_vec()),
        _ => Err(arg_error(lua, n, f, &format!("string expected, got {got}"))),
    }
}

/// As [`arg_string`], for `luaL_checknumber`.
pub(super) fn arg_number(
    lua: &Lua,
    args: &[Value],
    n: usize,
    f: &str,
    present: usize,
) -> mlua::Result<f64> {
    let v = args.get(n - 1).cloned().unwrap_or(Value::Nil);
    let got = arg_type(&v, n, present);
    match lua.coerce_number(v) {
        Ok(Some(x)) => Ok(x),
        _ => Err(arg_error(lua, n, f, &format!("number expected, got {got}"))),
    }
}

fn arg_type(v: &Value, n: usize, present: usize) -> &'static str {
    if n > present {
        "no value"
    } else {
        v.type_name()
    }
}

/// `luaL_argerror`.
pub(super) fn arg_error(lua: &Lua, n: usize, f: &str, msg: &str) -> mlua::Error {
    error(lua, &format!("bad argument #{n} to '{f}' ({msg})"))
}

/// Argument `n` as an integer: `luaL_checkinteger`, or with a default `luaL_optinteger`.
fn arg_int(
    lua: &Lua,
    args: &[Value],
    n: usize,
    f: &str,
    default: Option<i64>,
) -> mlua::Result<i64> {
    match (args.get(n - 1), default) {
        (None | Some(Value::Nil), Some(d)) => Ok(d),
        _ => Ok(arg_number(lua, args, n, f, args.len())? as i64),
    }
}

/// `unpack` (every value), `unpack_one` (`Some(1)`: one, after the next offset) and
/// `unpack_limit` (`Some(0)`: as many as its second argument says, after the next offset).
fn unpack(lua: &Lua, args: &MultiValue, f: &str, limit: Option<i64>) -> mlua::Result<MultiValue> {
    let args: Vec<Value> = args.iter().cloned().collect();
    let s = arg_string(lua, &args, 1, f, args.len())?;
    let (limit, offset) = match limit {
        None => (0, 0),
        Some(1) => (1, arg_int(lua, &args, 2, f, Some(0))?),
        Some(_) => (
            arg_int(lua, &args, 2, f, None)?,
            arg_int(lua, &args, 3, f, Some(0))?,
        ),
    };
    let len = s.len() as i64;
    if offset < 0 || limit < 0 {
        return Err(error(
            lua,
            &format!("Invalid request to unpack with offset of {offset} and limit of {len}."),
        ));
    }
    if offset > len {
        return Err(error(
            lua,
            &format!("Start offset {offset} greater than input length {len}."),
        ));
    }
    // As lua-cmsgpack: no limit and no offset is "everything, without the next offset".
    let all = limit == 0 && offset == 0;
    let limit = if all { i64::MAX } else { limit };
    let mut cur = Cursor {
        b: &s,
        pos: offset as usize,
        last: 0,
    };
    let mut values = Vec::new();
    while cur.pos < s.len() && (values.len() as i64) < limit {
        match decode(lua, &mut cur) {
            Ok(v) => values.push(v),
            Err(Bad::Missing) => return Err(error(lua, "Missing bytes in input.")),
            Err(Bad::Format) => return Err(error(lua, "Bad data format in input.")),
            Err(Bad::Deep(f)) => return Err(error(lua, &format!("stack overflow ({f})"))),
            Err(Bad::Lua(e)) => return Err(e),
        }
    }
    if !all {
        // The next offset first (-1 when the input is used up).
        let next = if cur.pos >= s.len() {
            -1
        } else {
            cur.pos as i64
        };
        values.insert(0, Value::Integer(next as _));
    }
    Ok(MultiValue::from_iter(values))
}

/// A number as lua-cmsgpack writes it: an integer when it is one (as C's cast to int64_t
/// says), else a float if it fits in 32 bits without loss, else a double.
fn encode_number(out: &mut Vec<u8>, n: f64) {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if n.is_finite() && (-TWO_63..TWO_63).contains(&n) && (n as i64) as f64 == n {
        encode_int(out, n as i64);
    } else if (n as f32) as f64 == n || n.is_infinite() {
        out.push(0xca);
        out.extend_from_slice(&(n as f32).to_be_bytes());
    } else {
        out.push(0xcb);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn encode_int(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        if n <= 127 {
            out.push(n as u8);
        } else if n <= 0xff {
            out.extend_from_slice(&[0xcc, n as u8]);
        } else if n <= 0xffff {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else if n <= 0xffff_ffff {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    } else if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= -128 {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -2_147_483_648 {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// A length header: the fixed form under `fix_max`, else 8 (strings only), 16 or 32 bits.
fn header(out: &mut Vec<u8>, len: usize, fix: u8, fix_max: usize, wide: [Option<u8>; 3]) {
    if len <= fix_max {
        out.push(fix | len as u8);
    } else if let (Some(t), true) = (wide[0], len <= 0xff) {
        out.extend_from_slice(&[t, len as u8]);
    } else if len <= 0xffff {
        out.push(wide[1].expect("16-bit form"));
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(wide[2].expect("32-bit form"));
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

fn encode(out: &mut Vec<u8>, v: &Value, level: usize) -> mlua::Result<()> {
    match v {
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(i) => encode_number(out, *i as f64),
        Value::Number(n) => encode_number(out, *n),
        Value::String(s) => {
            let b = s.as_bytes();
            header(out, b.len(), 0xa0, 31, [Some(0xd9), Some(0xda), Some(0xdb)]);
            out.extend_from_slice(&b);
        }
        Value::Table(t) if level < MAX_NESTING => {
            if is_array(t)? {
                let n = t.raw_len();
                header(out, n, 0x90, 15, [None, Some(0xdc), Some(0xdd)]);
                for i in 1..=n {
                    encode(out, &t.raw_get::<Value>(i)?, level + 1)?;
                }
            } else {
                let pairs: Vec<(Value, Value)> =
                    t.pairs::<Value, Value>().collect::<mlua::Result<_>>()?;
                header(out, pairs.len(), 0x80, 15, [None, Some(0xde), Some(0xdf)]);
                for (k, v) in &pairs {
                    encode(out, k, level + 1)?;
                    encode(out, v, level + 1)?;
                }
            }
        }
        // nil, and what MessagePack has no form for (functions, cjson.null, ...).
        _ => out.push(0xc0),
    }
    Ok(())
}

/// Whether a table's keys are exactly 1..n (an empty table is an array).
fn is_array(t: &Table) -> mlua::Result<bool> {
    let (mut count, mut max) = (0f64, 0f64);
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let n = match k {
            Value::Integer(i) => i as f64,
            Value::Number(n) => n,
            _ => return Ok(false),
        };
        // A positive whole number that fits C's int.
        if n <= 0.0 || n > i32::MAX as f64 || n.fract() != 0.0 {
            return Ok(false);
        }
        max = f64::max(max, n);
        count += 1.0;
    }
    Ok(max == count)
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    /// Where the last item read starts.
    last: usize,
}

enum Bad {
    Missing,
    Format,
    /// Nested too deep: what ran out of stack, in lua-cmsgpack's words.
    Deep(&'static str),
    Lua(mlua::Error),
}

impl From<mlua::Error> for Bad {
    fn from(e: mlua::Error) -> Bad {
        Bad::Lua(e)
    }
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Bad> {
        let end = self.pos.checked_add(n).ok_or(Bad::Missing)?;
        let s = self.b.get(self.pos..end).ok_or(Bad::Missing)?;
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, Bad> {
        Ok(self.take(n)?.iter().fold(0u64, |a, &b| (a << 8) | b as u64))
    }
}

/// What one item's first bytes say: a value, or a container of `n` items (pairs for a map).
enum Item {
    Value(Value),
    Array(usize),
    Map(usize),
}

/// A container being filled: its table, items still to come, and for a map the key read.
struct Open {
    t: Table,
    left: usize,
    next: usize,
    key: Option<Value>,
    map: bool,
}

/// Decodes one value (and everything nested in it) without recursion: an input may nest
/// thousands of levels.
fn decode(lua: &Lua, c: &mut Cursor<'_>) -> Result<Value, Bad> {
    let mut stack: Vec<Open> = Vec::new();
    loop {
        let mut v = match item(lua, c)? {
            Item::Value(v) => v,
            Item::Array(_) | Item::Map(_) if stack.len() >= MAX_DECODE_DEPTH => {
                return Err(Bad::Deep(
                    if matches!(c.b[c.last], 0x90..=0x9f | 0xdc | 0xdd) {
                        "in function mp_decode_to_lua_array"
                    } else {
                        "too many return values at once; use unpack_one or unpack_limit instead."
                    },
                ));
            }
            Item::Array(n) => {
                // Each element takes at least a byte: a claimed length past the input is
                // short of bytes, whatever it reserves.
                let t = lua.create_table_with_capacity(n.min(c.b.len() - c.pos), 0)?;
                if n > 0 {
                    stack.push(Open {
                        t,
                        left: n,
                        next: 1,
                        key: None,
                        map: false,
                    });
                    continue;
                }
                Value::Table(t)
            }
            Item::Map(n) => {
                let t = lua.create_table()?;
                if n > 0 {
                    stack.push(Open {
                        t,
                        left: n,
                        next: 1,
                        key: None,
                        map: true,
                    });
                    continue;
                }
                Value::Table(t)
            }
        };
        // Hand the value to the containers it completes.
        loop {
            let Some(top) = stack.last_mut() else {
                return Ok(v);
            };
            if top.map {
                match top.key.take() {
                    None => {
                        top.key = Some(v);
                        break;
                    }
                    Some(k) => {
                        top.t.raw_set(k, v)?;
                        top.left -= 1;
                    }
                }
            } else {
                top.t.raw_set(top.next, v)?;
                top.next += 1;
                top.left -= 1;
            }
            if top.left > 0 {
                break;
            }
            let done = stack.pop().expect("an open container");
            v = Value::Table(done.t);
        }
    }
}

/// Reads one item's type and, for a scalar, its value.
fn item(lua: &Lua, c: &mut Cursor<'_>) -> Result<Item, Bad> {
    c.last = c.pos;
    let t = c.take(1)?[0];
    let num = |n: f64| Ok(Item::Value(Value::Number(n)));
    match t {
        0x00..=0x7f => num(t as f64),
        0xe0..=0xff => num(t as i8 as f64),
        0xc0 => Ok(Item::Value(Value::Nil)),
        0xc2 => Ok(Item::Value(Value::Boolean(false))),
        0xc3 => Ok(Item::Value(Value::Boolean(true))),
        0xcc => num(c.uint(1)? as f64),
        0xcd => num(c.uint(2)? as f64),
        0xce => num(c.uint(4)? as f64),
        // As lua-cmsgpack reads it: through a signed 64-bit integer.
        0xcf => num(c.uint(8)? as i64 as f64),
        0xd0 => num(c.uint(1)? as u8 as i8 as f64),
        0xd1 => num(c.uint(2)? as u16 as i16 as f64),
        0xd2 => num(c.uint(4)? as u32 as i32 as f64),
        0xd3 => num(c.uint(8)? as i64 as f64),
        0xca => num(f32::from_bits(c.uint(4)? as u32) as f64),
        0xcb => num(f64::from_bits(c.uint(8)?)),
        0xa0..=0xbf => string(lua, c, (t & 0x1f) as usize),
        0xd9 => {
            let n = c.uint(1)? as usize;
            string(lua, c, n)
        }
        0xda => {
            let n = c.uint(2)? as usize;
            string(lua, c, n)
        }
        0xdb => {
            let n = c.uint(4)? as usize;
            string(lua, c, n)
        }
        0x90..=0x9f => Ok(Item::Array((t & 0x0f) as usize)),
        0xdc => Ok(Item::Array(c.uint(2)? as usize)),
        0xdd => Ok(Item::Array(c.uint(4)? as usize)),
        0x80..=0x8f => Ok(Item::Map((t & 0x0f) as usize)),
        0xde => Ok(Item::Map(c.uint(2)? as usize)),
        0xdf => Ok(Item::Map(c.uint(4)? as usize)),
        _ => Err(Bad::Format),
    }
}

fn string(lua: &Lua, c: &mut Cursor<'_>, n: usize) -> Result<Item, Bad> {
    let s = c.take(n)?;
    Ok(Item::Value(Value::String(lua.create_string(s)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_take_their_smallest_form() {
        let mut out = Vec::new();
        for n in [
            1,
            -1,
            200,
            -200,
            70000,
            -70000,
            5_000_000_000,
            -5_000_000_000,
        ] {
            encode_int(&mut out, n);
        }
        // What redis-server's cmsgpack.pack writes for the same numbers.
        assert_eq!(
            out,
            b"\x01\xff\xcc\xc8\xd1\xff8\xce\x00\x01\x11p\xd2\xff\xfe\xee\x90\xcf\x00\x00\x00\x01*\x05\xf2\x00\xd3\xff\xff\xff\xfe\xd5\xfa\x0e\x00"
        );
    }

    #[test]
    fn floats_and_doubles() {
        let mut out = Vec::new();
        for n in [1.5, 0.1, f64::INFINITY, f64::NAN] {
            encode_number(&mut out, n);
        }
        assert_eq!(&out[..5], b"\xca?\xc0\x00\x00");
        assert_eq!(&out[5..14], b"\xcb?\xb9\x99\x99\x99\x99\x99\x9a");
        assert_eq!(&out[14..19], b"\xca\x7f\x80\x00\x00");
        assert_eq!(out[19], 0xcb);
    }
}
