//! Pulls through the cache from a real registry: Debian's `docker-registry`
//! (distribution 2.8) as the upstream, skopeo as the client, synthetic OCI
//! images pushed straight to the registry. Each test has its own registry,
//! image (unique digests) and proxy, and asserts on the registry's own access
//! log: what reached the upstream, not what pullcache says about itself.

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use crate::support::image::{Blob, OciImage, OCI_MANIFEST};
use crate::support::registry::{blob_url, manifest_url, proxied_curl, proxy_for, RealRegistry};
use crate::support::skopeo::{
    assert_pulled, pull_direct, pull_ok, pull_via_proxy, push, read_pulled, PulledDir,
};
use crate::support::{TestCa, TestProxy, REGISTRY_HOST};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn start_proxy(ca: &TestCa, registry: &RealRegistry, tag_ttl: &str) -> TestProxy {
    proxy_for(ca, registry, tag_ttl)
}

fn expected_blobs(blobs: &[Blob]) -> BTreeMap<String, u64> {
    blobs.iter().map(|b| (b.digest.clone(), b.size)).collect()
}

/// The pulled dir holds exactly the image's blobs (already hash-checked by
/// `read_pulled`) and its top manifest or index, byte for byte.
#[track_caller]
fn assert_content(pulled: &PulledDir, image: &OciImage, what: &str) {
    assert_eq!(
        pulled.blobs,
        expected_blobs(&image.blobs()),
        "{what}: pulled blobs differ from the image's"
    );
    assert_eq!(
        pulled.top_manifest, image.top.digest,
        "{what}: manifest.json is not the pushed manifest/index"
    );
    for manifest in image.manifests() {
        assert!(
            pulled.manifests.contains(&manifest.digest),
            "{what}: manifest {} missing from {pulled:#?}",
            manifest.digest
        );
    }
}

/// Asserts that every blob of `image` was fetched from the upstream with
/// exactly one GET since the registry's counts were last reset.
#[track_caller]
fn assert_each_blob_fetched_once(registry: &RealRegistry, image: &OciImage, repo: &str) {
    registry.settle();
    for blob in image.blobs() {
        let path = format!("/v2/{repo}/blobs/{}", blob.digest);
        assert_eq!(
            registry.requests("GET", &path),
            1,
            "upstream GETs of {path} (size {}); the registry's access log:\n{}",
            blob.size,
            registry.access_summary()
        );
    }
}

/// The harness on its own, without pullcache: a pushed image is in the
/// registry under the digests we computed, a direct pull gets it back, and
/// the access log records the requests.
#[test]
fn harness_registry_serves_what_skopeo_pushed() {
    let ca = TestCa::new();
    let mut registry = RealRegistry::start(&ca);
    let image = OciImage::multi_arch(1, "v1", &[16 * KIB, 40 * KIB]);
    push(&image, &registry, &ca, "harness/multi");

    let head = registry.curl_direct(
        &[
            "-I",
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json",
        ],
        "/v2/harness/multi/manifests/v1",
    );
    assert_eq!(head.code(), 0, "{head:#?}");
    assert!(
        head.stdout
            .to_ascii_lowercase()
            .contains(&format!("docker-content-digest: {}", image.top.digest)),
        "the registry stored a different index than we built: {head:#?}"
    );

    registry.reset_counts();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("pulled");
    let out = pull_direct(&registry, &ca, "harness/multi:v1", &dest, true);
    assert_pulled(&out, "harness/multi:v1 (direct)");
    assert_content(&read_pulled(&dest), &image, "direct pull");
    assert_each_blob_fetched_once(&registry, &image, "harness/multi");
    assert!(registry.requests("GET", "/v2/harness/multi/manifests/v1") >= 1);

    registry.stop();
    registry.start_again();
    let again = registry.curl_direct(&["-o", "/dev/null", "-w", "%{http_code}"], "/v2/");
    assert_eq!(again.stdout, "200", "{again:#?}");
}

#[test]
fn first_pull_fetches_each_blob_once_and_second_pull_is_all_cache() {
    let ca = TestCa::new();
    let mut registry = RealRegistry::start(&ca);
    let repo = "test/app101";
    let image = OciImage::single(101, "v1", &[64 * KIB, 512 * KIB, 2 * MIB]);
    push(&image, &registry, &ca, repo);
    registry.reset_counts();
    let proxy = start_proxy(&ca, &registry, "5m");
    let reference = format!("{repo}:v1");

    let (_first_dir, first) = pull_ok(&proxy, &reference, false);
    assert_content(&first, &image, "first pull");
    assert_each_blob_fetched_once(&registry, &image, repo);

    registry.reset_counts();
    let (_second_dir, second) = pull_ok(&proxy, &reference, false);
    assert_content(&second, &image, "second pull");
    registry.settle();
    assert_eq!(
        (
            registry.requests("GET", "/blobs/"),
            registry.requests("GET", "/manifests/")
        ),
        (0, 0),
        "the second pull within tag_ttl must not GET blobs or manifests upstream; access log:\n{}",
        registry.access_summary()
    );
}

#[test]
fn cached_image_is_served_with_the_registry_down() {
    let ca = TestCa::new();
    let mut registry = RealRegistry::start(&ca);
    let repo = "test/app202";
    let image = OciImage::single(202, "v1", &[64 * KIB, 256 * KIB]);
    push(&image, &registry, &ca, repo);
    // A short TTL, so the offline pull by tag has to revalidate, fail to
    // reach the upstream, and fall back to the cached manifest.
    let proxy = start_proxy(&ca, &registry, "1s");
    let by_tag = format!("{repo}:v1");
    let by_digest = format!("{repo}@{}", image.top.digest);

    let (_d0, online) = pull_ok(&proxy, &by_tag, false);
    assert_content(&online, &image, "online pull");

    registry.stop();
    let ping = proxied_curl(&proxy, &[], &format!("https://{REGISTRY_HOST}/v2/"));
    assert_eq!(
        (ping.curl.code(), ping.http_code, ping.body.as_slice()),
        (0, 200, b"{}".as_slice()),
        "with the upstream unreachable pullcache answers GET /v2/ itself: {}",
        ping.describe()
    );
    thread::sleep(Duration::from_millis(1500));
    let (_d1, offline_tag) = pull_ok(&proxy, &by_tag, false);
    assert_content(&offline_tag, &image, "offline pull by tag");
    let (_d2, offline_digest) = pull_ok(&proxy, &by_digest, false);
    assert_content(&offline_digest, &image, "offline pull by digest");

    // Back online with the tag expired: one HEAD revalidates it, and the
    // unchanged digest means no manifest or blob is fetched again.
    registry.start_again();
    registry.reset_counts();
    thread::sleep(Duration::from_millis(1200));
    let (_d3, revalidated) = pull_ok(&proxy, &by_tag, false);
    assert_content(&revalidated, &image, "pull after the registry came back");
    registry.settle();
    let log = registry.access_summary();
    assert!(
        registry.requests("HEAD", &format!("/v2/{repo}/manifests/v1")) >= 1,
        "an expired tag must be revalidated upstream with HEAD; access log:\n{log}"
    );
    assert_eq!(
        (
            registry.requests("GET", "/blobs/"),
            registry.requests("GET", "/manifests/")
        ),
        (0, 0),
        "revalidation of an unchanged tag must not GET anything; access log:\n{log}"
    );
}

#[test]
fn concurrent_pulls_of_a_new_image_fetch_each_blob_once() {
    const PULLS: usize = 20;
    let ca = TestCa::new();
    let mut registry = RealRegistry::start(&ca);
    let repo = "test/app303";
    let image = OciImage::single(303, "v1", &[MIB, 2 * MIB, 256 * KIB]);
    push(&image, &registry, &ca, repo);
    registry.reset_counts();
    let proxy = start_proxy(&ca, &registry, "5m");
    let reference = format!("{repo}:v1");

    let barrier = Barrier::new(PULLS);
    let results: Vec<Result<PulledDir, String>> = thread::scope(|s| {
        let handles: Vec<_> = (0..PULLS)
            .map(|_| {
                s.spawn(|| {
                    let tmp = tempfile::tempdir().expect("tempdir");
                    let dest = tmp.path().join("image");
                    barrier.wait();
                    let out = pull_via_proxy(&proxy, &reference, &dest, false);
                    match out.status.and_then(|st| st.code()) {
                        Some(0) => Ok(read_pulled(&dest)),
                        _ => Err(format!("{out:#?}")),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("pull thread"))
            .collect()
    });

    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {PULLS} concurrent pulls failed; first failure:\n{}",
        failures.len(),
        failures[0]
    );
    for pulled in results.iter().flatten() {
        assert_content(pulled, &image, "concurrent pull");
    }
    assert_each_blob_fetched_once(&registry, &image, repo);
}

#[test]
fn multi_arch_index_is_pulled_whole_and_served_offline() {
    let ca = TestCa::new();
    let mut registry = RealRegistry::start(&ca);
    let repo = "test/multi404";
    let image = OciImage::multi_arch(404, "v1", &[128 * KIB, 256 * KIB]);
    assert_eq!(
        image.blobs().len(),
        6,
        "two platforms, config + 2 layers each"
    );
    push(&image, &registry, &ca, repo);
    registry.reset_counts();
    let proxy = start_proxy(&ca, &registry, "5m");
    let reference = format!("{repo}:v1");

    let (_d1, online) = pull_ok(&proxy, &reference, true);
    assert_content(&online, &image, "--all pull");
    assert_each_blob_fetched_once(&registry, &image, repo);

    registry.stop();
    let (_d2, offline) = pull_ok(&proxy, &reference, true);
    assert_content(&offline, &image, "--all pull with the registry down");
}

#[test]
fn cached_blob_answers_head_and_ranges_without_the_upstream() {
    let ca = TestCa::new();
    let mut registry = RealRegistry::start(&ca);
    let repo = "test/app505";
    let image = OciImage::single(505, "v1", &[300 * KIB]);
    push(&image, &registry, &ca, repo);
    registry.reset_counts();
    let proxy = start_proxy(&ca, &registry, "5m");
    let layer = image.platforms[0].layers[0].clone();
    let bytes = image.bytes(&layer.digest).to_vec();
    let url = blob_url(repo, &layer.digest);

    let miss = proxied_curl(&proxy, &[], &url);
    assert_eq!(
        (miss.curl.code(), miss.http_code),
        (0, 200),
        "{}",
        miss.describe()
    );
    assert!(
        miss.body == bytes,
        "first GET returned other bytes: {}",
        miss.describe()
    );

    let head = proxied_curl(&proxy, &["-I"], &url);
    assert_eq!(
        (head.curl.code(), head.http_code),
        (0, 200),
        "{}",
        head.describe()
    );
    assert_eq!(
        head.header("content-length"),
        Some(layer.size.to_string()),
        "{}",
        head.describe()
    );
    assert_eq!(
        head.header("docker-content-digest").as_deref(),
        Some(layer.digest.as_str()),
        "{}",
        head.describe()
    );
    assert_eq!(
        head.header("accept-ranges").as_deref(),
        Some("bytes"),
        "{}",
        head.describe()
    );

    let range = proxied_curl(&proxy, &["-r", "10-19"], &url);
    assert_eq!(
        (range.curl.code(), range.http_code),
        (0, 206),
        "{}",
        range.describe()
    );
    assert_eq!(
        range.header("content-range"),
        Some(format!("bytes 10-19/{}", layer.size)),
        "{}",
        range.describe()
    );
    assert!(
        range.body == bytes[10..20],
        "range body: {}",
        range.describe()
    );

    let past_end = format!("Range: bytes={}-", layer.size + 100);
    let unsatisfiable = proxied_curl(&proxy, &["-H", &past_end], &url);
    assert_eq!(unsatisfiable.http_code, 416, "{}", unsatisfiable.describe());

    // The manifest, too, comes back as pushed.
    let manifest = proxied_curl(
        &proxy,
        &["-H", &format!("Accept: {OCI_MANIFEST}")],
        &manifest_url(repo, "v1"),
    );
    assert_eq!(manifest.http_code, 200, "{}", manifest.describe());
    assert!(
        manifest.body == image.bytes(&image.top.digest),
        "{}",
        manifest.describe()
    );

    registry.settle();
    assert_eq!(
        registry.requests("GET", &format!("/blobs/{}", layer.digest)),
        1,
        "only the first GET may reach the upstream; access log:\n{}",
        registry.access_summary()
    );
}
