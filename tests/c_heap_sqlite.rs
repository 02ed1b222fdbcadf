//! Feature `malloc` with a real C library from crates.io: SQLite (rusqlite, `bundled`: the
//! amalgamation compiled into this test binary), which allocates with `malloc`.
//!
//! One job works on its own database and closes it: it retains nothing. Another leaks
//! through SQLite's API (a string from `sqlite3_mprintf` never freed, a statement never
//! finalized) while growing a long-lived database: its retained bytes must equal what SQLite
//! itself says it kept — SQLite's own ledger (`sqlite3_status64`: bytes in use and blocks
//! outstanding), plus the 8-byte size prefix its default allocator adds to each block — and
//! its callsites must name SQLite's C functions.
//!
//! One test in its own binary: SQLite's figures are process-wide.

use std::ffi::c_int;

use allocscope::{report, track_scope, StackMode, TrackingAllocator, Usage};
use rusqlite::{ffi, Connection};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// SQLite's own ledger: (bytes in use, blocks outstanding).
fn sqlite_ledger() -> (i64, i64) {
    let status = |op: c_int| {
        let (mut cur, mut hi) = (0i64, 0i64);
        // SAFETY: out-parameters of the right types; no reset.
        let rc = unsafe { ffi::sqlite3_status64(op, &mut cur, &mut hi, 0) };
        assert_eq!(rc, ffi::SQLITE_OK);
        cur
    };
    (
        status(ffi::SQLITE_STATUS_MEMORY_USED),
        status(ffi::SQLITE_STATUS_MALLOC_COUNT),
    )
}

fn work(conn: &Connection, table: &str, rows: usize) {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, name TEXT, score REAL);"
    ))
    .unwrap();
    let mut sql = String::from("BEGIN;");
    for i in 0..rows {
        sql.push_str(&format!(
            "INSERT INTO {table} (name, score) VALUES ('customer {i} with a fairly long name', {i}.5);"
        ));
    }
    sql.push_str("COMMIT;");
    conn.execute_batch(&sql).unwrap();
    let n: i64 = conn
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap();
    assert!(n >= rows as i64);
}

#[test]
fn sqlite_leak_is_charged_to_its_job_exactly() {
    allocscope::set_stack_mode(StackMode::Every);
    assert!(allocscope::is_installed());
    // Warm-up outside any job: SQLite's one-time initialisation (mutexes, the VFS, built-in
    // functions) and rusqlite's.
    {
        let c = Connection::open_in_memory().unwrap();
        work(&c, "warm", 10);
    }
    let shared = Connection::open_in_memory().unwrap();
    work(&shared, "orders", 10);
    // The queries' Rust strings, built outside the jobs.
    let _ = report();

    // A job that opens, works and closes: nothing kept, by SQLite's ledger or ours.
    let before = sqlite_ledger();
    track_scope("sqlite_clean", || {
        let c = Connection::open_in_memory().unwrap();
        work(&c, "invoices", 200);
        drop(c);
    });
    assert_eq!(sqlite_ledger(), before, "SQLite kept nothing");
    let r = report();
    let clean = r.job("sqlite_clean").unwrap();
    assert!(clean.allocated.objects > 200, "{:?}", clean.allocated);
    assert_eq!(clean.retained, Usage::new(0, 0));

    // A job that grows the shared database and leaks through the API.
    let before = sqlite_ledger();
    let leaked = track_scope("sqlite_leaky", || {
        work(&shared, "orders", 300);
        // SAFETY: SQLite's API used as documented, except that the string is never freed and
        // the statement never finalized (the leaks under test).
        unsafe {
            let s = ffi::sqlite3_mprintf(c"report for %s".as_ptr(), c"customer 42".as_ptr());
            assert!(!s.is_null());
            let mut stmt = std::ptr::null_mut();
            let rc = ffi::sqlite3_prepare_v2(
                shared.handle(),
                c"SELECT name FROM orders WHERE score > 10".as_ptr(),
                -1,
                &mut stmt,
                std::ptr::null_mut(),
            );
            assert_eq!(rc, ffi::SQLITE_OK);
            (s as usize, stmt as usize)
        }
    });
    let after = sqlite_ledger();
    let (bytes, blocks) = (after.0 - before.0, after.1 - before.1);
    assert!(
        blocks > 0 && bytes > 0,
        "SQLite kept something: {bytes} B in {blocks}"
    );
    let r = report();
    let leaky = r.job("sqlite_leaky").unwrap();
    // SQLite's default allocator asks malloc for 8 more bytes than it counts (a size prefix).
    assert_eq!(
        leaky.retained,
        Usage::new(blocks as u64, (bytes + 8 * blocks) as u64),
        "the job retains exactly what SQLite kept"
    );
    // Named by SQLite's C functions.
    assert!(
        leaky
            .callsites
            .iter()
            .any(|c| c.retained.bytes > 0
                && c.frames.iter().any(|f| f.function.starts_with("sqlite3"))),
        "{:#?}",
        leaky.callsites
    );
    let text = r.to_text();
    assert!(text.contains("sqlite3"), "{text}");

    // Freed outside the job: the job's retained goes back to what the database holds.
    // SAFETY: the leaked string and statement, released once.
    unsafe {
        ffi::sqlite3_free(leaked.0 as *mut std::ffi::c_void);
        ffi::sqlite3_finalize(leaked.1 as *mut ffi::sqlite3_stmt);
    }
    drop(shared);
    let r = report();
    assert_eq!(
        r.job("sqlite_leaky").unwrap().retained,
        Usage::new(0, 0),
        "closing the database released the rest"
    );
}
