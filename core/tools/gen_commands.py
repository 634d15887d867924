#!/usr/bin/env python3
"""Generates core/src/cmd/table.rs, the command table.

Input: core/tools/redis-7.0.15-command.json, the output of `redis-cli --json COMMAND` against
Debian's redis-server 7.0.15 (the compatibility level rcodis targets), plus the Codis SLOTS*
commands (codis-spec section 2.2), the few later subcommands clients send at connect, and the
proxy's policy for each command, all below.

Run: python3 core/tools/gen_commands.py && cargo fmt
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "redis-7.0.15-command.json")
OUT = os.path.join(HERE, "..", "src", "cmd", "table.rs")

FLAG_NAMES = [
    "write", "readonly", "denyoom", "admin", "pubsub", "noscript", "blocking", "loading",
    "stale", "skip_monitor", "skip_slowlog", "asking", "fast", "no_auth", "no_mandatory_keys",
    "no_multi", "movablekeys", "allow_busy", "no_async_loading",
]
KEY_FLAG_NAMES = ["RO", "RW", "OW", "RM", "access", "update", "insert", "delete", "not_key",
                  "incomplete", "variable_flags"]

# Codis slot commands: (name, arity, flags, first, last, step, key specs)
INDEX1 = [{"flags": ["RW", "access", "delete"], "begin_search": {"type": "index", "spec": {"index": 1}},
           "find_keys": {"type": "range", "spec": {"lastkey": 0, "keystep": 1, "limit": 0}}}]
CODIS = [
    ("slotsinfo", -1, ["readonly", "fast"], 0, 0, 0, []),
    ("slotsscan", -3, ["readonly"], 0, 0, 0, []),
    ("slotsdel", -2, ["write"], 0, 0, 0, []),
    ("slotshashkey", -1, ["readonly", "fast"], 0, 0, 0, []),
    ("slotscheck", 1, ["readonly"], 0, 0, 0, []),
    ("slotsmgrtslot", 5, ["write"], 0, 0, 0, []),
    ("slotsmgrtone", 5, ["write"], 0, 0, 0, []),
    ("slotsmgrttagslot", 5, ["write"], 0, 0, 0, []),
    ("slotsmgrttagone", 5, ["write"], 0, 0, 0, []),
    ("slotsrestore", -4, ["write", "denyoom"], 0, 0, 0, []),
    ("slotsmgrtslot-async", 8, ["write", "noscript"], 0, 0, 0, []),
    ("slotsmgrttagslot-async", 8, ["write", "noscript"], 0, 0, 0, []),
    ("slotsmgrtone-async", -7, ["write", "noscript"], 0, 0, 0, []),
    ("slotsmgrttagone-async", -7, ["write", "noscript"], 0, 0, 0, []),
    ("slotsmgrtone-async-dump", -4, ["readonly"], 0, 0, 0, []),
    ("slotsmgrttagone-async-dump", -4, ["readonly"], 0, 0, 0, []),
    ("slotsmgrt-async-fence", 1, ["readonly", "noscript"], 0, 0, 0, []),
    ("slotsmgrt-async-cancel", 1, ["fast"], 0, 0, 0, []),
    ("slotsmgrt-async-status", 1, ["fast"], 0, 0, 0, []),
    ("slotsmgrt-exec-wrapper", -3, ["write", "denyoom"], 1, 1, 1, INDEX1),
    ("slotsrestore-async", -2, ["write", "denyoom"], 0, 0, 0, []),
    ("slotsrestore-async-auth", 2, ["noscript", "loading", "stale", "fast", "no_auth"], 0, 0, 0, []),
    ("slotsrestore-async-select", 2, ["loading", "fast"], 0, 0, 0, []),
    ("slotsrestore-async-ack", 3, ["write"], 0, 0, 0, []),
]

# Subcommands Redis added after 7.0 that current client libraries send at connect (redis-py,
# go-redis and Jedis send CLIENT SETINFO), as Redis 7.2's COMMAND describes them.
LATER_SUBS = {
    "client": [
        ["client|setinfo", 4, ["noscript", "loading", "stale"], 0, 0, 0, ["@slow", "@connection"],
         ["request_policy:all_nodes", "response_policy:all_succeeded"], [], []],
        ["client|no-touch", 3, ["noscript", "loading", "stale"], 0, 0, 0, ["@slow", "@connection"],
         [], [], []],
    ],
}

# Proxy policy. Anything not named: a keyed command is Forward; a keyless one NotAllowed.
LOCAL = ["ping", "echo", "quit", "auth", "select", "hello", "reset", "command", "info", "time",
         "client|setname", "client|getname", "client|id", "client|info", "client|no-evict",
         "client|setinfo", "client|list", "client|kill", "readonly", "readwrite", "lastsave",
         "role"]
SPLIT_MGET = ["mget"]
SPLIT_MSET = ["mset"]
SPLIT_SUM = ["del", "unlink", "exists", "touch"]
FANOUT = ["scan", "keys", "dbsize", "randomkey", "flushdb", "flushall", "function|flush",
          "script|flush", "script|load", "script|exists", "config|get", "config|set",
          "config|resetstat", "function|load", "function|delete", "function|restore",
          "function|stats", "function|kill", "script|kill"]
# Keyless commands answered by the group that serves slot 0 (where keyless scripts run): the
# libraries FUNCTION LOAD put on every group, read from one of them.
SLOT0 = ["function|list", "function|dump", "function|help", "script|help"]
PUBSUB = ["subscribe", "unsubscribe", "psubscribe", "punsubscribe", "publish", "ssubscribe",
          "sunsubscribe", "spublish", "pubsub|channels", "pubsub|numsub", "pubsub|numpat",
          "pubsub|shardchannels", "pubsub|shardnumsub"]
TRANSACTION = ["multi", "exec", "discard", "watch", "unwatch"]
NOT_ALLOWED = ["debug", "shutdown", "replicaof", "slaveof", "monitor", "sync", "psync",
               "replconf", "bgsave", "save", "bgrewriteaof", "cluster", "asking", "migrate",
               "move", "swapdb", "failover", "wait", "slowlog", "latency", "acl", "module",
               "lolwut", "restore-asking", "object|help", "memory|doctor", "memory|malloc-stats",
               "memory|purge", "memory|stats", "memory|help"]


def policy(name, keyed, arity_keys_multi):
    if name.startswith("slots"):
        return "NotAllowed"
    if name in LOCAL or name.split("|")[0] == "command":
        return "Local"
    if name in SPLIT_MGET:
        return "Split(SplitKind::Mget)"
    if name in SPLIT_MSET:
        return "Split(SplitKind::Mset)"
    if name in SPLIT_SUM:
        return "Split(SplitKind::Sum)"
    if name in FANOUT:
        return "Fanout"
    if name in SLOT0:
        return "Forward"
    if name in PUBSUB:
        return "PubSub"
    if name in TRANSACTION:
        return "Transaction"
    if name in NOT_ALLOWED or name.split("|")[0] in NOT_ALLOWED:
        return "NotAllowed"
    if keyed:
        return "SameSlot" if arity_keys_multi else "Forward"
    return "NotAllowed"


def multi_key(cmd):
    """Whether a command can name more than one key."""
    _, arity, flags, first, last, step, *_ = cmd
    specs = cmd[8] if len(cmd) > 8 else []
    if "movablekeys" in flags:
        return True
    if len([s for s in specs if "not_key" not in s["flags"]]) > 1:
        return True
    return first > 0 and (last < 0 or last > first)


def rs_flags(flags):
    bits = [f"CommandFlags::{f.upper()}.0" for f in flags if f in FLAG_NAMES]
    return "CommandFlags(" + (" | ".join(bits) if bits else "0") + ")"


def rs_keyflags(flags):
    bits = [f"KeyFlags::{f.upper()}.0" for f in flags if f in KEY_FLAG_NAMES]
    return "KeyFlags(" + (" | ".join(bits) if bits else "0") + ")"


def rs_spec(s):
    b = s["begin_search"]
    f = s["find_keys"]
    if b["type"] == "index":
        begin = f"BeginSearch::Index({b['spec']['index']})"
    elif b["type"] == "keyword":
        begin = f"BeginSearch::Keyword {{ keyword: \"{b['spec']['keyword']}\", start_from: {b['spec']['startfrom']} }}"
    else:
        begin = "BeginSearch::Unknown"
    if f["type"] == "range":
        sp = f["spec"]
        find = f"FindKeys::Range {{ last_key: {sp['lastkey']}, key_step: {sp['keystep']}, limit: {sp['limit']} }}"
    elif f["type"] == "keynum":
        sp = f["spec"]
        find = f"FindKeys::KeyNum {{ keynum_idx: {sp['keynumidx']}, first_key: {sp['firstkey']}, key_step: {sp['keystep']} }}"
    else:
        find = "FindKeys::Unknown"
    notes = json.dumps(s.get("notes", ""))
    return f"KeySpec {{ flags: {rs_keyflags(s['flags'])}, begin: {begin}, find: {find}, notes: {notes} }}"


NEXT_ID = [0]


def entry(cmd, ident_prefix, out_statics, ids):
    name, arity, flags, first, last, step = cmd[:6]
    cats = cmd[6] if len(cmd) > 6 else []
    tips = cmd[7] if len(cmd) > 7 else []
    specs = cmd[8] if len(cmd) > 8 else []
    subs = cmd[9] if len(cmd) > 9 else []
    ident = ident_prefix + name.upper().replace("|", "_").replace("-", "_")
    sub_ident = "&[]"
    if subs:
        sub_entries = [entry(s, ident + "_", out_statics, ids) for s in sorted(subs, key=lambda c: c[0])]
        out_statics.append(f"static {ident}_SUBS: [CommandSpec; {len(sub_entries)}] = [\n" + ",\n".join(sub_entries) + "];\n")
        sub_ident = f"&{ident}_SUBS"
    keyed = bool(specs) or first > 0
    pol = policy(name, keyed, multi_key(cmd))
    specs_rs = "&[" + ", ".join(rs_spec(s) for s in specs) + "]"
    return (f"CommandSpec {{ id: {ids[name]}, name: \"{name}\", arity: {arity}, flags: {rs_flags(flags)}, "
            f"first_key: {first}, last_key: {last}, key_step: {step}, key_specs: {specs_rs}, "
            f"subcommands: {sub_ident}, proxy: ProxyPolicy::{pol}, "
            f"acl_categories: &[{', '.join(json.dumps(c) for c in cats)}], "
            f"tips: &[{', '.join(json.dumps(t) for t in tips)}] }}")


def main():
    cmds = json.load(open(SRC))
    for (name, arity, flags, first, last, step, specs) in CODIS:
        cats = ["@write" if "write" in flags else "@read", "@slow"]
        cmds.append([name, arity, flags, first, last, step, cats, [], specs, []])
    for c in cmds:
        for sub in LATER_SUBS.get(c[0], []):
            assert all(x[0] != sub[0] for x in c[9]), sub[0]
            c[9].append(sub)
    cmds.sort(key=lambda c: c[0])
    # Dense ids: top-level commands first (in name order), then subcommands.
    ids = {}
    for c in cmds:
        ids[c[0]] = len(ids)
    for c in cmds:
        for sub in sorted(c[9] if len(c) > 9 else [], key=lambda x: x[0]):
            ids[sub[0]] = len(ids)
    statics = []
    entries = [entry(c, "", statics, ids) for c in cmds]
    with open(OUT, "w") as f:
        f.write("// @generated by core/tools/gen_commands.py from Redis 7.0.15's COMMAND output plus the\n")
        f.write("// Codis SLOTS* commands and CLIENT SETINFO/NO-TOUCH (Redis 7.2). Do not edit by hand:\n")
        f.write("// change the generator and run it again.\n\n")
        f.write("use super::spec::*;\n\n")
        for s in statics:
            f.write(s + "\n")
        f.write(f"/// Number of command and subcommand specs (ids are 0..NUM_SPECS).\npub const NUM_SPECS: usize = {len(ids)};\n\n")
        f.write(f"/// Every command, sorted by name.\npub static COMMANDS: [CommandSpec; {len(entries)}] = [\n")
        f.write(",\n".join(entries))
        f.write("];\n")
    print(f"{len(entries)} commands -> {OUT}")


main()
