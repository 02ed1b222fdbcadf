//! The live endpoint (cargo feature `http`): what Prometheus, `go tool pprof` (and Pyroscope,
//! Parca, Grafana Alloy) and a browser read from a running process.
//!
//! ```no_run
//! # fn main() -> Result<(), allocscope::Error> {
//! let server = allocscope::http::serve("127.0.0.1:6060")?; // or ALLOCSCOPE_HTTP=127.0.0.1:6060
//! println!("http://{}/metrics", server.local_addr());
//! # Ok(()) }
//! ```
//!
//! | path | content |
//! | --- | --- |
//! | `/debug/pprof/heap` | gzipped pprof ([`Report::to_pprof`]): `inuse_space` by default, `job` and `scope` labels |
//! | `/debug/pprof/allocs` | the same profile with `alloc_space` as the default sample type |
//! | `/metrics` | Prometheus text format 0.0.4: per-job and process figures ([`metrics`](self#metrics)) |
//! | `/report.json`, `/report.txt` | [`Report::to_json`], [`Report::to_text`] |
//! | `/flamegraph.svg?job=NAME&metric=retained-bytes` | [`Report::flamegraph_svg`] |
//! | `/` | the HTML report of the live process ([`Report::to_html`]) |
//!
//! ## Rules
//! * **Loopback by default.** Binding an address that is not loopback needs
//!   [`HttpOptions::allow_remote`]; without it [`serve_with`] returns an error and binds nothing.
//!   With [`HttpOptions::token`], every request without `Authorization: Bearer <token>` gets
//!   401 (compared in constant time).
//! * **Only generated content.** Paths are matched exactly against the table above; anything
//!   else is 404 and no file is ever read. Only GET and HEAD are served (others: 405).
//! * **Off the books.** Every server thread runs with tracking suspended for its whole life: its
//!   allocations (requests, reports, responses) are tracker overhead, never a job's.
//! * **Bounded.** [`HttpOptions::max_connections`] worker threads serve connections, created
//!   once; as many accepted connections can wait for one, and beyond that a connection gets 503
//!   and is closed. No thread is created per connection. A request head larger than
//!   [`HttpOptions::max_header_bytes`] gets 431 (the parser, hyper, says so). A connection must
//!   send each request head within [`HttpOptions::timeout`] of its start or of the previous
//!   response, else it is closed; writes time out alike. One full report is built at a time,
//!   so concurrent scrapes do not multiply the peak memory (`/metrics` is not queued behind
//!   them).
//! * **Cheap where polled.** `/metrics` is built from a snapshot without callsites: no stack is
//!   read, nothing is symbolized; its cost grows with the number of jobs, not of stacks.
//!   Profiles and reports symbolize through the per-address symbol cache, so a steady-state
//!   scrape only resolves addresses it has not met before.
//! * **Clean stop.** [`HttpServer::shutdown`] (or dropping the server) stops accepting, closes
//!   open connections and joins every thread.
//!
//! The HTTP/1.1 protocol is hyper's (its connection state machine and parser), driven on these
//! threads with blocking sockets, so the process needs no async runtime.
//!
//! ## Metrics
//! Per job (label `job`), by the job's inclusive figures (nested jobs counted in their parents
//! too): `allocscope_job_runs_total`, `allocscope_job_allocated_bytes_total`,
//! `allocscope_job_allocated_objects_total`, `allocscope_job_retained_bytes`,
//! `allocscope_job_retained_objects`, `allocscope_job_peak_bytes` (the highest run peak). At
//! most [`HttpOptions::max_metric_jobs`] jobs get their own series, those that retain the most;
//! the others are summed under `job="(other)"` (peak: their highest), so a process with
//! thousands of job names does not flood Prometheus. Because a job can move in or out of the
//! top N, the `(other)` counters are not monotonic. A job whose name starts with `"` or `(` is
//! labelled as [`job_display_name`](crate::job_display_name) shows it (`(other)` becomes
//! `"(other)"`), so no job shares the summed series. For the process: `allocscope_heap_live_bytes`,
//! `allocscope_rss_bytes`, `allocscope_not_returned_bytes`, `allocscope_tracker_bytes`.
//!
//! [`Report::to_pprof`]: crate::Report::to_pprof
//! [`Report::to_json`]: crate::Report::to_json
//! [`Report::to_text`]: crate::Report::to_text
//! [`Report::flamegraph_svg`]: crate::Report::flamegraph_svg
//! [`Report::to_html`]: crate::Report::to_html

mod metrics;
mod routes;
mod server;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub use server::HttpServer;

use crate::error::Error;

/// The environment variable that starts the server when the first scope begins: its
/// value is the address to bind (`127.0.0.1:6060`, `127.0.0.1:0`), with default options
/// (loopback only).
pub const ENV_VAR: &str = crate::config::HTTP;

/// Settings of the live endpoint. Build with struct update syntax:
/// `HttpOptions { allow_remote: true, token: Some(t), ..HttpOptions::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpOptions {
    /// Allow binding an address that is not loopback (default `false`: such a bind is an error).
    /// Set a [`token`](Self::token) as well: the endpoint shows code paths and job names.
    pub allow_remote: bool,
    /// When set, every request must carry `Authorization: Bearer <token>` (else 401).
    pub token: Option<String>,
    /// Connections served at once, one worker thread each (default 4, at least 1). As many
    /// more wait for a worker; beyond that, a connection gets 503.
    pub max_connections: usize,
    /// Time a client has to send a request head (from the connection's start or the previous
    /// response), and to take a response's bytes (default 10 s).
    pub timeout: Duration,
    /// Largest request head (request line and headers) in bytes (default and minimum 8 KiB,
    /// hyper's smallest buffer); larger gets 431.
    pub max_header_bytes: usize,
    /// Jobs with their own `/metrics` series, those retaining the most (default 100); the rest
    /// are summed under `job="(other)"`.
    pub max_metric_jobs: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            allow_remote: false,
            token: None,
            max_connections: 4,
            timeout: Duration::from_secs(10),
            max_header_bytes: 8 * 1024,
            max_metric_jobs: 100,
        }
    }
}

/// Serves the live endpoint on `addr` (loopback only; port 0 picks a free port), with default
/// options. See [`serve_with`].
pub fn serve(addr: impl ToSocketAddrs) -> Result<HttpServer, Error> {
    serve_with(addr, HttpOptions::default())
}

/// Serves the live endpoint on `addr` with `options`, on background threads that run until
/// [`HttpServer::shutdown`] or the server is dropped.
///
/// Errors: the address does not resolve; it is not loopback and `allow_remote` is off; it is
/// in use (for example by a second `serve` on the same address); an option is out of range.
pub fn serve_with(addr: impl ToSocketAddrs, options: HttpOptions) -> Result<HttpServer, Error> {
    crate::callsite::init_from_env();
    crate::thread::untracked(|| {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| Error::InvalidConfig(format!("http: cannot resolve the address: {e}")))?
            .collect();
        let Some(&addr) = addrs.first() else {
            return Err(Error::InvalidConfig(
                "http: the address resolves to nothing".into(),
            ));
        };
        if !options.allow_remote {
            if let Some(remote) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                return Err(Error::InvalidConfig(format!(
                    "http: {remote} is not a loopback address; the endpoint shows code paths \
                     and job names, so serving it beyond this machine needs \
                     HttpOptions {{ allow_remote: true, token: Some(..), .. }}"
                )));
            }
        }
        if options.token.as_deref() == Some("") {
            return Err(Error::InvalidConfig(
                "http: the token is empty; use None for no token".into(),
            ));
        }
        if options.timeout.is_zero() {
            return Err(Error::InvalidConfig("http: the timeout is zero".into()));
        }
        server::start(addr, options)
    })
}

/// The server started from [`ENV_VAR`], kept for the life of the process.
static FROM_ENV: OnceLock<Mutex<Option<HttpServer>>> = OnceLock::new();

/// Starts the server named by `ALLOCSCOPE_HTTP`, if set, once. Called by `startup` when the first
/// scope begins (never from inside the allocator), after the other environment settings are
/// applied; errors are reported on stderr, once.
pub(crate) fn start_from_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if ONCE.is_completed() {
        return;
    }
    crate::thread::untracked(|| {
        ONCE.call_once(|| {
            let Some(addr) = crate::config::http_addr() else {
                return;
            };
            match serve(addr.as_str()) {
                Ok(server) => {
                    eprintln!(
                        "allocscope: serving http://{}/ ({ENV_VAR})",
                        server.local_addr()
                    );
                    *FROM_ENV
                        .get_or_init(|| Mutex::new(None))
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(server);
                }
                Err(e) => eprintln!("allocscope: {ENV_VAR}={addr}: {e}"),
            }
        })
    });
}

/// The address of the server started from [`ENV_VAR`] (`None` if the variable is unset or
/// the server could not start). Its server runs for the life of the process.
pub fn env_server_addr() -> Option<SocketAddr> {
    FROM_ENV
        .get()?
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(HttpServer::local_addr)
}
