//! Folded stacks and flamegraph SVGs (via inferno) of retained or allocated memory.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::escape::{frame_text, job_display_name, xml_escape, xml_safe, NO_FRAMES, UNSCOPED};
use super::labels::{fold_std, short_name};
use super::{CallsiteReport, Frame, Report};
use crate::error::Detail;
use crate::error::Error;

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

    pub(crate) fn value(self, c: &CallsiteReport) -> u64 {
        match self {
            FlameMetric::RetainedBytes => c.retained.bytes,
            FlameMetric::RetainedObjects => c.retained.objects,
            FlameMetric::AllocatedBytes => c.allocated.bytes,
            FlameMetric::AllocatedObjects => c.allocated.objects,
        }
    }

    pub(crate) fn unit(self) -> &'static str {
        match self {
            FlameMetric::RetainedBytes | FlameMetric::AllocatedBytes => "bytes",
            _ => "objects",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
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
    /// Whether memory allocated outside any scope is drawn (as the `(unscoped)` root) in the
    /// all-jobs graph. Default `true`. Turn it off (CLI: `--no-unscoped`) when start-up data,
    /// caches or libraries allocated outside any job dwarf the jobs, so that a job's leak is
    /// a sliver beside an unscoped tower: the graph's 100% is then the jobs' memory only. A
    /// one-job graph ([`job`](Self::job)) never has unscoped memory.
    pub include_unscoped: bool,
    /// Keep standard-library frames (`std`, `core`, `alloc`) that sit between two user frames
    /// (default `false`: they are folded away, "just my code"; the CLI's `--keep-std`). Library
    /// frames at either end of a stack are always kept.
    pub keep_std: bool,
    /// Draw only retained memory allocated at least this many runs ago (default 0: all),
    /// from each callsite's [`retained_by_age`](crate::CallsiteReport::retained_by_age): the
    /// buckets 0, 1, 2–3, 4–7, 8–15, 16+ whose every age is `min_age` or more (3 counts as 4).
    /// A job's old memory by stack — the leak's stacks — apart from the current run's working
    /// set. Applies to the retained metrics (allocated figures have no age); callsites
    /// without ages (stacks sampled before ages were kept, older files) draw nothing then.
    /// The CLI's `--min-age`, the live endpoint's `min_age=`.
    pub min_age: u64,
    /// Label SVG frames with full function names (default `false`: generic arguments are
    /// stripped from labels; the tooltip always has the full name). Folded stacks always have
    /// full names.
    pub full_names: bool,
}

impl Default for FlameOptions {
    /// All jobs and unscoped memory, retained bytes, job names as root frames.
    fn default() -> Self {
        FlameOptions {
            job: None,
            metric: FlameMetric::RetainedBytes,
            title: None,
            job_root: true,
            include_unscoped: true,
            keep_std: false,
            full_names: false,
            min_age: 0,
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

    /// The same options drawing only memory at least `runs` runs old (see
    /// [`min_age`](Self::min_age)).
    pub fn min_age(mut self, runs: u64) -> Self {
        self.min_age = runs;
        self
    }

    /// The same options without unscoped memory (see
    /// [`include_unscoped`](Self::include_unscoped)).
    pub fn without_unscoped(mut self) -> Self {
        self.include_unscoped = false;
        self
    }

    /// The youngest age drawn when [`min_age`](Self::min_age) selects old memory of a retained
    /// metric: the start of the first bucket it keeps.
    pub(crate) fn age_start(&self) -> Option<u64> {
        if self.min_age == 0
            || !matches!(
                self.metric,
                FlameMetric::RetainedBytes | FlameMetric::RetainedObjects
            )
        {
            return None;
        }
        Some(
            crate::report::CALLSITE_AGE_STARTS
                .iter()
                .copied()
                .find(|&s| s >= self.min_age)
                .unwrap_or(u64::MAX),
        )
    }

    /// A callsite's width in the graph: the metric, of old memory only with `min_age`.
    pub(crate) fn value(&self, c: &CallsiteReport) -> u64 {
        match (self.age_start(), self.metric) {
            (Some(_), FlameMetric::RetainedBytes) => c.retained_aged(self.min_age).bytes,
            (Some(_), FlameMetric::RetainedObjects) => c.retained_aged(self.min_age).objects,
            _ => self.metric.value(c),
        }
    }

    /// Whether a callsite of `scope` belongs in the graph.
    pub(crate) fn keeps(&self, scope: &[String]) -> bool {
        self.include_unscoped || !scope.is_empty()
    }

    /// The title: the one given (made XML-safe by the renderer), or the job and what widths
    /// measure (`prefix` before the metric: `"change in "` for diffs).
    pub(crate) fn title_or(&self, prefix: &str) -> String {
        let mut what = self.metric.describe().to_string();
        if let Some(start) = self.age_start() {
            what = format!("{what} allocated {start}+ runs ago");
        }
        self.title.clone().unwrap_or_else(|| match &self.job {
            Some(job) => format!("{}: {prefix}{what}", job_display_name(job)),
            None if !self.include_unscoped => {
                format!("All jobs (unscoped left out): {prefix}{what}")
            }
            None => format!("All jobs: {prefix}{what}"),
        })
    }
}

/// One folded stack, `root;caller;callee`: the scope's job names first (from `opts.job` on,
/// when set; enclosing jobs are not that graph's concern) if `opts.job_root`, then the frames
/// outermost first (library frames between user frames folded unless `opts.keep_std`). Job
/// names go through [`job_display_name`] (so a job named `(unscoped)` or `a;b` stays
/// distinct), function names through [`frame_text`].
pub(crate) fn stack_line(scope: &[String], frames: &[Frame], opts: &FlameOptions) -> String {
    let mut parts: Vec<Cow<'_, str>> = Vec::with_capacity(frames.len() + 2);
    if opts.job_root {
        let scope = match &opts.job {
            Some(name) => match scope.iter().position(|s| s == name) {
                Some(i) => &scope[i..],
                None => scope,
            },
            None => scope,
        };
        if scope.is_empty() {
            parts.push(Cow::Borrowed(UNSCOPED));
        } else {
            parts.extend(scope.iter().map(|s| job_display_name(s)));
        }
    }
    if opts.keep_std {
        parts.extend(frames.iter().rev().map(|f| frame_text(&f.function)));
    } else {
        parts.extend(
            fold_std(frames)
                .into_iter()
                .rev()
                .map(|f| frame_text(&f.function)),
        );
    }
    if parts.is_empty() {
        parts.push(Cow::Borrowed(NO_FRAMES));
    }
    parts.join(";")
}

/// Largest figure handed to inferno: it sums line counts in a `u64`, subtracts them as
/// `isize` in differential graphs and multiplies deltas by 150 for colours. 2^53 keeps all of
/// that in range (and exact in the `f64` it draws with).
const INFERNO_MAX: u128 = 1 << 53;

/// The power of two to divide counts by so that `total` fits [`INFERNO_MAX`].
pub(crate) fn scale_shift(total: u128) -> u32 {
    let mut shift = 0;
    while total >> shift > INFERNO_MAX {
        shift += 1;
    }
    shift
}

/// Renders folded lines with inferno. Every count is divided by `2^shift` and inferno's
/// `factor` multiplies them back for the labels (estimates then, stated in the subtitle); the
/// title and frame names must already be XML-safe.
///
/// Labels: inferno cuts a name that does not fit on the left (`TextTruncateDirection::Left`),
/// so the function's own name stays in view, also when its script relabels frames from their
/// tooltips on zoom or resize. Unless `opts.full_names`, one post-processing step then gives
/// each function frame a short label: the frame carries `data-label` with its [`short_name`]
/// (through inferno's frame attributes), and [`short_labels`] rewrites the frame's static
/// text with it, cut to the width inferno gave the text. Inferno's script is left as it is;
/// titles (tooltips) keep full names.
pub(crate) fn render(
    mut options: inferno::flamegraph::Options<'_>,
    folded: &str,
    shift: u32,
    opts: &FlameOptions,
    what: &str,
) -> Result<String, Error> {
    if shift > 0 {
        options.factor = 2f64.powi(shift as i32);
        let note = "figures beyond 2^53 scaled: labels are rounded";
        options.subtitle = Some(match options.subtitle.take() {
            Some(s) => format!("{s}; {note}"),
            None => note.to_string(),
        });
    }
    options.title = xml_safe(&options.title).into_owned();
    options.text_truncate_direction = inferno::flamegraph::TextTruncateDirection::Left;
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
    inferno::flamegraph::from_lines(&mut options, folded.lines(), &mut svg)
        .map_err(|e| Error::Render(Detail::with_source(format!("{what}: {e}"), e)))?;
    let svg = String::from_utf8(svg)
        .map_err(|e| Error::Render(Detail::with_source(format!("{what}: {e}"), e)))?;
    Ok(if opts.full_names {
        svg
    } else {
        short_labels(&svg)
    })
}

impl Report {
    /// Folded stacks (`root;caller;callee weight`, one line per stack, sorted), the input
    /// format of flamegraph tools. Lines with zero weight are left out. Weights of stacks
    /// that fold alike are summed exactly (a sum can exceed `u64`). Job names are written
    /// as [`job_display_name`](crate::job_display_name) shows them; unscoped memory is the
    /// root `(unscoped)` unless [`FlameOptions::include_unscoped`] is off.
    pub fn folded(&self, opts: &FlameOptions) -> String {
        let mut out = String::new();
        for (stack, weight) in self.folded_lines(opts) {
            out.push_str(&stack);
            out.push(' ');
            out.push_str(&weight.to_string());
            out.push('\n');
        }
        out
    }

    fn folded_lines(&self, opts: &FlameOptions) -> BTreeMap<String, u128> {
        let sites: &[CallsiteReport] = match &opts.job {
            Some(name) => self.job(name).map_or(&[], |j| j.callsites.as_slice()),
            None => &self.callsites,
        };
        let mut lines: BTreeMap<String, u128> = BTreeMap::new();
        for c in sites.iter().filter(|c| opts.keeps(&c.scope)) {
            let weight = opts.value(c);
            if weight == 0 {
                continue;
            }
            *lines
                .entry(stack_line(&c.scope, &c.frames, opts))
                .or_insert(0) += u128::from(weight);
        }
        lines
    }

    /// A flamegraph SVG of [`folded`](Self::folded), rendered by inferno with its memory
    /// palette. An empty profile gives a valid SVG saying there is nothing to show. The SVG
    /// is well-formed XML whatever the job, frame and title text (see
    /// [`job_display_name`](crate::job_display_name)).
    pub fn flamegraph_svg(&self, opts: &FlameOptions) -> Result<String, Error> {
        crate::thread::untracked(|| {
            let lines = self.folded_lines(opts);
            let title = opts.title_or("");
            if lines.is_empty() {
                return Ok(empty_svg(&title, opts));
            }
            let shift = scale_shift(lines.values().sum());
            let mut folded = String::new();
            for (stack, weight) in &lines {
                let _ = writeln!(folded, "{stack} {}", weight >> shift);
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
            render(options, &folded, shift, opts, "flamegraph")
        })
    }
}

/// The post-processing step of [`render`]: the static text of each frame with a `data-label`
/// becomes that label, cut (on the left, as inferno cuts) to the characters inferno's text had.
/// Nothing else of the SVG changes.
fn short_labels(svg: &str) -> String {
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
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
        } else if old.starts_with("..") {
            let fit = old.chars().count();
            let len = label.chars().count();
            if len < fit {
                label
            } else {
                let keep: String = label.chars().skip(len + 2 - fit).collect();
                format!("..{keep}")
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

fn empty_svg(title: &str, opts: &FlameOptions) -> String {
    let what = match &opts.job {
        Some(job) => format!(
            "job {} has no {}",
            job_display_name(job),
            opts.metric.describe()
        ),
        None if !opts.include_unscoped => {
            format!("no {} recorded in any job", opts.metric.describe())
        }
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

#[cfg(test)]
mod tests {
    use super::short_labels;

    #[test]
    fn short_labels_replace_static_text_cut_on_the_left_as_inferno_cuts() {
        let g = |label: &str, text: &str| {
            format!(
                "<g data-label=\"{label}\"><title>t</title><rect/><text x=\"1\">{text}</text></g>"
            )
        };
        let svg = [
            g("Vec::push", "alloc::vec::Vec&lt;T&gt;::push"),
            g("HashMap::insert", "..V&gt;::insert"),
            g("HashMap::get", "..ap&lt;K,V&gt;::get"),
            g("f", ""),
        ]
        .concat();
        let out = short_labels(&svg);
        assert!(out.contains(">Vec::push</text>"), "{out}");
        // 12 characters were shown ("..V>::insert"): the label keeps its last 10.
        assert!(out.contains(">..ap::insert</text>"), "{out}");
        // A label shorter than what was shown is shown whole.
        assert!(out.contains(">HashMap::get</text>"), "{out}");
        assert!(
            out.contains("<text x=\"1\"></text>"),
            "too narrow stays empty: {out}"
        );
        assert_eq!(short_labels("<svg>no labels</svg>"), "<svg>no labels</svg>");
    }
}
