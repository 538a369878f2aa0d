//! Which CONNECT requests pullcache refuses, with what status, and that each
//! refusal is logged; plus the plain-HTTP admin endpoints on the proxy port.

use std::time::Duration;

use crate::support::reliability::record;
use crate::support::{fetch, raw_request, Fixture, ProxyConfig, TestProxy};

const LOG_WAIT: Duration = Duration::from_secs(5);

fn assert_refusal_logged(proxy: &TestProxy) {
    assert!(
        proxy.wait_for_log("refused", LOG_WAIT),
        "the refusal was not logged: {:#?}",
        proxy.logs()
    );
}

#[test]
fn connect_to_a_port_not_allowed_is_forbidden() {
    let fx = Fixture::new();
    let proxy = TestProxy::start(&fx.config().render());
    let ca = proxy.ca_cert_path().display().to_string();

    let got = fetch(&[
        "-x",
        &proxy.url(),
        "--cacert",
        &ca,
        "https://registry-1.docker.io:8443/v2/",
    ]);

    assert_eq!(got.connect_code, 403, "{got:#?}");
    assert_ne!(got.curl.code(), 0, "{got:#?}");
    assert_eq!(fx.registry.request_count(), 0);
    assert_refusal_logged(&proxy);
    record("CONNECT to a port not allowed", 1, "refused 403");
}

#[test]
fn connect_without_a_port_is_a_bad_request() {
    let fx = Fixture::new();
    let proxy = TestProxy::start(&fx.config().render());

    let reply = raw_request(
        proxy.addr(),
        b"CONNECT registry-1.docker.io HTTP/1.1\r\nHost: registry-1.docker.io\r\n\r\n",
    );

    assert!(reply.starts_with("HTTP/1.1 400"), "got {reply:?}");
    assert_eq!(fx.registry.request_count(), 0);
    assert_refusal_logged(&proxy);
    record("Malformed CONNECT (no port)", 1, "refused 400");
}

#[test]
fn connect_with_an_unterminated_ipv6_literal_is_a_bad_request() {
    let proxy = TestProxy::start(&ProxyConfig::default().render());

    // Not even a URI: the HTTP parser rejects it before the CONNECT checks,
    // and that must be answered and logged all the same.
    let reply = raw_request(proxy.addr(), b"CONNECT [::1 HTTP/1.1\r\nHost: [::1\r\n\r\n");

    assert!(reply.starts_with("HTTP/1.1 400"), "got {reply:?}");
    assert_refusal_logged(&proxy);
    record(
        "Malformed CONNECT (unterminated IPv6 literal)",
        1,
        "refused 400",
    );
}

#[test]
fn client_outside_the_allowed_networks_is_forbidden() {
    let fx = Fixture::new();
    let config = ProxyConfig {
        clients: Vec::new(),
        ..fx.config()
    };
    let proxy = TestProxy::start(&config.render());
    let test_ca = fx.ca.cert_path().display().to_string();

    // Both kinds of host: neither a tunnel nor an interception may start.
    for url in [
        "https://tunnelled.test/v2/",
        "https://registry-1.docker.io/v2/",
    ] {
        let got = fetch(&["-x", &proxy.url(), "--cacert", &test_ca, url]);
        assert_eq!(got.connect_code, 403, "{url}: {got:#?}");
    }
    assert_eq!(fx.tunnelled.request_count(), 0);
    assert_eq!(fx.registry.request_count(), 0);
    assert_refusal_logged(&proxy);
    record("Client outside access.clients", 1, "refused 403");
}

#[test]
fn admin_endpoints_answer_on_the_proxy_port() {
    let proxy = TestProxy::start(&ProxyConfig::default().render());
    let base = proxy.url();

    let health = fetch(&[&format!("{base}/healthz")]);
    assert_eq!(health.http_code, 200, "{health:#?}");
    assert_eq!(health.body.trim(), "ok");

    let ca = fetch(&[&format!("{base}/ca.crt")]);
    assert_eq!(ca.http_code, 200, "{ca:#?}");
    let on_disk = std::fs::read_to_string(proxy.ca_cert_path()).expect("read ca.crt");
    assert!(
        on_disk.starts_with("-----BEGIN CERTIFICATE-----"),
        "{on_disk}"
    );
    assert_eq!(ca.body, on_disk, "GET /ca.crt must serve the CA file");

    let missing = fetch(&[&format!("{base}/nope")]);
    assert_eq!(missing.http_code, 404, "{missing:#?}");
}
