//! The parts of the load benchmark (`benches/load.rs`), one per file: the
//! pseudo-random blobs it moves, the in-process upstream registry that serves
//! them, the `pullcache` child process it measures, and the curl client that
//! downloads through either.

pub(crate) mod blobs;
pub(crate) mod client;
pub(crate) mod proxy;
pub(crate) mod upstream;

/// The registry name every request is for. pullcache intercepts it; its
/// `[upstream.resolve]` and curl's `--resolve` point it at 127.0.0.1, so no
/// request ever leaves the machine.
pub(crate) const REGISTRY_HOST: &str = "registry-1.docker.io";

/// The repository the blobs live in.
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
