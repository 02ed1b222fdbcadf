//! Reading pprof profiles back in tests: the crate's own prost messages, decoding, string,
//! label and stack lookups, and the well-formedness checks of pprof's `CheckValid`.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use prost::Message;

#[allow(dead_code)]
#[path = "../../src/report/export/proto.rs"]
pub mod proto;

use proto::{Profile, Sample};

/// Decodes a gzipped profile.
pub fn decode(gz: &[u8]) -> Profile {
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .expect("valid gzip");
    Profile::decode(raw.as_slice()).expect("valid perftools.profiles.Profile")
}

pub fn s(p: &Profile, i: i64) -> &str {
    usize::try_from(i)
        .ok()
        .and_then(|i| p.string_table.get(i))
        .unwrap_or_else(|| panic!("string index {i} out of range"))
}

pub fn label<'a>(p: &'a Profile, sample: &Sample, key: &str) -> Option<&'a str> {
    sample
        .label
        .iter()
        .find(|l| s(p, l.key) == key)
        .map(|l| s(p, l.str))
}

/// The stack of a sample, leaf first: (function, file, line).
pub fn stack(p: &Profile, sample: &Sample) -> Vec<(String, String, i64)> {
    let locs: HashMap<u64, &proto::Location> = p.location.iter().map(|l| (l.id, l)).collect();
    let funcs: HashMap<u64, &proto::Function> = p.function.iter().map(|f| (f.id, f)).collect();
    sample
        .location_id
        .iter()
        .map(|id| {
            let loc = locs[id];
            let line = loc.line[0];
            let f = funcs[&line.function_id];
            (
                s(p, f.name).to_string(),
                s(p, f.filename).to_string(),
                line.line,
            )
        })
        .collect()
}

/// Checks what pprof's own `CheckValid` checks, and that tables store each thing once.
pub fn check_well_formed(p: &Profile) {
    assert_eq!(p.string_table.first().map(String::as_str), Some(""));
    let distinct: HashSet<&String> = p.string_table.iter().collect();
    assert_eq!(distinct.len(), p.string_table.len(), "strings stored once");

    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| (s(p, t.r#type), s(p, t.unit)))
        .collect();
    assert_eq!(
        types,
        [
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ]
    );
    assert_eq!(s(p, p.default_sample_type), "inuse_space");
    let period_type = p.period_type.expect("period type");
    assert_eq!(
        (s(p, period_type.r#type), s(p, period_type.unit)),
        ("space", "bytes")
    );
    for &c in &p.comment {
        s(p, c);
    }

    let mapping_ids: HashSet<u64> = p.mapping.iter().map(|m| m.id).collect();
    assert_eq!(mapping_ids.len(), p.mapping.len());
    assert!(!mapping_ids.contains(&0));
    let function_ids: HashSet<u64> = p.function.iter().map(|f| f.id).collect();
    assert_eq!(function_ids.len(), p.function.len(), "function ids unique");
    assert!(!function_ids.contains(&0));
    let function_keys: HashSet<(i64, i64)> =
        p.function.iter().map(|f| (f.name, f.filename)).collect();
    assert_eq!(
        function_keys.len(),
        p.function.len(),
        "functions stored once"
    );
    for f in &p.function {
        s(p, f.name);
        s(p, f.system_name);
        s(p, f.filename);
    }
    let location_ids: HashSet<u64> = p.location.iter().map(|l| l.id).collect();
    assert_eq!(location_ids.len(), p.location.len(), "location ids unique");
    assert!(!location_ids.contains(&0));
    let mut location_keys = HashSet::new();
    for l in &p.location {
        assert!(l.mapping_id == 0 || mapping_ids.contains(&l.mapping_id));
        assert_eq!(l.line.len(), 1);
        assert!(function_ids.contains(&l.line[0].function_id));
        assert!(
            location_keys.insert((l.line[0].function_id, l.line[0].line)),
            "locations stored once"
        );
    }
    for sample in &p.sample {
        assert_eq!(sample.value.len(), 4, "one value per sample type");
        assert!(sample.value.iter().all(|&v| v >= 0));
        assert!(sample.value[2] <= sample.value[0] && sample.value[3] <= sample.value[1]);
        assert!(!sample.location_id.is_empty(), "every sample has a stack");
        for id in &sample.location_id {
            assert!(location_ids.contains(id), "sample refers to location {id}");
        }
        for l in &sample.label {
            s(p, l.key);
            s(p, l.str);
        }
        assert!(label(p, sample, "job").is_some() && label(p, sample, "scope").is_some());
    }
}

/// The body of `GET path` (HTTP/1.0: the server closes after the response).
pub fn get_body(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    out[end + 4..].to_vec()
}

/// A sample as text: (job, scope, values, stack), for comparing two profiles whose tables
/// number things differently.
pub type Row = (String, String, Vec<i64>, Vec<(String, String, i64)>);

/// The samples of jobs (not unscoped memory), in profile order.
pub fn job_rows(p: &Profile) -> Vec<Row> {
    p.sample
        .iter()
        .filter(|x| label(p, x, "job") != Some("(unscoped)"))
        .map(|x| {
            (
                label(p, x, "job").unwrap().to_string(),
                label(p, x, "scope").unwrap().to_string(),
                x.value.clone(),
                stack(p, x),
            )
        })
        .collect()
}

/// The header fields two profiles of one moment share: sample types, default type, period,
/// comments.
pub fn header(p: &Profile) -> (Vec<String>, String, i64, Vec<String>) {
    (
        p.sample_type
            .iter()
            .map(|t| format!("{}/{}", s(p, t.r#type), s(p, t.unit)))
            .collect(),
        s(p, p.default_sample_type).to_string(),
        p.period,
        p.comment.iter().map(|&c| s(p, c).to_string()).collect(),
    )
}
