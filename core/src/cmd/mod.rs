//! The command table: every Redis 7.0 command and the Codis SLOTS* commands, with arity,
//! flags, key specifications and the proxy's policy; lookup and key extraction.
//!
//! The table (`table.rs`) is generated from Redis 7.0.15's own `COMMAND` output by
//! `core/tools/gen_commands.py`, so arity, flags and key positions are Redis's.

mod spec;
#[rustfmt::skip]
mod table;

use std::sync::OnceLock;

use smallvec::SmallVec;

pub use spec::*;
pub use table::{COMMANDS, NUM_SPECS};

use crate::num::parse_i64;

/// Longest command or subcommand name in the table, with room to spare.
const MAX_NAME: usize = 40;

type Index = hashbrown::HashMap<&'static [u8], &'static CommandSpec>;

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut m = Index::with_capacity(COMMANDS.len() * 2);
        for c in COMMANDS.iter() {
            m.insert(c.name.as_bytes(), c);
        }
        m
    })
}

/// Finds a top-level command by name, case-insensitively.
#[inline]
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut buf = [0u8; MAX_NAME];
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    index().get(&*lower).copied()
}

/// Every spec (commands and subcommands) by id.
pub fn by_id(id: u16) -> &'static CommandSpec {
    static ALL: OnceLock<Vec<&'static CommandSpec>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut v: Vec<&'static CommandSpec> = Vec::with_capacity(NUM_SPECS);
        for c in COMMANDS.iter() {
            v.push(c);
            v.extend(c.subcommands.iter());
        }
        v.sort_by_key(|s| s.id);
        v
    })[id as usize]
}

/// Finds a subcommand of a container command (`CONFIG GET`), case-insensitively.
pub fn lookup_sub(container: &'static CommandSpec, sub: &[u8]) -> Option<&'static CommandSpec> {
    let prefix = container.name.len() + 1;
    container
        .subcommands
        .iter()
        .find(|s| s.name.len() > prefix && s.name.as_bytes()[prefix..].eq_ignore_ascii_case(sub))
}

/// Why a request cannot be run, in Redis's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// No such command.
    Unknown(String),
    /// A container command with an unknown subcommand.
    UnknownSubcommand(String),
    /// Wrong number of arguments.
    Arity(String),
}

impl CommandError {
    /// The error reply text (without `-` and CRLF).
    pub fn message(&self) -> &str {
        match self {
            CommandError::Unknown(m)
            | CommandError::UnknownSubcommand(m)
            | CommandError::Arity(m) => m,
        }
    }
}

/// Redis prints user-supplied text in errors with newlines replaced, so a reply stays one line.
fn sanitize(s: &[u8], max: usize) -> String {
    let s = &s[..s.len().min(max)];
    String::from_utf8_lossy(s).replace(['\r', '\n'], " ")
}

/// `ERR unknown command 'x', with args beginning with: 'a' 'b' `, exactly as Redis 7.0.
pub fn unknown_command_error<'a>(name: &[u8], args: impl Iterator<Item = &'a [u8]>) -> String {
    let mut list = String::new();
    for a in args {
        if list.len() >= 128 {
            break;
        }
        let room = 128 - list.len();
        list.push('\'');
        list.push_str(&String::from_utf8_lossy(&a[..a.len().min(room)]));
        list.push_str("' ");
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {}",
        sanitize(name, 128),
        list.replace(['\r', '\n'], " ")
    )
}

/// `ERR wrong number of arguments for 'get' command`.
pub fn arity_error(spec: &CommandSpec) -> String {
    format!("ERR wrong number of arguments for '{}' command", spec.name)
}

/// `ERR unknown subcommand 'x'. Try CONFIG HELP.`
pub fn unknown_subcommand_error(container: &CommandSpec, sub: &[u8]) -> String {
    format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        sanitize(sub, 128),
        container.upper_name()
    )
}

/// Resolves a request's command (and subcommand) and checks its arity, as Redis does
/// before running anything.
pub fn resolve<'a, A>(args: A) -> Result<&'static CommandSpec, CommandError>
where
    A: Fn(usize) -> Option<&'a [u8]>,
{
    let name = args(0).unwrap_or_default();
    let argc = (0..).take_while(|&i| args(i).is_some()).count();
    let Some(cmd) = lookup(name) else {
        return Err(CommandError::Unknown(unknown_command_error(
            name,
            (1..argc).filter_map(&args),
        )));
    };
    if cmd.is_container() {
        if argc < 2 {
            return Err(CommandError::Arity(arity_error(cmd)));
        }
        let sub = args(1).unwrap_or_default();
        let Some(s) = lookup_sub(cmd, sub) else {
            return Err(CommandError::UnknownSubcommand(unknown_subcommand_error(
                cmd, sub,
            )));
        };
        if !s.arity_ok(argc) {
            return Err(CommandError::Arity(arity_error(s)));
        }
        return Ok(s);
    }
    if !cmd.arity_ok(argc) {
        return Err(CommandError::Arity(arity_error(cmd)));
    }
    Ok(cmd)
}

/// Resolves a request, first trying `last` (the previous request's command): pipelines
/// repeat commands, and comparing one name costs less than a table lookup.
#[inline]
pub fn resolve_request_after<B: AsRef<[u8]>>(
    last: Option<&'static CommandSpec>,
    req: &crate::resp::Request<B>,
) -> Result<&'static CommandSpec, CommandError> {
    match last {
        Some(s)
            if !s.is_container()
                && s.arity_ok(req.len())
                && req.name().eq_ignore_ascii_case(s.name.as_bytes()) =>
        {
            Ok(s)
        }
        _ => resolve_request(req),
    }
}

/// Resolves a decoded request (see [`resolve`]).
pub fn resolve_request<B: AsRef<[u8]>>(
    req: &crate::resp::Request<B>,
) -> Result<&'static CommandSpec, CommandError> {
    if let Some(cmd) = lookup(req.name()) {
        if !cmd.is_container() && cmd.arity_ok(req.len()) {
            return Ok(cmd);
        }
    }
    resolve(|i| req.get(i))
}

/// Key extraction failed: the arguments do not fit the command's key layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidKeyArgs;

/// Argument indexes of keys.
pub type KeyIndexes = SmallVec<[usize; 4]>;

/// The argument indexes of every key in a request, in argument order, as Redis's
/// `COMMAND GETKEYS` finds them. Channels of SPUBLISH/SSUBSCRIBE (not keys) are left out
/// unless `include_not_keys`.
pub fn key_indexes(
    spec: &CommandSpec,
    args: &[&[u8]],
    include_not_keys: bool,
) -> Result<KeyIndexes, InvalidKeyArgs> {
    match spec.name {
        "sort" | "sort_ro" => return Ok(sort_keys(args)),
        "migrate" => return migrate_keys(args),
        "georadius" | "georadiusbymember" => return Ok(georadius_keys(args)),
        "xread" | "xreadgroup" => return xread_keys(args),
        _ => {}
    }
    let argc = args.len() as i64;
    let mut out = KeyIndexes::new();
    for ks in spec.key_specs {
        if ks.flags.contains(KeyFlags::NOT_KEY) && !include_not_keys {
            continue;
        }
        let incomplete = ks.flags.contains(KeyFlags::INCOMPLETE);
        let first = match ks.begin {
            BeginSearch::Index(i) => i as i64,
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => {
                let start_from = start_from as i64;
                let (start, end) = if start_from > 0 {
                    (start_from, argc - 1)
                } else {
                    (argc + start_from, 1)
                };
                let mut found = None;
                let mut i = start;
                loop {
                    if i >= argc || i < 1 {
                        break;
                    }
                    if args[i as usize].eq_ignore_ascii_case(keyword.as_bytes()) {
                        found = Some(i + 1);
                        break;
                    }
                    if i == end {
                        break;
                    }
                    i += if start <= end { 1 } else { -1 };
                }
                match found {
                    Some(f) => f,
                    None => continue,
                }
            }
            BeginSearch::Unknown => continue,
        };
        let (first, last, step) = match ks.find {
            FindKeys::Range {
                last_key,
                key_step,
                limit,
            } => {
                let last = if last_key >= 0 {
                    first + last_key as i64
                } else if limit == 0 {
                    argc + last_key as i64
                } else {
                    first + ((argc - first) / limit as i64 + last_key as i64)
                };
                (first, last, key_step as i64)
            }
            FindKeys::KeyNum {
                keynum_idx,
                first_key,
                key_step,
            } => {
                let idx = first + keynum_idx as i64;
                if idx >= argc {
                    if incomplete {
                        continue;
                    }
                    return Err(InvalidKeyArgs);
                }
                // More keys than arguments cannot be (and would overflow below).
                let n = match parse_i64(args[idx as usize]) {
                    Some(n) if n >= 0 && n <= argc => n,
                    _ => {
                        if incomplete {
                            continue;
                        }
                        return Err(InvalidKeyArgs);
                    }
                };
                let f = first + first_key as i64;
                (f, f + (n - 1) * key_step as i64, key_step as i64)
            }
            FindKeys::Unknown => continue,
        };
        let mut i = first;
        while i <= last {
            if i >= argc || i < 1 {
                if incomplete {
                    break;
                }
                return Err(InvalidKeyArgs);
            }
            out.push(i as usize);
            i += step.max(1);
        }
    }
    Ok(out)
}

/// SORT key [BY p] [LIMIT o c] [GET p ...] [ASC|DESC] [ALPHA] [STORE dst]: the last STORE's
/// argument is a key; BY/GET patterns are not (as Redis's `sortGetKeys`).
fn sort_keys(args: &[&[u8]]) -> KeyIndexes {
    let mut out = KeyIndexes::new();
    if args.len() < 2 {
        return out;
    }
    out.push(1);
    let mut store = None;
    let mut i = 2;
    while i < args.len() {
        let a = args[i];
        let skip = if a.eq_ignore_ascii_case(b"limit") {
            2
        } else if a.eq_ignore_ascii_case(b"get") || a.eq_ignore_ascii_case(b"by") {
            1
        } else if a.eq_ignore_ascii_case(b"store") {
            if i + 1 < args.len() {
                store = Some(i + 1);
            }
            1
        } else {
            0
        };
        i += skip + 1;
    }
    out.extend(store);
    out
}

/// MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw] [AUTH2 user pw] [KEYS k ...]
fn migrate_keys(args: &[&[u8]]) -> Result<KeyIndexes, InvalidKeyArgs> {
    let mut out = KeyIndexes::new();
    if args.len() < 6 {
        return Err(InvalidKeyArgs);
    }
    let mut i = 6;
    while i < args.len() {
        let a = args[i];
        if a.eq_ignore_ascii_case(b"auth") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"auth2") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"keys") {
            if !args[3].is_empty() {
                return Err(InvalidKeyArgs);
            }
            out.extend(i + 1..args.len());
            return Ok(out);
        }
        i += 1;
    }
    out.push(3);
    Ok(out)
}

/// GEORADIUS key ... [STORE k] [STOREDIST k]: the last STORE/STOREDIST names a key.
fn georadius_keys(args: &[&[u8]]) -> KeyIndexes {
    let mut out = KeyIndexes::new();
    if args.len() < 2 {
        return out;
    }
    out.push(1);
    let mut store = None;
    let mut i = 5;
    while i < args.len() {
        let a = args[i];
        if (a.eq_ignore_ascii_case(b"store") || a.eq_ignore_ascii_case(b"storedist"))
            && i + 1 < args.len()
        {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    out.extend(store);
    out
}

/// XREAD [COUNT n] [BLOCK ms] STREAMS k1 k2 id1 id2 (XREADGROUP adds GROUP g c and NOACK).
fn xread_keys(args: &[&[u8]]) -> Result<KeyIndexes, InvalidKeyArgs> {
    let group = args[0].eq_ignore_ascii_case(b"xreadgroup");
    let mut streams = None;
    let mut i = 1;
    while i < args.len() {
        let a = args[i];
        if a.eq_ignore_ascii_case(b"block") || a.eq_ignore_ascii_case(b"count") {
            i += 1;
        } else if group && a.eq_ignore_ascii_case(b"group") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"streams") {
            streams = Some(i);
            break;
        }
        i += 1;
    }
    let pos = streams.ok_or(InvalidKeyArgs)?;
    let rest = args.len() - pos - 1;
    if rest == 0 || !rest.is_multiple_of(2) {
        return Err(InvalidKeyArgs);
    }
    Ok((pos + 1..pos + 1 + rest / 2).collect())
}

#[cfg(test)]
mod tests;
