//! pprof export: a gzipped `profile.proto` with Go's four heap sample types.

use std::collections::HashMap;
use std::io::Write;

use prost::Message;

use super::proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
#[cfg(feature = "http")]
use super::Frames;
use super::{describe_stack_mode, entries, estimated, Entry};
use crate::error::Detail;
use crate::error::Error;
use crate::model::StackMode;
use crate::report::{Frame, Report};

/// The string table under construction: index 0 is `""`, each string stored once.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings {
            table: Vec::new(),
            index: HashMap::new(),
        };
        s.id("");
        s
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Builds the function and location tables, one entry per distinct function and frame.
struct Tables {
    strings: Strings,
    functions: Vec<Function>,
    function_ids: HashMap<(i64, i64), u64>,
    /// The file of the first function of each name (string ids): pprof merges functions by
    /// name, so another function of that name is named with its file.
    name_files: HashMap<i64, i64>,
    locations: Vec<Location>,
    location_ids: HashMap<(u64, i64), u64>,
    /// Location id by stack-table frame id (0: not met yet).
    by_frame_id: Vec<u64>,
}

/// The id of the one mapping every location belongs to.
const MAPPING_ID: u64 = 1;

impl Tables {
    fn function(&mut self, function: &str, file: Option<&str>) -> u64 {
        let name = self.strings.id(function);
        let file_id = self.strings.id(file.unwrap_or(""));
        if let Some(&id) = self.function_ids.get(&(name, file_id)) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.function_ids.insert((name, file_id), id);
        // Two functions never share a name (pprof aggregates by name): the symbolizer gives
        // full paths, and one still met in two files is told apart by its file.
        let first_file = *self.name_files.entry(name).or_insert(file_id);
        let shown = if first_file == file_id {
            name
        } else {
            let file = super::super::labels::short_file(file.unwrap_or("?"));
            self.strings.id(&format!("{function} [{file}]"))
        };
        // The mangled symbol when this process read it (never equal to the name, so pprof
        // keeps the name as it is instead of demangling and simplifying it again).
        let system_name = crate::report::symtab::system_name(function)
            .map_or(0, |mangled| self.strings.id(&mangled));
        self.functions.push(Function {
            id,
            name: shown,
            system_name,
            filename: file_id,
            start_line: 0,
        });
        id
    }

    fn location(&mut self, function_id: u64, line: i64) -> u64 {
        let next = self.locations.len() as u64 + 1;
        let id = *self.location_ids.entry((function_id, line)).or_insert(next);
        if id == next {
            self.locations.push(Location {
                id,
                mapping_id: MAPPING_ID,
                address: 0,
                line: vec![Line {
                    function_id,
                    line,
                    column: 0,
                }],
                is_folded: false,
            });
        }
        id
    }

    fn frame(&mut self, f: &Frame) -> u64 {
        let function = self.function(&f.function, f.file.as_deref());
        self.location(function, i64::from(f.line.unwrap_or(0)))
    }

    /// [`frame`](Self::frame), remembered by stack-table frame id when it has one (the live
    /// profile meets each distinct frame in many stacks: one string lookup per frame id).
    fn frame_with_id(&mut self, id: Option<u32>, f: &Frame) -> u64 {
        let Some(id) = id.map(|i| i as usize) else {
            return self.frame(f);
        };
        if let Some(&loc) = self.by_frame_id.get(id).filter(|&&l| l != 0) {
            return loc;
        }
        let loc = self.frame(f);
        if self.by_frame_id.len() <= id {
            self.by_frame_id.resize(id + 1, 0);
        }
        self.by_frame_id[id] = loc;
        loc
    }

    /// The stack of an entry, leaf first; an entry without frames (no callsites in the report,
    /// or a stack that could not be walked) gets one pseudo-frame naming its scope.
    fn stack(&mut self, e: &Entry<'_>) -> Vec<u64> {
        if e.frames.is_empty() {
            let function = self.function(&format!("[job] {}", e.scope_path()), None);
            return vec![self.location(function, 0)];
        }
        e.frames
            .iter()
            .map(|(id, f)| self.frame_with_id(id, f))
            .collect()
    }
}

/// A figure as a pprof value (int64), saturating.
fn value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The sample type `go tool pprof` shows when none is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) enum PprofDefault {
    /// `inuse_space` (what is retained), as Go's `/debug/pprof/heap`.
    InuseSpace,
    /// `alloc_space` (what was allocated), as Go's `/debug/pprof/allocs`.
    AllocSpace,
}

impl Report {
    /// The report as a pprof profile: a gzipped `perftools.profiles.Profile` protobuf, as
    /// `go tool pprof` and continuous-profiling backends (Pyroscope, Parca, Grafana) read.
    ///
    /// Only with the cargo feature **`pprof`** (it brings `prost` and `flate2`; no `protoc` is
    /// needed); without it this method does not exist. The `cli` feature enables it.
    ///
    /// The profile has Go's four heap sample types, in Go's order: `alloc_objects/count`,
    /// `alloc_space/bytes`, `inuse_objects/count`, `inuse_space/bytes` (the default), where
    /// *alloc* is what was allocated and *inuse* what is retained. There is one sample per
    /// callsite of [`Report::callsites`], with its stack (leaf first; locations and functions
    /// stored once) and two labels: `job`, the innermost job of its scope, and `scope`, the
    /// whole nesting `outer > inner`; both are `(unscoped)` for memory allocated outside any
    /// scope. So `go tool pprof -tagfocus job=import_users` shows one job, `-tagroot job`
    /// puts jobs at the root of the graphs, and `-tags` lists the jobs.
    ///
    /// Values are unsampled figures (estimates when stacks are sampled; the profile's
    /// `period` is then the mean sampling interval in bytes). A report without callsites
    /// (stacks off) gets one sample per job with its exclusive figures (and one for unscoped
    /// memory), under a single pseudo-frame `[job] NAME` (`[job] (unscoped)`).
    ///
    /// ```
    /// # #[cfg(feature = "pprof")] {
    /// let report = allocscope::report();
    /// let gz: Vec<u8> = report.to_pprof().unwrap();
    /// assert_eq!(&gz[..2], &[0x1f, 0x8b]); // gzip
    /// // std::fs::write("heap.pb.gz", gz), then: go tool pprof -top heap.pb.gz
    /// # }
    /// ```
    pub fn to_pprof(&self) -> Result<Vec<u8>, Error> {
        self.to_pprof_default(PprofDefault::InuseSpace)
    }

    /// [`to_pprof`](Self::to_pprof) with another default sample type (Go's
    /// `/debug/pprof/allocs` shows `alloc_space` first; the profile is otherwise the same).
    pub(crate) fn to_pprof_default(&self, default: PprofDefault) -> Result<Vec<u8>, Error> {
        crate::thread::untracked(|| encode(&profile(Input::of(self, entries(self)), default)))
    }
}

/// What a profile is made of: the exported entries and the report's header fields.
struct Input<'a> {
    entries: Vec<Entry<'a>>,
    stack_mode: StackMode,
    timestamp_unix_ms: u64,
    /// Whether any figure is an estimate from sampled stacks.
    estimated: bool,
    /// Whether the entries are callsites (not the per-job fallback).
    callsites: bool,
}

impl<'a> Input<'a> {
    /// `entries` with the header fields of `report`.
    fn of(report: &Report, entries: Vec<Entry<'a>>) -> Self {
        Input {
            entries,
            stack_mode: report.stack_mode,
            timestamp_unix_ms: report.timestamp_unix_ms,
            estimated: estimated(report),
            callsites: !report.callsites.is_empty(),
        }
    }
}

/// The live process's profile, the same as `report().to_pprof_default(default)` would give,
/// built from one snapshot **without building the report's callsites**: each stack's frames
/// are read as ids of the stack table (symbolized once per process) and each distinct frame
/// becomes a location once, so a scrape's memory is the profile's tables and samples, not a
/// copy of every callsite's frames. For the live endpoint's `/debug/pprof/*`.
#[cfg(feature = "http")]
pub(crate) fn live_pprof(default: PprofDefault) -> Result<Vec<u8>, Error> {
    crate::thread::untracked(|| {
        let (report, sites) = crate::report::build::figures_and_sites();
        let profile = if sites.list.is_empty() {
            // No callsites: the per-job fallback, as for a report without them.
            profile(Input::of(&report, entries(&report)), default)
        } else {
            let table = sites.table.frame_table();
            let entries = sites
                .list
                .iter()
                .map(|s| Entry {
                    scope: sites.scope(s.path).iter().map(String::as_str).collect(),
                    frames: Frames::Table {
                        ids: sites.table.frame_ids(s.stack),
                        table,
                    },
                    allocated: s.allocated,
                    retained: s.retained,
                    peak_bytes: s.peak_bytes.max(s.retained.bytes),
                })
                .collect();
            let mut input = Input::of(&report, entries);
            input.estimated = sites.list.iter().any(|s| s.estimated);
            input.callsites = true;
            profile(input, default)
        };
        drop(sites);
        crate::report::symbolize::release_debug_info();
        encode(&profile)
    })
}

/// The profile, protobuf-encoded and gzipped.
fn encode(profile: &Profile) -> Result<Vec<u8>, Error> {
    let raw = profile.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        // Best speed, as Go's runtime/pprof writes its profiles.
        flate2::Compression::fast(),
    );
    gz.write_all(&raw)
        .and_then(|()| gz.finish())
        .map_err(|e| Error::Render(Detail::with_source(format!("pprof: gzip failed: {e}"), e)))
}

/// The profile of `input`; see [`Report::to_pprof`].
fn profile(input: Input<'_>, default: PprofDefault) -> Profile {
    let mut t = Tables {
        strings: Strings::new(),
        functions: Vec::new(),
        function_ids: HashMap::new(),
        name_files: HashMap::new(),
        locations: Vec::new(),
        location_ids: HashMap::new(),
        by_frame_id: Vec::new(),
    };
    let count = t.strings.id("count");
    let bytes = t.strings.id("bytes");
    let mut sample_type = Vec::with_capacity(4);
    for name in [
        "alloc_objects",
        "alloc_space",
        "inuse_objects",
        "inuse_space",
    ] {
        let unit = if name.ends_with("objects") {
            count
        } else {
            bytes
        };
        sample_type.push(ValueType {
            r#type: t.strings.id(name),
            unit,
        });
    }
    let default_sample_type = t.strings.id(match default {
        PprofDefault::InuseSpace => "inuse_space",
        PprofDefault::AllocSpace => "alloc_space",
    });
    let job_key = t.strings.id("job");
    let scope_key = t.strings.id("scope");

    let mut sample = Vec::new();
    for e in &input.entries {
        let location_id = t.stack(e);
        let job = t.strings.id(&e.job());
        let scope = t.strings.id(&e.scope_path());
        sample.push(Sample {
            location_id,
            value: vec![
                value(e.allocated.objects),
                value(e.allocated.bytes),
                value(e.retained.objects),
                value(e.retained.bytes),
            ],
            label: vec![
                Label {
                    key: job_key,
                    str: job,
                    ..Label::default()
                },
                Label {
                    key: scope_key,
                    str: scope,
                    ..Label::default()
                },
            ],
        });
    }

    let mut comment = vec![t.strings.id(&format!(
        "allocscope report ({})",
        describe_stack_mode(input.stack_mode)
    ))];
    if input.estimated {
        comment.push(t.strings.id("figures are estimates from sampled stacks"));
    }
    if !input.callsites {
        comment.push(
            t.strings
                .id("no callsites in this report: one sample per job, with its exclusive figures"),
        );
    }
    let period = match input.stack_mode {
        StackMode::Sampled { mean_bytes } if mean_bytes > 1 => value(mean_bytes),
        _ => 1,
    };
    let period_type = Some(ValueType {
        r#type: t.strings.id("space"),
        unit: bytes,
    });
    // Locations carry names, files and lines already: flag the mapping as symbolized so
    // pprof does not look for a binary to symbolize them with.
    let mapping = vec![Mapping {
        id: MAPPING_ID,
        filename: t.strings.id("allocscope"),
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        ..Mapping::default()
    }];
    Profile {
        sample_type,
        sample,
        mapping,
        location: t.locations,
        function: t.functions,
        string_table: t.strings.table,
        time_nanos: value(input.timestamp_unix_ms.saturating_mul(1_000_000)),
        period_type,
        period,
        comment,
        default_sample_type,
        ..Profile::default()
    }
}
