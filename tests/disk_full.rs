//! A disk that fills up in the middle of a download: the client still gets
//! the whole blob (the proxy fetches the rest from upstream itself, with a
//! range request), nothing partial stays on disk, and nothing is cached.
//! The data directory lives on a small tmpfs mounted for the test, which
//! needs root (as the CI machine is).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::image::{sha256_digest, OciImage};
use crate::support::proxy::Launch;
use crate::support::registry::{blob_url, curl_bytes, wait_dir_empty, RealRegistry};
use crate::support::reliability::record;
use crate::support::skopeo::push;
use crate::support::{ProxyConfig, TestCa, TestProxy, REGISTRY_HOST};

const MIB: usize = 1024 * 1024;

/// A tmpfs mounted for the test's lifetime.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size_mib: usize) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed; this test needs root (tests/run.sh and CI run as root)"
        );
        SmallDisk { path, _dir: dir }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_mid_fill_still_completes_the_download_uncached() {
    let ca = TestCa::new();
    let registry = RealRegistry::start(&ca);
    // One 12 MiB layer on a 6 MiB disk: the fill runs out of space part-way.
    let image = OciImage::single(0xD15C, "v1", &[12 * MIB]);
    let repo = "test/diskfull";
    push(&image, &registry, &ca, repo);
    let layer = image
        .blobs()
        .into_iter()
        .max_by_key(|b| b.size)
        .expect("a layer");

    let disk = SmallDisk::mount(6);
    let data_dir = disk.path().join("data");
    let config = ProxyConfig {
        intercept: vec![REGISTRY_HOST.to_owned()],
        ca_files: vec![ca.cert_path().to_path_buf()],
        resolve: vec![(REGISTRY_HOST.to_owned(), registry.addr())],
        ..ProxyConfig::default()
    };
    let mut launch = Launch::new(&config.render());
    launch.args = vec![
        "serve".into(),
        "--config".into(),
        "{config}".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    let proxy = match TestProxy::launch(launch) {
        Ok(proxy) => proxy,
        Err(failure) => panic!("pullcache did not start: {}", failure.logs.join("\n")),
    };

    let ca_path = data_dir.join("ca/ca.crt").display().to_string();
    let proxy_url = proxy.url();
    let got = curl_bytes(
        &["-x", &proxy_url, "--cacert", &ca_path],
        &blob_url(repo, &layer.digest),
    );
    assert_eq!(got.curl.code(), 0, "{}", got.describe());
    assert_eq!(got.http_code, 200, "{}", got.describe());
    assert_eq!(got.body.len(), layer.size as usize, "{}", got.describe());
    assert_eq!(
        sha256_digest(&got.body),
        layer.digest,
        "the client got other bytes"
    );

    assert!(
        proxy.wait_for_log("continuing it from upstream", Duration::from_secs(5)),
        "the fill did not run out of space as the test intends: {:#?}",
        proxy.logs()
    );
    if let Err(left) = wait_dir_empty(&data_dir.join("ingest"), Duration::from_secs(5)) {
        panic!("partial files left in ingest/: {left:?}");
    }
    let hex = layer.digest.trim_start_matches("sha256:");
    let cached = data_dir.join("blobs/sha256").join(&hex[..2]).join(hex);
    assert!(!cached.exists(), "a blob that did not fit was committed");
    registry.settle();
    assert_eq!(
        registry.requests("GET", &format!("/v2/{repo}/blobs/{}", layer.digest)),
        2,
        "one fill and one range request for the rest: {}",
        registry.access_summary()
    );
    drop(proxy);
    record(
        "Disk full mid-download (6 MiB tmpfs, 12 MiB blob)",
        1,
        "client got every byte (rest fetched by range); nothing partial left; nothing committed",
    );
}
