//! How much a client may ask of the proxy: the `[limits]` section,
//! validated. Each limit, when hit, gets the client a clear status (503,
//! 429, 431) rather than a silently dropped connection.

use crate::defaults::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_CLIENT, DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_HEADER_BYTES,
};
use crate::error::Problems;
use crate::raw::RawLimits;

/// hyper's smallest read buffer; a header limit below it cannot be honoured.
const MIN_HEADER_BYTES: u32 = 8192;

/// The validated `[limits]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Client connections open at once; past it new ones get 503.
    pub max_connections: u32,
    /// Client connections open at once from one address; past it 429.
    pub max_connections_per_client: u32,
    /// Request line plus headers, in bytes; past it 431.
    pub max_header_bytes: u32,
    /// Header fields per request; past it 431.
    pub max_headers: u32,
}

impl Limits {
    pub(crate) fn from_raw(raw: RawLimits, problems: &mut Problems) -> Limits {
        let d = Limits::default();
        let mut bounded =
            |key: &str, value: Option<i64>, min: u32, max: u32, default: u32| match value {
                None => default,
                Some(v) if v >= i64::from(min) && v <= i64::from(max) => v as u32,
                Some(v) => {
                    problems.push(
                        format!("limits.{key}"),
                        format!("{v} is out of range ({min}-{max})"),
                    );
                    default
                }
            };
        Limits {
            max_connections: bounded(
                "max_connections",
                raw.max_connections,
                1,
                1_000_000,
                d.max_connections,
            ),
            max_connections_per_client: bounded(
                "max_connections_per_client",
                raw.max_connections_per_client,
                1,
                1_000_000,
                d.max_connections_per_client,
            ),
            max_header_bytes: bounded(
                "max_header_bytes",
                raw.max_header_bytes,
                MIN_HEADER_BYTES,
                16 * 1024 * 1024,
                d.max_header_bytes,
            ),
            max_headers: bounded("max_headers", raw.max_headers, 1, 10_000, d.max_headers),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_name_their_key() {
        let mut problems = Problems::default();
        let raw = RawLimits {
            max_connections: Some(0),
            max_connections_per_client: Some(10),
            max_header_bytes: Some(100),
            max_headers: None,
        };
        let limits = Limits::from_raw(raw, &mut problems);
        assert_eq!(limits.max_connections_per_client, 10);
        assert_eq!(limits.max_headers, DEFAULT_MAX_HEADERS);
        let error = problems.finish(()).unwrap_err();
        let messages: Vec<String> = error.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            messages,
            vec![
                "limits.max_connections: 0 is out of range (1-1000000)",
                "limits.max_header_bytes: 100 is out of range (8192-16777216)",
            ]
        );
    }
}
