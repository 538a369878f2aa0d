//! Counters the proxy keeps about itself, served at `/metrics` in the
//! Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    digest_mismatches: AtomicU64,
    storage_errors: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    cache_joined: AtomicU64,
    cache_stale: AtomicU64,
    cache_bypassed: AtomicU64,
}

impl Metrics {
    /// Upstream bytes that did not match their digest.
    pub fn digest_mismatch(&self) {
        self.digest_mismatches.fetch_add(1, Ordering::Relaxed);
    }

    /// A blob that could not be stored (e.g. the disk is full).
    pub fn storage_error(&self) {
        self.storage_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one answered registry request by its outcome.
    pub fn outcome(&self, outcome: &crate::registry::serve::CacheOutcome) {
        use crate::registry::serve::CacheOutcome::*;
        let counter = match outcome {
            Hit | Revalidated => &self.cache_hits,
            Miss => &self.cache_misses,
            Joined => &self.cache_joined,
            Stale => &self.cache_stale,
            Bypass(_) => &self.cache_bypassed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        };
        counter(
            "pullcache_digest_mismatches_total",
            "Upstream content that did not match its digest and was discarded.",
            &self.digest_mismatches,
        );
        counter(
            "pullcache_storage_errors_total",
            "Blobs served but not cached because they could not be stored.",
            &self.storage_errors,
        );
        counter(
            "pullcache_cache_hits_total",
            "Registry requests served from the cache.",
            &self.cache_hits,
        );
        counter(
            "pullcache_cache_misses_total",
            "Registry requests that started an upstream fetch.",
            &self.cache_misses,
        );
        counter(
            "pullcache_cache_joined_total",
            "Registry requests that joined a fetch in progress.",
            &self.cache_joined,
        );
        counter(
            "pullcache_cache_stale_total",
            "Tags served stale because upstream could not revalidate them.",
            &self.cache_stale,
        );
        counter(
            "pullcache_cache_bypassed_total",
            "Cacheable requests passed through uncached.",
            &self.cache_bypassed,
        );
        out
    }
}
