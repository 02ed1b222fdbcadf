//! Folded stacks and flamegraph SVGs (via inferno) of retained or allocated memory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::labels::{fold_std, short_name};
use super::{CallsiteReport, Frame, Report};
use crate::error::Detail;
use crate::Error;

/// What a flamegraph's widths measure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlameMetric {
    /// Bytes still live (the default: "what does the job hold?").
    #[default]
    RetainedBytes,
    /// Objects still live.
    RetainedObjects,
    /// Bytes allocated in total.
    AllocatedBytes,
    /// Objects allocated in total.
    AllocatedObjects,
}

impl FlameMetric {
    /// The metric's name as used on the command line (`retained-bytes`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FlameMetric::RetainedBytes => "retained-bytes",
            FlameMetric::RetainedObjects => "retained-objects",
            FlameMetric::AllocatedBytes => "allocated-bytes",
            FlameMetric::AllocatedObjects => "allocated-objects",
        }
    }

    /// Parses a name as produced by [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Result<FlameMetric, Error> {
        Ok(match s {
            "retained-bytes" => FlameMetric::RetainedBytes,
            "retained-objects" => FlameMetric::RetainedObjects,
            "allocated-bytes" => FlameMetric::AllocatedBytes,
            "allocated-objects" => FlameMetric::AllocatedObjects,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unknown metric {other:?}: expected retained-bytes, retained-objects, \
                     allocated-bytes or allocated-objects"
                )))
            }
        })
    }

    fn value(self, c: &CallsiteReport) -> u64 {
        match self {
            FlameMetric::RetainedBytes => c.retained.bytes,
            FlameMetric::RetainedObjects => c.retained.objects,
            FlameMetric::AllocatedBytes => c.allocated.bytes,
            FlameMetric::AllocatedObjects => c.allocated.objects,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            FlameMetric::RetainedBytes | FlameMetric::AllocatedBytes => "bytes",
            _ => "objects",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            FlameMetric::RetainedBytes => "retained bytes",
            FlameMetric::RetainedObjects => "retained objects",
            FlameMetric::AllocatedBytes => "allocated bytes",
            FlameMetric::AllocatedObjects => "allocated objects",
        }
    }
}

/// What to put in folded stacks and flamegraphs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlameOptions {
    /// One job (its callsites, nested jobs included), or `None` for every scope and unscoped.
    pub job: Option<String>,
    /// What widths measure.
    pub metric: FlameMetric,
    /// The SVG title (`None`: derived from the job and metric).
    pub title: Option<String>,
    /// Whether scopes (job names) become the root frames, so one graph compares jobs.
    pub job_root: bool,
    /// Keep standard-library frames (`std`, `core`, `alloc`) that sit between two user frames
    /// (default `false`: they are folded away, "just my code"; the CLI's `--keep-std`). Library
    /// frames at either end of a stack are always kept.
    pub keep_std: bool,
    /// Label SVG frames with full function names (default `false`: generic arguments are
    /// stripped from labels; the tooltip always has the full name). Folded stacks always have
    /// full names.
    pub full_names: bool,
}

impl Default for FlameOptions {
    /// All jobs, retained bytes, job names as root frames.
    fn default() -> Self {
        FlameOptions {
            job: None,
            metric: FlameMetric::RetainedBytes,
            title: None,
            job_root: true,
            keep_std: false,
            full_names: false,
        }
    }
}

impl FlameOptions {
    /// Options for one job's graph.
    pub fn job(name: &str) -> Self {
        FlameOptions {
            job: Some(name.to_string()),
            ..Self::default()
        }
    }

    /// The same options with another metric.
    pub fn metric(mut self, metric: FlameMetric) -> Self {
        self.metric = metric;
        self
    }
}

/// A frame name safe for the folded format (`;` separates frames, the last space the count).
fn clean(name: &str) -> String {
    name.replace(';', ":").replace(['\n', '\r'], " ")
}

/// One folded stack, `root;caller;callee`: the scope's job names first (from `opts.job` on,
/// when set; enclosing jobs are not that graph's concern) if `opts.job_root`, then the frames
/// outermost first (library frames between user frames folded unless `opts.keep_std`).
pub(crate) fn stack_line(scope: &[String], frames: &[Frame], opts: &FlameOptions) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(frames.len() + 2);
    if opts.job_root {
        let scope = match &opts.job {
            Some(name) => match scope.iter().position(|s| s == name) {
                Some(i) => &scope[i..],
                None => scope,
            },
            None => scope,
        };
        if scope.is_empty() {
            parts.push("(unscoped)".to_string());
        } else {
            parts.extend(scope.iter().map(|s| clean(s)));
        }
    }
    if opts.keep_std {
        parts.extend(frames.iter().rev().map(|f| clean(&f.function)));
    } else {
        parts.extend(fold_std(frames).iter().rev().map(|f| clean(&f.function)));
    }
    if parts.is_empty() {
        parts.push("(no frames)".to_string());
    }
    parts.join(";")
}

impl Report {
    /// Folded stacks (`root;caller;callee weight`, one line per stack, sorted), the input
    /// format of flamegraph tools. Lines with zero weight are left out.
    pub fn folded(&self, opts: &FlameOptions) -> String {
        let sites: &[CallsiteReport] = match &opts.job {
            Some(name) => self.job(name).map_or(&[], |j| j.callsites.as_slice()),
            None => &self.callsites,
        };
        let mut lines: BTreeMap<String, u64> = BTreeMap::new();
        for c in sites {
            let weight = opts.metric.value(c);
            if weight == 0 {
                continue;
            }
            *lines
                .entry(stack_line(&c.scope, &c.frames, opts))
                .or_insert(0) += weight;
        }
        let mut out = String::new();
        for (stack, weight) in lines {
            out.push_str(&stack);
            out.push(' ');
            out.push_str(&weight.to_string());
            out.push('\n');
        }
        out
    }

    /// A flamegraph SVG of [`folded`](Self::folded), rendered by inferno with its memory
    /// palette. An empty profile gives a valid SVG saying there is nothing to show.
    pub fn flamegraph_svg(&self, opts: &FlameOptions) -> Result<String, Error> {
        crate::thread::untracked(|| {
            let folded = self.folded(opts);
            let title = opts.title.clone().unwrap_or_else(|| match &opts.job {
                Some(job) => format!("{job}: {}", opts.metric.describe()),
                None => format!("All jobs: {}", opts.metric.describe()),
            });
            if folded.is_empty() {
                return Ok(empty_svg(&title, opts));
            }
            let mut options = inferno::flamegraph::Options::default();
            options.title = title;
            options.count_name = opts.metric.unit().to_string();
            options.colors = inferno::flamegraph::color::Palette::Basic(
                inferno::flamegraph::color::BasicPalette::Mem,
            );
            options.deterministic = true;
            // Per callsite, not per mode: the mode can change while the program runs.
            let estimated = self.callsites.iter().filter(|c| c.estimated).count();
            if estimated == self.callsites.len() && estimated > 0 {
                options.subtitle = Some("sampled stacks: widths are estimates".to_string());
            } else if estimated > 0 {
                options.subtitle = Some(format!(
                    "{estimated} of {} callsites from sampled stacks: their widths are \
                     estimates, the others exact",
                    self.callsites.len()
                ));
            }
            render(&folded, &mut options, opts, "flamegraph")
        })
    }
}

/// Renders folded stacks with inferno, then gives frames short labels (unless
/// `opts.full_names`): each function frame gets a `data-label` with its [`short_name`], its
/// static text is rewritten with it (truncated to the same width), and inferno's script labels
/// frames from `data-label` when it redraws (zoom, resize). Titles (tooltips) keep full names.
pub(crate) fn render(
    folded: &str,
    options: &mut inferno::flamegraph::Options,
    opts: &FlameOptions,
    what: &str,
) -> Result<String, Error> {
    if !opts.full_names {
        let mut attrs = String::new();
        let mut seen = std::collections::HashSet::new();
        for line in folded.lines() {
            let stack = line.rsplit_once(' ').map_or(line, |(s, _)| s);
            for frame in stack.split(';') {
                if frame.contains(['"', '\t']) || !seen.insert(frame) {
                    continue;
                }
                let short = short_name(frame);
                if short != frame {
                    attrs.push_str(&format!("{frame}\tg_extra=data-label=\"{short}\"\n"));
                }
            }
        }
        if !attrs.is_empty() {
            options.func_frameattrs =
                inferno::flamegraph::FuncFrameAttrsMap::from_reader(attrs.as_bytes())
                    .map_err(|e| Error::Render(Detail::with_source(format!("{what}: {e}"), e)))?;
        }
    }
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(options, folded.lines(), &mut svg)
        .map_err(|e| Error::Render(Detail::with_source(format!("{what}: {e}"), e)))?;
    let svg = String::from_utf8(svg)
        .map_err(|e| Error::Render(Detail::with_source(format!("{what}: {e}"), e)))?;
    Ok(if opts.full_names {
        svg
    } else {
        short_labels(&svg)
    })
}

/// inferno's script line that derives a frame's label from its title.
const LABEL_FROM_TITLE: &str =
    r#"var txt = find_child(e, "title").textContent.replace(/\([^(]*\)$/,"");"#;

/// See [`render`]: static texts of frames with a `data-label` rewritten, and the script taught
/// to prefer `data-label`.
fn short_labels(svg: &str) -> String {
    let svg = svg.replacen(
        LABEL_FROM_TITLE,
        r#"var txt = e.getAttribute("data-label") || find_child(e, "title").textContent.replace(/\([^(]*\)$/,"");"#,
        1,
    );
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg.as_str();
    const MARK: &str = "data-label=\"";
    while let Some(at) = rest.find(MARK) {
        let start = at + MARK.len();
        let Some(len) = rest[start..].find('"') else {
            break;
        };
        let label = &rest[start..start + len];
        // This frame's <text>…</text>, before the next frame's group.
        let end_of_group = rest[start..].find("</g>").map_or(rest.len(), |n| start + n);
        let text_open = rest[start..end_of_group].find("<text").and_then(|n| {
            rest[start + n..end_of_group]
                .find('>')
                .map(|m| start + n + m + 1)
        });
        let Some(open) = text_open else {
            out.push_str(&rest[..start]);
            rest = &rest[start..];
            continue;
        };
        let Some(close) = rest[open..end_of_group].find("</text>").map(|n| open + n) else {
            out.push_str(&rest[..start]);
            rest = &rest[start..];
            continue;
        };
        let old = unescape(&rest[open..close]);
        let label = unescape(label);
        let new = if old.is_empty() {
            String::new()
        } else if old.ends_with("..") {
            let fit = old.chars().count();
            if label.chars().count() < fit {
                label
            } else {
                let keep: String = label.chars().take(fit.saturating_sub(2)).collect();
                format!("{keep}..")
            }
        } else {
            label
        };
        out.push_str(&rest[..open]);
        out.push_str(&xml_escape(&new));
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn empty_svg(title: &str, opts: &FlameOptions) -> String {
    let what = match &opts.job {
        Some(job) => format!("job {job:?} has no {}", opts.metric.describe()),
        None => format!("no {} recorded", opts.metric.describe()),
    };
    let hint = "callsites need stacks: StackMode::Every or Sampled (ALLOCSCOPE_STACKS)";
    format!(
        r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="1200" height="120" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="100%" height="100%" fill="rgb(240,240,240)"/>
<text x="600" y="30" font-size="17" font-family="Verdana" text-anchor="middle">{}</text>
<text x="600" y="65" font-size="14" font-family="Verdana" text-anchor="middle">Nothing to show: {}.</text>
<text x="600" y="95" font-size="12" font-family="Verdana" text-anchor="middle" fill="rgb(100,100,100)">{}</text>
</svg>
"#,
        xml_escape(title),
        xml_escape(&what),
        xml_escape(hint),
    )
}
