//! How long the proxy waits for clients and tunnels: the `[timeouts]`
//! section, validated.

use std::time::Duration;

use crate::defaults::{
    DEFAULT_HEADER_READ, DEFAULT_KEEPALIVE_IDLE, DEFAULT_SHUTDOWN_GRACE, DEFAULT_TLS_HANDSHAKE,
    DEFAULT_TUNNEL_IDLE,
};
use crate::error::Problems;
use crate::raw::RawTimeouts;
use crate::values::duration;

/// The validated `[timeouts]` section; every value is greater than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Client TLS handshake on an intercepted connection.
    pub tls_handshake: Duration,
    /// Reading one request's headers.
    pub header_read: Duration,
    /// A tunnel with no bytes either way for this long is closed.
    pub tunnel_idle: Duration,
    /// On SIGTERM, how long in-flight transfers may finish.
    pub shutdown_grace: Duration,
    /// A client connection (proxy port or intercepted) with no bytes
    /// either way for this long is closed.
    pub keepalive_idle: Duration,
}

impl Timeouts {
    pub(crate) fn from_raw(raw: RawTimeouts, problems: &mut Problems) -> Timeouts {
        let d = Timeouts::default();
        Timeouts {
            tls_handshake: duration(
                problems,
                "timeouts.tls_handshake",
                raw.tls_handshake.as_deref(),
                d.tls_handshake,
            ),
            header_read: duration(
                problems,
                "timeouts.header_read",
                raw.header_read.as_deref(),
                d.header_read,
            ),
            tunnel_idle: duration(
                problems,
                "timeouts.tunnel_idle",
                raw.tunnel_idle.as_deref(),
                d.tunnel_idle,
            ),
            shutdown_grace: duration(
                problems,
                "timeouts.shutdown_grace",
                raw.shutdown_grace.as_deref(),
                d.shutdown_grace,
            ),
            keepalive_idle: duration(
                problems,
                "timeouts.keepalive_idle",
                raw.keepalive_idle.as_deref(),
                d.keepalive_idle,
            ),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tls_handshake: DEFAULT_TLS_HANDSHAKE,
            header_read: DEFAULT_HEADER_READ,
            tunnel_idle: DEFAULT_TUNNEL_IDLE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            keepalive_idle: DEFAULT_KEEPALIVE_IDLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod from_raw {
        use super::*;

        #[test]
        fn each_key_is_named_in_its_problem() {
            let raw = RawTimeouts {
                tls_handshake: Some("2s".into()),
                header_read: Some("0ms".into()),
                tunnel_idle: Some("5 parsecs".into()),
                shutdown_grace: None,
                keepalive_idle: None,
            };
            let mut problems = Problems::default();
            let t = Timeouts::from_raw(raw, &mut problems);
            assert_eq!(t.tls_handshake, Duration::from_secs(2));
            assert_eq!(t.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
            let err = problems.finish(t).unwrap_err();
            assert_eq!(
                err.to_string(),
                "timeouts.header_read: \"0ms\" must be greater than zero\n\
                 timeouts.tunnel_idle: \"5 parsecs\" is not a duration (e.g. \"30s\", \"5m\")"
            );
        }
    }
}
