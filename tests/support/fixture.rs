//! The usual cast of a proxy test: one throwaway CA, an upstream registry that
//! pullcache intercepts, and an upstream that it only tunnels. Both upstreams
//! listen on loopback; pullcache reaches them through `[upstream.resolve]`.

use super::{ProxyConfig, TestCa, TlsUpstream};

/// An intercepted registry host (pullcache terminates TLS for it).
pub(crate) const REGISTRY_HOST: &str = "registry-1.docker.io";
/// A host pullcache does not intercept and so tunnels byte for byte. The
/// `.test` TLD is reserved, so the name can never reach a real server.
pub(crate) const TUNNELLED_HOST: &str = "tunnelled.test";

pub(crate) struct Fixture {
    pub(crate) ca: TestCa,
    pub(crate) registry: TlsUpstream,
    pub(crate) tunnelled: TlsUpstream,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let ca = TestCa::new();
        let registry = TlsUpstream::start(&ca, &[REGISTRY_HOST], TlsUpstream::echo("registry"));
        let tunnelled = TlsUpstream::start(&ca, &[TUNNELLED_HOST], TlsUpstream::echo("tunnelled"));
        Fixture {
            ca,
            registry,
            tunnelled,
        }
    }

    /// A config that intercepts [`REGISTRY_HOST`], trusts the test CA
    /// upstream, and maps both hosts to their loopback upstreams.
    pub(crate) fn config(&self) -> ProxyConfig {
        ProxyConfig {
            intercept: vec![REGISTRY_HOST.to_owned()],
            ca_files: vec![self.ca.cert_path().to_path_buf()],
            resolve: vec![
                (REGISTRY_HOST.to_owned(), self.registry.addr()),
                (TUNNELLED_HOST.to_owned(), self.tunnelled.addr()),
            ],
            ..ProxyConfig::default()
        }
    }
}
