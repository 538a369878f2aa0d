//! pullcache's speed benchmark: every figure of the speed issue measured in
//! one run on 127.0.0.1, each against a baseline from the same run, in
//! interleaved rounds (A B A B …), reported as medians with min–max and per
//! round ratios. The release `pullcache` process is measured from outside
//! (curl clients, CPU time and peak RSS from `/proc`); the baselines are
//! Debian's nginx (a static HTTPS file server and a `proxy_cache` reverse
//! proxy, started here with a generated config), a minimal rustls file
//! server written here (the ceiling) and an in-memory origin registry.
//! Phases: cache hits (per size), misses, concurrent misses vs concurrent
//! hits, tunnel vs direct, time to first byte through a never-seen host vs
//! a warm one, and peak RSS under 100 concurrent hits. It ends with a table
//! of the targets next to the measured ratios and a `SPEED-RESULT
//! {json}` line. Speed is reported, never asserted: the exit status is
//! non-zero only when a correctness check fails (a body with the wrong
//! digest or length, or pullcache fetching a blob from the origin other
//! than exactly once and exactly its size) or the run cannot go on.
//!
//! Timed curl downloads write their bodies to `/dev/null` and are checked
//! for HTTP 200 and length only: writing 256 MiB to a file, even on tmpfs,
//! costs curl about 0.29 CPU-s (≈ 1.1 CPU-s/GB, more than its TLS decrypt),
//! which made curl the bottleneck of every route. Digests are checked on
//! untimed downloads through the same routes instead: before the timed
//! rounds of the hit and tunnel phases, and after each miss round (the same
//! digest again through pullcache and nginx's cache) and each concurrent
//! cold batch.
//!
//! Run it with `benches/speed.sh` (installs nginx if missing and root,
//! builds the release binary). The environment tunes it; see `Settings`
//! and docs/benchmarks.md.

#![allow(clippy::print_stdout)] // the report is the benchmark's output

// The shared support modules: the speed benchmark uses all but the load
// benchmark's curl client.
#[allow(dead_code)]
mod support;

#[path = "support/speed/mod.rs"]
mod speed;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use speed::curl::{self, Get, Timing, Via};
use speed::files::{self, FileServer};
use speed::floor::{self, Floor};
use speed::nginx::{self, Nginx, NginxSetup};
use speed::pool::{self, PoolJob};
use speed::procfs::{self, RssSampler};
use speed::relay::{self, Relay};
use speed::stats::{summary, Failures, Series, Summary};
use support::blobs::{self, Blob};
use support::certs::TestCa;
use support::client::sha256_file;
use support::origin::{Content, Origin, OriginSetup, Side};
use support::proxy::{self, upstream_sections, Commit, Pullcache};
use support::{blob_path, env_count, REGISTRY_HOST, REPOSITORY};

/// How long pullcache may take, after the client has its last byte, to log
/// that a blob was committed (the fsync of a large file can be slow).
const COMMIT_LIMIT: Duration = Duration::from_secs(180);

/// Seed of the first generated blob; each later one adds one.
const BASE_SEED: u64 = 0x7370_6565_6462_656e; // "speedben"

/// The origin's runtime thread, for its CPU time.
const ORIGIN_THREAD: &str = "speed-origin";

/// The host tunnelled to the rustls file server (not intercepted).
const TUNNEL_HOST: &str = "bulk.test";

/// The intercepted host used warm in the first-byte phase; `r1.test` …
/// `rN.test` are the never-seen ones.
const WARM_HOST: &str = "r0.test";

const MIB: usize = 1 << 20;

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (and any filter); there is nothing to
    // select here, so arguments are ignored.
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("speed benchmark: a correctness check FAILED (see above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("speed benchmark: {error:#}");
            ExitCode::FAILURE
        }
    }
}

// === settings ===

const PHASES: [&str; 6] = ["hit", "miss", "concurrent", "tunnel", "ttfb", "rss"];

/// Everything the environment can change.
struct Settings {
    /// `PULLCACHE_BENCH_SIZES_MIB` (comma-separated; default 256, plus 1024
    /// with `PULLCACHE_BENCH_LARGE=1`): blob sizes for hits and misses.
    sizes_mib: Vec<usize>,
    /// `PULLCACHE_BENCH_ROUNDS` (5): rounds of the hit, miss and tunnel
    /// phases.
    rounds: usize,
    /// `PULLCACHE_BENCH_CLIENTS` (16): clients of the concurrent phase.
    clients: usize,
    /// `PULLCACHE_BENCH_CONCURRENT_MIB` (256).
    concurrent_mib: usize,
    /// `PULLCACHE_BENCH_CONCURRENT_ROUNDS` (3).
    concurrent_rounds: usize,
    /// `PULLCACHE_BENCH_TTFB_ROUNDS` (15): also how many never-seen hosts
    /// pullcache is configured with.
    ttfb_rounds: usize,
    /// `PULLCACHE_BENCH_SMALL_KIB` (16): the first-byte phase's blob.
    small_kib: usize,
    /// `PULLCACHE_BENCH_RSS_CLIENTS` (100).
    rss_clients: usize,
    /// `PULLCACHE_BENCH_RSS_MIB` (256).
    rss_mib: usize,
    /// `PULLCACHE_BENCH_TUNNEL_MIB` (the first size).
    tunnel_mib: usize,
    /// `PULLCACHE_BENCH_PHASES` (all): a comma-separated subset of
    /// [`PHASES`].
    phases: BTreeSet<String>,
    /// `PULLCACHE_BENCH_COMPARE_BIN` (none): another pullcache binary, run
    /// beside this one and measured in the same rounds of the hit, miss
    /// and tunnel phases, to compare two builds with the machine's drift
    /// cancelled.
    compare_bin: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let large = std::env::var("PULLCACHE_BENCH_LARGE").is_ok_and(|v| v.trim() == "1");
        let sizes_mib = match std::env::var("PULLCACHE_BENCH_SIZES_MIB") {
            Ok(text) => text
                .split(',')
                .map(|s| match s.trim().parse::<usize>() {
                    Ok(n) if n > 0 && n <= 64 * 1024 => Ok(n),
                    _ => bail!("PULLCACHE_BENCH_SIZES_MIB: {s:?} is not a size in MiB (1–65536)"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            Err(_) if large => vec![256, 1024],
            Err(_) => vec![256],
        };
        let phases: BTreeSet<String> = match std::env::var("PULLCACHE_BENCH_PHASES") {
            Ok(text) => text
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            Err(_) => PHASES.iter().map(|s| (*s).to_owned()).collect(),
        };
        if let Some(unknown) = phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
            bail!(
                "PULLCACHE_BENCH_PHASES: unknown phase {unknown:?} (known: {})",
                PHASES.join(",")
            );
        }
        Ok(Settings {
            tunnel_mib: env_count("PULLCACHE_BENCH_TUNNEL_MIB", sizes_mib[0])?,
            sizes_mib,
            rounds: env_count("PULLCACHE_BENCH_ROUNDS", 5)?,
            clients: env_count("PULLCACHE_BENCH_CLIENTS", 16)?,
            concurrent_mib: env_count("PULLCACHE_BENCH_CONCURRENT_MIB", 256)?,
            concurrent_rounds: env_count("PULLCACHE_BENCH_CONCURRENT_ROUNDS", 3)?,
            ttfb_rounds: env_count("PULLCACHE_BENCH_TTFB_ROUNDS", 15)?,
            small_kib: env_count("PULLCACHE_BENCH_SMALL_KIB", 16)?,
            rss_clients: env_count("PULLCACHE_BENCH_RSS_CLIENTS", 100)?,
            rss_mib: env_count("PULLCACHE_BENCH_RSS_MIB", 256)?,
            phases,
            compare_bin: match std::env::var_os("PULLCACHE_BENCH_COMPARE_BIN") {
                Some(path) if Path::new(&path).is_file() => Some(PathBuf::from(path)),
                Some(path) => bail!("PULLCACHE_BENCH_COMPARE_BIN: {path:?} is not a file"),
                None => None,
            },
        })
    }

    fn wants(&self, phase: &str) -> bool {
        self.phases.contains(phase)
    }
}

// === the bench ===

/// Which pullcache: the one measured against the baselines, or the
/// comparison build beside it.
#[derive(Clone, Copy)]
enum Build {
    Measured,
    Compared,
}

impl Build {
    /// How the report names it.
    fn name(self) -> &'static str {
        match self {
            Build::Measured => "pullcache",
            Build::Compared => "the comparison build",
        }
    }

    /// Its listener on the origin.
    fn side(self) -> Side {
        match self {
            Build::Measured => Side::Pullcache,
            Build::Compared => Side::Compare,
        }
    }
}

/// Where a server's CPU time is read.
#[derive(Clone, Copy)]
enum Meter {
    /// A child process (pullcache, nginx).
    Process(u32),
    /// Threads of this process with this name prefix (the in-process
    /// servers' runtimes).
    Threads(&'static str),
}

impl Meter {
    fn ticks(self) -> u64 {
        match self {
            Meter::Process(pid) => procfs::process_ticks(pid),
            Meter::Threads(prefix) => procfs::thread_ticks(prefix),
        }
    }
}

/// The bytes a download must deliver.
#[derive(Clone)]
struct Expect {
    hex: String,
    size: u64,
}

impl Expect {
    fn of(blob: &Blob) -> Expect {
        Expect {
            hex: blob.hex.clone(),
            size: blob.bytes.len() as u64,
        }
    }

    fn path(&self) -> String {
        blob_path(&self.hex)
    }
}

/// One measured route of a phase.
struct Route<'a> {
    label: &'static str,
    get: Get<'a>,
    meter: Option<Meter>,
}

struct Bench {
    settings: Settings,
    ticks_per_sec: u64,
    /// On disk: pullcache's data, nginx's cache, the served files.
    dir: tempfile::TempDir,
    /// On tmpfs when there is one: the bodies of the untimed, verified
    /// downloads (timed ones go to `/dev/null`).
    scratch: tempfile::TempDir,
    www: PathBuf,
    ca: TestCa,
    origin: Origin,
    files: FileServer,
    nginx: Option<Nginx>,
    /// Why nginx is not measured, when it is not.
    nginx_missing: Option<String>,
    /// `None` only while it is being restarted.
    pullcache: Option<Pullcache>,
    pullcache_ca: PathBuf,
    /// How to start pullcache again: binary, directory, config sections.
    pullcache_bin: PathBuf,
    pullcache_dir: PathBuf,
    pullcache_sections: String,
    /// The comparison build, when `PULLCACHE_BENCH_COMPARE_BIN` names one:
    /// its own data directory and CA, its own origin listener.
    compare: Option<Pullcache>,
    /// Their `/metrics` counters, just before they were stopped.
    metrics_before_restart: Vec<String>,
    failures: Failures,
    next_seed: u64,
    /// Cached blobs by size, each also a file under `www`.
    hit_blobs: BTreeMap<u64, Expect>,
    /// The figures, as they are measured.
    targets: Vec<TargetRow>,
    /// The machine's hashing and copying speeds, taken before the phases.
    floor: Option<Floor>,
    json: serde_json::Map<String, Value>,
    /// Peak RSS (VmHWM, KiB) of pullcache per phase.
    peaks: Vec<(String, u64)>,
    peak_reset_works: bool,
    /// Wall time per phase.
    phase_secs: Vec<(String, f64)>,
    /// HTTP versions curl reported, with counts.
    versions: BTreeMap<String, usize>,
    /// Downloads with their bodies to `/dev/null` (every timed one, and the
    /// concurrent phase's warm-up batch), length checked.
    null_downloads: usize,
    /// Bodies whose digest was checked, by route, in the order first seen.
    verified_routes: Vec<(String, usize)>,
}

/// A row of the final table.
struct TargetRow {
    figure: String,
    measured: String,
    target: &'static str,
    met: Option<bool>,
}

fn run() -> anyhow::Result<bool> {
    let settings = Settings::from_env()?;
    let bin = proxy::release_binary("benches/speed.sh")?;
    let started = Instant::now();
    let mut bench = Bench::start(settings, &bin)?;
    if bench.settings.wants("miss") {
        bench.floor = Some(floor::measure());
    }
    let load_before = loadavg();
    let machine_before = procfs::machine_ticks();
    let ours_before = bench.own_ticks();
    let window = Instant::now();

    let sizes = bench.settings.sizes_mib.clone();
    for &mib in &sizes {
        if bench.settings.wants("hit") {
            bench.phase(&format!("hit {mib} MiB"), |b| b.hit_phase(mib))?;
        }
        if bench.settings.wants("miss") {
            bench.phase(&format!("miss {mib} MiB"), |b| b.miss_phase(mib))?;
        }
    }
    if bench.settings.wants("concurrent") {
        bench.phase("concurrent", Bench::concurrent_phase)?;
    }
    if bench.settings.wants("tunnel") {
        bench.phase("tunnel", Bench::tunnel_phase)?;
    }
    if bench.settings.wants("ttfb") {
        bench.phase("ttfb", Bench::ttfb_phase)?;
    }
    if bench.settings.wants("rss") {
        bench.phase("rss", Bench::rss_phase)?;
    }
    bench.pc_mut().check_alive()?;
    let machine = procfs::machine_ticks();
    let usage = CpuUsage {
        busy: machine.busy.saturating_sub(machine_before.busy),
        steal: machine.steal.saturating_sub(machine_before.steal),
        ours: bench.own_ticks().saturating_sub(ours_before),
        secs: window.elapsed().as_secs_f64(),
    };
    bench.finish(&bin, started.elapsed().as_secs_f64(), &load_before, usage)
}

/// The machine's CPU over the phases, in clock ticks: how much of it other
/// processes took is the run's noise.
struct CpuUsage {
    busy: u64,
    steal: u64,
    /// This benchmark, its curl children, pullcache (both builds) and nginx.
    ours: u64,
    /// The wall time they were measured over.
    secs: f64,
}

impl Bench {
    fn start(settings: Settings, bin: &Path) -> anyhow::Result<Bench> {
        let (ticks_per_sec, from_getconf) = proxy::clock_ticks_per_second();
        if !from_getconf {
            eprintln!("speed: getconf CLK_TCK failed; assuming 100 ticks/s");
        }
        let dir = tempfile::Builder::new()
            .prefix("pullcache-speed")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let shm = Path::new("/dev/shm");
        let scratch = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("pullcache-speed")
                .tempdir_in(shm)
                .or_else(|_| {
                    tempfile::Builder::new()
                        .prefix("out")
                        .tempdir_in(dir.path())
                })
        } else {
            tempfile::Builder::new()
                .prefix("out")
                .tempdir_in(dir.path())
        }
        .context("cannot create the scratch directory")?;
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www)?;

        // One CA and one leaf for every server of the run: the origin, the
        // rustls file server and nginx, for the registry name, the tunnel
        // host and the first-byte phase's hosts.
        let ttfb_hosts = ttfb_hosts(settings.ttfb_rounds);
        let mut names = vec![REGISTRY_HOST.to_owned(), TUNNEL_HOST.to_owned()];
        names.extend(ttfb_hosts.iter().cloned());
        let ca = TestCa::new(dir.path(), "bench")?;
        let leaf = ca.leaf(dir.path(), "servers", &names)?;
        // A listener for the comparison build only when there is one.
        let sides: &'static [Side] = if settings.compare_bin.is_some() {
            &[Side::Direct, Side::Pullcache, Side::Nginx, Side::Compare]
        } else {
            &[Side::Direct, Side::Pullcache, Side::Nginx]
        };
        let origin = Origin::start(OriginSetup {
            thread_name: ORIGIN_THREAD,
            tls: leaf.server_config(&[b"h2", b"http/1.1"])?,
            sides,
            repository: REPOSITORY,
            catalogue: Arc::default(),
        })?;
        let files = FileServer::start(&www, leaf.server_config(&[b"http/1.1"])?)?;

        let (nginx, nginx_missing) = match nginx::find() {
            None => (
                None,
                Some(
                    "nginx is not installed (benches/speed.sh installs it as root; \
                     or apt-get install nginx)"
                        .to_owned(),
                ),
            ),
            Some(nginx_bin) => {
                let nginx_dir = dir.path().join("nginx");
                std::fs::create_dir_all(&nginx_dir)?;
                let setup = NginxSetup {
                    bin: &nginx_bin,
                    dir: &nginx_dir,
                    www: &www,
                    cert: &leaf.chain_path,
                    key: &leaf.key_path,
                    host: REGISTRY_HOST,
                    origin: origin.addr(Side::Nginx),
                    origin_ca: ca.pem_path(),
                };
                match Nginx::start(&setup) {
                    Ok(nginx) => (Some(nginx), None),
                    Err(error) => {
                        eprintln!("speed: nginx baselines not measured: {error:#}");
                        (None, Some(format!("nginx did not start: {error:#}")))
                    }
                }
            }
        };

        let mut hosts = vec![REGISTRY_HOST];
        hosts.extend(ttfb_hosts.iter().map(String::as_str));
        // A pullcache's upstream config: the registry hosts on its own
        // origin listener, the tunnel host on the file server.
        let sections_for = |side: Side| {
            let mut resolve: Vec<(&str, SocketAddr)> = hosts
                .iter()
                .map(|host| (*host, origin.addr(side)))
                .collect();
            resolve.push((TUNNEL_HOST, files.addr()));
            upstream_sections(&hosts, ca.pem_path(), &resolve, "")
        };
        let sections = sections_for(Side::Pullcache);
        let pullcache_dir = dir.path().join("pullcache");
        std::fs::create_dir_all(&pullcache_dir)?;
        let pullcache = Pullcache::start(bin, &pullcache_dir, &sections)?;
        let pullcache_ca = pullcache.ca_path().to_path_buf();
        let peak_reset_works = procfs::reset_peak(pullcache.pid());
        let compare = match &settings.compare_bin {
            None => None,
            Some(compare_bin) => {
                let sections = sections_for(Side::Compare);
                let compare_dir = dir.path().join("pullcache-compare");
                std::fs::create_dir_all(&compare_dir)?;
                let compare = Pullcache::start(compare_bin, &compare_dir, &sections)
                    .context("cannot start the comparison build")?;
                eprintln!(
                    "speed: comparison build {} (pid {}) on {}",
                    compare_bin.display(),
                    compare.pid(),
                    compare.addr()
                );
                Some(compare)
            }
        };
        eprintln!(
            "speed: pullcache (pid {}) on {}; origin on {}/{}/{}; rustls file server on {}; nginx {}",
            pullcache.pid(),
            pullcache.addr(),
            origin.addr(Side::Direct),
            origin.addr(Side::Pullcache),
            origin.addr(Side::Nginx),
            files.addr(),
            nginx.as_ref().map_or_else(
                || "not running".to_owned(),
                |n| format!(
                    "(pid {}) static on {}, proxy_cache on {}",
                    n.pid(),
                    n.static_addr(),
                    n.cache_addr()
                )
            ),
        );
        Ok(Bench {
            settings,
            ticks_per_sec,
            dir,
            scratch,
            www,
            ca,
            origin,
            files,
            nginx,
            nginx_missing,
            pullcache: Some(pullcache),
            pullcache_ca,
            pullcache_bin: bin.to_path_buf(),
            pullcache_dir,
            pullcache_sections: sections,
            compare,
            metrics_before_restart: Vec::new(),
            failures: Failures::default(),
            next_seed: BASE_SEED,
            hit_blobs: BTreeMap::new(),
            targets: Vec::new(),
            floor: None,
            json: serde_json::Map::new(),
            peaks: Vec::new(),
            peak_reset_works,
            phase_secs: Vec::new(),
            versions: BTreeMap::new(),
            null_downloads: 0,
            verified_routes: Vec::new(),
        })
    }

    /// Runs one phase: peak RSS reset before, read after; wall time noted.
    fn phase(
        &mut self,
        name: &str,
        body: impl FnOnce(&mut Bench) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        eprintln!("speed: phase {name}");
        self.pc_mut().check_alive()?;
        if let Some(compare) = &mut self.compare {
            compare.check_alive().context("the comparison build")?;
        }
        if let Some(nginx) = &mut self.nginx {
            nginx.check_alive()?;
        }
        let pid = self.pc().pid();
        if self.peak_reset_works {
            procfs::reset_peak(pid);
        }
        let started = Instant::now();
        body(self).with_context(|| format!("phase {name}"))?;
        self.phase_secs
            .push((name.to_owned(), started.elapsed().as_secs_f64()));
        // The phase may have restarted pullcache: read the running one.
        let pid = self.pc().pid();
        self.peaks
            .push((name.to_owned(), procfs::memory_kib(pid).0));
        Ok(())
    }

    fn pc(&self) -> &Pullcache {
        self.pullcache.as_ref().expect("pullcache is running")
    }

    fn pc_mut(&mut self) -> &mut Pullcache {
        self.pullcache.as_mut().expect("pullcache is running")
    }

    /// Stops pullcache (SIGTERM, so its index is closed cleanly) and starts
    /// it again on the same data directory and config: same CA, same cache,
    /// a new process. Returns the old process's VmRSS in KiB.
    fn restart_pullcache(&mut self) -> anyhow::Result<u64> {
        self.metrics_before_restart.push(self.metrics());
        let old = self.pullcache.take().expect("pullcache is running");
        let pid = old.pid();
        let (_, rss) = procfs::memory_kib(pid);
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdin(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        // Until it has exited (a zombie: state Z) or the deadline passes.
        while Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            if matches!(state, None | Some("Z" | "X")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(old); // kills it if it is still running, and reaps it
        let fresh = Pullcache::start(
            &self.pullcache_bin,
            &self.pullcache_dir,
            &self.pullcache_sections,
        )?;
        eprintln!(
            "speed: restarted pullcache: pid {} on {}",
            fresh.pid(),
            fresh.addr()
        );
        self.pullcache = Some(fresh);
        Ok(rss)
    }

    /// CPU ticks of everything this run started: this process and its
    /// waited-for children (every curl, and a restarted pullcache once
    /// reaped), the running pullcache, nginx.
    fn own_ticks(&self) -> u64 {
        procfs::self_and_children_ticks()
            + procfs::process_ticks(self.pc().pid())
            + self
                .compare
                .as_ref()
                .map_or(0, |c| procfs::process_ticks(c.pid()))
            + self
                .nginx
                .as_ref()
                .map_or(0, |n| procfs::process_ticks(n.pid()))
    }

    fn pullcache_addr(&self) -> SocketAddr {
        self.pc().addr()
    }

    fn pullcache_meter(&self) -> Meter {
        Meter::Process(self.pc().pid())
    }

    /// The builds running: this one, and the comparison build if asked for.
    fn builds(&self) -> Vec<Build> {
        let mut builds = vec![Build::Measured];
        if self.compare.is_some() {
            builds.push(Build::Compared);
        }
        builds
    }

    /// The comparison build's address and CA, if there is one.
    fn compare_endpoint(&self) -> Option<(SocketAddr, PathBuf)> {
        self.compare
            .as_ref()
            .map(|c| (c.addr(), c.ca_path().to_path_buf()))
    }

    fn compare_meter(&self) -> Option<Meter> {
        self.compare.as_ref().map(|c| Meter::Process(c.pid()))
    }

    /// A new blob of `size` bytes (untimed; generated with its SHA-256).
    fn generate(&mut self, size: usize) -> Blob {
        let seed = self.next_seed;
        self.next_seed += 1;
        blobs::generate(1, size, seed)
            .pop()
            .expect("one blob was asked for")
    }

    /// Runs one curl download with its body going to `out`; tallies the HTTP
    /// version and notes curl's own CPU ticks in the timing.
    fn curl(&mut self, get: &Get<'_>, out: &Path, label: &str) -> anyhow::Result<Timing> {
        let client_before = procfs::children_ticks();
        let mut timing = get.run(out).with_context(|| label.to_owned())?;
        timing.client_ticks = procfs::children_ticks().saturating_sub(client_before);
        *self
            .versions
            .entry(format!("HTTP/{}", timing.http_version))
            .or_default() += 1;
        Ok(timing)
    }

    /// A timed download, metering `meter`: curl writes the body to
    /// `/dev/null` (writing it to a file, even on tmpfs, costs curl about
    /// 1.1 CPU-s/GB and made curl the bottleneck of every route), so only
    /// HTTP 200 and curl's byte count are checked here; digests are checked
    /// on untimed downloads ([`Bench::verified`]). Returns curl's timing and
    /// the server's CPU ticks.
    fn timed(
        &mut self,
        get: &Get<'_>,
        meter: Option<Meter>,
        expect: &Expect,
        label: &str,
    ) -> anyhow::Result<(Timing, Option<u64>)> {
        let before = meter.map(Meter::ticks);
        let timing = self.curl(get, Path::new("/dev/null"), label)?;
        let ticks = meter.zip(before).map(|(m, b)| m.ticks().saturating_sub(b));
        self.null_downloads += 1;
        self.check_length(timing.bytes, expect, label);
        Ok((timing, ticks))
    }

    /// An untimed download that checks the body: written to the scratch file
    /// (tmpfs when there is one), hashed, its length and digest checked, the
    /// file deleted. `route` names what it went through, for the report's
    /// correctness line.
    fn verified(
        &mut self,
        get: &Get<'_>,
        expect: &Expect,
        route: &str,
        label: &str,
    ) -> anyhow::Result<()> {
        let out = self.scratch.path().join("body.bin");
        let timing = self.curl(get, &out, label)?;
        let hex = sha256_file(&out)?;
        std::fs::remove_file(&out).with_context(|| format!("cannot remove {}", out.display()))?;
        self.check_body(&hex, timing.bytes, expect, label);
        self.note_verified(route, 1);
        Ok(())
    }

    /// Counts `n` bodies whose digest was checked on `route`.
    fn note_verified(&mut self, route: &str, n: usize) {
        match self.verified_routes.iter_mut().find(|(r, _)| r == route) {
            Some((_, count)) => *count += n,
            None => self.verified_routes.push((route.to_owned(), n)),
        }
    }

    /// One untimed, verified download per route, in order.
    fn verify_routes(
        &mut self,
        name: &str,
        routes: &[Route<'_>],
        expect: &Expect,
    ) -> anyhow::Result<()> {
        for route in routes {
            let label = format!("{name} {} (verification)", route.label);
            self.verified(
                &route.get,
                expect,
                &format!("{name}: {}", route.label),
                &label,
            )?;
        }
        Ok(())
    }

    fn check_body(&mut self, hex: &str, bytes: u64, expect: &Expect, label: &str) {
        if hex != expect.hex {
            self.failures.add(format!(
                "{label}: body sha256:{hex} is not the digest sha256:{}",
                expect.hex
            ));
        }
        self.check_length(bytes, expect, label);
    }

    fn check_length(&mut self, bytes: u64, expect: &Expect, label: &str) {
        if bytes != expect.size {
            self.failures.add(format!(
                "{label}: {bytes} bytes downloaded, the blob has {}",
                expect.size
            ));
        }
    }

    /// Waits until pullcache logs that `hex` was committed; a failure if it
    /// logs a failed fetch instead, or nothing in time.
    fn wait_committed(&mut self, hex: &str, label: &str) {
        self.wait_committed_by(Build::Measured, hex, label);
    }

    /// [`Bench::wait_committed`] for either build.
    fn wait_committed_by(&mut self, build: Build, hex: &str, label: &str) {
        let pullcache = match build {
            Build::Measured => self.pc(),
            Build::Compared => self.compare.as_ref().expect("a comparison build"),
        };
        match pullcache.logs().wait_commit(hex, COMMIT_LIMIT) {
            Commit::Cached => {}
            Commit::Failed(line) => self.failures.add(format!(
                "{label}: {} did not cache the blob: {line}",
                build.name()
            )),
            Commit::NotLogged => self.failures.add(format!(
                "{label}: {} logged no commit for sha256:{hex} within {COMMIT_LIMIT:?}",
                build.name()
            )),
        }
    }

    /// Checks that pullcache fetched `expect` from the origin exactly once,
    /// and exactly its size in bytes.
    fn check_fetched_once(&mut self, expect: &Expect, label: &str) {
        self.check_fetched_once_by(Build::Measured, expect, label);
    }

    /// [`Bench::check_fetched_once`] for either build.
    fn check_fetched_once_by(&mut self, build: Build, expect: &Expect, label: &str) {
        let side = build.side();
        let gets = self.origin.blob_gets(side, &expect.hex);
        let bytes = self.origin.blob_bytes_sent(side, &expect.hex);
        if gets != 1 {
            self.failures.add(format!(
                "{label}: {} fetched sha256:{} from the origin {gets} times, not once",
                build.name(),
                expect.hex
            ));
        }
        if bytes != expect.size {
            self.failures.add(format!(
                "{label}: the origin sent {} {bytes} bytes of sha256:{}, not its {} bytes",
                build.name(),
                expect.hex,
                expect.size
            ));
        }
    }

    /// A blob of `mib` MiB that pullcache has cached and that nginx and the
    /// rustls file server serve as a file, made on first use: generated,
    /// written under `www`, fetched once through pullcache (untimed,
    /// verified, committed), then dropped from the origin. The phases that
    /// time it verify (and so warm up) their own routes first.
    fn hit_blob(&mut self, mib: usize) -> anyhow::Result<Expect> {
        let size = (mib * MIB) as u64;
        if let Some(expect) = self.hit_blobs.get(&size) {
            return Ok(expect.clone());
        }
        let blob = self.generate(mib * MIB);
        let expect = Expect::of(&blob);
        let path = expect.path();
        let file = self.www.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().expect("blob files have a parent"))?;
        std::fs::write(&file, &blob.bytes)
            .with_context(|| format!("cannot write {}", file.display()))?;
        self.origin
            .catalogue()
            .insert(expect.hex.clone(), Content::Shared(blob.bytes.clone()));
        drop(blob);

        let label = format!("priming {mib} MiB");
        let pullcache_ca = self.pullcache_ca.clone();
        let via_pullcache = proxied(self.pullcache_addr(), REGISTRY_HOST, &path, &pullcache_ca);
        self.verified(&via_pullcache, &expect, "priming: pullcache miss", &label)?;
        self.wait_committed(&expect.hex, &label);
        if let Some((addr, ca)) = self.compare_endpoint() {
            let via_compare = proxied(addr, REGISTRY_HOST, &path, &ca);
            self.verified(&via_compare, &expect, "priming: comparison miss", &label)?;
            self.wait_committed_by(Build::Compared, &expect.hex, &label);
            self.check_fetched_once_by(Build::Compared, &expect, &label);
        }
        self.origin.catalogue().remove(&expect.hex);
        self.check_fetched_once(&expect, &label);
        self.hit_blobs.insert(size, expect.clone());
        Ok(expect)
    }

    /// Runs `rounds` rounds of `routes` in order, timed (bodies to
    /// `/dev/null`, lengths checked).
    fn interleave(
        &mut self,
        name: &str,
        rounds: usize,
        routes: &[Route<'_>],
        expect: &Expect,
    ) -> anyhow::Result<Vec<Series>> {
        let mut series: Vec<Series> = routes.iter().map(|_| Series::new(expect.size)).collect();
        for round in 1..=rounds {
            let mut line = Vec::new();
            for (route, series) in routes.iter().zip(&mut series) {
                let label = format!("{name} round {round} {}", route.label);
                let (timing, ticks) = on_machine(series, || {
                    self.timed(&route.get, route.meter, expect, &label)
                })?;
                series.push(timing.total, ticks);
                series.add_client(timing.client_ticks);
                line.push(format!("{} {:.3} s", route.label, timing.total));
            }
            eprintln!("  {name} round {round}/{rounds}: {}", line.join(", "));
        }
        Ok(series)
    }

    // === phase 1: hits ===

    fn hit_phase(&mut self, mib: usize) -> anyhow::Result<()> {
        let expect = self.hit_blob(mib)?;
        let path = expect.path();
        let ca = self.ca.pem_path().to_path_buf();
        let pullcache_ca = self.pullcache_ca.clone();
        let mut routes = Vec::new();
        if let Some(nginx) = &self.nginx {
            routes.push(Route {
                label: "nginx direct",
                get: Get {
                    via: Via::Direct(nginx.static_addr()),
                    host: REGISTRY_HOST,
                    path: &path,
                    ca: &ca,
                },
                meter: Some(Meter::Process(nginx.pid())),
            });
        }
        routes.push(Route {
            label: "rustls ceiling",
            get: Get {
                via: Via::Direct(self.files.addr()),
                host: REGISTRY_HOST,
                path: &path,
                ca: &ca,
            },
            meter: Some(Meter::Threads(files::THREAD_NAME)),
        });
        routes.push(Route {
            label: "pullcache hit",
            get: Get {
                via: Via::Proxy(self.pullcache_addr()),
                host: REGISTRY_HOST,
                path: &path,
                ca: &pullcache_ca,
            },
            meter: Some(self.pullcache_meter()),
        });
        let hit_at = routes.len() - 1;
        let compare = self.compare_endpoint();
        if let Some((addr, compare_ca)) = &compare {
            routes.push(Route {
                label: "comparison hit",
                get: Get {
                    via: Via::Proxy(*addr),
                    host: REGISTRY_HOST,
                    path: &path,
                    ca: compare_ca,
                },
                meter: self.compare_meter(),
            });
        }
        let tls: Vec<String> = routes
            .iter()
            .map(|r| format!("{}: {}", r.label, r.get.describe_tls()))
            .collect();
        let rounds = self.settings.rounds;
        let name = format!("hit {mib} MiB");
        let builds = self.builds();
        let gets = |bench: &Bench| -> Vec<usize> {
            builds
                .iter()
                .map(|build| bench.origin.blob_gets(build.side(), &expect.hex))
                .collect()
        };
        let before = gets(self);
        // Untimed: one verified download per route (also their warm-up).
        self.verify_routes(&name, &routes, &expect)?;
        let series = self.interleave(&name, rounds, &routes, &expect)?;
        for ((build, before), after) in builds.iter().zip(before).zip(gets(self)) {
            if after != before {
                self.failures.add(format!(
                    "hit {mib} MiB: {} fetched the cached blob from the origin {} more times",
                    build.name(),
                    after - before
                ));
            }
        }

        let labels: Vec<&str> = routes.iter().map(|r| r.label).collect();
        let named: Vec<(&str, &Series)> = labels.iter().copied().zip(&series).collect();
        let hit = &series[hit_at];
        let ceiling = &series[hit_at - 1];
        let nginx = self.nginx.is_some().then(|| &series[0]);
        let mut baselines = Vec::new();
        if let Some(nginx) = nginx {
            baselines.push(("nginx", nginx));
        }
        baselines.push(("ceiling", ceiling));
        print_section(
            &format!(
                "1. cache hit, {mib} MiB — {rounds} rounds, each: {}",
                labels.join(", ")
            ),
            &named,
            &baselines,
            self.ticks_per_sec,
            "server CPU-s/GB: nginx's process, the rustls server's thread, pullcache's process (and the comparison build's)",
        );
        println!("   TLS: {}", tls.join("; "));
        print_rounds(&named);
        if compare.is_some() {
            self.compare_row(&format!("hit {mib} MiB"), hit, &series[hit_at + 1]);
        }

        let cpu = hit.cpu_per_gb(self.ticks_per_sec);
        let vs_ceiling = hit.speed_ratio(ceiling);
        match nginx {
            Some(nginx) => {
                let vs_nginx = hit.speed_ratio(nginx);
                self.target(
                    format!("hit {mib} MiB: throughput vs nginx direct"),
                    ratio_text(&vs_nginx),
                    "≥ 1.15×",
                    Some(vs_nginx.median >= 1.15),
                );
            }
            None => self.target(
                format!("hit {mib} MiB: throughput vs nginx direct"),
                "not measured (no nginx)".to_owned(),
                "≥ 1.15×",
                None,
            ),
        }
        self.target(
            format!("hit {mib} MiB: throughput vs rustls ceiling"),
            ratio_text(&vs_ceiling),
            "≥ 0.9×",
            Some(vs_ceiling.median >= 0.9),
        );
        self.target(
            format!("hit {mib} MiB: pullcache CPU-s/GB"),
            fmt_opt(cpu, 3),
            "≤ 0.8",
            cpu.map(|c| c <= 0.8),
        );
        let mut value = json!({
            "pullcache_mb_s": hit.mb_per_s(),
            "ceiling_mb_s": ceiling.mb_per_s(),
            "vs_ceiling": vs_ceiling.median,
            "pullcache_cpu_s_per_gb": cpu,
            "ceiling_cpu_s_per_gb": ceiling.cpu_per_gb(self.ticks_per_sec),
        });
        if let Some(nginx) = nginx {
            value["nginx_mb_s"] = json!(nginx.mb_per_s());
            value["vs_nginx"] = json!(hit.speed_ratio(nginx).median);
            value["nginx_cpu_s_per_gb"] = json!(nginx.cpu_per_gb(self.ticks_per_sec));
        }
        self.json.insert(format!("hit_{mib}mib"), value);
        Ok(())
    }

    /// A summary row comparing the comparison build's `compared` series to
    /// this build's `measured` one, measured in the same rounds.
    fn compare_row(&mut self, what: &str, measured: &Series, compared: &Series) {
        let speed = compared.speed_ratio(measured);
        let (cpu, compare_cpu) = (
            measured.cpu_per_gb(self.ticks_per_sec),
            compared.cpu_per_gb(self.ticks_per_sec),
        );
        let cpu_text = match (cpu, compare_cpu) {
            (Some(a), Some(b)) => {
                format!("CPU-s/GB {a:.3} → {b:.3} ({:+.1}%)", (b / a - 1.0) * 100.0)
            }
            _ => "CPU n/a".to_owned(),
        };
        self.target(
            format!("{what}: comparison build vs this one"),
            format!("speed {}, {cpu_text}", ratio_text(&speed)),
            "(comparison)",
            None,
        );
        let entry = self
            .json
            .entry("comparison".to_owned())
            .or_insert_with(|| json!({}));
        entry[what] = json!({
            "speed_ratio": speed.median,
            "cpu_s_per_gb": cpu,
            "compared_cpu_s_per_gb": compare_cpu,
        });
    }

    // === phase 2: misses ===

    fn miss_phase(&mut self, mib: usize) -> anyhow::Result<()> {
        let rounds = self.settings.rounds;
        let ca = self.ca.pem_path().to_path_buf();
        let pullcache_ca = self.pullcache_ca.clone();
        let direct_addr = self.origin.addr(Side::Direct);
        let pullcache_addr = self.pullcache_addr();
        let nginx = self.nginx.as_ref().map(|n| (n.cache_addr(), n.pid()));
        let mut labels = vec!["origin direct", "pullcache miss"];
        if nginx.is_some() {
            labels.push("nginx proxy_cache miss");
        }
        let compare = self.compare_endpoint();
        let compare_at = labels.len();
        if compare.is_some() {
            labels.push("comparison miss");
        }
        let size = (mib * MIB) as u64;
        let mut series: Vec<Series> = labels.iter().map(|_| Series::new(size)).collect();
        let mut commit_lags = Vec::new();
        let mut nginx_fetches = Vec::new();
        for round in 1..=rounds {
            let blob = self.generate(mib * MIB);
            let expect = Expect::of(&blob);
            self.origin
                .catalogue()
                .insert(expect.hex.clone(), Content::Shared(blob.bytes.clone()));
            drop(blob);
            let path = expect.path();
            let name = format!("miss {mib} MiB round {round}");

            let direct = Get {
                via: Via::Direct(direct_addr),
                host: REGISTRY_HOST,
                path: &path,
                ca: &ca,
            };
            let meter = Some(Meter::Threads(ORIGIN_THREAD));
            let (t, ticks) = on_machine(&mut series[0], || {
                self.timed(&direct, meter, &expect, &format!("{name} direct"))
            })?;
            series[0].push(t.total, ticks);
            series[0].add_client(t.client_ticks);

            // pullcache's CPU is counted up to its commit log line, so the
            // verify, fsync and rename after the client's last byte are in.
            // A body whose digest does not match is aborted, so curl fails.
            let via = proxied(pullcache_addr, REGISTRY_HOST, &path, &pullcache_ca);
            let meter = self.pullcache_meter();
            let before = meter.ticks();
            let (t, _) = on_machine(&mut series[1], || {
                self.timed(&via, None, &expect, &format!("{name} pullcache"))
            })?;
            let finished = Instant::now();
            self.wait_committed(&expect.hex, &format!("{name} pullcache"));
            commit_lags.push(finished.elapsed().as_secs_f64());
            let ticks = meter.ticks().saturating_sub(before);
            series[1].push(t.total, Some(ticks));
            series[1].add_client(t.client_ticks);

            // nginx verifies nothing; its body is checked below.
            let via_nginx = nginx.map(|(addr, pid)| {
                let get = Get {
                    via: Via::Direct(addr),
                    host: REGISTRY_HOST,
                    path: &path,
                    ca: &ca,
                };
                (get, pid)
            });
            if let Some((get, pid)) = &via_nginx {
                let (t, ticks) = on_machine(&mut series[2], || {
                    self.timed(
                        get,
                        Some(Meter::Process(*pid)),
                        &expect,
                        &format!("{name} nginx"),
                    )
                })?;
                series[2].push(t.total, ticks);
                series[2].add_client(t.client_ticks);
            }

            // The comparison build, like this one: CPU up to its commit.
            let via_compare = compare
                .as_ref()
                .map(|(addr, ca)| proxied(*addr, REGISTRY_HOST, &path, ca));
            if let Some(via) = &via_compare {
                let meter = self.compare_meter().expect("a comparison build");
                let before = meter.ticks();
                let (t, _) = on_machine(&mut series[compare_at], || {
                    self.timed(via, None, &expect, &format!("{name} comparison"))
                })?;
                self.wait_committed_by(Build::Compared, &expect.hex, &format!("{name} comparison"));
                let ticks = meter.ticks().saturating_sub(before);
                series[compare_at].push(t.total, Some(ticks));
                series[compare_at].add_client(t.client_ticks);
            }

            // Untimed: the same digest once more through each cache (a hit
            // now), hashed. The blob is still at the origin, so a cache that
            // fetched it again would be counted below, not fail here.
            self.verified(
                &via,
                &expect,
                "miss: pullcache, the blob again after its miss",
                &format!("{name} pullcache (verification)"),
            )?;
            self.check_fetched_once(&expect, &format!("{name} pullcache"));
            if let Some(via) = &via_compare {
                self.verified(
                    via,
                    &expect,
                    "miss: comparison build, the blob again after its miss",
                    &format!("{name} comparison (verification)"),
                )?;
                self.check_fetched_once_by(Build::Compared, &expect, &format!("{name} comparison"));
            }
            if let Some((get, _)) = &via_nginx {
                self.verified(
                    get,
                    &expect,
                    "miss: nginx proxy_cache, the blob again after its miss",
                    &format!("{name} nginx (verification)"),
                )?;
                nginx_fetches.push(self.origin.blob_gets(Side::Nginx, &expect.hex));
            }
            self.origin.catalogue().remove(&expect.hex);
            // Whatever the servers left dirty (nginx does not fsync) is
            // written now, not during the next measurement.
            sync_disks();
            eprintln!(
                "  {name}: {}",
                labels
                    .iter()
                    .zip(&series)
                    .map(|(l, s)| format!("{l} {:.3} s", s.secs[round - 1]))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }

        let named: Vec<(&str, &Series)> = labels.iter().copied().zip(&series).collect();
        let mut baselines = vec![("origin", &series[0])];
        if nginx.is_some() {
            baselines.push(("nginx", &series[2]));
        }
        print_section(
            &format!(
                "2. cold (miss), {mib} MiB — {rounds} rounds, a new digest each round, each: {}",
                labels.join(", ")
            ),
            &named,
            &baselines,
            self.ticks_per_sec,
            "server CPU-s/GB: the origin's thread, pullcache's process (up to its commit), nginx's process, the comparison build's (up to its commit)",
        );
        print_rounds(&named);
        let lag = summary(&commit_lags);
        println!(
            "   waited {:.3} s (median; {:.3}–{:.3}) after curl exited for pullcache's commit log line (verify, fsync, rename; untimed, but in its CPU)",
            lag.median, lag.min, lag.max
        );
        if nginx.is_some() {
            println!(
                "   nginx fetched each round's blob from the origin: {:?} times, counted after the untimed second download (proxy_cache, no fsync)",
                nginx_fetches
            );
        }
        let miss = &series[1];
        if compare.is_some() {
            self.compare_row(&format!("miss {mib} MiB"), miss, &series[compare_at]);
        }
        let cpu = miss.cpu_per_gb(self.ticks_per_sec);
        self.target(
            format!("miss {mib} MiB: pullcache CPU-s/GB"),
            fmt_opt(cpu, 3),
            "≤ 1.8",
            cpu.map(|c| c <= 1.8),
        );
        if let Some((cached, memory)) = self.floor.as_ref().map(Floor::hashing_cpu_s_per_gb) {
            self.target(
                format!("miss {mib} MiB: SHA-256 alone, CPU-s/GB"),
                format!("{cached:.2} cached – {memory:.2} from memory"),
                "(no target)",
                None,
            );
        }
        let vs_origin = miss.speed_ratio(&series[0]);
        self.target(
            format!("miss {mib} MiB: throughput vs origin direct"),
            ratio_text(&vs_origin),
            "(no target)",
            None,
        );
        let mut value = json!({
            "pullcache_mb_s": miss.mb_per_s(),
            "origin_mb_s": series[0].mb_per_s(),
            "vs_origin": vs_origin.median,
            "pullcache_cpu_s_per_gb": cpu,
            "commit_lag_s": lag.median,
        });
        if nginx.is_some() {
            let vs_nginx = miss.speed_ratio(&series[2]);
            self.target(
                format!("miss {mib} MiB: throughput vs nginx proxy_cache miss"),
                ratio_text(&vs_nginx),
                "≥ 1.2×",
                Some(vs_nginx.median >= 1.2),
            );
            value["nginx_mb_s"] = json!(series[2].mb_per_s());
            value["vs_nginx"] = json!(vs_nginx.median);
            value["nginx_cpu_s_per_gb"] = json!(series[2].cpu_per_gb(self.ticks_per_sec));
        } else {
            self.target(
                format!("miss {mib} MiB: throughput vs nginx proxy_cache miss"),
                "not measured (no nginx)".to_owned(),
                "≥ 1.2×",
                None,
            );
        }
        self.json.insert(format!("miss_{mib}mib"), value);
        Ok(())
    }

    // === phase 3: concurrent misses vs concurrent hits ===

    /// Starts `clients` timed curl downloads of `expect` through pullcache
    /// at once (bodies to `/dev/null`, lengths checked); returns the wall
    /// time until the last finished.
    fn batch(&mut self, expect: &Expect, clients: usize, label: &str) -> anyhow::Result<f64> {
        let path = expect.path();
        let pullcache_ca = self.pullcache_ca.clone();
        let get = proxied(self.pullcache_addr(), REGISTRY_HOST, &path, &pullcache_ca);
        let started = Instant::now();
        let children = (0..clients)
            .map(|_| get.spawn(Path::new("/dev/null")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut timings = Vec::with_capacity(clients);
        for child in children {
            timings.push(curl::finish(child, &path).with_context(|| label.to_owned())?);
        }
        let wall = started.elapsed().as_secs_f64();
        for (i, timing) in timings.iter().enumerate() {
            *self
                .versions
                .entry(format!("HTTP/{}", timing.http_version))
                .or_default() += 1;
            self.null_downloads += 1;
            self.check_length(timing.bytes, expect, &format!("{label} client {i}"));
        }
        Ok(wall)
    }

    fn concurrent_phase(&mut self) -> anyhow::Result<()> {
        let clients = self.settings.clients;
        let mib = self.settings.concurrent_mib;
        let rounds = self.settings.concurrent_rounds;
        let hit = self.hit_blob(mib)?;
        let size = (mib * MIB) as u64;
        let mut cold = Series::new(size * clients as u64);
        let mut warm = Series::new(size * clients as u64);
        let mut cold_outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut fetched = Vec::new();
        let meter = self.pullcache_meter();
        let addr = self.pullcache_addr();
        let pullcache_ca = self.pullcache_ca.clone();
        // Untimed warm-up: one batch of hits (curl, pullcache's threads), so
        // the first round is not also the first of its kind; then one
        // verified hit.
        self.batch(&hit, clients, "concurrent warm-up")?;
        let hit_path = hit.path();
        self.verified(
            &proxied(addr, REGISTRY_HOST, &hit_path, &pullcache_ca),
            &hit,
            "concurrent: pullcache hit",
            "concurrent warm-up (verification)",
        )?;
        for round in 1..=rounds {
            let blob = self.generate(mib * MIB);
            let expect = Expect::of(&blob);
            self.origin
                .catalogue()
                .insert(expect.hex.clone(), Content::Shared(blob.bytes.clone()));
            drop(blob);
            let path = expect.path();
            let name = format!("concurrent round {round}");

            let before = meter.ticks();
            let client_before = procfs::children_ticks();
            let wall = on_machine(&mut cold, || {
                self.batch(&expect, clients, &format!("{name} cold"))
            })?;
            cold.add_client(procfs::children_ticks().saturating_sub(client_before));
            self.wait_committed(&expect.hex, &format!("{name} cold"));
            cold.push(wall, Some(meter.ticks().saturating_sub(before)));
            // Before the verification below adds a hit of its own.
            for (outcome, n) in outcomes_for(&self.pc().logs().lines(), &path) {
                *cold_outcomes.entry(outcome).or_default() += n;
            }
            // Untimed: the blob once more (a hit now), hashed, while the
            // origin still has it, so a refetch would be counted.
            self.verified(
                &proxied(addr, REGISTRY_HOST, &path, &pullcache_ca),
                &expect,
                "concurrent: pullcache, each cold blob again after its batch",
                &format!("{name} cold (verification)"),
            )?;
            self.check_fetched_once(&expect, &format!("{name} cold ({clients} clients)"));
            fetched.push(format!(
                "{}× {} bytes",
                self.origin.blob_gets(Side::Pullcache, &expect.hex),
                self.origin.blob_bytes_sent(Side::Pullcache, &expect.hex)
            ));
            self.origin.catalogue().remove(&expect.hex);
            sync_disks();

            let before = meter.ticks();
            let client_before = procfs::children_ticks();
            let wall = on_machine(&mut warm, || {
                self.batch(&hit, clients, &format!("{name} hits"))
            })?;
            warm.add_client(procfs::children_ticks().saturating_sub(client_before));
            warm.push(wall, Some(meter.ticks().saturating_sub(before)));
            eprintln!(
                "  {name}/{rounds}: {clients} cold {:.3} s, {clients} hits {:.3} s",
                cold.secs[round - 1],
                warm.secs[round - 1]
            );
        }
        let named = [("concurrent cold", &cold), ("concurrent hits", &warm)];
        print_section(
            &format!(
                "3. {clients} concurrent clients, {mib} MiB — {rounds} rounds, each: {clients} curl pulling one uncached blob (new each round), then {clients} curl pulling a cached one; time = wall time of the batch, MB/s = aggregate"
            ),
            &named,
            &[("hits", &warm)],
            self.ticks_per_sec,
            "server CPU-s/GB: pullcache's process (cold: up to its commit)",
        );
        print_rounds(&named);
        println!(
            "   origin → pullcache per cold blob (must be 1× {size} bytes): {}; pullcache's outcomes for the cold blobs: {}",
            fetched.join(", "),
            tally(&cold_outcomes)
        );
        let ratio = cold.speed_ratio(&warm);
        self.target(
            format!("{clients} concurrent cold {mib} MiB: aggregate vs {clients} concurrent hits"),
            ratio_text(&ratio),
            "≥ 0.8×",
            Some(ratio.median >= 0.8),
        );
        self.json.insert(
            "concurrent".to_owned(),
            json!({
                "clients": clients,
                "mib": mib,
                "cold_mb_s": cold.mb_per_s(),
                "hits_mb_s": warm.mb_per_s(),
                "cold_vs_hits": ratio.median,
                "cold_cpu_s_per_gb": cold.cpu_per_gb(self.ticks_per_sec),
                "hits_cpu_s_per_gb": warm.cpu_per_gb(self.ticks_per_sec),
            }),
        );
        Ok(())
    }

    // === phase 4: tunnel ===

    fn tunnel_phase(&mut self) -> anyhow::Result<()> {
        let mib = self.settings.tunnel_mib;
        let expect = self.hit_blob(mib)?;
        let path = expect.path();
        let ca = self.ca.pem_path().to_path_buf();
        let relay = Relay::start(self.files.addr())?;
        let compare = self.compare_endpoint();
        let route = |label, via, meter| Route {
            label,
            get: Get {
                via,
                host: TUNNEL_HOST,
                path: &path,
                ca: &ca,
            },
            meter,
        };
        let mut routes = vec![
            route(
                "direct",
                Via::Direct(self.files.addr()),
                Some(Meter::Threads(files::THREAD_NAME)),
            ),
            route(
                "bare relay",
                Via::Direct(relay.addr()),
                Some(Meter::Threads(relay::THREAD_NAME)),
            ),
            route(
                "pullcache tunnel",
                Via::Proxy(self.pullcache_addr()),
                Some(self.pullcache_meter()),
            ),
        ];
        if let Some((addr, _)) = compare {
            routes.push(route(
                "comparison tunnel",
                Via::Proxy(addr),
                self.compare_meter(),
            ));
        }
        let tls = routes[2].get.describe_tls();
        let rounds = self.settings.rounds;
        // Untimed: one verified download per route (also their warm-up).
        self.verify_routes("tunnel", &routes, &expect)?;
        let series = self.interleave("tunnel", rounds, &routes, &expect)?;
        drop(relay);
        let (direct, bare, tunnel) = (&series[0], &series[1], &series[2]);
        let mut named = vec![("direct", direct), ("bare relay", bare), ("tunnel", tunnel)];
        if let Some(compared) = series.get(3) {
            named.push(("comparison tunnel", compared));
        }
        print_section(
            &format!(
                "4. tunnel, {mib} MiB — {rounds} rounds, each: curl straight to the rustls file server as {TUNNEL_HOST}, then through a bare relay written here (1 MiB buffers, nothing else), then through pullcache (CONNECT {TUNNEL_HOST}:443, not intercepted)"
            ),
            &named,
            &[("direct", direct), ("bare relay", bare)],
            self.ticks_per_sec,
            "server CPU-s/GB: direct, the file server's thread; bare relay, the relay's thread; tunnel, pullcache's process, and the comparison build's (the relaying only: the file server's CPU is in neither)",
        );
        println!("   TLS through the tunnel (end to end with the file server): {tls}");
        println!("   with the cores already busy downloading directly, what a relay costs per byte comes out of the client's and the server's share: the bare relay is the tunnel's ceiling on this machine");
        if let Some(machine) = direct.machine_cpu_per_gb(self.ticks_per_sec) {
            // Even with every core busy, 0.9× the direct speed leaves only
            // this much machine CPU per GB for all that a relay adds.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let budget = cores as f64 / (0.9 * direct.mb_per_s() / 1e3) - machine;
            let added = |series: &Series| {
                fmt_opt(
                    series
                        .machine_cpu_per_gb(self.ticks_per_sec)
                        .map(|m| m - machine),
                    2,
                )
            };
            println!(
                "   0.9× direct leaves a relay at most {budget:.2} machine CPU-s/GB, even with all {cores} cores busy; the bare relay added {}, pullcache's tunnel {}",
                added(bare),
                added(tunnel),
            );
        }
        print_rounds(&named);
        if let Some(compared) = series.get(3) {
            self.compare_row(&format!("tunnel {mib} MiB"), tunnel, compared);
        }
        let ratio = tunnel.speed_ratio(direct);
        self.target(
            format!("tunnel {mib} MiB: throughput vs direct"),
            ratio_text(&ratio),
            "≥ 0.9×",
            Some(ratio.median >= 0.9),
        );
        let vs_bare = tunnel.speed_ratio(bare);
        self.target(
            format!("tunnel {mib} MiB: throughput vs a bare relay"),
            format!(
                "{} (bare relay {:.2}× direct)",
                ratio_text(&vs_bare),
                bare.speed_ratio(direct).median
            ),
            "(no target)",
            None,
        );
        self.json.insert(
            "tunnel".to_owned(),
            json!({
                "mib": mib,
                "direct_mb_s": direct.mb_per_s(),
                "bare_relay_mb_s": bare.mb_per_s(),
                "tunnel_mb_s": tunnel.mb_per_s(),
                "vs_direct": ratio.median,
                "vs_bare_relay": vs_bare.median,
                "file_server_cpu_s_per_gb": direct.cpu_per_gb(self.ticks_per_sec),
                "bare_relay_cpu_s_per_gb": bare.cpu_per_gb(self.ticks_per_sec),
                "pullcache_cpu_s_per_gb": tunnel.cpu_per_gb(self.ticks_per_sec),
                "cores_busy": {
                    "direct": direct.cores_busy(self.ticks_per_sec),
                    "bare_relay": bare.cores_busy(self.ticks_per_sec),
                    "tunnel": tunnel.cores_busy(self.ticks_per_sec),
                },
                "machine_cpu_s_per_gb": {
                    "direct": direct.machine_cpu_per_gb(self.ticks_per_sec),
                    "bare_relay": bare.machine_cpu_per_gb(self.ticks_per_sec),
                    "tunnel": tunnel.machine_cpu_per_gb(self.ticks_per_sec),
                },
            }),
        );
        Ok(())
    }

    // === phase 5: first byte through a never-seen host ===

    fn ttfb_phase(&mut self) -> anyhow::Result<()> {
        let rounds = self.settings.ttfb_rounds;
        let blob = self.generate(self.settings.small_kib * 1024);
        let expect = Expect::of(&blob);
        self.origin
            .catalogue()
            .insert(expect.hex.clone(), Content::Shared(blob.bytes.clone()));
        let path = expect.path();
        let pullcache_ca = self.pullcache_ca.clone();
        let addr = self.pullcache_addr();
        let get = |host| proxied(addr, host, &path, &pullcache_ca);
        // Untimed: the blob is fetched and committed through the warm host,
        // which mints its leaf and learns the repository is public; a second
        // download is a hit.
        self.verified(
            &get(WARM_HOST),
            &expect,
            "ttfb: pullcache miss, warm host",
            "ttfb priming",
        )?;
        self.wait_committed(&expect.hex, "ttfb priming");
        self.verified(
            &get(WARM_HOST),
            &expect,
            "ttfb: pullcache hit, warm host",
            "ttfb warm-up",
        )?;

        let hosts = ttfb_hosts(rounds);
        let mut fresh = Vec::new();
        let mut warm = Vec::new();
        for (round, host) in hosts.iter().skip(1).enumerate() {
            let (t, _) = self.timed(&get(host), None, &expect, &format!("ttfb {host}"))?;
            fresh.push(t);
            let (t, _) = self.timed(&get(WARM_HOST), None, &expect, "ttfb warm host")?;
            warm.push(t);
            eprintln!(
                "  ttfb round {}/{rounds}: {host} {:.2} ms, {WARM_HOST} {:.2} ms",
                round + 1,
                fresh[round].first_byte * 1e3,
                warm[round].first_byte * 1e3
            );
        }
        self.check_fetched_once(&expect, "ttfb small blob");
        let heads = self
            .origin
            .blob_requests(Side::Pullcache, &expect.hex)
            .get("HEAD")
            .copied()
            .unwrap_or(0);
        self.origin.catalogue().remove(&expect.hex);

        let ms = |ts: &[Timing], f: fn(&Timing) -> f64| -> Vec<f64> {
            ts.iter().map(|t| f(t) * 1e3).collect()
        };
        let first_byte = |t: &Timing| t.first_byte;
        let tls_done = |t: &Timing| t.tls_done;
        let after_tls = |t: &Timing| t.first_byte - t.tls_done;
        let deltas = |f: fn(&Timing) -> f64| -> Vec<f64> {
            fresh
                .iter()
                .zip(&warm)
                .map(|(a, b)| (f(a) - f(b)) * 1e3)
                .collect()
        };
        println!();
        println!(
            "5. time to first byte of a {} KiB cached blob — {rounds} rounds, each: a never-seen intercepted host (r1.test … r{rounds}.test: leaf minted, repository visibility probed), then the warm host {WARM_HOST}; curl via pullcache, new process and TLS handshake each time",
            self.settings.small_kib
        );
        println!(
            "   {:<34} {:>9}   {:<20} {:>9}   {:<20}",
            "", "new host", "min–max", "warm host", "min–max"
        );
        let row = |label: &str, f: fn(&Timing) -> f64| {
            let a = summary(&ms(&fresh, f));
            let b = summary(&ms(&warm, f));
            println!(
                "   {label:<34} {:>6.2} ms   {:<20} {:>6.2} ms   {:<20}",
                a.median,
                format!("{:.2}–{:.2}", a.min, a.max),
                b.median,
                format!("{:.2}–{:.2}", b.min, b.max)
            );
        };
        row("TCP connected (to pullcache)", |t| t.tcp_done);
        row("TLS done (CONNECT + handshake)", tls_done);
        row("first byte (time_starttransfer)", first_byte);
        row("first byte after TLS", after_tls);
        let delta = summary(&deltas(first_byte));
        let delta_tls = summary(&deltas(tls_done));
        let delta_after = summary(&deltas(after_tls));
        println!(
            "   new − warm, per round: first byte {:+.2} ms ({:+.2}…{:+.2}); of which TLS (leaf minting) {:+.2} ms, after TLS (visibility probe: upstream connection + HEAD) {:+.2} ms",
            delta.median, delta.min, delta.max, delta_tls.median, delta_after.median
        );
        println!(
            "   origin saw {heads} HEAD (visibility probes) and 1 GET of the small blob from pullcache"
        );
        self.target(
            "new-host TTFB − warm-host TTFB".to_owned(),
            format!(
                "{:+.2} ms ({:+.2}…{:+.2})",
                delta.median, delta.min, delta.max
            ),
            "≤ +2 ms",
            Some(delta.median <= 2.0),
        );
        self.json.insert(
            "ttfb".to_owned(),
            json!({
                "new_host_ms": summary(&ms(&fresh, first_byte)).median,
                "warm_host_ms": summary(&ms(&warm, first_byte)).median,
                "delta_ms": delta.median,
                "delta_tls_ms": delta_tls.median,
                "delta_after_tls_ms": delta_after.median,
            }),
        );
        Ok(())
    }

    // === phase 6: peak RSS under many concurrent hits ===

    fn rss_phase(&mut self) -> anyhow::Result<()> {
        let clients = self.settings.rss_clients;
        let mib = self.settings.rss_mib;
        let expect = self.hit_blob(mib)?;
        let path = expect.path();
        // A fresh process on the same cache, so the peak is what 100
        // concurrent hits need, not what earlier phases left in the heap.
        let old_rss = self.restart_pullcache()?;
        let fetched_before = self.origin.blob_gets(Side::Pullcache, &expect.hex);
        let pid = self.pc().pid();
        let (_, rss_before) = procfs::memory_kib(pid);
        let reset = procfs::reset_peak(pid);
        let sampler = RssSampler::start(pid);
        let meter = self.pullcache_meter();
        let ticks_before = meter.ticks();
        let pullcache_ca = self.pullcache_ca.clone();
        let job = PoolJob {
            proxy: self.pullcache_addr(),
            ca: &pullcache_ca,
            host: REGISTRY_HOST,
            path: &path,
            clients,
        };
        let (wall, outcomes) = pool::run(&job)?;
        let ticks = meter.ticks().saturating_sub(ticks_before);
        let sampled = sampler.finish();
        let (hwm, rss_after) = procfs::memory_kib(pid);
        let fetched = self.origin.blob_gets(Side::Pullcache, &expect.hex) - fetched_before;
        if fetched != 0 {
            self.failures.add(format!(
                "rss: pullcache fetched the cached blob from the origin {fetched} times"
            ));
        }
        let mut ok = 0;
        let mut secs = Vec::new();
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(outcome) => {
                    self.check_body(
                        &outcome.hex,
                        outcome.bytes,
                        &expect,
                        &format!("rss client {i}"),
                    );
                    secs.push(outcome.secs);
                    ok += 1;
                }
                Err(error) => self
                    .failures
                    .add(format!("rss client {i}: download failed: {error:#}")),
            }
        }
        self.note_verified("rss: pullcache hit, in-process clients", ok);
        let bytes = expect.size * ok as u64;
        let cpu = ticks as f64 / self.ticks_per_sec as f64 / (bytes as f64 / 1e9);
        let per_client = summary(&secs);
        println!();
        println!(
            "6. peak RSS with {clients} concurrent hits of {mib} MiB — pullcache restarted on the same cache just before (the long-running process was at VmRSS {:.1} MiB after the earlier phases); in-process async clients (hyper HTTP/1.1 over tokio-rustls through CONNECT; curl processes by the hundred would swamp 2 cores), all started at once",
            old_rss as f64 / 1024.0
        );
        println!(
            "   pullcache VmHWM {:.1} MiB ({}), largest VmRSS sampled every 50 ms {:.1} MiB; VmRSS {:.1} MiB before the clients, {:.1} MiB after",
            hwm as f64 / 1024.0,
            if reset {
                "peak reset just before the clients started"
            } else {
                "could not reset the peak: the peak since start"
            },
            sampled as f64 / 1024.0,
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0
        );
        println!(
            "   {ok}/{clients} clients OK, no origin fetch; wall {wall:.2} s, aggregate {:.0} MB/s; per client {:.2} s median ({:.2}–{:.2}); pullcache {cpu:.2} CPU-s/GB",
            bytes as f64 / 1e6 / wall,
            per_client.median,
            per_client.min,
            per_client.max,
        );
        let peak_mib = hwm as f64 / 1024.0;
        self.target(
            format!("peak RSS, {clients} concurrent hits"),
            format!("{peak_mib:.1} MiB"),
            "≤ 128 MiB",
            Some(peak_mib <= 128.0),
        );
        self.json.insert(
            "rss".to_owned(),
            json!({
                "clients": clients,
                "mib": mib,
                "peak_mib": peak_mib,
                "sampled_max_mib": sampled as f64 / 1024.0,
                "aggregate_mb_s": bytes as f64 / 1e6 / wall,
                "cpu_s_per_gb": cpu,
            }),
        );
        Ok(())
    }

    fn target(
        &mut self,
        figure: String,
        measured: String,
        target: &'static str,
        met: Option<bool>,
    ) {
        self.targets.push(TargetRow {
            figure,
            measured,
            target,
            met,
        });
    }

    // === the end ===

    fn finish(
        mut self,
        bin: &Path,
        total_secs: f64,
        load_before: &str,
        usage: CpuUsage,
    ) -> anyhow::Result<bool> {
        let metrics = self.metrics();
        println!();
        println!("details:");
        println!(
            "  machine: {} CPUs, kernel {}, load average {} at start, {} at end",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim(),
            load_before,
            loadavg()
        );
        let tick = self.ticks_per_sec as f64;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let others = usage.busy.saturating_sub(usage.ours) as f64 / tick;
        println!(
            "  machine CPU over the run: {:.0} CPU-s busy of {:.0} available; this run's processes {:.0} CPU-s, other processes {others:.0} CPU-s ({:.0}% of the machine: the noise), steal {:.1} CPU-s",
            usage.busy as f64 / tick,
            cpus * usage.secs,
            usage.ours as f64 / tick,
            100.0 * others / (cpus * usage.secs),
            usage.steal as f64 / tick
        );
        self.json.insert(
            "noise_other_cpu_fraction".to_owned(),
            json!(others / (cpus * usage.secs)),
        );
        if let Some(floor) = &self.floor {
            println!(
                "  machine floor, one thread, best of 3: SHA-256 {:.2} GB/s over cached bytes, {:.2} GB/s over bytes from memory; memcpy {:.1} GB/s",
                floor.sha256_cached, floor.sha256_memory, floor.memcpy
            );
            self.json.insert(
                "floor".to_owned(),
                json!({
                    "sha256_cached_gb_s": floor.sha256_cached,
                    "sha256_memory_gb_s": floor.sha256_memory,
                    "memcpy_gb_s": floor.memcpy,
                }),
            );
        }
        println!(
            "  pullcache {} (pid {}); client {}; nginx {}",
            bin.display(),
            self.pc().pid(),
            curl::version(),
            nginx::find().map_or_else(|| "not installed".to_owned(), |b| nginx::version(&b))
        );
        println!(
            "  files: pullcache's data, nginx's cache and the served blob files on {}; timed curl downloads write bodies to /dev/null (a file, even on tmpfs, costs curl about 1.1 CPU-s/GB); untimed verification downloads write them to {} and hash them",
            self.dir.path().display(),
            self.scratch.path().display()
        );
        println!(
            "  CPU from /proc/<pid>/stat utime+stime at {} ticks/s; the in-process servers' from their threads' /proc/self/task/*/stat; MB = 10^6 bytes, GB = 10^9 bytes",
            self.ticks_per_sec
        );
        println!(
            "  ratios are per round (the baseline's time / this route's time, so > 1 is faster), then median (min–max); curl reported {}",
            tally(&self.versions)
        );
        println!(
            "  rustls ceiling: this benchmark's server, one tokio worker, tokio-rustls + aws-lc-rs, {} KiB reads, one write per read, Connection: close; {} connections served",
            files::READ_CHUNK / 1024,
            self.files.connections()
        );
        println!(
            "  pullcache peak RSS (VmHWM) per phase{}: {}",
            if self.peak_reset_works {
                ", reset at each phase's start"
            } else {
                " (cumulative: the peak could not be reset)"
            },
            self.peaks
                .iter()
                .map(|(p, kib)| format!("{p} {:.1} MiB", *kib as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  phase wall times: {}; total {total_secs:.0} s",
            self.phase_secs
                .iter()
                .map(|(p, s)| format!("{p} {s:.0} s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  origin connections by ALPN: curl {}; pullcache {}; nginx {}",
            tally(&self.origin.connections(Side::Direct).alpn),
            tally(&self.origin.connections(Side::Pullcache).alpn),
            tally(&self.origin.connections(Side::Nginx).alpn)
        );
        let other: usize = self
            .origin
            .requests(Side::Pullcache)
            .iter()
            .filter(|((m, _), _)| m != "GET" && m != "HEAD")
            .map(|(_, n)| n)
            .sum();
        println!("  origin: other requests from pullcache: {other}");
        for (i, earlier) in self.metrics_before_restart.iter().enumerate() {
            println!("  pullcache /metrics before restart {}: {earlier}", i + 1);
        }
        println!("  pullcache /metrics: {metrics}");
        match (&self.nginx, &self.nginx_missing) {
            (Some(nginx), _) => {
                println!("  nginx config (generated; everything not set here is nginx's default: sendfile off, output_buffers 2 32k, ssl_buffer_size 16k, proxy_buffers 8 4k|8k, proxy_buffering on):");
                for line in nginx.config().lines() {
                    println!("    | {line}");
                }
            }
            (None, Some(why)) => println!("  nginx: not measured: {why}"),
            (None, None) => {}
        }

        // The targets next to what was measured.
        println!();
        println!(
            "summary (targets are the issue's, for reference only; nothing here is asserted):"
        );
        let width = self
            .targets
            .iter()
            .map(|r| r.figure.chars().count())
            .max()
            .unwrap_or(10);
        println!(
            "  {:<width$}  {:<26}  {:<11}  meets",
            "figure", "measured", "target"
        );
        for row in &self.targets {
            let met = match row.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "—",
            };
            println!(
                "  {:<width$}  {:<26}  {:<11}  {met}",
                row.figure, row.measured, row.target
            );
        }
        if self.nginx.is_none() {
            println!(
                "  (nginx baselines not measured: {})",
                self.nginx_missing.as_deref().unwrap_or("?")
            );
        }
        let correct = self.failures.0.is_empty();
        let verified: usize = self.verified_routes.iter().map(|(_, n)| n).sum();
        let checked = format!(
            "{} downloads to /dev/null (every timed one): HTTP 200 and length checked; {verified} bodies hashed, SHA-256 and length checked (untimed curl downloads to tmpfs, and the in-process clients), by route below; pullcache fetched every blob from the origin exactly once, exactly its size",
            self.null_downloads
        );
        if correct {
            println!("correctness: OK — {checked}");
        } else {
            println!("correctness: FAILED (checked: {checked})");
            for problem in &self.failures.0 {
                println!("  - {problem}");
            }
        }
        println!(
            "  hashed: {}",
            self.verified_routes
                .iter()
                .map(|(route, n)| format!("{route} ×{n}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        self.json.insert("correct".to_owned(), json!(correct));
        self.json.insert("total_s".to_owned(), json!(total_secs));
        println!(
            "SPEED-RESULT {}",
            Value::Object(std::mem::take(&mut self.json))
        );
        Ok(correct)
    }

    /// pullcache's own counters, from `/metrics` (plain HTTP on its port).
    fn metrics(&self) -> String {
        let output = Command::new(support::client::curl_program())
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .args(["-q", "-s", "--max-time", "10", "--noproxy", "*"])
            .arg(format!("http://{}/metrics", self.pullcache_addr()))
            .stdin(Stdio::null())
            .output();
        let Ok(output) = output else {
            return "unavailable".to_owned();
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let counters: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("pullcache_") && !l.ends_with(" 0"))
            .map(|l| l.trim_start_matches("pullcache_").replace(' ', "="))
            .collect();
        if counters.is_empty() {
            "no non-zero counters".to_owned()
        } else {
            counters.join(", ")
        }
    }
}

/// A download through pullcache at `addr`.
fn proxied<'a>(addr: SocketAddr, host: &'a str, path: &'a str, ca: &'a Path) -> Get<'a> {
    Get {
        via: Via::Proxy(addr),
        host,
        path,
        ca,
    }
}

/// `r0.test` (warm) then `r1.test` … `r<rounds>.test`.
fn ttfb_hosts(rounds: usize) -> Vec<String> {
    (0..=rounds).map(|i| format!("r{i}.test")).collect()
}

fn sync_disks() {
    let _ = Command::new("sync").stdin(Stdio::null()).status();
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `cache.outcome` counts of pullcache's "served" lines for `path`.
fn outcomes_for(lines: &[String], path: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|token| token.strip_prefix(key))
                .map(|v| v.trim_matches('"').to_owned())
        };
        if field("http.path=").as_deref() == Some(path) {
            if let Some(outcome) = field("cache.outcome=") {
                *counts.entry(outcome).or_default() += 1;
            }
        }
    }
    counts
}

/// `a×2, b×1`.
fn tally(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `download` and adds the whole machine's busy CPU over it, and its
/// wall time, to `series`.
fn on_machine<T>(
    series: &mut Series,
    download: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let before = procfs::machine_ticks().busy;
    let started = Instant::now();
    let result = download()?;
    let busy = procfs::machine_ticks().busy.saturating_sub(before);
    series.add_machine(busy, started.elapsed().as_secs_f64());
    Ok(result)
}

fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

fn ratio_text(ratio: &Summary) -> String {
    format!("{:.2}× ({:.2}–{:.2})", ratio.median, ratio.min, ratio.max)
}

/// A phase's table: per route the median time with min–max, MB/s, server
/// CPU-s/GB, and its throughput relative to each baseline.
fn print_section(
    title: &str,
    routes: &[(&str, &Series)],
    baselines: &[(&str, &Series)],
    ticks_per_sec: u64,
    cpu_note: &str,
) {
    println!();
    println!("{title}");
    let mut header = format!(
        "   {:<24} {:>9}   {:<17} {:>6}   {:>8}   {:>8}",
        "", "median", "min–max", "MB/s", "CPU-s/GB", "curl's"
    );
    for (name, _) in baselines {
        header.push_str(&format!("   {:<18}", format!("vs {name}")));
    }
    println!("{header}");
    for (label, series) in routes {
        if series.is_empty() {
            continue;
        }
        let s = series.summary();
        let mut line = format!(
            "   {label:<24} {:>7.3} s   {:<17} {:>6.0}   {:>8}   {:>8}",
            s.median,
            format!("{:.3}–{:.3} s", s.min, s.max),
            series.mb_per_s(),
            fmt_opt(series.cpu_per_gb(ticks_per_sec), 2),
            fmt_opt(series.client_cpu_per_gb(ticks_per_sec), 2)
        );
        for (_, baseline) in baselines {
            let r = series.speed_ratio(baseline);
            line.push_str(&format!(
                "   {:<18}",
                format!("{:.2} ({:.2}–{:.2})", r.median, r.min, r.max)
            ));
        }
        println!("{line}");
    }
    println!("   {cpu_note}; curl's: the clients' own CPU-s/GB, process start-up included (a curl near 1 CPU-s per wall second bounds its download)");
    let machine: Vec<String> = routes
        .iter()
        .filter_map(|(label, series)| {
            let cores = series.cores_busy(ticks_per_sec)?;
            let cpu = series.machine_cpu_per_gb(ticks_per_sec)?;
            Some(format!("{label} {cores:.2} cores, {cpu:.2} CPU-s/GB"))
        })
        .collect();
    if !machine.is_empty() {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!(
            "   whole machine (of {cores} cores) while each route's curl ran: {}",
            machine.join(" · ")
        );
    }
}

/// Every round's time per route, in order.
fn print_rounds(routes: &[(&str, &Series)]) {
    println!("   per round (s):");
    for (label, series) in routes {
        let times: Vec<String> = series.secs.iter().map(|s| format!("{s:.3}")).collect();
        println!("     {label:<24} {}", times.join("  "));
    }
}
