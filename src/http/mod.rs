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
//! * **Loopback by default.** Binding an address that is not loopback (`127.0.0.0/8`, `::1`,
//!   `::ffff:127.0.0.0/104`) needs [`HttpOptions::allow_remote`] and a
//!   [`token`](HttpOptions::token) (or the loudly named
//!   [`insecure_allow_remote_without_token`](HttpOptions::insecure_allow_remote_without_token));
//!   without them [`serve_with`] returns an error and binds nothing.
//! * **Token.** With [`HttpOptions::token`], every request without `Authorization: Bearer
//!   <token>` gets 401 (the scheme in any case, the token compared in constant time).
//! * **Loopback names only without a token.** A server without a token answers only requests
//!   whose `Host` is a loopback name or address (`localhost`, `*.localhost`, `127.x.x.x`,
//!   `[::1]`, `[::ffff:127.x.x.x]`, any port); others get 421, so a web page cannot read the
//!   endpoint through DNS rebinding. An HTTP/1.1 request without `Host` gets 400 (RFC 9112).
//! * **Only generated content.** Paths are matched exactly against the table above; anything
//!   else is 404 and no file is ever read. Only GET and HEAD are served (others: 405).
//! * **Off the books.** The server's thread runs with tracking suspended for its whole life:
//!   its allocations (requests, reports, responses) are tracker overhead, never a job's.
//! * **Idle clients cannot block it.** One thread per server, event-driven (a tokio
//!   current-thread runtime of its own, so the program needs no runtime and its own is not
//!   touched; hyper-util's connection builder): an idle or slow connection costs a parked task
//!   and its buffers, never a thread or another client's turn. At most
//!   [`HttpOptions::max_connections`] are open; a new one beyond that closes the connection
//!   idle the longest, so 1,000 idle clients or 100 slow ones do not keep a scrape out
//!   (BENCHMARKS.md has the latency and memory per connection).
//! * **Bounded.** A request head larger than [`HttpOptions::max_header_bytes`] gets 431 (the
//!   parser, hyper, says so), as does one with more header lines than one per
//!   [`MIN_HEADER_LINE_BYTES`] of it (1,024 for 8 KiB). A connection must send each request
//!   head within [`HttpOptions::timeout`] of its start or of the previous response, else it is
//!   closed; writes time out alike. Requests are answered one at a time, so concurrent scrapes
//!   do not multiply the peak memory.
//! * **Options are checked.** Every [`HttpOptions`] field out of its documented range is an
//!   [`Error`] from [`serve_with`], never a panic later.
//! * **Cheap where polled.** `/metrics` is built from a snapshot without callsites: no stack is
//!   read, nothing is symbolized; its cost grows with the number of jobs, not of stacks.
//!   Profiles and reports symbolize through the per-address symbol cache, so a steady-state
//!   scrape only resolves addresses it has not met before.
//! * **A live chart.** While a server serves, the timeline sampler runs (started at
//!   [`timeline::LIVE_INTERVAL`](crate::timeline::LIVE_INTERVAL) if the program did not start
//!   it; `timeline::stop` leaves it running until the last server stops).
//! * **Clean stop.** [`HttpServer::shutdown`] (or dropping the server) stops accepting, closes
//!   open connections and joins the thread. In a forked child, dropping an inherited server
//!   only forgets it: the parent's server and clients are not touched.
//! * **One server per address.** [`serve`] on the address the `ALLOCSCOPE_HTTP` server already
//!   serves (same options) returns a handle to that server instead of failing with "in use".
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
//! `allocscope_rss_bytes`, `allocscope_not_returned_bytes`, `allocscope_tracker_bytes`, and
//! `allocscope_rss_breakdown_bytes{part="rust_heap|c_heap|not_returned|tracker|file_backed|
//! thread_stacks|other_anon"}`, whose parts add up to RSS
//! ([`RssBreakdown`](crate::RssBreakdown); absent where the breakdown is unavailable).
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
use std::time::Duration;

pub use server::HttpServer;

use crate::error::Error;

/// The environment variable that starts the server when the first scope begins: its
/// value is the address to bind (`127.0.0.1:6060`, `127.0.0.1:0`), with default options
/// (loopback only).
pub const ENV_VAR: &str = crate::config::HTTP;

/// The longest [`HttpOptions::timeout`] accepted: one day.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The most [`HttpOptions::max_connections`] accepted.
pub const MAX_CONNECTIONS: usize = 65_536;
/// The smallest and largest [`HttpOptions::max_header_bytes`] accepted (8 KiB is hyper's
/// smallest buffer).
pub const HEADER_BYTES_RANGE: std::ops::RangeInclusive<usize> = 8 * 1024..=1024 * 1024;
/// The most [`HttpOptions::max_metric_jobs`] accepted.
pub const MAX_METRIC_JOBS: usize = 100_000;
/// A request head may have one header line per this many bytes of
/// [`HttpOptions::max_header_bytes`] (1,024 lines for 8 KiB).
pub const MIN_HEADER_LINE_BYTES: usize = 8;

/// Settings of the live endpoint. Build with struct update syntax:
/// `HttpOptions { allow_remote: true, token: Some(t), ..HttpOptions::default() }`.
/// [`serve_with`] refuses a value out of the range each field states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpOptions {
    /// Allow binding an address that is not loopback (default `false`: such a bind is an error).
    /// Needs a [`token`](Self::token) as well (the endpoint shows code paths and job names),
    /// or [`insecure_allow_remote_without_token`](Self::insecure_allow_remote_without_token).
    pub allow_remote: bool,
    /// With [`allow_remote`](Self::allow_remote) and no token: serve beyond this machine
    /// without authentication, to anyone who can reach the port (default `false`). Without it,
    /// `allow_remote` with no token is an error.
    pub insecure_allow_remote_without_token: bool,
    /// When set, every request must carry `Authorization: Bearer <token>` (else 401). Visible
    /// ASCII (`!` to `~`), 1 to 4,096 bytes.
    pub token: Option<String>,
    /// Connections open at once (default 1,024; 1 to [`MAX_CONNECTIONS`]). A new one beyond
    /// that closes the one idle the longest.
    pub max_connections: usize,
    /// Time a client has to send a request head (from the connection's start or the previous
    /// response), and to take a response's bytes (default 10 s; above zero, at most
    /// [`MAX_TIMEOUT`]).
    pub timeout: Duration,
    /// Largest request head (request line and headers) in bytes (default 8 KiB, in
    /// [`HEADER_BYTES_RANGE`]); larger gets 431.
    pub max_header_bytes: usize,
    /// Jobs with their own `/metrics` series, those retaining the most (default 100, at most
    /// [`MAX_METRIC_JOBS`]); the rest are summed under `job="(other)"`.
    pub max_metric_jobs: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            allow_remote: false,
            insecure_allow_remote_without_token: false,
            token: None,
            max_connections: 1024,
            timeout: Duration::from_secs(10),
            max_header_bytes: 8 * 1024,
            max_metric_jobs: 100,
        }
    }
}

/// Whether `ip` is a loopback address, IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`) included.
pub(crate) fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Every field in its range, or the error naming the first one that is not.
fn validate(options: &HttpOptions) -> Result<(), Error> {
    let bad = |m: String| Err(Error::InvalidConfig(format!("http: {m}")));
    if !(1..=MAX_CONNECTIONS).contains(&options.max_connections) {
        return bad(format!(
            "max_connections {} is out of range (1 to {MAX_CONNECTIONS})",
            options.max_connections
        ));
    }
    if options.timeout.is_zero() || options.timeout > MAX_TIMEOUT {
        return bad(format!(
            "timeout {:?} is out of range (above zero, at most {MAX_TIMEOUT:?})",
            options.timeout
        ));
    }
    if !HEADER_BYTES_RANGE.contains(&options.max_header_bytes) {
        return bad(format!(
            "max_header_bytes {} is out of range ({} to {})",
            options.max_header_bytes,
            HEADER_BYTES_RANGE.start(),
            HEADER_BYTES_RANGE.end()
        ));
    }
    if options.max_metric_jobs > MAX_METRIC_JOBS {
        return bad(format!(
            "max_metric_jobs {} is out of range (at most {MAX_METRIC_JOBS})",
            options.max_metric_jobs
        ));
    }
    if let Some(token) = &options.token {
        if token.is_empty() {
            return bad("the token is empty; use None for no token".into());
        }
        if token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return bad(
                "the token must be 1 to 4,096 visible ASCII characters (no spaces or \
                 control characters), as an Authorization header carries it"
                    .into(),
            );
        }
    }
    if options.allow_remote
        && options.token.is_none()
        && !options.insecure_allow_remote_without_token
    {
        return bad(
            "allow_remote needs a token: anyone who reaches the port could read code paths \
             and job names; set HttpOptions { token: Some(..), .. }, or \
             insecure_allow_remote_without_token: true to serve without one"
                .into(),
        );
    }
    Ok(())
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
    serve_on(addr, options, true)
}

/// [`serve_with`]; `share` looks for the environment's server on the same address first
/// (off when starting that server).
fn serve_on(
    addr: impl ToSocketAddrs,
    options: HttpOptions,
    share: bool,
) -> Result<HttpServer, Error> {
    crate::callsite::init_from_env();
    crate::thread::untracked(|| {
        validate(&options)?;
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
            if let Some(remote) = addrs.iter().find(|a| !is_loopback(a.ip())) {
                return Err(Error::InvalidConfig(format!(
                    "http: {remote} is not a loopback address; the endpoint shows code paths \
                     and job names, so serving it beyond this machine needs \
                     HttpOptions {{ allow_remote: true, token: Some(..), .. }}"
                )));
            }
        }
        if let Some(env) = share.then(|| env_server_for(addr)).flatten() {
            if env.1 == options {
                return Ok(HttpServer::shared_handle(env.0));
            }
            return Err(Error::InvalidConfig(format!(
                "http: {addr} is already served by {ENV_VAR} with default options; unset \
                 {ENV_VAR}, or serve these options on another address"
            )));
        }
        server::start(addr, options)
    })
}

/// The environment's server when it listens on `addr` (a fixed port, not 0), with its options.
/// If `ALLOCSCOPE_HTTP` names `addr` and its server has not started yet (no scope has begun),
/// it starts now, so the two do not race for the address.
fn env_server_for(addr: SocketAddr) -> Option<(SocketAddr, HttpOptions)> {
    if addr.port() == 0 {
        return None;
    }
    let named = crate::config::http_addr()?;
    let names_addr = named
        .as_str()
        .to_socket_addrs()
        .is_ok_and(|mut a| a.next() == Some(addr));
    if !names_addr {
        return None;
    }
    start_from_env();
    let served = env_server_addr()?;
    (served == addr).then(|| (served, HttpOptions::default()))
}

/// The server started from [`ENV_VAR`], kept for the life of the process. Reached only through
/// [`from_env`], which registers its lock with `fork` before the first use.
static FROM_ENV: parking_lot::Mutex<Option<HttpServer>> = parking_lot::Mutex::new(None);

/// [`FROM_ENV`], registered with `fork` (a child that reads `env_server_addr` while another
/// thread of the parent held the lock at the fork must not hang).
fn from_env() -> &'static parking_lot::Mutex<Option<HttpServer>> {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| crate::fork::register(&FROM_ENV));
    &FROM_ENV
}

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
            match serve_on(addr.as_str(), HttpOptions::default(), false) {
                Ok(server) => {
                    eprintln!(
                        "allocscope: serving http://{}/ ({ENV_VAR})",
                        server.local_addr()
                    );
                    *from_env().lock() = Some(server);
                }
                Err(e) => eprintln!("allocscope: {ENV_VAR}={}: {e}", crate::config::shown(&addr)),
            }
        })
    });
}

/// The address of the server started from [`ENV_VAR`] (`None` if the variable is unset or
/// the server could not start). Its server runs for the life of the process.
pub fn env_server_addr() -> Option<SocketAddr> {
    from_env().lock().as_ref().map(HttpServer::local_addr)
}
