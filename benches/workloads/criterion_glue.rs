//! Criterion glue shared by the bench binaries (`benches/system.rs`, `benches/allocscope.rs`,
//! `benches/dhat.rs`): the clock they measure with and the loop over workloads. Kept apart from
//! `workloads/mod.rs` so that the user-build harness (`benches/user-build/`), which includes the
//! workloads without Criterion, does not have to build it.

#![allow(dead_code)]

use std::hint::black_box;

use super::workloads::{process_cpu_time, Case, Spawner};

/// What a benchmark measures, chosen at run time with `BENCH_CLOCK`:
///
/// * `wall` (default): wall time, as BENCHMARKS.md states the targets;
/// * `cpu`: CPU time of the whole process (all threads, user + system). On a machine shared
///   with other work, wall time includes whatever time the scheduler gave to other processes;
///   CPU time does not, so ratios stay stable under load. For the `threads` workloads it sums
///   every thread's CPU time (contention on shared counters shows up; time spent blocked on the
///   channel does not).
pub struct Clock {
    cpu: bool,
}

impl Clock {
    /// The clock `BENCH_CLOCK` asks for.
    pub fn from_env() -> Clock {
        Clock {
            cpu: std::env::var("BENCH_CLOCK").is_ok_and(|v| v == "cpu"),
        }
    }
}

static WALL: criterion::measurement::WallTime = criterion::measurement::WallTime;

impl criterion::measurement::Measurement for Clock {
    type Intermediate = (std::time::Instant, std::time::Duration);
    type Value = std::time::Duration;

    fn start(&self) -> Self::Intermediate {
        (std::time::Instant::now(), process_cpu_time())
    }

    fn end(&self, (wall, cpu): Self::Intermediate) -> Self::Value {
        if self.cpu {
            process_cpu_time().saturating_sub(cpu)
        } else {
            wall.elapsed()
        }
    }

    fn add(&self, a: &Self::Value, b: &Self::Value) -> Self::Value {
        *a + *b
    }

    fn zero(&self) -> Self::Value {
        std::time::Duration::ZERO
    }

    fn to_f64(&self, value: &Self::Value) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        criterion::measurement::Measurement::formatter(&WALL)
    }
}

/// Criterion settings that keep a full run sane on a 2-core machine: every workload runs for
/// tens to hundreds of milliseconds, so 10 flat samples are enough for a stable median.
pub fn criterion() -> criterion::Criterion<Clock> {
    criterion::Criterion::default()
        .with_measurement(Clock::from_env())
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .nresamples(10_000)
        .without_plots()
}

/// Benchmarks `cases` under the configuration `config`: `wrap` runs one iteration (e.g. inside a
/// job scope), `spawn` starts the threads of the `threads` workloads.
pub fn bench_cases(
    c: &mut criterion::Criterion<Clock>,
    config: &str,
    cases: &[Case],
    wrap: &dyn Fn(&dyn Fn() -> u64) -> u64,
    spawn: Spawner,
) {
    for case in cases {
        let mut group = c.benchmark_group(case.name);
        group.sampling_mode(criterion::SamplingMode::Flat);
        group.bench_function(config, |b| {
            b.iter(|| black_box(wrap(&|| (case.run)(spawn))))
        });
        group.finish();
    }
}
