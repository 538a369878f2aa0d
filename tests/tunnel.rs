//! Hosts that are not intercepted are tunnelled byte for byte: the client
//! talks TLS with the upstream itself and sees the upstream's certificate.

use std::time::Duration;

use crate::support::tls::TEST_CA_CN;
use crate::support::{fetch, Fixture, ProxyConfig, TestProxy};

const URL: &str = "https://tunnelled.test/v2/";

#[test]
fn client_sees_the_upstreams_own_certificate() {
    let fx = Fixture::new();
    let proxy = TestProxy::start(&fx.config().render());
    let test_ca = fx.ca.cert_path().display().to_string();

    let got = fetch(&["-x", &proxy.url(), "--cacert", &test_ca, URL]);

    assert_eq!(got.curl.code(), 0, "curl failed: {got:#?}");
    assert_eq!(got.connect_code, 200, "{got:#?}");
    assert_eq!(got.http_code, 200, "{got:#?}");
    assert_eq!(got.body, "upstream:tunnelled GET /v2/");
    let issuer = got.issuer().expect("curl -v names the issuer");
    assert!(
        issuer.contains(TEST_CA_CN) && !issuer.contains("pullcache"),
        "a tunnel must pass the upstream's certificate through, issuer was {issuer:?}"
    );
    assert_eq!(fx.tunnelled.request_count(), 1);
    assert_eq!(fx.registry.request_count(), 0);
}

#[test]
fn pullcache_ca_does_not_vouch_for_tunnelled_hosts() {
    let fx = Fixture::new();
    let proxy = TestProxy::start(&fx.config().render());
    let ca = proxy.ca_cert_path().display().to_string();

    let got = fetch(&["-x", &proxy.url(), "--cacert", &ca, URL]);

    assert_eq!(got.connect_code, 200, "{got:#?}");
    assert_eq!(
        got.curl.code(),
        60,
        "expected a verification failure: {got:#?}"
    );
    assert_eq!(fx.tunnelled.request_count(), 0);
}

#[test]
fn tunnel_disabled_refuses_other_hosts_but_still_intercepts() {
    let fx = Fixture::new();
    let config = ProxyConfig {
        tunnel: false,
        ..fx.config()
    };
    let proxy = TestProxy::start(&config.render());
    let test_ca = fx.ca.cert_path().display().to_string();
    let ca = proxy.ca_cert_path().display().to_string();

    let refused = fetch(&["-x", &proxy.url(), "--cacert", &test_ca, URL]);
    assert_eq!(refused.connect_code, 403, "{refused:#?}");
    assert_ne!(refused.curl.code(), 0, "{refused:#?}");
    assert_eq!(fx.tunnelled.request_count(), 0);
    assert!(
        proxy.wait_for_log("refused", Duration::from_secs(5)),
        "no refusal logged: {:#?}",
        proxy.logs()
    );

    let intercepted = fetch(&[
        "-x",
        &proxy.url(),
        "--cacert",
        &ca,
        "https://registry-1.docker.io/v2/",
    ]);
    assert_eq!(intercepted.http_code, 200, "{intercepted:#?}");
    assert_eq!(fx.registry.request_count(), 1);
}
