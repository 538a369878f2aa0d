//! Upstreams that stall, fail or vanish: what is cached keeps being served
//! (tags stale, digests from disk), what is not fails with the upstream's
//! own status, and a stalled fetch releases every waiting client with an
//! error and commits nothing, so the next request fetches again.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::fake_registry::{BlobFault, FakeRegistry};
use crate::support::image::{random_bytes, OCI_MANIFEST};
use crate::support::registry::{
    blob_url, cached_blob_path, manifest_url, proxied_curl, wait_dir_empty, BinaryFetch,
};
use crate::support::reliability::record;
use crate::support::{TestCa, TestProxy};

const KIB: usize = 1024;

fn start(ca: &TestCa, fake: &FakeRegistry, tag_ttl: &str, stall: &str) -> TestProxy {
    let extra = format!(
        "[cache]\ntag_ttl = \"{tag_ttl}\"\nvisibility_ttl = \"1h\"\nupstream_stall = \"{stall}\"\n"
    );
    TestProxy::start(&fake.proxy_config(ca, &extra).render())
}

fn clean_200(got: &BinaryFetch) -> bool {
    got.curl.code() == 0 && got.http_code == 200
}

/// An image manifest with no layers, registered under `repo:v1`.
fn add_manifest(fake: &FakeRegistry, repo: &str) -> (String, String) {
    let config = fake.add_blob(repo, br#"{"architecture":"amd64","os":"linux"}"#.to_vec());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":37}},"layers":[]}}"#
    );
    let digest = fake.add_manifest(repo, "v1", OCI_MANIFEST, manifest.clone().into_bytes());
    (manifest, digest)
}

#[test]
fn a_stalled_upstream_releases_every_client_and_commits_nothing() {
    let ca = TestCa::new();
    let fake = FakeRegistry::start(&ca);
    let repo = "test/stalled";
    let bytes = random_bytes(31, 512 * KIB);
    let digest = fake.add_blob(repo, bytes.clone());
    // Each 64 KiB chunk comes 3 s after the last; the proxy waits 1 s.
    fake.set_fault(repo, &digest, BlobFault::Trickle(3000));
    let proxy = start(&ca, &fake, "5m", "1s");
    let url = blob_url(repo, &digest);

    let started = Instant::now();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (proxy_url, ca_path, url) = (proxy.url(), proxy.ca_cert_path(), url.clone());
            thread::spawn(move || {
                let ca_path = ca_path.display().to_string();
                crate::support::registry::curl_bytes(
                    &["-x", &proxy_url, "--cacert", &ca_path],
                    &url,
                )
            })
        })
        .collect();
    for client in clients {
        let got = client.join().expect("client thread");
        assert!(
            !clean_200(&got),
            "a stalled fetch looked complete: {}",
            got.describe()
        );
        assert!(got.body.len() < bytes.len(), "{}", got.describe());
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "clients were held {:?} by a stalled upstream",
        started.elapsed()
    );
    let path = format!("/v2/{repo}/blobs/{digest}");
    assert_eq!(
        fake.count("GET", &path),
        1,
        "one shared fetch: {}",
        fake.summary()
    );
    if let Err(left) = wait_dir_empty(&proxy.data_dir().join("ingest"), Duration::from_secs(5)) {
        panic!("ingest/ still holds {left:?}");
    }
    assert!(!cached_blob_path(&proxy, &digest).exists());

    // The next request fetches again, and this time it works.
    fake.set_fault(repo, &digest, BlobFault::None);
    let again = proxied_curl(&proxy, &[], &url);
    assert!(
        clean_200(&again) && again.body == bytes,
        "{}",
        again.describe()
    );
    assert_eq!(fake.count("GET", &path), 2, "{}", fake.summary());
    record(
        "Upstream stalls mid-blob (3 clients sharing the fetch)",
        3,
        "every client released with an error within the stall timeout; nothing committed; next request refetched",
    );
}

#[test]
fn upstream_errors_serve_tags_stale_and_digests_from_cache() {
    let ca = TestCa::new();
    let fake = FakeRegistry::start(&ca);
    let repo = "test/failing";
    let (manifest, manifest_digest) = add_manifest(&fake, repo);
    let blob = random_bytes(32, 100 * KIB);
    let blob_digest = fake.add_blob(repo, blob.clone());
    let proxy = start(&ca, &fake, "1s", "5s");
    let accept = format!("Accept: {OCI_MANIFEST}");
    let tag_url = manifest_url(repo, "v1");
    let digest_url = manifest_url(repo, &manifest_digest);
    let blob_url = blob_url(repo, &blob_digest);

    // Warm the cache.
    for url in [&tag_url, &digest_url, &blob_url] {
        let got = proxied_curl(&proxy, &["-H", &accept], url);
        assert!(clean_200(&got), "{}", got.describe());
    }

    for status in [500u16, 502, 503, 504, 429] {
        thread::sleep(Duration::from_millis(1200)); // past the tag TTL
        fake.fail_tags().store(status, Ordering::SeqCst);
        let tag = proxied_curl(&proxy, &["-H", &accept], &tag_url);
        assert!(
            clean_200(&tag),
            "tag with upstream {status}: {}",
            tag.describe()
        );
        assert!(
            tag.body == manifest.as_bytes(),
            "tag with upstream {status}"
        );
        fake.fail_tags().store(0, Ordering::SeqCst);
    }
    record(
        "Upstream answers 429, 500, 502, 503 or 504 while a tag is revalidated",
        5,
        "cached manifest served stale",
    );

    // Not cached, and upstream fails: the client hears the upstream's status.
    let missing = random_bytes(33, 10 * KIB);
    let missing_digest = fake.add_blob(repo, missing);
    for status in [500u16, 503] {
        fake.set_fault(repo, &missing_digest, BlobFault::Status(status));
        let got = proxied_curl(
            &proxy,
            &[],
            &crate::support::registry::blob_url(repo, &missing_digest),
        );
        assert_eq!(got.http_code, status, "{}", got.describe());
        assert!(!cached_blob_path(&proxy, &missing_digest).exists());
    }
    record(
        "Upstream answers 500 or 503 for a blob that is not cached",
        2,
        "the upstream's status passed to the client; nothing committed",
    );

    // The upstream goes away entirely.
    let missing_url = crate::support::registry::blob_url(repo, &missing_digest);
    drop(fake);
    thread::sleep(Duration::from_millis(1200));
    let tag = proxied_curl(&proxy, &["-H", &accept], &tag_url);
    assert!(
        clean_200(&tag) && tag.body == manifest.as_bytes(),
        "{}",
        tag.describe()
    );
    let by_digest = proxied_curl(&proxy, &["-H", &accept], &digest_url);
    assert!(clean_200(&by_digest), "{}", by_digest.describe());
    let cached_blob = proxied_curl(&proxy, &[], &blob_url);
    assert!(
        clean_200(&cached_blob) && cached_blob.body == blob,
        "{}",
        cached_blob.describe()
    );
    let gone = proxied_curl(&proxy, &[], &missing_url);
    assert_eq!(gone.http_code, 502, "{}", gone.describe());
    record(
        "Upstream unreachable",
        4,
        "tag served stale, manifest and blob by digest served from cache, uncached blob refused 502",
    );
}
