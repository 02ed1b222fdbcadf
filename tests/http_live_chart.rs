//! The live chart: a server keeps the timeline sampler running (also after
//! `timeline::stop`, the way a program's `finish()` stops it), each sample's heap is within its
//! RSS, and — in headless Chromium, on a process that ran 30 s — the plotted lines of the live
//! page's chart span at least 90 % of the chart's width (measured on a screenshot).
#![cfg(feature = "http")]

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use std::hint::black_box;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocscope::{report, track_scope, TrackingAllocator};
use chromium::Chromium;
use serde_json::json;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// One at a time: each test starts and stops the one sampler.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn samples_taken() -> u64 {
    report().timeline_stats.samples_taken
}

#[test]
fn a_server_keeps_the_sampler_running() {
    let _serial = serial();
    allocscope::timeline::start(Duration::from_millis(20));
    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    // The program stops the sampler (as a `finish()` would): the endpoint still needs it.
    allocscope::timeline::stop();
    assert_eq!(
        allocscope::timeline::interval(),
        Some(Duration::from_millis(20))
    );
    let before = samples_taken();
    std::thread::sleep(Duration::from_millis(500));
    assert!(samples_taken() > before, "still sampling while serving");
    // The last server gone, the program's stop applies.
    server.shutdown();
    assert_eq!(allocscope::timeline::interval(), None);

    // A server with no sampler started starts one, at the live interval, and stops it.
    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    assert_eq!(
        allocscope::timeline::interval(),
        Some(allocscope::timeline::LIVE_INTERVAL)
    );
    drop(server);
    assert_eq!(allocscope::timeline::interval(), None);
    // A program that wants the sampler keeps it after the server stops.
    allocscope::timeline::start(Duration::from_millis(50));
    drop(allocscope::http::serve("127.0.0.1:0").unwrap());
    assert_eq!(
        allocscope::timeline::interval(),
        Some(Duration::from_millis(50))
    );
    allocscope::timeline::stop();
}

/// The blocks being allocated or freed by the other threads when a sample is taken may be
/// counted in the heap without being resident (see `timeline`'s `sample_now`): the documented
/// tolerance is one block per allocating thread.
#[test]
fn every_sample_has_its_heap_within_its_rss() {
    let _serial = serial();
    const THREADS: usize = 4;
    const BLOCK: usize = 8 << 20;
    let stop = Arc::new(AtomicBool::new(false));
    let first = samples_taken();
    allocscope::timeline::start(Duration::from_millis(1));
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let job = format!("coherent_{i}");
                while !stop.load(Ordering::Relaxed) {
                    track_scope(&job, || {
                        // Written (resident), then freed (unmapped: above the mmap threshold).
                        let v = black_box(vec![1u8; BLOCK]);
                        black_box(v.len())
                    });
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    allocscope::timeline::stop();
    let r = report();
    assert!(r.timeline_stats.samples_taken > first + 50, "sampled");
    let tolerance = (THREADS * BLOCK) as u64;
    let mut worst = 0i64;
    for s in &r.timeline {
        if s.rss_bytes == 0 {
            continue;
        }
        worst = worst.max(s.heap_live_bytes as i64 - s.rss_bytes as i64);
        assert!(
            s.heap_live_bytes <= s.rss_bytes + tolerance,
            "heap {} > RSS {} + {tolerance}",
            s.heap_live_bytes,
            s.rss_bytes
        );
    }
    println!(
        "{} samples, largest heap − RSS: {worst} B",
        r.timeline.len()
    );
}

/// A minimal PNG reader for Chromium's screenshots: 8-bit RGB or RGBA, not interlaced.
/// Returns (width, height, RGBA pixels).
fn decode_png(png: &[u8]) -> (usize, usize, Vec<[u8; 4]>) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (mut w, mut h, mut channels) = (0usize, 0usize, 0usize);
    let mut idat = Vec::new();
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "8-bit");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("PNG colour type {t}"),
                };
                assert_eq!(data[12], 0, "not interlaced");
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = w * channels;
    let mut prev = vec![0u8; stride];
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let filter = raw[y * (stride + 1)];
        let mut line = raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)].to_vec();
        for i in 0..stride {
            let a = if i >= channels { line[i - channels] } else { 0 } as i32;
            let b = prev[i] as i32;
            let c = if i >= channels { prev[i - channels] } else { 0 } as i32;
            let add = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            };
            line[i] = (line[i] as i32 + add) as u8;
        }
        for px in line.chunks(channels) {
            out.push([px[0], px[1], px[2], if channels == 4 { px[3] } else { 255 }]);
        }
        prev = line;
    }
    (w, h, out)
}

/// In a screenshot of the chart: the x-axis (the longest horizontal run of dark grey pixels) and
/// the horizontal extent of the RSS line's red above it. Returns (axis start, axis end, red
/// start, red end) in pixels.
fn chart_extents(w: usize, h: usize, px: &[[u8; 4]]) -> (usize, usize, usize, usize) {
    let black = |p: [u8; 4]| {
        let (lo, hi) = (p[0].min(p[1]).min(p[2]), p[0].max(p[1]).max(p[2]));
        hi < 140 && hi - lo < 20
    };
    let (mut axis_row, mut axis) = (0, (0, 0));
    for y in 0..h {
        let mut x = 0;
        while x < w {
            if black(px[y * w + x]) {
                let start = x;
                while x < w && black(px[y * w + x]) {
                    x += 1;
                }
                if x - start > axis.1 - axis.0 {
                    axis = (start, x - 1);
                    axis_row = y;
                }
            } else {
                x += 1;
            }
        }
    }
    let red = |p: [u8; 4]| p[0] > 170 && p[1] < 110 && p[2] < 110;
    let (mut lo, mut hi) = (usize::MAX, 0);
    for y in 0..axis_row {
        for x in axis.0..=axis.1 {
            if red(px[y * w + x]) {
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
    }
    (axis.0, axis.1, lo, hi)
}

#[inline(never)]
fn live_round(round: usize) -> Vec<Vec<u8>> {
    (0..50 + round % 7 * 20)
        .map(|i| black_box(vec![i as u8; 4096]))
        .collect()
}

#[test]
fn the_live_chart_spans_its_width_after_30_seconds() {
    if !common::require_tool(chromium::CHROMIUM, &["--version"], "chromium") {
        return;
    }
    let _serial = serial();
    const RUN_FOR: Duration = Duration::from_secs(30);
    // The worker example's shape: a fast sampler, the server, then `stop()` at its "finish"
    // while rounds go on.
    allocscope::timeline::start(Duration::from_millis(20));
    let server = allocscope::http::serve("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let mut kept = Vec::new();
    let mut round = 0;
    let mut stopped = false;
    while started.elapsed() < RUN_FOR {
        let v = track_scope(if round % 2 == 0 { "chart_a" } else { "chart_b" }, || {
            live_round(round)
        });
        if round % 10 == 0 {
            kept.push(v);
        }
        round += 1;
        if !stopped && started.elapsed() > Duration::from_secs(2) {
            allocscope::timeline::stop();
            stopped = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let url = format!("http://{}/", server.local_addr());
    let profile = tempfile::tempdir().unwrap();
    let mut browser = Chromium::launch(profile.path(), Duration::from_secs(60));
    let session = browser.new_page();
    let s = Some(session.as_str());
    browser.call(s, "Page.enable", json!({}));
    browser.call(
        s,
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
    );
    let since = browser.events.len();
    browser.call(s, "Page.navigate", json!({ "url": url }));
    browser.wait_event(&session, "Page.loadEventFired", since);
    browser.pause(Duration::from_millis(300));
    let rect = browser.call(
        s,
        "Runtime.evaluate",
        json!({
            "expression": "(() => { const i = document.querySelector('.chart img'); \
                i.scrollIntoView(); const r = i.getBoundingClientRect(); \
                return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; })()",
            "returnByValue": true
        }),
    );
    let r: Vec<f64> = serde_json::from_value(rect["result"]["value"].clone())
        .unwrap_or_else(|_| panic!("the live page has a chart image: {rect}"));
    let shot = browser.call(
        s,
        "Page.captureScreenshot",
        json!({ "format": "png", "captureBeyondViewport": true,
                "clip": { "x": r[0], "y": r[1], "width": r[2], "height": r[3], "scale": 1 } }),
    );
    let png = chromium::base64_decode(shot["data"].as_str().unwrap());
    browser.close();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("html-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("live-chart.png"), &png).unwrap();

    let (w, h, px) = decode_png(&png);
    let (a0, a1, l0, l1) = chart_extents(w, h, &px);
    assert!(a1 > a0 + 100, "found the x-axis: {a0}..{a1} in {w}x{h}");
    assert!(l1 >= l0 && l0 != usize::MAX, "found the RSS line");
    let span = (l1 - l0) as f64 / (a1 - a0) as f64;
    println!(
        "chart {w}x{h}: axis {a0}..{a1}, RSS line {l0}..{l1}: {:.1} % of the width ({}), {round} rounds",
        span * 100.0,
        dir.join("live-chart.png").display()
    );
    assert!(
        span >= 0.9,
        "the lines span {:.1} % of the chart",
        span * 100.0
    );
    server.shutdown();
    drop(kept);
}
