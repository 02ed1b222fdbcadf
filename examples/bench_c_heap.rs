//! The cost of the `malloc` feature: SQLite's C-heavy workload (the one `tests/c_heap_sqlite.rs`
//! runs) and a Rust workload, each inside a job, with `TrackingAllocator` installed. Build it
//! with and without the feature and compare instruction counts (BENCHMARKS.md, "C libraries"):
//!
//! ```text
//! cargo build --release --example bench_c_heap [--features malloc]
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/bench_c_heap sqlite 2000
//! ```
//!
//! Prints the workload, its wall time and what the job allocated.

use allocscope::{report, track_scope, TrackingAllocator};
use rusqlite::Connection;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

fn sqlite(rows: usize) {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL);")
        .unwrap();
    let mut sql = String::from("BEGIN;");
    for i in 0..rows {
        sql.push_str(&format!(
            "INSERT INTO t (name, score) VALUES ('customer {i} with a fairly long name', {i}.5);"
        ));
    }
    sql.push_str("COMMIT;");
    c.execute_batch(&sql).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM t WHERE score > 10", [], |r| r.get(0))
        .unwrap();
    assert!(n > 0);
}

fn rust(n: usize) {
    let mut v: Vec<Box<[u8]>> = Vec::new();
    for i in 0..n * 50 {
        v.push(vec![i as u8; 16 + i % 200].into_boxed_slice());
        if v.len() > 64 {
            v.swap_remove(i % 64);
        }
    }
    std::hint::black_box(&v);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "sqlite".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let t = std::time::Instant::now();
    track_scope("bench", || match which.as_str() {
        "sqlite" => sqlite(n),
        _ => rust(n),
    });
    let el = t.elapsed();
    let r = report();
    let j = r.job("bench").unwrap();
    println!(
        "{which} {n}: {:.1} ms, job allocated {} objects, {} bytes (feature malloc: {})",
        el.as_secs_f64() * 1e3,
        j.allocated.objects,
        j.allocated.bytes,
        cfg!(feature = "malloc")
    );
}
