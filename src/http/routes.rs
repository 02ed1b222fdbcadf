//! Requests to responses: the fixed table of paths, the token check, query parameters.
//!
//! Rules: exact path matches only (no file is ever read, so no path can reach one); GET and
//! HEAD only (hyper leaves the body out for HEAD); errors are short `text/plain` bodies; every
//! full report is built under `Shared::build`, one at a time (`/metrics`, figures only, is not
//! queued behind them). `/debug/pprof/*` builds its profile from the snapshot's stacks
//! (`live_pprof`), never a whole report: a scrape's memory is the profile, not a copy of every
//! callsite.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode, Version};

use super::metrics;
use super::server::Shared;
use crate::report::{live_pprof, report_figures, PprofDefault};
use crate::report::{FlameMetric, FlameOptions, Report};

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A short text error.
fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    let mut m = message.into();
    m.push('\n');
    respond(status, "text/plain; charset=utf-8", m)
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only, not on where
/// they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(std::hint::black_box(x ^ y));
    }
    diff == 0
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(token) = &shared.options.token else {
        return true;
    };
    let Some(given) = req.headers().get(AUTHORIZATION) else {
        return false;
    };
    // `<scheme> <token>`, the scheme in any case (RFC 9110), spaces between them.
    let given = given.as_bytes();
    let Some(space) = given.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, rest) = given.split_at(space);
    let credentials = rest.trim_ascii_start();
    scheme.eq_ignore_ascii_case(b"bearer") && constant_time_eq(credentials, token.as_bytes())
}

/// Whether a `Host` header value names this machine: `localhost`, a name under `.localhost`
/// (RFC 6761), or a loopback address (IPv4-mapped IPv6 included), with or without a port.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: `[addr]` or `[addr]:port`.
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if !(after.is_empty() || after.starts_with(':')) {
            return false;
        }
        return addr
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|a| super::is_loopback(a.into()));
    } else {
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| a.is_loopback())
}

/// Refuses what the token or `Host` rules refuse (see the module rules of `http`).
fn refused(shared: &Shared, req: &Request<Incoming>) -> Option<Resp> {
    let host = req.headers().get(HOST).map(|h| h.to_str());
    if req.version() == Version::HTTP_11 && host.is_none() {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "allocscope: an HTTP/1.1 request needs a Host header",
        ));
    }
    if !authorized(shared, req) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "allocscope: missing or wrong token (send Authorization: Bearer <token>)",
        );
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Some(r);
    }
    let o = &shared.options;
    if o.token.is_none() && !o.allow_remote {
        // A loopback endpoint without a token: a page from elsewhere that resolves its own
        // name to 127.0.0.1 (DNS rebinding) sends its own name as Host.
        let ok = match host {
            None => true, // HTTP/1.0 without Host: not a browser.
            Some(Ok(h)) => is_loopback_host(h),
            Some(Err(_)) => false,
        };
        if !ok {
            return Some(error(
                StatusCode::MISDIRECTED_REQUEST,
                "allocscope: this endpoint answers loopback host names only (localhost, \
                 127.0.0.1, [::1]); set a token to serve other names",
            ));
        }
    }
    None
}

/// The answer when rendering panicked.
pub(super) fn internal_error() -> Resp {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "allocscope: rendering failed (a bug: please report it)",
    )
}

/// Answers one request.
pub(super) fn handle(shared: &Shared, req: &Request<Incoming>) -> Resp {
    crate::thread::untracked(|| {
        if let Some(r) = refused(shared, req) {
            return r;
        }
        let path = req.uri().path();
        let known = matches!(
            path,
            "/" | "/metrics"
                | "/debug/pprof/heap"
                | "/debug/pprof/allocs"
                | "/report.json"
                | "/report.txt"
                | "/flamegraph.svg"
        );
        if !known {
            return error(
                StatusCode::NOT_FOUND,
                format!("allocscope: no page at {path}"),
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("allocscope: {} is not served (GET or HEAD)", req.method()),
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let query = req.uri().query().unwrap_or("");
        if path == "/metrics" {
            // Cheap and small: not queued behind a profile being built.
            return respond(
                StatusCode::OK,
                metrics::CONTENT_TYPE,
                metrics::render(&report_figures(), shared.options.max_metric_jobs),
            );
        }
        let _one_at_a_time = shared.build.lock().unwrap_or_else(|e| e.into_inner());
        match path {
            "/debug/pprof/heap" => pprof(PprofDefault::InuseSpace),
            "/debug/pprof/allocs" => pprof(PprofDefault::AllocSpace),
            "/report.json" => respond(
                StatusCode::OK,
                "application/json",
                crate::report().to_json(),
            ),
            "/report.txt" => respond(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                crate::report().to_text(),
            ),
            "/flamegraph.svg" => flamegraph(query),
            _ => respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                crate::report().to_html(),
            ),
        }
    })
}

fn pprof(default: PprofDefault) -> Resp {
    match live_pprof(default) {
        Ok(gz) => {
            let mut r = respond(StatusCode::OK, "application/octet-stream", gz);
            r.headers_mut().insert(
                hyper::header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"profile.pb.gz\""),
            );
            r
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("allocscope: {e}"),
        ),
    }
}

/// `/flamegraph.svg?job=NAME&metric=retained-bytes&min_age=8`: all optional (`min_age`: only
/// memory allocated that many runs ago or earlier, `FlameOptions::min_age`); an unknown
/// parameter, an unknown metric or job, a `min_age` that is not a number gets 400 naming the
/// parameter.
fn flamegraph(query: &str) -> Resp {
    let mut opts = FlameOptions::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "job" if value.is_empty() => {}
            "job" => opts.job = Some(value.into_owned()),
            "metric" => match FlameMetric::parse(&value) {
                Ok(m) => opts.metric = m,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("metric: {e}")),
            },
            "min_age" => match value.parse::<u64>() {
                Ok(runs) => opts.min_age = runs,
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "min_age: {} is not a number of runs (0, 1, 2, 4, 8, 16, ...)",
                            crate::config::shown(&value)
                        ),
                    )
                }
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{other}: unknown parameter (expected job, metric, min_age)"),
                )
            }
        }
    }
    let report: Report = crate::report();
    if let Some(job) = &opts.job {
        if report.job(job).is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                format!("job: no job named {job:?} in this process"),
            );
        }
    }
    match report.flamegraph_svg(&opts) {
        Ok(svg) => respond(StatusCode::OK, "image/svg+xml", svg),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("allocscope: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "LOCALHOST:6060",
            "localhost.",
            "app.localhost:1",
            "127.0.0.1",
            "127.0.0.1:6060",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:6060",
            "[::ffff:127.0.0.1]:6060",
        ] {
            assert!(super::is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:6060",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1",
            "[::2]:1",
            "[::ffff:10.0.0.1]",
            "[::1]x",
            "",
            "x",
        ] {
            assert!(!super::is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!constant_time_eq(b"", b"Bearer abc"));
    }
}
