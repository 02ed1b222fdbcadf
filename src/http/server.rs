//! The live endpoint's thread, sockets and limits; the protocol is hyper's.
//!
//! * **One thread, event-driven.** Each server owns one thread, `allocscope-http`, running with
//!   tracking suspended for its whole life. On it runs a tokio current-thread runtime (its own:
//!   the program's runtime, if it has one, is neither needed nor touched) with the accept loop
//!   and one task per connection, driven by hyper-util's connection builder (HTTP/1.1 only).
//!   An idle or slow connection is a parked task and a socket, not a thread: it costs memory
//!   (bounded, see below), never the others' turn.
//! * **Requests are answered inline**, on that thread, one at a time: a full report blocks the
//!   loop while it is built (its cost is in BENCHMARKS.md); nothing else does.
//! * **Deadlines** ([`HttpOptions::timeout`], from the connection's start or its last
//!   response): a request head that has not arrived by then closes the connection, however
//!   slowly its bytes trickle in; a write that makes no progress by then closes it too. Every
//!   deadline is computed with `checked_add`.
//! * **Bounded.** At most [`HttpOptions::max_connections`] connections are open. A new
//!   connection beyond that closes the connection that has been idle the longest (the least
//!   recent accept, response or written byte) instead of being refused, so idle clients, port
//!   scanners or slow senders cannot take the endpoint away from a scraper. When the process
//!   runs out of file descriptors, accepting closes the idlest connection the same way.
//! * **Stop.** [`HttpServer::shutdown`] (or drop) wakes the loop, which returns; dropping the
//!   runtime drops every connection's task (closing its socket), and the thread is joined.
//! * **Fork.** A server belongs to the process that started it (its pid is recorded). In a
//!   forked child, dropping an inherited server only forgets it: no thread is joined (it does
//!   not exist there), nothing is sent to the parent's loop, no socket is shut down; the
//!   child's copies of the descriptors are close-on-exec and close when it exits.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::{oneshot, Notify};
use tokio::time::Sleep;

use super::HttpOptions;
use crate::error::Error;

/// A running live endpoint. [`shutdown`](Self::shutdown) (or drop) stops it and joins its
/// thread.
///
/// A handle returned by [`serve`](super::serve) for the address the `ALLOCSCOPE_HTTP` server
/// already serves refers to that server: dropping it leaves that server running.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    /// `None` for a handle to the environment's server.
    owned: Option<Owned>,
}

#[derive(Debug)]
struct Owned {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// The process that started the server: only it may stop and join it.
    pid: u32,
    /// Keeps the timeline sampler running while the endpoint serves (its chart needs samples).
    _sampling: crate::timeline::KeepSampling,
}

/// What the request handler reads.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) options: HttpOptions,
    /// Held while a full report is built and rendered: one at a time across servers sharing it.
    pub(super) build: Mutex<()>,
}

impl HttpServer {
    /// The address the server listens on (with the port chosen when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes open connections and joins the server's thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// A handle to a server owned elsewhere (the environment's): dropping it stops nothing.
    pub(super) fn shared_handle(addr: SocketAddr) -> HttpServer {
        HttpServer { addr, owned: None }
    }

    fn stop(&mut self) {
        let Some(mut owned) = self.owned.take() else {
            return;
        };
        if owned.pid != std::process::id() {
            // A forked child: the thread does not exist here, and the loop and sockets are the
            // parent's. Forget, touch nothing.
            std::mem::forget(owned);
            return;
        }
        crate::thread::untracked(|| {
            if let Some(stop) = owned.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = owned.thread.take() {
                let _ = t.join();
            }
            drop(owned);
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn listen_error(addr: SocketAddr, e: &io::Error) -> Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        Error::InvalidConfig(format!(
            "http: cannot listen on {addr}: the address is already in use (another \
             allocscope server or program is listening there); choose another port, or \
             port 0 for a free one"
        ))
    } else {
        Error::InvalidConfig(format!("http: cannot listen on {addr}: {e}"))
    }
}

/// Binds and starts the server's thread; returns once it accepts. Called with tracking
/// suspended, with validated options.
pub(super) fn start(addr: SocketAddr, options: HttpOptions) -> Result<HttpServer, Error> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| listen_error(addr, &e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::InvalidConfig(format!("http: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::InvalidConfig(format!("http: {e}")))?;
    let shared = Arc::new(Shared {
        options,
        build: Mutex::new(()),
    });
    let (stop_tx, stop_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), Error>>(1);
    let thread = std::thread::Builder::new()
        .name("allocscope-http".into())
        .spawn(move || {
            crate::thread::untracked(|| run(listener, shared, stop_rx, ready_tx));
        })
        .map_err(|e| Error::InvalidConfig(format!("http: cannot start a thread: {e}")))?;
    let ready = ready_rx.recv();
    match ready {
        Ok(Ok(())) => Ok(HttpServer {
            addr: local,
            owned: Some(Owned {
                stop: Some(stop_tx),
                thread: Some(thread),
                pid: std::process::id(),
                _sampling: crate::timeline::keep_sampling(),
            }),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(Error::InvalidConfig(
                "http: the server thread ended before it could serve".into(),
            ))
        }
    }
}

/// The server thread: a current-thread runtime with the accept loop; returns after a stop,
/// having dropped every connection.
fn run(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stop: oneshot::Receiver<()>,
    ready: std::sync::mpsc::SyncSender<Result<(), Error>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(Error::InvalidConfig(format!(
                "http: cannot start the server's event loop: {e}"
            ))));
            return;
        }
    };
    let tasks = tokio::task::LocalSet::new();
    tasks.block_on(&rt, async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(Error::InvalidConfig(format!("http: {e}"))));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        accept_loop(listener, shared, stop).await;
    });
    // Every connection's task (and with it its socket) goes with the task set.
    drop(tasks);
    drop(rt);
}

/// The open connections of one server (on its thread only).
struct Server {
    shared: Arc<Shared>,
    builder: auto::Builder<TokioExecutor>,
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    next_id: Cell<u64>,
}

/// One connection's state seen from outside its task.
struct Conn {
    /// The last accept, response or byte written: the idlest connection is closed first.
    last_active: Cell<Instant>,
    /// When the client must have sent a request head, or taken written bytes, by.
    deadline: Cell<Instant>,
    timeout: Duration,
    close: Notify,
}

impl Conn {
    fn new(timeout: Duration) -> Conn {
        let now = Instant::now();
        Conn {
            last_active: Cell::new(now),
            deadline: Cell::new(deadline_after(now, timeout)),
            timeout,
            close: Notify::new(),
        }
    }

    /// Progress: the client gets a full timeout again.
    fn active(&self) {
        let now = Instant::now();
        self.last_active.set(now);
        self.deadline.set(deadline_after(now, self.timeout));
    }
}

/// `now + timeout`, never overflowing (the options are validated, so the fallback, a day, is
/// not expected to be used).
fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout)
        .or_else(|| now.checked_add(super::MAX_TIMEOUT))
        .unwrap_or(now)
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Server {
    /// Closes the connection idle the longest; false when there is none.
    fn evict_idlest(&self) -> bool {
        let mut conns = self.conns.borrow_mut();
        let Some(id) = conns
            .iter()
            .min_by_key(|(_, c)| c.last_active.get())
            .map(|(&id, _)| id)
        else {
            return false;
        };
        if let Some(c) = conns.remove(&id) {
            c.close.notify_one();
        }
        true
    }

    fn admit(self: &Rc<Self>, stream: tokio::net::TcpStream) {
        if self.conns.borrow().len() >= self.shared.options.max_connections {
            self.evict_idlest();
        }
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let conn = Rc::new(Conn::new(self.shared.options.timeout));
        self.conns.borrow_mut().insert(id, conn.clone());
        tokio::task::spawn_local(serve_connection(self.clone(), id, stream, conn));
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    let max_head = shared.options.max_header_bytes;
    builder
        .http1()
        .max_buf_size(max_head)
        .max_headers(max_head / super::MIN_HEADER_LINE_BYTES)
        .header_read_timeout(None)
        .keep_alive(true);
    let server = Rc::new(Server {
        shared,
        builder,
        conns: RefCell::new(HashMap::new()),
        next_id: Cell::new(0),
    });
    let mut failures = 0u32;
    loop {
        // A stop (or the handle gone) ends the loop; otherwise the next connection.
        let next = poll_fn(|cx| {
            if Pin::new(&mut stop).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            listener.poll_accept(cx).map(Some)
        })
        .await;
        match next {
            None => return,
            Some(Ok((stream, _))) => {
                failures = 0;
                server.admit(stream);
            }
            Some(Err(e)) => {
                // Out of descriptors: free the idlest connection's, so the next client (a
                // scrape) gets one. Other errors (a reset before accept): try again, backing
                // off if they repeat.
                if out_of_descriptors(&e) && server.evict_idlest() {
                    tokio::task::yield_now().await;
                    continue;
                }
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis(u64::from(failures.min(100)));
                let mut pause = pin!(tokio::time::sleep(pause));
                let stopped = poll_fn(|cx| {
                    if Pin::new(&mut stop).poll(cx).is_ready() {
                        return Poll::Ready(true);
                    }
                    pause.as_mut().poll(cx).map(|()| false)
                })
                .await;
                if stopped {
                    return;
                }
            }
        }
    }
}

/// Serves one connection until the client closes it, a deadline passes, an error, or the
/// server closes it (idlest at the limit, or stop).
async fn serve_connection(
    server: Rc<Server>,
    id: u64,
    stream: tokio::net::TcpStream,
    conn: Rc<Conn>,
) {
    let _ = stream.set_nodelay(true);
    // hyper's buffers are allocated at its first read: until the client sends a byte, an idle
    // connection holds only this task and its socket.
    {
        let mut deadline = pin!(tokio::time::sleep_until(conn.deadline.get().into()));
        let mut closed = pin!(conn.close.notified());
        let ready = poll_fn(|cx| {
            if closed.as_mut().poll(cx).is_ready() || deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            // A peek, not a readiness check: a new socket reads as ready until a read
            // would block.
            let mut byte = [std::mem::MaybeUninit::uninit()];
            let mut buf = tokio::io::ReadBuf::uninit(&mut byte);
            stream.poll_peek(cx, &mut buf).map(|_| true)
        })
        .await;
        if !ready {
            server.conns.borrow_mut().remove(&id);
            return;
        }
    }
    let io = TimedIo::new(TokioIo::new(stream), conn.clone());
    let svc_conn = conn.clone();
    let shared = server.shared.clone();
    let service = hyper::service::service_fn(move |req| {
        // A panic while rendering costs one 500, not the server.
        let resp = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::routes::handle(&shared, &req)
        }))
        .unwrap_or_else(|_| super::routes::internal_error());
        // Building the response took our time, not the client's.
        svc_conn.active();
        std::future::ready(Ok::<_, Infallible>(resp))
    });
    {
        let served = pin!(server.builder.serve_connection(io, service));
        let closed = pin!(conn.close.notified());
        let (mut served, mut closed) = (served, closed);
        // Errors (timeouts, resets, bad requests hyper answered) end this connection only.
        poll_fn(|cx| {
            if closed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            served.as_mut().poll(cx).map(|_| ())
        })
        .await;
    }
    server.conns.borrow_mut().remove(&id);
}

/// A socket with the connection's deadline: a read or write still pending at
/// [`Conn::deadline`] fails with `TimedOut`, which ends the connection. Reads do not move
/// the deadline (a head must arrive in time, however slowly it trickles); writes that make
/// progress do.
struct TimedIo<T> {
    inner: T,
    conn: Rc<Conn>,
    timer: Pin<Box<Sleep>>,
    armed: Instant,
}

impl<T> TimedIo<T> {
    fn new(inner: T, conn: Rc<Conn>) -> Self {
        let armed = conn.deadline.get();
        TimedIo {
            inner,
            conn,
            timer: Box::pin(tokio::time::sleep_until(armed.into())),
            armed,
        }
    }

    /// Called when the socket is not ready: an error once the deadline has passed, else
    /// pending (woken by the socket or the timer).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.conn.deadline.get();
        if deadline != self.armed {
            self.timer.as_mut().reset(deadline.into());
            self.armed = deadline;
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "client too slow")
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.conn.active();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}
