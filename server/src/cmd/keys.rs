//! Generic key commands that work on one database.

use hashbrown::HashMap;
use rcodis_core::resp::Request;

use super::{int_arg, is, owned, Ctx, Handler, NO_KEY, SYNTAX};

pub fn register(m: &mut HashMap<&'static str, Handler>) {
    m.insert("del", del);
    m.insert("unlink", del);
    m.insert("exists", exists);
    m.insert("touch", touch);
    m.insert("type", type_);
    m.insert("expire", expire);
    m.insert("pexpire", pexpire);
    m.insert("expireat", expireat);
    m.insert("pexpireat", pexpireat);
    m.insert("ttl", ttl);
    m.insert("pttl", pttl);
    m.insert("expiretime", expiretime);
    m.insert("pexpiretime", pexpiretime);
    m.insert("persist", persist);
    m.insert("rename", rename);
    m.insert("renamenx", renamenx);
    m.insert("copy", copy);
    m.insert("object|encoding", object_encoding);
    m.insert("object|idletime", object_idletime);
    m.insert("object|freq", object_freq);
    m.insert("object|refcount", object_refcount);
    m.insert("memory|usage", memory_usage);
    m.insert("dump", dump);
    m.insert("restore", restore);
}

fn dump(ctx: &mut Ctx<'_>, req: &Request) {
    let payload = ctx
        .lookup(req.arg(1))
        .map(|e| crate::db::dump::dump(&e.value));
    match payload {
        Some(p) => ctx.out.bulk(&p),
        None => ctx.out.null(),
    }
}

/// RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f], checked in Redis's order.
fn restore(ctx: &mut Ctx<'_>, req: &Request) {
    let (mut replace, mut absttl) = (false, false);
    let (mut idle, mut freq): (Option<i64>, Option<i64>) = (None, None);
    let mut i = 4;
    while i < req.len() {
        let a = req.arg(i);
        let more = i + 1 < req.len();
        if is(a, "replace") {
            replace = true;
        } else if is(a, "absttl") {
            absttl = true;
        } else if is(a, "idletime") && more && freq.is_none() {
            let Some(v) = int_arg(ctx.out, req.arg(i + 1)) else {
                return;
            };
            if v < 0 {
                return ctx.out.err("ERR Invalid IDLETIME value, must be >= 0");
            }
            idle = Some(v);
            i += 1;
        } else if is(a, "freq") && more && idle.is_none() {
            let Some(v) = int_arg(ctx.out, req.arg(i + 1)) else {
                return;
            };
            if !(0..=255).contains(&v) {
                return ctx
                    .out
                    .err("ERR Invalid FREQ value, must be >= 0 and <= 255");
            }
            freq = Some(v);
            i += 1;
        } else {
            return ctx.out.err(SYNTAX);
        }
        i += 1;
    }
    let key = req.arg(1);
    if !replace && ctx.db.exists(key, ctx.now) {
        return ctx.out.err("BUSYKEY Target key name already exists.");
    }
    let Some(ttl) = int_arg(ctx.out, req.arg(2)) else {
        return;
    };
    if ttl < 0 {
        return ctx.out.err("ERR Invalid TTL value, must be >= 0");
    }
    let value = match crate::db::dump::restore(req.arg(3)) {
        Ok(v) => v,
        Err(e) => return ctx.out.err(e.message()),
    };
    let at = match (ttl, absttl) {
        (0, _) => 0,
        (t, true) => t as u64,
        (t, false) => ctx.now.saturating_add(t as u64),
    };
    if replace {
        ctx.db.remove(key, ctx.now);
    }
    if at != 0 && at <= ctx.now {
        // Already expired: nothing is created (an old key was replaced by nothing).
        return ctx.out.ok();
    }
    let mut e = crate::db::Entry::new(value, ctx.now);
    e.expire_at = at;
    if let Some(idle) = idle {
        e.set_access_ms(ctx.now.saturating_sub(idle as u64 * 1000));
    }
    ctx.db.set_entry(key, e);
    ctx.pushed.push(owned(key));
    ctx.out.ok();
}

fn del(ctx: &mut Ctx<'_>, req: &Request) {
    let mut n = 0;
    for i in 1..req.len() {
        if ctx.db.remove(req.arg(i), ctx.now).is_some() {
            n += 1;
        }
    }
    ctx.out.int(n);
}

fn exists(ctx: &mut Ctx<'_>, req: &Request) {
    let mut n = 0;
    for i in 1..req.len() {
        if ctx.lookup(req.arg(i)).is_some() {
            n += 1;
        }
    }
    ctx.out.int(n);
}

fn touch(ctx: &mut Ctx<'_>, req: &Request) {
    let mut n = 0;
    for i in 1..req.len() {
        if ctx.db.get(req.arg(i), ctx.now).is_some() {
            n += 1;
        }
    }
    ctx.out.int(n);
}

fn type_(ctx: &mut Ctx<'_>, req: &Request) {
    let t = ctx
        .lookup(req.arg(1))
        .map(|e| e.value.type_name())
        .unwrap_or("none");
    ctx.out.simple(t);
}

/// EXPIRE and friends: `unit_ms` for P*, `absolute` for *AT.
fn expire_generic(ctx: &mut Ctx<'_>, req: &Request, unit_ms: bool, absolute: bool, name: &str) {
    let key = req.arg(1);
    let Some(v) = int_arg(ctx.out, req.arg(2)) else {
        return;
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for i in 3..req.len() {
        let a = req.arg(i);
        if is(a, "nx") {
            nx = true
        } else if is(a, "xx") {
            xx = true
        } else if is(a, "gt") {
            gt = true
        } else if is(a, "lt") {
            lt = true
        } else {
            return ctx.out.err(&format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(a)
            ));
        }
    }
    if nx && (xx || gt || lt) {
        return ctx
            .out
            .err("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return ctx
            .out
            .err("ERR GT and LT options at the same time are not compatible");
    }
    let ms = if unit_ms {
        Some(v)
    } else {
        v.checked_mul(1000)
    };
    let at = ms.and_then(|ms| {
        if absolute {
            Some(ms)
        } else {
            ms.checked_add(ctx.now as i64)
        }
    });
    let Some(at) = at else {
        return ctx
            .out
            .err(&format!("ERR invalid expire time in '{name}' command"));
    };
    let Some(e) = ctx.db.get(key, ctx.now) else {
        return ctx.out.int(0);
    };
    let cur = e.expire_at;
    if (nx && cur != 0) || (xx && cur == 0) {
        return ctx.out.int(0);
    }
    // A key without TTL counts as an infinite TTL for GT and LT.
    if gt && (cur == 0 || at <= cur as i64) {
        return ctx.out.int(0);
    }
    if lt && cur != 0 && at >= cur as i64 {
        return ctx.out.int(0);
    }
    if at <= ctx.now as i64 {
        ctx.db.remove(key, ctx.now);
    } else {
        ctx.db.set_expire(key, at as u64, ctx.now);
    }
    ctx.out.int(1);
}

fn expire(ctx: &mut Ctx<'_>, req: &Request) {
    expire_generic(ctx, req, false, false, "expire")
}

fn pexpire(ctx: &mut Ctx<'_>, req: &Request) {
    expire_generic(ctx, req, true, false, "pexpire")
}

fn expireat(ctx: &mut Ctx<'_>, req: &Request) {
    expire_generic(ctx, req, false, true, "expireat")
}

fn pexpireat(ctx: &mut Ctx<'_>, req: &Request) {
    expire_generic(ctx, req, true, true, "pexpireat")
}

/// -2 missing, -1 no TTL, else the remaining (or absolute) time.
fn ttl_generic(ctx: &mut Ctx<'_>, req: &Request, ms: bool, absolute: bool) {
    let now = ctx.now;
    match ctx.lookup(req.arg(1)) {
        None => ctx.out.int(-2),
        Some(e) if e.expire_at == 0 => ctx.out.int(-1),
        Some(e) => {
            let at = e.expire_at;
            let v = if absolute {
                if ms {
                    at
                } else {
                    at / 1000
                }
            } else {
                let left = at.saturating_sub(now);
                if ms {
                    left
                } else {
                    (left + 500) / 1000
                }
            };
            ctx.out.int(v as i64)
        }
    }
}

fn ttl(ctx: &mut Ctx<'_>, req: &Request) {
    ttl_generic(ctx, req, false, false)
}

fn pttl(ctx: &mut Ctx<'_>, req: &Request) {
    ttl_generic(ctx, req, true, false)
}

fn expiretime(ctx: &mut Ctx<'_>, req: &Request) {
    ttl_generic(ctx, req, false, true)
}

fn pexpiretime(ctx: &mut Ctx<'_>, req: &Request) {
    ttl_generic(ctx, req, true, true)
}

fn persist(ctx: &mut Ctx<'_>, req: &Request) {
    let has_ttl = ctx
        .db
        .get(req.arg(1), ctx.now)
        .is_some_and(|e| e.expire_at != 0);
    if has_ttl {
        ctx.db.set_expire(req.arg(1), 0, ctx.now);
    }
    ctx.out.int(has_ttl as i64);
}

fn rename_generic(ctx: &mut Ctx<'_>, req: &Request, nx: bool) {
    let (src, dst) = (req.arg(1), req.arg(2));
    let Some(entry) = ctx.db.get(src, ctx.now).map(|e| e.clone()) else {
        return ctx.out.err(NO_KEY);
    };
    if src == dst {
        return if nx { ctx.out.int(0) } else { ctx.out.ok() };
    }
    if nx && ctx.db.exists(dst, ctx.now) {
        return ctx.out.int(0);
    }
    ctx.db.remove(src, ctx.now);
    ctx.db.set_entry(dst, entry);
    if nx {
        ctx.out.int(1)
    } else {
        ctx.out.ok()
    }
}

fn rename(ctx: &mut Ctx<'_>, req: &Request) {
    rename_generic(ctx, req, false)
}

fn renamenx(ctx: &mut Ctx<'_>, req: &Request) {
    rename_generic(ctx, req, true)
}

/// COPY src dst [REPLACE] within one database (COPY ... DB n is handled by the shard).
fn copy(ctx: &mut Ctx<'_>, req: &Request) {
    let mut replace = false;
    let mut i = 3;
    while i < req.len() {
        if is(req.arg(i), "replace") {
            replace = true;
        } else if is(req.arg(i), "db") && i + 1 < req.len() {
            // Same database as the client's (other databases are routed elsewhere).
            i += 1;
        } else {
            return ctx.out.err(SYNTAX);
        }
        i += 1;
    }
    let (src, dst) = (req.arg(1), req.arg(2));
    if src == dst {
        return ctx
            .out
            .err("ERR source and destination objects are the same");
    }
    let Some(mut entry) = ctx.db.get(src, ctx.now).cloned() else {
        return ctx.out.int(0);
    };
    if ctx.db.exists(dst, ctx.now) && !replace {
        return ctx.out.int(0);
    }
    entry.set_access_ms(ctx.now);
    ctx.db.set_entry(dst, entry);
    ctx.out.int(1);
}

fn object_encoding(ctx: &mut Ctx<'_>, req: &Request) {
    match ctx.db.get_quiet(req.arg(2), ctx.now).map(|e| e.encoding()) {
        Some(enc) => ctx.out.bulk(enc.as_bytes()),
        None => ctx.out.null(),
    }
}

fn object_idletime(ctx: &mut Ctx<'_>, req: &Request) {
    let now = ctx.now;
    match ctx.db.get_quiet(req.arg(2), now) {
        Some(e) => {
            let idle = now.saturating_sub(e.access_ms()) / 1000;
            ctx.out.int(idle as i64)
        }
        None => ctx.out.null(),
    }
}

fn object_freq(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(freq) = ctx.db.get_quiet(req.arg(2), ctx.now).map(|e| e.freq) else {
        return ctx.out.null();
    };
    if crate::memory::policy().is_lfu() {
        return ctx.out.int(freq as i64);
    }
    ctx.out.err(
        "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note \
         that when switching between policies at runtime LRU and LFU data will take some time \
         to adjust.",
    );
}

fn object_refcount(ctx: &mut Ctx<'_>, req: &Request) {
    match ctx.db.get_quiet(req.arg(2), ctx.now) {
        Some(_) => ctx.out.int(1),
        None => ctx.out.null(),
    }
}

fn memory_usage(ctx: &mut Ctx<'_>, req: &Request) {
    if req.len() != 3 && !(req.len() == 5 && is(req.arg(3), "samples")) {
        return ctx.out.err(SYNTAX);
    }
    let key = req.arg(2);
    match ctx.db.get_quiet(key, ctx.now) {
        Some(e) => {
            let n = e.value.mem_size() + key.len() + 48;
            ctx.out.int(n as i64)
        }
        None => ctx.out.null(),
    }
}
