//! The harness driver: runs every allocator binary on every workload in alternating rounds
//! (each round runs every configuration once, in a shuffled order) and prints, per workload
//! and configuration, the median over rounds of the per-round ratio to `System` with its range,
//! for CPU time and wall time, and the median peak RSS ratio.
//!
//! ```text
//! ub_run --nofp DIR --fp DIR [--rounds N]
//!        [--workloads churn,job,threads,serde,serde_values,serde_pretty,serde_typed,serde_docs]
//!        [--no-heaptrack] [--mem] [--raw FILE]
//! ```
//!
//! Beside every allocscope figure stand the two floors, measured in the same rounds:
//! `floor_header` (`ub_header`: `System` with allocscope's 8-byte header, counting nothing)
//! and `floor_count` (`ub_count`: per-thread counters, no header).
//!
//! `DIR`s hold `ub_system`, `ub_allocscope`, `ub_header`, `ub_count` and `ub_dhat` built without / with frame pointers.
//! Rows ending in `_fp` come from the frame-pointer build and are divided by that build's
//! `System` run of the same round. The slow configurations (libgcc DWARF unwinding, dhat-rs,
//! heaptrack) run the workload at 1/10 size against `System` at that size. heaptrack's CPU
//! figure is the CPU time of the whole traced command (the traced process and
//! `heaptrack_interpret`, which decodes the trace in parallel), divided by the same for
//! `System`; all other CPU figures are the workload's own (in-process, all threads).
//!
//! `--mem` runs the memory table instead: peak RSS of 10 million live blocks of 16, 24 and 32
//! bytes under each allocator, and the cost per block against `System`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

#[derive(Clone)]
struct Task {
    /// Row label, e.g. `off` or `off_fp`.
    label: String,
    /// Workload group (ratio denominator: the `system` task of the same group and build).
    group: String,
    /// Workload argument passed to the child.
    workload: String,
    bin: PathBuf,
    config: String,
    heaptrack: bool,
    /// Label of the System row this one is divided by.
    base: String,
}

#[derive(Clone, Copy, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    tree_cpu: f64,
    rss: f64,
}

fn children_cpu_ms() -> f64 {
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_CHILDREN is a valid `who`.
    unsafe {
        let mut ru: libc::rusage = core::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        let t = |tv: libc::timeval| tv.tv_sec as f64 * 1e3 + tv.tv_usec as f64 / 1e3;
        t(ru.ru_utime) + t(ru.ru_stime)
    }
}

fn run(task: &Task, reps: usize, tmp: &std::path::Path) -> Option<Sample> {
    let mut cmd = if task.heaptrack {
        let mut c = Command::new("heaptrack");
        c.arg("-o").arg(tmp.join("ht")).arg(&task.bin);
        c
    } else {
        Command::new(&task.bin)
    };
    cmd.arg(&task.workload)
        .arg(&task.config)
        .arg(reps.to_string());
    let before = children_cpu_ms();
    let out = cmd.output().ok()?;
    let tree_cpu = children_cpu_ms() - before;
    if task.heaptrack {
        for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("UB "));
    let Some(line) = line else {
        eprintln!(
            "{} {} {}: no result ({}): {}",
            task.bin.display(),
            task.workload,
            task.config,
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    };
    let f: Vec<f64> = line[3..]
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (f.len() == 3).then(|| Sample {
        wall: f[0],
        cpu: f[1],
        tree_cpu,
        rss: f[2],
    })
}

/// xorshift64*, for the shuffles (no dependency, reproducible).
fn shuffle<T>(v: &mut [T], seed: &mut u64) {
    for i in (1..v.len()).rev() {
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        let j = (seed.wrapping_mul(0x2545_F491_4F6C_DD1D) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut nofp = PathBuf::from("target/user-build/nofp/release");
    let mut fp: Option<PathBuf> = None;
    let mut rounds = 5usize;
    let mut workloads = "churn,job,threads,serde,serde_values,serde_pretty,serde_typed,serde_docs".to_string();
    let mut heaptrack = true;
    let mut mem = false;
    let mut raw: Option<PathBuf> = None;
    let mut reps = 1usize;
    let mut configs: Option<String> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nofp" => nofp = args.next().map(PathBuf::from).unwrap_or(nofp),
            "--fp" => fp = args.next().map(PathBuf::from),
            "--rounds" => rounds = args.next().and_then(|r| r.parse().ok()).unwrap_or(rounds),
            "--reps" => reps = args.next().and_then(|r| r.parse().ok()).unwrap_or(reps),
            "--workloads" => workloads = args.next().unwrap_or(workloads),
            "--configs" => configs = args.next(),
            "--no-heaptrack" => heaptrack = false,
            "--mem" => mem = true,
            "--raw" => raw = args.next().map(PathBuf::from),
            other => {
                eprintln!("unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    if heaptrack && Command::new("heaptrack").arg("--version").output().is_err() {
        eprintln!("heaptrack not found: its rows are skipped");
        heaptrack = false;
    }
    let tmp = std::env::temp_dir().join(format!("ub_run.{}", std::process::id()));
    let _ = std::fs::create_dir_all(&tmp);
    let sys = |d: &PathBuf| d.join("ub_system");
    let tracked = |d: &PathBuf| d.join("ub_allocscope");
    let dhat = nofp.join("ub_dhat");
    let wanted = |label: &str| {
        configs.as_ref().is_none_or(|c| {
            label == "system" || label == "system_fp" || c.split(',').any(|x| x == label)
        })
    };

    let mut tasks = Vec::new();
    let add = |tasks: &mut Vec<Task>,
               label: &str,
               group: &str,
               workload: &str,
               bin: PathBuf,
               config: &str,
               ht: bool,
               base: &str| {
        if wanted(label) {
            tasks.push(Task {
                label: label.into(),
                group: group.into(),
                workload: workload.into(),
                bin,
                config: config.into(),
                heaptrack: ht,
                base: base.into(),
            });
        }
    };
    // Every workload: `System`, the two floors (`floor_header`: allocscope's 8-byte header
    // and no counting; `floor_count`: per-thread counting and no header), then allocscope in
    // each configuration, all against `System` in the same rounds.
    let floors = |d: &PathBuf| (d.join("ub_header"), d.join("ub_count"));
    let system_and_tracked = |tasks: &mut Vec<Task>, w: &str| {
        add(tasks, "system", w, w, sys(&nofp), "system", false, "system");
        let (header, count) = floors(&nofp);
        add(tasks, "floor_header", w, w, header, "h8", false, "system");
        add(tasks, "floor_count", w, w, count, "count", false, "system");
        for c in ["outside", "off", "sampled", "every"] {
            add(tasks, c, w, w, tracked(&nofp), c, false, "system");
        }
    };
    if mem {
        for w in ["objects16", "objects24", "objects32"] {
            system_and_tracked(&mut tasks, w);
            // The former 16-byte header, for the before/after of the 8-byte one.
            let (header, _) = floors(&nofp);
            add(
                &mut tasks,
                "floor_header16",
                w,
                w,
                header,
                "h16",
                false,
                "system",
            );
            add(
                &mut tasks,
                "dhat",
                w,
                w,
                dhat.clone(),
                "dhat",
                false,
                "system",
            );
        }
    } else {
        for w in workloads.split(',') {
            let small = format!("{w}_small");
            system_and_tracked(&mut tasks, w);
            if let Some(fp) = &fp {
                add(
                    &mut tasks,
                    "system_fp",
                    w,
                    w,
                    sys(fp),
                    "system",
                    false,
                    "system_fp",
                );
                for c in ["off", "sampled", "every"] {
                    add(
                        &mut tasks,
                        &format!("{c}_fp"),
                        w,
                        w,
                        tracked(fp),
                        c,
                        false,
                        "system_fp",
                    );
                }
            }
            add(
                &mut tasks,
                "system",
                &small,
                &small,
                sys(&nofp),
                "system",
                false,
                "system",
            );
            add(
                &mut tasks,
                "every_dwarf",
                &small,
                &small,
                tracked(&nofp),
                "every_dwarf",
                false,
                "system",
            );
            add(
                &mut tasks,
                "dhat",
                &small,
                &small,
                dhat.clone(),
                "dhat",
                false,
                "system",
            );
            if heaptrack {
                add(
                    &mut tasks,
                    "heaptrack",
                    &small,
                    &small,
                    sys(&nofp),
                    "system",
                    true,
                    "system",
                );
            }
        }
    }

    // (round, group, label) -> sample
    let mut results: BTreeMap<(usize, String, String), Sample> = BTreeMap::new();
    let mut seed = 0x5EED_1234_u64;
    let rounds = if mem { rounds.min(3) } else { rounds };
    for round in 0..rounds {
        let mut order = tasks.clone();
        shuffle(&mut order, &mut seed);
        for t in &order {
            if let Some(s) = run(t, reps, &tmp) {
                results.insert((round, t.group.clone(), t.label.clone()), s);
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    if let Some(path) = &raw {
        let mut text =
            String::from("round\tgroup\tconfig\twall_ms\tcpu_ms\ttree_cpu_ms\tpeak_rss_kib\n");
        for ((r, g, l), s) in &results {
            text += &format!(
                "{r}\t{g}\t{l}\t{:.3}\t{:.3}\t{:.1}\t{}\n",
                s.wall, s.cpu, s.tree_cpu, s.rss
            );
        }
        let _ = std::fs::write(path, text);
    }

    // Groups and labels in the order they were added.
    let mut groups: Vec<String> = Vec::new();
    let mut labels: Vec<(String, String, bool)> = Vec::new();
    for t in &tasks {
        if !groups.contains(&t.group) {
            groups.push(t.group.clone());
        }
        if !labels.iter().any(|(l, ..)| *l == t.label) {
            labels.push((t.label.clone(), t.base.clone(), t.heaptrack));
        }
    }
    let ratios = |g: &str, label: &str, base: &str, f: &dyn Fn(&Sample) -> f64| -> Vec<f64> {
        (0..rounds)
            .filter_map(|r| {
                let a = results.get(&(r, g.to_string(), label.to_string()))?;
                let b = results.get(&(r, g.to_string(), base.to_string()))?;
                Some(f(a) / f(b))
            })
            .collect()
    };
    let cell = |v: Vec<f64>| -> String {
        if v.is_empty() {
            return "–".into();
        }
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{:.2}× ({:.2}–{:.2})", median(v), lo, hi)
    };
    if mem {
        println!("\nPeak RSS, 10 million live blocks (median of {rounds} runs):\n");
        println!("| block size | allocator | peak RSS (MiB) | ratio to System | bytes per block over System |");
        println!("|---|---|---:|---:|---:|");
        for g in &groups {
            for (label, base, _) in &labels {
                let rss: Vec<f64> = (0..rounds)
                    .filter_map(|r| results.get(&(r, g.clone(), label.clone())).map(|s| s.rss))
                    .collect();
                let brss: Vec<f64> = (0..rounds)
                    .filter_map(|r| results.get(&(r, g.clone(), base.clone())).map(|s| s.rss))
                    .collect();
                if rss.is_empty() || brss.is_empty() {
                    continue;
                }
                let (m, b) = (median(rss), median(brss));
                let size = g.trim_start_matches("objects");
                println!(
                    "| {size} B | {label} | {:.0} | {:.2}× | {:.1} |",
                    m / 1024.0,
                    m / b,
                    (m - b) * 1024.0 / 10_000_000.0
                );
            }
        }
        return;
    }
    for (title, pick) in [("CPU time", 0usize), ("Wall time", 1), ("Peak RSS", 2)] {
        println!("\n{title}: median per-round ratio to System (range) over {rounds} rounds\n");
        print!("| workload | System (ms or MiB) |");
        for (l, ..) in &labels {
            if !l.starts_with("system") {
                print!(" {l} |");
            }
        }
        println!();
        print!("|---|---:|");
        for (l, ..) in &labels {
            if !l.starts_with("system") {
                print!("---:|");
            }
        }
        println!();
        for g in &groups {
            // Groups with nothing measured but System (the 1/10-size ones when only the
            // full-size configurations run) make no row.
            let measured = labels.iter().any(|(l, ..)| {
                !l.starts_with("system")
                    && (0..rounds).any(|r| results.contains_key(&(r, g.clone(), l.clone())))
            });
            if !measured {
                continue;
            }
            let base_val: Vec<f64> = (0..rounds)
                .filter_map(|r| results.get(&(r, g.clone(), "system".into())))
                .map(|s| match pick {
                    0 => s.cpu,
                    1 => s.wall,
                    _ => s.rss / 1024.0,
                })
                .collect();
            print!("| {g} | {:.1} |", median(base_val));
            for (l, base, ht) in &labels {
                if l.starts_with("system") {
                    continue;
                }
                let f: &dyn Fn(&Sample) -> f64 = match (pick, *ht) {
                    (0, true) => &|s: &Sample| s.tree_cpu,
                    (0, false) => &|s: &Sample| s.cpu,
                    (1, _) => &|s: &Sample| s.wall,
                    _ => &|s: &Sample| s.rss,
                };
                // heaptrack's tree CPU is compared with System's tree CPU.
                print!(" {} |", cell(ratios(g, l, base, f)));
            }
            println!();
        }
    }
}
