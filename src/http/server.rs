//! Threads, sockets and limits of the live endpoint; the protocol is hyper's.
//!
//! One accept thread and [`HttpOptions::max_connections`] worker threads, all created at start
//! and all running with tracking suspended. The accept thread hands sockets to the workers
//! through a bounded queue (as long as the worker count); when it is full, the connection gets
//! a fixed 503 response and is closed. A worker drives hyper's HTTP/1.1 connection future to
//! completion on its non-blocking socket ([`block_on`]): when the future is pending on the
//! socket, the worker waits in `poll(2)` for that one socket. Waiting has a deadline
//! ([`HttpOptions::timeout`] from the connection's start or from the last bytes written): a
//! client that sends a head too slowly, or does not take a response, is dropped.
//!
//! Shutdown: set the stop flag, wake the accept thread with a connection to itself, close the
//! open connections (their blocked reads return), drop the queue (idle workers return), join.

use std::cell::Cell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::HttpOptions;
use crate::error::Error;

/// A running live endpoint. [`shutdown`](Self::shutdown) (or drop) stops it and joins its
/// threads.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// What the server's threads share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) options: HttpOptions,
    stop: AtomicBool,
    /// Open connections by id (a clone of each socket), so shutdown can close them.
    open: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    /// Held while a report is built and rendered: one at a time.
    pub(super) build: Mutex<()>,
}

impl HttpServer {
    /// The address the server listens on (with the port chosen when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes open connections and joins every server thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        crate::thread::untracked(|| {
            self.shared.stop.store(true, SeqCst);
            // Wake the accept thread, blocked in accept(): a connection to ourselves.
            let _ = TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_secs(1));
            for s in lock(&self.shared.open).values() {
                let _ = s.shutdown(Shutdown::Both);
            }
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where to connect to reach a listener bound to `addr` (an unspecified address is reached on
/// loopback).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds and starts the threads. Called with tracking suspended.
pub(super) fn start(addr: SocketAddr, mut options: HttpOptions) -> Result<HttpServer, Error> {
    options.max_connections = options.max_connections.max(1);
    options.max_header_bytes = options.max_header_bytes.max(8 * 1024);
    let listener = TcpListener::bind(addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            Error::InvalidConfig(format!(
                "http: cannot listen on {addr}: the address is already in use (another \
                 allocscope server or program is listening there); choose another port, or \
                 port 0 for a free one"
            ))
        } else {
            Error::InvalidConfig(format!("http: cannot listen on {addr}: {e}"))
        }
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::InvalidConfig(format!("http: {e}")))?;
    let workers = options.max_connections;
    let shared = Arc::new(Shared {
        options,
        stop: AtomicBool::new(false),
        open: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        build: Mutex::new(()),
    });
    let (tx, rx) = sync_channel::<TcpStream>(workers);
    let rx = Arc::new(Mutex::new(rx));
    let mut threads = Vec::with_capacity(workers + 1);
    let spawn_err =
        |e: io::Error| Error::InvalidConfig(format!("http: cannot start a thread: {e}"));
    for i in 0..workers {
        let (shared, rx) = (shared.clone(), rx.clone());
        let t = std::thread::Builder::new()
            .name(format!("allocscope-http-{i}"))
            .spawn(move || crate::thread::untracked(|| worker(&shared, &rx)));
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                drop(tx);
                for t in threads {
                    let _ = t.join();
                }
                return Err(spawn_err(e));
            }
        }
    }
    let accept_shared = shared.clone();
    let t = std::thread::Builder::new()
        .name("allocscope-http".into())
        .spawn(move || crate::thread::untracked(|| accept_loop(&listener, &accept_shared, tx)));
    match t {
        Ok(t) => threads.push(t),
        Err(e) => {
            // `tx` went with the failed closure: the workers' queue is closed, they return.
            for t in threads {
                let _ = t.join();
            }
            return Err(spawn_err(e));
        }
    }
    Ok(HttpServer {
        addr: local,
        shared,
        threads,
    })
}

/// The 503 sent when every worker is busy and the queue is full (a fixed response, written
/// without reading the request).
fn busy_response() -> String {
    let body = "allocscope: too many connections, retry later\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Shared,
    tx: std::sync::mpsc::SyncSender<TcpStream>,
) {
    let mut failures = 0u32;
    while !shared.stop.load(SeqCst) {
        let stream = match listener.accept() {
            Ok((s, _)) => {
                failures = 0;
                s
            }
            Err(_) => {
                // EMFILE and the like: back off instead of spinning.
                failures = failures.saturating_add(1);
                std::thread::sleep(Duration::from_millis(10 * u64::from(failures.min(100))));
                continue;
            }
        };
        if shared.stop.load(SeqCst) {
            break;
        }
        // A burst can fill the queue before the workers wake up to take from it: give them
        // a moment (at most 250 ms) before refusing.
        let mut pending = tx.try_send(stream);
        for _ in 0..50 {
            match pending {
                Err(TrySendError::Full(s)) if !shared.stop.load(SeqCst) => {
                    std::thread::sleep(Duration::from_millis(5));
                    pending = tx.try_send(s);
                }
                _ => break,
            }
        }
        match pending {
            Ok(()) => {}
            Err(TrySendError::Full(mut s)) => {
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = s.write_all(busy_response().as_bytes());
                let _ = s.shutdown(Shutdown::Both);
            }
            Err(TrySendError::Disconnected(_)) => break,
        }
    }
}

fn worker(shared: &Arc<Shared>, rx: &Mutex<Receiver<TcpStream>>) {
    loop {
        let next = lock(rx).recv();
        let Ok(stream) = next else { return };
        if shared.stop.load(SeqCst) {
            return;
        }
        let id = shared.next_id.fetch_add(1, SeqCst);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.open).insert(id, clone);
        }
        // Checked again after registering: a shutdown in between has closed it or will see it.
        if !shared.stop.load(SeqCst) {
            serve_connection(shared, stream);
        }
        lock(&shared.open).remove(&id);
    }
}

fn serve_connection(shared: &Arc<Shared>, stream: TcpStream) {
    let timeout = shared.options.timeout;
    let _ = stream.set_nodelay(true);
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let wait = Rc::new(Wait {
        want_read: Cell::new(false),
        want_write: Cell::new(false),
        deadline: Cell::new(Instant::now() + timeout),
    });
    let fd = stream.as_raw_fd();
    let io = SocketIo {
        stream,
        timeout,
        wait: wait.clone(),
    };
    let svc_shared = shared.clone();
    let svc_wait = wait.clone();
    let service = hyper::service::service_fn(move |req| {
        // A panic while rendering costs one 500, not a worker thread.
        let resp = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::routes::handle(&svc_shared, &req)
        }))
        .unwrap_or_else(|_| super::routes::internal_error());
        // Building the response took our time, not the client's: its deadline starts now.
        svc_wait.deadline.set(Instant::now() + timeout);
        async move { Ok::<_, Infallible>(resp) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(shared.options.max_header_bytes)
        .header_read_timeout(None)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    // Errors (timeouts, resets, bad requests answered by hyper) end this connection only.
    let _ = block_on(conn, fd, &wait);
}

/// What the connection waits for when its future is pending, and until when.
struct Wait {
    want_read: Cell<bool>,
    want_write: Cell<bool>,
    /// When the socket must have made progress by: [`HttpOptions::timeout`] after the
    /// connection's start or its last write (so it bounds both a request head's arrival and
    /// each write of a response).
    deadline: Cell<Instant>,
}

/// A non-blocking socket as hyper's IO: `Pending` when the socket would block, with what it
/// waits for recorded in [`Wait`] for [`block_on`].
struct SocketIo {
    stream: TcpStream,
    timeout: Duration,
    wait: Rc<Wait>,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "client too slow")
}

impl SocketIo {
    fn expired(&self) -> bool {
        Instant::now() >= self.wait.deadline.get()
    }
}

impl hyper::rt::Read for SocketIo {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut tmp = [0u8; 8 * 1024];
        let want = tmp.len().min(buf.remaining());
        loop {
            return match this.stream.read(&mut tmp[..want]) {
                Ok(n) => {
                    buf.put_slice(&tmp[..n]);
                    Poll::Ready(Ok(()))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if this.expired() {
                        return Poll::Ready(Err(timed_out()));
                    }
                    this.wait.want_read.set(true);
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e)),
            };
        }
    }
}

impl hyper::rt::Write for SocketIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            return match this.stream.write(buf) {
                Ok(n) => {
                    // Progress: the next wait (the rest of this response, or the next request
                    // head) gets a full timeout.
                    this.wait.deadline.set(Instant::now() + this.timeout);
                    Poll::Ready(Ok(n))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if this.expired() {
                        return Poll::Ready(Err(timed_out()));
                    }
                    this.wait.want_write.set(true);
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e)),
            };
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket: nothing buffered here.
        let _ = self;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().stream.shutdown(Shutdown::Write))
    }
}

/// Runs a connection's future to completion on this thread. When it is pending on the socket,
/// waits in `poll(2)` for what it wants (readable, writable) until the deadline; the next
/// poll then reads, writes or times out. Pending for any other reason (hyper yielding), it is
/// polled again after at most 1 ms: a missed wake-up costs time, never a hang.
fn block_on<F: Future>(f: F, fd: RawFd, wait: &Wait) -> F::Output {
    let waker = Waker::from(Arc::new(NoopWake));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        wait.want_read.set(false);
        wait.want_write.set(false);
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        let mut events: libc::c_short = 0;
        if wait.want_read.get() {
            events |= libc::POLLIN;
        }
        if wait.want_write.get() {
            events |= libc::POLLOUT;
        }
        if events == 0 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let left = wait
            .deadline
            .get()
            .saturating_duration_since(Instant::now());
        // Rounded up, so a deadline less than 1 ms away still waits instead of spinning.
        let ms = left.as_millis().saturating_add(1).min(i32::MAX as u128) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid, initialised `pollfd` on our stack and we pass a count of
        // 1; `fd` is the connection's socket, open for the whole call (the future owns it).
        let _ = unsafe { libc::poll(&mut pfd, 1, ms) };
    }
}

struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}
