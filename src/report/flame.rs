//! Folded stacks and flamegraph SVGs (via inferno) of retained or allocated memory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
}

impl Default for FlameOptions {
    /// All jobs, retained bytes, job names as root frames.
    fn default() -> Self {
        FlameOptions {
            job: None,
            metric: FlameMetric::RetainedBytes,
            title: None,
            job_root: true,
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
/// outermost first.
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
    parts.extend(frames.iter().rev().map(|f| clean(&f.function)));
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
            if self.callsites.iter().any(|c| c.estimated) {
                options.subtitle = Some("sampled stacks: widths are estimates".to_string());
            }
            let mut svg = Vec::new();
            inferno::flamegraph::from_lines(&mut options, folded.lines(), &mut svg)
                .map_err(|e| Error::Render(Detail::with_source(format!("flamegraph: {e}"), e)))?;
            String::from_utf8(svg)
                .map_err(|e| Error::Render(Detail::with_source(format!("flamegraph: {e}"), e)))
        })
    }
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
