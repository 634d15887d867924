//! The `struct` library of Redis's Lua scripts (Roberto Ierusalimschy's struct 0.2, as
//! redis-server bundles it): `struct.pack(fmt, ...)`, `struct.unpack(fmt, data [, pos])`,
//! `struct.size(fmt)`, on x86-64's native sizes (short 2, int 4, long and size_t 8) and
//! little-endian default.
//!
//! Format: `>` `<` endianness, `!n` alignment (a power of 2; alone, 8), `x` a zero byte,
//! `b`/`B` `h`/`H` `l`/`L` `T` `i[n]`/`I[n]` integers (signed when lower case), `f` `d`
//! floats, `c[n]` n characters (`c0`: the whole string when packing, the previous number's
//! length when unpacking), `s` a zero-terminated string, spaces ignored.

use mlua::{Lua, MultiValue, Table, Value};

use super::cmsgpack::{arg_error, arg_number, arg_string, error};

/// Largest integer size (`i32`/`I32`).
const MAX_INT_SIZE: usize = 32;
/// The native alignment (of a double).
const MAX_ALIGN: usize = 8;

struct Header {
    little: bool,
    align: usize,
}

impl Header {
    fn new() -> Header {
        Header {
            little: true,
            align: 1,
        }
    }
}

/// A format being read.
struct Fmt<'a> {
    f: &'a [u8],
    i: usize,
}

impl Fmt<'_> {
    fn next(&mut self) -> Option<u8> {
        let c = *self.f.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    /// A number following an option, or `default`.
    fn num(&mut self, lua: &Lua, default: usize) -> mlua::Result<usize> {
        if !self.f.get(self.i).is_some_and(u8::is_ascii_digit) {
            return Ok(default);
        }
        let mut a: usize = 0;
        while let Some(d) = self.f.get(self.i).filter(|c| c.is_ascii_digit()) {
            let d = (d - b'0') as usize;
            if a > i32::MAX as usize / 10 || a * 10 > i32::MAX as usize - d {
                return Err(error(lua, "integral size overflow"));
            }
            a = a * 10 + d;
            self.i += 1;
        }
        Ok(a)
    }

    /// The size of option `opt` (0 for those without one).
    fn size(&mut self, lua: &Lua, opt: u8) -> mlua::Result<usize> {
        Ok(match opt {
            b'B' | b'b' | b'x' => 1,
            b'H' | b'h' => 2,
            b'L' | b'l' | b'T' | b'd' => 8,
            b'f' => 4,
            b'c' => self.num(lua, 1)?,
            b'i' | b'I' => {
                let n = self.num(lua, 4)?;
                if n > MAX_INT_SIZE {
                    return Err(error(
                        lua,
                        &format!("integral size {n} is larger than limit of {MAX_INT_SIZE}"),
                    ));
                }
                n
            }
            _ => 0,
        })
    }

    /// Endianness, alignment and spaces; anything else is not an option.
    fn control(&mut self, lua: &Lua, opt: u8, h: &mut Header, f: &str) -> mlua::Result<()> {
        match opt {
            b' ' => {}
            b'>' => h.little = false,
            b'<' => h.little = true,
            b'!' => {
                let a = self.num(lua, MAX_ALIGN)?;
                if a == 0 || !a.is_power_of_two() {
                    return Err(error(lua, &format!("alignment {a} is not a power of 2")));
                }
                h.align = a;
            }
            _ => {
                return Err(error(
                    lua,
                    &format!(
                        "bad argument #1 to '{f}' (invalid format option '{}')",
                        opt as char
                    ),
                ))
            }
        }
        Ok(())
    }
}

/// Padding before an element of `size` at `pos`.
fn to_align(pos: usize, h: &Header, opt: u8, size: usize) -> usize {
    if size == 0 || opt == b'c' {
        return 0;
    }
    let size = size.min(h.align);
    (size - (pos & (size - 1))) & (size - 1)
}

/// `luaL_checknumber` for argument `n` of `f` (`pack` pushes a nil after its arguments: the
/// slot past the last one holds nil, not "no value").
fn number(lua: &Lua, args: &[Value], n: usize, f: &str) -> mlua::Result<f64> {
    arg_number(lua, args, n, f, present(args, n, f))
}

/// `luaL_checklstring`, as [`number`].
fn string(lua: &Lua, args: &[Value], n: usize, f: &str) -> mlua::Result<Vec<u8>> {
    arg_string(lua, args, n, f, present(args, n, f))
}

/// The argument slots `f` sees when it checks argument `n` (see [`number`]).
fn present(args: &[Value], n: usize, f: &str) -> usize {
    args.len() + usize::from(f == "pack" && n > 1)
}

fn pack(lua: &Lua, args: MultiValue) -> mlua::Result<mlua::LuaString> {
    let args: Vec<Value> = args.into_iter().collect();
    let fmt = string(lua, &args, 1, "pack")?;
    let mut fmt = Fmt { f: &fmt, i: 0 };
    let mut h = Header::new();
    let mut out: Vec<u8> = Vec::new();
    let mut arg = 2;
    while let Some(opt) = fmt.next() {
        let mut size = fmt.size(lua, opt)?;
        let pad = to_align(out.len(), &h, opt, size);
        out.resize(out.len() + pad, 0);
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let n = number(lua, &args, arg, "pack")?;
                arg += 1;
                // As C converts: negative numbers through a signed 64-bit integer.
                let mut v: u64 = if n < 0.0 { n as i64 as u64 } else { n as u64 };
                let mut bytes = vec![0u8; size];
                for b in bytes.iter_mut() {
                    *b = v as u8;
                    v = v.checked_shr(8).unwrap_or(0);
                }
                if !h.little {
                    bytes.reverse();
                }
                out.extend_from_slice(&bytes);
            }
            b'x' => out.push(0),
            b'f' => {
                let n = number(lua, &args, arg, "pack")? as f32;
                arg += 1;
                out.extend_from_slice(&if h.little {
                    n.to_le_bytes()
                } else {
                    n.to_be_bytes()
                });
            }
            b'd' => {
                let n = number(lua, &args, arg, "pack")?;
                arg += 1;
                out.extend_from_slice(&if h.little {
                    n.to_le_bytes()
                } else {
                    n.to_be_bytes()
                });
            }
            b'c' | b's' => {
                let s = string(lua, &args, arg, "pack")?;
                if size == 0 {
                    size = s.len();
                }
                arg += 1;
                // (Named after the argument that follows it, as struct 0.2 names it.)
                if s.len() < size {
                    return Err(arg_error(lua, arg, "pack", "string too short"));
                }
                out.extend_from_slice(&s[..size]);
                if opt == b's' {
                    out.push(0);
                }
            }
            _ => fmt.control(lua, opt, &mut h, "pack")?,
        }
    }
    lua.create_string(&out)
}

fn unpack(lua: &Lua, args: MultiValue) -> mlua::Result<MultiValue> {
    let args: Vec<Value> = args.into_iter().collect();
    let fmt = string(lua, &args, 1, "unpack")?;
    let data = string(lua, &args, 2, "unpack")?;
    let init = match args.get(2) {
        None | Some(Value::Nil) => 1.0,
        Some(_) => number(lua, &args, 3, "unpack")?,
    };
    if init < 1.0 {
        return Err(arg_error(lua, 3, "unpack", "offset must be 1 or greater"));
    }
    let mut pos = (init as i64 - 1) as usize;
    let mut fmt = Fmt { f: &fmt, i: 0 };
    let mut h = Header::new();
    let mut values: Vec<Value> = Vec::new();
    while let Some(opt) = fmt.next() {
        let mut size = fmt.size(lua, opt)?;
        pos += to_align(pos, &h, opt, size);
        if pos + size > data.len() {
            return Err(arg_error(lua, 2, "unpack", "data string too short"));
        }
        let at = &data[pos..pos + size];
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let mut v: u64 = 0;
                let mut push = |b: u8| v = v.checked_shl(8).unwrap_or(0) | b as u64;
                if h.little {
                    at.iter().rev().for_each(|&b| push(b));
                } else {
                    at.iter().for_each(|&b| push(b));
                }
                let n = if opt.is_ascii_lowercase() {
                    let mask = u64::MAX.checked_shl((size * 8).saturating_sub(1) as u32);
                    let mask = mask.unwrap_or(0);
                    if v & mask != 0 {
                        v |= mask;
                    }
                    v as i64 as f64
                } else {
                    v as f64
                };
                values.push(Value::Number(n));
            }
            b'x' => {}
            b'f' => {
                let b: [u8; 4] = at.try_into().expect("4 bytes");
                let n = if h.little {
                    f32::from_le_bytes(b)
                } else {
                    f32::from_be_bytes(b)
                };
                values.push(Value::Number(n as f64));
            }
            b'd' => {
                let b: [u8; 8] = at.try_into().expect("8 bytes");
                let n = if h.little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                };
                values.push(Value::Number(n));
            }
            b'c' => {
                if size == 0 {
                    let prev = match values.pop() {
                        Some(Value::Number(n)) => Some(n),
                        Some(Value::Integer(n)) => Some(n as f64),
                        _ => None,
                    };
                    let Some(n) = prev else {
                        return Err(error(lua, "format 'c0' needs a previous size"));
                    };
                    size = n.max(0.0) as usize;
                    if pos + size > data.len() {
                        return Err(arg_error(lua, 2, "unpack", "data string too short"));
                    }
                }
                values.push(Value::String(lua.create_string(&data[pos..pos + size])?));
            }
            b's' => {
                let Some(end) = memchr::memchr(0, &data[pos..]) else {
                    return Err(error(lua, "unfinished string in data"));
                };
                values.push(Value::String(lua.create_string(&data[pos..pos + end])?));
                size = end + 1;
            }
            _ => fmt.control(lua, opt, &mut h, "unpack")?,
        }
        pos += size;
    }
    values.push(Value::Integer((pos + 1) as _));
    Ok(MultiValue::from_iter(values))
}

fn size(lua: &Lua, args: MultiValue) -> mlua::Result<i64> {
    let args: Vec<Value> = args.into_iter().collect();
    let fmt = string(lua, &args, 1, "size")?;
    let mut fmt = Fmt { f: &fmt, i: 0 };
    let mut h = Header::new();
    let mut pos = 0usize;
    while let Some(opt) = fmt.next() {
        let size = fmt.size(lua, opt)?;
        pos += to_align(pos, &h, opt, size);
        if opt == b's' {
            return Err(arg_error(lua, 1, "size", "option 's' has no fixed size"));
        }
        if opt == b'c' && size == 0 {
            return Err(arg_error(lua, 1, "size", "option 'c0' has no fixed size"));
        }
        if !opt.is_ascii_alphanumeric() {
            fmt.control(lua, opt, &mut h, "size")?;
        }
        pos += size;
    }
    Ok(pos as i64)
}

/// The `struct` table.
pub fn library(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("pack", lua.create_function(pack)?)?;
    t.raw_set("unpack", lua.create_function(unpack)?)?;
    t.raw_set("size", lua.create_function(size)?)?;
    Ok(t)
}
