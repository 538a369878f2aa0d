//! Watching the pullcache process from outside: resident memory (`VmRSS`),
//! threads and open file descriptors from `/proc/<pid>`, sampled once a
//! second on a thread of its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::lock;

/// One look at the process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    /// Seconds since the sampler started.
    pub(crate) secs: f64,
    pub(crate) rss_kib: u64,
    pub(crate) threads: u64,
    pub(crate) fds: u64,
}

/// `VmRSS` and `Threads` of `pid`, and its open file descriptors.
pub(crate) fn sample(pid: u32, secs: f64) -> anyhow::Result<Sample> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let value = |key: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {key} in {path}"))
    };
    Ok(Sample {
        secs,
        rss_kib: value("VmRSS:")?,
        threads: value("Threads:")?,
        fds: fd_count(pid)?,
    })
}

/// How many file descriptors `pid` has open.
pub(crate) fn fd_count(pid: u32) -> anyhow::Result<u64> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))?;
    Ok(entries.count() as u64)
}

/// `pid`'s open file descriptors by what they are: `socket`, `pipe`,
/// `anon_inode:[eventpoll]`, `blob file` (in the cache), `ingest file` (a
/// download in progress), or `file` with the last two components of other
/// paths, e.g. `file data/index.redb`.
pub(crate) fn fd_kinds(pid: u32) -> BTreeMap<String, u64> {
    let mut kinds = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return kinds;
    };
    for entry in entries.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let text = target.display().to_string();
        let kind = if let Some((kind, _)) = text.split_once(":[") {
            kind.to_owned()
        } else if text.starts_with("anon_inode:") {
            text
        } else if text.starts_with('/') {
            let components: Vec<&str> = text.rsplit('/').take(4).collect();
            match components.as_slice() {
                // <data_dir>/blobs/sha256/ab/<hex>
                [_, _, "sha256", "blobs"] => "blob file".to_owned(),
                [_, "ingest", ..] => "ingest file".to_owned(),
                [name, dir, ..] => format!("file {dir}/{name}"),
                _ => format!("file {text}"),
            }
        } else {
            text
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

/// Samples a process once a second until stopped.
pub(crate) struct Monitor {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Monitor {
    pub(crate) fn start(pid: u32) -> anyhow::Result<Monitor> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop2, samples2) = (stop.clone(), samples.clone());
        let thread = thread::Builder::new()
            .name("soak-monitor".into())
            .spawn(move || {
                let start = Instant::now();
                let mut next = start;
                while !stop2.load(Ordering::SeqCst) {
                    // A process that is gone stops yielding samples; the
                    // soak notices that on its own.
                    if let Ok(s) = sample(pid, start.elapsed().as_secs_f64()) {
                        lock(&samples2).push(s);
                    }
                    next += Duration::from_secs(1);
                    while !stop2.load(Ordering::SeqCst) && Instant::now() < next {
                        thread::sleep(Duration::from_millis(50));
                    }
                }
            })
            .context("cannot start the monitor thread")?;
        Ok(Monitor {
            stop,
            samples,
            thread: Some(thread),
        })
    }

    /// The samples so far.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }

    /// The latest sample, if any.
    pub(crate) fn latest(&self) -> Option<Sample> {
        lock(&self.samples).last().copied()
    }

    /// Stops sampling and returns every sample.
    pub(crate) fn stop(mut self) -> Vec<Sample> {
        self.halt();
        self.samples()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The digests (hex) of the cached blob files `pid` has open.
pub(crate) fn open_blob_files(pid: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut hexes: Vec<String> = entries
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter(|target| target.to_string_lossy().contains("/blobs/sha256/"))
        .filter_map(|target| Some(target.file_name()?.to_string_lossy().into_owned()))
        .collect();
    hexes.sort();
    hexes
}

/// CPU clock ticks (user + system) of this process: `(all its threads,
/// those of its live threads by name (`soak-client`, `soak-upstream`, ...),
/// its waited-for children, i.e. the curl processes)`, from fields 14 to 17
/// of `/proc/self/stat` and `/proc/self/task/<tid>/stat`.
pub(crate) fn own_cpu_ticks() -> (u64, BTreeMap<String, u64>, u64) {
    let mut by_name = BTreeMap::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Some((name, fields)) = read_stat(&task.path().join("stat")) {
                let ticks = field(&fields, 11) + field(&fields, 12);
                *by_name.entry(name).or_default() += ticks;
            }
        }
    }
    let (total, children) =
        read_stat(std::path::Path::new("/proc/self/stat")).map_or((0, 0), |(_, fields)| {
            (
                field(&fields, 11) + field(&fields, 12),
                field(&fields, 13) + field(&fields, 14),
            )
        });
    (total, by_name, children)
}

/// The command name and the fields after it (field 3 onwards) of a `stat`
/// file.
fn read_stat(path: &std::path::Path) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (head, after) = stat.rsplit_once(')')?;
    let (_, name) = head.split_once('(')?;
    Some((
        name.to_owned(),
        after.split_whitespace().map(str::to_owned).collect(),
    ))
}

fn field(fields: &[String], i: usize) -> u64 {
    fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0)
}
