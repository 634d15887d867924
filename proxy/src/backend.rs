//! Pipelined connections from one shard to one backend server.
//!
//! A connection task owns the socket. Requests queue on a channel; each round the task takes
//! everything queued, writes it in one go (inserting a `SELECT` where the database changes),
//! then reads the replies in order and hands each to its waiter. A broken or unreachable
//! backend answers every waiting request with an error naming it, and the next round
//! reconnects (with a short back-off), so a dead backend never hangs its clients.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rcodis_core::resp::{Frame, FrameDecoder, Request};

/// A reply (raw RESP bytes) or why there is none.
pub type Reply = Result<Bytes, String>;

struct Pending {
    req: Bytes,
    db: u16,
    tx: oneshot::Sender<Reply>,
}

/// A handle to one backend connection task.
#[derive(Clone)]
pub struct Backend {
    pub addr: Rc<str>,
    tx: mpsc::UnboundedSender<Pending>,
}

impl Backend {
    /// Starts the connection task for `addr`.
    pub fn start(addr: &str, auth: String, timeout: Duration) -> Backend {
        Self::start_proto(addr, auth, timeout, false)
    }

    /// Like `start`; with `resp3` the connection speaks RESP3 (for RESP3 sessions, whose
    /// replies are then forwarded as the server wrote them).
    pub fn start_proto(addr: &str, auth: String, timeout: Duration, resp3: bool) -> Backend {
        let (tx, rx) = mpsc::unbounded();
        let addr: Rc<str> = Rc::from(addr);
        glommio::spawn_local(run_with(
            addr.clone(),
            auth,
            timeout,
            Some(timeout),
            resp3,
            rx,
        ))
        .detach();
        Backend { addr, tx }
    }

    /// Queues a request (raw RESP) for database `db`; the reply comes back on the receiver.
    pub fn send(&self, req: Bytes, db: u16) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.tx.unbounded_send(Pending { req, db, tx }) {
            let _ = e
                .into_inner()
                .tx
                .send(Err(format!("backend {} is shut down", self.addr)));
        }
        rx
    }

    /// Sends a request built from arguments.
    pub fn send_args<A: AsRef<[u8]>>(&self, args: &[A], db: u16) -> oneshot::Receiver<Reply> {
        let mut b = Vec::new();
        Request::from_args(args).write_resp(&mut b);
        self.send(Bytes::from(b), db)
    }
}

struct Conn {
    stream: TcpStream,
    db: u16,
    buf: BytesMut,
    dec: FrameDecoder,
}

async fn read_frame(c: &mut Conn, timeout: Option<Duration>) -> Result<Bytes, String> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut tmp = [0u8; 16 * 1024];
    loop {
        if let Some(f) = c
            .dec
            .decode_raw(&mut c.buf)
            .map_err(|e| format!("bad reply: {e}"))?
        {
            return Ok(f);
        }
        match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err("timed out waiting for a reply".into());
                }
                c.stream.set_read_timeout(Some(left)).ok();
            }
            None => {
                c.stream.set_read_timeout(None).ok();
            }
        }
        let n = c.stream.read(&mut tmp).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        c.buf.extend_from_slice(&tmp[..n]);
    }
}

async fn connect(addr: &str, auth: &str, timeout: Duration) -> Result<Conn, String> {
    connect_proto(addr, auth, timeout, false).await
}

/// Connects, authenticates, and with `resp3` switches the connection to RESP3 (HELLO 3).
async fn connect_proto(
    addr: &str,
    auth: &str,
    timeout: Duration,
    resp3: bool,
) -> Result<Conn, String> {
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("bad address: {e}"))?;
    let stream = TcpStream::connect_timeout(sock, timeout)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).ok();
    let mut c = Conn {
        stream,
        db: 0,
        buf: BytesMut::with_capacity(16 * 1024),
        dec: FrameDecoder::default(),
    };
    if !auth.is_empty() {
        let mut b = Vec::new();
        Request::from_args([&b"AUTH"[..], auth.as_bytes()]).write_resp(&mut b);
        c.stream.write_all(&b).await.map_err(|e| e.to_string())?;
        let r = read_frame(&mut c, Some(timeout)).await?;
        if !r.starts_with(b"+OK") {
            return Err(format!(
                "AUTH refused: {}",
                String::from_utf8_lossy(&r).trim_end()
            ));
        }
    }
    if resp3 {
        let mut b = Vec::new();
        Request::from_args([&b"HELLO"[..], b"3"]).write_resp(&mut b);
        c.stream.write_all(&b).await.map_err(|e| e.to_string())?;
        let r = read_frame(&mut c, Some(timeout)).await?;
        if r.first() == Some(&b'-') {
            return Err(format!(
                "HELLO 3 refused: {}",
                String::from_utf8_lossy(&r).trim_end()
            ));
        }
    }
    Ok(c)
}

async fn run_with(
    addr: Rc<str>,
    auth: String,
    timeout: Duration,
    read_timeout: Option<Duration>,
    resp3: bool,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_millis(0);
    while let Some(first) = rx.next().await {
        let mut batch = vec![first];
        while let Ok(p) = rx.try_recv() {
            batch.push(p);
            if batch.len() >= 1024 {
                break;
            }
        }
        if conn.is_none() {
            if !backoff.is_zero() {
                glommio::timer::sleep(backoff).await;
            }
            match connect_proto(&addr, &auth, timeout, resp3).await {
                Ok(c) => {
                    conn = Some(c);
                    backoff = Duration::ZERO;
                }
                Err(e) => {
                    tracing::warn!(backend = %addr, error = %e, "backend unreachable");
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
                    for p in batch {
                        let _ = p.tx.send(Err(format!("backend {addr} unreachable: {e}")));
                    }
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        // One write for the whole round; SELECT where the database changes.
        let mut out = BytesMut::new();
        let mut expect: Vec<Option<usize>> = Vec::with_capacity(batch.len() * 2);
        let mut db = c.db;
        for (i, p) in batch.iter().enumerate() {
            if p.db != db {
                let mut s = Vec::new();
                Request::from_args([&b"SELECT"[..], p.db.to_string().as_bytes()])
                    .write_resp(&mut s);
                out.extend_from_slice(&s);
                expect.push(None);
                db = p.db;
            }
            out.extend_from_slice(&p.req);
            expect.push(Some(i));
        }
        let mut replies: Vec<Option<Reply>> = (0..batch.len()).map(|_| None).collect();
        let mut failure: Option<String> = None;
        if let Err(e) = c.stream.write_all(&out).await {
            failure = Some(e.to_string());
        } else {
            for slot in &expect {
                match read_frame(c, read_timeout).await {
                    Ok(f) => match slot {
                        Some(i) => replies[*i] = Some(Ok(f)),
                        None => {
                            if f.first() == Some(&b'-') {
                                failure = Some(format!(
                                    "SELECT failed: {}",
                                    String::from_utf8_lossy(&f).trim_end()
                                ));
                                break;
                            }
                        }
                    },
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            c.db = db;
        }
        if let Some(e) = &failure {
            tracing::warn!(backend = %addr, error = %e, "backend connection failed");
            conn = None;
        }
        for (p, r) in batch.into_iter().zip(replies) {
            let r = r.unwrap_or_else(|| {
                Err(format!(
                    "backend {addr}: {}",
                    failure.clone().unwrap_or_default()
                ))
            });
            let _ = p.tx.send(r);
        }
    }
}

/// A request that may block (BLPOP, ...) on a connection of its own: it must not hold up the
/// shared pipeline, and it waits without a read timeout. Dropping the handle closes the
/// connection at once, so the server forgets the waiter.
pub struct Dedicated {
    _cancel: oneshot::Sender<()>,
}

/// Sends `req` for database `db` on a new connection to `addr`.
pub fn dedicated(
    addr: &str,
    auth: String,
    connect_timeout: Duration,
    req: Bytes,
    db: u16,
    resp3: bool,
) -> (Dedicated, oneshot::Receiver<Reply>) {
    let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
    let (tx, rx) = oneshot::channel::<Reply>();
    let addr = addr.to_string();
    glommio::spawn_local(async move {
        let work = async {
            let mut c = connect_proto(&addr, &auth, connect_timeout, resp3).await?;
            let mut out = Vec::new();
            if db != 0 {
                Request::from_args([&b"SELECT"[..], db.to_string().as_bytes()])
                    .write_resp(&mut out);
            }
            out.extend_from_slice(&req);
            c.stream.write_all(&out).await.map_err(|e| e.to_string())?;
            if db != 0 {
                let r = read_frame(&mut c, Some(connect_timeout)).await?;
                if r.first() == Some(&b'-') {
                    return Err(format!(
                        "SELECT failed: {}",
                        String::from_utf8_lossy(&r).trim_end()
                    ));
                }
            }
            read_frame(&mut c, None).await
        };
        futures::pin_mut!(work);
        // The connection (inside `work`) is dropped, and so closed, when the handle goes.
        if let futures::future::Either::Left((r, _)) =
            futures::future::select(work, cancel_rx).await
        {
            let _ = tx.send(r.map_err(|e| format!("backend {addr}: {e}")));
        }
    })
    .detach();
    (Dedicated { _cancel: cancel_tx }, rx)
}

/// Parses a raw reply into a frame (for merging split and fan-out replies).
pub fn parse(raw: &Bytes) -> Option<Frame> {
    let mut b = BytesMut::from(&raw[..]);
    FrameDecoder::default().decode(&mut b).ok().flatten()
}

/// A subscriber connection to one backend: commands (SUBSCRIBE, UNSUBSCRIBE, ...) go out as
/// they come; the messages it receives (`message`, `pmessage`, `smessage`) are handed to the
/// session raw; the backend's own (un)subscribe confirmations are dropped (the session counts
/// subscriptions across backends and answers those itself). Closed when the handle goes.
pub struct Subscriber {
    tx: mpsc::UnboundedSender<Bytes>,
}

impl Subscriber {
    pub fn start(
        addr: &str,
        auth: String,
        timeout: Duration,
        out: mpsc::UnboundedSender<Bytes>,
    ) -> Subscriber {
        let (tx, mut rx) = mpsc::unbounded::<Bytes>();
        let addr = addr.to_string();
        glommio::spawn_local(async move {
            let mut c = match connect(&addr, &auth, timeout).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(backend = %addr, error = %e, "subscriber connection failed");
                    return;
                }
            };
            let mut tmp = vec![0u8; 16 * 1024];
            loop {
                // Deliver every complete frame already read.
                loop {
                    match c.dec.decode_raw(&mut c.buf) {
                        Ok(Some(f)) => {
                            if is_message(&f) && out.unbounded_send(f).is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(backend = %addr, error = %e, "bad reply on a subscriber connection");
                            return;
                        }
                    }
                }
                let read = c.stream.read(&mut tmp);
                futures::pin_mut!(read);
                match futures::future::select(rx.next(), read).await {
                    futures::future::Either::Left((Some(cmd), _)) => {
                        if c.stream.write_all(&cmd).await.is_err() {
                            return;
                        }
                    }
                    // The session is gone: closing the socket ends the subscriptions.
                    futures::future::Either::Left((None, _)) => return,
                    futures::future::Either::Right((Ok(n), _)) if n > 0 => {
                        c.buf.extend_from_slice(&tmp[..n]);
                    }
                    futures::future::Either::Right(_) => {
                        tracing::warn!(backend = %addr, "subscriber connection closed by the backend");
                        return;
                    }
                }
            }
        })
        .detach();
        Subscriber { tx }
    }

    /// Sends a command built from arguments.
    pub fn send<A: AsRef<[u8]>>(&self, args: &[A]) {
        let mut b = Vec::new();
        Request::from_args(args).write_resp(&mut b);
        let _ = self.tx.unbounded_send(Bytes::from(b));
    }
}

/// Whether a raw push frame is a published message (not a subscription confirmation).
fn is_message(f: &[u8]) -> bool {
    let Some(Frame::Array(v)) = parse(&Bytes::copy_from_slice(f)) else {
        return false;
    };
    matches!(
        v.first().and_then(|k| k.as_bytes()).map(|b| b.to_ascii_lowercase()),
        Some(k) if k == b"message" || k == b"pmessage" || k == b"smessage"
    )
}
