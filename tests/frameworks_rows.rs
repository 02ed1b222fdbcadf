//! Rows that would read the same in a job's callsite table are one row: the same function
//! reached through stacks that differ below what the table shows (in a worker, deep inside
//! the runtime's scheduler) is one line of the text table and one row of the HTML table,
//! with the figures of all its stacks and how many there are.

use std::hint::black_box;
use std::sync::Mutex;

use allocscope::{report, track_scope, TrackingAllocator};

mod common;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

static KEPT: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

#[inline(never)]
fn remember_payload(n: usize) {
    KEPT.lock()
        .unwrap()
        .push(black_box(vec![1u8; 64]).into_boxed_slice());
    black_box(n);
}

#[inline(never)]
fn from_the_queue(n: usize) {
    for i in 0..n {
        remember_payload(i);
    }
    black_box(());
}

#[inline(never)]
fn from_a_retry(n: usize) {
    for i in 0..n {
        remember_payload(i);
    }
    black_box(());
}

#[test]
fn one_row_per_callsite_as_shown() {
    common::every();
    KEPT.lock().unwrap().reserve(400);
    track_scope("rows_job", || {
        from_the_queue(298);
        from_a_retry(2);
    });
    let r = report();
    let j = r.job("rows_job").unwrap();
    // The report keeps both stacks apart (JSON, flamegraphs)...
    let stacks: Vec<_> = j
        .callsites
        .iter()
        .filter(|c| c.top_function().contains("remember_payload"))
        .collect();
    assert_eq!(stacks.len(), 2, "{:#?}", j.callsites);
    // ...the table, which shows the top frame only, has one row with both.
    let text = r.to_text_with(&allocscope::TextOptions {
        job: Some("rows_job".into()),
        top_callsites: 10,
        ..Default::default()
    });
    let rows: Vec<_> = text
        .lines()
        .filter(|l| l.contains("remember_payload"))
        .collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert!(rows[0].contains("(2 stacks)"), "{text}");
    assert!(rows[0].trim_start().starts_with("300 "), "{text}");
    assert!(rows[0].contains("100.0%"), "{text}");
    // The HTML table shows more frames: there the two stacks differ, and stay two rows.
    let html = r.to_html();
    let job_section = &html[html.find("rows_job").unwrap()..];
    assert!(job_section.contains("from_the_queue") && job_section.contains("from_a_retry"));
}
