//! The live endpoint against hostile use: out-of-range options are refused with a clear error
//! (never a panic or an abort later), remote serving needs a token, a loopback endpoint
//! without a token answers loopback `Host` names only, the auth scheme is case-insensitive,
//! 100 headers within 8 KiB are served, HTTP/1.1 without `Host` is 400, and a forked child
//! that drops its inherited server exits cleanly without cutting the parent's clients.
#![cfg(feature = "http")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use allocscope::http::{serve, serve_with, HttpOptions, MAX_CONNECTIONS, MAX_TIMEOUT};
use allocscope::TrackingAllocator;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// One at a time: one test forks.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes `head` (a request without its final blank line's terminator handled by the
/// caller) on a fresh connection; returns the whole response.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

fn get_with(addr: SocketAddr, headers: &str) -> String {
    raw(
        addr,
        format!("GET /metrics HTTP/1.1\r\n{headers}connection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn out_of_range_options_are_refused_clearly() {
    let _serial = serial();
    let d = HttpOptions::default;
    let cases: Vec<(HttpOptions, &str)> = vec![
        (
            HttpOptions {
                timeout: Duration::MAX,
                ..d()
            },
            "timeout",
        ),
        (
            HttpOptions {
                timeout: Duration::ZERO,
                ..d()
            },
            "timeout",
        ),
        (
            HttpOptions {
                timeout: MAX_TIMEOUT + Duration::from_nanos(1),
                ..d()
            },
            "timeout",
        ),
        (
            HttpOptions {
                max_connections: usize::MAX,
                ..d()
            },
            "max_connections",
        ),
        (
            HttpOptions {
                max_connections: 1 << 40,
                ..d()
            },
            "max_connections",
        ),
        (
            HttpOptions {
                max_connections: 0,
                ..d()
            },
            "max_connections",
        ),
        (
            HttpOptions {
                max_header_bytes: usize::MAX,
                ..d()
            },
            "max_header_bytes",
        ),
        (
            HttpOptions {
                max_header_bytes: 1 << 40,
                ..d()
            },
            "max_header_bytes",
        ),
        (
            HttpOptions {
                max_header_bytes: 100,
                ..d()
            },
            "max_header_bytes",
        ),
        (
            HttpOptions {
                max_metric_jobs: usize::MAX,
                ..d()
            },
            "max_metric_jobs",
        ),
        (
            HttpOptions {
                max_metric_jobs: 1 << 40,
                ..d()
            },
            "max_metric_jobs",
        ),
        (
            HttpOptions {
                token: Some(String::new()),
                ..d()
            },
            "token",
        ),
        (
            HttpOptions {
                token: Some("two words".into()),
                ..d()
            },
            "token",
        ),
        (
            HttpOptions {
                token: Some("line\r\nbreak".into()),
                ..d()
            },
            "token",
        ),
        (
            HttpOptions {
                token: Some("x".repeat(1 << 20)),
                ..d()
            },
            "token",
        ),
    ];
    for (options, field) in cases {
        let shown = format!("{options:?}");
        let shown = &shown[..shown.len().min(200)];
        let err = serve_with("127.0.0.1:0", options)
            .expect_err(shown)
            .to_string();
        assert!(err.contains(field), "{shown}: {err}");
        assert!(
            err.len() < 400 && !err.contains('\n'),
            "one short line: {err}"
        );
    }
    // The extremes of every range are served.
    let server = serve_with(
        "127.0.0.1:0",
        HttpOptions {
            timeout: MAX_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_header_bytes: 1024 * 1024,
            max_metric_jobs: 100_000,
            ..d()
        },
    )
    .unwrap();
    let r = get_with(server.local_addr(), "host: localhost\r\n");
    assert!(status(&r).starts_with("HTTP/1.1 200"), "{r}");
    server.shutdown();
    let server = serve_with(
        "127.0.0.1:0",
        HttpOptions {
            timeout: Duration::from_nanos(1),
            max_connections: 1,
            max_metric_jobs: 0,
            ..d()
        },
    )
    .unwrap();
    server.shutdown();
}

#[test]
fn remote_serving_needs_a_token_or_the_named_opt_out() {
    let _serial = serial();
    let err = serve_with(
        "0.0.0.0:0",
        HttpOptions {
            allow_remote: true,
            ..HttpOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs a token"), "{err}");
    assert!(err.contains("insecure_allow_remote_without_token"), "{err}");
    let open = serve_with(
        "0.0.0.0:0",
        HttpOptions {
            allow_remote: true,
            insecure_allow_remote_without_token: true,
            ..HttpOptions::default()
        },
    )
    .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], open.local_addr().port()).into();
    // Served beyond loopback on purpose: any Host.
    let r = get_with(addr, "host: metrics.example:9000\r\n");
    assert!(status(&r).starts_with("HTTP/1.1 200"), "{r}");
    open.shutdown();
}

#[test]
fn without_a_token_only_loopback_host_names_are_answered() {
    let _serial = serial();
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let port = addr.port();
    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".to_string(),
        format!("[::1]:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        "LocalHost".to_string(),
    ] {
        let r = get_with(addr, &format!("host: {host}\r\n"));
        assert!(status(&r).starts_with("HTTP/1.1 200"), "{host}: {r}");
    }
    for host in [
        "evil.example",
        "evil.example:6060",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "10.1.2.3",
        "[::ffff:10.0.0.1]",
    ] {
        let r = get_with(addr, &format!("host: {host}\r\n"));
        assert!(status(&r).starts_with("HTTP/1.1 421"), "{host}: {r}");
        assert!(
            !r.contains("allocscope_job"),
            "refused before any figure: {r}"
        );
    }
    // HTTP/1.1 needs a Host; HTTP/1.0 has none and no browser sends it.
    let r = raw(addr, b"GET /metrics HTTP/1.1\r\nconnection: close\r\n\r\n");
    assert!(status(&r).starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("Host"), "{r}");
    let r = raw(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(status(&r).contains(" 200"), "{r}");
    server.shutdown();

    // With a token, the token is the check: any Host with it, none without it.
    let server = serve_with(
        "127.0.0.1:0",
        HttpOptions {
            token: Some("t0ken".into()),
            ..HttpOptions::default()
        },
    )
    .unwrap();
    let addr = server.local_addr();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = get_with(
            addr,
            &format!("host: evil.example\r\nauthorization: {scheme} t0ken\r\n"),
        );
        assert!(status(&r).starts_with("HTTP/1.1 200"), "{scheme}: {r}");
    }
    for bad in [
        "Bearer t0ke",
        "Bearer",
        "Basic t0ken",
        "Bearert0ken",
        "t0ken",
    ] {
        let r = get_with(
            addr,
            &format!("host: localhost\r\nauthorization: {bad}\r\n"),
        );
        assert!(status(&r).starts_with("HTTP/1.1 401"), "{bad}: {r}");
    }
    server.shutdown();
}

#[test]
fn an_ipv4_mapped_loopback_address_is_loopback() {
    let _serial = serial();
    match serve("[::ffff:127.0.0.1]:0") {
        Ok(server) => server.shutdown(),
        // A host without IPv6 cannot bind it; what matters is that it was not refused as
        // remote.
        Err(e) => assert!(!e.to_string().contains("not a loopback"), "{e}"),
    }
}

#[test]
fn a_hundred_headers_within_the_byte_limit_are_served() {
    let _serial = serial();
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let mut headers = String::from("host: localhost\r\n");
    for i in 0..100 {
        headers.push_str(&format!("x-h-{i}: v\r\n"));
    }
    assert!(headers.len() < 8 * 1024);
    let r = get_with(addr, &headers);
    assert!(status(&r).starts_with("HTTP/1.1 200"), "{}", status(&r));
    // 600 short ones too (still under 8 KiB).
    let mut headers = String::from("host: localhost\r\n");
    for i in 0..600 {
        headers.push_str(&format!("x{i}: v\r\n"));
    }
    assert!(headers.len() < 8 * 1024);
    let r = get_with(addr, &headers);
    assert!(status(&r).starts_with("HTTP/1.1 200"), "{}", status(&r));
    server.shutdown();
}

#[test]
fn a_forked_child_dropping_the_server_leaves_the_parent_serving() {
    let _serial = serial();
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    // A client of the parent, in flight: its request is half sent at the fork.
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: the child only drops the server (which, in a child, forgets it: no lock, no
    // allocation, no thread) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(server)));
        // SAFETY: `_exit` ends the child at once, running no destructor or atexit handler.
        unsafe { libc::_exit(if dropped.is_ok() { 0 } else { 1 }) };
    }
    let mut status_code = 0;
    // SAFETY: `pid` is our child; `status_code` is a valid out-parameter.
    let waited = unsafe { libc::waitpid(pid, &mut status_code, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status_code) && libc::WEXITSTATUS(status_code) == 0,
        "the child exits 0 after dropping its copy (status {status_code})"
    );
    // The parent's client finishes its request and gets its answer.
    client.write_all(b"connection: close\r\n\r\n").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut out = String::new();
    let _ = client.read_to_string(&mut out);
    assert!(status(&out).starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(out.contains("allocscope_heap_live_bytes"));
    // And it still serves others.
    let r = get_with(addr, "host: localhost\r\n");
    assert!(status(&r).starts_with("HTTP/1.1 200"), "{r}");
    server.shutdown();
}
