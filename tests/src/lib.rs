//! Process-level test helpers: free loopback ports, condition waits with deadlines, RAII
//! process handles stopped by PID, Debian's redis-server as the reference, and a small
//! synchronous RESP client built on rcodis-core's codec.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rcodis_core::resp::{Frame, FrameDecoder, Request};

/// A free TCP port on 127.0.0.1 (bound and released; a tiny race is accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Polls `f` until it returns true; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (by PID) and reaped on drop.
pub struct Process {
    pub child: Child,
    pub name: String,
}

impl Process {
    /// Spawns `cmd` with output discarded unless `RCODIS_TEST_LOG` is set.
    pub fn spawn(name: &str, mut cmd: Command) -> Process {
        if std::env::var_os("RCODIS_TEST_LOG").is_none() {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            child,
            name: name.to_string(),
        }
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. `libc::SIGSTOP`) by PID.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns a server started with `--port 0` and reads the port it reports on stdout
/// ("... listening on port N"): no race with other tests for a free port.
///
/// A process that exits before reporting a port is started again (twice at most): between
/// learning its port from the kernel and binding its shards' listeners, a process can lose
/// the port to another test's outgoing connection, which draws from the same range.
pub fn spawn_on_free_port(name: &str, cmd: Command) -> (Process, u16) {
    let mut last = String::new();
    for attempt in 0..3 {
        let mut c = Command::new(cmd.get_program());
        c.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            c.current_dir(d);
        }
        match try_spawn_on_free_port(name, c) {
            Ok(r) => return r,
            Err(e) => {
                eprintln!("{name}: attempt {} failed: {e}", attempt + 1);
                last = e;
            }
        }
    }
    panic!("{last}");
}

fn try_spawn_on_free_port(name: &str, mut cmd: Command) -> Result<(Process, u16), String> {
    cmd.stdout(Stdio::piped());
    if std::env::var_os("RCODIS_TEST_LOG").is_none() {
        cmd.stderr(Stdio::null());
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(p) = line
                .rsplit("listening on port ")
                .next()
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                let _ = tx.send(p);
            }
        }
    });
    let mut proc = Process {
        child,
        name: name.to_string(),
    };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(p) => Ok((proc, p)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // Its stdout closed: it exited (or is exiting) without a port.
            let _ = proc.child.wait();
            Err(format!("{name} exited before reporting its port"))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let exited = proc.exited();
            panic!("{name} did not report its port within 30 s (exited: {exited})");
        }
    }
}

/// Path of a workspace binary under target/ (built by `cargo build --workspace --bins`,
/// which the README's test command runs first).
pub fn bin_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "binary {name} not found under {}: run `cargo build --workspace --bins` first",
        target.display()
    )
}

/// Debian's redis-server on a free loopback port, no persistence: the reference.
pub struct RedisRef {
    pub port: u16,
    _proc: Process,
    _dir: tempfile::TempDir,
}

impl RedisRef {
    /// Starts it and waits until it answers PING.
    pub fn start() -> RedisRef {
        Self::start_with(&[])
    }

    /// Starts it with extra arguments (`["--requirepass", "x"]`). A port taken by a
    /// parallel test between choosing and binding it is retried with another.
    pub fn start_with(extra: &[&str]) -> RedisRef {
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cmd = Command::new("redis-server");
            cmd.args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra);
            let mut p = Process::spawn("redis-server (install Debian's redis-server)", cmd);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                if p.exited() {
                    break;
                }
                if matches!(
                    try_ping(port),
                    Some(Frame::Simple(_)) | Some(Frame::Error(_))
                ) {
                    return RedisRef {
                        port,
                        _proc: p,
                        _dir: dir,
                    };
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "redis-server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-server exited at start-up five times")
    }
}

/// A small synchronous RESP client.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl Conn {
    /// Connects to 127.0.0.1:port with a 10 s read timeout.
    pub fn connect(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            decoder: FrameDecoder::default(),
        }
    }

    /// Reads one reply, or None when none comes within the read timeout.
    pub fn read_opt(&mut self) -> Option<Frame> {
        loop {
            if let Ok(Some(f)) = self.decoder.decode(&mut self.buf) {
                return Some(f);
            }
            let mut tmp = [0u8; 16 * 1024];
            match self.stream.read(&mut tmp) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// Sets how long a read may wait for a reply.
    pub fn set_timeout(&mut self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).unwrap();
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends one request without reading.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        let mut out = Vec::new();
        Request::from_args(args).write_resp(&mut out);
        self.send_raw(&out);
    }

    /// Reads one reply frame; `None` when the server closed the connection.
    pub fn read(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf).expect("valid reply") {
                return Some(f);
            }
            let mut tmp = [0u8; 16 * 1024];
            let n = self.stream.read(&mut tmp).expect("read reply");
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Sends a request and reads its reply.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Frame {
        self.send(args);
        self.read().expect("reply before close")
    }
}

/// Text of a bulk/simple/error frame, for assertions.
pub fn text(f: &Frame) -> String {
    match f.as_bytes() {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => format!("{f:?}"),
    }
}

/// The connection handshake of current client libraries (redis-py, go-redis, Jedis send
/// `CLIENT SETINFO` at connect): the attributes are kept and shown by `CLIENT INFO` with the
/// connection's addresses; bad ones get Redis's errors and the connection stays usable.
pub fn check_client_setinfo(c: &mut Conn, port: u16) {
    let ok = Frame::simple("OK");
    assert_eq!(c.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]), ok);
    assert_eq!(c.cmd(&["client", "setinfo", "lib-ver", "8.0.1"]), ok);
    let bad = |f: Frame, want: &str| match f {
        Frame::Error(e) => {
            let e = String::from_utf8_lossy(&e).into_owned();
            assert!(e.starts_with(want), "{e:?} should start with {want:?}");
        }
        other => panic!("error {want:?} expected, got {other:?}"),
    };
    bad(
        c.cmd(&["CLIENT", "SETINFO", "lib-name", "has space"]),
        "ERR lib-name cannot contain spaces, newlines or special characters.",
    );
    bad(
        c.cmd(&["CLIENT", "SETINFO", "color", "red"]),
        "ERR Unrecognized option 'color'",
    );
    bad(
        c.cmd(&["CLIENT", "SETINFO", "lib-name"]),
        "ERR wrong number of arguments",
    );
    let info = text(&c.cmd(&["CLIENT", "INFO"]));
    for want in [
        "lib-name=redis-py ".to_string(),
        "lib-ver=8.0.1".to_string(),
        format!(" laddr=127.0.0.1:{port} "),
        " addr=127.0.0.1:".to_string(),
    ] {
        assert!(info.contains(&want), "{want:?} not in {info:?}");
    }
    assert_eq!(c.cmd(&["PING"]), Frame::simple("PONG"));
}

/// A refused EXEC (wrong number of arguments) discards the transaction and the watches, with
/// Redis's EXECABORT wording, in MULTI or not.
pub fn check_exec_arity_aborts(c: &mut Conn, other: &mut Conn, key: &str) {
    assert_eq!(c.cmd(&["WATCH", key]), Frame::simple("OK"));
    assert_eq!(c.cmd(&["MULTI"]), Frame::simple("OK"));
    assert_eq!(c.cmd(&["SET", key, "1"]), Frame::simple("QUEUED"));
    assert_eq!(
        text(&c.cmd(&["EXEC", "x"])),
        "EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command"
    );
    assert_eq!(text(&c.cmd(&["EXEC"])), "ERR EXEC without MULTI");
    // The watch went with it: a change by another client does not fail the next EXEC.
    other.cmd(&["SET", key, "2"]);
    c.cmd(&["MULTI"]);
    c.cmd(&["SET", key, "3"]);
    assert_eq!(c.cmd(&["EXEC"]), Frame::Array(vec![Frame::simple("OK")]));
    assert!(text(&c.cmd(&["EXEC", "x"])).starts_with("EXECABORT"));
}

/// A topology of one group per port (ids 1, 2, ...), slots below `split` on group 1 and the
/// rest on group 2.
pub fn topology(ports: &[u16], split: u16, epoch: u64) -> rcodis_core::topology::Topology {
    let mut t = rcodis_core::topology::Topology::new();
    for (i, p) in ports.iter().enumerate() {
        let id = i as u16 + 1;
        t.groups.insert(
            id,
            rcodis_core::topology::Group {
                id,
                servers: vec![format!("127.0.0.1:{p}")],
                read_from_replica: false,
            },
        );
    }
    for s in &mut t.slots {
        s.group = if s.id < split { 1 } else { 2 };
    }
    t.epoch = epoch;
    t
}

/// An rcodis-server (or any Redis-like server binary) on a free loopback port.
pub struct ServerProc {
    pub port: u16,
    pub proc: Process,
    pub dir: tempfile::TempDir,
}

impl ServerProc {
    /// Starts `bin --port 0 --dir D <args>`, learns its port, and waits until it answers.
    pub fn start(bin: &std::path::Path, args: &[&str]) -> ServerProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(bin);
        cmd.args(["--port", "0"])
            .arg("--dir")
            .arg(dir.path())
            .args(args);
        let (p, port) = spawn_on_free_port("rcodis-server", cmd);
        // With a password, PING answers NOAUTH even while loading: authenticate first.
        let pass = args
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| args.get(i + 1));
        match pass {
            Some(pw) => wait_until("server to load its data", Duration::from_secs(60), || {
                matches!(try_ping_auth(port, Some(pw)), Some(Frame::Simple(_)))
            }),
            None => wait_loaded(port),
        }
        ServerProc { port, proc: p, dir }
    }

    /// A new client connection.
    pub fn conn(&self) -> Conn {
        Conn::connect(self.port)
    }
}

/// Waits until the server on `port` answers PING with anything but -LOADING (an error such
/// as -NOAUTH counts as answering).
pub fn wait_loaded(port: u16) {
    wait_until(
        "server to answer PING",
        Duration::from_secs(60),
        || match try_ping(port) {
            Some(Frame::Simple(_)) => true,
            Some(Frame::Error(e)) => !e.starts_with(b"LOADING"),
            _ => false,
        },
    );
}

/// One PING on a fresh connection; `None` if the connection failed.
pub fn try_ping(port: u16) -> Option<Frame> {
    try_ping_auth(port, None)
}

/// PING after AUTH `password` (when given); the PING's reply.
pub fn try_ping_auth(port: u16, password: Option<&str>) -> Option<Frame> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = Vec::new();
    if let Some(pw) = password {
        Request::from_args(["AUTH", pw]).write_resp(&mut req);
    }
    req.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    s.write_all(&req).ok()?;
    let mut skip = usize::from(password.is_some());
    let mut buf = BytesMut::new();
    let mut d = FrameDecoder::default();
    loop {
        if let Ok(Some(f)) = d.decode(&mut buf) {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            return Some(f);
        }
        let mut tmp = [0u8; 512];
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// A key whose slot belongs to shard `shard` of an `nr`-shard rcodis-server.
pub fn key_on_shard(shard: usize, nr: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| rcodis_core::slot::slot_of(k.as_bytes()) as usize % nr == shard)
        .expect("some key")
}

/// Starts the rcodis-server at `bin` on a free port with its data in `dir` (and `args`),
/// once it has loaded its data.
pub fn start_server_in(
    bin: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
) -> (Process, u16) {
    let mut cmd = Command::new(bin);
    cmd.args(["--port", "0"]).arg("--dir").arg(dir).args(args);
    let (p, port) = spawn_on_free_port("rcodis-server", cmd);
    wait_loaded(port);
    (p, port)
}

/// A library whose function `run` runs its arguments as a command (for [`wrap_in_script`]).
pub const RUN_LIBRARY: &str = "#!lua name=difftest\n\
     redis.register_function('run', function(keys, args) return redis.call(unpack(args)) end)";

/// A command run by `redis.call` inside a script (EVAL) or, with `function`, inside the
/// function of [`RUN_LIBRARY`] (FCALL), declaring the command's keys; `None` for a command
/// that cannot run in one (unknown, not allowed in scripts, keys not found), or, with
/// `single_key`, that has other than one key.
pub fn wrap_in_script(cmd: &[String], function: bool, single_key: bool) -> Option<Vec<String>> {
    use rcodis_core::cmd::{key_indexes, resolve_request, CommandFlags};
    let req = rcodis_core::resp::Request::from_args(cmd);
    let spec = resolve_request(&req).ok()?;
    if spec.has(CommandFlags::NOSCRIPT) {
        return None;
    }
    let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_bytes()).collect();
    let keys = key_indexes(spec, &args, false).ok()?;
    if single_key && keys.len() != 1 {
        return None;
    }
    let mut v = if function {
        vec!["FCALL".to_string(), "run".to_string()]
    } else {
        vec![
            "EVAL".to_string(),
            "return redis.call(unpack(ARGV))".to_string(),
        ]
    };
    v.push(keys.len().to_string());
    v.extend(keys.iter().map(|&i| cmd[i].clone()));
    v.extend(cmd.iter().cloned());
    Some(v)
}

/// Runs `cases` on `a` (the reference) and `b`, over RESP2 and then RESP3 (each time after
/// `setup` on both), and asserts equal replies; `fix` may first put a reply in a comparable
/// form (for replies whose order is unspecified).
pub fn same_replies(
    a: &mut Conn,
    b: &mut Conn,
    setup: &[&[&str]],
    cases: &[&[&str]],
    fix: impl Fn(&[&str], &mut Frame),
) {
    for resp3 in [false, true] {
        for c in [&mut *a, &mut *b] {
            for s in setup {
                c.cmd(s);
            }
            if resp3 {
                c.cmd(&["HELLO", "3"]);
            }
        }
        for case in cases {
            let (mut x, mut y) = (a.cmd(case), b.cmd(case));
            fix(case, &mut x);
            fix(case, &mut y);
            assert_eq!(x, y, "resp3 {resp3}: {case:?}");
        }
    }
}

/// Normalises a reply for comparison: for commands whose reply order is unspecified
/// (SMEMBERS, HGETALL, KEYS, ...), sorts the elements (pairs stay together for maps).
pub fn normalize(cmd: &str, f: Frame) -> Frame {
    let c = cmd.to_ascii_lowercase();
    let pairs = matches!(c.as_str(), "hgetall" | "config");
    let unordered = matches!(
        c.as_str(),
        "smembers"
            | "sinter"
            | "sunion"
            | "sdiff"
            | "hkeys"
            | "hvals"
            | "keys"
            | "hgetall"
            | "spop"
            | "srandmember"
            | "hrandfield"
            | "zrandmember"
    );
    match f {
        Frame::Array(mut v) | Frame::Set(mut v) if unordered => {
            if pairs {
                let mut ps: Vec<(Frame, Frame)> =
                    v.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
                ps.sort_by(|a, b| format!("{:?}", a).cmp(&format!("{:?}", b)));
                Frame::Array(ps.into_iter().flat_map(|(a, b)| [a, b]).collect())
            } else {
                v.sort_by_key(|x| format!("{x:?}"));
                Frame::Array(v)
            }
        }
        Frame::Map(mut ps) if unordered => {
            ps.sort_by(|a, b| format!("{:?}", a).cmp(&format!("{:?}", b)));
            Frame::Map(ps)
        }
        Frame::Set(v) => Frame::Array(v),
        other => other,
    }
}

/// A real etcd on free loopback ports with its data in a temporary directory; stopped by
/// PID when dropped. Set `RCODIS_ETCD` to use another binary than `etcd`.
pub struct EtcdProc {
    pub port: u16,
    pub proc: Process,
    pub dir: tempfile::TempDir,
}

impl EtcdProc {
    /// Starts etcd and waits until it reports itself healthy.
    pub fn start() -> EtcdProc {
        let bin = std::env::var("RCODIS_ETCD").unwrap_or_else(|_| "etcd".into());
        for _ in 0..5 {
            let (port, peer) = (free_port(), free_port());
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cmd = Command::new(&bin);
            cmd.arg("--data-dir")
                .arg(dir.path().join("etcd"))
                .args(["--name", "rcodis-test"])
                .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{port}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!(
                    "--initial-cluster=rcodis-test=http://127.0.0.1:{peer}"
                ));
            let mut proc = Process::spawn("etcd", cmd);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && !proc.exited() {
                if etcd_healthy(port) {
                    return EtcdProc { port, proc, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // A port taken meanwhile: try others.
        }
        panic!("cannot start '{bin}': install Debian's etcd-server (the README's test command does) or set RCODIS_ETCD");
    }

    /// The coordinator URL (`etcd://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.port)
    }
}

/// Whether etcd's `/health` on `port` says `"health":"true"`.
fn etcd_healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// A minimal HTTP/1.1 request (empty body, `headers` as `Name: value\r\n` lines): the
/// status code and the body.
pub fn http(addr: &str, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{headers}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    let code = body.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
