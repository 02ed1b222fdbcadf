//! DHAT JSON (`dhatFileVersion` 2, mode `rust-heap`), the format dhat-rs writes and DHAT's
//! viewer `dh_view.html` reads.
//!
//! The viewer's rules (from `dh_view.js`): the top level must have `dhatFileVersion`, `mode`,
//! `verb`, `bklt`, `bkacc`, `tu`, `Mtu`, `cmd`, `pid`, `te`, `pps`, `ftbl`, plus `tg` and
//! `tuth` when `bklt` is true; each program point must have `tb`, `tbk`, `fs`, plus `mb`,
//! `mbk`, `gb`, `gbk`, `eb`, `ebk` when `bklt` is true (and `tl`, read unchecked); `ftbl[0]`
//! is `"[root]"`; and no two program points may have the same frame list ("data file
//! contains a repeated location"), so entries whose frames render alike are summed here.

use std::collections::HashMap;

use serde::Serialize;

use super::{describe_stack_mode, entries, estimated, Entry};
use crate::error::Detail;
use crate::error::Error;
use crate::report::{Frame, Report, Usage};

/// The top level of a DHAT file, field names as DHAT spells them.
#[derive(Serialize)]
#[allow(non_snake_case)]
struct DhatFile {
    dhatFileVersion: u32,
    mode: &'static str,
    verb: &'static str,
    bklt: bool,
    bkacc: bool,
    tu: &'static str,
    Mtu: &'static str,
    tuth: u64,
    cmd: String,
    pid: u32,
    tg: u64,
    te: u64,
    pps: Vec<ProgramPoint>,
    ftbl: Vec<String>,
}

/// One program point: a stack and its figures.
#[derive(Serialize)]
struct ProgramPoint {
    /// Total bytes and blocks allocated.
    tb: u64,
    tbk: u64,
    /// Total lifetime of its blocks, in `tu`: not recorded by allocscope, always 0.
    tl: u64,
    /// The most bytes live at once (the callsite's peak, `CallsiteReport::peak_bytes`) and
    /// blocks (retained: a lower bound, block peaks are not recorded).
    mb: u64,
    mbk: u64,
    /// Bytes and blocks live at the global peak (here: retained).
    gb: u64,
    gbk: u64,
    /// Bytes and blocks live at the end (retained).
    eb: u64,
    ebk: u64,
    /// Frames, indices into `ftbl`.
    fs: Vec<usize>,
}

impl ProgramPoint {
    fn add(&mut self, allocated: Usage, retained: Usage, peak_bytes: u64) {
        self.tb = self.tb.saturating_add(allocated.bytes);
        self.tbk = self.tbk.saturating_add(allocated.objects);
        self.mb = self.mb.saturating_add(peak_bytes);
        self.mbk = self.mbk.saturating_add(retained.objects);
        self.gb = self.gb.saturating_add(retained.bytes);
        self.gbk = self.gbk.saturating_add(retained.objects);
        self.eb = self.eb.saturating_add(retained.bytes);
        self.ebk = self.ebk.saturating_add(retained.objects);
    }
}

/// A frame as dhat-rs renders one (`0x…: function (file:line)`); allocscope keeps no
/// addresses in reports, so the address is always `0x0`.
fn frame_string(f: &Frame) -> String {
    format!(
        "0x0: {} ({}:{})",
        f.function,
        f.file.as_deref().unwrap_or("???"),
        f.line.unwrap_or(0)
    )
}

/// The pseudo-frame standing for one job of a scope (`name` already as displayed).
fn job_frame(name: &str) -> String {
    format!("[job] {name}")
}

impl Report {
    /// The report in DHAT's JSON format (`dhatFileVersion` 2, mode `rust-heap`, as dhat-rs
    /// writes it), to open in DHAT's viewer `dh_view.html` (shipped with Valgrind, also
    /// hosted by dhat-rs's author) or import into the Firefox Profiler.
    ///
    /// Each callsite becomes a program point whose frames are one pseudo-frame per job of its
    /// scope, outermost first (`[job] import_users`, or `[job] (unscoped)`), then its stack,
    /// innermost first. So the viewer's top level splits memory by job (inclusive of nested
    /// jobs, like [`JobReport`](crate::JobReport)), and each job's node splits by
    /// allocation point. Frames render as dhat-rs renders them: `0x0: function (file:line)`.
    ///
    /// How allocscope's figures map onto DHAT's:
    ///
    /// | DHAT | allocscope |
    /// |------|------------|
    /// | Total (`tb`, `tbk`) | allocated bytes, objects |
    /// | At t-end (`eb`, `ebk`) | retained (live when the report was taken) |
    /// | At t-gmax (`gb`, `gbk`) | retained too: allocscope does not record what each callsite held at the process-wide peak |
    /// | Max (`mb`, `mbk`) | the callsite's peak bytes ([`CallsiteReport::peak_bytes`](crate::CallsiteReport::peak_bytes); retained for reports without it); blocks: retained, a lower bound |
    /// | lifetimes (`tl`) | 0: block lifetimes are not recorded |
    /// | `te`, `tg` | the time span of the runs in the report (at least 1 µs), both |
    /// | `cmd`, `pid` | a description of the report; 0 |
    ///
    /// With sampled stacks the figures are estimates, as the `cmd` line says. A report
    /// without callsites (stacks off) gets one program point per job with its exclusive
    /// figures (and one for unscoped memory), framed by the job pseudo-frame alone.
    ///
    /// Program points whose frames render alike (e.g. two scopes' stacks that differ only
    /// in addresses) are summed, as the viewer refuses repeated frame lists.
    pub fn to_dhat_json(&self) -> Result<String, Error> {
        crate::thread::untracked(|| {
            let file = self.dhat_file();
            let mut out = Vec::new();
            // One field per line without indentation, like dhat-rs: compact yet diffable.
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            file.serialize(&mut ser)
                .map_err(|e| Error::Render(Detail::with_source(format!("DHAT JSON: {e}"), e)))?;
            String::from_utf8(out)
                .map_err(|e| Error::Render(Detail::with_source(format!("DHAT JSON: {e}"), e)))
        })
    }

    fn dhat_file(&self) -> DhatFile {
        let mut ftbl: Vec<String> = vec!["[root]".to_string()];
        let mut frame_ids: HashMap<String, usize> = HashMap::new();
        let mut intern = |s: String| -> usize {
            *frame_ids.entry(s).or_insert_with_key(|k| {
                ftbl.push(k.clone());
                ftbl.len() - 1
            })
        };
        let mut pps: Vec<ProgramPoint> = Vec::new();
        let mut pp_of_fs: HashMap<Vec<usize>, usize> = HashMap::new();
        for e in entries(self) {
            let fs = frames_of(&e, &mut intern);
            let i = *pp_of_fs.entry(fs).or_insert_with_key(|fs| {
                pps.push(ProgramPoint {
                    tb: 0,
                    tbk: 0,
                    tl: 0,
                    mb: 0,
                    mbk: 0,
                    gb: 0,
                    gbk: 0,
                    eb: 0,
                    ebk: 0,
                    fs: fs.clone(),
                });
                pps.len() - 1
            });
            pps[i].add(e.allocated, e.retained, e.peak_bytes);
        }
        let te = self.span_us().max(1);
        let mut cmd = format!(
            "allocscope report taken at {} ms since the Unix epoch ({})",
            self.timestamp_unix_ms,
            describe_stack_mode(self.stack_mode)
        );
        if estimated(self) {
            cmd.push_str("; figures are estimates from sampled stacks");
        }
        if self.callsites.is_empty() {
            cmd.push_str("; no callsites: one entry per job");
        }
        DhatFile {
            dhatFileVersion: 2,
            mode: "rust-heap",
            verb: "Allocated",
            bklt: true,
            bkacc: false,
            tu: "µs",
            Mtu: "s",
            tuth: 10,
            cmd,
            pid: 0,
            tg: te,
            te,
            pps,
            ftbl,
        }
    }

    /// Microseconds from the start of the earliest run the report remembers to the report.
    fn span_us(&self) -> u64 {
        let end_us = self.timestamp_unix_ms.saturating_mul(1000);
        let start_us = self
            .jobs
            .iter()
            .flat_map(|j| j.recent_runs.iter())
            .map(|r| {
                r.finished_unix_ms
                    .saturating_mul(1000)
                    .saturating_sub(r.duration_ns / 1000)
            })
            .min()
            .unwrap_or(end_us);
        end_us.saturating_sub(start_us)
    }
}

/// The frame indices of an entry: its jobs outermost first, then its stack innermost first.
fn frames_of(e: &Entry<'_>, intern: &mut impl FnMut(String) -> usize) -> Vec<usize> {
    let mut fs = Vec::with_capacity(e.scope.len().max(1) + e.frames.len());
    if e.scope.is_empty() {
        fs.push(intern(job_frame(&e.job())));
    } else {
        fs.extend(
            e.scope
                .iter()
                .map(|s| intern(job_frame(&super::job_display_name(s)))),
        );
    }
    fs.extend(e.frames.iter().map(|(_, f)| intern(frame_string(f))));
    fs
}
