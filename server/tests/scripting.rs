//! Lua scripting: EVAL and friends answer as Debian's redis-server 7.0 does (replies,
//! conversions over RESP2 and RESP3, errors with their script and line, cjson, cmsgpack,
//! struct, bit), the script cache, SCRIPT KILL, keys on two shards and in transactions, clients
//! blocked on a key a script writes, WATCH, and a script's writes in the append-only log and
//! on replicas (as the commands it ran).

use std::path::Path;
use std::time::{Duration, Instant};

use rcodis_core::resp::Frame;
use rcodis_tests::{text, wait_until, Conn, Process, RedisRef, ServerProc};

const BIN: &str = env!("CARGO_BIN_EXE_rcodis-server");

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// A key whose slot is on shard `shard` of a two-shard server.
fn key_on(shard: usize, prefix: &str) -> String {
    rcodis_tests::key_on_shard(shard, 2, prefix)
}

const CASES: &[&[&str]] = &[
    &["EVAL", "return redis.call('incr', KEYS[1])", "1", "s"],
    &["EVAL", "local x = 1\nlocal y = 2\nreturn redis.call('incr', KEYS[1])", "1", "s"],
    &["EVAL", "return x.y", "0"],
    &["EVAL", "return redis.call('nosuch')", "0"],
    &["EVAL", "return {err='My Error'}", "0"],
    &["EVAL", "return redis.error_reply('x y')", "0"],
    &["EVAL", "return redis.status_reply('fine')", "0"],
    &["EVAL", "return (", "0"],
    &["EVAL", "return redis.pcall('incr', KEYS[1])", "1", "s"],
    &["EVAL", "local r = redis.pcall('incr', KEYS[1]); return r['err']", "1", "s"],
    &["EVAL", "local ok, e = pcall(redis.call, 'incr', KEYS[1]); return {tostring(ok), e}", "1", "s"],
    &["EVAL", "x = 1", "0"],
    &["EVAL", "return redis.call('set', KEYS[1])", "1", "s"],
    &["EVAL", "return redis.call('get', {})", "0"],
    &["EVAL", "return redis.call()", "0"],
    &["EVAL", "return redis.call('eval', 'return 1', 0)", "0"],
    &["EVAL", "return redis.call('blpop', KEYS[1], 0)", "1", "bl"],
    &["EVAL", "error('boom')", "0"],
    &["EVAL", "\n\nerror({err='boom2'})", "0"],
    &["EVAL", "return 1", "-1"],
    &["EVAL", "return 1", "3", "a"],
    &["EVAL", "return 1", "x"],
    &["EVALSHA", "0000", "0"],
    &["EVAL_RO", "return redis.call('set','a','b')", "1", "a"],
    &["EVAL", "return {1,2,3.7,'x',false,nil,5}", "0"],
    &["EVAL", "return {true, false, 3.99, -3.99, {ok='k'}, {1, {2}}}", "0"],
    &["EVAL", "return redis.call('ping')", "0"],
    &["EVAL", "redis.call('set', KEYS[1], ARGV[1]); return redis.call('get', KEYS[1])", "1", "k1", "hello"],
    &["EVAL", "return redis.call('hgetall', KEYS[1])", "1", "nohash"],
    &["EVAL", "redis.call('hset', KEYS[1], 'a', 1, 'b', 2.5); return {redis.call('hget', KEYS[1], 'a'), redis.call('hget', KEYS[1], 'b'), redis.call('hlen', KEYS[1])}", "1", "h1"],
    &["EVAL", "return type(redis.call('get', KEYS[1]))", "1", "nokey"],
    &["EVAL", "return cjson.encode({a={1,2}})", "0"],
    &["EVAL", "return cjson.decode('[1,2,3]')[2]", "0"],
    &["EVAL", "return cjson.decode('{\"a\":null}').a == cjson.null", "0"],
    &["EVAL", "return {bit.tohex(65535), bit.tohex(-1, -4), bit.lshift(1, 31), bit.bnot(0), bit.bxor(5, 3), bit.rshift(-1, 28), bit.arshift(-16, 2)}", "0"],
    &["EVAL", "return redis.sha1hex('abc')", "0"],
    &["EVAL", "return #KEYS + #ARGV", "2", "a", "b", "c", "d", "e"],
    &["EVAL", "return {string.format('%d-%s', 5, 'x'), math.floor(7.9), table.concat({'a','b'}, ',')}", "0"],
    &["EVAL", "return redis.call('lpush', KEYS[1], 'a', 'b')", "1", "l1"],
    &["EVAL", "return redis.call('lrange', KEYS[1], 0, -1)", "1", "l1"],
    &["EVAL", "return redis.call('zadd', KEYS[1], 1.5, 'm')", "1", "z1"],
    &["EVAL", "return redis.call('zscore', KEYS[1], 'm')", "1", "z1"],
    &["EVAL", "return redis.call('incrbyfloat', KEYS[1], '1.5')", "1", "f1"],
    &["EVAL", "return redis.call('type', KEYS[1])", "1", "z1"],
    &["EVAL", "return dofile", "0"],
    &["EVAL", "return print", "0"],
    &["EVAL", "return {pcall(function() error({err='x'}) end)}", "0"],
    &["EVAL", "return select('#', pcall(function() return 1, nil, 3 end))", "0"],
    &["EVAL", "return redis.REDIS_VERSION", "0"],
    &["EVAL", "return redis.error_reply('-ERR dash')", "0"],
    &["EVAL", "return {1e300, 0/0, -0.5}", "0"],
    &["EVAL", "redis.call('set', KEYS[1], 0.1) redis.call('set', KEYS[2], 2^53) return redis.call('mget', KEYS[1], KEYS[2])", "2", "{n}a", "{n}b"],
    &["EVAL", "return redis.sha1hex()", "0"],
    &["EVAL", "return redis.sha1hex(5)", "0"],
    &["EVAL", "return redis.log('x')", "0"],
    &["EVAL", "return redis.log('x', 'y')", "0"],
    &["EVAL", "return redis.log(9, 'y')", "0"],
    &["EVAL", "return redis.log(1, 'y', 2)", "0"],
    &["EVAL", "#!lua flags=no-writes\nreturn redis.call('set', KEYS[1], 'x')", "1", "a"],
    &["EVAL", "#!lua flags=no-writes,allow-oom\nreturn redis.call('get', KEYS[1])", "1", "a"],
    &["EVAL", "#!lua\nreturn 5", "0"],
    &["EVAL", "#!python\nreturn 5", "0"],
    &["EVAL", "#!lua flags=bogus\nreturn 5", "0"],
    &["EVAL", "#!lua name=x\nreturn 5", "0"],
    &["EVAL", "#!lua\nerror('x')", "0"],
    &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"],
    // RESP3 replies in scripts (redis.setresp(3)) and RESP3 shapes in results.
    &["EVAL", "return redis.call('sadd', KEYS[1], 'x', 'y', 'z')", "1", "s1"],
    &["EVAL", "redis.setresp(3); return redis.call('hgetall', KEYS[1])", "1", "h1"],
    &["EVAL", "redis.setresp(3); local r = redis.call('hgetall', KEYS[1]); return {type(r), type(r.map), r.map.a}", "1", "h1"],
    &["EVAL", "redis.setresp(3); return redis.call('smembers', KEYS[1])", "1", "s1"],
    &["EVAL", "redis.setresp(3); local r = redis.call('smembers', KEYS[1]); return {type(r.set), tostring(r.set.x)}", "1", "s1"],
    &["EVAL", "redis.setresp(3); local r = redis.call('zscore', KEYS[1], 'm'); return {type(r), tostring(r.double)}", "1", "z1"],
    &["EVAL", "redis.setresp(3); return redis.call('zscore', KEYS[1], 'm')", "1", "z1"],
    &["EVAL", "redis.setresp(3); return redis.call('zrange', KEYS[1], 0, -1, 'withscores')", "1", "z1"],
    &["EVAL", "redis.setresp(3); return redis.call('get', KEYS[1]) == nil", "1", "nokey"],
    &["EVAL", "redis.setresp(3); return {redis.call('get', KEYS[1])}", "1", "nokey"],
    &["EVAL", "redis.setresp(3); return redis.call('exists', KEYS[1])", "1", "h1"],
    &["EVAL", "redis.setresp(3); return redis.call('hello')", "0"],
    &["EVAL", "redis.setresp(3); return redis.pcall('incr', KEYS[1])", "1", "s"],
    &["EVAL", "redis.setresp(3); return redis.call('ping')", "0"],
    &["EVAL", "redis.setresp(3); return true", "0"],
    &["EVAL", "redis.setresp(3); return false", "0"],
    &["EVAL", "redis.setresp(3); return nil", "0"],
    &["EVAL", "redis.setresp(3); redis.setresp(2); return {true, false}", "0"],
    &["EVAL", "redis.setresp('3'); return redis.call('zscore', KEYS[1], 'm')", "1", "z1"],
    &["EVAL", "redis.setresp()", "0"],
    &["EVAL", "redis.setresp(4)", "0"],
    &["EVAL", "redis.setresp('x')", "0"],
    &["EVAL", "redis.setresp(2, 3)", "0"],
    &["EVAL", "return {double=3.5}", "0"],
    &["EVAL", "return {double='x'}", "0"],
    &["EVAL", "return {map={a=1, b={1, 2}}}", "0"],
    &["EVAL", "return {map=5}", "0"],
    &["EVAL", "return {set={a=true, b=true}}", "0"],
    &["EVAL", "return {big_number='123'}", "0"],
    &["EVAL", "return {big_number='12\r\n3'}", "0"],
    &["EVAL", "return {verbatim_string={format='txt', string='hi'}}", "0"],
    &["EVAL", "return {verbatim_string={format='md', string='hi'}}", "0"],
    &["EVAL", "return {verbatim_string={format='txt'}}", "0"],
    &["EVAL", "return {1, {double=0.5}, {map={x={set={y=true}}}}}", "0"],
    // cmsgpack, as lua-cmsgpack 0.4 in redis-server packs and unpacks.
    &["EVAL", "return cmsgpack.pack(1, -1, 200, -200, 70000, -70000, 5000000000, -5000000000, 1.5, 0.1, 'abc', true, false, nil)", "0"],
    &["EVAL", "return cmsgpack.pack({1,2,3}, {a=1}, {}, {[1]=1,[3]=3})", "0"],
    &["EVAL", "return {cmsgpack.unpack(cmsgpack.pack(1, 'x', {1, {2}}, {a='b'}, 1.5, true))}", "0"],
    &["EVAL", "return cmsgpack.unpack('\\196\\001a')", "0"],
    &["EVAL", "return cmsgpack.unpack('\\217\\001a')", "0"],
    &["EVAL", "return cmsgpack.unpack('\\193')", "0"],
    &["EVAL", "return cmsgpack.unpack('\\217\\005a')", "0"],
    &["EVAL", "return cmsgpack.pack()", "0"],
    &["EVAL", "return cmsgpack.unpack()", "0"],
    &["EVAL", "return cmsgpack.unpack({})", "0"],
    &["EVAL", "return {cmsgpack.unpack_one(cmsgpack.pack(1, 2, 3))}", "0"],
    &["EVAL", "return {cmsgpack.unpack_one(cmsgpack.pack(1, 2, 3), 2)}", "0"],
    &["EVAL", "return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 2)}", "0"],
    &["EVAL", "return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 5, 1)}", "0"],
    &["EVAL", "return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 0)}", "0"],
    &["EVAL", "return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 0, 1)}", "0"],
    &["EVAL", "return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3))}", "0"],
    &["EVAL", "return {cmsgpack.unpack_one(cmsgpack.pack(1), 9)}", "0"],
    &["EVAL", "return {cmsgpack.unpack_one(cmsgpack.pack(1), -1)}", "0"],
    &["EVAL", "local t = {} local c = t for i=1,20 do c.x = {} c = c.x end return cmsgpack.pack(t)", "0"],
    &["EVAL", "return cmsgpack.pack(string.rep('x', 40))", "0"],
    &["EVAL", "return cmsgpack.pack(string.rep('x', 300))", "0"],
    &["EVAL", "return cmsgpack.pack(string.rep('x', 70000)):sub(1, 8)", "0"],
    &["EVAL", "return cmsgpack.pack(cjson.null, function() end)", "0"],
    &["EVAL", "return cmsgpack.unpack('')", "0"],
    &["EVAL", "return {cmsgpack.unpack(cmsgpack.pack(2^53, -0.0, 1/0))}", "0"],
    &["EVAL", "return cmsgpack.pack(1/0, -1/0)", "0"],
    &["EVAL", "return cmsgpack.pack(0/0)", "0"],
    &["EVAL", "return cmsgpack.pack(2^63, -2^63, 2^64)", "0"],
    &["EVAL", "return cmsgpack.pack({[1.5]=1})", "0"],
    &["EVAL", "return cmsgpack.pack({[0]=1})", "0"],
    &["EVAL", "return cmsgpack.pack({1, 2, nil, 4})", "0"],
    &["EVAL", "return cmsgpack.pack({a=1, b=2, c={d=3}})", "0"],
    &["EVAL", "local t = {} for i=1,20 do t[i] = i end return cmsgpack.pack(t)", "0"],
    &["EVAL", "local t = {} for i=1,20 do t['k'..i] = i end return cmsgpack.pack(t)", "0"],
    &["EVAL", "local t = cmsgpack.unpack(cmsgpack.pack({a=1, b={1,2}})) return {t.a, t.b[2]}", "0"],
    &["EVAL", "return {cmsgpack.unpack('\\220\\000\\002\\001\\002')}", "0"],
    &["EVAL", "return {cmsgpack.unpack('\\222\\000\\001\\161a\\001')}", "0"],
    &["EVAL", "return {cmsgpack.unpack('\\203\\064\\009\\033\\251\\084\\068\\045\\024')}", "0"],
    &["EVAL", "return {cmsgpack.unpack('\\202\\063\\192\\000\\000')}", "0"],
    &["EVAL", "return {cmsgpack.unpack('\\207\\255\\255\\255\\255\\255\\255\\255\\255')}", "0"],
    &["EVAL", "return {cmsgpack.unpack('\\211\\128\\000\\000\\000\\000\\000\\000\\000')}", "0"],
    &["EVAL", "return {cmsgpack.unpack('\\147\\001\\002')}", "0"],
    &["EVAL", "return {cmsgpack.unpack('\\129\\161a')}", "0"],
    &["EVAL", "return cmsgpack.pack(123):byte(1)", "0"],
    &["EVAL", "return {cmsgpack.unpack('\\001\\002\\003', 1)}", "0"],
    &["EVAL", "return {cmsgpack.unpack(123)}", "0"],
    &["EVAL", "return {cmsgpack.unpack_limit('\\001', 'x')}", "0"],
    // struct, as redis-server's struct 0.2 packs and unpacks (x86-64 sizes).
    &["EVAL", "return struct.pack('>I', 258)", "0"],
    &["EVAL", "return struct.pack('<i2', -2)", "0"],
    &["EVAL", "return struct.pack('bBhHlLT', -1, 255, -2, 65535, -3, 4, 5)", "0"],
    &["EVAL", "return struct.pack('i3I5', -5, 1099511627775)", "0"],
    &["EVAL", "return struct.pack('fd', 1.5, 0.1)", "0"],
    &["EVAL", "return struct.pack('>fd', 1.5, 0.1)", "0"],
    &["EVAL", "return struct.pack('!4 b i', 1, 2)", "0"],
    &["EVAL", "return struct.pack('!b d', 1, 2)", "0"],
    &["EVAL", "return struct.pack('!3 b', 1)", "0"],
    &["EVAL", "return struct.pack('c3', 'abcdef')", "0"],
    &["EVAL", "return struct.pack('c0', 'abcdef')", "0"],
    &["EVAL", "return struct.pack('c9', 'abc')", "0"],
    &["EVAL", "return struct.pack('s', 'abc')", "0"],
    &["EVAL", "return struct.pack('x')", "0"],
    &["EVAL", "return struct.pack('z', 1)", "0"],
    &["EVAL", "return struct.pack('i33', 1)", "0"],
    &["EVAL", "return struct.pack('i99999999999', 1)", "0"],
    &["EVAL", "return struct.pack('I')", "0"],
    &["EVAL", "return struct.pack('I', 'x')", "0"],
    &["EVAL", "return struct.pack('I', '12')", "0"],
    &["EVAL", "return struct.pack()", "0"],
    &["EVAL", "return struct.pack('i16', -1)", "0"],
    &["EVAL", "return {struct.unpack('>I', struct.pack('>I', 258))}", "0"],
    &["EVAL", "return {struct.unpack('<i2', struct.pack('<i2', -2))}", "0"],
    &["EVAL", "return {struct.unpack('bBhHlLT', struct.pack('bBhHlLT', -1, 255, -2, 65535, -3, 4, 5))}", "0"],
    &["EVAL", "return {struct.unpack('i3I5', struct.pack('i3I5', -5, 1099511627775))}", "0"],
    &["EVAL", "return {struct.unpack('fd', struct.pack('fd', 1.5, 0.25))}", "0"],
    &["EVAL", "return {struct.unpack('!4 b i', struct.pack('!4 b i', 1, 2))}", "0"],
    &["EVAL", "return {struct.unpack('c3', 'abcdef')}", "0"],
    &["EVAL", "return {struct.unpack('c3', 'abcdef', 3)}", "0"],
    &["EVAL", "return {struct.unpack('c3', 'abcdef', 5)}", "0"],
    &["EVAL", "return {struct.unpack('c3', 'abcdef', 0)}", "0"],
    &["EVAL", "return {struct.unpack('c3', 'abcdef', 99)}", "0"],
    &["EVAL", "return {struct.unpack('bc0', '\\003abcdef')}", "0"],
    &["EVAL", "return {struct.unpack('c0', 'abc')}", "0"],
    &["EVAL", "return {struct.unpack('s', 'abc\\000def')}", "0"],
    &["EVAL", "return {struct.unpack('ss', 'abc\\000def')}", "0"],
    &["EVAL", "return {struct.unpack('x b', '\\001\\002')}", "0"],
    &["EVAL", "return {struct.unpack('I', 'ab')}", "0"],
    &["EVAL", "return {struct.unpack('z', 'ab')}", "0"],
    &["EVAL", "return {struct.unpack('I')}", "0"],
    &["EVAL", "return struct.size('bhi')", "0"],
    &["EVAL", "return struct.size('!8 b d')", "0"],
    &["EVAL", "return struct.size('s')", "0"],
    &["EVAL", "return struct.size('c0')", "0"],
    &["EVAL", "return struct.size('c5 z')", "0"],
    &["EVAL", "return struct.size('c5 #')", "0"],
    &["EVAL", "return struct.size()", "0"],
    &["EVAL", "return {struct.unpack('>i16', struct.pack('>i16', -1))}", "0"],
    &["EVAL", "return {struct.unpack('<I8', '\\255\\255\\255\\255\\255\\255\\255\\255')}", "0"],
    &["EVAL", "return {struct.unpack('<i8', '\\255\\255\\255\\255\\255\\255\\255\\127')}", "0"],
    &["EVAL", "return struct.pack('<I', -1)", "0"],
    &["EVAL", "return struct.pack('<I', 2^40)", "0"],
    &["EVAL", "return struct.pack('<b', 300)", "0"],
    &["EVAL", "return {struct.unpack('!2 b h', '\\001\\000\\002\\000')}", "0"],
    &["EVAL", "return struct.pack('II', 1)", "0"],
    &["EVAL", "return struct.pack('Is', 1)", "0"],
    &["EVAL", "return struct.pack('s')", "0"],
    &["EVAL", "return struct.pack('ss', 'a')", "0"],
    &["EVAL", "return {struct.unpack('', 'abc', 99)}", "0"],
    &["EVAL", "return {struct.unpack('c3', 'abcdef', '2')}", "0"],
    &["EVAL", "return {struct.unpack('c3', 'abcdef', 'x')}", "0"],
    &["EVAL", "return struct.pack(5)", "0"],
    &["EVAL", "return struct.pack({})", "0"],
    // Deep nesting: unpacked up to where redis-server's Lua stack ends, refused past it.
    &["EVAL", "return #{cmsgpack.unpack(string.rep(string.char(0x91), 3999) .. string.char(1))}", "0"],
    &["EVAL", "return #{cmsgpack.unpack(string.rep(string.char(0x91), 100000) .. string.char(1))}", "0"],
    &["EVAL", "return #{cmsgpack.unpack(string.rep(string.char(0x81, 1), 3999) .. string.char(1))}", "0"],
    &["EVAL", "return #{cmsgpack.unpack(string.rep(string.char(0x81, 1), 4000) .. string.char(1))}", "0"],
    &["SCRIPT", "LOAD", "return 1"],
    &["SCRIPT", "LOAD", "return ("],
    &["SCRIPT", "EXISTS", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0000"],
    &["EVALSHA", "E0E1F9FABFC9D4800C877A703B823AC0578FF8DB", "0"],
    &["SCRIPT", "KILL"],
    &["SCRIPT", "FLUSH", "x"],
    &["SCRIPT", "FLUSH"],
    &["SCRIPT", "EXISTS", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"],
];

#[test]
fn scripts_answer_as_redis_does() {
    let redis = RedisRef::start();
    let ours = ServerProc::start(bin(), &["--threads", "2"]);
    rcodis_tests::same_replies(
        &mut Conn::connect(redis.port),
        &mut ours.conn(),
        &[&["FLUSHALL"], &["SCRIPT", "FLUSH"], &["SET", "s", "abc"]],
        CASES,
        |_, _| {},
    );
}

/// Keys on both shards of a server, declared: the script sees and writes all of them, and an
/// undeclared key of another shard is refused. Scripts queued in MULTI run in EXEC; a write
/// by a script serves a client blocked on the key and fails a transaction watching it.
#[test]
fn scripts_across_shards_in_transactions_and_for_blocked_clients() {
    let s = ServerProc::start(bin(), &["--threads", "2"]);
    let mut c = s.conn();
    let (k0, k1) = (key_on(0, "a"), key_on(1, "b"));
    let r = c.cmd(&[
        "EVAL",
        "redis.call('set', KEYS[1], ARGV[1]); redis.call('rpush', KEYS[2], ARGV[2]); \
         return {redis.call('get', KEYS[1]), redis.call('lrange', KEYS[2], 0, -1)}",
        "2",
        &k0,
        &k1,
        "x",
        "y",
    ]);
    assert_eq!(
        r,
        Frame::Array(vec![Frame::bulk("x"), Frame::Array(vec![Frame::bulk("y")])])
    );
    assert_eq!(c.cmd(&["GET", &k0]), Frame::bulk("x"));
    assert_eq!(
        c.cmd(&["LRANGE", &k1, "0", "-1"]),
        Frame::Array(vec![Frame::bulk("y")])
    );
    // One declared key: undeclared keys of its shard are reachable, others are not.
    let (near, far) = (key_on(0, "n"), key_on(1, "f"));
    c.cmd(&["SET", &near, "n"]);
    assert_eq!(
        c.cmd(&["EVAL", "return redis.call('get', ARGV[1])", "1", &k0, &near]),
        Frame::bulk("n")
    );
    let r = c.cmd(&["EVAL", "return redis.call('get', ARGV[1])", "1", &k0, &far]);
    assert!(
        matches!(&r, Frame::Error(e) if e.starts_with(b"ERR Script attempted to access a non local key")),
        "{r:?}"
    );
    // A failing script keeps what it wrote before the error, as in Redis.
    let r = c.cmd(&[
        "EVAL",
        "redis.call('set', KEYS[1], 'z'); error('late')",
        "2",
        &k0,
        &k1,
    ]);
    assert!(r.is_error(), "{r:?}");
    assert_eq!(c.cmd(&["GET", &k0]), Frame::bulk("z"));

    // In a transaction.
    c.cmd(&["MULTI"]);
    for k in [&k0, &k1] {
        assert_eq!(
            c.cmd(&[
                "EVAL",
                "return redis.call('incr', KEYS[1])",
                "1",
                &format!("{k}:n")
            ]),
            Frame::simple("QUEUED")
        );
    }
    assert_eq!(
        c.cmd(&["EXEC"]),
        Frame::Array(vec![Frame::Integer(1), Frame::Integer(1)])
    );

    // A client blocked on a key a script pushes to is served.
    let q = key_on(1, "q");
    let port = s.port;
    let qq = q.clone();
    let waiter = std::thread::spawn(move || Conn::connect(port).cmd(&["BLPOP", &qq, "10"]));
    wait_until("the client to block", Duration::from_secs(10), || {
        let info = rcodis_tests::text(&c.cmd(&["INFO", "clients"]));
        info.contains("blocked_clients:1")
    });
    c.cmd(&[
        "EVAL",
        "return redis.call('rpush', KEYS[1], 'item')",
        "1",
        &q,
    ]);
    assert_eq!(
        waiter.join().unwrap(),
        Frame::Array(vec![Frame::bulk(q.as_str()), Frame::bulk("item")])
    );

    // WATCH sees a script's write.
    let mut w = s.conn();
    w.cmd(&["WATCH", &k0]);
    c.cmd(&[
        "EVAL",
        "return redis.call('set', KEYS[1], 'changed')",
        "1",
        &k0,
    ]);
    w.cmd(&["MULTI"]);
    w.cmd(&["SET", &k0, "mine"]);
    assert_eq!(w.cmd(&["EXEC"]), Frame::NullArray);
    assert_eq!(c.cmd(&["GET", &k0]), Frame::bulk("changed"));

    // INFO memory counts the cached scripts and the Lua states.
    let field = |c: &mut Conn, name: &str| -> u64 {
        let info = rcodis_tests::text(&c.cmd(&["INFO", "memory"]));
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {info}"))
    };
    let before = field(&mut c, "number_of_cached_scripts");
    c.cmd(&["SCRIPT", "LOAD", "return 'counted'"]);
    assert_eq!(field(&mut c, "number_of_cached_scripts"), before + 1);
    assert!(field(&mut c, "used_memory_scripts_eval") > 0);
    assert!(field(&mut c, "used_memory_lua") > 0);
    c.cmd(&["SCRIPT", "FLUSH"]);
    assert_eq!(field(&mut c, "number_of_cached_scripts"), 0);
}

/// SCRIPT KILL stops a busy script that has not written, from a connection served by
/// another shard (the busy one runs nothing else until the script ends, as Redis runs
/// nothing else); one that wrote cannot be killed.
#[test]
fn script_kill() {
    let s = ServerProc::start(bin(), &["--threads", "2"]);
    let mut c = s.conn();
    assert_eq!(
        c.cmd(&["SCRIPT", "KILL"]),
        Frame::error("NOTBUSY No scripts in execution right now.")
    );
    let port = s.port;
    let busy = std::thread::spawn(move || {
        Conn::connect(port).cmd(&["EVAL", "local i = 0 while true do i = i + 1 end", "0"])
    });
    // Kill from any connection that gets an answer (a connection on the busy shard waits).
    let kill = |want: &[u8]| -> Frame {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut k = Conn::connect(port);
            k.set_timeout(Duration::from_millis(300));
            k.send(&["SCRIPT", "KILL"]);
            match k.read_opt() {
                Some(f @ Frame::Simple(_)) if want == b"OK" => return f,
                Some(f @ Frame::Error(_)) if f.as_bytes().is_some_and(|e| e.starts_with(want)) => {
                    return f
                }
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "no SCRIPT KILL answered {want:?}"
            );
        }
    };
    kill(b"OK");
    let r = busy.join().unwrap();
    assert!(
        matches!(&r, Frame::Error(e) if e.starts_with(b"ERR Script killed by user with SCRIPT KILL")),
        "{r:?}"
    );
    assert_eq!(c.cmd(&["PING"]), Frame::simple("PONG"));
    let k = key_on(0, "w");
    let _stuck = std::thread::spawn(move || {
        Conn::connect(port).cmd(&[
            "EVAL",
            "redis.call('set', KEYS[1], 1) while true do end",
            "1",
            &k,
        ])
    });
    kill(b"UNKILLABLE");
    // The server is stopped (by PID) with the script still running.
}

fn start(dir: &Path, args: &[&str]) -> (Process, u16) {
    rcodis_tests::start_server_in(bin(), dir, args)
}

/// What a script wrote is in the append-only log and on a replica as the commands it ran:
/// random and relative choices (SPOP, EXPIRE, TIME) come out the same after a restart and
/// on the replica; read-only scripts run on the replica, writing ones are refused there.
#[test]
fn script_writes_are_logged_and_replicated_as_their_effects() {
    let dir = tempfile::tempdir().unwrap();
    let (master, port) = start(
        dir.path(),
        &[
            "--threads",
            "2",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
    );
    let replica = ServerProc::start(
        bin(),
        &[
            "--threads",
            "2",
            "--replicaof",
            &format!("127.0.0.1 {port}"),
        ],
    );
    let mut m = Conn::connect(port);
    m.cmd(&["SADD", "{t}set", "a", "b", "c", "d", "e"]);
    let script =
        "redis.call('set', KEYS[1], redis.call('time')[1] .. ':' .. redis.call('time')[2]) \
                  redis.call('expire', KEYS[1], 1000) \
                  redis.call('hset', KEYS[2], 'f', 'v') \
                  redis.call('incrby', KEYS[3], 5) \
                  return redis.call('spop', KEYS[4])";
    let popped = m.cmd(&["EVAL", script, "4", "{t}a", "{t}b", "{t}c", "{t}set"]);
    assert!(matches!(popped, Frame::Bulk(_)), "{popped:?}");
    let (k0, k1) = (key_on(0, "m"), key_on(1, "n"));
    m.cmd(&[
        "EVAL",
        "redis.call('set', KEYS[1], 'x') redis.call('set', KEYS[2], 'y')",
        "2",
        &k0,
        &k1,
    ]);
    let snapshot = |c: &mut Conn| -> Vec<Frame> {
        vec![
            c.cmd(&["GET", "{t}a"]),
            c.cmd(&["HGET", "{t}b", "f"]),
            c.cmd(&["GET", "{t}c"]),
            c.cmd(&["SMEMBERS", "{t}set"]),
            c.cmd(&["GET", &k0]),
            c.cmd(&["GET", &k1]),
            match c.cmd(&["TTL", "{t}a"]) {
                Frame::Integer(t) => Frame::Integer((t > 900) as i64),
                other => other,
            },
        ]
    };
    let norm = |mut v: Vec<Frame>| {
        if let Frame::Array(items) = &mut v[3] {
            items.sort_by(|a, b| a.as_bytes().cmp(&b.as_bytes()));
        }
        v
    };
    let want = norm(snapshot(&mut m));
    assert_eq!(want[6], Frame::Integer(1));
    let mut r = replica.conn();
    wait_until(
        "the replica to apply the scripts' writes",
        Duration::from_secs(30),
        || norm(snapshot(&mut r)) == want,
    );
    let w = r.cmd(&[
        "EVAL",
        "return redis.call('set', KEYS[1], 'no')",
        "1",
        "{t}a",
    ]);
    assert!(
        matches!(&w, Frame::Error(e) if e.starts_with(b"READONLY You can't write against a read only replica.")),
        "{w:?}"
    );
    assert_eq!(
        r.cmd(&["EVAL_RO", "return redis.call('get', KEYS[1])", "1", &k0]),
        Frame::bulk("x")
    );
    drop(m);
    drop(master);
    let (_again, port) = start(dir.path(), &["--threads", "2", "--appendonly", "yes"]);
    assert_eq!(
        norm(snapshot(&mut Conn::connect(port))),
        want,
        "after a restart"
    );
}

/// A script that asks for more memory than a shard's Lua state may hold, or recurses without
/// end, fails with an error; the server goes on serving.
#[test]
fn scripts_that_exhaust_memory_or_the_stack_fail_cleanly() {
    let s = ServerProc::start(bin(), &["--threads", "1"]);
    let mut c = s.conn();
    let r = c.cmd(&["EVAL", "return #string.rep('x', 1.5 * 2^30)", "0"]);
    assert!(
        matches!(&r, Frame::Error(e) if e.starts_with(b"ERR not enough memory")),
        "{r:?}"
    );
    let r = c.cmd(&[
        "EVAL",
        "local function f(n) return f(n + 1) + 1 end return f(1)",
        "0",
    ]);
    assert!(
        matches!(&r, Frame::Error(e) if String::from_utf8_lossy(e).contains("stack overflow")),
        "{r:?}"
    );
    assert_eq!(c.cmd(&["EVAL", "return 1 + 1", "0"]), Frame::Integer(2));
    assert_eq!(c.cmd(&["PING"]), Frame::simple("PONG"));
}

/// On a one-shard server the shard running a script is the only one: past
/// `busy-reply-threshold`, the clients that connect are answered from inside the script, as
/// Redis answers them: -BUSY, SCRIPT KILL (after AUTH when a password is set), SHUTDOWN
/// NOSAVE.
#[test]
fn a_busy_one_shard_server_answers_busy_kill_and_shutdown() {
    let mut s = ServerProc::start(bin(), &["--threads", "1", "--requirepass", "pw"]);
    let port = s.port;
    let authed = move || {
        let mut c = Conn::connect(port);
        assert_eq!(c.cmd(&["AUTH", "pw"]), Frame::simple("OK"));
        c
    };
    let mut c = authed();
    c.cmd(&["CONFIG", "SET", "busy-reply-threshold", "100"]);
    c.cmd(&["SET", "k", "v"]);
    // The second time in a coroutine (which has the hook too).
    for (round, body) in [
        "local i = 0 while true do i = i + 1 end",
        "coroutine.wrap(function() while true do end end)()",
    ]
    .into_iter()
    .enumerate()
    {
        let busy = std::thread::spawn(move || authed().cmd(&["EVAL", body, "0"]));
        // New connections get -BUSY once the script is past the threshold.
        wait_until("the script to be busy", Duration::from_secs(10), || {
            let mut p = Conn::connect(port);
            p.set_timeout(Duration::from_millis(500));
            p.send(&["AUTH", "pw"]);
            p.send(&["GET", "k"]);
            p.read_opt() == Some(Frame::simple("OK"))
                && matches!(p.read_opt(), Some(Frame::Error(e)) if e.starts_with(b"BUSY "))
        });
        let mut k = Conn::connect(port);
        k.set_timeout(Duration::from_secs(5));
        assert_eq!(
            k.cmd(&["SCRIPT", "KILL"]),
            Frame::error("NOAUTH Authentication required."),
            "round {round}"
        );
        let mut k = Conn::connect(port);
        k.set_timeout(Duration::from_secs(5));
        if round == 0 {
            k.send_raw(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*2\r\n$6\r\nSCRIPT\r\n$4\r\nKILL\r\n");
            assert_eq!(k.read_opt(), Some(Frame::simple("OK")));
        } else {
            // A client library's greeting (HELLO with AUTH, as redis-py 8 sends it, then
            // CLIENT SETINFO, -BUSY in Redis too), then the kill on the same connection.
            let hello = k.cmd(&["HELLO", "3", "AUTH", "default", "pw"]);
            assert!(format!("{hello:?}").contains("standalone"), "{hello:?}");
            let busy = k.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "x"]);
            assert!(
                matches!(&busy, Frame::Error(e) if e.starts_with(b"BUSY ")),
                "{busy:?}"
            );
            k.send(&["SCRIPT", "KILL"]);
        }
        assert_eq!(k.read_opt(), Some(Frame::simple("OK")));
        let r = busy.join().unwrap();
        assert!(
            matches!(&r, Frame::Error(e) if e.starts_with(b"ERR Script killed by user")),
            "{r:?}"
        );
        assert_eq!(authed().cmd(&["GET", "k"]), Frame::bulk("v"));
    }
    // A script that wrote cannot be killed: SHUTDOWN NOSAVE ends the server.
    let _stuck = std::thread::spawn(move || {
        authed().cmd(&["EVAL", "redis.call('set', 'k', 'w') while true do end", "0"])
    });
    wait_until("the script to be busy", Duration::from_secs(10), || {
        let mut k = Conn::connect(port);
        k.set_timeout(Duration::from_millis(500));
        k.send(&["AUTH", "pw"]);
        k.send(&["SCRIPT", "KILL"]);
        k.read_opt() == Some(Frame::simple("OK"))
            && matches!(k.read_opt(), Some(Frame::Error(e)) if e.starts_with(b"UNKILLABLE"))
    });
    let mut k = Conn::connect(port);
    k.send(&["AUTH", "pw"]);
    k.send(&["SHUTDOWN", "NOSAVE"]);
    wait_until("the server to exit", Duration::from_secs(10), || {
        s.proc.exited()
    });
}

/// On a one-shard server (what `rcodis-ctl up` runs) a script reaches the whole keyspace:
/// DBSIZE, KEYS (the common delete-by-pattern script), SCAN, RANDOMKEY and PUBLISH answer as
/// in Redis; read-only scripts refuse PUBLISH and PFCOUNT as Redis does. On more shards the
/// keyspace-wide ones are refused by name instead of answering for one shard.
#[test]
fn scripts_reach_the_keyspace_and_publish_on_a_one_shard_server() {
    let redis = RedisRef::start();
    let ours = ServerProc::start(bin(), &["--threads", "1"]);
    let scan_all = "local c = '0' local all = {} repeat local r = redis.call('scan', c, 'COUNT', 2, unpack(ARGV)) c = r[1] for _, k in ipairs(r[2]) do all[#all + 1] = k end until c == '0' table.sort(all) return all";
    rcodis_tests::same_replies(
        &mut Conn::connect(redis.port),
        &mut ours.conn(),
        &[
            &["FLUSHALL"],
            &["MSET", "a1", "1", "b1", "2", "c1", "3", "a2", "4"],
            &["SADD", "set", "x"],
            &["HSET", "hash", "f", "v"],
        ],
        &[
            &["EVAL", "return redis.call('dbsize')", "0"],
            &["EVAL", "local k = redis.call('keys', ARGV[1]) table.sort(k) return k", "0", "*"],
            &["EVAL", "local k = redis.call('keys', ARGV[1]) table.sort(k) return k", "0", "[ab]?"],
            &["EVAL", "return redis.pcall('keys')", "0"],
            &["EVAL", scan_all, "0"],
            &["EVAL", scan_all, "0", "MATCH", "a*"],
            &["EVAL", scan_all, "0", "TYPE", "set"],
            &["EVAL", "return redis.pcall('scan', 'nope')", "0"],
            &["EVAL", "return redis.pcall('scan', '0', 'COUNT', '0')", "0"],
            &["EVAL", "return redis.call('exists', redis.call('randomkey'))", "0"],
            &["EVAL", "return redis.call('publish', 'ch', 'm')", "0"],
            &["EVAL", "return redis.call('spublish', 'ch', 'm')", "0"],
            &["EVAL_RO", "return redis.pcall('publish', 'ch', 'm')", "0"],
            &["EVAL_RO", "return redis.pcall('pfcount', 'h')", "1", "h"],
            &[
                "EVAL",
                "local n = 0 for _, k in ipairs(redis.call('keys', ARGV[1])) do n = n + redis.call('del', k) end return n",
                "0",
                "a*",
            ],
            &["DBSIZE"],
            &["EVAL", "return redis.call('randomkey')", "0"],
            &["FLUSHALL"],
            &["EVAL", "return {redis.call('dbsize'), redis.call('randomkey')}", "0"],
        ],
        |case, f| {
            // Which key RANDOMKEY picks is random: only whether there is one is compared.
            if case.get(1).is_some_and(|s| s.contains("return redis.call('randomkey')")) {
                if let Frame::Bulk(_) = f {
                    *f = Frame::bulk("some key");
                }
            }
        },
    );

    // A subscriber hears what a script publishes.
    let mut sub = ours.conn();
    sub.cmd(&["SUBSCRIBE", "news"]);
    let mut c = ours.conn();
    assert_eq!(
        c.cmd(&[
            "EVAL",
            "return redis.call('publish', 'news', ARGV[1])",
            "0",
            "hello"
        ]),
        Frame::Integer(1)
    );
    assert_eq!(
        sub.read(),
        Some(Frame::Array(vec![
            Frame::bulk("message"),
            Frame::bulk("news"),
            Frame::bulk("hello")
        ]))
    );

    // Two shards: refused by name.
    let two = ServerProc::start(bin(), &["--threads", "2"]);
    let mut c = two.conn();
    for (script, name) in [
        ("return redis.call('keys', '*')", "KEYS"),
        ("return redis.call('dbsize')", "DBSIZE"),
        ("return redis.call('publish', 'c', 'm')", "PUBLISH"),
    ] {
        let reply = text(&c.cmd(&["EVAL", script, "0"]));
        assert!(
            reply.starts_with(&format!(
                "ERR {name} is not allowed from scripts on a server with more than one shard"
            )),
            "{reply}"
        );
    }
}
