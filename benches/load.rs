//! pullcache's load benchmark: how long one large blob takes to download
//! straight from an upstream registry (A, "direct"), through pullcache when
//! it has never seen the blob (B, "cold": fetch, hash, write, verify,
//! commit) and through pullcache when the blob is cached (C, "warm": served
//! from disk), in interleaved rounds A B C, A B C, …, all on 127.0.0.1.
//! It prints medians, min–max, throughput and the ratios to direct, plus
//! pullcache's CPU-seconds per GB and peak RSS. It never asserts speed (the
//! machine may be shared and noisy); it exits non-zero only when a
//! correctness check fails: a body whose SHA-256 is not its digest, or an
//! upstream that served a blob to pullcache other than exactly once.
//!
//! Run it with `benches/run.sh`, which builds the release binary first.
//! `PULLCACHE_BENCH_MIB` (default 256) sets the blob size and
//! `PULLCACHE_BENCH_ROUNDS` (default 5) the number of rounds.

#![allow(clippy::print_stdout)] // the report is the benchmark's output

// The shared support modules: the load benchmark uses what serves and
// fetches its fixed blobs, not the tunnel site, the seeded content or the
// other benchmarks' counters.
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use support::blobs::{self, Blob};
use support::certs::TestCa;
use support::client::{self, Route, Transfer};
use support::origin::{Catalogue, Content, Origin, OriginSetup, Side};
use support::proxy::{self, upstream_sections, Commit, LogBook, Pullcache};
use support::{blob_path, env_count, REGISTRY_HOST, REPOSITORY};

/// How long pullcache may take, after the client has its last byte, to log
/// that a blob was committed (the fsync of a large file can be slow).
const COMMIT_LIMIT: Duration = Duration::from_secs(120);

/// Seed of the first blob; blob `i` uses `BASE_SEED + i`.
const BASE_SEED: u64 = 0x7075_6c6c_6361_6368; // "pullcach"

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (and any filter); there is nothing to
    // select here, so arguments are ignored.
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("load benchmark: a correctness check FAILED (see above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("load benchmark: {error:#}");
            ExitCode::FAILURE
        }
    }
}

struct Settings {
    mib: usize,
    rounds: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        Ok(Settings {
            mib: env_count("PULLCACHE_BENCH_MIB", 256)?,
            rounds: env_count("PULLCACHE_BENCH_ROUNDS", 5)?,
        })
    }

    fn blob_size(&self) -> anyhow::Result<usize> {
        self.mib
            .checked_mul(1 << 20)
            .context("PULLCACHE_BENCH_MIB is too large")
    }
}

/// One kind of transfer's results.
#[derive(Default)]
struct Series {
    secs: Vec<f64>,
    bytes: u64,
    /// pullcache's CPU over these transfers, in clock ticks.
    cpu_ticks: u64,
}

impl Series {
    fn add(&mut self, transfer: &Transfer) {
        self.secs.push(transfer.secs);
        self.bytes += transfer.bytes;
    }
}

/// Median, minimum and maximum.
fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted[0], sorted[n - 1])
}

/// What went wrong, for the correctness line.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn add(&mut self, problem: String) {
        eprintln!("CORRECTNESS: {problem}");
        self.0.push(problem);
    }
}

/// Downloads `blob` by `route` into `scratch`, then (untimed) checks its
/// length and SHA-256 and deletes the file.
fn download_checked(
    route: &Route<'_>,
    blob: &Blob,
    scratch: &Path,
    label: &str,
    failures: &mut Failures,
) -> anyhow::Result<Transfer> {
    let transfer =
        client::download(route, &blob.hex, scratch).with_context(|| format!("{label} download"))?;
    verify_body(&transfer, blob, scratch, label, failures)?;
    Ok(transfer)
}

fn verify_body(
    transfer: &Transfer,
    blob: &Blob,
    scratch: &Path,
    label: &str,
    failures: &mut Failures,
) -> anyhow::Result<()> {
    let got = client::sha256_file(scratch)?;
    std::fs::remove_file(scratch)
        .with_context(|| format!("cannot remove {}", scratch.display()))?;
    if got != blob.hex {
        failures.add(format!(
            "{label}: body sha256:{got} is not the digest sha256:{}",
            blob.hex
        ));
    }
    if transfer.bytes != blob.bytes.len() as u64 {
        failures.add(format!(
            "{label}: {} bytes downloaded, the blob has {}",
            transfer.bytes,
            blob.bytes.len()
        ));
    }
    Ok(())
}

/// Waits until pullcache logs that `hex` was committed. Returns how long
/// that took, or records a failure when it logs a failed fetch instead or
/// nothing within [`COMMIT_LIMIT`].
fn wait_committed(
    logs: &LogBook,
    hex: &str,
    label: &str,
    failures: &mut Failures,
) -> Option<Duration> {
    let start = Instant::now();
    match logs.wait_commit(hex, COMMIT_LIMIT) {
        Commit::Cached => Some(start.elapsed()),
        Commit::Failed(line) => {
            failures.add(format!("{label}: pullcache did not cache the blob: {line}"));
            None
        }
        Commit::NotLogged => {
            failures.add(format!(
                "{label}: pullcache logged no commit for sha256:{hex} within {COMMIT_LIMIT:?}"
            ));
            None
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let settings = Settings::from_env()?;
    let size = settings.blob_size()?;
    let bin = proxy::release_binary("benches/run.sh")?;
    let curl = client::curl_program();
    let (ticks_per_sec, ticks_from_getconf) = proxy::clock_ticks_per_second();
    let dir = tempfile::Builder::new()
        .prefix("pullcache-bench")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let scratch = dir.path().join("body.bin");

    eprintln!(
        "load benchmark: {} rounds of a {} MiB blob; pullcache {}; client {curl}",
        settings.rounds,
        settings.mib,
        bin.display()
    );
    let started = Instant::now();
    // Blob 0 is the warm one; blobs 1..=rounds are each round's cold one.
    let blobs = blobs::generate(settings.rounds + 1, size, BASE_SEED);
    eprintln!(
        "generated {} blobs of {} MiB with their sha256 in {:.1} s",
        blobs.len(),
        settings.mib,
        started.elapsed().as_secs_f64()
    );
    let warm = &blobs[0];
    let cold = &blobs[1..];

    let catalogue = Arc::new(Catalogue::default());
    for blob in &blobs {
        catalogue.insert(blob.hex.clone(), Content::Shared(blob.bytes.clone()));
    }
    let ca = TestCa::new(dir.path(), "upstream")?;
    let leaf = ca.leaf(dir.path(), "upstream", &[REGISTRY_HOST.to_owned()])?;
    let origin = Origin::start(OriginSetup {
        thread_name: "bench-upstream",
        tls: leaf.server_config(&[b"h2", b"http/1.1"])?,
        sides: &[Side::Direct, Side::Pullcache],
        repository: REPOSITORY,
        catalogue,
    })?;
    let sections = upstream_sections(
        &[REGISTRY_HOST],
        ca.pem_path(),
        &[(REGISTRY_HOST, origin.addr(Side::Pullcache))],
        "",
    );
    let mut pullcache = Pullcache::start(&bin, dir.path(), &sections)?;
    let pid = pullcache.pid();
    eprintln!(
        "upstream for curl on {}, for pullcache on {}; pullcache (pid {pid}) on {}",
        origin.addr(Side::Direct),
        origin.addr(Side::Pullcache),
        pullcache.addr()
    );
    let direct = Route::Direct {
        addr: origin.addr(Side::Direct),
        ca: ca.pem_path(),
    };
    let proxy_ca = pullcache.ca_path().to_path_buf();
    let via = Route::Proxy {
        proxy: pullcache.addr(),
        ca: &proxy_ca,
    };

    let mut failures = Failures::default();
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();

    // Untimed warm-up: one direct download (page cache, curl, TLS) and the
    // priming download of the warm blob through pullcache (which also makes
    // pullcache check the repository's visibility, mint its leaf and open
    // its upstream connection).
    let t = download_checked(&direct, warm, &scratch, "warm-up direct", &mut failures)?;
    *versions.entry(t.http_version).or_default() += 1;
    let t = client::download(&via, &warm.hex, &scratch).context("priming download")?;
    wait_committed(pullcache.logs(), &warm.hex, "priming", &mut failures);
    verify_body(&t, warm, &scratch, "priming", &mut failures)?;
    *versions.entry(t.http_version).or_default() += 1;
    eprintln!(
        "primed: warm blob cached through pullcache in {:.3} s (untimed)",
        t.secs
    );

    let mut a = Series::default();
    let mut b = Series::default();
    let mut c = Series::default();
    let mut commit_lags = Vec::new();
    for (round, cold_blob) in cold.iter().enumerate() {
        let n = round + 1;
        pullcache.check_alive()?;

        let t = download_checked(
            &direct,
            warm,
            &scratch,
            &format!("round {n} direct"),
            &mut failures,
        )?;
        a.add(&t);
        *versions.entry(t.http_version).or_default() += 1;

        // Cold: pullcache's CPU is counted until it logs the commit, so the
        // verify, fsync and rename after the client's last byte are in.
        let label = format!("round {n} cold");
        let before = proxy::cpu_ticks(pid)?;
        let t = client::download(&via, &cold_blob.hex, &scratch)
            .with_context(|| format!("{label} download"))?;
        if let Some(lag) = wait_committed(pullcache.logs(), &cold_blob.hex, &label, &mut failures) {
            commit_lags.push(lag.as_secs_f64());
        }
        b.cpu_ticks += proxy::cpu_ticks(pid)?.saturating_sub(before);
        verify_body(&t, cold_blob, &scratch, &label, &mut failures)?;
        b.add(&t);
        *versions.entry(t.http_version).or_default() += 1;

        let before = proxy::cpu_ticks(pid)?;
        let t = client::download(&via, &warm.hex, &scratch)
            .with_context(|| format!("round {n} warm download"))?;
        c.cpu_ticks += proxy::cpu_ticks(pid)?.saturating_sub(before);
        verify_body(
            &t,
            warm,
            &scratch,
            &format!("round {n} warm"),
            &mut failures,
        )?;
        c.add(&t);
        *versions.entry(t.http_version).or_default() += 1;

        eprintln!(
            "round {n}/{}: direct {:.3} s, cold {:.3} s, warm {:.3} s",
            settings.rounds, a.secs[round], b.secs[round], c.secs[round]
        );
    }
    pullcache.check_alive()?;
    let (peak_kib, rss_kib) = proxy::memory_kib(pid)?;
    let log_lines = pullcache.logs().lines();

    check_upstream(&origin, warm, cold, &mut failures);
    let outcomes = outcomes(&log_lines);

    // === report ===
    println!();
    println!(
        "pullcache load benchmark: {} MiB blob, {} rounds, {}, loopback",
        settings.mib,
        settings.rounds,
        client::HTTP_VERSION_LABEL
    );
    println!(
        "{:<15} {:>9}   {:<18} {:>6}    ratio to direct",
        "", "median", "min–max", "MB/s"
    );
    let (direct_median, _, _) = summary(&a.secs);
    for (label, series) in [("direct", &a), ("cold (miss)", &b), ("warm (hit)", &c)] {
        let (median, min, max) = summary(&series.secs);
        let mb_per_s = size as f64 / 1e6 / median;
        println!(
            "{label:<15} {median:>7.3} s   {:<18} {mb_per_s:>6.0}    {:.2}",
            format!("{min:.3}–{max:.3} s"),
            median / direct_median
        );
    }
    let cpu_per_gb = |series: &Series| {
        series.cpu_ticks as f64 / ticks_per_sec as f64 / (series.bytes as f64 / 1e9)
    };
    println!(
        "pullcache CPU-s/GB: cold {:.2}, warm {:.2}   peak RSS {:.0} MiB",
        cpu_per_gb(&b),
        cpu_per_gb(&c),
        peak_kib as f64 / 1024.0
    );
    let correct = failures.0.is_empty();
    if correct {
        println!(
            "correctness: {} cold blobs fetched once each, warm blob fetched once, all digests match",
            cold.len()
        );
    } else {
        println!("correctness: FAILED");
        for problem in &failures.0 {
            println!("  - {problem}");
        }
    }

    println!();
    println!("details:");
    let row = |label: &str, series: &Series| {
        let times: Vec<String> = series.secs.iter().map(|s| format!("{s:.3}")).collect();
        println!("  {label:<12} {}", times.join("  "));
    };
    println!("  per round (s, curl time_total, in order):");
    row("direct", &a);
    row("cold", &b);
    row("warm", &c);
    if !commit_lags.is_empty() {
        let (median, min, max) = summary(&commit_lags);
        println!(
            "  cold commit: pullcache logged \"blob verified and cached\" {median:.3} s \
             (min–max {min:.3}–{max:.3}) after curl finished (persist: fsync + rename)"
        );
    }
    println!(
        "  CPU: utime+stime of pid {pid} from /proc/<pid>/stat, {ticks_per_sec} ticks/s ({}); \
         cold counted up to the commit log line",
        if ticks_from_getconf {
            "getconf CLK_TCK"
        } else {
            "getconf CLK_TCK failed: assumed 100"
        }
    );
    println!(
        "  memory: VmHWM {} KiB peak, VmRSS {} KiB at the end",
        peak_kib, rss_kib
    );
    println!(
        "  curl reported HTTP versions: {}",
        tally(versions.iter().map(|(v, n)| (format!("HTTP/{v}"), *n)))
    );
    println!(
        "  upstream connections: from curl {}; from pullcache {}",
        tally(origin.connections(Side::Direct).alpn),
        tally(origin.connections(Side::Pullcache).alpn)
    );
    println!(
        "  upstream requests from pullcache: {}",
        describe_requests(&origin.requests(Side::Pullcache), warm, cold)
    );
    println!(
        "  pullcache cache outcomes: warm blob {}; cold blobs {}",
        tally(
            outcomes
                .get(&blob_path(&warm.hex))
                .cloned()
                .unwrap_or_default()
        ),
        tally(
            cold.iter()
                .filter_map(|blob| outcomes.get(&blob_path(&blob.hex)))
                .flat_map(|o| o.clone())
                .fold(BTreeMap::new(), |mut acc, (k, v)| {
                    *acc.entry(k).or_default() += v;
                    acc
                })
        )
    );
    println!("  MB = 10^6 bytes, GB = 10^9 bytes; ratio = median time / direct median time (lower is better)");
    drop(pullcache);
    drop(origin);
    Ok(correct)
}

/// Every blob pullcache had to fetch must have reached the upstream's
/// pullcache listener exactly once as a `GET`.
fn check_upstream(origin: &Origin, warm: &Blob, cold: &[Blob], failures: &mut Failures) {
    let gets = |hex: &str| origin.blob_gets(Side::Pullcache, hex);
    for (i, blob) in cold.iter().enumerate() {
        let n = gets(&blob.hex);
        if n != 1 {
            failures.add(format!(
                "round {} cold blob sha256:{} was fetched from upstream {n} times, not once",
                i + 1,
                blob.hex
            ));
        }
    }
    let n = gets(&warm.hex);
    if n != 1 {
        failures.add(format!(
            "warm blob sha256:{} was fetched from upstream {n} times, not once (the priming fetch)",
            warm.hex
        ));
    }
}

/// The upstream's pullcache-side request counts, blob paths named by role
/// (warm blob, then the cold ones in round order, then anything else).
fn describe_requests(
    requests: &BTreeMap<(String, String), usize>,
    warm: &Blob,
    cold: &[Blob],
) -> String {
    let role = |path: &str| -> (usize, String) {
        if path == blob_path(&warm.hex) {
            (0, "warm blob".to_owned())
        } else if let Some(i) = cold.iter().position(|b| path == blob_path(&b.hex)) {
            (i + 1, format!("cold blob {}", i + 1))
        } else {
            (usize::MAX, path.to_owned())
        }
    };
    let mut rows: Vec<(&str, (usize, String), usize)> = requests
        .iter()
        .map(|((method, path), n)| (method.as_str(), role(path), *n))
        .collect();
    rows.sort();
    let parts: Vec<String> = rows
        .into_iter()
        .map(|(method, (_, what), n)| format!("{method} {what} ×{n}"))
        .collect();
    parts.join(", ")
}

/// `cache.outcome` by `http.path` from pullcache's "served" log lines.
fn outcomes(lines: &[String]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut by_path: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for line in lines {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|token| token.strip_prefix(key))
                .map(|v| v.trim_matches('"').to_owned())
        };
        if let (Some(path), Some(outcome)) = (field("http.path="), field("cache.outcome=")) {
            *by_path.entry(path).or_default().entry(outcome).or_default() += 1;
        }
    }
    by_path
}

/// `a×2, b×1`.
fn tally<K: std::fmt::Display>(counts: impl IntoIterator<Item = (K, usize)>) -> String {
    let parts: Vec<String> = counts
        .into_iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}
