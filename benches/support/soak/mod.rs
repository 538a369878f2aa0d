//! The soak test's own parts (`benches/soak.rs`), next to the shared ones
//! in `benches/support/` (the origin it fetches from among them): the
//! clients, the statistics and the watcher of the pullcache process, and
//! the names and seeded blobs they agree on with the origin.

pub(crate) mod client;
pub(crate) mod monitor;
pub(crate) mod stats;

use std::sync::{Mutex, MutexGuard};

use sha2::{Digest as _, Sha256};

use crate::support::blobs::{splitmix64, SeededBytes};
use crate::support::to_hex;

/// The repository every soak blob lives in.
pub(crate) const REPOSITORY: &str = "soak";

/// The host the clients tunnel to. Not intercepted; pullcache's
/// `[upstream.resolve]` maps it to the origin's tunnel listener on
/// 127.0.0.1, so it never needs DNS.
pub(crate) const TUNNEL_HOST: &str = "tunnel.test";

/// `/v2/soak/blobs/sha256:<hex>`.
pub(crate) fn blob_path(hex: &str) -> String {
    format!("/v2/{REPOSITORY}/blobs/sha256:{hex}")
}

/// The SHA-256 (hex) of the first `size` bytes of seed `seed`'s stream,
/// generated and hashed piece by piece so no blob is ever held whole.
pub(crate) fn seeded_sha256(seed: u64, size: u64) -> String {
    const PIECE: usize = 64 * 1024; // a multiple of 8, as SeededBytes needs
    let mut bytes = SeededBytes::new(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; PIECE];
    let mut left = size;
    while left > 0 {
        let n = left.min(PIECE as u64) as usize;
        bytes.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    to_hex(&hasher.finalize())
}

/// A small, fast, seeded random number generator (splitmix64): the mix of
/// requests is reproducible from the run's seed and each client's number.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    /// Uniform in `lo..=hi` (the tiny modulo bias is irrelevant here).
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
