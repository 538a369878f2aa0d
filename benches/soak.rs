//! pullcache's soak test: the release `pullcache` on 127.0.0.1, an
//! in-process HTTPS upstream (registry `registry-1.docker.io` and a plain
//! TLS site `tunnel.test`, both mapped to loopback by pullcache's
//! `[upstream.resolve]`), and N concurrent clients looping over a weighted
//! mix for a bounded time:
//!
//! - cache hits: GET one of 20 primed blobs (64 KiB–4 MiB);
//! - cache misses: GET a blob nobody asked for before (64 KiB–2 MiB, made
//!   from a fresh seed, so the upstream can serve any number of them);
//! - tunnels: CONNECT `tunnel.test:443`, TLS trusting the upstream's CA (not
//!   pullcache's), GET a small body;
//! - bad requests with their expected status: `CONNECT nonsense` (400), a
//!   CONNECT to a port not allowed (403), `GET http://example.invalid/`
//!   (405).
//!
//! Every body's SHA-256 is checked; every request has a 30 s timeout.
//! pullcache's RSS is sampled each second and its open file descriptors are
//! counted before and after. It exits non-zero unless: every good request
//! succeeded with the right digest, none timed out, peak RSS stayed under
//! the bound, the only errors were the bad requests (each with its
//! expected status), the upstream served each blob exactly once, and the
//! descriptors came back to where they started. It prints a table and a
//! `SOAK-RESULT {json}` line.
//!
//! Run it with `benches/soak.sh`, which builds the release binary first.
//! `PULLCACHE_SOAK_SECONDS` (default 180), `PULLCACHE_SOAK_CLIENTS` (default
//! 200, of which `PULLCACHE_SOAK_CURL_CLIENTS`, default 4, are loops of the
//! real curl), `PULLCACHE_SOAK_RSS_MIB` (the bound, default 64 + clients/2)
//! and `PULLCACHE_SOAK_SEED` change the run.

#![allow(clippy::print_stdout)] // the report is the soak test's output

// The shared support modules: the soak test uses all but the load
// benchmark's curl client (of which only the program lookup).
#[allow(dead_code)]
mod support;

#[path = "support/soak/mod.rs"]
mod soak;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::json;
use tokio::task::JoinSet;

use soak::client::{self, Client, CurlClient, Env, Mix};
use soak::monitor::{self, Monitor, Sample};
use soak::stats::{Kind, KindStats, Stats};
use soak::{seeded_sha256, TUNNEL_HOST};
use support::certs::TestCa;
use support::origin::{Catalogue, Connections, Content, Origin, OriginSetup, Side};
use support::proxy::{self, upstream_sections, Commit, Pullcache};
use support::REGISTRY_HOST;

/// Every request's limit, connection set-up included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The primed blobs: how many, and their sizes (spread evenly).
const HIT_BLOBS: u64 = 20;
const HIT_SIZES: (u64, u64) = (64 * 1024, 4 * 1024 * 1024);

/// How long pullcache may take to log a priming blob's commit.
const COMMIT_LIMIT: Duration = Duration::from_secs(60);

/// How long the descriptors may take to come back after the last client.
const SETTLE_LIMIT: Duration = Duration::from_secs(20);

/// Descriptors pullcache may hold after the run beyond its count before it
/// and beyond the extra upstream connections its pool keeps (those are
/// counted by the upstream and allowed for separately): a timer or a file
/// being closed at the instant of the count.
const FD_SLACK: i64 = 4;

/// The default seed of the mix (`PULLCACHE_SOAK_SEED` changes it).
const DEFAULT_SEED: u64 = 0x736f_616b_7465_7374; // "soaktest"

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (and any filter); there is nothing to
    // select here, so arguments are ignored.
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("soak test: FAILED (see the checks above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("soak test: {error:#}");
            ExitCode::FAILURE
        }
    }
}

struct Settings {
    seconds: u64,
    clients: usize,
    curl_clients: usize,
    rss_bound_mib: u64,
    seed: u64,
    mix: Mix,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let seconds = env_number("PULLCACHE_SOAK_SECONDS", 180, 1)?;
        let clients = env_number("PULLCACHE_SOAK_CLIENTS", 200, 1)? as usize;
        let curl_clients = env_number("PULLCACHE_SOAK_CURL_CLIENTS", 4, 0)? as usize;
        if curl_clients > clients {
            bail!("PULLCACHE_SOAK_CURL_CLIENTS ({curl_clients}) exceeds PULLCACHE_SOAK_CLIENTS ({clients})");
        }
        let rss_bound_mib = env_number("PULLCACHE_SOAK_RSS_MIB", 64 + clients as u64 / 2, 1)?;
        let seed = env_number("PULLCACHE_SOAK_SEED", DEFAULT_SEED, 0)?;
        let mix = match std::env::var("PULLCACHE_SOAK_MIX") {
            Err(std::env::VarError::NotPresent) => Mix::default(),
            Err(error) => bail!("PULLCACHE_SOAK_MIX: {error}"),
            Ok(text) => Mix::parse(&text).context("PULLCACHE_SOAK_MIX")?,
        };
        Ok(Settings {
            seconds,
            clients,
            curl_clients,
            rss_bound_mib,
            seed,
            mix,
        })
    }
}

/// An integer of at least `min` from the environment, or `default`.
fn env_number(name: &str, default: u64, min: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(error) => bail!("{name}: {error}"),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(n) if n >= min => Ok(n),
            _ => bail!("{name} must be an integer of at least {min}, not {text:?}"),
        },
    }
}

/// pullcache's config below `listen` and `data_dir`: loopback clients,
/// CONNECT to 443 only, the registry intercepted, `tunnel.test` tunnelled,
/// both resolved to the origin (whose CA is `ca`), and generous timeouts.
fn config_sections(origin: &Origin, ca: &Path) -> String {
    let upstream = upstream_sections(
        &[REGISTRY_HOST],
        ca,
        &[
            (REGISTRY_HOST, origin.addr(Side::Pullcache)),
            (TUNNEL_HOST, origin.addr(Side::Tunnel)),
        ],
        "connect_timeout = \"10s\"\n",
    );
    format!(
        "[access]\n\
         clients = [\"127.0.0.0/8\"]\n\
         connect_ports = [443]\n\
         tunnel = true\n\
         \n\
         {upstream}\
         \n\
         [timeouts]\n\
         tls_handshake = \"30s\"\n\
         header_read = \"30s\"\n\
         tunnel_idle = \"2m\"\n\
         shutdown_grace = \"5s\"\n\
         \n\
         [cache]\n\
         upstream_stall = \"60s\"\n",
    )
}

/// One pass/fail criterion.
struct Check {
    name: &'static str,
    pass: bool,
    detail: String,
}

fn run() -> anyhow::Result<bool> {
    let settings = Settings::from_env()?;
    let bin = proxy::release_binary("benches/soak.sh")?;
    let dir = tempfile::Builder::new()
        .prefix("pullcache-soak")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let (ticks_per_sec, _) = proxy::clock_ticks_per_second();

    // The primed blobs.
    let catalogue = Arc::new(Catalogue::default());
    let mut hits = Vec::new();
    for i in 0..HIT_BLOBS {
        let size = HIT_SIZES.0 + i * (HIT_SIZES.1 - HIT_SIZES.0) / (HIT_BLOBS - 1);
        let seed = settings.seed.wrapping_add(i);
        let hex = seeded_sha256(seed, size);
        catalogue.insert(hex.clone(), Content::Seeded { seed, size });
        hits.push((hex, size));
    }

    let ca = TestCa::new(dir.path(), "upstream")?;
    let names = [REGISTRY_HOST.to_owned(), TUNNEL_HOST.to_owned()];
    let leaf = ca.leaf(dir.path(), "upstream", &names)?;
    let origin = Origin::start(OriginSetup {
        thread_name: "soak-upstream",
        tls: leaf.server_config(&[b"h2", b"http/1.1"])?,
        sides: &[Side::Pullcache, Side::Tunnel],
        repository: soak::REPOSITORY,
        catalogue: catalogue.clone(),
    })?;
    let sections = config_sections(&origin, ca.pem_path());
    let mut pullcache = Pullcache::start(&bin, dir.path(), &sections)?;
    let pid = pullcache.pid();
    eprintln!(
        "soak: {} clients ({} curl) for {} s; pullcache {} (pid {pid}) on {}; upstream registry {}, tunnel site {}",
        settings.clients,
        settings.curl_clients,
        settings.seconds,
        bin.display(),
        pullcache.addr(),
        origin.addr(Side::Pullcache),
        origin.addr(Side::Tunnel)
    );

    let env = Arc::new(Env::new(
        pullcache.addr(),
        pullcache.ca_path().to_path_buf(),
        ca.pem_path().to_path_buf(),
        catalogue,
        hits.clone(),
        // Miss seeds: far from the primed blobs' seeds.
        settings.seed.wrapping_add(1 << 40),
        REQUEST_TIMEOUT,
        settings.mix.clone(),
    )?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("soak-client")
        .enable_all()
        .build()
        .context("cannot build the clients' runtime")?;

    // Priming: each hit blob once, and its commit awaited, so that the hits
    // of the soak are real cache hits.
    let prime_started = Instant::now();
    runtime.block_on(async {
        let mut primer = Client::new(0, env.clone(), settings.seed);
        for (hex, size) in &hits {
            primer
                .fetch_once(hex, *size)
                .await
                .with_context(|| format!("priming sha256:{hex}"))?;
        }
        anyhow::Ok(())
    })?;
    for (hex, _) in &hits {
        match pullcache.logs().wait_commit(hex, COMMIT_LIMIT) {
            Commit::Cached => {}
            Commit::Failed(line) => bail!("priming: pullcache did not cache sha256:{hex}: {line}"),
            Commit::NotLogged => {
                bail!("priming: no commit of sha256:{hex} logged within {COMMIT_LIMIT:?}")
            }
        }
    }
    eprintln!(
        "soak: primed {} blobs ({:.1} MiB) in {:.1} s",
        hits.len(),
        hits.iter().map(|(_, s)| s).sum::<u64>() as f64 / 1048576.0,
        prime_started.elapsed().as_secs_f64()
    );

    // The baseline: after priming, once the priming connections are gone.
    std::thread::sleep(Duration::from_secs(1));
    let before = monitor::sample(pid, 0.0)?;
    let fd_kinds_before = monitor::fd_kinds(pid);
    let registry_before = origin.connections(Side::Pullcache);
    let cpu_before = proxy::cpu_ticks(pid)?;
    let own_cpu_before = monitor::own_cpu_ticks();

    // The soak.
    let monitor = Monitor::start(pid)?;
    let soak_started = Instant::now();
    let deadline = soak_started + Duration::from_secs(settings.seconds);
    let hard_limit = deadline + REQUEST_TIMEOUT + Duration::from_secs(30);
    let progress_every = Duration::from_secs((settings.seconds / 12).clamp(5, 30));
    let (stats, stragglers) = runtime.block_on(async {
        let mut tasks = JoinSet::new();
        for id in 0..settings.clients {
            let env = env.clone();
            if id < settings.curl_clients {
                tasks.spawn(CurlClient::new(id, env, settings.seed).run(deadline));
            } else {
                tasks.spawn(Client::new(id, env, settings.seed).run(deadline));
            }
        }
        let mut stats = Stats::default();
        let mut ticker = tokio::time::interval(progress_every);
        ticker.tick().await;
        let mut last = (0u64, Instant::now());
        let hard = tokio::time::sleep_until(hard_limit.into());
        tokio::pin!(hard);
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    Some(Ok(client_stats)) => stats.merge(client_stats),
                    Some(Err(error)) => eprintln!("soak: a client task failed: {error}"),
                    None => break,
                },
                _ = ticker.tick() => {
                    let attempts = env.live.attempts.load(std::sync::atomic::Ordering::Relaxed);
                    let failures = env.live.failures.load(std::sync::atomic::Ordering::Relaxed);
                    let bytes = env.live.bytes.load(std::sync::atomic::Ordering::Relaxed);
                    let rate = (attempts - last.0) as f64 / last.1.elapsed().as_secs_f64();
                    last = (attempts, Instant::now());
                    let sample = monitor.latest();
                    eprintln!(
                        "soak: {:>4.0} s  {attempts} requests ({rate:.0}/s), {failures} not as expected, {:.2} GB verified; pullcache RSS {} MiB, {} fds, {} clients running",
                        soak_started.elapsed().as_secs_f64(),
                        bytes as f64 / 1e9,
                        sample.map_or(0, |s| s.rss_kib / 1024),
                        sample.map_or(0, |s| s.fds),
                        tasks.len()
                    );
                },
                () = &mut hard => break,
            }
        }
        let stragglers = tasks.len();
        tasks.abort_all();
        (stats, stragglers)
    });
    let active_secs = soak_started.elapsed().as_secs_f64();
    let cpu_secs = proxy::cpu_ticks(pid)?.saturating_sub(cpu_before) as f64 / ticks_per_sec as f64;
    let own_cpu_after = monitor::own_cpu_ticks();
    let secs_of = |ticks: u64| ticks as f64 / ticks_per_sec as f64;
    let own_cpu_secs = secs_of(own_cpu_after.0.saturating_sub(own_cpu_before.0));
    let own_cpu: BTreeMap<String, f64> = own_cpu_after
        .1
        .iter()
        .map(|(name, ticks)| {
            let before = own_cpu_before.1.get(name).copied().unwrap_or(0);
            (name.clone(), secs_of(ticks.saturating_sub(before)))
        })
        .filter(|(_, secs)| *secs >= 0.1)
        .collect();
    let curl_cpu_secs = secs_of(own_cpu_after.2.saturating_sub(own_cpu_before.2));

    // After: pullcache's counters, then the descriptors once they settle.
    let metrics = runtime.block_on(client::admin_get(&env, "/metrics"));
    let settle_started = Instant::now();
    let (after, registry_after, tunnel_after) = loop {
        let sample = monitor::sample(pid, 0.0)?;
        let registry = origin.connections(Side::Pullcache);
        let tunnel = origin.connections(Side::Tunnel);
        // Waits for the count before (plus new pooled upstream connections),
        // without the slack, so "after" is as settled as it gets.
        let settled = sample.fds as i64
            <= allowed_fds(&before, &registry_before, &registry) - FD_SLACK
            && tunnel.open == 0;
        if settled || settle_started.elapsed() >= SETTLE_LIMIT {
            break (sample, registry, tunnel);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let settle_secs = settle_started.elapsed().as_secs_f64();
    let fd_kinds_after = monitor::fd_kinds(pid);
    let blob_files_after = monitor::open_blob_files(pid);
    let samples = monitor.stop();
    let (hwm_kib, _) = proxy::memory_kib(pid)?;
    let alive = pullcache.check_alive();
    let log_lines = pullcache.logs().lines();
    drop(runtime);

    // === checks ===
    let mut checks = Vec::new();
    let digest_kinds = Kind::ALL.iter().filter(|k| k.has_digest());
    let verified: u64 = digest_kinds.clone().map(|k| stats.get(*k).ok).sum();
    let wrong_bodies: u64 = digest_kinds
        .clone()
        .map(|k| {
            let f = &stats.get(*k).failures;
            f.get("digest").copied().unwrap_or(0) + f.get("length").copied().unwrap_or(0)
        })
        .sum();
    let verified_bytes: u64 = digest_kinds.map(|k| stats.get(*k).bytes).sum();
    checks.push(Check {
        name: "digests",
        pass: wrong_bodies == 0,
        detail: format!(
            "{verified} bodies ({:.2} GB) verified, {wrong_bodies} with a wrong digest or length",
            verified_bytes as f64 / 1e9
        ),
    });

    let total = stats.total();
    let timeouts = total.timeouts();
    checks.push(Check {
        name: "timeouts",
        pass: timeouts == 0 && stragglers == 0,
        detail: format!(
            "{timeouts} requests exceeded {}s; {stragglers} clients still running at the hard limit",
            REQUEST_TIMEOUT.as_secs()
        ),
    });

    let sampled_peak_kib = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let peak_kib = sampled_peak_kib.max(hwm_kib);
    checks.push(Check {
        name: "peak_rss",
        pass: peak_kib < settings.rss_bound_mib * 1024,
        detail: format!(
            "peak {:.1} MiB (sampled VmRSS max {:.1} MiB, kernel VmHWM {:.1} MiB) against a bound of {} MiB",
            peak_kib as f64 / 1024.0,
            sampled_peak_kib as f64 / 1024.0,
            hwm_kib as f64 / 1024.0,
            settings.rss_bound_mib
        ),
    });

    let bad_kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| k.expected_error().is_some())
        .collect();
    let bad_sent: u64 = bad_kinds.iter().map(|k| stats.get(*k).attempts).sum();
    let bad_as_expected: u64 = bad_kinds.iter().map(|k| stats.get(*k).ok).sum();
    // An error is any request that did not end in a good answer: every bad
    // request (which must get its error status) and every failure.
    let errors = total.failed() + bad_as_expected;
    checks.push(Check {
        name: "errors",
        pass: errors == bad_sent && bad_as_expected == bad_sent,
        detail: format!(
            "{errors} errors for {bad_sent} bad requests sent; {bad_as_expected} of them got their expected status; {} good requests failed",
            total.failed() - (bad_sent - bad_as_expected)
        ),
    });

    let misses = env.misses();
    let role_of = |hex: &str| {
        if hits.iter().any(|(h, _)| h == hex) {
            "primed"
        } else if misses.iter().any(|h| h == hex) {
            "miss"
        } else {
            "unknown"
        }
    };
    let mut not_once = Vec::new();
    for (role, hex) in hits
        .iter()
        .map(|(hex, _)| ("hit", hex))
        .chain(misses.iter().map(|hex| ("miss", hex)))
    {
        let requests = origin.blob_requests(Side::Pullcache, hex);
        let count = |method: &str| requests.get(method).copied().unwrap_or(0);
        if count("GET") != 1 {
            not_once.push(format!(
                "{role} blob sha256:{hex}: {} GETs, {} HEADs",
                count("GET"),
                count("HEAD")
            ));
        }
    }
    checks.push(Check {
        name: "fetched_once",
        pass: not_once.is_empty(),
        detail: if not_once.is_empty() {
            format!(
                "the upstream served each of {} miss blobs and {} primed blobs exactly once",
                misses.len(),
                hits.len()
            )
        } else {
            format!(
                "{} blobs not fetched exactly once, e.g. {}",
                not_once.len(),
                not_once[..not_once.len().min(5)].join("; ")
            )
        },
    });

    let allowed = allowed_fds(&before, &registry_before, &registry_after);
    checks.push(Check {
        name: "fds",
        pass: after.fds as i64 <= allowed && tunnel_after.open == 0,
        detail: format!(
            "{} open before, {} after {settle_secs:.1} s (allowed {allowed}: +{} pooled upstream connections, +{FD_SLACK} slack); {} tunnels to the upstream still open",
            before.fds,
            after.fds,
            (registry_after.open - registry_before.open).max(0),
            tunnel_after.open
        ),
    });

    let metric = |name: &str| -> Option<u64> {
        metrics.as_ref().ok().and_then(|(_, body)| {
            body.lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        })
    };
    let hit_requests = stats.get(Kind::Hit).attempts + stats.get(Kind::CurlHit).attempts;
    let miss_requests = stats.get(Kind::Miss).attempts + stats.get(Kind::CurlMiss).attempts;
    let mut expected_metrics = vec![
        ("pullcache_cache_hits_total", hit_requests),
        ("pullcache_cache_misses_total", HIT_BLOBS + miss_requests),
        ("pullcache_cache_joined_total", 0),
        ("pullcache_cache_bypassed_total", 0),
        ("pullcache_digest_mismatches_total", 0),
    ];
    // Newer counters, checked where this pullcache has them.
    for name in ["pullcache_storage_errors_total"] {
        if metric(name).is_some() {
            expected_metrics.push((name, 0));
        }
    }
    let metrics_ok = expected_metrics
        .iter()
        .all(|(name, want)| metric(name) == Some(*want));
    checks.push(Check {
        name: "metrics",
        pass: metrics_ok,
        detail: expected_metrics
            .iter()
            .map(|(name, want)| {
                let got = metric(name).map_or_else(|| "?".to_owned(), |v| v.to_string());
                format!(
                    "{} {got}{}",
                    name.trim_start_matches("pullcache_")
                        .trim_end_matches("_total"),
                    if metric(name) == Some(*want) {
                        String::new()
                    } else {
                        format!(" (expected {want})")
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    });

    checks.push(Check {
        name: "alive",
        pass: alive.is_ok(),
        detail: match &alive {
            Ok(()) => "pullcache ran throughout".to_owned(),
            Err(error) => format!("{error:#}"),
        },
    });

    let warn_lines: Vec<&String> = log_lines
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    let pass = checks.iter().all(|c| c.pass);

    // === report ===
    println!();
    println!(
        "pullcache soak: {} clients ({} in-process, {} curl) for {} s on 127.0.0.1, {}s request timeout",
        settings.clients,
        settings.clients - settings.curl_clients,
        settings.curl_clients,
        settings.seconds,
        REQUEST_TIMEOUT.as_secs()
    );
    println!("mix: {}", settings.mix.describe());
    println!();
    println!(
        "{:<16} {:>8} {:>8} {:>7} {:>8} {:>8} {:>9} {:>9} {:>9}  failures",
        "kind", "attempts", "ok", "failed", "req/s", "MB/s", "p50 ms", "p99 ms", "max ms"
    );
    let row = |name: &str, s: &KindStats| {
        let (p50, p99, max) = s.latency_ms();
        let failures = if s.failures.is_empty() {
            "-".to_owned()
        } else {
            s.failures
                .iter()
                .map(|(cause, n)| format!("{cause} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{name:<16} {:>8} {:>8} {:>7} {:>8.1} {:>8.1} {p50:>9.1} {p99:>9.1} {max:>9.1}  {failures}",
            s.attempts,
            s.ok,
            s.failed(),
            s.attempts as f64 / active_secs,
            s.bytes as f64 / 1e6 / active_secs,
        );
    };
    for kind in Kind::ALL {
        if stats.get(kind).attempts > 0 {
            row(kind.name(), stats.get(kind));
        }
    }
    row("total", &total);
    println!();
    for check in &checks {
        println!(
            "[{}] {:<17} {}",
            if check.pass { "PASS" } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    println!();
    println!("details:");
    println!(
        "  soak phase {active_secs:.1} s (clients stop starting requests at {} s); pullcache CPU {cpu_secs:.1} s ({:.2} cores on average)",
        settings.seconds,
        cpu_secs / active_secs
    );
    println!(
        "  the soak's own CPU in that time (the machine's 2 cores are shared): {own_cpu_secs:.1} s in the soak process (of which {}), {curl_cpu_secs:.1} s in curl processes",
        own_cpu
            .iter()
            .map(|(name, secs)| format!("{name} threads {secs:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  pullcache RSS: {:.1} MiB before, {} (every ~{} s), {:.1} MiB after; threads {} before, {} max",
        before.rss_kib as f64 / 1024.0,
        rss_trend(&samples),
        (samples.len() / 12).max(1),
        after.rss_kib as f64 / 1024.0,
        before.threads,
        samples.iter().map(|s| s.threads).max().unwrap_or(0)
    );
    println!(
        "  pullcache fds: {} before {}, max {} during, {} after {}",
        before.fds,
        tally(&fd_kinds_before),
        samples.iter().map(|s| s.fds).max().unwrap_or(0),
        after.fds,
        tally(&fd_kinds_after)
    );
    if !blob_files_after.is_empty() {
        println!(
            "  cached blob files pullcache still has open after the run: {}",
            blob_files_after
                .iter()
                .map(|hex| format!("{} sha256:{hex}", role_of(hex)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "  upstream registry: {} connections from pullcache ({} open before the soak, {} after; ALPN {}), {} requests; tunnel site: {} connections ({} open after), {} requests",
        registry_after.accepted,
        registry_before.open,
        registry_after.open,
        tally(&registry_after.alpn),
        registry_after.requests,
        tunnel_after.accepted,
        tunnel_after.open,
        tunnel_after.requests
    );
    // Path → requests by GET, HEAD and any other method.
    let mut other_requests: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for ((method, path), n) in origin.requests(Side::Pullcache) {
        if !path.starts_with(&format!("/v2/{}/blobs/", soak::REPOSITORY)) {
            let counts = other_requests.entry(path).or_default();
            counts[match method.as_str() {
                "GET" => 0,
                "HEAD" => 1,
                _ => 2,
            }] += n;
        }
    }
    let other_paths: Vec<String> = other_requests
        .into_iter()
        .map(|(path, [get, head, other])| format!("{path} GET×{get} HEAD×{head} other×{other}"))
        .collect();
    println!(
        "  upstream registry requests other than blobs: {}",
        if other_paths.is_empty() {
            "none".to_owned()
        } else {
            other_paths.join(", ")
        }
    );
    match &metrics {
        Ok((status, body)) => println!(
            "  pullcache /metrics ({status}): {}",
            body.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(error) => println!("  pullcache /metrics: {error:#}"),
    }
    println!(
        "  pullcache logged {} lines, {} at WARN or ERROR{}",
        log_lines.len(),
        warn_lines.len(),
        if warn_lines.is_empty() { "" } else { ":" }
    );
    for line in warn_lines.iter().take(10) {
        println!("    {line}");
    }
    println!("  MB = 10^6 bytes; rates over the soak phase; latencies are per request, connection set-up included");

    let kinds_json: serde_json::Map<String, serde_json::Value> = Kind::ALL
        .into_iter()
        .map(|k| (k.name().to_owned(), kind_json(stats.get(k), active_secs)))
        .collect();
    let result = json!({
        "pass": pass,
        "seconds": settings.seconds,
        "active_seconds": round(active_secs, 1),
        "clients": settings.clients,
        "curl_clients": settings.curl_clients,
        "seed": settings.seed,
        "request_timeout_s": REQUEST_TIMEOUT.as_secs(),
        "kinds": kinds_json,
        "total": kind_json(&total, active_secs),
        "errors": errors,
        "bad_sent": bad_sent,
        "bad_as_expected": bad_as_expected,
        "timeouts": timeouts,
        "verified_bodies": verified,
        "verified_bytes": verified_bytes,
        "wrong_bodies": wrong_bodies,
        "miss_blobs": misses.len(),
        "blobs_not_fetched_once": not_once.len(),
        "rss_mib": {
            "before": round(before.rss_kib as f64 / 1024.0, 1),
            "peak_sampled": round(sampled_peak_kib as f64 / 1024.0, 1),
            "vmhwm": round(hwm_kib as f64 / 1024.0, 1),
            "after": round(after.rss_kib as f64 / 1024.0, 1),
            "bound": settings.rss_bound_mib,
        },
        "fds": {
            "before": before.fds,
            "max": samples.iter().map(|s| s.fds).max().unwrap_or(0),
            "after": after.fds,
            "allowed": allowed,
            "tunnels_open_after": tunnel_after.open,
        },
        "rss_trend_mib": samples
            .iter()
            .step_by((samples.len() / 12).max(1))
            .map(|s| json!([round(s.secs, 0), round(s.rss_kib as f64 / 1024.0, 1)]))
            .collect::<Vec<_>>(),
        "pullcache_cpu_s": round(cpu_secs, 1),
        "soak_cpu_s": round(own_cpu_secs, 1),
        "curl_cpu_s": round(curl_cpu_secs, 1),
        "warn_lines": warn_lines.len(),
        "checks": checks.iter().map(|c| (c.name.to_owned(), json!(c.pass))).collect::<serde_json::Map<_, _>>(),
    });
    println!("SOAK-RESULT {result}");
    // A plain closing line, so a runner that reads the last lines counts
    // the checks.
    let failed = checks.iter().filter(|c| !c.pass).count();
    println!("soak: {} passed, {failed} failed", checks.len() - failed);
    drop(pullcache);
    drop(origin);
    Ok(pass)
}

/// The most descriptors pullcache may have after the run: its count before,
/// plus upstream connections its pool opened since (the upstream counts
/// them), plus [`FD_SLACK`].
fn allowed_fds(before: &Sample, registry_before: &Connections, registry_now: &Connections) -> i64 {
    before.fds as i64 + (registry_now.open - registry_before.open).max(0) + FD_SLACK
}

/// RSS samples thinned to about a dozen, in MiB: `31 → 58 → 60 → …`.
fn rss_trend(samples: &[Sample]) -> String {
    if samples.is_empty() {
        return "no samples".to_owned();
    }
    let step = (samples.len() / 12).max(1);
    samples
        .iter()
        .step_by(step)
        .map(|s| format!("{}", s.rss_kib / 1024))
        .collect::<Vec<_>>()
        .join(" → ")
}

fn kind_json(s: &KindStats, secs: f64) -> serde_json::Value {
    let (p50, p99, max) = s.latency_ms();
    json!({
        "attempts": s.attempts,
        "ok": s.ok,
        "failed": s.failed(),
        "timeouts": s.timeouts(),
        "failures": s.failures,
        "rate_per_s": round(s.attempts as f64 / secs, 2),
        "mb_per_s": round(s.bytes as f64 / 1e6 / secs, 2),
        "bytes": s.bytes,
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max, 2),
    })
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// `(a×2, b×1)`.
fn tally<K: std::fmt::Display, V: std::fmt::Display>(counts: &BTreeMap<K, V>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}×{n}")).collect();
    format!("({})", parts.join(", "))
}
