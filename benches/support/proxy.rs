//! The `pullcache` process under test: the release binary, started with a
//! config in a temporary directory that intercepts the benchmark's
//! registry names and resolves them to its servers on 127.0.0.1. Its stderr is
//! kept line by line (the benchmark waits on its log lines, e.g. a blob's
//! commit), and its CPU time and peak RSS are read from `/proc/<pid>`.
//! It is killed when the handle is dropped, on a panic too.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How long pullcache may take to log its listen address.
const STARTUP_LIMIT: Duration = Duration::from_secs(20);

/// Environment variables pullcache reads; removed so the config file is the
/// whole story.
const PULLCACHE_ENV: &[&str] = &[
    "PULLCACHE_CONFIG",
    "PULLCACHE_LISTEN",
    "PULLCACHE_DATA_DIR",
    "PULLCACHE_LOG",
];

/// pullcache's stderr so far, and a way to wait for a line.
#[derive(Default)]
pub(crate) struct LogBook {
    state: Mutex<LogState>,
    grew: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// The pipe reached end of file: pullcache exited.
    closed: bool,
}

impl LogBook {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, line: String) {
        self.lock().lines.push(line);
        self.grew.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.grew.notify_all();
    }

    /// Every line so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lock().lines.clone()
    }

    /// The first line matching `wanted`, waiting up to `limit` for it.
    /// `None` on time-out or if pullcache exited without logging it.
    pub(crate) fn wait_for(
        &self,
        limit: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        let mut scanned = 0;
        loop {
            if let Some(line) = state.lines[scanned..].iter().find(|l| wanted(l)) {
                return Some(line.clone());
            }
            scanned = state.lines.len();
            let now = Instant::now();
            if state.closed || now >= deadline {
                return None;
            }
            state = self
                .grew
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Waits up to `limit` for pullcache to log how the fetch of blob `hex`
    /// ended.
    pub(crate) fn wait_commit(&self, hex: &str, limit: Duration) -> Commit {
        const CACHED: &str = "blob verified and cached";
        let line = self.wait_for(limit, |line| {
            line.contains(hex) && (line.contains(CACHED) || line.contains("blob fetch failed"))
        });
        match line {
            Some(line) if line.contains(CACHED) => Commit::Cached,
            Some(line) => Commit::Failed(line),
            None => Commit::NotLogged,
        }
    }
}

/// How pullcache's log ended the fetch of one blob.
pub(crate) enum Commit {
    /// "blob verified and cached".
    Cached,
    /// "blob fetch failed": the line.
    Failed(String),
    /// Neither in time, or pullcache exited first.
    NotLogged,
}

pub(crate) struct Pullcache {
    child: Child,
    addr: SocketAddr,
    ca_path: PathBuf,
    logs: Arc<LogBook>,
}

impl Pullcache {
    /// Starts `bin serve` with its data in `dir/data` and a config of
    /// `listen = "127.0.0.1:0"`, that `data_dir` and then `sections` (the
    /// caller's tables), and waits until it logs the address it listens on.
    pub(crate) fn start(bin: &Path, dir: &Path, sections: &str) -> anyhow::Result<Pullcache> {
        let data_dir = dir.join("data");
        let config_path = dir.join("pullcache.toml");
        let config = format!(
            "listen = \"127.0.0.1:0\"\n\
             data_dir = {data}\n\
             \n\
             {sections}",
            data = toml_str(&data_dir.display().to_string()),
        );
        std::fs::write(&config_path, config)
            .with_context(|| format!("cannot write {}", config_path.display()))?;

        let mut cmd = Command::new(bin);
        for var in PULLCACHE_ENV {
            cmd.env_remove(var);
        }
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn,pullcache=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;

        let logs = Arc::new(LogBook::default());
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = logs.clone();
        thread::Builder::new()
            .name("pullcache-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    // Warnings and errors are worth seeing as they happen;
                    // the rest is only waited on.
                    if line.contains(" WARN ") || line.contains(" ERROR ") {
                        eprintln!("[pullcache] {line}");
                    }
                    sink.push(line);
                }
                sink.close();
            })
            .context("cannot start the log reader thread")?;

        // From here on, a failure kills the child through Drop.
        let mut proxy = Pullcache {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca_path: data_dir.join("ca").join("ca.crt"),
            logs,
        };
        let line = proxy
            .logs
            .wait_for(STARTUP_LIMIT, |l| parse_listen_addr(l).is_some());
        let Some(addr) = line.as_deref().and_then(parse_listen_addr) else {
            let status = proxy.child.try_wait().ok().flatten();
            bail!(
                "pullcache did not log `listen.addr=` within {STARTUP_LIMIT:?} (exit status: {status:?}); its log:\n{}",
                proxy.logs.lines().join("\n")
            );
        };
        if !addr.ip().is_loopback() {
            bail!("pullcache listens on {addr}, not on loopback");
        }
        proxy.addr = addr;
        if !proxy.ca_path.is_file() {
            bail!(
                "pullcache is listening but {} does not exist",
                proxy.ca_path.display()
            );
        }
        Ok(proxy)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// pullcache's root CA, for curl's `--cacert`.
    pub(crate) fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    pub(crate) fn logs(&self) -> &LogBook {
        &self.logs
    }

    /// Fails if pullcache is no longer running.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "pullcache exited ({status}); its log:\n{}",
                self.logs.lines().join("\n")
            ),
        }
    }
}

impl Drop for Pullcache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a line like `… listen.addr=127.0.0.1:41234 listening`.
fn parse_listen_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listen.addr=")?;
    let token = rest.split_whitespace().next()?;
    token.trim_matches('"').parse().ok()
}

/// pullcache's tables for fetching from the benchmark's own servers:
/// `[intercept]` of `intercept`, `[upstream]` trusting their CA `ca` (plus
/// the caller's `upstream_extra` lines) and `[upstream.resolve]` sending
/// each host to its address on loopback.
pub(crate) fn upstream_sections(
    intercept: &[&str],
    ca: &Path,
    resolve: &[(&str, SocketAddr)],
    upstream_extra: &str,
) -> String {
    let hosts: Vec<String> = intercept.iter().map(|host| toml_str(host)).collect();
    let resolve: String = resolve
        .iter()
        .map(|(host, addr)| format!("{} = {}\n", toml_str(host), toml_str(&addr.to_string())))
        .collect();
    format!(
        "[intercept]\n\
         hosts = [{hosts}]\n\
         \n\
         [upstream]\n\
         ca_files = [{ca}]\n\
         {upstream_extra}\
         \n\
         [upstream.resolve]\n\
         {resolve}",
        hosts = hosts.join(", "),
        ca = toml_str(&ca.display().to_string()),
    )
}

/// A TOML basic string.
pub(crate) fn toml_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// User plus system CPU time of `pid` in clock ticks, from fields 14 and 15
/// of `/proc/<pid>/stat`. Counts every thread of the process.
pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) is in parentheses and may contain spaces;
    // fields are counted from the last ')'. After it come field 3 (state)
    // onwards, so utime (14) and stime (15) are at indexes 11 and 12.
    let (_, after) = stat
        .rsplit_once(')')
        .with_context(|| format!("unexpected {path}: {stat}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("unexpected {path}: {stat}"))
    };
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second for [`cpu_ticks`], from `getconf CLK_TCK`, and
/// whether it came from there (`false`: 100 was assumed).
pub(crate) fn clock_ticks_per_second() -> (u64, bool) {
    let asked = Command::new("getconf")
        .arg("CLK_TCK")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .filter(|&ticks: &u64| ticks > 0);
    match asked {
        Some(ticks) => (ticks, true),
        None => (100, false),
    }
}

/// `(VmHWM, VmRSS)` of `pid` in KiB: peak and current resident memory.
pub(crate) fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let value = |key: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {key} in {path}"))
    };
    Ok((value("VmHWM:")?, value("VmRSS:")?))
}

/// `target/release/pullcache` of this workspace (or of `CARGO_TARGET_DIR`);
/// `script` is the benchmark's wrapper that builds it, named in the error.
pub(crate) fn release_binary(script: &str) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let bin = target
        .join("release")
        .join(format!("pullcache{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        bail!(
            "{} is missing: run `cargo build --release -p pullcache` first \
             ({script} does)",
            bin.display()
        );
    }
    Ok(bin)
}
