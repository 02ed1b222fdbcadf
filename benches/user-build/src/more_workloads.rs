//! Workloads beyond the synthetic ones in `benches/workloads/mod.rs`:
//!
//! * `serde_doc`: an allocation-heavy real workload — a large generated JSON document
//!   serialised, parsed into a `serde_json::Value`, pretty-printed, and parsed back into typed
//!   records (strings, vectors, maps: many small allocations of many sizes, as real programs).
//! * `live_objects`: memory overhead — `n` blocks of `8 * WORDS` bytes (alignment 8, like most
//!   Rust boxes) kept alive at once; the peak RSS against `System` gives the per-block cost.

use std::collections::BTreeMap;
use std::hint::black_box;

use serde::{Deserialize, Serialize};

use crate::workloads::Rng;

/// Records in the full-size `serde_doc` document (about 6 MB of pretty JSON).
pub const SERDE_RECORDS: usize = 15_000;

/// Live blocks in the memory workloads (10 million).
pub const LIVE_OBJECTS: usize = 10_000_000;

#[derive(Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    email: String,
    score: f64,
    active: bool,
    tags: Vec<String>,
    attributes: BTreeMap<String, String>,
    history: Vec<Event>,
}

#[derive(Serialize, Deserialize)]
struct Event {
    at: u64,
    kind: String,
    amount: i64,
}

fn word(rng: &mut Rng) -> String {
    const SYL: [&str; 12] = [
        "ka", "lo", "mi", "ren", "su", "tor", "va", "xe", "zu", "bri", "no", "qua",
    ];
    let n = rng.range(1, 4);
    (0..n).map(|_| SYL[rng.range(0, 11) as usize]).collect()
}

fn record(rng: &mut Rng, id: u64) -> Record {
    Record {
        id,
        name: format!("{} {}", word(rng), word(rng)),
        email: format!("{}.{}@example.org", word(rng), id),
        score: rng.range(0, 1_000_000) as f64 / 1000.0,
        active: rng.range(0, 1) == 1,
        tags: (0..rng.range(0, 6)).map(|_| word(rng)).collect(),
        attributes: (0..rng.range(0, 5))
            .map(|i| (format!("attr{i}"), word(rng)))
            .collect(),
        history: (0..rng.range(0, 6))
            .map(|_| Event {
                at: rng.next_u64() >> 24,
                kind: word(rng),
                amount: rng.range(0, 20_000) as i64 - 10_000,
            })
            .collect(),
    }
}

/// Generates `records` records, serialises them, parses the text into a `Value`, pretty-prints
/// it, and parses that into typed records again. Returns a checksum.
pub fn serde_doc(records: usize) -> u64 {
    let mut out = 0;
    crate::unit(|| out = serde_doc_once(records));
    out
}

fn serde_doc_once(records: usize) -> u64 {
    let mut rng = Rng::new(7);
    let doc: Vec<Record> = (0..records as u64).map(|i| record(&mut rng, i)).collect();
    let text = serde_json::to_string(&doc).unwrap_or_default();
    drop(doc);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
    drop(value);
    let back: Vec<Record> = serde_json::from_str(&pretty).unwrap_or_default();
    let sum = back
        .iter()
        .map(|r| r.id ^ r.tags.len() as u64)
        .fold(0, u64::wrapping_add);
    black_box(text.len() as u64 + pretty.len() as u64 + sum)
}

/// Allocates `n` boxes of `WORDS` u64s (`8 * WORDS` bytes, alignment 8) and keeps them all
/// alive until the end; returns a checksum.
pub fn live_objects<const WORDS: usize>(n: usize) -> u64 {
    let mut keep: Vec<Box<[u64; WORDS]>> = Vec::with_capacity(n);
    for i in 0..n {
        keep.push(Box::new([i as u64; WORDS]));
    }
    black_box(&keep);
    keep.iter().step_by(4096).map(|b| b[0]).sum()
}

/// `Value` trees of many small strings and maps: `docs` documents, each generated, printed
/// compactly, parsed into a `Value` and walked; the trees of the previous document are dropped
/// while the next one is built (frees of an earlier unit's blocks). Returns a checksum.
pub fn serde_values(docs: usize) -> u64 {
    let mut rng = Rng::new(11);
    let mut sum = 0u64;
    let mut previous: Vec<serde_json::Value> = Vec::new();
    for d in 0..docs as u64 {
        crate::unit(|| {
            let doc: Vec<Record> = (0..400).map(|i| record(&mut rng, d * 400 + i)).collect();
            let text = serde_json::to_string(&doc).unwrap_or_default();
            drop(doc);
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(arr) = value.as_array() {
                for v in arr {
                    if let Some(obj) = v.as_object() {
                        sum = sum.wrapping_add(obj.len() as u64);
                    }
                }
            }
            previous.clear();
            previous.push(value);
            black_box(&previous);
        });
    }
    black_box(sum)
}

/// `to_string_pretty` growing one buffer by realloc, `rounds` times over one large `Value`
/// (a few MB each: every growth step reallocates the same string). Returns a checksum.
pub fn serde_pretty(rounds: usize) -> u64 {
    let mut rng = Rng::new(13);
    let doc: Vec<Record> = (0..8_000).map(|i| record(&mut rng, i)).collect();
    let value = serde_json::to_value(&doc).unwrap_or_default();
    drop(doc);
    let mut total = 0u64;
    for _ in 0..rounds {
        crate::unit(|| {
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            total = total.wrapping_add(pretty.len() as u64);
        });
    }
    black_box(total)
}

/// Typed structs with `Vec<String>` fields: `rounds` round trips of a document through typed
/// records (parse, modify, print), one long run per document. Returns a checksum.
pub fn serde_typed(rounds: usize) -> u64 {
    let mut rng = Rng::new(17);
    let doc: Vec<Record> = (0..6_000).map(|i| record(&mut rng, i)).collect();
    let mut text = serde_json::to_string(&doc).unwrap_or_default();
    drop(doc);
    for r in 0..rounds {
        crate::unit(|| {
            let mut back: Vec<Record> = serde_json::from_str(&text).unwrap_or_default();
            for rec in &mut back {
                rec.tags.push(format!("round{r}"));
                rec.tags.retain(|t| t.len() < 12);
            }
            text = serde_json::to_string(&back).unwrap_or_default();
        });
    }
    black_box(text.len() as u64)
}

/// Closest to the held-out serde_json program of the performance issue: `docs` documents of
/// `records` records, each document one run (one long scope with hundreds of thousands of
/// allocations): generate typed records, print them, parse the text into a `Value`,
/// `to_string_pretty` it (one buffer grown by realloc), parse the pretty text back into typed
/// records (`Vec<String>` fields), modify and print them again. The typed records of a
/// document are kept until the next document's run drops them (frees of an earlier run's
/// blocks). Returns a checksum.
pub fn serde_docs(docs: usize, records: usize) -> u64 {
    let mut rng = Rng::new(19);
    let mut sum = 0u64;
    let mut previous: Vec<Record> = Vec::new();
    for d in 0..docs as u64 {
        crate::unit(|| {
            let base = d * records as u64;
            let doc: Vec<Record> = (0..records as u64)
                .map(|i| record(&mut rng, base + i))
                .collect();
            let text = serde_json::to_string(&doc).unwrap_or_default();
            drop(doc);
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            drop(text);
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            drop(value);
            let mut typed: Vec<Record> = serde_json::from_str(&pretty).unwrap_or_default();
            drop(pretty);
            for rec in &mut typed {
                rec.tags.push(format!("doc{d}"));
                rec.name.push_str(" (seen)");
            }
            let again = serde_json::to_string(&typed).unwrap_or_default();
            sum = sum.wrapping_add(again.len() as u64);
            previous = typed;
            black_box(&previous);
        });
    }
    black_box(sum.wrapping_add(previous.len() as u64))
}
