//! The memory-over-time chart: [`Report::timeline_svg`].
//!
//! Drawn with `plotters` (SVG backend only): RSS and live-heap lines, the live bytes of the
//! jobs that held the most, and a marker per run event. plotters has no way to attach a
//! `<title>` (hover text) to an element, so the hover targets of the run markers are added
//! after plotters' output, one transparent `<rect>` with a `<title>` per marker, at the pixel
//! positions plotters' own coordinate mapping gives. All text that comes from the report (job
//! names, the title) is made XML-safe first: characters XML 1.0 forbids become U+FFFD, and
//! plotters escapes `& < > " '`.
//!
//! Rules: the x-axis spans the samples (first to last) when there are any, so the lines run
//! edge to edge; runs that finished before the first or after the last sample are drawn at
//! that edge in their own colour, counted in the legend and said to be outside in their hover
//! text; with no samples the axis spans the runs. The legend is a band below the plot: it never
//! covers data.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::{RunEvent, TimelineSample};
use crate::error::Error;
use crate::report::escape::{job_display_name, xml_escape, xml_safe};
use crate::report::text::human_bytes;
use crate::report::Report;

/// Options for [`Report::timeline_svg`].
#[derive(Clone, Debug)]
pub struct TimelineOptions {
    /// Width in pixels (default 1200).
    pub width: u32,
    /// Height in pixels (default 400).
    pub height: u32,
    /// The chart's title (default: "Memory over time").
    pub title: Option<String>,
    /// Jobs drawn as their own line: those with the highest live bytes in any sample
    /// (default 5, at most [`TOP_JOBS`](crate::timeline::TOP_JOBS) per sample are recorded).
    pub top_jobs: usize,
    /// Draw a marker per run event (default true).
    pub run_markers: bool,
}

impl Default for TimelineOptions {
    fn default() -> Self {
        TimelineOptions {
            width: 1200,
            height: 400,
            title: None,
            top_jobs: 5,
            run_markers: true,
        }
    }
}

/// The byte unit that keeps the axis numbers short.
fn unit_for(max: f64) -> (f64, &'static str) {
    const UNITS: [(f64, &str); 4] = [
        (1_099_511_627_776.0, "TiB"),
        (1_073_741_824.0, "GiB"),
        (1_048_576.0, "MiB"),
        (1024.0, "KiB"),
    ];
    UNITS
        .iter()
        .copied()
        .find(|&(u, _)| max >= 2.0 * u)
        .unwrap_or((1.0, "B"))
}

/// The time unit for a span in seconds.
fn time_unit(span_s: f64) -> (f64, &'static str) {
    if span_s >= 3.0 * 3600.0 {
        (3600.0, "h")
    } else if span_s >= 180.0 {
        (60.0, "min")
    } else if span_s >= 3.0 {
        (1.0, "s")
    } else {
        (0.001, "ms")
    }
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
];
const RSS_COLOR: RGBColor = RGBColor(0xd6, 0x27, 0x28);
/// RSS_COLOR at 45 % on white.
const NOT_RETURNED_COLOR: RGBColor = RGBColor(0xee, 0xa8, 0xa9);
const MARKER_COLOR: RGBColor = RGBColor(0x55, 0x55, 0x55);
const OUTSIDE_COLOR: RGBColor = RGBColor(0x00, 0x8b, 0x8b);
const HEAP_COLOR: RGBColor = RGBColor(0x33, 0x33, 0x33);

impl Report {
    /// The memory-over-time chart as an SVG document: RSS and live heap over time, the live
    /// bytes of the jobs that held the most, and a marker per run (hover shows the job, run,
    /// duration, allocated, peak and retained bytes). Axes have units; a legend names the
    /// lines. Feature `chart`.
    ///
    /// Fails (with a message saying how to get one) when the report has neither timeline
    /// samples nor run events.
    pub fn timeline_svg(&self, opts: &TimelineOptions) -> Result<String, Error> {
        crate::thread::untracked(|| self.timeline_svg_inner(opts))
    }

    fn timeline_svg_inner(&self, opts: &TimelineOptions) -> Result<String, Error> {
        let samples = &self.timeline;
        let events: &[RunEvent] = if opts.run_markers {
            &self.run_events
        } else {
            &[]
        };
        if samples.is_empty() && events.is_empty() {
            return Err(Error::Render(
                "the report has no timeline samples or run events (start the sampler with \
                 allocscope::timeline::start or ALLOCSCOPE_TIMELINE=1s before taking the report)"
                    .into(),
            ));
        }
        let (w, h) = (
            opts.width.clamp(300, 10_000),
            opts.height.clamp(200, 10_000),
        );
        // The x-axis spans the samples when there are any (the lines then run edge to edge);
        // run events only when there are none.
        let (t0, t1) = match (samples.first(), samples.last()) {
            (Some(_), Some(_)) => (
                samples.iter().map(|s| s.unix_ms).min().unwrap_or(0),
                samples.iter().map(|s| s.unix_ms).max().unwrap_or(0),
            ),
            _ => (
                events.iter().map(|e| e.start_unix_ms).min().unwrap_or(0),
                events.iter().map(|e| e.finish_unix_ms).max().unwrap_or(0),
            ),
        };
        let t1 = t1.max(t0 + 1);
        // Runs that finished outside the sampled range: drawn at the edge they are beyond.
        let before = events.iter().filter(|e| e.finish_unix_ms < t0).count();
        let after = events.iter().filter(|e| e.finish_unix_ms > t1).count();
        let span_s = (t1 - t0) as f64 / 1000.0;
        let (tdiv, tunit) = time_unit(span_s);
        let x_of = |ms: u64| (ms.clamp(t0, t1) - t0) as f64 / 1000.0 / tdiv;
        let x_max = x_of(t1);

        // The jobs drawn as lines: highest live bytes in any sample.
        let mut job_max: Vec<(String, u64)> = Vec::new();
        for s in samples {
            for j in &s.top_jobs {
                match job_max.iter_mut().find(|(n, _)| *n == j.job) {
                    Some((_, m)) => *m = (*m).max(j.live_bytes),
                    None => job_max.push((j.job.to_string(), j.live_bytes)),
                }
            }
        }
        job_max.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        job_max.truncate(opts.top_jobs.min(PALETTE.len()));

        let y_max_raw = samples
            .iter()
            .map(|s| s.rss_bytes.max(s.heap_live_bytes))
            .chain(events.iter().map(|e| e.peak_bytes))
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let (ydiv, yunit) = unit_for(y_max_raw);
        let y_max = y_max_raw / ydiv * 1.08;
        let title = xml_safe(opts.title.as_deref().unwrap_or("Memory over time"));
        let render =
            |e: &dyn std::fmt::Display| Error::Render(format!("timeline chart: {e}").into());

        // The legend: its own band below the plot, never over the data.
        let mut legend: Vec<(String, RGBColor, u32, bool)> = Vec::new();
        if samples.iter().any(|s| s.rss_bytes > 0) {
            legend.push(("RSS".into(), RSS_COLOR, 2, false));
        }
        if !samples.is_empty() {
            legend.push(("live heap (tracked)".into(), HEAP_COLOR, 2, false));
        }
        if samples.iter().any(|s| s.not_returned_bytes > 0) {
            legend.push((
                "freed, not returned to the OS".into(),
                NOT_RETURNED_COLOR,
                1,
                false,
            ));
        }
        for (i, (job, _)) in job_max.iter().enumerate() {
            legend.push((
                format!("job {}", xml_safe(&job_display_name(job))),
                PALETTE[i % PALETTE.len()],
                1,
                false,
            ));
        }
        if events.len() > before + after {
            legend.push(("run finished (hover: job)".into(), MARKER_COLOR, 1, true));
        }
        if before + after > 0 {
            legend.push((
                format!(
                    "runs outside the sampled range, at its edge: {before} before, {after} after"
                ),
                OUTSIDE_COLOR,
                3,
                true,
            ));
        }
        let entry_w = |label: &str| 40 + 13 * label.chars().count() as u32 / 2;
        let mut rows = 1u32;
        let mut x = 0u32;
        for (label, ..) in &legend {
            if x > 0 && x + entry_w(label) > w.saturating_sub(24) {
                rows += 1;
                x = 0;
            }
            x += entry_w(label);
        }
        let legend_h = (rows * 18 + 10).min(h / 2);

        let mut svg = String::new();
        let mut hover: Vec<(i32, i32, i32, i32, String)> = Vec::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| render(&e))?;
            let (plot_area, legend_area) = root.split_vertically(h - legend_h);
            let mut chart = ChartBuilder::on(&plot_area)
                .caption(&title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(38)
                .y_label_area_size(64)
                .build_cartesian_2d(0f64..x_max.max(1e-9), 0f64..y_max.max(1e-9))
                .map_err(|e| render(&e))?;
            chart
                .configure_mesh()
                .x_desc(format!("time since {} ({tunit})", clock(t0)))
                .y_desc(format!("memory ({yunit})"))
                .x_label_formatter(&|v| trim_num(*v))
                .y_label_formatter(&|v| trim_num(*v))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(|e| render(&e))?;

            let pts = |f: &dyn Fn(&TimelineSample) -> u64| -> Vec<(f64, f64)> {
                samples
                    .iter()
                    .map(|s| (x_of(s.unix_ms), f(s) as f64 / ydiv))
                    .collect()
            };
            if !samples.is_empty() {
                if samples.iter().any(|s| s.rss_bytes > 0) {
                    chart
                        .draw_series(LineSeries::new(
                            pts(&|s| s.rss_bytes),
                            RSS_COLOR.stroke_width(2),
                        ))
                        .map_err(|e| render(&e))?;
                }
                chart
                    .draw_series(LineSeries::new(
                        pts(&|s| s.heap_live_bytes),
                        HEAP_COLOR.stroke_width(2),
                    ))
                    .map_err(|e| render(&e))?;
                if samples.iter().any(|s| s.not_returned_bytes > 0) {
                    chart
                        .draw_series(LineSeries::new(
                            pts(&|s| s.not_returned_bytes),
                            NOT_RETURNED_COLOR,
                        ))
                        .map_err(|e| render(&e))?;
                }
            }
            for (i, (job, _)) in job_max.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                // A job is only known in samples where it was among the top jobs: draw each
                // stretch of consecutive samples as its own line.
                let mut stretches: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
                for s in samples {
                    match s.top_jobs.iter().find(|j| &j.job == job) {
                        Some(j) => stretches
                            .last_mut()
                            .expect("never empty")
                            .push((x_of(s.unix_ms), j.live_bytes as f64 / ydiv)),
                        None => {
                            if !stretches.last().expect("never empty").is_empty() {
                                stretches.push(Vec::new());
                            }
                        }
                    }
                }
                for st in stretches.into_iter().filter(|s| !s.is_empty()) {
                    chart
                        .draw_series(LineSeries::new(st, color.stroke_width(1)))
                        .map_err(|e| render(&e))?;
                }
            }
            if !events.is_empty() {
                let tick = y_max * 0.04;
                let outside = |e: &RunEvent| e.finish_unix_ms < t0 || e.finish_unix_ms > t1;
                chart
                    .draw_series(events.iter().map(|e| {
                        let x = x_of(e.finish_unix_ms);
                        if outside(e) {
                            PathElement::new(
                                vec![(x, 0.0), (x, tick * 2.0)],
                                OUTSIDE_COLOR.stroke_width(3),
                            )
                        } else {
                            PathElement::new(vec![(x, 0.0), (x, tick)], MARKER_COLOR.mix(0.6))
                        }
                    }))
                    .map_err(|e| render(&e))?;
                for e in events {
                    let (xs, _) = chart.backend_coord(&(x_of(e.start_unix_ms), 0.0));
                    let (xf, yb) = chart.backend_coord(&(x_of(e.finish_unix_ms), 0.0));
                    let (_, yt) = chart.backend_coord(&(0.0, tick));
                    let where_ = if e.finish_unix_ms < t0 {
                        " (before the first sample)"
                    } else if e.finish_unix_ms > t1 {
                        " (after the last sample)"
                    } else {
                        ""
                    };
                    let text = format!(
                        "{} #{}: {} to {} ({:.3} s), allocated {} in {} objects, peak {}, \
                         retained at finish {}{}{where_}",
                        e.job,
                        e.run,
                        clock(e.start_unix_ms),
                        clock(e.finish_unix_ms),
                        e.duration_ns as f64 / 1e9,
                        human_bytes(e.allocated.bytes),
                        e.allocated.objects,
                        human_bytes(e.peak_bytes),
                        human_bytes(e.retained_at_finish.bytes),
                        if e.panicked { " (panicked)" } else { "" },
                    );
                    let x = xs.min(xf - 2);
                    hover.push((x, yt - 2, (xf - x + 2).max(4), (yb - yt + 4).max(6), text));
                }
            }
            // The legend band.
            let (mut lx, mut ly) = (12i32, 8i32);
            for (label, color, width, marker) in &legend {
                let ew = entry_w(label) as i32;
                if lx > 12 && lx + ew > w as i32 - 12 {
                    lx = 12;
                    ly += 18;
                }
                let swatch = if *marker {
                    PathElement::new(
                        vec![(lx + 9, ly + 2), (lx + 9, ly + 12)],
                        color.stroke_width(*width),
                    )
                } else {
                    PathElement::new(
                        vec![(lx, ly + 7), (lx + 20, ly + 7)],
                        color.stroke_width(*width),
                    )
                };
                legend_area.draw(&swatch).map_err(|e| render(&e))?;
                legend_area
                    .draw(&Text::new(
                        label.clone(),
                        (lx + 26, ly),
                        ("sans-serif", 13).into_font().color(&BLACK),
                    ))
                    .map_err(|e| render(&e))?;
                lx += ew;
            }
            root.present().map_err(|e| render(&e))?;
        }
        if !hover.is_empty() {
            let mut overlay = String::from("<g class=\"run-markers\">\n");
            for (x, y, w, h, text) in &hover {
                let _ = writeln!(
                    overlay,
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"#000\" \
                     fill-opacity=\"0\"><title>{}</title></rect>",
                    xml_escape(text)
                );
            }
            overlay.push_str("</g>\n");
            match svg.rfind("</svg>") {
                Some(end) => svg.insert_str(end, &overlay),
                None => return Err(Error::Render("timeline chart: no </svg> end tag".into())),
            }
        }
        Ok(svg)
    }
}

/// A number for an axis label: at most two decimals, no trailing zeros.
fn trim_num(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// A Unix time in milliseconds as UTC `HH:MM:SS.mmm`.
fn clock(unix_ms: u64) -> String {
    let t = crate::model::Utc::from_unix_ms(unix_ms);
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        t.hour, t.minute, t.second, t.millis
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(unit_for(300.0 * 1048576.0).1, "MiB");
        assert_eq!(unit_for(1.5 * 1048576.0).1, "KiB");
        assert_eq!(unit_for(10.0).1, "B");
        assert_eq!(time_unit(10.0).1, "s");
        assert_eq!(time_unit(1.0).1, "ms");
        assert_eq!(time_unit(600.0).1, "min");
        assert_eq!(trim_num(2.50), "2.5");
        assert_eq!(trim_num(3.0), "3");
        assert_eq!(clock(3_723_004), "01:02:03.004 UTC");
    }

    /// The x-axis spans the samples; runs beyond them are drawn at the edge and said to be
    /// outside; the legend is below the plot, never over it.
    #[test]
    fn axis_spans_the_samples_and_outside_runs_are_marked() {
        let mut r = crate::report::build::report();
        r.timeline = (0..11)
            .map(|i| TimelineSample {
                unix_ms: 100_000 + i * 1000,
                rss_bytes: 50 << 20,
                heap_live_bytes: 10 << 20,
                merged: 1,
                ..Default::default()
            })
            .collect();
        let run = |finish_ms: u64| RunEvent {
            job: "j".into(),
            run: 1,
            start_unix_ms: finish_ms - 10,
            finish_unix_ms: finish_ms,
            ..Default::default()
        };
        r.run_events = vec![run(50_000), run(105_000), run(200_000), run(300_000)];
        let svg = r.timeline_svg(&TimelineOptions::default()).unwrap();
        assert!(svg.contains("(s)"), "10 s of samples: seconds");
        assert!(
            svg.contains("runs outside the sampled range, at its edge: 1 before, 2 after"),
            "{svg}"
        );
        assert!(svg.contains("(before the first sample)</title>"));
        assert_eq!(svg.matches("(after the last sample)</title>").count(), 2);
        // The last axis label is the samples' end (10 s), not the last run's (200 s).
        assert!(!svg.contains(">200<") && !svg.contains(">190<"), "{svg}");
        // Legend text sits below the x-axis label.
        let y_of = |needle: &str| -> i32 {
            let at = svg.find(needle).unwrap_or_else(|| panic!("{needle}"));
            let tag = &svg[svg[..at].rfind("<text").unwrap()..at];
            let y = tag.split("y=\"").nth(1).unwrap();
            y[..y.find('"').unwrap()].parse().unwrap()
        };
        assert!(
            y_of(">\nRSS\n<") > y_of(">\ntime since"),
            "legend below the plot"
        );
    }
}
