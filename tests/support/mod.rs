//! Helpers shared by the end-to-end tests: a throwaway CA, in-process TLS
//! upstreams, a running `pullcache` child process, and clients (curl and raw
//! sockets) that talk to it. Everything listens on and connects to 127.0.0.1
//! only; the upstream host names the tests use are mapped to loopback by
//! pullcache's own `[upstream.resolve]`, so no real DNS is ever consulted.

pub(crate) mod bin;
pub(crate) mod client;
pub(crate) mod fake_registry;
pub(crate) mod fixture;
pub(crate) mod image;
pub(crate) mod proxy;
pub(crate) mod registry;
pub(crate) mod reliability;
pub(crate) mod skopeo;
pub(crate) mod tls;
pub(crate) mod upstream;

pub(crate) use bin::{run_bounded, BoundedOutput};
pub(crate) use client::{fetch, raw_request};
pub(crate) use fixture::{Fixture, REGISTRY_HOST, TUNNELLED_HOST};
pub(crate) use proxy::{ProxyConfig, TestProxy};
pub(crate) use tls::TestCa;
pub(crate) use upstream::TlsUpstream;

/// Quotes `s` as a TOML basic string. Paths in tests come from `tempfile` and
/// are plain, but escaping keeps a stray quote or backslash from silently
/// producing a different config than the test meant.
pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
