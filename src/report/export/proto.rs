//! The `perftools.profiles` messages of pprof's `profile.proto`, as prost message structs.
//!
//! Written by hand in the form `prost-build` generates, so building allocscope needs no
//! `protoc`. Field numbers and types follow google/pprof's `proto/profile.proto`; fields this
//! crate never writes (`LabelSet`, `Breakdown`, `doc_url`, …) are left out, and a decoder of
//! these structs skips them in other producers' files, as protobuf requires.
//!
//! Every index into `string_table` is an `i64`; `string_table[0]` must be `""`. Ids
//! (`Location::id`, `Function::id`, `Mapping::id`) are nonzero.
// Shared with tests/export_pprof.rs (included there with #[path]), which needs `pub`.
#![allow(unreachable_pub)]

/// A whole profile: sample types, samples, and the tables they refer to.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Profile {
    /// What each entry of `Sample::value` measures (type and unit).
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// Binaries and libraries the locations belong to.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// Program locations (one per stack frame).
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Functions referenced by locations.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Every string of the profile; index 0 is `""`.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Regexp (string index) of frames to drop, with their callees.
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// Regexp (string index) of frames to keep even if they match `drop_frames`.
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// When collection started, in nanoseconds since the Unix epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// How long collection lasted, in nanoseconds.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// What is counted between sampled occurrences.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// How many `period_type` units lie between sampled occurrences.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// The sample type shown by default (string index of its type name).
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// A value's meaning: type and unit, both string indices.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct ValueType {
    /// E.g. `inuse_space`.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// E.g. `bytes`.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// Values measured at one stack, with labels.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Sample {
    /// The stack: location ids, leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per `Profile::sample_type`.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Extra context, e.g. the job.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A key with a string or a numeric value.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Label {
    /// String index of the key.
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// String index of the value (for string labels).
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// The value (for numeric labels).
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// String index of the unit of `num`.
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// A binary or library mapped into the process.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Mapping {
    /// Nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Load address.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// End of the mapped range.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// File offset of `memory_start`.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// String index of the file name.
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// String index of the build id.
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Whether locations in this mapping carry function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// Whether they carry file names.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// Whether they carry line numbers.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// Whether inlined frames are expanded.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// A program location: one stack frame (with inlined functions as extra lines).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Location {
    /// Nonzero id, referenced by `Sample::location_id`.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The mapping's id (0: unknown).
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The instruction address, if known.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Function and line; the last entry is the caller the others were inlined into.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Whether several symbols share this address.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// A function and line within a location.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Line {
    /// The function's id.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Source line (0: unknown).
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// Source column (0: unknown).
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// A function.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Function {
    /// Nonzero id, referenced by `Line::function_id`.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// String index of the human-readable name.
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// String index of the system (e.g. mangled) name.
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// String index of the source file.
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// First line of the function (0: unknown).
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}
