//! What the benchmarks share, one part per file: the pseudo-random blobs
//! they move, the certificates of their servers, the in-process origin
//! (registry and tunnel site) and the runtime it and the other in-process
//! servers run on, the `pullcache` child process they measure, and the load
//! benchmark's curl client. `soak/` and `speed/` hold the parts only one
//! benchmark uses.

pub(crate) mod blobs;
pub(crate) mod certs;
pub(crate) mod client;
pub(crate) mod origin;
pub(crate) mod proxy;
pub(crate) mod server;

/// The registry name every request is for. pullcache intercepts it; its
/// `[upstream.resolve]` and curl's `--resolve` point it at 127.0.0.1, so no
/// request ever leaves the machine.
pub(crate) const REGISTRY_HOST: &str = "registry-1.docker.io";

/// The repository the load and speed benchmarks' blobs live in.
pub(crate) const REPOSITORY: &str = "bench";

/// `/v2/bench/blobs/sha256:<hex>`.
pub(crate) fn blob_path(hex: &str) -> String {
    format!("/v2/{REPOSITORY}/blobs/sha256:{hex}")
}

/// Lower-case hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// A positive integer from the environment, or `default` when unset.
pub(crate) fn env_count(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(error) => anyhow::bail!("{name}: {error}"),
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => anyhow::bail!("{name} must be a positive integer, not {text:?}"),
        },
    }
}
