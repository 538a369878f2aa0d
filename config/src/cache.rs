//! How long cached answers stay fresh and how long the proxy waits on a
//! slow upstream: the `[cache]` section, validated.

use std::time::Duration;

use crate::defaults::{DEFAULT_TAG_TTL, DEFAULT_UPSTREAM_STALL, DEFAULT_VISIBILITY_TTL};
use crate::error::Problems;
use crate::raw::RawCache;
use crate::values::duration;

/// The validated `[cache]` section; every duration is greater than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// A tag's digest is served from the cache this long before an
    /// upstream `HEAD` revalidates it.
    pub tag_ttl: Duration,
    /// How long a repository confirmed public stays confirmed.
    pub visibility_ttl: Duration,
    /// The longest pause in an upstream response before a fetch is
    /// abandoned (and nothing is committed).
    pub upstream_stall: Duration,
}

impl CacheConfig {
    pub(crate) fn from_raw(raw: RawCache, problems: &mut Problems) -> CacheConfig {
        let d = CacheConfig::default();
        CacheConfig {
            tag_ttl: duration(problems, "cache.tag_ttl", raw.tag_ttl.as_deref(), d.tag_ttl),
            visibility_ttl: duration(
                problems,
                "cache.visibility_ttl",
                raw.visibility_ttl.as_deref(),
                d.visibility_ttl,
            ),
            upstream_stall: duration(
                problems,
                "cache.upstream_stall",
                raw.upstream_stall.as_deref(),
                d.upstream_stall,
            ),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            tag_ttl: DEFAULT_TAG_TTL,
            visibility_ttl: DEFAULT_VISIBILITY_TTL,
            upstream_stall: DEFAULT_UPSTREAM_STALL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_problems_name_their_keys() {
        let mut problems = Problems::default();
        let raw = RawCache {
            tag_ttl: Some("90s".into()),
            visibility_ttl: Some("soon".into()),
            upstream_stall: None,
        };
        let cache = CacheConfig::from_raw(raw, &mut problems);
        assert_eq!(cache.tag_ttl, Duration::from_secs(90));
        assert_eq!(cache.upstream_stall, DEFAULT_UPSTREAM_STALL);
        let error = problems.finish(()).unwrap_err();
        let messages: Vec<String> = error.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(messages.len(), 1);
        assert!(
            messages[0].starts_with("cache.visibility_ttl: \"soon\""),
            "{messages:?}"
        );
    }
}
