//! Why a request failed, whose fault it was, and the one place that turns a
//! failure into an HTTP response.
//!
//! Handlers return `Result<_, ProxyError>`; [`error_response`] maps each
//! variant to its status so the mapping lives in one ordered table rather
//! than at every call site. Building the response has no side effects: the
//! caller logs the error once.

use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
use crate::connect::AuthorityError;

/// Which side of the proxy caused a failure; used in logs and to decide
/// whether the failure is worth a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we will not or cannot act on.
    Client,
    /// The upstream could not be reached or misbehaved.
    Upstream,
    /// Our own failure.
    Local,
}

/// A reason to refuse a CONNECT or request by policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The client's address is outside `access.clients`.
    #[error("client address is not in access.clients")]
    ClientNotAllowed,
    /// The CONNECT port is outside `access.connect_ports`.
    #[error("port {0} is not in access.connect_ports")]
    PortNotAllowed(u16),
    /// The host is not intercepted and `access.tunnel` is false.
    #[error("host is not intercepted and tunnelling is disabled (access.tunnel = false)")]
    TunnelDisabled,
    /// The destination address is in `access.deny_destinations`, or is
    /// this proxy itself.
    #[error("destination {0} is not allowed (access.deny_destinations, or this proxy itself)")]
    DestinationDenied(std::net::IpAddr),
    /// Proxy authentication failed or is missing.
    #[error("{0}")]
    Unauthenticated(#[from] crate::proxy_auth::AuthError),
}

/// Everything that can make the proxy answer with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The CONNECT authority did not parse.
    #[error("malformed CONNECT target: {0}")]
    BadAuthority(#[from] AuthorityError),
    /// Refused by policy.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// Only CONNECT (and the admin paths) are served on the proxy port.
    #[error("only CONNECT is proxied; {method} {uri} is not")]
    NotConnect {
        /// The request method.
        method: http::Method,
        /// The request target as the client sent it.
        uri: http::Uri,
    },
    /// An intercepted request named a different host than its CONNECT.
    #[error("request is for {requested}, but the tunnel was opened to {connected}")]
    Misdirected {
        /// The host the request asked for.
        requested: String,
        /// The host the CONNECT named.
        connected: String,
    },
    /// A body where none makes sense (CONNECT, admin pages, blob and
    /// manifest fetches).
    #[error("{method} requests to this path take no body")]
    UnexpectedBody {
        /// The request method.
        method: http::Method,
    },
    /// The request could not be turned into an upstream request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Connecting to the upstream failed (DNS, TCP or TLS).
    #[error("cannot connect to upstream {host}: {source}")]
    UpstreamConnect {
        /// The upstream host.
        host: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The upstream did not answer in time.
    #[error("upstream {host} did not answer within {after:?}")]
    UpstreamTimeout {
        /// The upstream host.
        host: String,
        /// The timeout that fired.
        after: Duration,
    },
    /// The upstream answered with something we cannot use.
    #[error("bad upstream response: {0}")]
    BadGateway(String),
    /// Our own failure (a task that panicked, an impossible state).
    #[error("internal error: {0}")]
    Local(String),
    /// The upstream exchange failed.
    #[error("upstream {host} failed: {source}")]
    Upstream {
        /// The upstream host.
        host: String,
        /// What failed.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
}

// === impl ProxyError ===

impl ProxyError {
    /// Whose fault the error is.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::BadAuthority(_)
            | ProxyError::Refused(_)
            | ProxyError::NotConnect { .. }
            | ProxyError::Misdirected { .. }
            | ProxyError::UnexpectedBody { .. }
            | ProxyError::BadRequest(_) => Side::Client,
            ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::BadGateway(_)
            | ProxyError::Upstream { .. } => Side::Upstream,
            ProxyError::Local(_) => Side::Local,
        }
    }

    /// Whether the upstream could not be reached or did not answer in
    /// time: the cases where cached content is served instead.
    pub fn is_upstream_unreachable(&self) -> bool {
        match self {
            ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamTimeout { .. } => true,
            ProxyError::Upstream { source, .. } => source.is_connect(),
            _ => false,
        }
    }

    /// The status the client gets for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadAuthority(_) | ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Refused(Refusal::Unauthenticated(_)) => {
                StatusCode::PROXY_AUTHENTICATION_REQUIRED
            }
            ProxyError::Refused(_) => StatusCode::FORBIDDEN,
            ProxyError::UnexpectedBody { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NotConnect { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::UpstreamConnect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Local(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The RFC 9209 `Proxy-Status` error type for this error.
    fn proxy_status_error(&self) -> &'static str {
        match self {
            ProxyError::BadAuthority(_)
            | ProxyError::BadRequest(_)
            | ProxyError::NotConnect { .. }
            | ProxyError::UnexpectedBody { .. }
            | ProxyError::Misdirected { .. } => "http_request_error",
            ProxyError::Refused(Refusal::DestinationDenied(_)) => "destination_ip_prohibited",
            ProxyError::Refused(_) => "http_request_denied",
            ProxyError::UpstreamConnect { .. } => "destination_unavailable",
            ProxyError::UpstreamTimeout { .. } => "connection_timeout",
            ProxyError::Upstream { source, .. } if source.is_connect() => "destination_unavailable",
            ProxyError::Local(_) => "proxy_internal_error",
            ProxyError::Upstream { .. } | ProxyError::BadGateway(_) => "proxy_internal_response",
        }
    }
}

/// Builds the response a client gets for `error`: its status, a one-line
/// plain-text explanation and a `Proxy-Status` header (RFC 9209).
pub fn error_response(error: &ProxyError) -> Response<Body> {
    let message = format!("pullcache: {error}\n");
    let mut response = Response::new(body::full(message));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let ProxyError::NotConnect { .. } = error {
        headers.insert(header::ALLOW, HeaderValue::from_static("CONNECT"));
    }
    if let ProxyError::Refused(Refusal::Unauthenticated(_)) = error {
        headers.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"pullcache\""),
        );
    }
    let proxy_status = format!("pullcache; error={}", error.proxy_status_error());
    if let Ok(value) = HeaderValue::from_str(&proxy_status) {
        headers.insert("proxy-status", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_table() {
        let cases = [
            (
                ProxyError::Refused(Refusal::PortNotAllowed(8443)),
                StatusCode::FORBIDDEN,
            ),
            (
                ProxyError::Refused(Refusal::ClientNotAllowed),
                StatusCode::FORBIDDEN,
            ),
            (
                ProxyError::BadAuthority(AuthorityError::MissingPort),
                StatusCode::BAD_REQUEST,
            ),
            (
                ProxyError::UpstreamTimeout {
                    host: "h".into(),
                    after: Duration::from_secs(1),
                },
                StatusCode::GATEWAY_TIMEOUT,
            ),
            (
                ProxyError::UpstreamConnect {
                    host: "h".into(),
                    source: std::io::Error::other("x"),
                },
                StatusCode::BAD_GATEWAY,
            ),
        ];
        for (error, status) in cases {
            let response = error_response(&error);
            assert_eq!(response.status(), status, "{error}");
            assert!(response.headers().contains_key("proxy-status"));
        }
    }

    #[test]
    fn not_connect_says_what_is_allowed() {
        let error = ProxyError::NotConnect {
            method: http::Method::GET,
            uri: "http://example.com/".parse().unwrap(),
        };
        let response = error_response(&error);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "CONNECT");
    }
}
