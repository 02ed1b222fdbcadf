//! `allocscope`: render, compare and export saved allocscope reports, on any machine.
//!
//! A thin layer over the library: every command reads report files written by
//! [`Report::write_json`](allocscope::Report::write_json) (or automatic dumps) and calls the
//! library's renderers; every `-o FILE` goes through the library's atomic writer
//! ([`write_file_atomic`](allocscope::write_file_atomic)). Exit codes: 0 success, 2 usage error (from clap), 1 bad input or
//! output, with one line on stderr naming the file and the problem.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use allocscope::TimelineOptions;
use allocscope::{
    CallsiteOrder, DiffTextOptions, FlameMetric, FlameOptions, Report, SortBy, TextOptions,
};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "allocscope",
    version,
    about = "Render, compare and export allocscope reports (JSON files written by \
             Report::write_json or ALLOCSCOPE_DIR dumps)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the job table and each job's top callsites (by retained bytes, or as
    /// --callsites-by says).
    ///
    /// REPORT is read to its end before anything is printed. A FIFO (named pipe) or a
    /// device is read like any file: with no writer on the other end, `show` waits, as `cat`
    /// does (interrupt it with Ctrl-C).
    Show {
        /// The report file (a FIFO waits for its writer, as with `cat`).
        report: PathBuf,
        /// Show only this job.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// Show only the N jobs that retain the most.
        #[arg(long, value_name = "N")]
        top: Option<usize>,
        /// Callsites listed under each job.
        #[arg(long, value_name = "N", default_value_t = 5)]
        callsites: usize,
        /// Which callsites to list, largest first: retained (still live), allocated (in
        /// total) or peak (each callsite's highest live bytes).
        #[arg(long, value_enum, value_name = "FIGURE", default_value_t = Order::Retained)]
        callsites_by: Order,
        /// The order of the job table.
        #[arg(long, value_enum, default_value_t = Sort::Retained)]
        sort: Sort,
        /// Flag jobs whose runs allocate more than N objects per run on average.
        #[arg(long, value_name = "N", default_value_t = TextOptions::DEFAULT_FLAG_OBJECTS_PER_RUN)]
        flag_objects_per_run: u64,
    },
    /// Draw the memory-over-time chart (RSS, live heap, top jobs, run markers) as SVG.
    Timeline {
        /// The report file (taken with the timeline sampler running).
        report: PathBuf,
        /// Output file (`-`: standard output).
        #[arg(short, long, value_name = "OUT.svg")]
        output: PathBuf,
        /// The chart's title.
        #[arg(long)]
        title: Option<String>,
        /// Width in pixels.
        #[arg(long, default_value_t = 1200)]
        width: u32,
        /// Height in pixels.
        #[arg(long, default_value_t = 400)]
        height: u32,
    },
    /// Render a flamegraph SVG of retained or allocated memory.
    Flamegraph {
        /// The report file.
        report: PathBuf,
        /// Only this job's callsites (nested jobs included).
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// What frame widths measure.
        #[arg(long, value_enum, default_value_t = Metric::RetainedBytes)]
        metric: Metric,
        /// The SVG title (default: the job and metric).
        #[arg(long)]
        title: Option<String>,
        /// Leave memory allocated outside any job out of the graph, so that the jobs fill it
        /// (use it when start-up data or caches outside jobs dwarf them).
        #[arg(long)]
        no_unscoped: bool,
        /// Keep std/core/alloc frames that sit between two user frames (default: folded).
        #[arg(long)]
        keep_std: bool,
        /// Draw only retained memory allocated at least N runs ago (per-callsite ages, kept
        /// with exact stacks: buckets 0, 1, 2-3, 4-7, 8-15, 16+): a job's old memory by stack.
        #[arg(long, value_name = "N", default_value_t = 0)]
        min_age: u64,
        /// Output file (`-`: standard output), replaced atomically; only a regular file is
        /// ever replaced.
        #[arg(short, long, value_name = "OUT.svg")]
        output: PathBuf,
    },
    /// Compare two reports: per job and callsite, what grew from OLD to NEW, largest first.
    Diff {
        /// The older report.
        old: PathBuf,
        /// The newer report.
        new: PathBuf,
        /// Show only this job.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// Show only the N fastest-growing jobs.
        #[arg(long, value_name = "N")]
        top: Option<usize>,
        /// Growing callsites listed under each growing job.
        #[arg(long, value_name = "N", default_value_t = 5)]
        callsites: usize,
        /// Also write a differential flamegraph (widths: NEW; red: grew, blue: shrank).
        #[arg(long, value_name = "OUT.svg")]
        flamegraph: Option<PathBuf>,
        /// What the differential flamegraph measures.
        #[arg(long, value_enum, default_value_t = Metric::RetainedBytes)]
        metric: Metric,
        /// Leave unscoped memory out of the differential flamegraph.
        #[arg(long)]
        no_unscoped: bool,
        /// Print the diff as JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Write a self-contained HTML page of a report (job table, flamegraph, callsites,
    /// timeline), or of the difference between two reports when given OLD and NEW.
    Html {
        /// The report file (with NEW: the older report).
        report: PathBuf,
        /// A newer report: the page shows what changed from REPORT to NEW.
        new: Option<PathBuf>,
        /// Output file (`-`: standard output).
        #[arg(short, long, value_name = "OUT.html")]
        output: PathBuf,
    },
    /// Convert a report for other tools: pprof (go tool pprof, Pyroscope, Parca, Grafana),
    /// DHAT's viewer (dh_view.html), or folded stacks (flamegraph tools).
    Export {
        /// The report file.
        report: PathBuf,
        /// Output format.
        #[arg(long, value_enum)]
        format: Format,
        /// Output file (`-`: standard output), replaced atomically; only a regular file is
        /// ever replaced.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Folded only: only this job's callsites.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// Folded only: what the counts measure.
        #[arg(long, value_enum, default_value_t = Metric::RetainedBytes)]
        metric: Metric,
        /// Folded only: leave unscoped memory out.
        #[arg(long)]
        no_unscoped: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Order {
    Retained,
    Allocated,
    Peak,
}

impl From<Order> for CallsiteOrder {
    fn from(o: Order) -> CallsiteOrder {
        match o {
            Order::Retained => CallsiteOrder::Retained,
            Order::Allocated => CallsiteOrder::Allocated,
            Order::Peak => CallsiteOrder::Peak,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Sort {
    /// Retained bytes, largest first.
    Retained,
    /// Allocated objects, most first.
    AllocatedObjects,
    /// Highest run peak first.
    Peak,
    /// Growing jobs first (fastest first), then saturating, steady.
    Trend,
}

impl From<Sort> for SortBy {
    fn from(s: Sort) -> SortBy {
        match s {
            Sort::Retained => SortBy::Retained,
            Sort::AllocatedObjects => SortBy::AllocatedObjects,
            Sort::Peak => SortBy::Peak,
            Sort::Trend => SortBy::Trend,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Metric {
    RetainedBytes,
    RetainedObjects,
    AllocatedBytes,
    AllocatedObjects,
}

impl From<Metric> for FlameMetric {
    fn from(m: Metric) -> FlameMetric {
        match m {
            Metric::RetainedBytes => FlameMetric::RetainedBytes,
            Metric::RetainedObjects => FlameMetric::RetainedObjects,
            Metric::AllocatedBytes => FlameMetric::AllocatedBytes,
            Metric::AllocatedObjects => FlameMetric::AllocatedObjects,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Gzipped profile.proto with alloc_objects, alloc_space, inuse_objects, inuse_space.
    Pprof,
    /// DHAT JSON, for dh_view.html.
    Dhat,
    /// Folded stacks, `frame;frame;frame count` per line.
    Folded,
}

fn main() -> ExitCode {
    // Usage errors (and --help / --version) exit here, with clap's codes (2 for errors).
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("allocscope: error: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Show {
            report,
            job,
            top,
            callsites,
            callsites_by,
            sort,
            flag_objects_per_run,
        } => {
            let r = read(&report)?;
            check_job(&report, &r, job.as_deref())?;
            let text = r.to_text_with(&TextOptions {
                job,
                top_callsites: callsites,
                max_jobs: top,
                callsites_by: callsites_by.into(),
                sort: sort.into(),
                flag_objects_per_run,
            });
            write_out(Path::new("-"), text.as_bytes())
        }
        Command::Timeline {
            report,
            output,
            title,
            width,
            height,
        } => {
            let r = read(&report)?;
            let opts = TimelineOptions {
                title,
                width,
                height,
                ..TimelineOptions::default()
            };
            let svg = r
                .timeline_svg(&opts)
                .map_err(|e| format!("{}: {e}", report.display()))?;
            write_out(&output, svg.as_bytes())
        }
        Command::Flamegraph {
            report,
            job,
            metric,
            title,
            no_unscoped,
            keep_std,
            min_age,
            output,
        } => {
            let r = read(&report)?;
            check_job(&report, &r, job.as_deref())?;
            let opts = FlameOptions {
                job,
                metric: metric.into(),
                title,
                include_unscoped: !no_unscoped,
                keep_std,
                min_age,
                ..FlameOptions::default()
            };
            let svg = r.flamegraph_svg(&opts).map_err(|e| e.to_string())?;
            write_out(&output, svg.as_bytes())
        }
        Command::Diff {
            old,
            new,
            job,
            top,
            callsites,
            flamegraph,
            metric,
            no_unscoped,
            json,
        } => {
            let older = read(&old)?;
            let newer = read(&new)?;
            if let Some(name) = &job {
                if older.job(name).is_none() && newer.job(name).is_none() {
                    return Err(format!(
                        "{} and {}: no job named {name:?} in either report",
                        old.display(),
                        new.display()
                    ));
                }
            }
            let diff = newer.diff(&older);
            if let Some(out) = &flamegraph {
                let opts = FlameOptions {
                    job: job.clone(),
                    metric: metric.into(),
                    include_unscoped: !no_unscoped,
                    ..FlameOptions::default()
                };
                let svg = diff.flamegraph_svg(&opts).map_err(|e| e.to_string())?;
                write_out(out, svg.as_bytes())?;
            }
            let text = if json {
                diff.to_json() + "\n"
            } else {
                diff.to_text_with(&DiffTextOptions {
                    job,
                    max_jobs: top,
                    top_callsites: callsites,
                })
            };
            write_out(Path::new("-"), text.as_bytes())
        }
        Command::Html {
            report,
            new,
            output,
        } => {
            let r = read(&report)?;
            let html = match new {
                Some(new) => read(&new)?.diff(&r).to_html(),
                None => r.to_html(),
            };
            write_out(&output, html.as_bytes())
        }
        Command::Export {
            report,
            format,
            output,
            job,
            metric,
            no_unscoped,
        } => {
            let r = read(&report)?;
            let bytes = match format {
                Format::Pprof => r.to_pprof().map_err(|e| e.to_string())?,
                Format::Dhat => r.to_dhat_json().map_err(|e| e.to_string())?.into_bytes(),
                Format::Folded => {
                    check_job(&report, &r, job.as_deref())?;
                    let opts = FlameOptions {
                        job,
                        metric: metric.into(),
                        include_unscoped: !no_unscoped,
                        ..FlameOptions::default()
                    };
                    r.folded(&opts).into_bytes()
                }
            };
            write_out(&output, &bytes)
        }
    }
}

/// Reads a report; the error already names the file.
fn read(path: &Path) -> Result<Report, String> {
    Report::read_json(path).map_err(|e| e.to_string())
}

/// A `--job` that is not in the report is bad input: say which jobs there are.
fn check_job(path: &Path, report: &Report, job: Option<&str>) -> Result<(), String> {
    let Some(name) = job else { return Ok(()) };
    if report.job(name).is_some() {
        return Ok(());
    }
    let mut names: Vec<&str> = report.jobs().iter().map(|j| j.name.as_str()).collect();
    let more = names.len().saturating_sub(10);
    names.truncate(10);
    let list = if names.is_empty() {
        "it has no jobs".to_string()
    } else if more > 0 {
        format!("jobs: {} and {more} more", names.join(", "))
    } else {
        format!("jobs: {}", names.join(", "))
    };
    Err(format!(
        "{}: no job named {name:?} ({list})",
        path.display()
    ))
}

/// Writes to standard output for `-`, else through the library's atomic writer (a temporary
/// file renamed over the destination; only a regular file or nothing is replaced, a symbolic
/// link is written through to its target).
fn write_out(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        return match out.write_all(bytes).and_then(|()| out.flush()) {
            Ok(()) => Ok(()),
            // A closed pipe (`allocscope show r.json | head`) is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(format!("standard output: {e}")),
        };
    }
    allocscope::write_file_atomic(path, bytes).map_err(|e| match e {
        allocscope::Error::Io { ref source, .. }
            if source.kind() == std::io::ErrorKind::InvalidInput =>
        {
            format!("{e} (for standard output, use `-o -`)")
        }
        e => e.to_string(),
    })
}
