//! The cache against an upstream that misbehaves: bytes that do not match
//! their digest, a connection reset mid-blob, `429` while a tag is being
//! revalidated, a blob redirected to a CDN host, and a client that gives up
//! on a download others share. Driven with curl through
//! the proxy, against the in-process [`FakeRegistry`].

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::fake_registry::{BlobFault, FakeRegistry, CDN_HOST};
use crate::support::image::{random_bytes, OCI_MANIFEST};
use crate::support::registry::{
    blob_url, cached_blob_path, curl_bytes, manifest_url, proxied_curl, wait_dir_empty, BinaryFetch,
};
use crate::support::reliability::record;
use crate::support::{TestCa, TestProxy};

const KIB: usize = 1024;

fn start(ca: &TestCa, fake: &FakeRegistry, tag_ttl: &str) -> TestProxy {
    let extra = format!(
        "[cache]\ntag_ttl = \"{tag_ttl}\"\nvisibility_ttl = \"1h\"\nupstream_stall = \"60s\"\n"
    );
    TestProxy::start(&fake.proxy_config(ca, &extra).render())
}

/// A transfer that delivered the whole body cleanly: exit 0 and a 200.
fn clean_200(got: &BinaryFetch) -> bool {
    got.curl.code() == 0 && got.http_code == 200
}

/// Nothing was committed for `digest` and no partial file is left behind.
#[track_caller]
fn assert_nothing_committed(proxy: &TestProxy, digest: &str) {
    let ingest = proxy.data_dir().join("ingest");
    if let Err(left) = wait_dir_empty(&ingest, Duration::from_secs(5)) {
        panic!("ingest/ still holds {left:?} after a failed fetch");
    }
    let blob = cached_blob_path(proxy, digest);
    assert!(
        !blob.exists(),
        "{} was committed although its fetch failed",
        blob.display()
    );
}

#[track_caller]
fn assert_committed(proxy: &TestProxy, digest: &str, bytes: &[u8]) {
    let blob = cached_blob_path(proxy, digest);
    // The commit may trail the last byte sent to the client by a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !blob.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let stored = std::fs::read(&blob)
        .unwrap_or_else(|e| panic!("{} was not committed: {e}", blob.display()));
    assert!(stored == bytes, "{} holds other bytes", blob.display());
}

/// The fake on its own, without pullcache: each fault shows as intended
/// to a direct client.
#[test]
fn harness_fake_registry_misbehaves_as_told() {
    let ca = TestCa::new();
    let fake = FakeRegistry::start(&ca);
    let port = fake.addr().port();
    let test_ca = ca.cert_path().display().to_string();
    // curl talks to the fake's real port while keeping the names it checks.
    let connect_to = format!("::127.0.0.1:{port}");
    let direct = |args: &[&str], url: &str| {
        let mut all = vec![
            "--cacert",
            test_ca.as_str(),
            "--connect-to",
            connect_to.as_str(),
        ];
        all.extend_from_slice(args);
        curl_bytes(&all, url)
    };
    let repo = "harness/fake";
    let bytes = random_bytes(10, 300 * KIB);
    let digest = fake.add_blob(repo, bytes.clone());
    let url = blob_url(repo, &digest);

    let ok = direct(&[], &url);
    assert!(clean_200(&ok) && ok.body == bytes, "{}", ok.describe());
    assert_eq!(ok.header("docker-content-digest"), Some(digest.clone()));

    fake.set_fault(repo, &digest, BlobFault::WrongBytes);
    let wrong = direct(&[], &url);
    assert!(clean_200(&wrong), "{}", wrong.describe());
    assert_eq!(wrong.body.len(), bytes.len());
    assert!(wrong.body != bytes);

    for http in ["--http1.1", "--http2"] {
        fake.set_fault(repo, &digest, BlobFault::ResetAfter(100 * KIB));
        let cut = direct(&[http], &url);
        assert_ne!(cut.curl.code(), 0, "{http}: {}", cut.describe());
        assert!(
            cut.body.len() >= 64 * KIB && cut.body.len() <= 100 * KIB,
            "{http}: {}",
            cut.describe()
        );
    }

    fake.set_fault(repo, &digest, BlobFault::RedirectToCdn);
    let redirect = direct(&[], &url);
    assert_eq!(redirect.http_code, 307, "{}", redirect.describe());
    let followed = direct(&["-L"], &url);
    assert!(
        clean_200(&followed) && followed.body == bytes,
        "{}",
        followed.describe()
    );
    assert_eq!(followed.num_redirects, 1);
    assert_eq!(fake.count("GET", &FakeRegistry::cdn_path(&digest)), 1);

    let manifest_digest = fake.add_manifest(repo, "v1", OCI_MANIFEST, b"{}".to_vec());
    assert_eq!(direct(&["-I"], &manifest_url(repo, "v1")).http_code, 200);
    fake.throttle_tags().store(true, Ordering::SeqCst);
    assert_eq!(direct(&["-I"], &manifest_url(repo, "v1")).http_code, 429);
    let by_digest = direct(&[], &manifest_url(repo, &manifest_digest));
    assert_eq!(by_digest.http_code, 200, "by digest is never throttled");
    assert_eq!(fake.count("HEAD", "/manifests/v1"), 2, "{}", fake.summary());
}

#[test]
fn wrong_bytes_are_never_committed_and_are_fetched_again() {
    let ca = TestCa::new();
    let fake = FakeRegistry::start(&ca);
    let repo = "test/wrong";
    let bytes = random_bytes(11, 512 * KIB);
    let digest = fake.add_blob(repo, bytes.clone());
    fake.set_fault(repo, &digest, BlobFault::WrongBytes);
    let proxy = start(&ca, &fake, "5m");
    let url = blob_url(repo, &digest);
    let path = format!("/v2/{repo}/blobs/{digest}");

    let bad = proxied_curl(&proxy, &[], &url);
    assert!(
        !clean_200(&bad),
        "a blob whose bytes do not match its digest must not arrive as a clean 200: {}",
        bad.describe()
    );
    assert_nothing_committed(&proxy, &digest);
    assert_eq!(fake.count("GET", &path), 1, "{}", fake.summary());

    // The next request goes upstream again; this time the bytes are right.
    fake.set_fault(repo, &digest, BlobFault::None);
    let good = proxied_curl(&proxy, &[], &url);
    assert!(clean_200(&good), "{}", good.describe());
    assert!(good.body == bytes, "second fetch body: {}", good.describe());
    assert_eq!(
        fake.count("GET", &path),
        2,
        "the failed digest must be fetched again:\n{}",
        fake.summary()
    );
    assert_committed(&proxy, &digest, &bytes);

    // And now it is a hit.
    let hit = proxied_curl(&proxy, &[], &url);
    assert!(clean_200(&hit) && hit.body == bytes, "{}", hit.describe());
    assert_eq!(fake.count("GET", &path), 2, "{}", fake.summary());
    record(
        "Upstream sends bytes that do not match the digest",
        2,
        "client transfer aborted; nothing committed; the next request fetched again",
    );
}

#[test]
fn reset_mid_blob_commits_nothing() {
    let ca = TestCa::new();
    let fake = FakeRegistry::start(&ca);
    let repo = "test/reset";
    let bytes = random_bytes(12, 512 * KIB);
    let digest = fake.add_blob(repo, bytes.clone());
    fake.set_fault(repo, &digest, BlobFault::ResetAfter(100 * KIB));
    let proxy = start(&ca, &fake, "5m");
    let url = blob_url(repo, &digest);
    let path = format!("/v2/{repo}/blobs/{digest}");

    let cut = proxied_curl(&proxy, &[], &url);
    assert!(
        !clean_200(&cut),
        "a blob cut off upstream must not arrive as a clean 200: {}",
        cut.describe()
    );
    assert!(
        cut.body.len() < bytes.len(),
        "the client got {} of {} bytes from an upstream that sent only {}",
        cut.body.len(),
        bytes.len(),
        100 * KIB
    );
    assert_nothing_committed(&proxy, &digest);
    assert_eq!(fake.count("GET", &path), 1, "{}", fake.summary());

    fake.set_fault(repo, &digest, BlobFault::None);
    let good = proxied_curl(&proxy, &[], &url);
    assert!(
        clean_200(&good) && good.body == bytes,
        "{}",
        good.describe()
    );
    assert_eq!(fake.count("GET", &path), 2, "{}", fake.summary());
    assert_committed(&proxy, &digest, &bytes);
    record(
        "Upstream resets the connection mid-blob",
        1,
        "client transfer aborted; nothing committed",
    );
}

#[test]
fn tag_revalidation_answered_429_serves_the_cached_manifest() {
    let ca = TestCa::new();
    let fake = FakeRegistry::start(&ca);
    let repo = "test/throttled";
    let config = fake.add_blob(repo, br#"{"architecture":"amd64","os":"linux"}"#.to_vec());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":37}},"layers":[]}}"#
    );
    let digest = fake.add_manifest(repo, "v1", OCI_MANIFEST, manifest.clone().into_bytes());
    let proxy = start(&ca, &fake, "1s");
    let url = manifest_url(repo, "v1");
    let accept = format!("Accept: {OCI_MANIFEST}");
    let tag_path = format!("/v2/{repo}/manifests/v1");

    let first = proxied_curl(&proxy, &["-H", &accept], &url);
    assert!(clean_200(&first), "{}", first.describe());
    assert!(first.body == manifest.as_bytes(), "{}", first.describe());

    thread::sleep(Duration::from_millis(1500));
    fake.throttle_tags().store(true, Ordering::SeqCst);
    let heads_before = fake.count("HEAD", &tag_path);

    let stale = proxied_curl(&proxy, &["-H", &accept], &url);
    assert!(
        clean_200(&stale),
        "with the upstream answering 429 the cached manifest must be served: {}\nupstream saw:\n{}",
        stale.describe(),
        fake.summary()
    );
    assert!(
        stale.body == manifest.as_bytes(),
        "stale body differs: {}",
        stale.describe()
    );
    assert_eq!(
        stale.header("docker-content-digest").as_deref(),
        Some(digest.as_str()),
        "{}",
        stale.describe()
    );
    assert!(
        fake.count("HEAD", &tag_path) > heads_before,
        "an expired tag must be revalidated with a HEAD upstream; upstream saw:\n{}",
        fake.summary()
    );
    record(
        "Upstream answers 429 while a tag is revalidated (fake registry)",
        1,
        "cached manifest served stale",
    );
}

#[test]
fn redirected_blob_is_followed_by_the_proxy_and_then_cached() {
    let ca = TestCa::new();
    let fake = FakeRegistry::start(&ca);
    let repo = "test/redirected";
    let bytes = random_bytes(13, 200 * KIB);
    let digest = fake.add_blob(repo, bytes.clone());
    fake.set_fault(repo, &digest, BlobFault::RedirectToCdn);
    let proxy = start(&ca, &fake, "5m");
    let url = blob_url(repo, &digest);
    let cdn_path = FakeRegistry::cdn_path(&digest);

    let got = proxied_curl(&proxy, &[], &url);
    assert_eq!(
        (got.curl.code(), got.http_code, got.num_redirects),
        (0, 200, 0),
        "the client must see only the final 200: {}",
        got.describe()
    );
    assert!(
        got.status_lines().iter().all(|l| !l.contains(" 3")),
        "a 3xx reached the client: {:?}",
        got.status_lines()
    );
    assert!(got.body == bytes, "{}", got.describe());
    let cdn_gets: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with(&cdn_path))
        .collect();
    assert_eq!(cdn_gets.len(), 1, "upstream saw:\n{}", fake.summary());
    assert_eq!(cdn_gets[0].host, CDN_HOST, "{cdn_gets:?}");
    assert!(
        !cdn_gets[0].authorization,
        "Authorization must be dropped on a cross-host redirect"
    );
    assert_committed(&proxy, &digest, &bytes);

    let before = fake.requests().len();
    let hit = proxied_curl(&proxy, &[], &url);
    assert!(clean_200(&hit) && hit.body == bytes, "{}", hit.describe());
    assert_eq!(
        fake.requests().len(),
        before,
        "a cached blob must not touch the upstream; it saw:\n{}",
        fake.summary()
    );
    record(
        "Blob redirected (307) to a CDN host that refuses Authorization",
        1,
        "followed by pullcache without Authorization; client saw 200; cached",
    );
}

/// The client that started a download goes away part-way: the single
/// upstream fetch goes on, the client that joined it gets every byte, and
/// the blob is committed.
#[test]
fn a_leader_that_goes_away_does_not_stop_the_fetch() {
    let ca = TestCa::new();
    let fake = FakeRegistry::start(&ca);
    let repo = "test/leader";
    // 16 chunks of 64 KiB, one every 60 ms: about a second upstream.
    let bytes = random_bytes(21, 1024 * KIB);
    let digest = fake.add_blob(repo, bytes.clone());
    fake.set_fault(repo, &digest, BlobFault::Trickle(60));
    let proxy = start(&ca, &fake, "5m");
    let url = blob_url(repo, &digest);

    let leader = {
        let (proxy_url, ca_path, url) = (proxy.url(), proxy.ca_cert_path(), url.clone());
        thread::spawn(move || {
            let ca_path = ca_path.display().to_string();
            let args = [
                "-x",
                proxy_url.as_str(),
                "--cacert",
                ca_path.as_str(),
                "--max-time",
                "0.4",
            ];
            curl_bytes(&args, &url)
        })
    };
    thread::sleep(Duration::from_millis(150));
    let follower = proxied_curl(&proxy, &[], &url);
    let leader = leader.join().expect("leader thread");

    assert_ne!(
        leader.curl.code(),
        0,
        "the leader gave up: {}",
        leader.describe()
    );
    assert!(clean_200(&follower), "{}", follower.describe());
    assert!(follower.body == bytes, "the follower got other bytes");
    assert_committed(&proxy, &digest, &bytes);
    let path = format!("/v2/{repo}/blobs/{digest}");
    assert_eq!(fake.count("GET", &path), 1, "{}", fake.summary());

    let hit = proxied_curl(&proxy, &[], &url);
    assert!(clean_200(&hit) && hit.body == bytes, "{}", hit.describe());
    assert_eq!(fake.count("GET", &path), 1, "a hit costs upstream nothing");
    record(
        "The client that started a shared download disconnects",
        1,
        "fetch completed for the other client and was committed; one upstream GET",
    );
}
