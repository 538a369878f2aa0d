//! End-to-end tests: the real `pullcache` binary, driven by the real curl,
//! in front of in-process HTTPS upstreams, all on loopback.
//!
//! The binary is not built by `cargo test` for this package; `tests/run.sh`
//! builds the workspace's binaries first (see `support::pullcache_bin`).

// Test CA, TLS upstreams, the proxy child process and the clients.
mod support;

// `pullcache ca …`, config validation with exit code 64, flag/env/file precedence.
mod cli;
// CONNECT refusals (port, authority, client address) and the admin endpoints.
mod connect_policy;
// TLS termination for intercepted hosts: leaf, forwarding, methods, Host checks.
mod intercept;
// Byte-for-byte tunnels for other hosts, and `tunnel = false`.
mod tunnel;
// SIGTERM: stop accepting, drain within the grace, exit 0.
mod shutdown;
// Pulls through the cache from a real registry (docker-registry + skopeo).
mod registry_cache;
// The cache against a fault-injecting fake registry: bad bytes, resets, 429, redirects.
mod cache_faults;
// kill -9 during concurrent fills, and `pullcache cache verify`.
mod crash;
// Start-up with a damaged data directory: a lost or garbage index, bad CA files.
mod startup_faults;
// Hostile clients: limits (431, 413, 429, 503), slow and idle connections,
// proxy authentication, denied destinations, old TLS and foreign SNI.
mod hardening;
// A disk that fills up mid-download: the pull completes uncached.
mod disk_full;
// Upstreams that stall, answer 5xx/429 or vanish.
mod upstream_faults;
