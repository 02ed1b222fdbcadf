//! The report before the kill: when the process's memory crosses a line, the report (JSON),
//! the pprof profile and the HTML page are written to a folder, naming the jobs running.
//!
//! Rules:
//! * **What is compared.** A line given as a share of the memory limit ([`MemoryLine`]) is
//!   compared with whichever is closer to the kill: the process's RSS or, when the limit is a
//!   cgroup's, the cgroup's working set (usage less inactive file pages, see `limit`). An
//!   absolute line (`2GiB`), or a share of physical memory, is about this process: RSS.
//! * **Once per crossing.** One dump when the figure reaches the line; the next one only after
//!   the figure fell below [`REARM_FRACTION`] of the line (95%: for a 200 MiB line, 190 MiB),
//!   so a process hovering around the line does not write a dump per check.
//! * **Free below the line.** The check runs on its own thread (`allocscope-memwatch`, tracking
//!   suspended, started with the line and stopped with [`set_dump_above`]`(None)`), every
//!   [`DumpAbove::check_every`] (default [`DEFAULT_CHECK_EVERY`]): it reads `/proc/self/statm`
//!   (and the cgroup's `memory.current`; `memory.stat` only when the usage alone reaches the
//!   line) into stack buffers — no allocation, no lock shared with the program's threads; the
//!   allocation path is untouched.
//! * **The dump** runs on that thread with tracking suspended: one [`report()`](crate::report())
//!   with [`Report::trigger`](crate::Report::trigger) set, streamed to disk as JSON, then the
//!   profile, then the page, each rendering dropped before the next (its peak, measured in
//!   BENCHMARKS.md, is the report plus its largest rendering). One line on stderr names the
//!   figure, the line, the running jobs and the files.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::limit::{self, LimitSource, MemoryLimit};
use crate::config::{self, MemoryLine};
use crate::error::Error;
use crate::fork::{self, AtFork};
use crate::registry;
use crate::report::dump::{write_set, DumpReason};
use crate::report::{ActiveJob, DumpTrigger};
use crate::thread::untracked;

/// After a dump, the next one waits until the figure falls below this share of the line.
pub const REARM_FRACTION: f64 = 0.95;
/// How often the memory is checked by default.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_millis(25);

/// Settings for dumps above a memory line: the line, the folder, how often to check.
///
/// ```no_run
/// use allocscope::timeline::{set_dump_above, DumpAbove, MemoryLine};
/// // 80% of the cgroup's memory.max (or of physical memory), to ALLOCSCOPE_DIR:
/// set_dump_above(Some(DumpAbove::new(MemoryLine::PercentOfLimit(80.0)))).unwrap();
/// // 2 GiB of RSS, to a given folder:
/// set_dump_above(Some(
///     DumpAbove::new(MemoryLine::parse("2GiB").unwrap()).dir("/var/tmp/allocscope"),
/// ))
/// .unwrap();
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DumpAbove {
    /// The line.
    pub line: MemoryLine,
    /// The folder to write to (created if missing); `None`: `ALLOCSCOPE_DIR`.
    pub dir: Option<PathBuf>,
    /// How often the memory is checked (at least 1 ms).
    pub check_every: Duration,
}

impl DumpAbove {
    /// Dumps above `line`, to `ALLOCSCOPE_DIR`, checking every [`DEFAULT_CHECK_EVERY`].
    pub fn new(line: MemoryLine) -> Self {
        DumpAbove {
            line,
            dir: None,
            check_every: DEFAULT_CHECK_EVERY,
        }
    }

    /// The same settings writing to `dir`.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The same settings checking every `every`.
    pub fn check_every(mut self, every: Duration) -> Self {
        self.check_every = every;
        self
    }
}

/// The memory line in effect and what it did ([`dump_above`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DumpAboveStatus {
    /// The line as given.
    pub line: MemoryLine,
    /// The line in bytes.
    pub line_bytes: u64,
    /// After a dump, the figure must fall below this to arm the next one.
    pub rearm_below_bytes: u64,
    /// The memory limit (for a share of it, the limit it is a share of).
    pub limit: Option<MemoryLimit>,
    /// Whether the cgroup's working set is compared too (a share of a cgroup limit).
    pub compares_cgroup: bool,
    /// The folder dumps go to.
    pub dir: PathBuf,
    /// How often the memory is checked.
    pub check_every: Duration,
    /// Whether the next crossing writes a dump (false after a dump, until memory falls below
    /// `rearm_below_bytes`).
    pub armed: bool,
    /// Dumps written since the line was set.
    pub dumps_written: u64,
    /// The files of the last dump.
    pub last_files: Vec<PathBuf>,
    /// The last dump's error, if it failed.
    pub last_error: Option<String>,
}

struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
}

struct Watcher {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

/// The line's state, read by the watcher at every check (a short, uncontended lock).
struct State {
    status: Option<DumpAboveStatus>,
    /// `memory.current`/`memory.usage_in_bytes`, `memory.stat` (NUL-terminated) and whether v1.
    cgroup_files: Option<(Vec<u8>, Vec<u8>, bool)>,
}

static STATE: Mutex<State> = Mutex::new(State {
    status: None,
    cgroup_files: None,
});
static WATCHER: Mutex<Option<Watcher>> = Mutex::new(None);

/// Around `fork()`: the child has no watcher thread, so its handle is forgotten (the line
/// stays set; [`set_dump_above`] in the child starts a watcher again).
struct WatcherAtFork;

impl AtFork for WatcherAtFork {
    fn prepare(&self) {
        WATCHER.prepare();
        STATE.prepare();
    }

    unsafe fn release(&self, child: bool) {
        // SAFETY: per the trait.
        unsafe {
            STATE.release(child);
            WATCHER.release(child);
        }
        if child {
            if let Some(w) = WATCHER.lock().take() {
                core::mem::forget(w);
            }
        }
    }
}

static WATCHER_AT_FORK: WatcherAtFork = WatcherAtFork;
static REGISTERED: std::sync::Once = std::sync::Once::new();

/// Sets the memory line (see the module docs of [`timeline`](super)), replacing any previous
/// one (also one from `ALLOCSCOPE_DUMP_ABOVE`), or removes it with `None` and stops its
/// thread.
///
/// Errors (nothing changes): a share of the limit when no limit can be read, or no folder
/// (neither [`DumpAbove::dir`] nor `ALLOCSCOPE_DIR`).
pub fn set_dump_above(config: Option<DumpAbove>) -> Result<(), Error> {
    untracked(|| {
        REGISTERED.call_once(|| fork::register(&WATCHER_AT_FORK));
        let Some(config) = config else {
            stop_watcher();
            STATE.lock().status = None;
            return Ok(());
        };
        let dir = match config.dir.clone() {
            Some(d) => d,
            None => match std::env::var_os(config::DIR) {
                Some(d) if !d.is_empty() => PathBuf::from(d),
                _ => {
                    return Err(Error::InvalidConfig(format!(
                        "memory line {}: no folder to dump to (set ALLOCSCOPE_DIR or \
                         DumpAbove::dir)",
                        config.line
                    )))
                }
            },
        };
        let limit = limit::memory_limit();
        let line_bytes = config
            .line
            .bytes(limit.as_ref().map(|l| l.bytes))
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "memory line {}: the memory limit cannot be read (no cgroup limit, no \
                     physical memory figure); give a size such as 2GiB",
                    config.line
                ))
            })?;
        let compares_cgroup = matches!(config.line, MemoryLine::PercentOfLimit(_))
            && limit
                .as_ref()
                .is_some_and(|l| l.source != LimitSource::Physical);
        let cgroup_files = if compares_cgroup {
            limit.as_ref().and_then(limit::usage_files)
        } else {
            None
        };
        let check_every = config.check_every.max(Duration::from_millis(1));
        {
            let mut s = STATE.lock();
            s.status = Some(DumpAboveStatus {
                line: config.line,
                line_bytes,
                rearm_below_bytes: (line_bytes as f64 * REARM_FRACTION) as u64,
                limit,
                compares_cgroup,
                dir,
                check_every,
                armed: true,
                dumps_written: 0,
                last_files: Vec::new(),
                last_error: None,
            });
            s.cgroup_files = cgroup_files;
        }
        start_watcher();
        Ok(())
    })
}

/// The memory line in effect (from code, or from `ALLOCSCOPE_DUMP_ABOVE`, applied when the
/// first scope begins) and the dumps it wrote; `None` when there is none.
pub fn dump_above() -> Option<DumpAboveStatus> {
    untracked(|| STATE.lock().status.clone())
}

fn start_watcher() {
    let mut w = WATCHER.lock();
    if let Some(w) = w.as_ref() {
        // A new interval or line applies from the next check.
        w.shared.wake.notify_all();
        return;
    }
    let shared = Arc::new(Shared {
        stop: Mutex::new(false),
        wake: Condvar::new(),
    });
    let s2 = shared.clone();
    match std::thread::Builder::new()
        .name("allocscope-memwatch".into())
        .spawn(move || untracked(|| run(&s2)))
    {
        Ok(thread) => *w = Some(Watcher { shared, thread }),
        Err(e) => eprintln!("allocscope: could not start the memory watcher: {e}"),
    }
}

fn stop_watcher() {
    let Some(w) = WATCHER.lock().take() else {
        return;
    };
    *w.shared.stop.lock() = true;
    w.shared.wake.notify_all();
    let _ = w.thread.join();
}

/// The watcher's loop: a check, then a wait until the next one.
fn run(shared: &Shared) {
    let mut stop = shared.stop.lock();
    while !*stop {
        let every = parking_lot::MutexGuard::unlocked(&mut stop, check);
        let Some(every) = every else { break };
        let _ = shared.wake.wait_until(&mut stop, Instant::now() + every);
    }
}

/// One check; the interval to the next, `None` when the line was removed.
fn check() -> Option<Duration> {
    let (line, rearm, armed, every, figures) = {
        let s = STATE.lock();
        let st = s.status.as_ref()?;
        let rss = crate::report::rss_bytes().unwrap_or(0);
        // The cgroup's usage bounds its working set from above: memory.stat is read only when
        // the usage alone reaches the line (or the line is waiting to be re-armed).
        let ws = s.cgroup_files.as_ref().and_then(|(usage, stat, v1)| {
            limit::working_set(usage, stat, *v1, st.line_bytes.min(st.rearm_below_bytes))
        });
        (
            st.line_bytes,
            st.rearm_below_bytes,
            st.armed,
            st.check_every,
            (rss, ws.unwrap_or(0)),
        )
    };
    let figure = figures.0.max(figures.1);
    if armed && figure >= line {
        dump(figures);
    } else if !armed && figure < rearm {
        if let Some(st) = STATE.lock().status.as_mut() {
            st.armed = true;
        }
    }
    Some(every)
}

/// Writes the dump for a crossing (`figures`: RSS and the cgroup's working set).
#[cold]
fn dump((rss, ws): (u64, u64)) {
    let Some(st) = STATE.lock().status.as_mut().map(|st| {
        st.armed = false;
        st.clone()
    }) else {
        return;
    };
    let human = crate::report::text::human_bytes;
    let figure = rss.max(ws);
    let what = if st.compares_cgroup && ws > rss {
        "the cgroup's working set"
    } else {
        "RSS"
    };
    let of_limit = match (&st.line, &st.limit) {
        (MemoryLine::PercentOfLimit(p), Some(l)) => {
            format!(" ({p}% of {} {})", l.source.as_str(), human(l.bytes))
        }
        _ => String::new(),
    };
    let message = format!(
        "{what} {} crossed the memory line {}{of_limit}",
        human(figure),
        human(st.line_bytes),
    );
    let active = active_jobs();
    let mut report = crate::report::report();
    report.trigger = Some(DumpTrigger {
        reason: DumpReason::MemoryAbove.as_str().to_string(),
        message: message.clone(),
        line_bytes: st.line_bytes,
        figure_bytes: figure,
        rss_bytes: rss,
        cgroup_working_set_bytes: ws,
        limit_bytes: st.limit.as_ref().map_or(0, |l| l.bytes),
        limit_source: st
            .limit
            .as_ref()
            .map_or("", |l| l.source.as_str())
            .to_string(),
        active: active.clone(),
    });
    let result = write_set(&st.dir, DumpReason::MemoryAbove, "", &report, true);
    drop(report);
    let running = if active.is_empty() {
        "no job running".to_string()
    } else {
        let list: Vec<String> = active
            .iter()
            .map(|a| {
                format!(
                    "{} ({} run{} since {})",
                    crate::report::escape::job_display_name(&a.job),
                    a.active_runs,
                    if a.active_runs == 1 { "" } else { "s" },
                    crate::model::Utc::from_unix_ms(a.since_unix_ms)
                )
            })
            .collect();
        format!("running: {}", list.join(", "))
    };
    let mut s = STATE.lock();
    match result {
        Ok(files) => {
            eprintln!(
                "allocscope: {message}; {running}; wrote {} (next dump after it falls below {})",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                human(st.rearm_below_bytes)
            );
            if let Some(cur) = s.status.as_mut() {
                cur.dumps_written += 1;
                cur.last_files = files;
                cur.last_error = None;
            }
        }
        Err(e) => {
            eprintln!("allocscope: {message}; {running}; the dump failed: {e}");
            if let Some(cur) = s.status.as_mut() {
                cur.last_error = Some(e.to_string());
            }
        }
    }
}

/// The jobs with runs in progress now, longest running first.
pub(crate) fn active_jobs() -> Vec<ActiveJob> {
    use core::sync::atomic::Ordering::Relaxed;
    let mut active: Vec<ActiveJob> = registry::all_jobs()
        .iter()
        .filter_map(|j| {
            let n = j.active_runs.load(Relaxed);
            (n > 0).then(|| ActiveJob {
                job: j.name.to_string(),
                active_runs: n as u64,
                since_unix_ms: j.active_since_ms.load(Relaxed),
            })
        })
        .collect();
    active.sort_by(|a, b| {
        a.since_unix_ms
            .cmp(&b.since_unix_ms)
            .then(a.job.cmp(&b.job))
    });
    active
}

/// Applies `ALLOCSCOPE_DUMP_ABOVE` once (at the first call into allocscope's API): a valid
/// line starts the watcher; an invalid value, or a line that cannot apply (no folder, no
/// limit), prints one line on stderr and leaves it off. Code that set a line first keeps it.
pub(crate) fn init_from_env() {
    static ENV: std::sync::Once = std::sync::Once::new();
    if ENV.is_completed() {
        return;
    }
    untracked(|| {
        ENV.call_once(|| {
            let Some(line) = config::dump_above() else {
                return;
            };
            if STATE.lock().status.is_some() {
                return;
            }
            if let Err(e) = set_dump_above(Some(DumpAbove::new(line))) {
                eprintln!(
                    "allocscope: {}={line}: {e}; memory-line dumps off",
                    config::DUMP_ABOVE
                );
            }
        })
    });
}
