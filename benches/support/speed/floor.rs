//! The machine's own floor, measured in the same run: how fast one thread
//! hashes SHA-256 and copies memory here. A verified miss cannot cost
//! less than its hashing, and what hashing costs depends on where the
//! bytes are: on the 2-core machine of the README's figures SHA-256 ran
//! at 1.65 GB/s over bytes in the CPU's cache and at 1.0 GB/s over bytes
//! fetched from memory, which moves a miss's floor by 0.4 CPU-s per GB.
//! Printed next to the miss figures, both say how far a run's numbers are
//! from what the machine allows.

use std::time::Instant;

use sha2::Digest as _;

/// One thread's speeds, in GB/s (10⁹ bytes a second).
pub(crate) struct Floor {
    /// SHA-256 over 1 MiB hashed again and again (in cache).
    pub(crate) sha256_cached: f64,
    /// SHA-256 over [`MEMORY_BYTES`] once (from memory).
    pub(crate) sha256_memory: f64,
    /// Copying [`MEMORY_BYTES`] from one buffer to another.
    pub(crate) memcpy: f64,
}

/// Far larger than any cache, small enough to allocate anywhere the
/// benchmark runs.
const MEMORY_BYTES: usize = 256 * 1024 * 1024;

/// How many times each figure is taken; the best one counts (the others
/// lost time to something else on the machine).
const TRIES: usize = 3;

/// Measures the floor: about a second on 2 cores.
pub(crate) fn measure() -> Floor {
    // Real pages with varied bytes, not the shared zero page.
    let source: Vec<u8> = (0..MEMORY_BYTES).map(|i| (i % 251) as u8).collect();
    let mut target = vec![1u8; MEMORY_BYTES];
    let cached = &source[..1024 * 1024];
    let best = |f: &mut dyn FnMut() -> usize| {
        (0..TRIES)
            .map(|_| {
                let started = Instant::now();
                let bytes = f();
                bytes as f64 / started.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0, f64::max)
    };
    let sha256_cached = best(&mut || {
        let mut hasher = sha2::Sha256::new();
        for _ in 0..MEMORY_BYTES / cached.len() {
            hasher.update(cached);
        }
        std::hint::black_box(hasher.finalize());
        MEMORY_BYTES
    });
    let sha256_memory = best(&mut || {
        std::hint::black_box(sha2::Sha256::digest(&source));
        MEMORY_BYTES
    });
    let memcpy = best(&mut || {
        target.copy_from_slice(&source);
        std::hint::black_box(&target);
        MEMORY_BYTES
    });
    Floor {
        sha256_cached,
        sha256_memory,
        memcpy,
    }
}

impl Floor {
    /// CPU-seconds per GB that hashing alone costs: (in cache, from memory).
    pub(crate) fn hashing_cpu_s_per_gb(&self) -> (f64, f64) {
        (1.0 / self.sha256_cached, 1.0 / self.sha256_memory)
    }
}
