//! The JSON wire format of a [`Report`] (format version 2), written and read **streaming**.
//!
//! Rules:
//! * Layout: one JSON object whose first keys are `"format"`, `"version"`, then the stack
//!   table — `"frames"` (every distinct frame once: `{function, file, line}`) and `"stacks"`
//!   (every distinct stack once, as frame indices, innermost first) — then the report's own
//!   fields, serde-derived (fields added to the model flow through untouched). A callsite's
//!   `"frames"` is the index of its stack in `"stacks"`. Version-1 files (and reports
//!   serialized by plain serde) have each callsite's frames inline; both are read.
//! * Writing ([`write`]) streams to any `io::Write`: the table is built by one pass over the
//!   report's callsites (frames are keyed by address, shared with the report, never copied),
//!   then the report is serialized once.
//! * Reading ([`read`]) streams from any JSON source (`&str`, or a file through a 64 KiB
//!   buffer) straight into the model: no `serde_json::Value` tree for what follows the
//!   header and the stack table, so for files in the written order memory follows the
//!   report's content, not the size of the text (whitespace, or a gigabyte of `[`, costs
//!   nothing: the first token that cannot start a report is an error). Keys may come in any
//!   order (JSON objects are unordered: `jq -S`, sorted-key writers): report fields met before
//!   the header and the table are complete are kept as `serde_json::Value` (bounded by the
//!   file, nested at most 128 levels) and resolved once they are. Before `"format"` has been
//!   read, a key that is no report field refuses the input at that key.
//! * Limits: nesting is bounded by the model's own depth: a bracket where the model expects
//!   something else is a type error at that bracket; values of fields this version does not
//!   know are skipped without recursion or storage; header values are parsed with
//!   serde_json's limit of 128 levels. Files larger than 4 GiB are refused before reading
//!   (see [`Report::read_json`]). A stack index outside the table is an error, never a panic.
//! * Memory is bounded by the file's size: each stack of the table is materialised once, the
//!   first time a callsite names it, as one `SharedFrames` that every callsite naming it
//!   shares (a callsite costs its own fields plus a pointer, whatever its stack's depth), and
//!   each distinct frame string is held once. Every materialised frame (24 bytes) is an index
//!   of at least 2 bytes in the file, so stacks cost at most ~14 bytes of memory per byte of
//!   file with their indices; the whole read peaks below 24 bytes per byte of file plus
//!   16 MiB (RELIABILITY.md, "Memory of reading a report", measured by
//!   `tests/report_amplified.rs`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::{Frame, Report, FORMAT, OLDEST_VERSION, VERSION};
use crate::error::Detail;
use crate::error::Error;
use crate::model::{SharedFrames, SharedStrings};

thread_local! {
    /// While writing: each callsite's frames (by the address of its slice) to its stack index.
    static WRITING: RefCell<Option<HashMap<usize, u32>>> = const { RefCell::new(None) };
    /// While reading: the stack table read from the file.
    static READING: RefCell<Option<Table>> = const { RefCell::new(None) };
}

/// The stack table as stored: distinct frames, and stacks as frame indices.
#[derive(Default)]
struct Table {
    frames: Vec<Frame>,
    stacks: Vec<Vec<u32>>,
    /// While reading: each stack's frames once materialised, shared by every callsite that
    /// names it.
    shared: Vec<Option<SharedFrames>>,
    /// While reading: each distinct frame and string once, so that callsites share frame
    /// text as reports built in-process do (see [`Table::share`]).
    seen: HashSet<Frame>,
    strings: SharedStrings,
}

impl Table {
    /// `f` with the strings of the equal frame or strings met before (one copy each).
    fn share(&mut self, f: Frame) -> Frame {
        if let Some(seen) = self.seen.get(&f) {
            return seen.clone();
        }
        let f = self.strings.frame(f);
        self.seen.insert(f.clone());
        f
    }

    /// The frames of stack `id`, materialised the first time and shared after.
    fn stack<E: de::Error>(&mut self, id: u64) -> Result<SharedFrames, E> {
        let i = usize::try_from(id)
            .ok()
            .filter(|&i| i < self.stacks.len())
            .ok_or_else(|| {
                E::custom(format!(
                    "stack index {id} is outside the stack table ({} stacks)",
                    self.stacks.len()
                ))
            })?;
        if let Some(frames) = &self.shared[i] {
            return Ok(frames.clone());
        }
        let frames: SharedFrames = self.stacks[i]
            .iter()
            .map(|&f| {
                self.frames
                    .get(f as usize)
                    .cloned()
                    .ok_or_else(|| E::custom(format!("frame index {f} is outside the frame table")))
            })
            .collect::<Result<_, E>>()?;
        self.shared[i] = Some(frames.clone());
        Ok(frames)
    }
}

/// `skip_serializing_if` of the report's `format` and `version`: the wire writes them itself,
/// first.
pub(crate) fn writing<T>(_: &T) -> bool {
    WRITING.with(|w| w.borrow().is_some())
}

/// `serialize_with` of a callsite's frames: its stack index while writing the wire format,
/// else the frames inline.
pub(crate) fn serialize_frames<S: Serializer>(
    frames: &SharedFrames,
    s: S,
) -> Result<S::Ok, S::Error> {
    let id = WRITING.with(|w| {
        w.borrow()
            .as_ref()
            .and_then(|ids| ids.get(&(frames.as_ptr() as usize)).copied())
    });
    match id {
        Some(id) => s.serialize_u32(id),
        None => frames.serialize(s),
    }
}

/// `deserialize_with` of a callsite's frames: a stack index into the table being read (the
/// stack's one shared copy), or the frames inline.
pub(crate) fn deserialize_frames<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<SharedFrames, D::Error> {
    struct FramesVisitor;
    impl<'de> Visitor<'de> for FramesVisitor {
        type Value = SharedFrames;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a stack index or a list of frames")
        }
        fn visit_u64<E: de::Error>(self, id: u64) -> Result<SharedFrames, E> {
            READING.with(|r| match r.borrow_mut().as_mut() {
                Some(table) => table.stack(id),
                None => Err(E::custom(format!("stack index {id} but no stack table"))),
            })
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<SharedFrames, A::Error> {
            let frames = Vec::<Frame>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
            Ok(READING.with(|r| match r.borrow_mut().as_mut() {
                Some(table) => frames.into_iter().map(|f| table.share(f)).collect(),
                None => frames.into(),
            }))
        }
    }
    d.deserialize_any(FramesVisitor)
}

/// Clears the thread-local state on every exit path (errors and panics included).
struct Reset;
impl Drop for Reset {
    fn drop(&mut self) {
        WRITING.with(|w| *w.borrow_mut() = None);
        READING.with(|r| *r.borrow_mut() = None);
    }
}

/// Writes `report` in the wire format to `out` (pretty-printed when `pretty`). Must run
/// untracked.
pub(crate) fn write(report: &Report, out: impl io::Write, pretty: bool) -> serde_json::Result<()> {
    // The stack table: distinct stacks by content, each callsite's Vec by address.
    let mut frame_ids: HashMap<&Frame, u32> = HashMap::new();
    let mut frames: Vec<&Frame> = Vec::new();
    let mut stack_ids: HashMap<&[Frame], u32> = HashMap::new();
    let mut stacks: Vec<Vec<u32>> = Vec::new();
    let mut by_address: HashMap<usize, u32> = HashMap::new();
    let all = report
        .callsites
        .iter()
        .chain(report.jobs.iter().flat_map(|j| j.callsites.iter()));
    for c in all {
        let id = *stack_ids.entry(&c.frames[..]).or_insert_with(|| {
            let ids = c
                .frames
                .iter()
                .map(|f| {
                    *frame_ids.entry(f).or_insert_with(|| {
                        frames.push(f);
                        frames.len() as u32 - 1
                    })
                })
                .collect();
            stacks.push(ids);
            stacks.len() as u32 - 1
        });
        by_address.insert(c.frames.as_ptr() as usize, id);
    }
    // Empty frame lists share one dangling address; they all map to the empty stack anyway.
    #[derive(Serialize)]
    struct Wire<'a> {
        format: &'a str,
        version: u32,
        frames: &'a [&'a Frame],
        stacks: &'a [Vec<u32>],
        #[serde(flatten)]
        report: &'a Report,
    }
    let wire = Wire {
        format: &report.format,
        version: report.version,
        frames: &frames,
        stacks: &stacks,
        report,
    };
    let _reset = Reset;
    WRITING.with(|w| *w.borrow_mut() = Some(by_address));
    if pretty {
        wire.serialize(&mut serde_json::Serializer::pretty(out))
    } else {
        wire.serialize(&mut serde_json::Serializer::new(out))
    }
}

/// Reads a report in the wire format (or version 1) from `de`, to the end of the input.
/// Errors: [`Error::InvalidReport`] (with the JSON position) or
/// [`Error::UnsupportedVersion`]. Must run untracked.
pub(crate) fn read<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
) -> Result<Report, Error> {
    let verdict: Cell<Option<Error>> = Cell::new(None);
    let _reset = Reset;
    let result = de
        .deserialize_map(TopVisitor { verdict: &verdict })
        .and_then(|r| de.end().map(|()| r));
    match result {
        Ok(r) => Ok(r),
        Err(e) => Err(verdict.take().unwrap_or_else(|| json_error(e))),
    }
}

/// A serde_json error as an [`Error::InvalidReport`], saying "truncated" or "not JSON" when
/// that is what it is.
pub(crate) fn json_error(e: serde_json::Error) -> Error {
    let message = if e.is_eof() {
        format!("truncated JSON ({e})")
    } else if e.is_syntax() {
        format!("not JSON ({e})")
    } else if e.is_io() {
        format!("read failed ({e})")
    } else {
        e.to_string()
    };
    Error::InvalidReport(Detail::with_source(message, e))
}

struct TopVisitor<'v> {
    /// The precise error when the visitor refuses the input (the serde error only carries
    /// text and position).
    verdict: &'v Cell<Option<Error>>,
}

impl TopVisitor<'_> {
    fn refuse<E: de::Error>(&self, e: Error) -> E {
        let text = e.to_string();
        self.verdict.set(Some(e));
        E::custom(text)
    }
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = Report;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an allocscope report: the top level is not a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Report, A::Error> {
        let mut format: Option<String> = None;
        let mut version: Option<u64> = None;
        let mut table = Table::default();
        let (mut have_frames, mut have_stacks) = (false, false);
        // Report fields met before the stack table is complete, resolved once it is.
        let mut early: Vec<(String, serde_json::Value)> = Vec::new();
        let first_other = loop {
            let Some(key) = map.next_key::<String>()? else {
                break None;
            };
            match key.as_str() {
                "format" => {
                    let f = map.next_value::<serde_json::Value>()?;
                    match f.as_str() {
                        Some(FORMAT) => format = Some(FORMAT.to_string()),
                        Some(other) => {
                            return Err(self.refuse(Error::UnsupportedVersion(format!(
                                "format is {other:?}, expected {FORMAT:?}"
                            ))))
                        }
                        None => {
                            return Err(self
                                .refuse(Error::InvalidReport("\"format\" is not a string".into())))
                        }
                    }
                }
                "version" => {
                    let v = map.next_value::<serde_json::Value>()?;
                    version = Some(check_version(v.as_u64()).map_err(|e| self.refuse(e))?);
                }
                "frames" => {
                    table.frames = map.next_value()?;
                    have_frames = true;
                }
                "stacks" => {
                    table.stacks = map.next_value()?;
                    have_stacks = true;
                }
                _ => {
                    // A key no report has, before "format" said this is one: not a report.
                    if format.is_none() && !report_fields().contains(&key.as_str()) {
                        return Err(self.refuse(Error::InvalidReport(
                            format!(
                                "{} is not a field of an allocscope report and no \"format\": \
                             \"allocscope\" came before it; this is not an allocscope report",
                                crate::config::shown(&key)
                            )
                            .into(),
                        )));
                    }
                    // Stream from here once the header and the table (or, in version 1,
                    // the header alone) are known; until then keep the field.
                    let table_done = (have_frames && have_stacks) || version == Some(1);
                    if format.is_some() && version.is_some() && table_done {
                        break Some(key);
                    }
                    early.push((key, map.next_value()?));
                }
            }
        };
        let Some(format) = format else {
            return Err(self.refuse(Error::InvalidReport(
                "no \"format\": \"allocscope\" field; this is not an allocscope report".into(),
            )));
        };
        let Some(version) = version else {
            return Err(self.refuse(Error::InvalidReport(
                "missing or non-integer \"version\" field".into(),
            )));
        };
        if table
            .stacks
            .iter()
            .flatten()
            .any(|&f| f as usize >= table.frames.len())
        {
            return Err(self.refuse(Error::InvalidReport(
                "the stack table names a frame outside the frame table".into(),
            )));
        }
        let frames = std::mem::take(&mut table.frames);
        table.frames = frames.into_iter().map(|f| table.share(f)).collect();
        table.shared = vec![None; table.stacks.len()];
        READING.with(|r| *r.borrow_mut() = Some(table));
        let ended = first_other.is_none();
        Report::deserialize(de::value::MapAccessDeserializer::new(Replay {
            header: vec![
                ("format", Header::Str(format)),
                ("version", Header::Int(version)),
            ],
            early: early.into_iter(),
            early_value: None,
            pending: first_other,
            value: None,
            ended,
            inner: map,
        }))
    }
}

/// The names of the report's own fields (from its derived `Deserialize`), for telling a
/// report's key from a stranger's before `"format"` has been read.
fn report_fields() -> &'static [&'static str] {
    use std::sync::OnceLock;
    static FIELDS: OnceLock<&'static [&'static str]> = OnceLock::new();
    FIELDS.get_or_init(|| {
        /// A deserializer that only records the field names it is asked for.
        struct Names<'a>(&'a mut &'static [&'static str]);
        impl<'de> Deserializer<'de> for Names<'_> {
            type Error = de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("field names only"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                *self.0 = fields;
                Err(de::Error::custom("field names only"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
                enum identifier ignored_any
            }
        }
        let mut fields: &'static [&'static str] = &[];
        let _ = Report::deserialize(Names(&mut fields));
        fields
    })
}

/// The version rule: `OLDEST_VERSION..=VERSION` are read.
fn check_version(v: Option<u64>) -> Result<u64, Error> {
    match v {
        Some(v) if (OLDEST_VERSION as u64..=VERSION as u64).contains(&v) => Ok(v),
        Some(v) if v > VERSION as u64 => Err(Error::UnsupportedVersion(format!(
            "report version {v} is newer than this allocscope reads ({VERSION}); upgrade \
             allocscope"
        ))),
        Some(v) => Err(Error::UnsupportedVersion(format!(
            "report version {v} is not supported (this allocscope reads {OLDEST_VERSION} to \
             {VERSION})"
        ))),
        None => Err(Error::InvalidReport(
            "missing or non-integer \"version\" field".into(),
        )),
    }
}

enum Header {
    Str(String),
    Int(u64),
}

/// The rest of the top-level map, with the header fields the visitor consumed replayed first,
/// so that the report's derived `Deserialize` sees every field.
struct Replay<A> {
    header: Vec<(&'static str, Header)>,
    /// Fields read before the stack table, replayed after the header.
    early: std::vec::IntoIter<(String, serde_json::Value)>,
    /// The early field whose value is next.
    early_value: Option<serde_json::Value>,
    pending: Option<String>,
    /// The value of the replayed key just returned.
    value: Option<Header>,
    /// The input map has ended (nothing more to ask it for).
    ended: bool,
    inner: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Replay<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if !self.header.is_empty() {
            let (key, value) = self.header.remove(0);
            self.value = Some(value);
            return seed
                .deserialize(de::value::StrDeserializer::<A::Error>::new(key))
                .map(Some);
        }
        if let Some((key, value)) = self.early.next() {
            self.early_value = Some(value);
            return seed
                .deserialize(de::value::StringDeserializer::<A::Error>::new(key))
                .map(Some);
        }
        if let Some(key) = self.pending.take() {
            return seed
                .deserialize(de::value::StringDeserializer::<A::Error>::new(key))
                .map(Some);
        }
        if self.ended {
            return Ok(None);
        }
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.value.take() {
            Some(Header::Str(s)) => seed.deserialize(de::value::StringDeserializer::new(s)),
            Some(Header::Int(v)) => seed.deserialize(de::value::U64Deserializer::new(v)),
            None => match self.early_value.take() {
                Some(v) => seed.deserialize(v).map_err(de::Error::custom),
                None => self.inner.next_value_seed(seed),
            },
        }
    }
}
