//! Pipelined connections from one shard to one backend server.
//!
//! Sessions append their requests' bytes straight to a backend's write buffer and queue
//! where each reply goes (a slot of the session's [`BatchSink`], or a one-shot channel on
//! the slower paths). The connection task writes whatever is queued in one go (inserting a
//! `SELECT` where the database changes), then reads replies and hands each to the next
//! waiter in order; requests queued meanwhile are written before it waits for more bytes,
//! so writes and reads overlap. A broken or unreachable backend answers every waiting
//! request with an error naming it, and the next request reconnects (with a short
//! back-off), so a dead backend never hangs its clients.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rcodis_core::resp::{Frame, FrameDecoder, Request};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::stats::BackendGauge;

/// A reply (raw RESP bytes) or why there is none.
pub type Reply = Result<Bytes, String>;

/// Where the replies of one session batch land: raw bytes in one arena, by request index.
/// The session waits once for the whole batch (one wake-up, however many backends).
#[derive(Default)]
pub struct BatchSink {
    data: RefCell<Vec<u8>>,
    spans: RefCell<Vec<Span>>,
    remaining: Cell<usize>,
    waker: Cell<Option<Waker>>,
}

enum Span {
    Waiting,
    Ok(u32, u32),
    Err(Box<str>),
}

impl BatchSink {
    /// Reserves the next reply slot.
    fn reserve(&self) -> u32 {
        let mut s = self.spans.borrow_mut();
        s.push(Span::Waiting);
        self.remaining.set(self.remaining.get() + 1);
        (s.len() - 1) as u32
    }

    fn filled(&self) {
        let left = self.remaining.get() - 1;
        self.remaining.set(left);
        if left == 0 {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    fn fill_ok(&self, idx: u32, reply: &[u8]) {
        let mut d = self.data.borrow_mut();
        let start = d.len() as u32;
        d.extend_from_slice(reply);
        self.spans.borrow_mut()[idx as usize] = Span::Ok(start, d.len() as u32);
        drop(d);
        self.filled();
    }

    fn fill_err(&self, idx: u32, e: &str) {
        self.spans.borrow_mut()[idx as usize] = Span::Err(e.into());
        self.filled();
    }

    /// Waits until every reserved slot has its reply.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.remaining.get() == 0 {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Appends slot `idx`'s reply (after [`BatchSink::wait`]) to `out`.
    pub fn write_to(&self, idx: u32, out: &mut BytesMut) {
        match &self.spans.borrow()[idx as usize] {
            Span::Ok(a, b) => out.extend_from_slice(&self.data.borrow()[*a as usize..*b as usize]),
            Span::Err(e) => {
                out.extend_from_slice(b"-ERR ");
                out.extend_from_slice(e.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Span::Waiting => out.extend_from_slice(b"-ERR reply lost\r\n"),
        }
    }

    /// Forgets the batch (every slot must be filled).
    pub fn clear(&self) {
        let mut d = self.data.borrow_mut();
        d.clear();
        if d.capacity() > 1 << 20 {
            d.shrink_to(64 * 1024);
        }
        self.spans.borrow_mut().clear();
    }
}

/// Where one reply goes.
enum Sink {
    /// The reply to a `SELECT` the connection inserted.
    Select,
    One(oneshot::Sender<Reply>),
    Batch(Rc<BatchSink>, u32),
}

impl Sink {
    fn fail(self, e: &str) {
        match self {
            Sink::Select => {}
            Sink::One(tx) => {
                let _ = tx.send(Err(e.to_string()));
            }
            Sink::Batch(s, i) => s.fill_err(i, e),
        }
    }
}

/// What sessions share with a connection task.
struct Inner {
    /// Request bytes not written yet, and where each of their replies goes.
    wbuf: RefCell<BytesMut>,
    queue: RefCell<VecDeque<Sink>>,
    /// The database the queued bytes assume at their start, and the one after them.
    head_db: Cell<u16>,
    tail_db: Cell<u16>,
    task: Cell<Option<Waker>>,
    closed: Cell<bool>,
    /// Requests written and not answered yet.
    inflight: Cell<usize>,
    gauge: Option<Arc<BackendGauge>>,
    /// When the connection last failed (`None`: it works, or was never tried).
    failed_at: Cell<Option<Instant>>,
    /// When a not-ready reply (-LOADING, -MASTERDOWN) was last logged.
    warned_at: Cell<Option<Instant>>,
}

impl Inner {
    /// Publishes the queue depth (for /metrics).
    fn publish_depth(&self) {
        if let Some(g) = &self.gauge {
            let d = (self.queue.borrow().len() + self.inflight.get()) as u64;
            g.depth.store(d, Ordering::Relaxed);
        }
    }

    fn set_connected(&self, up: bool) {
        self.failed_at
            .set(if up { None } else { Some(Instant::now()) });
        if let Some(g) = &self.gauge {
            g.connected.store(up, Ordering::Relaxed);
            if !up {
                g.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Closes the connection task when the last handle goes.
struct Guard(Rc<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.closed.set(true);
        if let Some(w) = self.0.task.take() {
            w.wake();
        }
    }
}

/// A handle to one backend connection task.
#[derive(Clone)]
pub struct Backend {
    pub addr: Rc<str>,
    inner: Rc<Inner>,
    _guard: Rc<Guard>,
}

impl Backend {
    /// Starts the connection task for `addr`: `timeout` bounds connecting, `read_timeout`
    /// (`None`: no limit) how long it waits for a reply.
    pub fn start(
        addr: &str,
        auth: String,
        timeout: Duration,
        read_timeout: Option<Duration>,
    ) -> Backend {
        Self::start_proto(addr, auth, timeout, read_timeout, false, None)
    }

    /// Like `start`; with `resp3` the connection speaks RESP3 (for RESP3 sessions, whose
    /// replies are then forwarded as the server wrote them).
    pub fn start_proto(
        addr: &str,
        auth: String,
        timeout: Duration,
        read_timeout: Option<Duration>,
        resp3: bool,
        gauge: Option<Arc<BackendGauge>>,
    ) -> Backend {
        let inner = Rc::new(Inner {
            wbuf: RefCell::new(BytesMut::with_capacity(16 * 1024)),
            queue: RefCell::new(VecDeque::new()),
            head_db: Cell::new(0),
            tail_db: Cell::new(0),
            task: Cell::new(None),
            closed: Cell::new(false),
            inflight: Cell::new(0),
            gauge,
            failed_at: Cell::new(None),
            warned_at: Cell::new(None),
        });
        let addr: Rc<str> = Rc::from(addr);
        let timeouts = (timeout, read_timeout);
        glommio::spawn_local(run(addr.clone(), auth, timeouts, resp3, inner.clone())).detach();
        Backend {
            addr,
            _guard: Rc::new(Guard(inner.clone())),
            inner,
        }
    }

    /// Whether to send optional traffic (replica reads) here: the connection works, or its
    /// last failure is `retry_after` old (then one attempt tells).
    pub fn usable(&self, retry_after: Duration) -> bool {
        self.inner
            .failed_at
            .get()
            .is_none_or(|t| t.elapsed() >= retry_after)
    }

    /// Requests queued or written and not answered yet.
    pub fn queue_depth(&self) -> usize {
        self.inner.queue.borrow().len() + self.inner.inflight.get()
    }

    fn enqueue(&self, req: &[u8], db: u16, sink: Sink) {
        let inner = &*self.inner;
        let mut w = inner.wbuf.borrow_mut();
        let mut q = inner.queue.borrow_mut();
        if q.is_empty() {
            inner.head_db.set(inner.tail_db.get());
        }
        if db != inner.tail_db.get() {
            Request::from_args([&b"SELECT"[..], db.to_string().as_bytes()]).write_resp(&mut *w);
            q.push_back(Sink::Select);
            inner.tail_db.set(db);
        }
        w.extend_from_slice(req);
        q.push_back(sink);
        if let Some(t) = inner.task.take() {
            t.wake();
        }
    }

    /// Queues a request (raw RESP) whose reply goes to slot of `sink` (returned).
    pub fn send_batch(&self, req: &[u8], db: u16, sink: &Rc<BatchSink>) -> u32 {
        let idx = sink.reserve();
        self.enqueue(req, db, Sink::Batch(sink.clone(), idx));
        idx
    }

    /// Queues a request (raw RESP) for database `db`; the reply comes back on the receiver.
    pub fn send(&self, req: Bytes, db: u16) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(&req, db, Sink::One(tx));
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
    tmp: Box<[u8]>,
    dec: FrameDecoder,
}

impl Conn {
    /// Reads what is there (at least one byte) into `buf`.
    async fn fill(&mut self) -> Result<(), String> {
        let n = self
            .stream
            .read(&mut self.tmp)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        self.buf.extend_from_slice(&self.tmp[..n]);
        Ok(())
    }
}

async fn read_frame(c: &mut Conn, timeout: Option<Duration>) -> Result<Bytes, String> {
    let deadline = timeout.map(|t| Instant::now() + t);
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
        c.fill().await?;
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
        tmp: vec![0u8; 16 * 1024].into_boxed_slice(),
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

/// The connection task: connects on demand, writes what is queued, delivers replies in
/// order, and fails what it cannot deliver.
async fn run(
    addr: Rc<str>,
    auth: String,
    (timeout, read_timeout): (Duration, Option<Duration>),
    resp3: bool,
    inner: Rc<Inner>,
) {
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::ZERO;
    let mut inflight: VecDeque<Sink> = VecDeque::new();
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        poll_fn(|cx| {
            if !inner.queue.borrow().is_empty() || inner.closed.get() {
                Poll::Ready(())
            } else {
                inner.task.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        if inner.queue.borrow().is_empty() {
            return; // closed, nothing left
        }
        if conn.is_none() {
            if !backoff.is_zero() {
                glommio::timer::sleep(backoff).await;
            }
            match connect_proto(&addr, &auth, timeout, resp3).await {
                Ok(c) => {
                    c.stream.set_read_timeout(read_timeout).ok();
                    conn = Some(c);
                    backoff = Duration::ZERO;
                    inner.set_connected(true);
                }
                Err(e) => {
                    tracing::warn!(backend = %addr, error = %e, "backend unreachable");
                    inner.set_connected(false);
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
                    let msg = format!("backend {addr} unreachable: {e}");
                    let queued: Vec<Sink> = inner.queue.borrow_mut().drain(..).collect();
                    inner.wbuf.borrow_mut().clear();
                    inner.head_db.set(inner.tail_db.get());
                    for s in queued {
                        s.fail(&msg);
                    }
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        let r = pump(c, &addr, &inner, &mut inflight, &mut out, read_timeout).await;
        inner.inflight.set(0);
        inner.publish_depth();
        if let Err(e) = r {
            tracing::warn!(backend = %addr, error = %e, "backend connection failed");
            inner.set_connected(false);
            conn = None;
            let msg = format!("backend {addr}: {e}");
            for s in inflight.drain(..) {
                s.fail(&msg);
            }
        }
    }
}

/// Writes what is queued and reads replies until nothing is waiting.
async fn pump(
    c: &mut Conn,
    addr: &str,
    inner: &Inner,
    inflight: &mut VecDeque<Sink>,
    out: &mut BytesMut,
    read_timeout: Option<Duration>,
) -> Result<(), String> {
    loop {
        if !inner.queue.borrow().is_empty() {
            out.clear();
            if c.db != inner.head_db.get() {
                // A new connection starts in database 0.
                Request::from_args([&b"SELECT"[..], inner.head_db.get().to_string().as_bytes()])
                    .write_resp(&mut *out);
                inflight.push_back(Sink::Select);
                out.extend_from_slice(&inner.wbuf.borrow());
            } else {
                std::mem::swap(out, &mut *inner.wbuf.borrow_mut());
            }
            inner.wbuf.borrow_mut().clear();
            inflight.extend(inner.queue.borrow_mut().drain(..));
            c.db = inner.tail_db.get();
            inner.head_db.set(c.db);
            inner.inflight.set(inflight.len());
            inner.publish_depth();
            c.stream.write_all(out).await.map_err(|e| e.to_string())?;
        }
        if inflight.is_empty() {
            return Ok(());
        }
        let n = c
            .stream
            .read(&mut c.tmp)
            .await
            .map_err(|e| match read_timeout {
                Some(t) if e.kind() == std::io::ErrorKind::TimedOut => format!(
                    "no reply within {} ms (backend_read_timeout_ms)",
                    t.as_millis()
                ),
                _ => e.to_string(),
            })?;
        if n == 0 {
            return Err("connection closed".into());
        }
        // Replies are handed out straight from the read buffer when nothing is left over from
        // the last read (the usual case); only an incomplete tail is kept in `buf`.
        let Conn { buf, tmp, dec, .. } = c;
        let from_tmp = buf.is_empty();
        if !from_tmp {
            buf.extend_from_slice(&tmp[..n]);
        }
        let data: &[u8] = if from_tmp { &tmp[..n] } else { &buf[..] };
        let mut pos = 0;
        while let Some(len) = dec
            .check(&data[pos..])
            .map_err(|e| format!("bad reply: {e}"))?
        {
            let frame = &data[pos..pos + len];
            pos += len;
            deliver(frame, addr, inner, inflight)?;
        }
        if from_tmp {
            buf.extend_from_slice(&tmp[pos..n]);
        } else {
            buf.advance(pos);
        }
        inner.inflight.set(inflight.len());
    }
}

/// Hands one reply to the next waiter in order.
fn deliver(
    frame: &[u8],
    addr: &str,
    inner: &Inner,
    inflight: &mut VecDeque<Sink>,
) -> Result<(), String> {
    if frame.starts_with(b"-LOADING") || frame.starts_with(b"-MASTERDOWN") {
        // Passed through to the client as it is; said once a second per backend.
        if inner
            .warned_at
            .get()
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            inner.warned_at.set(Some(Instant::now()));
            tracing::warn!(
                backend = %addr,
                reply = %String::from_utf8_lossy(frame).trim_end(),
                "backend is not ready"
            );
        }
    }
    match inflight.pop_front() {
        Some(Sink::Batch(s, i)) => s.fill_ok(i, frame),
        Some(Sink::One(tx)) => {
            let _ = tx.send(Ok(Bytes::copy_from_slice(frame)));
        }
        Some(Sink::Select) => {
            if frame.first() == Some(&b'-') {
                return Err(format!(
                    "SELECT failed: {}",
                    String::from_utf8_lossy(frame).trim_end()
                ));
            }
        }
        None => return Err("a reply nobody asked for".into()),
    }
    Ok(())
}

/// A request that may block (BLPOP, ...) on a connection of its own: it must not hold up the
/// shared pipeline, and it waits without a read timeout. Dropping the handle closes the
/// connection at once, so the server forgets the waiter.
pub struct Dedicated {
    _cancel: oneshot::Sender<()>,
}

/// Sends `req` for database `db` on a new connection to `addr`; the reply is waited for
/// `reply_timeout` at most (`None`: as long as it takes, for a blocking command).
pub fn dedicated(
    addr: &str,
    auth: String,
    connect_timeout: Duration,
    reply_timeout: Option<Duration>,
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
            read_frame(&mut c, reply_timeout).await
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
