//! The HTML report in a real browser: headless Chromium driven from Rust over the DevTools
//! protocol on `--remote-debugging-pipe` (`tests/common/chromium.rs`; no node, no WebSocket).
//! For a saved report, a diff of two reports, and the live `/` page of the HTTP endpoint: no
//! console message or exception, no request leaves the page, the job table and the inferno
//! flamegraph are in the DOM, a header click sorts the table, a frame click zooms the
//! flamegraph; a job named `<script>…` shows as text. The screenshots stay in
//! `target/tmp/html-artifacts/` (look at them). A browser session that takes longer than
//! [`BROWSER_TIMEOUT`] fails the test and is killed.
#![cfg(feature = "http")]

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use allocscope::{track_scope, Report, TrackingAllocator};
use chromium::Chromium;
use serde_json::{json, Value};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

const EVIL: &str = "<script>alert(1)</script>";

/// The whole of one page check: launch, load, inspect, screenshot.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("html-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether Chromium is installed; the only reason these tests skip (printing why).
fn tools() -> bool {
    common::require_tool(chromium::CHROMIUM, &["--version"], "chromium")
}

/// The origin of `url` (`scheme://host[:port]`) for network URLs; `None` for others (`file:`,
/// `about:`...), which never count as the page's own origin.
fn origin(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https" | "ws" | "wss") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..scheme.len() + 3 + end])
}

/// A console message as the page's user would read it, from a CDP event (`None` for events
/// that are not console output).
fn console_message(event: &Value) -> Option<String> {
    let p = &event["params"];
    match event["method"].as_str()? {
        "Runtime.consoleAPICalled" => {
            let args: Vec<String> = p["args"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|a| match a.get("value") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) if !v.is_null() => v.to_string(),
                    _ => a["description"].as_str().unwrap_or("").to_string(),
                })
                .collect();
            Some(format!(
                "{}: {}",
                p["type"].as_str().unwrap_or("?"),
                args.join(" ")
            ))
        }
        "Runtime.exceptionThrown" => {
            let d = &p["exceptionDetails"];
            let text = d["exception"]["description"]
                .as_str()
                .or(d["text"].as_str())
                .unwrap_or("?");
            Some(format!("exception: {text}"))
        }
        "Log.entryAdded" if p["entry"]["level"] != "verbose" => Some(format!(
            "log {}: {} {}",
            p["entry"]["level"].as_str().unwrap_or("?"),
            p["entry"]["text"].as_str().unwrap_or(""),
            p["entry"]["url"].as_str().unwrap_or("")
        )),
        _ => None,
    }
}

/// `expr`'s value in the page (returned by value); an exception becomes `{"error": ...}`,
/// which the assertions then reject.
fn evaluate(browser: &mut Chromium, session: &str, expr: &str) -> Value {
    let r = browser.call(
        Some(session),
        "Runtime.evaluate",
        json!({ "expression": expr, "returnByValue": true }),
    );
    if let Some(d) = r.get("exceptionDetails") {
        return json!({ "error": d["exception"]["description"].clone(), "expression": expr });
    }
    r["result"]["value"].clone()
}

/// Loads `url` in Chromium; returns what the page showed and did.
fn check_in_browser(url: &str, name: &str) -> Value {
    let profile = tempfile::tempdir().unwrap();
    let shot = artifacts().join(format!("{name}.png"));
    let mut browser = Chromium::launch(profile.path(), BROWSER_TIMEOUT);
    let session = browser.new_page();
    let s = Some(session.as_str());
    for domain in ["Runtime", "Log", "Network", "Page"] {
        browser.call(s, &format!("{domain}.enable"), json!({}));
    }
    let since = browser.events.len();
    let nav = browser.call(s, "Page.navigate", json!({ "url": url }));
    assert!(nav.get("errorText").is_none(), "loading {url}: {nav}");
    browser.wait_event(&session, "Page.loadEventFired", since);
    browser.pause(Duration::from_millis(500));

    let mut result = json!({});
    let mut eval = |key: &str, expr: &str| {
        result[key] = evaluate(&mut browser, &session, expr);
    };
    eval("title", "document.title");
    eval(
        "jobRows",
        "document.querySelectorAll('#jobs tbody tr').length",
    );
    eval(
        "jobNames",
        "Array.from(document.querySelectorAll('#jobs tbody tr td:first-child')).map(td => td.textContent)",
    );
    eval(
        "flameFrames",
        "document.querySelectorAll('svg #frames g').length",
    );
    eval(
        "flameWidth",
        "document.querySelector('.flame > svg').getBoundingClientRect().width",
    );
    eval(
        "scriptElements",
        "Array.from(document.querySelectorAll('script')).map(s => s.src)",
    );
    // Sort by name ascending: click the "Job" header (first click on a text column: ascending).
    eval(
        "sortedNames",
        "(() => {
          document.querySelector('#jobs th[data-key=name]').dispatchEvent(new MouseEvent('click', {bubbles: true}));
          return Array.from(document.querySelectorAll('#jobs tbody tr td:first-child')).map(td => td.textContent);
        })()",
    );
    // Zoom: click the widest frame below the root, as a user would.
    eval(
        "zoom",
        "(() => {
          const groups = Array.from(document.querySelectorAll('svg #frames g'));
          const target = groups.find(g => (g.querySelector('title')?.textContent ?? '').indexOf('all ') !== 0);
          if (!target) return { clicked: false };
          const rect = target.querySelector('rect');
          rect.dispatchEvent(new MouseEvent('click', {bubbles: true}));
          const unzoom = document.getElementById('unzoom');
          return { clicked: true, frame: target.querySelector('title').textContent,
                   unzoomVisible: !unzoom.classList.contains('hide') };
        })()",
    );
    browser.pause(Duration::from_millis(200));
    let png = browser.call(s, "Page.captureScreenshot", json!({ "format": "png" }));
    let png = chromium::base64_decode(png["data"].as_str().expect("screenshot data"));
    std::fs::write(&shot, &png).unwrap();

    let page = |e: &&Value| e.get("sessionId").and_then(Value::as_str) == Some(&session);
    let console: Vec<String> = browser
        .events
        .iter()
        .filter(page)
        .filter_map(console_message)
        .collect();
    let requests: Vec<&str> = browser
        .events
        .iter()
        .filter(page)
        .filter(|e| e["method"] == "Network.requestWillBeSent")
        .map(|e| e["params"]["request"]["url"].as_str().unwrap_or(""))
        .collect();
    let foreign: Vec<&str> = requests
        .iter()
        .copied()
        .filter(|u| {
            !u.starts_with(url)
                && !u.starts_with("data:")
                && (origin(u).is_none() || origin(u) != origin(url))
        })
        .collect();
    result["console"] = json!(console);
    result["foreignRequests"] = json!(foreign);
    result["requests"] = json!(requests.len());
    browser.close();

    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[1..4], b"PNG");
    eprintln!("screenshot: {}", shot.display());
    result
}

/// What every page must satisfy.
fn common_checks(v: &Value, min_jobs: u64) {
    assert_eq!(v["console"], serde_json::json!([]), "console messages: {v}");
    assert_eq!(v["foreignRequests"], serde_json::json!([]), "fetches: {v}");
    for src in v["scriptElements"].as_array().unwrap() {
        assert!(
            src.as_str().unwrap_or("").is_empty(),
            "external script: {src}"
        );
    }
    assert!(v["jobRows"].as_u64().unwrap() >= min_jobs, "{v}");
    assert!(
        v["flameFrames"].as_u64().unwrap() >= 3,
        "flamegraph frames: {v}"
    );
    assert!(
        v["flameWidth"].as_f64().unwrap() > 900.0,
        "flamegraph fills the page: {v}"
    );
    let sorted: Vec<String> = serde_json::from_value(v["sortedNames"].clone()).unwrap();
    let mut expected = sorted.clone();
    expected.sort_by_key(|s| s.to_lowercase());
    assert_eq!(sorted, expected, "a click on Job sorts by name");
    assert_eq!(v["zoom"]["clicked"], true, "{v}");
    assert_eq!(v["zoom"]["unzoomVisible"], true, "a frame click zooms: {v}");
}

#[inline(never)]
fn html_keep(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| black_box(vec![i as u8; 2048])).collect()
}

fn populate() -> Vec<Vec<Vec<u8>>> {
    common::every();
    vec![
        track_scope("html_import", || html_keep(20)),
        track_scope("html_render", || html_keep(5)),
        track_scope(EVIL, || html_keep(3)),
    ]
}

#[test]
fn saved_report_and_diff_pages_work_in_chromium() {
    if !tools() {
        return;
    }
    allocscope::timeline::start(Duration::from_millis(20));
    let mut kept = populate();
    std::thread::sleep(Duration::from_millis(100));
    let older = allocscope::report();
    kept.push(track_scope("html_import", || html_keep(10)));
    std::thread::sleep(Duration::from_millis(100));
    let newer = allocscope::report();
    allocscope::timeline::stop();
    assert!(!newer.timeline.is_empty(), "the timeline sampler ran");

    let html = newer.to_html();
    assert!(!html.contains(EVIL), "job names are escaped");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        html.contains("data:image/svg+xml;base64,"),
        "timeline chart inline"
    );
    let file = artifacts().join("report.html");
    std::fs::write(&file, &html).unwrap();
    let v = check_in_browser(&format!("file://{}", file.display()), "report");
    common_checks(&v, 3);
    let names: Vec<String> = serde_json::from_value(v["jobNames"].clone()).unwrap();
    assert!(
        names.iter().any(|n| n == EVIL),
        "the evil name is text: {names:?}"
    );

    // Round trip through JSON, as `allocscope html` reads it.
    let reread = Report::from_json(&newer.to_json()).unwrap();
    assert_eq!(reread.to_html(), html.replace("\r", ""));

    let diff = newer.diff(&older).to_html();
    assert!(!diff.contains(EVIL));
    let file = artifacts().join("diff.html");
    std::fs::write(&file, &diff).unwrap();
    let v = check_in_browser(&format!("file://{}", file.display()), "diff");
    common_checks(&v, 1);
    drop(kept);
}

#[test]
fn live_page_works_in_chromium() {
    if !tools() {
        return;
    }
    let kept = populate();
    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    let v = check_in_browser(&format!("http://{}/", server.local_addr()), "live");
    common_checks(&v, 3);
    assert!(v["requests"].as_u64().unwrap() >= 1);
    server.shutdown();
    drop(kept);
}

/// The browser check itself can fail: a page that logs, throws, and fetches from another
/// origin is reported with all three (so the empty lists above mean something).
#[test]
fn the_browser_check_sees_console_output_exceptions_and_foreign_requests() {
    if !tools() {
        return;
    }
    let port = common::free_port();
    let page = format!(
        "<!doctype html><title>bad</title><script>\
         console.error('broken on purpose');\
         fetch('http://127.0.0.1:{port}/elsewhere').catch(() => {{}});\
         throw new Error('thrown on purpose');\
         </script>"
    );
    let file = artifacts().join("bad.html");
    std::fs::write(&file, page).unwrap();
    let v = check_in_browser(&format!("file://{}", file.display()), "bad");
    let console: Vec<String> = serde_json::from_value(v["console"].clone()).unwrap();
    assert!(
        console.iter().any(|m| m == "error: broken on purpose"),
        "{console:?}"
    );
    assert!(
        console
            .iter()
            .any(|m| m.starts_with("exception: Error: thrown on purpose")),
        "{console:?}"
    );
    assert_eq!(
        v["foreignRequests"],
        json!([format!("http://127.0.0.1:{port}/elsewhere")]),
        "{v}"
    );
    assert_eq!(v["jobRows"], 0, "{v}");
    assert!(v["flameWidth"].get("error").is_some(), "no flamegraph: {v}");
}
