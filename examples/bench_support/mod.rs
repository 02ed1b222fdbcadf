//! Shared by the single-process bench examples. Kept outside `workloads` so that callgrind's
//! `--toggle-collect='*workloads::*'` (scripts/bench_callgrind.sh) counts only the workloads:
//! a matching function around them would toggle collection off again.

/// For the single-process examples (`bench_workload`, `bench_tracked`): runs `run` once untimed
/// (as Criterion warms up), then `reps` times, and returns
/// `<name> <median wall ms> <min> <max> <median process CPU ms>`.
pub fn timed_line(name: &str, reps: usize, mut run: impl FnMut() -> u64) -> String {
    let reps = reps.max(1);
    std::hint::black_box(run());
    let mut wall = Vec::with_capacity(reps);
    let mut cpu = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (start, cpu_start) = (
            std::time::Instant::now(),
            super::workloads::process_cpu_time(),
        );
        std::hint::black_box(run());
        wall.push(start.elapsed().as_secs_f64() * 1e3);
        cpu.push((super::workloads::process_cpu_time() - cpu_start).as_secs_f64() * 1e3);
    }
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    format!(
        "{name} {:.3} {:.3} {:.3} {:.3}",
        wall[reps / 2],
        wall[0],
        wall[reps - 1],
        cpu[reps / 2]
    )
}
