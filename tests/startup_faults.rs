//! What `pullcache serve` does with a data directory damaged while it was
//! stopped: an index deleted or overwritten is rebuilt from `blobs/` (the
//! blobs are served without a single upstream blob GET), while CA files
//! that are mismatched, unreadable or half missing stop the start with a
//! clear message and are left exactly as they were found. A second server
//! on a data directory in use is refused without touching it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::bin::pullcache_command;
use crate::support::image::{sha256_digest, OciImage};
use crate::support::registry::{proxy_for, RealRegistry};
use crate::support::reliability::record;
use crate::support::skopeo::{self, push, PulledDir};
use crate::support::{run_bounded, BoundedOutput, ProxyConfig, TestCa, TestProxy};

const KIB: usize = 1024;
/// A start that fails must fail quickly; one that serves is killed here.
const FAIL_LIMIT: Duration = Duration::from_secs(20);

fn start_proxy(ca: &TestCa, registry: &RealRegistry) -> TestProxy {
    proxy_for(ca, registry, "5m")
}

fn pull_checked(proxy: &TestProxy, reference: &str, image: &OciImage) -> PulledDir {
    let (_dir, pulled) = skopeo::pull_ok(proxy, reference, false);
    let expected: std::collections::BTreeMap<String, u64> = image
        .blobs()
        .iter()
        .map(|b| (b.digest.clone(), b.size))
        .collect();
    assert_eq!(pulled.blobs, expected, "{reference}: pulled blobs differ");
    assert_eq!(
        pulled.top_manifest, image.top.digest,
        "{reference}: manifest"
    );
    pulled
}

/// Pulls once, stops the proxy, lets `damage` loose on the data directory,
/// restarts, and pulls again. Returns the proxy (running) and the registry
/// (with counts from the second pull only).
fn damage_index_between_pulls(
    seed: u64,
    damage: impl FnOnce(&Path),
) -> (TestProxy, RealRegistry, OciImage) {
    let ca = TestCa::new();
    let mut registry = RealRegistry::start(&ca);
    let repo = format!("test/index{seed}");
    let image = OciImage::single(seed, "v1", &[128 * KIB, 256 * KIB]);
    push(&image, &registry, &ca, &repo);
    let mut proxy = start_proxy(&ca, &registry);
    let reference = format!("{repo}:v1");
    pull_checked(&proxy, &reference, &image);

    let status = proxy.terminate(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "SIGTERM: {status:?}");
    damage(&proxy.data_dir());
    proxy.restart().unwrap_or_else(|failure| {
        panic!(
            "pullcache did not start with a damaged index (status {:?}):\n{}",
            failure.status,
            failure.logs.join("\n")
        )
    });

    registry.reset_counts();
    pull_checked(&proxy, &reference, &image);
    registry.settle();
    (proxy, registry, image)
}

/// The pull after the rebuild fetched manifests again (tags were lost with
/// the index) but not one blob.
#[track_caller]
fn assert_no_blob_gets(registry: &RealRegistry) {
    assert_eq!(
        registry.requests("GET", "/blobs/"),
        0,
        "adopted blobs must be served from the cache; access log:\n{}",
        registry.access_summary()
    );
}

#[track_caller]
fn assert_logged(proxy: &TestProxy, needle: &str) {
    assert!(
        proxy.logs().iter().any(|line| line.contains(needle)),
        "no log line contains {needle:?}; log:\n{}",
        proxy.logs().join("\n")
    );
}

#[test]
fn a_deleted_index_is_rebuilt_from_blobs() {
    let (proxy, registry, image) = damage_index_between_pulls(701, |data| {
        std::fs::remove_file(data.join("index.redb")).expect("delete index.redb");
    });
    // Config, two layers and the manifest.
    assert_eq!(image.blobs().len() + 1, 4);
    assert_logged(&proxy, "index was missing; rebuilt from blobs/ (4 blobs)");
    assert_no_blob_gets(&registry);
    record(
        "Index deleted while stopped",
        1,
        "rebuilt from blobs/ at start; no blob fetched again",
    );
}

#[test]
fn a_garbage_index_is_set_aside_and_rebuilt_from_blobs() {
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
    let written = garbage.clone();
    let (proxy, registry, _image) = damage_index_between_pulls(702, move |data| {
        std::fs::write(data.join("index.redb"), &written).expect("overwrite index.redb");
    });
    assert_logged(&proxy, "index was damaged; rebuilt from blobs/ (4 blobs)");
    assert_no_blob_gets(&registry);

    let aside: Vec<PathBuf> = std::fs::read_dir(proxy.data_dir())
        .expect("read data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("index.redb.damaged-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "one damaged index kept aside: {aside:?}");
    assert!(
        std::fs::read(&aside[0]).expect("read the damaged index") == garbage,
        "the damaged file is kept as it was"
    );
    record(
        "Index overwritten with garbage while stopped",
        1,
        "set aside and rebuilt at start; no blob fetched again",
    );
}

/// A data directory with a CA made by `pullcache ca init`.
struct CaDir {
    _tmp: tempfile::TempDir,
    data: PathBuf,
}

impl CaDir {
    fn new() -> CaDir {
        let tmp = tempfile::Builder::new()
            .prefix("e2e-startup")
            .tempdir()
            .expect("tempdir");
        let data = tmp.path().join("data");
        ca_init(&data);
        CaDir { _tmp: tmp, data }
    }

    fn key(&self) -> PathBuf {
        self.data.join("ca").join("ca.key")
    }

    /// `ca.crt` and `ca.key` as found: absent, a directory, or the SHA-256
    /// of their bytes. (Other entries, such as a lock file, may come and go.)
    fn snapshot(&self) -> Vec<(&'static str, String)> {
        ["ca.crt", "ca.key"]
            .into_iter()
            .map(|name| {
                let path = self.data.join("ca").join(name);
                let state = match std::fs::symlink_metadata(&path) {
                    Err(_) => "absent".to_owned(),
                    Ok(meta) if meta.is_dir() => "a directory".to_owned(),
                    Ok(_) => sha256_digest(&std::fs::read(&path).expect("read CA file")),
                };
                (name, state)
            })
            .collect()
    }

    /// `pullcache serve` on this data directory, on a loopback port;
    /// expected to exit on its own.
    fn serve(&self) -> BoundedOutput {
        let mut cmd = pullcache_command();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data);
        run_bounded(cmd, FAIL_LIMIT)
    }

    /// Starts the server, expects it to refuse within seconds with a
    /// message containing every needle, and `ca/` to be left as it was.
    #[track_caller]
    fn assert_refused(&self, needles: &[&str]) {
        let before = self.snapshot();
        let started = Instant::now();
        let out = self.serve();
        let took = started.elapsed();
        assert!(
            out.status.is_some(),
            "pullcache served instead of refusing: {out:#?}"
        );
        assert_eq!(out.code(), 1, "{out:#?}");
        assert!(took < Duration::from_secs(10), "took {took:?} to refuse");
        for needle in needles {
            assert!(
                out.stderr.contains(needle),
                "the error should mention {needle:?}: {out:#?}"
            );
        }
        assert_eq!(self.snapshot(), before, "ca/ changed: {out:#?}");
        assert!(
            !self.data.join("index.redb").exists(),
            "the cache was opened although the CA is unusable"
        );
    }
}

fn ca_init(data: &Path) {
    let mut cmd = pullcache_command();
    cmd.args(["ca", "init", "--data-dir"]).arg(data);
    let out = run_bounded(cmd, FAIL_LIMIT);
    assert_eq!(out.code(), 0, "ca init: {out:#?}");
}

#[test]
fn a_key_from_another_ca_is_refused_and_nothing_is_overwritten() {
    let dir = CaDir::new();
    let other = CaDir::new();
    std::fs::copy(other.key(), dir.key()).expect("copy the other CA's key");
    dir.assert_refused(&["does not match the certificate", "ca.key", "ca.crt"]);
    record(
        "CA key replaced by another CA's key",
        1,
        "start refused with a clear message; nothing overwritten",
    );
}

#[test]
fn a_key_that_is_a_directory_is_refused() {
    let dir = CaDir::new();
    std::fs::remove_file(dir.key()).expect("remove ca.key");
    std::fs::create_dir(dir.key()).expect("ca.key as a directory");
    dir.assert_refused(&["ca.key", "Is a directory"]);
    record(
        "CA key unreadable (a directory)",
        1,
        "start refused with a clear message; nothing overwritten",
    );
}

#[test]
fn a_garbage_key_is_refused() {
    let dir = CaDir::new();
    let key = std::fs::read(dir.key()).expect("read ca.key");
    // Cut inside the base64: a PEM block that never ends.
    std::fs::write(dir.key(), &key[..key.len() / 3]).expect("truncate ca.key");
    dir.assert_refused(&["ca.key", "PEM"]);
    record(
        "CA key truncated to garbage",
        1,
        "start refused with a clear message; nothing overwritten",
    );
}

#[test]
fn a_certificate_without_its_key_is_refused() {
    let dir = CaDir::new();
    std::fs::remove_file(dir.key()).expect("remove ca.key");
    dir.assert_refused(&["ca.crt exists but", "ca.key does not"]);
    record(
        "CA certificate without its key",
        1,
        "start refused with a clear message; nothing created",
    );
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let first = TestProxy::start(&ProxyConfig::default().render());
    let mut cmd = pullcache_command();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(first.config_path());
    let started = Instant::now();
    let out = run_bounded(cmd, FAIL_LIMIT);
    assert!(out.status.is_some(), "the second server served: {out:#?}");
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{out:#?}");
    assert!(
        out.stderr.contains("in use by another process"),
        "the error should say the cache is in use: {out:#?}"
    );
    let index = first.data_dir().join("index.redb");
    assert!(index.is_file(), "the first server's index is untouched");
    assert!(
        !std::fs::read_dir(first.data_dir())
            .expect("read data dir")
            .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().contains(".damaged-"))),
        "an index in use must never be set aside as damaged"
    );
}
