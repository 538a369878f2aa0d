//! Intercepted hosts: pullcache terminates TLS with a leaf from its own CA and
//! forwards each request to the real upstream over verified TLS.

use std::time::{Duration, Instant};

use crate::support::client::raw_exchange;
use crate::support::tls::TEST_CA_CN;
use crate::support::{fetch, Fixture, TestProxy, REGISTRY_HOST};

const URL: &str = "https://registry-1.docker.io/v2/";

#[test]
fn request_reaches_upstream_through_pullcache_leaf() {
    let fx = Fixture::new();
    let proxy = TestProxy::start(&fx.config().render());
    let ca = proxy.ca_cert_path().display().to_string();

    let got = fetch(&["-x", &proxy.url(), "--cacert", &ca, URL]);

    assert_eq!(got.curl.code(), 0, "curl failed: {got:#?}");
    assert_eq!(got.connect_code, 200, "CONNECT answer: {got:#?}");
    assert_eq!(got.http_code, 200, "{got:#?}");
    assert_eq!(got.body, "upstream:registry GET /v2/");
    assert_eq!(
        got.header("x-seen-host").as_deref(),
        Some(REGISTRY_HOST),
        "the upstream must see the client's host: {got:#?}"
    );
    let issuer = got.issuer().expect("curl -v names the issuer");
    assert!(
        issuer.contains("pullcache") && !issuer.contains(TEST_CA_CN),
        "the client should have seen pullcache's leaf, issuer was {issuer:?}"
    );
    assert_eq!(fx.registry.request_count(), 1);
}

#[test]
fn upstream_connection_is_opened_at_connect_and_used_by_the_first_request() {
    let fx = Fixture::new();
    let proxy = TestProxy::start(&fx.config().render());
    let ca = proxy.ca_cert_path().display().to_string();
    let connect =
        format!("CONNECT {REGISTRY_HOST}:443 HTTP/1.1\r\nHost: {REGISTRY_HOST}:443\r\n\r\n");

    // A CONNECT alone, no TLS from the client yet: the upstream handshake
    // starts anyway.
    let (_idle_tunnel, head) = raw_exchange(proxy.addr(), connect.as_bytes());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while fx.registry.handshake_count() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        fx.registry.handshake_count(),
        1,
        "no upstream handshake after CONNECT"
    );
    assert_eq!(fx.registry.request_count(), 0, "warming sends no request");

    // A second CONNECT finds the host warm already, and the request takes
    // the warmed connection rather than opening another.
    let got = fetch(&["-x", &proxy.url(), "--cacert", &ca, URL]);
    assert_eq!(got.http_code, 200, "{got:#?}");
    assert_eq!(fx.registry.request_count(), 1);
    assert_eq!(
        fx.registry.handshake_count(),
        1,
        "the warmed connection was not used"
    );
}

#[test]
fn leaf_is_not_trusted_by_the_upstream_ca() {
    let fx = Fixture::new();
    let proxy = TestProxy::start(&fx.config().render());
    let test_ca = fx.ca.cert_path().display().to_string();

    // Trusting only the upstream's CA must fail: the certificate the client
    // got was minted by pullcache, not passed through from the upstream.
    let got = fetch(&["-x", &proxy.url(), "--cacert", &test_ca, URL]);

    assert_eq!(
        got.curl.code(),
        60,
        "expected a verification failure: {got:#?}"
    );
    assert_eq!(got.connect_code, 200, "{got:#?}");
    assert_eq!(fx.registry.request_count(), 0);
}

#[test]
fn http2_and_http1_1_both_work() {
    let fx = Fixture::new();
    let proxy = TestProxy::start(&fx.config().render());
    let ca = proxy.ca_cert_path().display().to_string();

    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let got = fetch(&["-x", &proxy.url(), "--cacert", &ca, flag, URL]);
        assert_eq!(got.curl.code(), 0, "{flag}: {got:#?}");
        assert_eq!(got.http_code, 200, "{flag}: {got:#?}");
        assert_eq!(got.http_version, version, "{flag} negotiated: {got:#?}");
        assert_eq!(got.body, "upstream:registry GET /v2/", "{flag}");
        assert_eq!(
            got.header("x-seen-host").as_deref(),
            Some(REGISTRY_HOST),
            "{flag}: {got:#?}"
        );
    }
    assert_eq!(fx.registry.request_count(), 2);
}

#[test]
fn head_and_post_pass_through() {
    let fx = Fixture::new();
    let proxy = TestProxy::start(&fx.config().render());
    let ca = proxy.ca_cert_path().display().to_string();

    // HEAD over both protocols: a response with a length but no body is
    // easy to get wrong when streaming it back.
    for flag in ["--http1.1", "--http2"] {
        let head = fetch(&["-x", &proxy.url(), "--cacert", &ca, flag, "-I", URL]);
        assert_eq!(head.curl.code(), 0, "HEAD {flag}: {head:#?}");
        assert_eq!(head.http_code, 200, "HEAD {flag}: {head:#?}");
    }

    let post_url = "https://registry-1.docker.io/v2/library/x/blobs/uploads/";
    let post = fetch(&[
        "-x",
        &proxy.url(),
        "--cacert",
        &ca,
        "--data-binary",
        "hello-from-e2e",
        post_url,
    ]);
    assert_eq!(post.curl.code(), 0, "{post:#?}");
    assert_eq!(post.http_code, 200, "{post:#?}");
    assert_eq!(
        post.body,
        "upstream:registry POST /v2/library/x/blobs/uploads/"
    );

    let seen = fx.registry.requests();
    let methods: Vec<&str> = seen.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["HEAD", "HEAD", "POST"], "{seen:#?}");
    assert_eq!(seen[0].path, "/v2/");
    assert_eq!(&seen[2].body[..], b"hello-from-e2e");
}

#[test]
fn host_header_disagreeing_with_connect_is_misdirected() {
    let fx = Fixture::new();
    let proxy = TestProxy::start(&fx.config().render());
    let ca = proxy.ca_cert_path().display().to_string();

    // With HTTP/2 curl turns the Host header into :authority, so both
    // protocols' forms of the check are covered.
    for flag in ["--http1.1", "--http2"] {
        let got = fetch(&[
            "-x",
            &proxy.url(),
            "--cacert",
            &ca,
            flag,
            "-H",
            "Host: other.example",
            URL,
        ]);
        assert_eq!(got.connect_code, 200, "{flag}: {got:#?}");
        assert_eq!(got.http_code, 421, "{flag}: {got:#?}");
    }
    assert_eq!(
        fx.registry.request_count(),
        0,
        "a misdirected request must not be forwarded: {:#?}",
        fx.registry.requests()
    );
}
