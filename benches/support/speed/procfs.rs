//! What the benchmark reads from `/proc`: CPU time of a process (all its
//! threads, exited ones included) or of this process's threads with a
//! given name, resetting a process's peak RSS between phases
//! (`clear_refs` 5, so VmHWM is the phase's own peak), and a sampler of
//! VmRSS while something runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::support::proxy;

/// utime + stime of `pid` in clock ticks (all threads).
pub(crate) fn process_ticks(pid: u32) -> u64 {
    proxy::cpu_ticks(pid).unwrap_or(0)
}

/// utime + stime, in clock ticks, of this process's live threads whose
/// name starts with `prefix` (e.g. a runtime's `thread_name`).
pub(crate) fn thread_ticks(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((_, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<u64> = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse().ok())
            .collect();
        total += fields.iter().sum::<u64>();
    }
    total
}

/// Resets `pid`'s VmHWM to its current RSS. `false` if the kernel refused.
pub(crate) fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// `(VmHWM, VmRSS)` of `pid` in KiB.
pub(crate) fn memory_kib(pid: u32) -> (u64, u64) {
    proxy::memory_kib(pid).unwrap_or((0, 0))
}

/// Samples `pid`'s VmRSS every 50 ms until stopped; returns the largest.
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("speed-rss".into())
            .spawn(move || {
                let mut max = 0;
                while !flag.load(Ordering::Relaxed) {
                    max = max.max(memory_kib(pid).1);
                    std::thread::sleep(Duration::from_millis(50));
                }
                max.max(memory_kib(pid).1)
            })
            .ok();
        RssSampler { stop, thread }
    }

    /// The largest VmRSS seen, in KiB.
    pub(crate) fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

/// Machine-wide CPU time from `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Default)]
pub(crate) struct MachineTicks {
    /// user + nice + system + irq + softirq, all CPUs.
    pub(crate) busy: u64,
    /// Time the hypervisor ran something else while a CPU wanted to run.
    pub(crate) steal: u64,
}

pub(crate) fn machine_ticks() -> MachineTicks {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    MachineTicks {
        busy: field(0) + field(1) + field(2) + field(5) + field(6),
        steal: field(7),
    }
}

/// This process's CPU time plus that of its children it has waited for
/// (every curl), in clock ticks.
pub(crate) fn self_and_children_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0;
    };
    after
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum()
}

/// CPU time of this process's children it has waited for (cutime +
/// cstime), in clock ticks: around one curl run, that curl's CPU.
pub(crate) fn children_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0;
    };
    after
        .split_whitespace()
        .skip(13)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum()
}
