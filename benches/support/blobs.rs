//! The blobs the benchmark moves: incompressible bytes from a fast
//! pseudo-random generator (splitmix64), one seed per blob so every blob has
//! its own digest, generated in memory once at setup together with their
//! SHA-256.

use std::thread;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::to_hex;

/// One blob and its digest (without the `sha256:` prefix).
pub(crate) struct Blob {
    pub(crate) bytes: Bytes,
    pub(crate) hex: String,
}

/// `count` blobs of `size` bytes each, from seeds `base_seed + i`. Generated
/// on parallel threads; generation and hashing together run at well over
/// 1 GB/s per core.
pub(crate) fn generate(count: usize, size: usize, base_seed: u64) -> Vec<Blob> {
    thread::scope(|scope| {
        let workers: Vec<_> = (0..count)
            .map(|i| scope.spawn(move || one(size, base_seed.wrapping_add(i as u64))))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("blob generator thread"))
            .collect()
    })
}

fn one(size: usize, seed: u64) -> Blob {
    let mut buf = vec![0u8; size];
    SeededBytes::new(seed).fill(&mut buf);
    let hex = to_hex(&Sha256::digest(&buf));
    Blob {
        bytes: Bytes::from(buf),
        hex,
    }
}

/// The byte stream of one seed: splitmix64 words, little-endian. A blob of
/// `n` bytes is the first `n` bytes of its seed's stream, so it can also be
/// produced piece by piece (the origin streams seeded blobs it never holds
/// whole) as long as every piece but the last is a multiple of 8 bytes.
pub(crate) struct SeededBytes {
    state: u64,
}

impl SeededBytes {
    pub(crate) fn new(seed: u64) -> SeededBytes {
        SeededBytes { state: seed }
    }

    /// Fills `buf` with the next `buf.len()` bytes of the stream. A length
    /// that is not a multiple of 8 drops the rest of the last word, so only
    /// the final piece may have one.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = splitmix64(&mut self.state).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Sebastiano Vigna's splitmix64: one add and a few multiply-xorshifts per
/// 8 bytes. Not cryptographic; it only has to be fast and incompressible.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
