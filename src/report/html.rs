//! One-file HTML reports: [`Report::to_html`] and [`ReportDiff::to_html`].
//!
//! Rules:
//! * **self-contained**: the page fetches nothing (no scripts, styles, fonts or images from
//!   anywhere); its CSS and its one small script are inlined, the timeline chart is a `data:`
//!   image, so it opens on an air-gapped machine and can be attached to a ticket;
//! * **escaped**: every string from a report (job names, functions, files) goes through
//!   [`esc`], in text and in attributes; a job named `<script>` renders as text;
//! * **one flamegraph per page**, inline, with inferno's own script (click to zoom, search,
//!   reset): it is the page's first `<svg>` and the page uses none of its element ids
//!   (`frames`, `details`, `title`, `search`, `unzoom`, `matched`), which the script looks up
//!   globally;
//! * frames are labelled by their [short names](super::labels), full names in `title`
//!   tooltips; std frames between user frames are folded as in the flamegraph.

use std::fmt::Write as _;

use super::labels::{fold_std, short_file, short_name};
use super::text::{grouped, human_bytes};
use super::{
    CallsiteReport, FlameOptions, Frame, JobReport, ProcessMemory, Report, ReportDiff, OLD_AGE,
};
use crate::model::Utc;

/// Callsites listed per job.
const CALLSITES_PER_JOB: usize = 10;
/// Frames shown per callsite (innermost first).
const FRAMES_PER_CALLSITE: usize = 8;

/// Escapes text for HTML text and attribute values: the one escaper of every output
/// ([`xml_escape`](super::escape::xml_escape)), so characters XML 1.0 forbids become visible
/// `\u{hex}` text too.
pub(crate) fn esc(s: &str) -> String {
    super::escape::xml_escape(s)
}

const CSS: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1240px;padding:16px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}.meta{color:#666;margin:0 0 12px}
table{border-collapse:collapse;width:100%}th,td{padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;border-bottom:1px solid #ccc}td{border-bottom:1px solid #eee}
th:first-child,td:first-child{text-align:left}td.name{font-family:ui-monospace,Menlo,Consolas,monospace}
table.sortable th{cursor:pointer;user-select:none}table.sortable th[aria-sort=ascending]::after{content:" \25B2"}
table.sortable th[aria-sort=descending]::after{content:" \25BC"}
.grow{color:#b00}.shrink{color:#06c}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:8px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:6px 12px}.card b{display:block;font-size:16px}
.stack{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;text-align:left;white-space:normal}
.stack div{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;max-width:900px}.loc{color:#888}
.flame{border:1px solid #ddd}.flame>svg{display:block;width:100%}.chart img{max-width:100%;border:1px solid #ddd}
details{margin:4px 0}summary{cursor:pointer}.note{color:#666;font-size:12px}
.runs{display:flex;align-items:flex-end;gap:1px;height:64px;border-bottom:1px solid #999;margin:6px 0 2px}
.runs div{flex:0 0 7px;background:#c60;min-height:1px}.runs div.older{background:#888;flex-basis:14px;margin-right:4px}
.ages{display:inline-flex;width:80px;height:10px;background:#eee;vertical-align:middle}
.ages span{display:block;height:100%}.a0{background:#335}.a1{background:#558}.a2{background:#77a}
.a3{background:#c96}.a4{background:#d63}.a5{background:#b00}
.diagnostic{background:#fff4e5;border-left:4px solid #e69500;padding:6px 10px;white-space:pre-wrap}
"#;

/// Sorts tables of class `sortable` when a header is clicked: by each cell's `data-v` (a
/// number) when present, else its text. `#sort=COLUMN` in the URL sorts the job table on load.
const JS: &str = r#"
(function(){
  function key(td){var v=td.getAttribute("data-v");return v===null?td.textContent.toLowerCase():parseFloat(v);}
  function sortBy(table,col,dir){
    var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);return (x<y?-1:x>y?1:0)*dir;});
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
      if(i===col){th.setAttribute("aria-sort",dir>0?"ascending":"descending");}else{th.removeAttribute("aria-sort");}
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"),function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
      th.addEventListener("click",function(){
        var numeric=table.tBodies[0].rows.length&&table.tBodies[0].rows[0].cells[i].hasAttribute("data-v");
        var dir=th.getAttribute("aria-sort")==="descending"?1:th.getAttribute("aria-sort")==="ascending"?-1:(numeric?-1:1);
        sortBy(table,i,dir);
      });
    });
  });
  var m=/[#&]sort=([a-z_]+)(?:-(asc|desc))?/.exec(location.hash);
  var jobs=document.getElementById("jobs");
  if(m&&jobs){
    Array.prototype.forEach.call(jobs.tHead.rows[0].cells,function(th,i){
      if(th.getAttribute("data-key")===m[1]){sortBy(jobs,i,m[2]==="asc"?1:-1);}
    });
  }
})();
"#;

fn page_start(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        esc(title)
    );
}

fn page_end(out: &mut String) {
    let _ = write!(
        out,
        "<p class=\"note\">Generated by allocscope {}. Self-contained: this file fetches \
         nothing.</p>\n<script>{JS}</script>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
}

/// The flamegraph SVG ready to inline: without the XML prolog and doctype.
fn inline_svg(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |i| &svg[i..])
}

fn flame_section(out: &mut String, heading: &str, svg: Result<String, crate::error::Error>) {
    let _ = writeln!(out, "<h2>{}</h2>", esc(heading));
    match svg {
        Ok(svg) => {
            let _ = writeln!(
                out,
                "<p class=\"note\">Click a frame to zoom, \"Reset Zoom\" to go back, \
                 \"Search\" to highlight. Labels are short names; hover for the full name.</p>\n\
                 <div class=\"flame\">{}</div>",
                inline_svg(&svg)
            );
        }
        Err(e) => {
            let _ = writeln!(out, "<p>No flamegraph: {}</p>", esc(&e.to_string()));
        }
    }
}

/// A stack as lines (innermost first), short labels, full names and locations in tooltips.
fn stack_cell(frames: &[Frame]) -> String {
    let folded = fold_std(frames);
    let mut s = String::from("<td class=\"stack\">");
    for f in folded.iter().take(FRAMES_PER_CALLSITE) {
        let (loc, short_loc) = match (&f.file, f.line) {
            (Some(file), Some(line)) => (
                format!("{file}:{line}"),
                format!("{}:{line}", short_file(file)),
            ),
            (Some(file), None) => (file.to_string(), short_file(file).to_string()),
            _ => (String::new(), String::new()),
        };
        let _ = write!(
            s,
            "<div title=\"{}\">{} <span class=\"loc\">{}</span></div>",
            esc(&format!("{}\n{loc}", f.function)),
            esc(&short_name(&f.function)),
            esc(&short_loc)
        );
    }
    if folded.len() > FRAMES_PER_CALLSITE {
        let _ = write!(
            s,
            "<div class=\"loc\">… {} more frames</div>",
            folded.len() - FRAMES_PER_CALLSITE
        );
    }
    if frames.is_empty() {
        s.push_str("<div class=\"loc\">(no frames)</div>");
    }
    s.push_str("</td>");
    s
}

fn bytes_td(v: u64) -> String {
    format!("<td data-v=\"{v}\">{}</td>", human_bytes(v))
}

fn count_td(v: u64) -> String {
    format!("<td data-v=\"{v}\">{}</td>", grouped(v))
}

/// A callsite's retained bytes by age of run as a cell: a stacked bar (newest run left,
/// oldest right) with each bucket in its tooltip, and the old part's size (sorts by it).
fn ages_td(c: &CallsiteReport) -> String {
    if !c.has_ages() {
        return "<td data-v=\"0\">-</td>".to_string();
    }
    let total = c.retained.bytes.max(1);
    let mut bar = String::new();
    let mut tip = Vec::new();
    for (i, u) in c.retained_by_age.iter().enumerate() {
        let name = super::CALLSITE_AGE_BUCKETS[i];
        tip.push(format!("{name}: {}", human_bytes(u.bytes)));
        if u.bytes > 0 {
            let _ = write!(
                bar,
                "<span class=\"a{i}\" style=\"width:{:.1}%\"></span>",
                u.bytes as f64 * 100.0 / total as f64
            );
        }
    }
    let old = c.retained_aged(OLD_AGE).bytes;
    format!(
        "<td data-v=\"{old}\" title=\"retained by age of run (runs ago) · {}\">\
         <span class=\"ages\">{bar}</span> {}</td>",
        tip.join(" · "),
        human_bytes(old)
    )
}

fn callsite_rows(out: &mut String, sites: &[CallsiteReport]) {
    // One row per stack as shown (frames below the ones shown, folded std frames): rows that
    // would read the same are one row, saying how many stacks it holds.
    let mut rows = super::text::merge_alike(sites, |c| stack_cell(&c.frames));
    rows.sort_by_key(|(c, _, _)| std::cmp::Reverse(c.retained.bytes));
    let aged = rows.iter().any(|(c, _, _)| c.has_ages());
    let _ = writeln!(
        out,
        "<table class=\"sortable\"><thead><tr><th>Retained</th><th>Retained objects</th>\
         <th>Allocated</th><th>Allocated objects</th>{}<th>Stack (innermost first)</th></tr>\
         </thead><tbody>",
        if aged {
            "<th title=\"retained by age of the run that allocated it: newest run left \
             (dark), 16+ runs ago right (red); the figure: allocated 2 or more runs ago\">\
             By age · 2+ runs ago</th>"
        } else {
            ""
        }
    );
    for (c, stacks, cell) in rows.iter().take(CALLSITES_PER_JOB) {
        let cell = match stacks {
            1 => cell.clone(),
            n => cell.replacen(
                "</td>",
                &format!(
                    "<div class=\"loc\">({n} stacks that differ below these frames)</div></td>"
                ),
                1,
            ),
        };
        // An estimate reads `~` and says so on hover; an exact figure is plain.
        let td = |v: u64, text: String| {
            if c.estimated {
                format!(
                    "<td data-v=\"{v}\" class=\"est\" title=\"estimate from sampled stacks\">~{text}</td>"
                )
            } else {
                format!("<td data-v=\"{v}\">{text}</td>")
            }
        };
        let _ = writeln!(
            out,
            "<tr>{}{}{}{}{}{}</tr>",
            td(c.retained.bytes, human_bytes(c.retained.bytes)),
            td(c.retained.objects, grouped(c.retained.objects)),
            td(c.allocated.bytes, human_bytes(c.allocated.bytes)),
            td(c.allocated.objects, grouped(c.allocated.objects)),
            if aged { ages_td(c) } else { String::new() },
            cell
        );
    }
    out.push_str("</tbody></table>\n");
    if rows
        .iter()
        .take(CALLSITES_PER_JOB)
        .any(|(c, _, _)| c.estimated)
    {
        out.push_str(
            "<p class=\"note\">~ marks estimates from sampled stacks (scaled from the \
             allocations sampled); the job's figures above them are exact.</p>\n",
        );
    }
    if rows.len() > CALLSITES_PER_JOB {
        let _ = writeln!(
            out,
            "<p class=\"note\">{} more callsites in the JSON report.</p>",
            rows.len() - CALLSITES_PER_JOB
        );
    }
    if aged {
        old_rows(out, &rows);
    }
}

/// The job's old memory by stack: the callsites holding memory allocated `OLD_AGE` or more
/// runs ago, largest first — a leak's stacks, apart from the current runs' working set.
fn old_rows(out: &mut String, rows: &[(CallsiteReport, usize, String)]) {
    let mut old: Vec<(u64, &CallsiteReport, &String)> = rows
        .iter()
        .map(|(c, _, cell)| (c.retained_aged(OLD_AGE).bytes, c, cell))
        .filter(|(b, _, _)| *b > 0)
        .collect();
    if old.is_empty() {
        return;
    }
    old.sort_by_key(|(b, _, _)| std::cmp::Reverse(*b));
    let _ = writeln!(
        out,
        "<details open><summary>Held from runs 2 or more runs ago, by stack ({} callsites)\
         </summary><table class=\"sortable\"><thead><tr><th>Old retained</th>\
         <th>Old objects</th><th>16+ runs ago</th><th>Stack (innermost first)</th></tr>\
         </thead><tbody>",
        old.len()
    );
    for (bytes, c, cell) in old.iter().take(CALLSITES_PER_JOB) {
        let u = c.retained_aged(OLD_AGE);
        let _ = writeln!(
            out,
            "<tr>{}{}{}{}</tr>",
            bytes_td(*bytes),
            count_td(u.objects),
            bytes_td(c.retained_by_age[5].bytes),
            cell
        );
    }
    out.push_str("</tbody></table></details>\n");
}

impl Report {
    /// The report as one self-contained HTML page: process memory, the job table (click a
    /// header to sort), the flamegraph of retained bytes (inferno's, clickable and zoomable),
    /// the memory-over-time chart and trends when the report has them, and each job's top
    /// callsites. It fetches nothing, so it opens offline. Every name from the report is
    /// escaped.
    ///
    /// The same page is served live at `/` by the live endpoint (`allocscope::http`, feature
    /// `http`), and written by `allocscope html REPORT.json -o OUT.html`.
    pub fn to_html(&self) -> String {
        crate::thread::untracked(|| self.to_html_inner())
    }

    fn to_html_inner(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        page_start(&mut out, "allocscope report");
        let _ = writeln!(
            out,
            "<h1>allocscope report</h1>\n<p class=\"meta\">Taken {} · stacks: {} · {} jobs</p>",
            Utc::from_unix_ms(self.timestamp_unix_ms),
            esc(&super::text::stack_mode_words(self.stack_mode)),
            self.jobs.len()
        );
        if let Some(t) = &self.trigger {
            let running: Vec<String> = t
                .active
                .iter()
                .map(|a| {
                    format!(
                        "{} ({} run{} since {})",
                        esc(&super::escape::job_display_name(&a.job)),
                        a.active_runs,
                        if a.active_runs == 1 { "" } else { "s" },
                        Utc::from_unix_ms(a.since_unix_ms)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "<p class=\"trigger\"><b>Written because:</b> {}{}</p>",
                esc(&t.message),
                if running.is_empty() {
                    String::new()
                } else {
                    format!(" · running then: {}", running.join(", "))
                }
            );
        }
        let p = &self.process;
        let rss = if p.rss_bytes == 0 {
            "unavailable".to_string()
        } else {
            human_bytes(p.rss_bytes)
        };
        let _ = writeln!(
            out,
            "<div class=\"cards\"><div class=\"card\">RSS<b>{rss}</b></div>\
             <div class=\"card\">Live heap<b>{}</b></div>\
             <div class=\"card\">Freed, not returned<b>{}</b></div>\
             <div class=\"card\">Tracker<b>{}</b></div>\
             <div class=\"card\">Unscoped live<b>{}</b></div>\
             <div class=\"card\">Allocator<b>{}</b></div>{}</div>",
            human_bytes(p.heap_live_bytes),
            human_bytes(p.not_returned_bytes),
            human_bytes(p.tracker_bytes),
            human_bytes(self.totals.unscoped_live.bytes),
            esc(if p.allocator.is_empty() {
                "unknown"
            } else {
                &p.allocator
            }),
            breakdown_cards(p),
        );
        if let Some(note) = super::text::c_heap_advice(p) {
            let _ = writeln!(out, "<p class=\"meta\">{}</p>", esc(&note));
        }

        out.push_str(&super::diagnose::html_notes(&self.diagnostics));

        // The flamegraph first: inferno's script takes the page's first <svg>.
        flame_section(
            &mut out,
            "Retained bytes by job and stack",
            self.flamegraph_svg(&FlameOptions::default()),
        );

        out.push_str("<h2>Jobs</h2>\n<table id=\"jobs\" class=\"sortable\"><thead><tr>");
        for (key, label) in [
            ("name", "Job"),
            ("runs", "Runs"),
            ("active", "Active"),
            ("allocated", "Allocated"),
            ("allocated_objects", "Allocated objects"),
            ("peak", "Peak (run)"),
            ("retained", "Retained"),
            ("retained_objects", "Retained objects"),
            ("age", "Held by runs"),
            ("trend", "Trend"),
        ] {
            let _ = write!(out, "<th data-key=\"{key}\">{label}</th>");
        }
        out.push_str("</tr></thead><tbody>\n");
        for (i, j) in self.jobs.iter().enumerate() {
            let _ = writeln!(
                out,
                "<tr><td class=\"name\"><a href=\"#job-{i}\">{}</a></td>{}{}{}{}{}{}{}<td>{}</td><td>{}</td></tr>",
                esc(&j.name),
                count_td(j.runs),
                count_td(j.active_runs),
                bytes_td(j.allocated.bytes),
                count_td(j.allocated.objects),
                bytes_td(j.peak_bytes),
                bytes_td(j.retained.bytes),
                count_td(j.retained.objects),
                esc(&super::text::age_text(j)),
                esc(&j.trend.label()),
            );
        }
        out.push_str("</tbody></table>\n");
        if self.jobs.is_empty() {
            out.push_str("<p>No job has run yet.</p>\n");
        }

        if !self.timeline.is_empty() || !self.run_events.is_empty() {
            out.push_str("<h2>Memory over time</h2>\n");
            timeline_chart(&mut out, self);
        }

        out.push_str("<h2>Callsites by job</h2>\n");
        for (i, j) in self.jobs.iter().enumerate() {
            let _ = writeln!(
                out,
                "<h3 id=\"job-{i}\">{}</h3><p class=\"meta\">retains {} in {} objects · \
                 allocated {} in {} runs · trend {}</p>",
                esc(&j.name),
                human_bytes(j.retained.bytes),
                grouped(j.retained.objects),
                human_bytes(j.allocated.bytes),
                grouped(j.runs),
                esc(&j.trend.label())
            );
            runs_chart(&mut out, j);
            if j.callsites.is_empty() {
                out.push_str(
                    "<p class=\"note\">No callsites (stacks off, or nothing sampled).</p>\n",
                );
            } else {
                callsite_rows(&mut out, &j.callsites);
            }
        }
        page_end(&mut out);
        out
    }
}

/// A job's retained bytes by the run that allocated them, as a bar chart (plain `div`s, no
/// script): one bar per run of the ledger's window that still holds something, oldest first,
/// after a grey bar for older runs; each bar's tooltip gives the run and its figures.
fn runs_chart(out: &mut String, j: &JobReport) {
    if j.retained_by_run.is_empty() && j.retained_older.is_zero() {
        return;
    }
    let max = j
        .retained_by_run
        .iter()
        .map(|r| r.retained.bytes)
        .chain([j.retained_older.bytes])
        .max()
        .unwrap_or(0)
        .max(1);
    let pct = |b: u64| (b as f64 * 100.0 / max as f64).max(1.0);
    out.push_str("<div class=\"runs\">");
    if !j.retained_older.is_zero() {
        let _ = write!(
            out,
            "<div class=\"older\" style=\"height:{:.1}%\" title=\"older runs: {} in {} objects\"></div>",
            pct(j.retained_older.bytes),
            human_bytes(j.retained_older.bytes),
            grouped(j.retained_older.objects),
        );
    }
    for r in &j.retained_by_run {
        let _ = write!(
            out,
            "<div style=\"height:{:.1}%\" title=\"run {}: {} in {} objects\"></div>",
            pct(r.retained.bytes),
            r.run,
            human_bytes(r.retained.bytes),
            grouped(r.retained.objects),
        );
    }
    let _ = writeln!(
        out,
        "</div><p class=\"note\">Retained by the run that allocated it (of the last {} runs, \
         newest right; grey: older runs): {}</p>",
        crate::registry::LEDGER_RUNS,
        esc(&super::text::age_text(j)),
    );
}

#[cfg(feature = "chart")]
fn timeline_chart(out: &mut String, r: &Report) {
    match r.timeline_svg(&super::TimelineOptions::default()) {
        Ok(svg) => {
            let _ = writeln!(
                out,
                "<div class=\"chart\"><img alt=\"memory over time\" \
                 src=\"data:image/svg+xml;base64,{}\"></div>",
                base64(svg.as_bytes())
            );
        }
        Err(e) => {
            let _ = writeln!(out, "<p>No chart: {}</p>", esc(&e.to_string()));
        }
    }
}

#[cfg(not(feature = "chart"))]
fn timeline_chart(out: &mut String, r: &Report) {
    let _ = writeln!(
        out,
        "<p class=\"note\">{} samples and {} run events; the chart needs allocscope's \
         <code>chart</code> feature.</p>",
        r.timeline.len(),
        r.run_events.len()
    );
}

/// Standard base64 (for the chart's `data:` URL).
#[cfg_attr(not(feature = "chart"), allow(dead_code))]
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn change_td(bytes: i128) -> String {
    let class = match bytes.signum() {
        1 => "grow",
        -1 => "shrink",
        _ => "",
    };
    let sign = if bytes > 0 {
        "+"
    } else if bytes < 0 {
        "-"
    } else {
        ""
    };
    format!(
        "<td class=\"{class}\" data-v=\"{bytes}\">{sign}{}</td>",
        human_bytes(u64::try_from(bytes.unsigned_abs()).unwrap_or(u64::MAX))
    )
}

impl ReportDiff {
    /// The difference between two reports as one self-contained HTML page: per job, what
    /// grew or shrank (sortable), the differential flamegraph (red: grew, blue: shrank), and
    /// each job's callsites that changed most. Written by
    /// `allocscope html OLD.json NEW.json -o OUT.html`.
    pub fn to_html(&self) -> String {
        crate::thread::untracked(|| self.to_html_inner())
    }

    fn to_html_inner(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        page_start(&mut out, "allocscope diff");
        let _ = writeln!(
            out,
            "<h1>allocscope diff</h1>\n<p class=\"meta\">From {} to {} · live heap {} → {}</p>",
            Utc::from_unix_ms(self.older_timestamp_unix_ms),
            Utc::from_unix_ms(self.newer_timestamp_unix_ms),
            human_bytes(self.older_live.bytes),
            human_bytes(self.newer_live.bytes),
        );
        flame_section(
            &mut out,
            "Change in retained bytes (red: grew, blue: shrank)",
            self.flamegraph_svg(&FlameOptions::default()),
        );
        out.push_str(
            "<h2>Jobs</h2>\n<table id=\"jobs\" class=\"sortable\"><thead><tr>\
             <th data-key=\"name\">Job</th><th data-key=\"runs\">Runs (old → new)</th>\
             <th data-key=\"old\">Retained (old)</th><th data-key=\"new\">Retained (new)</th>\
             <th data-key=\"retained\">Retained change</th>\
             <th data-key=\"allocated\">Allocated change</th></tr></thead><tbody>\n",
        );
        for (i, j) in self.jobs.iter().enumerate() {
            let _ = writeln!(
                out,
                "<tr><td class=\"name\"><a href=\"#job-{i}\">{}</a></td>\
                 <td data-v=\"{}\">{} → {}</td>{}{}{}{}</tr>",
                esc(&j.name),
                j.newer_runs,
                grouped(j.older_runs),
                grouped(j.newer_runs),
                bytes_td(j.older_retained.bytes),
                bytes_td(j.newer_retained.bytes),
                change_td(j.retained_change.bytes),
                change_td(j.allocated_change.bytes),
            );
        }
        out.push_str("</tbody></table>\n<h2>Callsites that changed, by job</h2>\n");
        for (i, j) in self.jobs.iter().enumerate() {
            let _ = writeln!(out, "<h3 id=\"job-{i}\">{}</h3>", esc(&j.name));
            if j.callsites.is_empty() {
                out.push_str("<p class=\"note\">No callsites.</p>\n");
                continue;
            }
            out.push_str(
                "<table class=\"sortable\"><thead><tr><th>Retained change</th>\
                 <th>Retained (new)</th><th>Allocated change</th><th>Stack (innermost first)</th>\
                 </tr></thead><tbody>\n",
            );
            for c in j.callsites.iter().take(CALLSITES_PER_JOB) {
                let _ = writeln!(
                    out,
                    "<tr>{}{}{}{}</tr>",
                    change_td(c.retained_change.bytes),
                    bytes_td(c.newer_retained.bytes),
                    change_td(c.allocated_change.bytes),
                    stack_cell(&c.frames)
                );
            }
            out.push_str("</tbody></table>\n");
        }
        page_end(&mut out);
        out
    }
}

/// The RSS breakdown as cards (one per part, adding up to RSS), or one card saying it is
/// unavailable.
fn breakdown_cards(p: &ProcessMemory) -> String {
    let Some(b) = &p.breakdown else {
        return if p.allocator.is_empty() || p.allocator == "glibc malloc" {
            String::new()
        } else {
            "<div class=\"card\" data-part=\"unavailable\">RSS breakdown<b>unavailable</b></div>"
                .to_string()
        };
    };
    let labels = [
        "Rust heap",
        "C heap (malloc outside Rust)",
        "Freed, not returned",
        "Tracker (with headers)",
        "File-backed",
        "Thread stacks",
        "Other anonymous",
    ];
    let mut out = String::new();
    for ((part, v), label) in b.parts().into_iter().zip(labels) {
        let _ = write!(
            out,
            "<div class=\"card\" data-part=\"{part}\">RSS: {label}<b>{}</b></div>",
            human_bytes(v)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_that_differ_below_the_shown_frames_are_one_row() {
        let site = |deep: &str, objects: u64| {
            let mut frames: Vec<Frame> = (0..12)
                .map(|i| Frame::new(format!("app::f{i}"), Some("src/app.rs"), Some(i)))
                .collect();
            frames[10] = Frame::new(deep, None, None);
            CallsiteReport {
                scope: vec!["job".into()],
                frames: frames.into(),
                allocated: crate::model::Usage {
                    objects,
                    bytes: objects * 8,
                },
                retained: crate::model::Usage {
                    objects,
                    bytes: objects * 8,
                },
                peak_bytes: 0,
                estimated: false,
                retained_by_age: Default::default(),
            }
        };
        let mut out = String::new();
        callsite_rows(&mut out, &[site("tokio::a", 298), site("tokio::b", 2)]);
        assert_eq!(out.matches("<tr><td").count(), 1, "{out}");
        assert!(
            out.contains("(2 stacks that differ below these frames)"),
            "{out}"
        );
        assert!(out.contains("data-v=\"300\""), "{out}");
        // Shown frames that differ: two rows.
        let mut other = site("tokio::a", 1);
        other.frames[0] = Frame::new("app::elsewhere", None, None);
        let mut out = String::new();
        callsite_rows(&mut out, &[site("tokio::a", 298), other]);
        assert_eq!(out.matches("<tr><td").count(), 2, "{out}");
    }

    #[test]
    fn escaping_and_helpers() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt;&amp;&quot;"
        );
        // Characters XML 1.0 forbids become visible text, so the page stays well-formed.
        assert_eq!(esc("a\u{0}b\u{1b}\u{fffe}"), "a\\u{0}b\\u{1b}\\u{fffe}");
        assert_eq!(Utc::from_unix_ms(0).to_string(), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            Utc::from_unix_ms(1_700_000_000_000).to_string(),
            "2023-11-14 22:13:20 UTC"
        );
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn estimated_and_exact_callsites_are_told_apart() {
        // Distinct frames: rows that would read the same are merged into one.
        let site = |bytes: u64, estimated: bool| CallsiteReport {
            scope: vec!["job".into()],
            frames: vec![Frame::new(format!("f{bytes}"), None, None)].into(),
            allocated: crate::model::Usage { objects: 3, bytes },
            retained: crate::model::Usage { objects: 3, bytes },
            peak_bytes: bytes,
            estimated,
            retained_by_age: Default::default(),
        };
        let mut out = String::new();
        callsite_rows(&mut out, &[site(512 << 10, true), site(2048, false)]);
        assert!(
            out.contains(
                "<td data-v=\"524288\" class=\"est\" title=\"estimate from sampled stacks\">~512 KiB</td>"
            ),
            "{out}"
        );
        assert!(out.contains("class=\"est\" title=\"estimate from sampled stacks\">~3</td>"));
        assert!(out.contains("<td data-v=\"2048\">2.0 KiB</td>"), "{out}");
        assert!(
            out.contains("~ marks estimates from sampled stacks"),
            "{out}"
        );
        let mut exact = String::new();
        callsite_rows(&mut exact, &[site(2048, false)]);
        assert!(
            !exact.contains('~') && !exact.contains("class=\"est\""),
            "{exact}"
        );
    }

    #[test]
    fn files_are_shortened_as_the_text_report_does() {
        let frame = Frame {
            function: "app::jobs::load".into(),
            file: Some("/home/u/app/src/jobs/load.rs".into()),
            line: Some(42),
        };
        let cell = stack_cell(std::slice::from_ref(&frame));
        assert!(cell.contains(">jobs/load.rs:42</span>"), "{cell}");
        // The full path stays in the tooltip.
        assert!(cell.contains("/home/u/app/src/jobs/load.rs:42\""), "{cell}");
        let text = crate::report::text::stack_text(std::slice::from_ref(&frame));
        assert_eq!(text, "app::jobs::load (jobs/load.rs:42)");
    }
}
