//! Lua scripting: EVAL, EVALSHA, EVAL_RO, EVALSHA_RO, and the script cache behind SCRIPT
//! LOAD/EXISTS/FLUSH/KILL.
//!
//! A script runs as one data command on the shard that owns its keys (all of them there:
//! inline, as any command; or, keys on several shards, on the temporary database of an
//! atomic multi-shard step), so nothing else runs on those keys meanwhile. Each shard thread
//! has its own Lua 5.1 state. `redis.call` runs the command's handler on the same database;
//! the writes it makes are collected (see [`take_effects`]) and logged (append-only file,
//! replicas) one by one in place of the script, as Redis 7 replicates a script's effects.
//!
//! As in Redis Cluster, a script reaches the keys it declares and, on a shard's own
//! database, undeclared keys of that shard; others get an error. The Lua environment is
//! Redis 7.0's: globals are read-only, `KEYS` and `ARGV`, the `redis` library, `cjson`,
//! `cmsgpack`, `struct`, `bit`; `redis.setresp(3)` gives a script RESP3 replies (maps, sets,
//! doubles, booleans, nil) as Redis 7 converts them. Functions (FUNCTION LOAD, FCALL) run on
//! the same Lua states: see [`super::function`].

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;
use mlua::{Function, HookTriggers, Lua, LuaOptions, LuaSerdeExt, StdLib, Table, Value, VmState};
use rcodis_core::cmd::{self as spec_table, CommandError, CommandFlags, CommandSpec};
use rcodis_core::resp::{Frame, FrameDecoder, Request};

use super::{Ctx, Handler};
use crate::out::Out;
use crate::shard::Shared;

/// The server is a replica: scripts may not write.
pub static REPLICA: AtomicBool = AtomicBool::new(false);
/// Scripts running now (on any shard), and how many of them have written.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static RUNNING_WROTE: AtomicUsize = AtomicUsize::new(0);
/// Of the running scripts, how many are functions (FCALL).
static RUNNING_FN: AtomicUsize = AtomicUsize::new(0);
/// SCRIPT KILL asked the running scripts (EVAL) that have not written to stop; FUNCTION KILL
/// the running functions.
static KILL: AtomicBool = AtomicBool::new(false);
static KILL_FN: AtomicBool = AtomicBool::new(false);
/// The memory of every shard's Lua state, each as of its last script (see [`account`]).
static LUA_MEMORY: AtomicU64 = AtomicU64::new(0);
/// `busy-reply-threshold` (alias `lua-time-limit`) in milliseconds, kept here so that a
/// script's start does not look it up among the parameters.
static BUSY_THRESHOLD_MS: AtomicU64 = AtomicU64::new(5000);

/// Sets `busy-reply-threshold` (at start and by CONFIG SET).
pub fn set_busy_threshold(ms: &str) {
    if let Ok(ms) = ms.parse::<u64>() {
        BUSY_THRESHOLD_MS.store(ms, Ordering::Relaxed);
    }
}

/// Bumped by SCRIPT FLUSH: each shard then drops the scripts it compiled.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The most memory one shard's Lua state may hold: past it an allocation fails with a Lua
/// error ("not enough memory") instead of taking the server down.
const LUA_MEMORY_LIMIT: usize = 1 << 30;

/// Instructions between two looks at SCRIPT KILL.
const HOOK_EVERY: u32 = 100_000;
const KILLED: &str = "ERR Script killed by user with SCRIPT KILL...";

/// The script running on this thread: its handler context, declared keys, and whether it may
/// write. Pointers valid only while the script runs (set and cleared around it in `call`).
#[derive(Clone, Copy)]
struct Current {
    ctx: *mut Ctx<'static>,
    keys: *const [Bytes],
    ro: bool,
}

thread_local! {
    static VM: RefCell<Option<Vm>> = const { RefCell::new(None) };
    /// The running script's shard's pub/sub registry (see [`with_pubsub`]).
    static PUBSUB: Cell<*const crate::pubsub::Registry> = const { Cell::new(std::ptr::null()) };
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
    /// What this thread's Lua state counts for in `LUA_MEMORY`.
    static LUA_COUNTED: Cell<u64> = const { Cell::new(0) };
    /// The writes the script that just ran made (each command as it ran), for the log and
    /// replicas in place of the script itself (see [`take_effects`]). Kept out of the
    /// handler context, which every command builds and drops.
    static EFFECTS: RefCell<Vec<(&'static CommandSpec, Request)>> = const { RefCell::new(Vec::new()) };
    /// The script running on this thread has written (it can no longer be killed).
    static WROTE: Cell<bool> = const { Cell::new(false) };
    /// The script running on this thread was stopped by SCRIPT KILL.
    static WAS_KILLED: Cell<bool> = const { Cell::new(false) };
    /// The script running on this thread asked for RESP3 replies (`redis.setresp(3)`).
    static SCRIPT_RESP3: Cell<bool> = const { Cell::new(false) };
    /// The script running on this thread is a function (FCALL).
    static IS_FN: Cell<bool> = const { Cell::new(false) };
    /// A library loading on this thread (FUNCTION LOAD) must be done by then.
    pub(super) static LOAD_DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// This shard's listening socket and the server's state, for the clients that connect
    /// while a script keeps the shard busy (see [`serve_while_busy`]).
    static LISTENER: RefCell<Option<(std::os::fd::RawFd, Arc<Shared>)>> = const { RefCell::new(None) };
    /// When the running script passes `busy-reply-threshold`: from then on, new connections
    /// are answered from inside it.
    static BUSY_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Registers this shard's listening socket: while a script runs longer than
/// `busy-reply-threshold`, the clients that connect meanwhile are served from inside it, as
/// Redis serves them (SCRIPT KILL, SHUTDOWN NOSAVE, AUTH; anything else gets -BUSY and the
/// connection is closed). Without this, a one-shard server could never kill a script.
pub fn serve_while_busy(listener: std::os::fd::RawFd, shared: Arc<Shared>) {
    set_busy_threshold(&shared.param("busy-reply-threshold"));
    LISTENER.with(|l| *l.borrow_mut() = Some((listener, shared)));
}

const BUSY: &str =
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
const BUSY_FN: &str =
    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";

/// The -BUSY reply for the script running on this thread.
fn busy_reply() -> &'static str {
    if IS_FN.get() {
        BUSY_FN
    } else {
        BUSY
    }
}

/// Accepts and answers what connected while the script runs (called from the hook).
fn busy_clients() {
    LISTENER.with(|l| {
        let l = l.borrow();
        let Some((fd, shared)) = l.as_ref() else {
            return;
        };
        loop {
            // The listener is a blocking socket (io_uring needs no more): look before taking.
            let mut pfd = libc::pollfd {
                fd: *fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, no waiting.
            if unsafe { libc::poll(&mut pfd, 1, 0) } != 1 {
                return;
            }
            // SAFETY: accept4 on a listening socket this shard owns, no address wanted.
            let c = unsafe {
                libc::accept4(
                    *fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if c < 0 {
                return;
            }
            // SAFETY: a descriptor accept4 just returned, owned here from now on.
            let stream = unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(c) };
            busy_client(stream, shared);
        }
    });
}

/// One connection made while a script runs: what it sends within a short while, answered.
fn busy_client(mut s: std::net::TcpStream, shared: &Shared) {
    use std::io::{Read, Write};
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let mut authed = shared.requirepass().is_empty();
    let mut buf = BytesMut::new();
    let mut dec = rcodis_core::resp::RequestDecoder::new(rcodis_core::resp::Limits::default());
    let mut out = Out::new(false);
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut tmp = [0u8; 4096];
    let mut killed = false;
    'read: while Instant::now() < deadline {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
        loop {
            let req = match dec.decode(&mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(_) => break 'read,
            };
            let is =
                |i: usize, w: &str| req.len() > i && req.arg(i).eq_ignore_ascii_case(w.as_bytes());
            if is(0, "auth") {
                let pass = req.arg(req.len() - 1);
                if req.len() >= 2 && pass == shared.requirepass().as_bytes() {
                    authed = true;
                    out.ok();
                } else {
                    out.err("WRONGPASS invalid username-password pair or user is disabled.");
                }
            } else if is(0, "hello") {
                // Client libraries greet with HELLO (Redis answers it while busy): the
                // protocol and AUTH are honoured, the rest of the session is BUSY replies.
                let proto = if req.len() >= 2 {
                    rcodis_core::num::parse_i64(req.arg(1))
                } else {
                    Some(2)
                };
                let auth = (2..req.len()).find(|&i| is(i, "auth") && i + 2 < req.len());
                if let Some(i) = auth {
                    authed = req.arg(i + 2) == shared.requirepass().as_bytes();
                }
                match proto {
                    Some(p @ (2 | 3)) if authed => {
                        out.resp3 = p == 3;
                        crate::server_cmds::hello_reply(&mut out, 0);
                    }
                    Some(2 | 3) if auth.is_some() => out
                        .err("WRONGPASS invalid username-password pair or user is disabled."),
                    Some(2 | 3) => out.err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"),
                    Some(_) => out.err("NOPROTO unsupported protocol version"),
                    None => out.err("ERR Protocol version is not an integer or out of range"),
                }
            } else if is(0, "quit") {
                out.ok();
                break 'read;
            } else if !authed {
                out.err("NOAUTH Authentication required.");
            } else if (is(0, "script") || is(0, "function")) && is(1, "kill") && req.len() == 2 {
                match kill(is(0, "script")) {
                    Ok(()) => {
                        killed = true;
                        out.ok()
                    }
                    Err(e) => out.err(e),
                }
            } else if is(0, "function") && is(1, "stats") && req.len() == 2 {
                super::function::stats(&mut out);
            } else if is(0, "shutdown") && is(1, "nosave") {
                tracing::warn!("SHUTDOWN NOSAVE while a script runs: exiting");
                std::process::exit(0);
            } else {
                out.err(busy_reply());
            }
        }
        // Answered as it asks (a greeting, then KILL, say), until it leaves or the short
        // while is over: the connection is then closed (a client reconnects).
        if s.write_all(&out.buf).is_err() {
            return;
        }
        out.buf.clear();
        // Once the script is killed, the rest waits for the shard to be free again.
        if killed && buf.is_empty() {
            break;
        }
    }
    let _ = s.write_all(&out.buf);
}

/// The script cache: SHA1 (lower-case hex) → body. Shared by all shards.
fn cache() -> &'static Mutex<HashMap<String, Bytes>> {
    static C: OnceLock<Mutex<HashMap<String, Bytes>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

pub fn register(m: &mut HashMap<&'static str, Handler>) {
    m.insert("eval", |c, r| run(c, r, false, false));
    m.insert("evalsha", |c, r| run(c, r, true, false));
    m.insert("eval_ro", |c, r| run(c, r, false, true));
    m.insert("evalsha_ro", |c, r| run(c, r, true, true));
    m.insert("fcall", |c, r| super::function::fcall(c, r, false));
    m.insert("fcall_ro", |c, r| super::function::fcall(c, r, true));
}

/// The writes of the script that just ran on this thread (empty after any other command).
pub fn take_effects() -> Vec<(&'static CommandSpec, Request)> {
    EFFECTS.with(|e| std::mem::take(&mut *e.borrow_mut()))
}

/// A script's shebang line (Redis 7: `#!lua flags=no-writes,...`): the code to compile (that
/// line emptied, so lines keep their numbers) and whether the script declared it does not
/// write.
fn shebang(body: &[u8]) -> Result<(std::borrow::Cow<'_, [u8]>, bool), String> {
    if !body.starts_with(b"#!") {
        return Ok((std::borrow::Cow::Borrowed(body), false));
    }
    let end = memchr::memchr(b'\n', body).unwrap_or(body.len());
    let line = String::from_utf8_lossy(&body[..end]);
    let mut words = line.split(' ').filter(|w| !w.is_empty());
    let engine = words.next().unwrap_or("");
    if engine != "#!lua" {
        return Err(format!("ERR Unexpected engine in script shebang: {engine}"));
    }
    let mut no_writes = false;
    for w in words {
        let Some(flags) = w.strip_prefix("flags=") else {
            return Err(format!("ERR Unknown lua shebang option: {w}"));
        };
        for f in flags.split(',').filter(|f| !f.is_empty()) {
            match f {
                "no-writes" => no_writes = true,
                "allow-oom" | "allow-stale" | "no-cluster" | "allow-cross-slot-keys" => {}
                _ => return Err(format!("ERR Unexpected flag in script shebang: {f}")),
            }
        }
    }
    Ok((std::borrow::Cow::Owned(body[end..].to_vec()), no_writes))
}

/// Whether a command runs a script (its writes are its effects): EVAL, EVALSHA, FCALL and
/// their read-only forms, the commands Redis flags `skip_monitor` (one bit to test on every
/// command's path; checked by a test).
#[inline]
pub fn is_script(spec: &CommandSpec) -> bool {
    spec.has(CommandFlags::SKIP_MONITOR)
}

/// The SHA1 of a script body, as SCRIPT LOAD returns it.
pub fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

/// SCRIPT LOAD: compiles the body (on this thread's state) and caches it; the SHA1, or the
/// compile error.
pub fn load(body: &[u8]) -> Result<String, String> {
    let sha = sha1_hex(body);
    let (code, _) = shebang(body)?;
    with_vm(|vm| vm.function(&sha, &code).map(|_| ()))?;
    cache()
        .lock()
        .expect("script cache")
        .insert(sha.clone(), Bytes::copy_from_slice(body));
    Ok(sha)
}

/// The memory the shards' Lua states hold (INFO's used_memory_lua), as of their last script.
pub fn lua_memory() -> u64 {
    LUA_MEMORY.load(Ordering::Relaxed)
}

/// The cached scripts: how many, and the bytes of their bodies and SHA1s (INFO's
/// number_of_cached_scripts and used_memory_scripts_eval).
pub fn cache_size() -> (usize, u64) {
    let c = cache().lock().expect("script cache");
    (c.len(), c.values().map(|b| b.len() as u64 + 40).sum())
}

/// Counts this thread's Lua state in [`lua_memory`] as it is now.
fn account(lua: &Lua) {
    let now = lua.used_memory() as u64;
    let before = LUA_COUNTED.replace(now);
    if now >= before {
        LUA_MEMORY.fetch_add(now - before, Ordering::Relaxed);
    } else {
        LUA_MEMORY.fetch_sub(before - now, Ordering::Relaxed);
    }
}

/// SCRIPT EXISTS for one SHA1.
pub fn exists(sha: &[u8]) -> bool {
    let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
    cache().lock().expect("script cache").contains_key(&sha)
}

/// SCRIPT FLUSH.
pub fn flush() {
    cache().lock().expect("script cache").clear();
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// SCRIPT KILL (`eval`) or FUNCTION KILL: `Err` is the error reply. Each stops only its
/// kind of script, as in Redis.
pub fn kill(eval: bool) -> Result<(), &'static str> {
    let running = RUNNING.load(Ordering::SeqCst);
    if running == 0 {
        return Err("NOTBUSY No scripts in execution right now.");
    }
    if RUNNING_WROTE.load(Ordering::SeqCst) >= running {
        return Err("UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.");
    }
    let functions = RUNNING_FN.load(Ordering::SeqCst);
    if eval && functions >= running {
        return Err(BUSY_FN);
    }
    if !eval && functions == 0 {
        return Err(BUSY);
    }
    if eval { &KILL } else { &KILL_FN }.store(true, Ordering::SeqCst);
    Ok(())
}

/// A shard thread's Lua state.
pub(super) struct Vm {
    pub(super) lua: Lua,
    /// The globals scripts see (behind the read-only `_G`).
    env: Table,
    xpcall: Function,
    on_error: Function,
    compiled: HashMap<String, Function>,
    generation: u64,
    /// The environment of every library's code and functions, and its metatable, whose
    /// `__index` is `load_index` while a library loads (only `redis.register_function`,
    /// `redis.log` and the constants) and `run_index` while a function runs (what scripts
    /// see, without KEYS and ARGV).
    pub(super) fenv: Table,
    pub(super) fmeta: Table,
    pub(super) run_index: Function,
    pub(super) load_index: Function,
    /// `xpcall`'s handler for library code: the error as raised.
    pub(super) ident: Function,
    /// The libraries loaded in this state: library id → its functions by name.
    pub(super) libs: HashMap<u64, HashMap<String, Function>>,
    /// The library set (`function::generation`) `libs` was checked against.
    pub(super) fn_generation: u64,
}

impl Vm {
    /// `xpcall` as scripts see it.
    pub(super) fn xpcall(&self) -> &Function {
        &self.xpcall
    }
}

pub(super) fn with_vm<R>(f: impl FnOnce(&mut Vm) -> Result<R, String>) -> Result<R, String> {
    VM.with(|cell| {
        // Taken out for the run: a script cannot start another one (EVAL is not allowed
        // from scripts), and nothing here is re-entered.
        let mut vm = match cell.borrow_mut().take() {
            Some(vm) => vm,
            None => Vm::new().map_err(|e| format!("ERR cannot start Lua: {e}"))?,
        };
        let g = GENERATION.load(Ordering::SeqCst);
        if vm.generation != g {
            vm.compiled.clear();
            vm.generation = g;
        }
        let r = f(&mut vm);
        account(&vm.lua);
        *cell.borrow_mut() = Some(vm);
        r
    })
}

impl Vm {
    fn new() -> mlua::Result<Vm> {
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH,
            LuaOptions::default(),
        )?;
        lua.set_memory_limit(LUA_MEMORY_LIMIT)?;
        let g = lua.globals();
        for name in [
            "dofile",
            "loadfile",
            "load",
            "module",
            "require",
            "collectgarbage",
            "gcinfo",
            "newproxy",
            "setfenv",
            "getfenv",
            "print",
        ] {
            g.raw_set(name, Value::Nil)?;
        }
        let redis = lua.create_table()?;
        redis.raw_set(
            "sha1hex",
            lua.create_function(|lua, args: mlua::Variadic<Value>| match &args[..] {
                [v] => Ok(sha1_hex(lua_text(lua, v).as_bytes())),
                _ => Err(mlua::Error::runtime("wrong number of arguments")),
            })?,
        )?;
        redis.raw_set(
            "log",
            lua.create_function(|lua, args: mlua::Variadic<Value>| {
                if args.len() < 2 {
                    return Err(mlua::Error::runtime(
                        "redis.log() requires two arguments or more.",
                    ));
                }
                let level = match &args[0] {
                    Value::Integer(i) => *i,
                    Value::Number(n) => *n as i64,
                    _ => {
                        return Err(mlua::Error::runtime(
                            "First argument must be a number (log level).",
                        ))
                    }
                };
                if !(0..=3).contains(&level) {
                    return Err(mlua::Error::runtime("Invalid debug level."));
                }
                let msg: Vec<String> = args[1..].iter().map(|v| lua_text(lua, v)).collect();
                let msg = msg.join(" ");
                match level {
                    0 | 1 => tracing::debug!(target: "script", "{msg}"),
                    2 => tracing::info!(target: "script", "{msg}"),
                    _ => tracing::warn!(target: "script", "{msg}"),
                }
                Ok(())
            })?,
        )?;
        redis.raw_set(
            "setresp",
            lua.create_function(|lua, args: mlua::Variadic<Value>| {
                let [v] = &args[..] else {
                    return Err(mlua::Error::runtime(
                        "redis.setresp() requires one argument.",
                    ));
                };
                match lua
                    .coerce_number(v.clone())
                    .ok()
                    .flatten()
                    .map(|n| n as i64)
                {
                    Some(2) => SCRIPT_RESP3.set(false),
                    Some(3) => SCRIPT_RESP3.set(true),
                    _ => return Err(mlua::Error::runtime("RESP version must be 2 or 3.")),
                }
                Ok(())
            })?,
        )?;
        for (k, v) in [
            ("LOG_DEBUG", 0),
            ("LOG_VERBOSE", 1),
            ("LOG_NOTICE", 2),
            ("LOG_WARNING", 3),
            ("REPL_NONE", 0),
            ("REPL_AOF", 1),
            ("REPL_SLAVE", 2),
            ("REPL_REPLICA", 2),
            ("REPL_ALL", 3),
            ("REDIS_VERSION_NUM", 0x07000f),
        ] {
            redis.raw_set(k, v)?;
        }
        redis.raw_set("REDIS_VERSION", "7.0.15")?;
        // SAFETY: `redis_call` follows the Lua C API (see there).
        redis.raw_set("call", unsafe { lua.create_c_function(redis_call)? })?;
        let register = lua.create_function(|lua, args: mlua::MultiValue| {
            Ok(super::function::register_function(lua, args).err())
        })?;
        g.raw_set("redis", redis.clone())?;
        g.raw_set("bit", bit(&lua)?)?;
        g.raw_set("cjson", cjson(&lua)?)?;
        g.raw_set("cmsgpack", super::cmsgpack::library(&lua)?)?;
        g.raw_set("struct", super::lua_struct::library(&lua)?)?;
        // The Lua side of the library, and the read-only globals: reading a missing global
        // or assigning any is an error, as in Redis 7.
        let setup: Function = lua
            .load(
                r#"
local redis, env, G, register = ...
local type, error, rawget, rawset, pairs, tostring, setmetatable =
  type, error, rawget, rawset, pairs, tostring, setmetatable
local function nonexistent(k)
  error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 3)
end
local function readonly() error('Attempt to modify a readonly table', 2) end
redis.error_reply = function(msg)
  if type(msg) ~= 'string' then error('wrong number or type of arguments', 2) end
  return { err = msg }
end
redis.status_reply = function(msg)
  if type(msg) ~= 'string' then error('wrong number or type of arguments', 2) end
  return { ok = msg }
end
redis.set_repl = function() end
redis.replicate_commands = function() return true end
redis.breakpoint = function() return false end
redis.debug = function() end
-- As in Redis 7, pcall gives a script the message of an error reply, not its table.
local raw_pcall = pcall
local function plain(ok, ...)
  if not ok then
    local e = ...
    if type(e) == 'table' and rawget(e, 'err') ~= nil then return false, rawget(e, 'err') end
  end
  return ok, ...
end
G.pcall = function(...) return plain(raw_pcall(...)) end
for k, v in pairs(G) do rawset(env, k, v) end
for k in pairs(env) do rawset(G, k, nil) end
setmetatable(G, {
  __index = function(_, k)
    local v = rawget(env, k)
    if v == nil then nonexistent(k) end
    return v
  end,
  __newindex = readonly,
  __metatable = false,
})
-- Functions (FUNCTION LOAD): the library code sees only this `redis`; its functions, when
-- they run, what scripts see but KEYS and ARGV (they get keys and args as arguments).
local load_redis = {
  register_function = function(...)
    local e = register(...)
    if e then error({ err = e }) end
  end,
  log = env.redis.log,
}
for _, k in pairs({ 'LOG_DEBUG', 'LOG_VERBOSE', 'LOG_NOTICE', 'LOG_WARNING', 'REDIS_VERSION',
                    'REDIS_VERSION_NUM' }) do
  load_redis[k] = env.redis[k]
end
setmetatable(load_redis, {
  __index = function(_, k) nonexistent(k) end, __newindex = readonly, __metatable = false,
})
local load_api = { redis = load_redis }
local function load_index(_, k)
  local v = rawget(load_api, k)
  if v == nil then nonexistent(k) end
  return v
end
local function run_index(_, k)
  local v = nil
  if k ~= 'KEYS' and k ~= 'ARGV' then v = rawget(env, k) end
  if v == nil then nonexistent(k) end
  return v
end
local fenv, fmeta = {}, { __index = run_index, __newindex = readonly, __metatable = false }
setmetatable(fenv, fmeta)
return fenv, fmeta, run_index, load_index
"#,
            )
            .set_name("=rcodis")
            .into_function()?;
        let env = lua.create_table()?;
        // SAFETY: `redis_pcall` follows the Lua C API (see there).
        redis.raw_set("pcall", unsafe { lua.create_c_function(redis_pcall)? })?;
        let (fenv, fmeta, run_index, load_index): (Table, Table, Function, Function) =
            setup.call((redis, env.clone(), g.clone(), register))?;
        let ident = lua.create_function(|_, e: Value| Ok(e))?;
        let xpcall: Function = env.raw_get("xpcall")?;
        // Runs where the error was raised (the stack still there): the error and the line of
        // the script it came from.
        let on_error = lua.create_function(|lua, e: Value| {
            let mut line = 0;
            for level in 1..64 {
                let found = lua.inspect_stack(level, |d| {
                    let src = d.source();
                    matches!(
                        src.source.as_deref(),
                        Some("@user_script" | "@user_function")
                    )
                    .then(|| d.current_line())
                });
                match found {
                    None => break,
                    Some(Some(l)) => {
                        line = l.unwrap_or(0);
                        break;
                    }
                    Some(None) => {}
                }
            }
            let t = lua.create_table()?;
            t.raw_set(1, e)?;
            t.raw_set(2, line)?;
            Ok(t)
        })?;
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            |_, _| {
                if BUSY_AT.get().is_some_and(|t| Instant::now() >= t) {
                    busy_clients();
                }
                if LOAD_DEADLINE.get().is_some_and(|t| Instant::now() >= t) {
                    return Err(mlua::Error::runtime("FUNCTION LOAD timeout"));
                }
                let kill = if IS_FN.get() { &KILL_FN } else { &KILL };
                if kill.load(Ordering::Relaxed) && CURRENT.get().is_some() && !WROTE.get() {
                    WAS_KILLED.set(true);
                    return Err(mlua::Error::runtime(KILLED));
                }
                Ok(VmState::Continue)
            },
        )?;
        Ok(Vm {
            lua,
            env,
            xpcall,
            on_error,
            compiled: HashMap::new(),
            generation: GENERATION.load(Ordering::SeqCst),
            fenv,
            fmeta,
            run_index,
            load_index,
            ident,
            libs: HashMap::new(),
            fn_generation: u64::MAX,
        })
    }

    /// The compiled script, compiling it on first use.
    fn function(&mut self, sha: &str, body: &[u8]) -> Result<Function, String> {
        if let Some(f) = self.compiled.get(sha) {
            return Ok(f.clone());
        }
        let f = self
            .lua
            .load(body)
            .set_name("@user_script")
            .into_function()
            .map_err(|e| {
                let msg = match e {
                    mlua::Error::SyntaxError { message, .. } => message,
                    e => e.to_string(),
                };
                format!(
                    "ERR Error compiling script (new function): {}",
                    one_line(&msg)
                )
            })?;
        self.compiled.insert(sha.to_string(), f.clone());
        Ok(f)
    }
}

/// A value as Lua's `tostring` would write a string or number (`%.14g`); anything else empty.
pub(super) fn lua_text(lua: &Lua, v: &Value) -> String {
    match lua.coerce_string(v.clone()) {
        Ok(Some(s)) => s.to_string_lossy(),
        _ => String::new(),
    }
}

/// An error text fit for a RESP error line.
pub(super) fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// The keys and the other arguments of EVAL or FCALL (`name numkeys key... arg...`), or
/// `None` with the error replied (`not_int`: the error for a numkeys that is no integer).
pub(super) fn keys_and_args(
    out: &mut Out,
    req: &Request,
    not_int: &str,
) -> Option<(Vec<Bytes>, Vec<Bytes>)> {
    let Some(numkeys) = rcodis_core::num::parse_i64(req.arg(2)) else {
        out.err(not_int);
        return None;
    };
    if numkeys < 0 {
        out.err("ERR Number of keys can't be negative");
        return None;
    }
    let numkeys = numkeys as usize;
    if numkeys > req.len() - 3 {
        out.err("ERR Number of keys can't be greater than number of args");
        return None;
    }
    let keys = (3..3 + numkeys).map(|i| req.arg_bytes(i)).collect();
    let argv = (3 + numkeys..req.len()).map(|i| req.arg_bytes(i)).collect();
    Some((keys, argv))
}

/// EVAL/EVALSHA (`by_sha`), and their read-only forms (`ro`).
fn run(ctx: &mut Ctx<'_>, req: &Request, by_sha: bool, ro: bool) {
    let Some((keys, argv)) = keys_and_args(ctx.out, req, super::NOT_INT) else {
        return;
    };
    let (sha, body) = if by_sha {
        let sha = String::from_utf8_lossy(req.arg(1)).to_ascii_lowercase();
        match cache().lock().expect("script cache").get(&sha) {
            Some(b) => (sha, b.clone()),
            None => return ctx.out.err("NOSCRIPT No matching script. Please use EVAL."),
        }
    } else {
        let body = req.arg_bytes(1);
        let sha = sha1_hex(&body);
        cache()
            .lock()
            .expect("script cache")
            .entry(sha.clone())
            .or_insert_with(|| body.clone());
        (sha, body)
    };
    EFFECTS.with(|e| e.borrow_mut().clear());
    let (code, no_writes) = match shebang(&body) {
        Ok(x) => x,
        Err(e) => return ctx.out.err(&e),
    };
    let ro = ro || no_writes;
    let result = with_vm(|vm| {
        let f = vm.function(&sha, &code)?;
        call(vm, ctx, f, &keys, &argv, ro, Named::Script(&sha)).map_err(|e| format!("ERR {e}"))
    });
    if let Err(e) = result {
        ctx.out.err(&one_line(&e));
    }
}

/// Runs a script or function and writes its reply, all in one protected step (through
/// mlua's API every table, string and field is one of its own: most of a short script's
/// cost). On the stack: the compiled script or function, the error handler, the scripts'
/// environment. Builds KEYS and ARGV (set in the environment for a script, passed as
/// arguments to a function), calls under `lua_pcall` with the handler, and, when the call
/// succeeded, writes the reply to `out` and leaves nothing; on failure it leaves `false` and
/// the handler's value.
///
/// # Safety
/// In protected mode (`Lua::exec_raw`). A Lua error (out of memory) unwinds by `longjmp`
/// through this function and [`reply_raw`]: neither holds a value that needs dropping across
/// a Lua call.
unsafe fn invoke(
    l: *mut mlua::ffi::lua_State,
    is_fn: bool,
    keys: &[Bytes],
    argv: &[Bytes],
    out: *mut Out,
) {
    use mlua::ffi;
    // SAFETY: as above; indexes are those of the four values described.
    unsafe {
        ffi::luaL_checkstack(l, 8, c"script call".as_ptr());
        for items in [keys, argv] {
            ffi::lua_createtable(l, items.len().min(i32::MAX as usize) as i32, 0);
            for (i, a) in items.iter().enumerate() {
                ffi::lua_pushlstring(l, a.as_ptr().cast(), a.len());
                ffi::lua_rawseti(l, -2, (i + 1) as _);
            }
        }
        // [f, handler, env, keys, argv]: a function gets them as arguments, a script as
        // the globals KEYS and ARGV.
        let nargs = if is_fn {
            2
        } else {
            for name in [c"ARGV", c"KEYS"] {
                ffi::lua_pushstring(l, name.as_ptr());
                ffi::lua_insert(l, -2);
                ffi::lua_rawset(l, 3);
            }
            0
        };
        // [f, handler, env, f, (keys, argv)]
        ffi::lua_pushvalue(l, 1);
        ffi::lua_insert(l, 4);
        if ffi::lua_pcall(l, nargs, 1, 2) == 0 {
            reply_raw(l, 4, &mut *out, 0);
            ffi::lua_settop(l, 0);
        } else {
            // [f, handler, env, value] -> [false, the handler's value]
            ffi::lua_replace(l, 2);
            ffi::lua_settop(l, 2);
            ffi::lua_pushboolean(l, 0);
            ffi::lua_replace(l, 1);
        }
    }
}

/// A script's result (at stack index `idx`) as a reply: Redis's Lua-to-RESP conversion.
///
/// # Safety
/// As for [`invoke`]: Rust values made here (an error or status text) are dropped before the
/// next Lua call.
unsafe fn reply_raw(l: *mut mlua::ffi::lua_State, idx: i32, out: &mut Out, depth: usize) {
    use mlua::ffi;
    // SAFETY: as above.
    unsafe {
        // A string on the stack (no conversion: callers check the type first).
        let text_at = |l: *mut ffi::lua_State, i: i32| -> &[u8] {
            let mut len = 0usize;
            let p = ffi::lua_tolstring(l, i, &mut len);
            std::slice::from_raw_parts(p.cast::<u8>(), len)
        };
        let text = |l: *mut ffi::lua_State| text_at(l, -1);
        match ffi::lua_type(l, idx) {
            // After `redis.setresp(3)` a boolean; before, true is 1 and false null.
            ffi::LUA_TBOOLEAN if SCRIPT_RESP3.get() => out.boolean(ffi::lua_toboolean(l, idx) != 0),
            ffi::LUA_TBOOLEAN if ffi::lua_toboolean(l, idx) != 0 => out.int(1),
            ffi::LUA_TNUMBER => {
                // As C's conversion on x86: what does not fit (or NaN) is i64::MIN.
                let n = ffi::lua_tonumber(l, idx) as f64;
                out.int(if n.is_finite() && n.abs() < 9.2e18 {
                    n.trunc() as i64
                } else {
                    i64::MIN
                })
            }
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let p = ffi::lua_tolstring(l, idx, &mut len);
                out.bulk(std::slice::from_raw_parts(p.cast::<u8>(), len));
            }
            ffi::LUA_TTABLE if depth < 64 => {
                ffi::luaL_checkstack(l, 4, c"reply too deep".as_ptr());
                for (field, is_err) in [(c"err", true), (c"ok", false)] {
                    ffi::lua_pushstring(l, field.as_ptr());
                    ffi::lua_rawget(l, idx);
                    if ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
                        {
                            let t = String::from_utf8_lossy(text(l));
                            if is_err {
                                out.err(&one_line(t.strip_prefix('-').unwrap_or(&t)));
                            } else {
                                out.simple(&one_line(&t));
                            }
                        }
                        ffi::lua_settop(l, -2);
                        return;
                    }
                    ffi::lua_settop(l, -2);
                }
                // RESP3 shapes (whatever the script's protocol), in Redis's order of checks.
                ffi::lua_pushstring(l, c"double".as_ptr());
                ffi::lua_rawget(l, idx);
                if ffi::lua_type(l, -1) == ffi::LUA_TNUMBER {
                    out.double(ffi::lua_tonumber(l, -1) as f64);
                    ffi::lua_settop(l, -2);
                    return;
                }
                ffi::lua_settop(l, -2);
                ffi::lua_pushstring(l, c"big_number".as_ptr());
                ffi::lua_rawget(l, idx);
                if ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
                    {
                        let digits: Vec<u8> = text(l)
                            .iter()
                            .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
                            .collect();
                        out.big_number(&digits);
                    }
                    ffi::lua_settop(l, -2);
                    return;
                }
                ffi::lua_settop(l, -2);
                ffi::lua_pushstring(l, c"verbatim_string".as_ptr());
                ffi::lua_rawget(l, idx);
                if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
                    ffi::lua_pushstring(l, c"format".as_ptr());
                    ffi::lua_rawget(l, -2);
                    ffi::lua_pushstring(l, c"string".as_ptr());
                    ffi::lua_rawget(l, -3);
                    if ffi::lua_type(l, -2) == ffi::LUA_TSTRING
                        && ffi::lua_type(l, -1) == ffi::LUA_TSTRING
                    {
                        let (format, body) = (text_at(l, -2), text_at(l, -1));
                        // Three letters, padded with spaces as Redis pads them.
                        let mut f = [b' '; 3];
                        for (d, c) in f.iter_mut().zip(format) {
                            *d = *c;
                        }
                        out.verbatim_as(&f, body);
                        ffi::lua_settop(l, -4);
                        return;
                    }
                    ffi::lua_settop(l, -3);
                }
                ffi::lua_settop(l, -2);
                for (field, is_map) in [(c"map", true), (c"set", false)] {
                    ffi::lua_pushstring(l, field.as_ptr());
                    ffi::lua_rawget(l, idx);
                    if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
                        let t = ffi::lua_gettop(l);
                        let mut n = 0;
                        ffi::lua_pushnil(l);
                        while ffi::lua_next(l, t) != 0 {
                            ffi::lua_settop(l, -2);
                            n += 1;
                        }
                        if is_map {
                            out.map(n);
                        } else {
                            out.set(n);
                        }
                        ffi::lua_pushnil(l);
                        while ffi::lua_next(l, t) != 0 {
                            let top = ffi::lua_gettop(l);
                            reply_raw(l, top - 1, out, depth + 1);
                            if is_map {
                                reply_raw(l, top, out, depth + 1);
                            }
                            ffi::lua_settop(l, -2);
                        }
                        ffi::lua_settop(l, -2);
                        return;
                    }
                    ffi::lua_settop(l, -2);
                }
                let mut n = 0;
                loop {
                    ffi::lua_rawgeti(l, idx, (n + 1) as _);
                    let end = ffi::lua_type(l, -1) == ffi::LUA_TNIL;
                    ffi::lua_settop(l, -2);
                    if end {
                        break;
                    }
                    n += 1;
                }
                out.array(n);
                for i in 1..=n {
                    ffi::lua_rawgeti(l, idx, i as _);
                    reply_raw(l, ffi::lua_gettop(l), out, depth + 1);
                    ffi::lua_settop(l, -2);
                }
            }
            _ => out.null(),
        }
    }
}

/// What runs: a script (by its SHA1) or a function (by its name).
#[derive(Clone, Copy)]
pub(super) enum Named<'a> {
    Script(&'a str),
    Function(&'a str),
}

/// Runs a compiled script, or a function; its reply (or error reply) goes to `ctx.out`.
/// `Err`: Lua itself failed (not the script).
pub(super) fn call(
    vm: &mut Vm,
    ctx: &mut Ctx<'_>,
    f: Function,
    keys: &[Bytes],
    argv: &[Bytes],
    ro: bool,
    what: Named<'_>,
) -> mlua::Result<()> {
    let lua = &vm.lua;
    let is_fn = matches!(what, Named::Function(_));
    IS_FN.set(is_fn);
    SCRIPT_RESP3.set(false);
    if is_fn {
        RUNNING_FN.fetch_add(1, Ordering::SeqCst);
    }
    WROTE.set(false);
    WAS_KILLED.set(false);
    let threshold = LISTENER
        .with(|l| l.borrow().is_some())
        .then(|| BUSY_THRESHOLD_MS.load(Ordering::Relaxed));
    BUSY_AT.set(threshold.map(|ms| Instant::now() + Duration::from_millis(ms.max(1))));
    RUNNING.fetch_add(1, Ordering::SeqCst);
    // What `redis.call` works on, for the length of the call (the runner, made once, finds it
    // here: no callback to build and register per script).
    CURRENT.set(Some(Current {
        ctx: (ctx as *mut Ctx<'_>).cast(),
        keys,
        ro,
    }));
    let base = ctx.out.buf.len();
    let out_ptr: *mut Out = &mut *ctx.out;
    // SAFETY: `invoke` runs in protected mode (see there); `out_ptr` is `ctx.out`, which
    // nothing else touches meanwhile (`redis.call` uses the context's database only).
    let out = unsafe {
        lua.exec_raw::<mlua::MultiValue>((&f, &vm.on_error, &vm.env), |l| {
            invoke(l, is_fn, keys, argv, out_ptr)
        })
    };
    if out.is_err() {
        // Lua failed while converting the reply (out of memory): none of it stays.
        ctx.out.buf.truncate(base);
    }
    CURRENT.set(None);
    if is_fn {
        RUNNING_FN.fetch_sub(1, Ordering::SeqCst);
    }
    BUSY_AT.set(None);
    if WROTE.get() {
        RUNNING_WROTE.fetch_sub(1, Ordering::SeqCst);
    }
    // A script that built something big leaves it to the collector: give it back now.
    if lua.used_memory() > 64 << 20 {
        let _ = lua.gc_collect();
    }
    if RUNNING.fetch_sub(1, Ordering::SeqCst) == 1 {
        KILL.store(false, Ordering::SeqCst);
        KILL_FN.store(false, Ordering::SeqCst);
    }
    let mut out_vals = out?.into_iter();
    let Some(_) = out_vals.next() else {
        // It ran; its reply is written.
        return Ok(());
    };
    let v = out_vals.next().unwrap_or(Value::Nil);
    // The error handler's table: the error and the script's line.
    let (e, line) = match &v {
        Value::Table(t) => (t.raw_get::<Value>(1)?, t.raw_get::<usize>(2).unwrap_or(0)),
        _ => (v.clone(), 0),
    };
    let at = match what {
        Named::Script(sha) => format!("script: {sha}, on @user_script:{line}."),
        Named::Function(name) => format!("script: {name}, on @user_function:{line}."),
    };
    let msg = if WAS_KILLED.get() {
        format!("{KILLED} {at}")
    } else {
        match &e {
            Value::Table(t) => match t.raw_get::<Value>("err")? {
                Value::String(s) => format!("{} {at}", s.to_string_lossy()),
                _ => format!("ERR unknown error {at}"),
            },
            Value::String(s) => format!("ERR {} {at}", s.to_string_lossy()),
            Value::Error(err) => format!("ERR {} {at}", error_text(err)),
            other => format!("ERR {} {at}", other.type_name()),
        }
    };
    ctx.out.err(&one_line(&msg));
    Ok(())
}

/// `redis.call`: runs one command on the script's database; its reply, or, for an error
/// reply, that reply's `{err = ...}` table raised as the error. A C function, not a Lua one:
/// `return redis.call(...)` is then no tail call that would take the script's frame off the
/// stack (and with it the line an error reply names), and a script that catches the error
/// with `pcall` gets the table. Arguments are read and the reply pushed with Lua's C API
/// directly (through mlua's API each value is a protected call of its own, most of a short
/// script's cost).
unsafe extern "C-unwind" fn redis_call(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { call_from_lua(l, true) }
}

/// `redis.pcall`: as `redis.call`, but an error reply is returned as its table.
unsafe extern "C-unwind" fn redis_pcall(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { call_from_lua(l, false) }
}

/// The body of `redis.call` (`raise`) and `redis.pcall`. Lua errors (`lua_error`, or out of
/// memory while pushing the reply) unwind by `longjmp`, which must not pass Rust values
/// that need dropping: the command runs in [`command_from_stack`], whose values are all
/// gone when it returns, the reply (a Rust value) is pushed under a `lua_pcall` of its own,
/// and it is dropped before any error is raised here.
unsafe fn call_from_lua(l: *mut mlua::ffi::lua_State, raise: bool) -> std::ffi::c_int {
    use mlua::ffi;
    // SAFETY: `l` is the running state; the stack has LUA_MINSTACK free slots on entry to a
    // C function, of which this uses two (the pusher and its argument).
    unsafe {
        let reply = command_from_stack(l);
        let failed = matches!(reply, Frame::Error(_));
        ffi::lua_settop(l, 0);
        ffi::lua_pushcfunction(l, push_reply);
        ffi::lua_pushlightuserdata(l, (&reply as *const Frame).cast_mut().cast());
        let status = ffi::lua_pcall(l, 1, 1, 0);
        drop(reply);
        if status != 0 || (failed && raise) {
            // The pusher's error (out of memory), or the reply's error table.
            ffi::lua_error(l);
        }
    }
    1
}

/// Pushes the reply its light userdata argument points to (Redis's RESP2-to-Lua
/// conversion). Called under `lua_pcall`: an out-of-memory error unwinds only this frame,
/// which holds nothing that needs dropping.
unsafe extern "C-unwind" fn push_reply(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    use mlua::ffi;
    unsafe fn push(l: *mut ffi::lua_State, f: &Frame) {
        // SAFETY: as for `push_reply`; every level makes room for what it pushes.
        unsafe {
            ffi::luaL_checkstack(l, 4, c"reply too deep".as_ptr());
            let table_with = |key: &std::ffi::CStr, s: &[u8]| {
                ffi::lua_createtable(l, 0, 1);
                ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len());
                ffi::lua_setfield(l, -2, key.as_ptr());
            };
            match f {
                Frame::Integer(i) => ffi::lua_pushinteger(l, *i as _),
                Frame::Bulk(b) => {
                    ffi::lua_pushlstring(l, b.as_ptr().cast(), b.len());
                }
                Frame::Simple(s) => table_with(c"ok", s),
                Frame::Error(e) | Frame::BulkError(e) => table_with(c"err", e),
                Frame::NullBulk | Frame::NullArray => ffi::lua_pushboolean(l, 0),
                // RESP3 (after `redis.setresp(3)`), as Redis 7 converts it.
                Frame::Null => ffi::lua_pushnil(l),
                Frame::Boolean(b) => ffi::lua_pushboolean(l, *b as _),
                Frame::Double(d) => {
                    ffi::lua_createtable(l, 0, 1);
                    ffi::lua_pushnumber(l, *d as _);
                    ffi::lua_setfield(l, -2, c"double".as_ptr());
                }
                Frame::BigNumber(n) => table_with(c"big_number", n),
                Frame::Verbatim { format, text } => {
                    ffi::lua_createtable(l, 0, 1);
                    table_with(c"string", text);
                    ffi::lua_pushlstring(l, format.as_ptr().cast(), format.len());
                    ffi::lua_setfield(l, -2, c"format".as_ptr());
                    ffi::lua_setfield(l, -2, c"verbatim_string".as_ptr());
                }
                Frame::Map(pairs) => {
                    ffi::lua_createtable(l, 0, 1);
                    // Grown as Redis grows it, so that it iterates in the same order.
                    ffi::lua_createtable(l, 0, 0);
                    for (k, v) in pairs {
                        push(l, k);
                        push(l, v);
                        ffi::lua_rawset(l, -3);
                    }
                    ffi::lua_setfield(l, -2, c"map".as_ptr());
                }
                Frame::Set(items) => {
                    ffi::lua_createtable(l, 0, 1);
                    ffi::lua_createtable(l, 0, 0);
                    for x in items {
                        push(l, x);
                        ffi::lua_pushboolean(l, 1);
                        ffi::lua_rawset(l, -3);
                    }
                    ffi::lua_setfield(l, -2, c"set".as_ptr());
                }
                Frame::Array(items) => {
                    ffi::lua_createtable(l, items.len().min(i32::MAX as usize) as i32, 0);
                    for (i, x) in items.iter().enumerate() {
                        push(l, x);
                        ffi::lua_rawseti(l, -2, (i + 1) as _);
                    }
                }
                other => {
                    let s = format!("{other:?}");
                    ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len());
                }
            }
        }
    }
    // SAFETY: the argument is the light userdata `call_from_lua` pushed, pointing to a reply
    // that outlives this call.
    unsafe {
        let f = &*(ffi::lua_touserdata(l, 1) as *const Frame);
        push(l, f);
    }
    1
}

/// The text of an error raised by Rust code (a callback or the hook).
pub(super) fn error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => error_text(cause),
        mlua::Error::RuntimeError(s) => s.clone(),
        e => e.to_string(),
    }
}

/// The error reply for a `redis.call` the script got wrong.
fn script_error(msg: &str) -> Frame {
    Frame::Error(Bytes::copy_from_slice(msg.as_bytes()))
}

/// Reads a `redis.call`'s arguments from the Lua stack and runs the command: its reply
/// (an error reply for a call the script got wrong). Raises no Lua error.
unsafe fn command_from_stack(l: *mut mlua::ffi::lua_State) -> Frame {
    use mlua::ffi;
    let Some(cur) = CURRENT.get() else {
        return script_error("ERR redis.call is only for a running script");
    };
    // SAFETY: reads the arguments on the stack (strings without conversion, numbers as
    // numbers: nothing allocates in Lua).
    let n = unsafe { ffi::lua_gettop(l) };
    if n == 0 {
        return script_error("ERR Please specify at least one argument for this redis lib call");
    }
    /// An argument: a Lua string (on the stack for the length of the call), or a number
    /// written out.
    enum Arg<'a> {
        Lua(&'a [u8]),
        Number(String),
    }
    impl AsRef<[u8]> for Arg<'_> {
        fn as_ref(&self) -> &[u8] {
            match self {
                Arg::Lua(s) => s,
                Arg::Number(n) => n.as_bytes(),
            }
        }
    }
    let mut parts: Vec<Arg<'_>> = Vec::with_capacity(n as usize);
    for i in 1..=n {
        // SAFETY: index within the stack; a string stays there (and valid) until this
        // function returns.
        unsafe {
            match ffi::lua_type(l, i) {
                ffi::LUA_TSTRING => {
                    let mut len = 0usize;
                    let p = ffi::lua_tolstring(l, i, &mut len);
                    parts.push(Arg::Lua(std::slice::from_raw_parts(p.cast::<u8>(), len)));
                }
                // A number is a double in Lua 5.1; Redis writes it with 17 significant digits.
                ffi::LUA_TNUMBER => parts.push(Arg::Number(crate::out::fmt_g17(
                    ffi::lua_tonumber(l, i) as f64,
                ))),
                _ => {
                    return script_error(
                        "ERR Lua redis lib command arguments must be strings or integers",
                    )
                }
            }
        }
    }
    // SAFETY: set by `call` for the script now running on this thread and cleared before
    // that borrow ends; a script runs one command at a time (no re-entry: EVAL is not
    // allowed from scripts).
    let (ctx, keys) = unsafe { (&mut *cur.ctx, &*cur.keys) };
    command(ctx, keys, cur.ro, Request::from_args(parts.iter()))
}

/// `redis.call`/`redis.pcall`: runs one command on the script's database.
fn command(ctx: &mut Ctx<'_>, declared: &[Bytes], ro: bool, req: Request) -> Frame {
    let spec = match spec_table::resolve_request(&req) {
        Ok(s) => s,
        Err(CommandError::Arity(_)) => {
            return script_error("ERR Wrong number of args calling Redis command from script")
        }
        Err(_) => return script_error("ERR Unknown Redis command called from script"),
    };
    if spec.has(CommandFlags::NOSCRIPT) {
        return script_error("ERR This Redis command is not allowed from script");
    }
    // Redis counts the commands that may replicate (PUBLISH, SPUBLISH, PFCOUNT) as writes
    // here.
    if ro
        && (spec.has(CommandFlags::WRITE)
            || matches!(spec.name, "publish" | "spublish" | "pfcount"))
    {
        return script_error("ERR Write commands are not allowed from read-only scripts.");
    }
    if spec.has(CommandFlags::WRITE) && REPLICA.load(Ordering::Relaxed) {
        return script_error("READONLY You can't write against a read only replica.");
    }
    let Some(handler) = super::handler(spec) else {
        return local_command(ctx, spec, &req);
    };
    let args: Vec<&[u8]> = req.args().collect();
    if let Ok(idx) = spec_table::key_indexes(spec, &args, false) {
        for &i in &idx {
            let k = args[i];
            if !declared.iter().any(|d| &d[..] == k) && (ctx.db.scratch || !ctx.db.owns(k)) {
                return script_error(
                    "ERR Script attempted to access a non local key in a cluster node",
                );
            }
        }
    }
    let mut out = Out::new(SCRIPT_RESP3.get());
    super::streams::take_log_rewrite();
    {
        let mut inner = Ctx::new(ctx.db, &mut out, ctx.now);
        handler(&mut inner, &req);
        ctx.pushed.append(&mut inner.pushed);
        ctx.hits += inner.hits;
        ctx.misses += inner.misses;
    }
    if crate::notify::on() {
        crate::notify::collect(ctx.db, spec.name, &req, ctx.now);
    }
    let failed = out.buf.first() == Some(&b'-');
    if spec.has(CommandFlags::WRITE) && !failed {
        if !WROTE.get() {
            WROTE.set(true);
            RUNNING_WROTE.fetch_add(1, Ordering::SeqCst);
        }
        match super::streams::take_log_rewrite() {
            // A stream command logged as what it did (see `streams`).
            Some(records) => EFFECTS.with(|e| {
                let mut e = e.borrow_mut();
                for r in records {
                    if let Ok(s) = spec_table::resolve_request(&r) {
                        e.push((s, r));
                    }
                }
            }),
            None => EFFECTS.with(|e| e.borrow_mut().push((spec, req))),
        }
    }
    match FrameDecoder::default().decode(&mut out.buf) {
        Ok(Some(f)) => f,
        _ => script_error("ERR internal: unreadable reply"),
    }
}

/// The commands without a data handler that scripts may call.
fn local_command(ctx: &mut Ctx<'_>, spec: &CommandSpec, req: &Request) -> Frame {
    match spec.name {
        "dbsize" | "keys" | "scan" | "randomkey" => keyspace_command(ctx, spec, req),
        "publish" | "spublish" => {
            let registry = PUBSUB.get();
            if registry.is_null() || !ctx.db.whole_keyspace() {
                return one_shard_only(spec);
            }
            // SAFETY: set by `exec_local` to its shard's registry for the duration of the
            // script that is running now (see `with_pubsub`).
            let n = unsafe { &*registry }.publish(
                req.arg(1),
                req.arg(2),
                spec.name == "spublish",
                PUBSUB_OUTPUT_LIMIT,
            );
            Frame::Integer(n as i64)
        }
        "ping" if req.len() == 1 => Frame::Simple(Bytes::from_static(b"PONG")),
        "ping" | "echo" => Frame::Bulk(req.arg_bytes(1)),
        "time" => {
            let us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0);
            Frame::Array(vec![
                Frame::Bulk(Bytes::from((us / 1_000_000).to_string())),
                Frame::Bulk(Bytes::from((us % 1_000_000).to_string())),
            ])
        }
        _ => script_error("ERR This Redis command is not allowed from script"),
    }
}

/// Most output a subscriber may have queued before a message disconnects it (as for
/// PUBLISH outside scripts).
const PUBSUB_OUTPUT_LIMIT: usize = 32 << 20;

fn one_shard_only(spec: &CommandSpec) -> Frame {
    script_error(&format!(
        "ERR {} is not allowed from scripts on a server with more than one shard",
        spec.name.to_ascii_uppercase()
    ))
}

/// DBSIZE, KEYS, SCAN and RANDOMKEY over the script's database, when it holds the whole
/// keyspace (a one-shard server, as `rcodis-ctl up` runs them). On more shards a script
/// holds only its own shard, so they are refused rather than answered in part.
fn keyspace_command(ctx: &mut Ctx<'_>, spec: &CommandSpec, req: &Request) -> Frame {
    if !ctx.db.whole_keyspace() {
        return one_shard_only(spec);
    }
    let mut out = Out::new(SCRIPT_RESP3.get());
    let now = ctx.now;
    match spec.name {
        "dbsize" => out.int(ctx.db.len() as i64),
        "randomkey" => match ctx.db.random_key(now) {
            Some(k) => out.bulk(&k),
            None => out.null(),
        },
        "keys" => {
            let pat = req.arg(1);
            let all = pat == b"*";
            let mut keys = Vec::new();
            ctx.db.for_each_key(now, |k, _| {
                if all || crate::glob::matches(pat, k, false) {
                    keys.push(k.to_bytes());
                }
            });
            out.array_of_bulks(keys.iter().map(|k| &k[..]));
        }
        _ => {
            if let Some(a) = super::hashes::parse_scan_args(&mut out, req, 1, true) {
                let (mut pos, mut from) =
                    ((a.cursor >> 43) as usize, a.cursor & ((1u64 << 43) - 1));
                let mut keys = Vec::new();
                while pos < rcodis_core::NUM_SLOTS && keys.len() < a.count {
                    let want = a.count - keys.len();
                    let (found, p, f) =
                        crate::server_cmds::scan_step(ctx.db, 0, 1, pos, from, want, now);
                    keys.extend(found);
                    (pos, from) = (p, f);
                }
                keys.retain(|k| {
                    a.pattern
                        .as_ref()
                        .is_none_or(|p| crate::glob::matches(p, k, false))
                        && a.type_.as_ref().is_none_or(|t| {
                            ctx.db.get_quiet(k, now).is_some_and(|e| {
                                t.eq_ignore_ascii_case(e.value.type_name().as_bytes())
                            })
                        })
                });
                out.array(2);
                out.bulk(
                    crate::server_cmds::scan_cursor(pos, from)
                        .to_string()
                        .as_bytes(),
                );
                out.array_of_bulks(keys.iter().map(|k| &k[..]));
            }
        }
    }
    match FrameDecoder::default().decode(&mut out.buf) {
        Ok(Some(f)) => f,
        _ => script_error("ERR internal: unreadable reply"),
    }
}

/// Whether a script is running on this thread (its `redis.call` is the caller).
pub fn running() -> bool {
    CURRENT.with(|c| {
        let v = c.take();
        let r = v.is_some();
        c.set(v);
        r
    })
}

/// Runs a script command with the shard's pub/sub registry reachable from `redis.call`
/// (PUBLISH inside the script).
#[inline(never)]
pub fn call_with_pubsub(
    registry: &crate::pubsub::Registry,
    handler: super::Handler,
    ctx: &mut Ctx<'_>,
    req: &Request,
) {
    PUBSUB.set(registry);
    handler(ctx, req);
    PUBSUB.set(std::ptr::null());
}

/// The `bit` library (LuaBitOp) scripts use: 32-bit operations on numbers.
fn bit(lua: &Lua) -> mlua::Result<Table> {
    fn tobit(v: f64) -> i32 {
        // LuaBitOp: normalised modulo 2^32, as a signed 32-bit integer.
        (v.rem_euclid(4_294_967_296.0) as u64 as u32) as i32
    }
    type Many = mlua::Variadic<f64>;
    let t = lua.create_table()?;
    t.raw_set("tobit", lua.create_function(|_, v: f64| Ok(tobit(v)))?)?;
    t.raw_set("bnot", lua.create_function(|_, v: f64| Ok(!tobit(v)))?)?;
    t.raw_set(
        "band",
        lua.create_function(|_, v: Many| Ok(v.iter().fold(-1, |a, &x| a & tobit(x))))?,
    )?;
    t.raw_set(
        "bor",
        lua.create_function(|_, v: Many| Ok(v.iter().fold(0, |a, &x| a | tobit(x))))?,
    )?;
    t.raw_set(
        "bxor",
        lua.create_function(|_, v: Many| Ok(v.iter().fold(0, |a, &x| a ^ tobit(x))))?,
    )?;
    let shift = |f: fn(i32, u32) -> i32| {
        lua.create_function(move |_, (v, n): (f64, f64)| Ok(f(tobit(v), tobit(n) as u32 & 31)))
    };
    t.raw_set("lshift", shift(|v, n| ((v as u32) << n) as i32)?)?;
    t.raw_set("rshift", shift(|v, n| ((v as u32) >> n) as i32)?)?;
    t.raw_set("arshift", shift(|v, n| v >> n)?)?;
    t.raw_set("rol", shift(|v, n| (v as u32).rotate_left(n) as i32)?)?;
    t.raw_set("ror", shift(|v, n| (v as u32).rotate_right(n) as i32)?)?;
    t.raw_set(
        "bswap",
        lua.create_function(|_, v: f64| Ok((tobit(v) as u32).swap_bytes() as i32))?,
    )?;
    t.raw_set(
        "tohex",
        lua.create_function(|_, (v, n): (f64, Option<f64>)| {
            let n = n.map(tobit).unwrap_or(8);
            let (upper, width) = if n < 0 {
                (true, n.unsigned_abs().min(8))
            } else {
                (false, (n as u32).min(8))
            };
            let s = format!("{:08x}", tobit(v) as u32);
            let s = &s[8 - width as usize..];
            Ok(if upper {
                s.to_uppercase()
            } else {
                s.to_string()
            })
        })?,
    )?;
    Ok(t)
}

/// The `cjson` library scripts use: `encode`, `decode`, `null`.
fn cjson(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "encode",
        lua.create_function(|lua, v: Value| {
            let j: serde_json::Value = lua
                .from_value_with(
                    v,
                    mlua::serde::DeserializeOptions::new().deny_unsupported_types(false),
                )
                .map_err(|e| mlua::Error::runtime(format!("Cannot serialise: {e}")))?;
            serde_json::to_string(&j).map_err(mlua::Error::runtime)
        })?,
    )?;
    t.raw_set(
        "decode",
        lua.create_function(|lua, s: mlua::LuaString| {
            let j: serde_json::Value = serde_json::from_slice(&s.as_bytes()).map_err(|e| {
                mlua::Error::runtime(format!("Expected value but found invalid token: {e}"))
            })?;
            lua.to_value_with(
                &j,
                mlua::serde::SerializeOptions::new().set_array_metatable(false),
            )
        })?,
    )?;
    t.raw_set(
        "null",
        Value::LightUserData(mlua::LightUserData(std::ptr::null_mut())),
    )?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_the_skip_monitor_commands() {
        let mut names: Vec<&str> = rcodis_core::cmd::COMMANDS
            .iter()
            .filter(|c| is_script(c))
            .map(|c| c.name)
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "eval",
                "eval_ro",
                "evalsha",
                "evalsha_ro",
                "fcall",
                "fcall_ro"
            ]
        );
    }

    #[test]
    fn sha1_matches_redis() {
        // redis-cli SCRIPT LOAD "return 1"
        assert_eq!(
            sha1_hex(b"return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }
}
