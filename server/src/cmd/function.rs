//! Redis 7 functions: FUNCTION LOAD/DELETE/FLUSH/LIST/STATS/DUMP/RESTORE/KILL and
//! FCALL/FCALL_RO.
//!
//! The libraries are one set for the whole server (like the script cache). A library's code
//! is run once by FUNCTION LOAD, on the connection's shard, to check it and learn its
//! functions; every other shard runs it again in its own Lua state the first time one of
//! its functions is called there (a library is known by an id that changes when it is
//! replaced). FCALL is a data command like EVAL: it runs on the shard of its keys (or the
//! temporary database of an atomic multi-shard step) and its writes are logged as the
//! commands it ran.
//!
//! The library set is kept with the data of shard 0: its snapshot and rewritten log start
//! with `FUNCTION FLUSH` and one `FUNCTION LOAD REPLACE` per library, and each change is
//! logged there as such a command (so a full resync gives a replica the master's libraries
//! too, and later changes follow in shard 0's stream).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mlua::{Function, Lua, Value};
use rcodis_core::resp::Request;

use super::script::{self, Named, Vm};
use super::Ctx;
use crate::out::Out;

/// How long a library's code may run while it loads.
const LOAD_TIMEOUT: Duration = Duration::from_millis(500);

/// Function flags, in the order FUNCTION LIST writes them.
const FLAGS: [&str; 5] = [
    "no-writes",
    "allow-oom",
    "allow-stale",
    "no-cluster",
    "allow-cross-slot-keys",
];
const NO_WRITES: u8 = 1;

/// A function of a library, as registered.
#[derive(Debug, Clone)]
pub struct FnInfo {
    pub name: String,
    pub description: Option<Bytes>,
    /// Bits of [`FLAGS`].
    pub flags: u8,
}

/// A loaded library.
#[derive(Debug)]
pub struct Library {
    pub name: String,
    pub code: Bytes,
    pub functions: Vec<FnInfo>,
    /// Changes whenever a library of this name is loaded again.
    pub id: u64,
}

#[derive(Default)]
struct Registry {
    libs: BTreeMap<String, Arc<Library>>,
    /// Every function by its name: its library and its index there.
    by_name: std::collections::HashMap<String, (Arc<Library>, usize)>,
}

impl Registry {
    /// Rebuilds `by_name` after a change of `libs`.
    fn index(&mut self) {
        self.by_name = self
            .libs
            .values()
            .flat_map(|l| {
                l.functions
                    .iter()
                    .enumerate()
                    .map(move |(i, f)| (f.name.clone(), (l.clone(), i)))
            })
            .collect();
        changed();
    }

    /// The library holding a function (names compare without case, as in Redis), and the
    /// function's index there (an exact match first).
    fn find(&self, name: &[u8]) -> Option<(Arc<Library>, usize)> {
        if let Some(hit) = std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.by_name.get(n))
        {
            return Some(hit.clone());
        }
        let mut loose = None;
        for lib in self.libs.values() {
            for (i, f) in lib.functions.iter().enumerate() {
                if f.name.as_bytes() == name {
                    return Some((lib.clone(), i));
                }
                if loose.is_none() && f.name.as_bytes().eq_ignore_ascii_case(name) {
                    loose = Some((lib.clone(), i));
                }
            }
        }
        loose
    }

    /// Adds libraries (replacing those of the same names when `replace`), all or none.
    fn join(&mut self, new: Vec<Arc<Library>>, replace: bool) -> Result<(), String> {
        let mut next = self.libs.clone();
        for lib in &new {
            if next.contains_key(&lib.name) && !replace {
                // Redis words a merge's collision without quotes (FUNCTION LOAD checks first,
                // with them).
                return Err(format!("ERR Library {} already exists", lib.name));
            }
            next.remove(&lib.name);
        }
        for lib in new {
            for f in &lib.functions {
                let taken = next.values().any(|other| {
                    other
                        .functions
                        .iter()
                        .any(|g| g.name.eq_ignore_ascii_case(&f.name))
                });
                if taken {
                    return Err(format!("ERR Function {} already exists", f.name));
                }
            }
            next.insert(lib.name.clone(), lib);
        }
        self.libs = next;
        self.index();
        Ok(())
    }
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry::default()))
}

fn libs() -> std::sync::MutexGuard<'static, Registry> {
    registry().lock().unwrap_or_else(|e| e.into_inner())
}

/// Bumped by every change of the library set: each shard then forgets the libraries it
/// loaded (and loads again those it needs).
static GENERATION: AtomicU64 = AtomicU64::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn changed() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// The function running now (FUNCTION STATS): its library and index there, the command,
/// its start.
type Running = (Arc<Library>, usize, Request, Instant);

fn running() -> &'static Mutex<Option<Running>> {
    static R: OnceLock<Mutex<Option<Running>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(None))
}

thread_local! {
    /// The functions the library loading on this thread registered so far.
    static REGISTERING: std::cell::RefCell<Option<Vec<(FnInfo, Function)>>> =
        const { std::cell::RefCell::new(None) };
}

/// A library's first line (`#!lua name=<name>`): its name.
fn metadata(code: &[u8]) -> Result<String, String> {
    if !code.starts_with(b"#!") {
        return Err("ERR Missing library metadata".into());
    }
    let end = memchr::memchr(b'\n', code).unwrap_or(code.len());
    let line = String::from_utf8_lossy(&code[2..end]);
    let mut parts = line.split([' ', '\t', '\r']).filter(|p| !p.is_empty());
    let engine = if line.starts_with([' ', '\t']) {
        ""
    } else {
        parts.next().unwrap_or("")
    };
    let mut name = None;
    for p in parts {
        let Some(n) = p.strip_prefix("name=") else {
            return Err(format!("ERR Invalid metadata value given: {p}"));
        };
        if name.is_some() {
            return Err(
                "ERR Invalid metadata value, name argument was given multiple times".into(),
            );
        }
        name = Some(n.to_string());
    }
    let Some(name) = name else {
        return Err("ERR Library name was not given".into());
    };
    if !valid_name(&name) {
        return Err(NAME_RULE.into());
    }
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(format!("ERR Engine '{engine}' not found"));
    }
    Ok(name)
}

const NAME_RULE: &str = "ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long";

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `redis.register_function` while a library loads: `Err` is the error reply text.
pub(super) fn register_function(lua: &Lua, args: mlua::MultiValue) -> Result<(), String> {
    const WRONG: &str = "ERR wrong number of arguments to redis.register_function";
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::String(_) | Value::Integer(_) | Value::Number(_) => {
                Some(script::lua_text(lua, v))
            }
            _ => None,
        }
    };
    let args: Vec<Value> = args.into_iter().collect();
    let (name, callback, description, flags) = match &args[..] {
        [Value::Table(t)] => {
            let (mut name, mut callback, mut description, mut flags) = (None, None, None, 0u8);
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair.map_err(|e| format!("ERR {e}"))?;
                let k = match &k {
                    Value::String(s) => s.to_string_lossy(),
                    _ => String::new(),
                };
                match k.as_str() {
                    "function_name" => {
                        name = Some(text(&v).ok_or(
                            "ERR function_name argument given to redis.register_function must be a string",
                        )?)
                    }
                    "callback" => match v {
                        Value::Function(f) => callback = Some(f),
                        _ => return Err("ERR callback argument given to redis.register_function must be a function".into()),
                    },
                    "description" => {
                        description = Some(text(&v).ok_or(
                            "ERR description argument given to redis.register_function must be a string",
                        )?)
                    }
                    "flags" => {
                        let Value::Table(ft) = v else {
                            return Err("ERR flags argument to redis.register_function must be a table representing function flags".into());
                        };
                        for f in ft.sequence_values::<Value>() {
                            let f = f.map_err(|e| format!("ERR {e}"))?;
                            let bit = match &f {
                                Value::String(s) => {
                                    let s = s.to_string_lossy();
                                    FLAGS.iter().position(|x| *x == s)
                                }
                                _ => None,
                            };
                            let Some(bit) = bit else {
                                return Err("ERR unknown flag given".into());
                            };
                            flags |= 1 << bit;
                        }
                    }
                    _ => {
                        return Err(
                            "ERR unknown argument given to redis.register_function".into()
                        )
                    }
                }
            }
            let name =
                name.ok_or("ERR redis.register_function must get a function name argument")?;
            let callback =
                callback.ok_or("ERR redis.register_function must get a callback argument")?;
            (name, callback, description, flags)
        }
        [_] => return Err("ERR calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).".into()),
        [n, f] => {
            let name = text(n)
                .ok_or("ERR first argument to redis.register_function must be a string")?;
            let Value::Function(f) = f else {
                return Err("ERR second argument to redis.register_function must be a function".into());
            };
            (name, f.clone(), None, 0)
        }
        _ => return Err(WRONG.into()),
    };
    if !valid_name(&name) {
        return Err(NAME_RULE.into());
    }
    REGISTERING.with(|r| {
        let mut r = r.borrow_mut();
        let Some(list) = r.as_mut() else {
            return Err(
                "ERR redis.register_function can only be called on FUNCTION LOAD command".into(),
            );
        };
        if list.iter().any(|(i, _)| i.name == name) {
            return Err("ERR Function already exists in the library".into());
        }
        list.push((
            FnInfo {
                name,
                description: description.map(Bytes::from),
                flags,
            },
            callback,
        ));
        Ok(())
    })
}

/// Runs a library's code in this thread's Lua state: its functions.
fn load_in(vm: &mut Vm, code: &[u8]) -> Result<Vec<(FnInfo, Function)>, String> {
    // The first line (metadata) emptied, so that lines keep their numbers.
    let end = memchr::memchr(b'\n', code).unwrap_or(code.len());
    let chunk = vm
        .lua
        .load(&code[end..])
        .set_name("@user_function")
        .set_environment(vm.fenv.clone())
        .into_function()
        .map_err(|e| {
            let msg = match e {
                mlua::Error::SyntaxError { message, .. } => message,
                e => e.to_string(),
            };
            format!("ERR Error compiling function: {}", script::one_line(&msg))
        })?;
    let lua_err = |e: mlua::Error| format!("ERR Error registering functions: ERR {e}");
    vm.fmeta
        .raw_set("__index", vm.load_index.clone())
        .map_err(lua_err)?;
    REGISTERING.with(|r| *r.borrow_mut() = Some(Vec::new()));
    script::LOAD_DEADLINE.set(Some(Instant::now() + LOAD_TIMEOUT));
    let result = vm
        .xpcall()
        .call::<mlua::MultiValue>((chunk, vm.ident.clone()));
    script::LOAD_DEADLINE.set(None);
    let registered = REGISTERING
        .with(|r| r.borrow_mut().take())
        .unwrap_or_default();
    vm.fmeta
        .raw_set("__index", vm.run_index.clone())
        .map_err(lua_err)?;
    let mut vals = result.map_err(lua_err)?.into_iter();
    if !matches!(vals.next(), Some(Value::Boolean(true))) {
        let e = vals.next().unwrap_or(Value::Nil);
        let msg = match &e {
            Value::Table(t) => match t.raw_get::<Value>("err") {
                Ok(Value::String(s)) => s.to_string_lossy(),
                _ => "ERR unknown error".into(),
            },
            Value::String(s) => format!("ERR {}", s.to_string_lossy()),
            Value::Error(err) => format!("ERR {}", script::error_text(err)),
            other => format!("ERR {}", other.type_name()),
        };
        return Err(format!(
            "ERR Error registering functions: {}",
            script::one_line(&msg)
        ));
    }
    if registered.is_empty() {
        return Err("ERR No functions registered".into());
    }
    Ok(registered)
}

/// Checks a library (runs its code on this thread) and makes it: not yet in the set.
fn compile(code: Bytes) -> Result<Arc<Library>, String> {
    let name = metadata(&code)?;
    compile_named(name, code)
}

fn compile_named(name: String, code: Bytes) -> Result<Arc<Library>, String> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    script::with_vm(|vm| {
        let fns = load_in(vm, &code)?;
        let lib = Arc::new(Library {
            name,
            code: code.clone(),
            functions: fns.iter().map(|(i, _)| i.clone()).collect(),
            id,
        });
        // This thread has it loaded already.
        sync_generation(vm);
        vm.libs
            .insert(id, fns.into_iter().map(|(i, f)| (i.name, f)).collect());
        Ok(lib)
    })
}

/// Forgets this state's libraries when the library set changed since it last looked.
fn sync_generation(vm: &mut Vm) {
    let g = GENERATION.load(Ordering::SeqCst);
    if vm.fn_generation != g {
        let live: Vec<u64> = libs().libs.values().map(|l| l.id).collect();
        vm.libs.retain(|id, _| live.contains(id));
        vm.fn_generation = g;
    }
}

/// FCALL and FCALL_RO (`ro`).
pub(super) fn fcall(ctx: &mut Ctx<'_>, req: &Request, ro: bool) {
    // The function first, then its keys, as Redis checks them.
    let Some((lib, i)) = libs().find(req.arg(1)) else {
        return ctx.out.err("ERR Function not found");
    };
    let Some((keys, argv)) = script::keys_and_args(ctx.out, req, "ERR Bad number of keys provided")
    else {
        return;
    };
    let info = &lib.functions[i];
    let no_writes = info.flags & NO_WRITES != 0;
    if ro && !no_writes {
        return ctx
            .out
            .err("ERR Can not execute a script with write flag using *_ro command.");
    }
    // As Redis 7 does for a function that may write: refused on a replica before it runs.
    if !no_writes && script::REPLICA.load(Ordering::Relaxed) {
        return ctx
            .out
            .err("READONLY You can't write against a read only replica.");
    }
    let result = script::with_vm(|vm| {
        sync_generation(vm);
        if !vm.libs.contains_key(&lib.id) {
            let fns = load_in(vm, &lib.code)?;
            vm.libs
                .insert(lib.id, fns.into_iter().map(|(i, f)| (i.name, f)).collect());
        }
        let f = vm.libs[&lib.id]
            .get(&info.name)
            .cloned()
            .ok_or_else(|| "ERR Function not found".to_string())?;
        *running().lock().unwrap_or_else(|e| e.into_inner()) =
            Some((lib.clone(), i, req.clone(), Instant::now()));
        let r = script::call(
            vm,
            ctx,
            f,
            &keys,
            &argv,
            ro || no_writes,
            Named::Function(&info.name),
        )
        .map_err(|e| format!("ERR {e}"));
        *running().lock().unwrap_or_else(|e| e.into_inner()) = None;
        r
    });
    if let Err(e) = result {
        ctx.out.err(&script::one_line(&e));
    }
}

/// The commands that record a change of the library set (for the log of shard 0).
pub type Records = Vec<Vec<Bytes>>;

fn load_record(code: &Bytes) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"FUNCTION"),
        Bytes::from_static(b"LOAD"),
        Bytes::from_static(b"REPLACE"),
        code.clone(),
    ]
}

fn flush_record() -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"FUNCTION"),
        Bytes::from_static(b"FLUSH"),
    ]
}

/// The code of every loaded library (what an RDB file keeps of them).
pub fn library_codes() -> Vec<Bytes> {
    libs().libs.values().map(|l| l.code.clone()).collect()
}

/// The library set as commands that rebuild it, for the image of shard `shard` (shard 0's
/// starts with them; the others have none).
pub fn image_for(shard: usize) -> Records {
    if shard != 0 {
        return Vec::new();
    }
    let mut r = vec![flush_record()];
    r.extend(libs().libs.values().map(|l| load_record(&l.code)));
    r
}

/// FUNCTION LOAD, DELETE, FLUSH, RESTORE, LIST, DUMP, STATS, KILL (`sub`, lower case). The
/// reply goes to `out`; the returned commands record the change to log (none when nothing
/// changed).
pub fn command(sub: &str, req: &Request, out: &mut Out) -> Records {
    let is = |i: usize, w: &str| req.arg(i).eq_ignore_ascii_case(w.as_bytes());
    match sub {
        "load" => {
            let last = req.len() - 1;
            let mut replace = false;
            for i in 2..last {
                if is(i, "replace") {
                    replace = true;
                } else {
                    out.err(&format!(
                        "ERR Unknown option given: {}",
                        String::from_utf8_lossy(req.arg(i))
                    ));
                    return vec![];
                }
            }
            let code = req.arg_bytes(last);
            let name = match metadata(&code) {
                Ok(n) => n,
                Err(e) => {
                    out.err(&e);
                    return vec![];
                }
            };
            if !replace && libs().libs.contains_key(&name) {
                out.err(&format!("ERR Library '{name}' already exists"));
                return vec![];
            }
            let lib = match compile_named(name.clone(), code.clone()) {
                Ok(l) => l,
                Err(e) => {
                    out.err(&e);
                    return vec![];
                }
            };
            match libs().join(vec![lib], replace) {
                Ok(()) => {
                    out.bulk(name.as_bytes());
                    vec![load_record(&code)]
                }
                Err(e) => {
                    out.err(&e);
                    vec![]
                }
            }
        }
        "delete" => {
            let name = String::from_utf8_lossy(req.arg(2)).into_owned();
            let mut r = libs();
            if r.libs.remove(&name).is_none() {
                out.err("ERR Library not found");
                return vec![];
            }
            r.index();
            out.ok();
            vec![vec![
                Bytes::from_static(b"FUNCTION"),
                Bytes::from_static(b"DELETE"),
                req.arg_bytes(2),
            ]]
        }
        "flush" => {
            if req.len() > 3 {
                out.err(&subcommand_syntax(req));
                return vec![];
            }
            if req.len() == 3 && !is(2, "sync") && !is(2, "async") {
                out.err("ERR FUNCTION FLUSH only supports SYNC|ASYNC option");
                return vec![];
            }
            let mut r = libs();
            r.libs.clear();
            r.index();
            drop(r);
            out.ok();
            vec![flush_record()]
        }
        "restore" => restore(req, out),
        "dump" => {
            let codes: Vec<Bytes> = libs().libs.values().map(|l| l.code.clone()).collect();
            out.bulk(&crate::db::dump::dump_functions(&codes));
            vec![]
        }
        "list" => {
            list(req, out);
            vec![]
        }
        "stats" => {
            stats(out);
            vec![]
        }
        "kill" => {
            match script::kill(false) {
                Ok(()) => out.ok(),
                Err(e) => out.err(e),
            }
            vec![]
        }
        _ => {
            out.err("ERR unknown FUNCTION subcommand");
            vec![]
        }
    }
}

/// Redis's reply to a subcommand given the wrong number of arguments from inside its handler.
fn subcommand_syntax(req: &Request) -> String {
    format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try FUNCTION HELP.",
        String::from_utf8_lossy(req.arg(1))
    )
}

fn restore(req: &Request, out: &mut Out) -> Records {
    if req.len() > 4 {
        out.err(&subcommand_syntax(req));
        return vec![];
    }
    #[derive(PartialEq)]
    enum Policy {
        Flush,
        Append,
        Replace,
    }
    let policy = match req.get(3) {
        None => Policy::Append,
        Some(p) if p.eq_ignore_ascii_case(b"flush") && req.len() == 4 => Policy::Flush,
        Some(p) if p.eq_ignore_ascii_case(b"append") && req.len() == 4 => Policy::Append,
        Some(p) if p.eq_ignore_ascii_case(b"replace") && req.len() == 4 => Policy::Replace,
        Some(_) => {
            out.err(
                "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
            );
            return vec![];
        }
    };
    let codes = match crate::db::dump::restore_functions(req.arg(2)) {
        Ok(c) => c,
        Err(e) => {
            out.err(e);
            return vec![];
        }
    };
    let mut new = Vec::with_capacity(codes.len());
    for code in codes {
        match compile(code) {
            Ok(l) => {
                if new.iter().any(|n: &Arc<Library>| n.name == l.name) {
                    out.err(&format!("ERR Library '{}' already exists", l.name));
                    return vec![];
                }
                new.push(l)
            }
            Err(e) => {
                out.err(&e);
                return vec![];
            }
        }
    }
    let mut records = Vec::new();
    let mut r = libs();
    let result = if policy == Policy::Flush {
        let old = std::mem::take(&mut r.libs);
        records.push(flush_record());
        r.join(new.clone(), false).inspect_err(|_| {
            r.libs = old;
            r.index();
        })
    } else {
        r.join(new.clone(), policy == Policy::Replace)
    };
    drop(r);
    match result {
        Ok(()) => {
            out.ok();
            records.extend(new.iter().map(|l| load_record(&l.code)));
            records
        }
        Err(e) => {
            out.err(&e);
            vec![]
        }
    }
}

fn list(req: &Request, out: &mut Out) {
    let mut with_code = false;
    let mut pattern: Option<&[u8]> = None;
    let mut i = 2;
    while i < req.len() {
        let a = req.arg(i);
        if !with_code && a.eq_ignore_ascii_case(b"withcode") {
            with_code = true;
        } else if pattern.is_none() && a.eq_ignore_ascii_case(b"libraryname") {
            if i + 1 >= req.len() {
                return out.err("ERR library name argument was not given");
            }
            i += 1;
            pattern = Some(req.arg(i));
        } else {
            return out.err(&format!(
                "ERR Unknown argument {}",
                String::from_utf8_lossy(a)
            ));
        }
        i += 1;
    }
    let r = libs();
    let chosen: Vec<&Arc<Library>> = r
        .libs
        .values()
        .filter(|l| pattern.is_none_or(|p| crate::glob::matches(p, l.name.as_bytes(), true)))
        .collect();
    out.array(chosen.len());
    for l in chosen {
        out.map(if with_code { 4 } else { 3 });
        out.bulk(b"library_name");
        out.bulk(l.name.as_bytes());
        out.bulk(b"engine");
        out.bulk(b"LUA");
        out.bulk(b"functions");
        out.array(l.functions.len());
        for f in &l.functions {
            out.map(3);
            out.bulk(b"name");
            out.bulk(f.name.as_bytes());
            out.bulk(b"description");
            match &f.description {
                Some(d) => out.bulk(d),
                None => out.null(),
            }
            out.bulk(b"flags");
            let names: Vec<&str> = FLAGS
                .iter()
                .enumerate()
                .filter(|(b, _)| f.flags & (1 << b) != 0)
                .map(|(_, n)| *n)
                .collect();
            out.set(names.len());
            for n in names {
                out.simple(n);
            }
        }
        if with_code {
            out.bulk(b"library_code");
            out.bulk(&l.code);
        }
    }
}

/// FUNCTION STATS (also answered while a script keeps a shard busy).
pub fn stats(out: &mut Out) {
    out.map(2);
    out.bulk(b"running_script");
    match &*running().lock().unwrap_or_else(|e| e.into_inner()) {
        None => out.null(),
        Some((lib, i, cmd, start)) => {
            out.map(3);
            out.bulk(b"name");
            out.bulk(lib.functions[*i].name.as_bytes());
            out.bulk(b"command");
            out.array_of_bulks(cmd.args());
            out.bulk(b"duration_ms");
            out.int(start.elapsed().as_millis() as i64);
        }
    }
    let (nlibs, nfns) = counts();
    out.bulk(b"engines");
    out.map(1);
    out.bulk(b"LUA");
    out.map(2);
    out.bulk(b"libraries_count");
    out.int(nlibs as i64);
    out.bulk(b"functions_count");
    out.int(nfns as i64);
}

/// How many libraries and functions are loaded (FUNCTION STATS, INFO memory).
pub fn counts() -> (usize, usize) {
    let r = libs();
    (
        r.libs.len(),
        r.libs.values().map(|l| l.functions.len()).sum(),
    )
}

/// The bytes the library set takes (its code and names; INFO's used_memory_functions).
pub fn memory() -> u64 {
    libs()
        .libs
        .values()
        .map(|l| {
            (l.code.len() + l.name.len() + 64) as u64
                + l.functions
                    .iter()
                    .map(|f| (f.name.len() + 48) as u64)
                    .sum::<u64>()
        })
        .sum()
}
