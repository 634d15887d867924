use super::*;

fn keys(args: &[&str]) -> Vec<usize> {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    let spec = resolve(|i| a.get(i).copied()).expect("known command");
    key_indexes(spec, &a, false)
        .expect("valid key layout")
        .to_vec()
}

fn key_names(args: &[&str]) -> Vec<String> {
    keys(args)
        .into_iter()
        .map(|i| args[i].to_string())
        .collect()
}

#[test]
fn table_is_complete_and_sorted() {
    assert!(COMMANDS.len() >= 264);
    assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name));
    for name in [
        "get",
        "set",
        "blmpop",
        "zunionstore",
        "xreadgroup",
        "eval",
        "slotsmgrttagslot-async",
        "slotsmgrt-exec-wrapper",
        "slotsrestore-async-auth",
        "hello",
        "lcs",
    ] {
        assert!(lookup(name.as_bytes()).is_some(), "{name} missing");
    }
    assert_eq!(lookup(b"GeT").unwrap().name, "get");
    assert!(lookup(b"nosuch").is_none());
    assert!(lookup(&[b'a'; 100]).is_none());
}

#[test]
fn arity_and_flags() {
    let get = lookup(b"get").unwrap();
    assert_eq!(get.arity, 2);
    assert!(get.has(CommandFlags::READONLY) && get.has(CommandFlags::FAST));
    assert!(get.arity_ok(2) && !get.arity_ok(3));
    let mset = lookup(b"mset").unwrap();
    assert!(mset.arity_ok(3) && mset.arity_ok(5) && !mset.arity_ok(2));
    assert!(lookup(b"blpop").unwrap().has(CommandFlags::BLOCKING));
    assert!(lookup(b"subscribe").unwrap().has(CommandFlags::PUBSUB));
    assert!(lookup(b"flushall").unwrap().has(CommandFlags::WRITE));
    assert_eq!(
        lookup(b"get").unwrap().flags.names().collect::<Vec<_>>(),
        ["readonly", "fast"]
    );
}

#[test]
fn error_wording() {
    let r = resolve_request(&crate::resp::Request::from_args(["foo", "a", "b"]));
    assert_eq!(
        r.unwrap_err().message(),
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    );
    let r = resolve_request(&crate::resp::Request::from_args(["nope"]));
    assert_eq!(
        r.unwrap_err().message(),
        "ERR unknown command 'nope', with args beginning with: "
    );
    let r = resolve_request(&crate::resp::Request::from_args(["GET"]));
    assert_eq!(
        r.unwrap_err().message(),
        "ERR wrong number of arguments for 'get' command"
    );
    let r = resolve_request(&crate::resp::Request::from_args(["config", "bogus"]));
    assert_eq!(
        r.unwrap_err().message(),
        "ERR unknown subcommand 'bogus'. Try CONFIG HELP."
    );
    let r = resolve_request(&crate::resp::Request::from_args(["config", "get"]));
    assert_eq!(
        r.unwrap_err().message(),
        "ERR wrong number of arguments for 'config|get' command"
    );
    assert_eq!(
        resolve_request(&crate::resp::Request::from_args(["CONFIG", "GET", "x"]))
            .unwrap()
            .name,
        "config|get"
    );
}

#[test]
fn simple_shapes() {
    assert_eq!(keys(&["get", "k"]), [1]);
    assert_eq!(keys(&["mset", "a", "1", "b", "2"]), [1, 3]);
    assert_eq!(keys(&["mget", "a", "b", "c"]), [1, 2, 3]);
    assert_eq!(keys(&["del", "a", "b"]), [1, 2]);
    assert_eq!(keys(&["rename", "a", "b"]), [1, 2]);
    assert_eq!(keys(&["lmove", "a", "b", "left", "right"]), [1, 2]);
    assert_eq!(keys(&["blpop", "a", "b", "0"]), [1, 2]);
    assert_eq!(keys(&["bitop", "and", "d", "a", "b"]), [2, 3, 4]);
    assert_eq!(keys(&["lcs", "a", "b"]), [1, 2]);
    assert_eq!(keys(&["object", "encoding", "k"]), [2]);
    assert_eq!(keys(&["memory", "usage", "k"]), [2]);
    assert_eq!(keys(&["xinfo", "stream", "s"]), [2]);
    assert_eq!(keys(&["ping"]), Vec::<usize>::new());
    assert_eq!(keys(&["watch", "a", "b"]), [1, 2]);
    assert_eq!(keys(&["slotsmgrt-exec-wrapper", "k", "get", "k"]), [1]);
}

#[test]
fn numkeys_shapes() {
    assert_eq!(key_names(&["eval", "s", "2", "a", "b", "x"]), ["a", "b"]);
    assert_eq!(
        key_names(&["evalsha", "sha", "0", "x"]),
        Vec::<String>::new()
    );
    assert_eq!(key_names(&["fcall", "f", "1", "a", "x"]), ["a"]);
    assert_eq!(
        key_names(&["zunionstore", "d", "2", "a", "b", "weights", "1", "2"]),
        ["d", "a", "b"]
    );
    assert_eq!(key_names(&["zinterstore", "d", "1", "a"]), ["d", "a"]);
    assert_eq!(
        key_names(&["zdiffstore", "d", "2", "a", "b"]),
        ["d", "a", "b"]
    );
    assert_eq!(
        key_names(&["zunion", "2", "a", "b", "withscores"]),
        ["a", "b"]
    );
    assert_eq!(key_names(&["lmpop", "2", "a", "b", "left"]), ["a", "b"]);
    assert_eq!(
        key_names(&["blmpop", "0", "2", "a", "b", "left"]),
        ["a", "b"]
    );
    assert_eq!(key_names(&["zmpop", "1", "a", "min"]), ["a"]);
    assert_eq!(
        key_names(&["bzmpop", "1.5", "2", "a", "b", "max"]),
        ["a", "b"]
    );
    assert_eq!(
        key_names(&["sintercard", "2", "a", "b", "limit", "1"]),
        ["a", "b"]
    );
    assert_eq!(key_names(&["zintercard", "2", "a", "b"]), ["a", "b"]);
    // A count that runs past the arguments is invalid.
    let a: Vec<&[u8]> = ["eval", "s", "5", "a"]
        .iter()
        .map(|s| s.as_bytes())
        .collect();
    assert_eq!(
        key_indexes(lookup(b"eval").unwrap(), &a, false),
        Err(InvalidKeyArgs)
    );
    let a: Vec<&[u8]> = ["eval", "s", "x"].iter().map(|s| s.as_bytes()).collect();
    assert_eq!(
        key_indexes(lookup(b"eval").unwrap(), &a, false),
        Err(InvalidKeyArgs)
    );
    // A count near i64::MAX (it overflowed the last key's index).
    for cmd in ["eval", "zunionstore", "lmpop", "zdiff", "sintercard"] {
        let mut a: Vec<&[u8]> = vec![cmd.as_bytes(), b"9223372036854775807", b"a", b"b"];
        if cmd == "eval" || cmd == "zunionstore" {
            a.insert(1, b"s");
        }
        assert_eq!(
            key_indexes(lookup(cmd.as_bytes()).unwrap(), &a, false),
            Err(InvalidKeyArgs),
            "{cmd}"
        );
    }
}

#[test]
fn keyword_shapes() {
    assert_eq!(
        key_names(&["xread", "count", "2", "streams", "a", "b", "0", "0"]),
        ["a", "b"]
    );
    assert_eq!(
        key_names(&["xread", "block", "0", "streams", "streams", "0"]),
        ["streams"]
    );
    assert_eq!(
        key_names(&["xreadgroup", "group", "streams", "c", "streams", "s", ">"]),
        ["s"]
    );
    let a: Vec<&[u8]> = ["xread", "streams", "a", "b", "0"]
        .iter()
        .map(|s| s.as_bytes())
        .collect();
    assert_eq!(
        key_indexes(lookup(b"xread").unwrap(), &a, false),
        Err(InvalidKeyArgs)
    );
    assert_eq!(key_names(&["sort", "k"]), ["k"]);
    assert_eq!(
        key_names(&["sort", "k", "by", "store", "get", "#", "store", "dst"]),
        ["k", "dst"]
    );
    assert_eq!(
        key_names(&["sort", "k", "limit", "0", "10", "store", "d"]),
        ["k", "d"]
    );
    assert_eq!(key_names(&["migrate", "h", "1", "k", "0", "100"]), ["k"]);
    assert_eq!(
        key_names(&["migrate", "h", "1", "", "0", "100", "copy", "auth", "keys", "keys", "a", "b"]),
        ["a", "b"]
    );
    assert_eq!(
        key_names(&["georadius", "g", "1", "2", "3", "km", "store", "d"]),
        ["g", "d"]
    );
    assert_eq!(
        key_names(&["georadiusbymember", "g", "m", "3", "km", "storedist", "d"]),
        ["g", "d"]
    );
}

#[test]
fn not_keys() {
    let a: Vec<&[u8]> = ["spublish", "ch", "msg"]
        .iter()
        .map(|s| s.as_bytes())
        .collect();
    let spec = lookup(b"spublish").unwrap();
    assert!(key_indexes(spec, &a, false).unwrap().is_empty());
    assert_eq!(key_indexes(spec, &a, true).unwrap().to_vec(), [1]);
}

#[test]
fn proxy_policies() {
    let p = |n: &str| lookup(n.as_bytes()).unwrap().proxy;
    let ps = |c: &str, s: &str| {
        lookup_sub(lookup(c.as_bytes()).unwrap(), s.as_bytes())
            .unwrap()
            .proxy
    };
    assert_eq!(p("get"), ProxyPolicy::Forward);
    assert_eq!(p("hset"), ProxyPolicy::Forward);
    assert_eq!(p("mget"), ProxyPolicy::Split(SplitKind::Mget));
    assert_eq!(p("mset"), ProxyPolicy::Split(SplitKind::Mset));
    assert_eq!(p("unlink"), ProxyPolicy::Split(SplitKind::Sum));
    assert_eq!(p("msetnx"), ProxyPolicy::SameSlot);
    assert_eq!(p("rename"), ProxyPolicy::SameSlot);
    assert_eq!(p("eval"), ProxyPolicy::SameSlot);
    assert_eq!(p("blpop"), ProxyPolicy::SameSlot);
    assert_eq!(p("bzmpop"), ProxyPolicy::SameSlot);
    assert_eq!(p("ping"), ProxyPolicy::Local);
    assert_eq!(p("hello"), ProxyPolicy::Local);
    assert_eq!(p("scan"), ProxyPolicy::Fanout);
    assert_eq!(p("flushall"), ProxyPolicy::Fanout);
    assert_eq!(p("subscribe"), ProxyPolicy::PubSub);
    assert_eq!(p("multi"), ProxyPolicy::Transaction);
    assert_eq!(p("debug"), ProxyPolicy::NotAllowed);
    assert_eq!(p("slotsinfo"), ProxyPolicy::NotAllowed);
    assert_eq!(p("slotsmgrt-exec-wrapper"), ProxyPolicy::NotAllowed);
    assert_eq!(p("move"), ProxyPolicy::NotAllowed);
    assert_eq!(ps("config", "get"), ProxyPolicy::Fanout);
    assert_eq!(ps("config", "rewrite"), ProxyPolicy::NotAllowed);
    assert_eq!(ps("client", "setname"), ProxyPolicy::Local);
    assert_eq!(ps("client", "kill"), ProxyPolicy::Local);
    assert_eq!(ps("client", "list"), ProxyPolicy::Local);
    assert_eq!(ps("client", "pause"), ProxyPolicy::NotAllowed);
    assert_eq!(ps("object", "encoding"), ProxyPolicy::Forward);
    assert_eq!(ps("function", "flush"), ProxyPolicy::Fanout);
    assert_eq!(ps("command", "count"), ProxyPolicy::Local);
    assert_eq!(ps("pubsub", "numsub"), ProxyPolicy::PubSub);
}

#[test]
fn ids_are_dense_and_unique() {
    let mut seen = vec![false; NUM_SPECS];
    for c in COMMANDS.iter() {
        for s in std::iter::once(c).chain(c.subcommands.iter()) {
            assert!(!seen[s.id as usize], "duplicate id {}", s.id);
            seen[s.id as usize] = true;
            assert_eq!(by_id(s.id).name, s.name);
        }
    }
    assert!(seen.iter().all(|&b| b));
}
