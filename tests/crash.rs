//! Crashes and corruption against the real binary and a real registry:
//! `kill -9` in the middle of 20 concurrent fills, repeatedly, on one data
//! directory, must leave a cache that `pullcache cache verify` finds clean
//! and that still serves correct images; a byte flipped in a cached blob
//! must be found by `cache verify`, removed, and fetched again once.
//!
//! The kill moments are counted from the first download and drawn from a
//! seeded generator; the seed is printed, and `E2E_CRASH_SEED=<n>` replays
//! a run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::bin::pullcache_command;
use crate::support::image::{random_bytes, OciImage};
use crate::support::registry::{cached_blob_path, proxy_for, RealRegistry};
use crate::support::reliability::record;
use crate::support::skopeo::{pull_ok, pull_via_proxy, push, PulledDir};
use crate::support::{run_bounded, BoundedOutput, ProxyConfig, TestCa, TestProxy};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// The seed when `E2E_CRASH_SEED` is not set: fixed, so runs are repeatable.
const DEFAULT_SEED: u64 = 0x5eed_c0de;
/// `cache verify` hashes a few MiB; anything near this is a hang.
const VERIFY_LIMIT: Duration = Duration::from_secs(30);

fn start_proxy(ca: &TestCa, registry: &RealRegistry) -> TestProxy {
    proxy_for(ca, registry, "5m")
}

/// `pullcache cache verify --data-dir DIR`, bounded.
fn cache_verify(data_dir: &Path) -> BoundedOutput {
    let mut cmd = pullcache_command();
    cmd.args(["cache", "verify", "--data-dir"]).arg(data_dir);
    run_bounded(cmd, VERIFY_LIMIT)
}

/// The files in `dir` (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// How many committed blob files the data directory holds.
fn committed_blobs(data_dir: &Path) -> usize {
    let root = data_dir.join("blobs").join("sha256");
    entries(&root)
        .iter()
        .map(|fanout| entries(&root.join(fanout)).len())
        .sum()
}

fn seed() -> u64 {
    std::env::var("E2E_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// When a round's `kill -9` comes, measured from the first download: a
/// fixed delay after the pulls start would mostly land before any fill on a
/// fast machine (20 skopeo processes take a while to get going) and after
/// all of them on a slow one.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// As soon as a download has written 64 KiB: a crash in the middle of
    /// a layer's fill (manifests and configs are smaller and land at once),
    /// which should leave an ingest file behind.
    MidLayer,
    /// This long after the first download started.
    After(Duration),
}

impl KillAt {
    /// Blocks until the moment has come (at most 30 s for the first
    /// download to start). `committed` is how many blobs the data directory
    /// held before the pulls: a new one means a download has run.
    fn wait(self, data_dir: &Path, committed: usize) {
        let ingest = data_dir.join("ingest");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let files: Vec<u64> = std::fs::read_dir(&ingest)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok()?.metadata().ok().map(|m| m.len()))
                        .collect()
                })
                .unwrap_or_default();
            let started = match self {
                KillAt::MidLayer => files.iter().any(|&len| len >= 64 * 1024),
                KillAt::After(_) => !files.is_empty() || committed_blobs(data_dir) > committed,
            };
            if started {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no download started within 30 s of the pulls"
            );
            thread::sleep(Duration::from_millis(1));
        }
        if let KillAt::After(delay) = self {
            thread::sleep(delay);
        }
    }
}

/// Round 0 kills mid-fill; later rounds at a seeded moment, early and late
/// in the pulls' downloads.
fn kill_moment(seed: u64, round: u64) -> KillAt {
    let (low, high) = match round {
        0 => return KillAt::MidLayer,
        1 => (0, 300),
        _ => (300, 800),
    };
    let bytes = random_bytes(seed ^ round.wrapping_mul(0x9E37_79B9), 8);
    let n = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
    KillAt::After(Duration::from_millis(low + n % (high - low)))
}

/// The `key=value` fields of the last log line containing `message`.
fn logged_fields(proxy: &TestProxy, message: &str) -> BTreeMap<String, String> {
    let logs = proxy.logs();
    let line = logs
        .iter()
        .rev()
        .find(|line| line.contains(message))
        .unwrap_or_else(|| panic!("no {message:?} in the log:\n{}", logs.join("\n")));
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[track_caller]
fn assert_image(pulled: &PulledDir, image: &OciImage, what: &str) {
    let expected: BTreeMap<String, u64> = image
        .blobs()
        .iter()
        .map(|b| (b.digest.clone(), b.size))
        .collect();
    assert_eq!(pulled.blobs, expected, "{what}: pulled blobs differ");
    assert_eq!(
        pulled.top_manifest, image.top.digest,
        "{what}: manifest.json is not the pushed manifest"
    );
}

#[test]
fn kill_9_during_concurrent_fills_leaves_a_clean_cache() {
    const PULLS: usize = 20;
    const ROUNDS: u64 = 3;
    let seed = seed();
    eprintln!("crash test seed: {seed} (replay with E2E_CRASH_SEED={seed})");

    let ca = TestCa::new();
    let registry = RealRegistry::start(&ca);
    let repo = "test/crash601";
    // One image per round, so every round kills fills of blobs nobody has
    // cached yet rather than hits.
    let images: Vec<OciImage> = (0..ROUNDS)
        .map(|round| {
            let image = OciImage::single(
                601 + round,
                &format!("r{round}"),
                &[MIB, MIB, 512 * KIB, 256 * KIB, 64 * KIB],
            );
            push(&image, &registry, &ca, repo);
            image
        })
        .collect();
    let mut proxy = start_proxy(&ca, &registry);
    let data_dir = proxy.data_dir();

    for (round, image) in images.iter().enumerate() {
        let round = round as u64;
        let kill_at = kill_moment(seed, round);
        let reference = format!("{repo}:{}", image.tag());

        let before = committed_blobs(&data_dir);
        let barrier = Barrier::new(PULLS + 1);
        let (outcomes, waited) = thread::scope(|s| {
            let pulls: Vec<_> = (0..PULLS)
                .map(|_| {
                    s.spawn(|| {
                        let tmp = tempfile::tempdir().expect("tempdir");
                        let dest = tmp.path().join("image");
                        barrier.wait();
                        let out = pull_via_proxy(&proxy, &reference, &dest, false);
                        out.status.and_then(|st| st.code()) == Some(0)
                    })
                })
                .collect();
            barrier.wait();
            let started = Instant::now();
            kill_at.wait(&data_dir, before);
            let waited = started.elapsed();
            proxy.send_sigkill();
            let outcomes: Vec<bool> = pulls
                .into_iter()
                .map(|p| p.join().expect("pull thread"))
                .collect();
            (outcomes, waited)
        });
        let status = proxy.wait_exit(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.code().is_none()),
            "round {round}: the proxy should have died of SIGKILL, got {status:?}"
        );
        // The data directory as the crash left it.
        let in_flight = entries(&data_dir.join("ingest")).len();
        let committed = committed_blobs(&data_dir);
        eprintln!(
            "round {round}: killed {waited:?} after the pulls started ({kill_at:?}); {in_flight} \
             downloads cut short, {committed} blobs committed, {} of {PULLS} pulls had finished",
            outcomes.iter().filter(|ok| **ok).count()
        );

        if let Err(failure) = proxy.restart() {
            panic!(
                "round {round}: pullcache did not restart after kill -9 (status {:?}):\n{}",
                failure.status,
                failure.logs.join("\n")
            );
        }
        let left = entries(&data_dir.join("ingest"));
        assert!(
            left.is_empty(),
            "round {round}: ingest/ holds {left:?} after the restart"
        );
        // Recovery removed exactly the cut-short downloads and kept exactly
        // the committed blobs: nothing partial adopted, nothing whole lost.
        let opened = logged_fields(&proxy, "cache opened");
        assert_eq!(
            (
                opened.get("recovery.ingest_removed").map(String::as_str),
                opened.get("cache.blobs").map(String::as_str),
                opened.get("recovery.strays_removed").map(String::as_str),
            ),
            (
                Some(in_flight.to_string().as_str()),
                Some(committed.to_string().as_str()),
                Some("0"),
            ),
            "round {round}: recovery after kill -9: {opened:?}"
        );
    }

    let status = proxy.terminate(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM after the last restart: {status:?}; log: {:#?}",
        proxy.logs()
    );
    let verified = cache_verify(&data_dir);
    assert_eq!(verified.code(), 0, "cache verify: {verified:#?}");
    assert!(
        verified.stdout.contains(", corrupt 0, removed 0"),
        "cache verify found corruption after kill -9: {verified:#?}"
    );
    eprintln!("cache verify: {}", verified.stdout.trim());

    if let Err(failure) = proxy.restart() {
        panic!(
            "pullcache did not start after cache verify (status {:?}):\n{}",
            failure.status,
            failure.logs.join("\n")
        );
    }
    // Every image, whatever its round left behind, now pulls whole.
    for image in &images {
        let reference = format!("{repo}:{}", image.tag());
        let (_dir, pulled) = pull_ok(&proxy, &reference, false);
        assert_image(
            &pulled,
            image,
            &format!("pull of {reference} after the crashes"),
        );
    }
    record(
        "kill -9 during 20 concurrent pulls, then restart",
        ROUNDS as u32,
        "ingest/ emptied at start; cache verify found 0 corrupt; every pull worked",
    );
}

#[test]
fn cache_verify_finds_a_flipped_byte_and_the_blob_is_fetched_again() {
    let ca = TestCa::new();
    let mut registry = RealRegistry::start(&ca);
    let repo = "test/verify611";
    let image = OciImage::single(611, "v1", &[128 * KIB, 300 * KIB]);
    push(&image, &registry, &ca, repo);
    let mut proxy = start_proxy(&ca, &registry);
    let reference = format!("{repo}:v1");
    let (_d1, first) = pull_ok(&proxy, &reference, false);
    assert_image(&first, &image, "first pull");

    let status = proxy.terminate(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "SIGTERM: {status:?}");
    let layer = image.platforms[0].layers[1].clone();
    let path = cached_blob_path(&proxy, &layer.digest);
    let mut bytes = std::fs::read(&path).expect("read the cached layer");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    // Committed blobs are read-only (0444).
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod the cached layer");
    std::fs::write(&path, &bytes).expect("corrupt the cached layer");

    let verified = cache_verify(&proxy.data_dir());
    assert_eq!(verified.code(), 0, "cache verify: {verified:#?}");
    assert!(
        verified.stdout.contains("checked 4 blobs")
            && verified.stdout.contains(", corrupt 1, removed 1"),
        "config, two layers and the manifest checked, one corrupt: {verified:#?}"
    );
    assert!(
        verified
            .stdout
            .contains(&format!("corrupt {}: content hashes to", layer.digest)),
        "the report names the layer: {verified:#?}"
    );
    assert!(!path.exists(), "the corrupt file is still there");

    registry.reset_counts();
    proxy.restart().unwrap_or_else(|failure| {
        panic!(
            "no restart after cache verify: {:?}\n{}",
            failure.status,
            failure.logs.join("\n")
        )
    });
    let (_d2, second) = pull_ok(&proxy, &reference, false);
    assert_image(&second, &image, "pull after the corrupt layer was removed");
    registry.settle();
    assert_eq!(
        (
            registry.requests("GET", &format!("/blobs/{}", layer.digest)),
            registry.requests("GET", "/blobs/")
        ),
        (1, 1),
        "only the removed layer is fetched again, once; access log:\n{}",
        registry.access_summary()
    );
    record(
        "A cached blob corrupted on disk while stopped",
        1,
        "cache verify found and removed it; the next pull fetched it once",
    );
}

#[test]
fn cache_verify_fails_on_a_missing_data_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("no-such-dir");
    let started = Instant::now();
    let out = cache_verify(&missing);
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(
        out.stderr.contains(&missing.display().to_string())
            && out.stderr.contains("No such file or directory"),
        "the error names the folder and the problem: {out:#?}"
    );
    assert!(!missing.exists(), "cache verify created the data dir");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn cache_verify_refuses_while_the_server_runs() {
    let proxy = TestProxy::start(&ProxyConfig::default().render());
    let out = cache_verify(&proxy.data_dir());
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(
        out.stderr.contains("in use by another process")
            && out.stderr.contains("stop the server first"),
        "{out:#?}"
    );
    assert!(
        entries(&proxy.data_dir()).contains(&"index.redb".to_owned()),
        "the server's index is untouched"
    );
}
