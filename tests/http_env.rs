//! `ALLOCSCOPE_HTTP=<addr>` starts the live endpoint when the first scope begins, and a
//! bad value is reported once without stopping the program. Each case runs in a child process
//! (this test binary re-run with the variable set), since the variable is read once per process.
#![cfg(feature = "http")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use allocscope::{track_scope, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

const CHILD: &str = "ALLOCSCOPE_HTTP_TEST_CHILD";

fn run_child(test: &str, addr: &str) -> (String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("ALLOCSCOPE_HTTP", addr)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn the_variable_starts_the_server_at_the_first_call() {
    if std::env::var_os(CHILD).is_some() {
        assert_eq!(
            allocscope::http::env_server_addr(),
            None,
            "not before the first call"
        );
        let kept = track_scope("env_job", || vec![1u8; 100]);
        let addr = allocscope::http::env_server_addr().expect("started by the first call");
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        println!(
            "CHILD metrics ok: {}",
            text.starts_with("HTTP/1.1 200")
                && text.contains("allocscope_job_retained_bytes{job=\"env_job\"} 100")
        );
        drop(kept);
        return;
    }
    let (stdout, stderr) = run_child(
        "the_variable_starts_the_server_at_the_first_call",
        "127.0.0.1:0",
    );
    assert!(
        stdout.contains("CHILD metrics ok: true"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("allocscope: serving http://127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn a_bad_address_is_reported_and_the_program_goes_on() {
    if std::env::var_os(CHILD).is_some() {
        let r = track_scope("env_bad_job", || vec![1u8; 10].len());
        println!("CHILD ran: {r} {:?}", allocscope::http::env_server_addr());
        return;
    }
    let (stdout, stderr) = run_child(
        "a_bad_address_is_reported_and_the_program_goes_on",
        "0.0.0.0:0",
    );
    assert!(stdout.contains("CHILD ran: 10 None"), "{stdout}");
    assert!(stderr.contains("ALLOCSCOPE_HTTP=0.0.0.0:0"), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    assert_eq!(
        stderr.matches("not a loopback address").count(),
        1,
        "reported once"
    );
}

#[test]
fn serve_on_the_variables_address_shares_its_server() {
    if std::env::var_os(CHILD).is_some() {
        let addr: std::net::SocketAddr = std::env::var("ALLOCSCOPE_HTTP").unwrap().parse().unwrap();
        // The first call into allocscope starts the variable's server; `serve` on the same
        // address is that server, not "address in use".
        let shared = allocscope::http::serve(addr).expect("the variable's server");
        assert_eq!(shared.local_addr(), addr);
        assert_eq!(allocscope::http::env_server_addr(), Some(addr));
        // Other options on that address: a clear error, not a silent downgrade.
        let err = allocscope::http::serve_with(
            addr,
            allocscope::http::HttpOptions {
                token: Some("t".into()),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ALLOCSCOPE_HTTP"), "{err}");
        // Dropping the shared handle leaves the variable's server serving.
        drop(shared);
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        println!("CHILD shared ok: {}", text.starts_with("HTTP/1.1 200"));
        return;
    }
    // A port free now, named by the variable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (stdout, stderr) = run_child(
        "serve_on_the_variables_address_shares_its_server",
        &format!("127.0.0.1:{port}"),
    );
    assert!(
        stdout.contains("CHILD shared ok: true"),
        "{stdout}\n{stderr}"
    );
}

/// A hostile value (100 KB with control characters) is cut and escaped in the one-line
/// message: no raw control character reaches stderr, and the line stays short.
#[test]
fn a_hostile_value_is_cut_and_escaped_in_the_message() {
    if std::env::var_os(CHILD).is_some() {
        let r = track_scope("env_hostile_job", || vec![1u8; 10].len());
        println!("CHILD ran: {r} {:?}", allocscope::http::env_server_addr());
        return;
    }
    let value = format!("\u{1b}[31mred\u{7}\r{}", "x".repeat(100_000));
    let (stdout, stderr) = run_child("a_hostile_value_is_cut_and_escaped_in_the_message", &value);
    assert!(stdout.contains("CHILD ran: 10 None"), "{stdout}");
    let line = stderr
        .lines()
        .find(|l| l.contains("ALLOCSCOPE_HTTP="))
        .unwrap_or_else(|| panic!("no message: {}", &stderr[..stderr.len().min(2000)]));
    assert!(line.len() < 400, "{} bytes: {}", line.len(), &line[..400]);
    assert!(line.contains("\\u{1b}[31mred\\u{7}\\r"), "{line}");
    assert!(line.contains("(100010 bytes)"), "{line}");
    assert!(
        !stderr.contains(['\u{1b}', '\u{7}', '\r']),
        "a raw control character reached stderr"
    );
}
