//! CONNECT: parse the authority strictly, ask the policy, answer, and hand
//! the upgraded connection to the tunnel or the interceptor.
//!
//! The decision is made from the CONNECT line alone, before any byte of the
//! tunnelled stream is read, so the proxy never has to peek at or rewind the
//! client's TLS.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::{debug, info, Instrument};

use crate::body::{self, Body};
use crate::error::ProxyError;
use crate::idle::Tracked;
use crate::policy::{self, Decision};
use crate::server::ConnectionSlot;
use crate::{intercept, tunnel, State};

/// The longest authority we accept: a 253-byte name, a colon and a port.
const MAX_AUTHORITY_LEN: usize = 253 + 1 + 5;

/// The host half of a CONNECT target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetHost {
    /// A DNS name, lowercased, without a trailing dot.
    Name(String),
    /// An IP literal (IPv6 was written in brackets).
    Ip(IpAddr),
}

/// Where a CONNECT asks to go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectTarget {
    /// The host, validated.
    pub host: TargetHost,
    /// The port, 1-65535.
    pub port: u16,
}

/// Why a CONNECT authority was refused as malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// The request target is not in authority form (`host:port`).
    #[error("the request target is not host:port")]
    NotAuthorityForm,
    /// Nothing before the port.
    #[error("the host is empty")]
    EmptyHost,
    /// `host` without `:port`.
    #[error("the port is missing (expected host:port)")]
    MissingPort,
    /// The port is not a number from 1 to 65535.
    #[error("{0:?} is not a port (1-65535)")]
    BadPort(String),
    /// The host is not a valid DNS name or IP literal.
    #[error("{0:?} is not a valid host name or IP address")]
    BadHost(String),
    /// An IPv6 address without brackets, or a bracket that is not closed.
    #[error("IPv6 addresses must be written in brackets, e.g. [::1]:443")]
    BadIpv6,
    /// `user@host:port` is never valid in a CONNECT.
    #[error("user information is not allowed in a CONNECT target")]
    UserInfo,
    /// Longer than any valid authority.
    #[error("the target is too long")]
    TooLong,
}

// === impl ConnectTarget ===

impl ConnectTarget {
    /// Parses `host:port`, `[v6]:port` or `v4:port`, refusing everything
    /// else. Names are normalised to lowercase without a trailing dot.
    pub fn parse(authority: &str) -> Result<ConnectTarget, AuthorityError> {
        if authority.len() > MAX_AUTHORITY_LEN {
            return Err(AuthorityError::TooLong);
        }
        if authority.contains('@') {
            return Err(AuthorityError::UserInfo);
        }
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or(AuthorityError::BadIpv6)?;
            let ip: Ipv6Addr = inside.parse().map_err(|_| AuthorityError::BadIpv6)?;
            let port = after.strip_prefix(':').ok_or(AuthorityError::MissingPort)?;
            (TargetHost::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = authority
                .rsplit_once(':')
                .ok_or(AuthorityError::MissingPort)?;
            if host.contains(':') {
                return Err(AuthorityError::BadIpv6);
            }
            (parse_host(host)?, port)
        };
        Ok(ConnectTarget {
            host,
            port: parse_port(port)?,
        })
    }

    /// The host as a string: a name, or an IP without brackets.
    pub fn host_str(&self) -> String {
        match &self.host {
            TargetHost::Name(name) => name.clone(),
            TargetHost::Ip(ip) => ip.to_string(),
        }
    }

    /// The authority as it goes into an `https://` URI: the port is left
    /// out when it is the default, so it reads as clients write it.
    pub fn https_authority(&self) -> String {
        let host = match &self.host {
            TargetHost::Name(name) => name.clone(),
            TargetHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            TargetHost::Ip(IpAddr::V4(ip)) => ip.to_string(),
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for ConnectTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            TargetHost::Name(name) => write!(f, "{name}:{}", self.port),
            TargetHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            TargetHost::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
        }
    }
}

fn parse_host(host: &str) -> Result<TargetHost, AuthorityError> {
    if host.is_empty() {
        return Err(AuthorityError::EmptyHost);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(TargetHost::Ip(ip));
    }
    // Names whose last label is all digits ("127.0.0.1.", "10.0.0") are
    // refused by the name grammar: resolvers treat them as addresses.
    pullcache_config::normalize_host(host)
        .map(TargetHost::Name)
        .ok_or_else(|| AuthorityError::BadHost(host.to_owned()))
}

fn parse_port(port: &str) -> Result<u16, AuthorityError> {
    let valid = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u16>() {
        Ok(n) if valid && n != 0 => Ok(n),
        _ if port.is_empty() => Err(AuthorityError::MissingPort),
        _ => Err(AuthorityError::BadPort(port.to_owned())),
    }
}

/// Answers one CONNECT: refuses it, or answers `200` and spawns the task
/// that tunnels or intercepts the upgraded connection.
pub async fn handle_connect(
    state: Arc<State>,
    client: SocketAddr,
    req: Request<Incoming>,
    slot: Arc<ConnectionSlot>,
) -> Result<Response<Body>, ProxyError> {
    let authority = req
        .uri()
        .authority()
        .ok_or(AuthorityError::NotAuthorityForm)?
        .to_string();
    if req.uri().scheme().is_some() || req.uri().path_and_query().is_some_and(|p| p != "/") {
        return Err(AuthorityError::NotAuthorityForm.into());
    }
    let target = ConnectTarget::parse(&authority)?;
    let decision = policy::decide(&state.config, &target)?;
    let span = tracing::info_span!("connect", client.addr = %client, connect.target = %target);

    match decision {
        Decision::Tunnel => {
            // Connect before answering so a dead upstream is a 502 the client
            // can see, not a tunnel that closes at once.
            let upstream = state
                .resolver
                .connect(&target.host_str(), target.port)
                .instrument(span.clone())
                .await?;
            let idle = state.config.timeouts.tunnel_idle;
            state.tasks.spawn(
                async move {
                    let _slot = slot;
                    let upgraded = match hyper::upgrade::on(req).await {
                        Ok(upgraded) => upgraded,
                        Err(error) => return debug!(%error, "upgrade failed"),
                    };
                    // The server hands hyper a tracked socket (server.rs); taken
                    // apart again, the tunnel can splice socket to socket
                    // without copying. The server's tracking is done with it:
                    // its connection ended at the upgrade, and the tunnel keeps
                    // its own idle clock.
                    match upgraded.downcast::<TokioIo<Tracked<TcpStream>>>() {
                        Ok(parts) => {
                            let client = parts.io.into_inner().into_inner();
                            tunnel::relay_tcp(client, parts.read_buf, upstream, idle).await;
                        }
                        Err(upgraded) => {
                            debug!("upgraded connection is not a bare socket; copying");
                            tunnel::relay(TokioIo::new(upgraded), upstream, idle).await;
                        }
                    }
                }
                .instrument(span),
            );
        }
        Decision::Intercept => {
            // The upstream handshakes overlap the client's TLS handshake
            // with us instead of following it.
            state.upstream.warm(&target.https_authority());
            let task_state = state.clone();
            state.tasks.spawn(
                async move {
                    let _slot = slot;
                    let upgraded = match hyper::upgrade::on(req).await {
                        Ok(upgraded) => upgraded,
                        Err(error) => return debug!(%error, "upgrade failed"),
                    };
                    intercept::serve(task_state, TokioIo::new(upgraded), target, client).await;
                }
                .instrument(span),
            );
        }
    }
    info!(client.addr = %client, connect.target = %authority, connect.decision = ?decision, "CONNECT accepted");
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    mod parse {
        use super::*;

        fn name(host: &str, port: u16) -> ConnectTarget {
            ConnectTarget {
                host: TargetHost::Name(host.into()),
                port,
            }
        }

        #[test]
        fn accepts_names_and_literals() {
            assert_eq!(
                ConnectTarget::parse("registry-1.docker.io:443"),
                Ok(name("registry-1.docker.io", 443))
            );
            assert_eq!(
                ConnectTarget::parse("Quay.IO.:8443"),
                Ok(name("quay.io", 8443))
            );
            assert_eq!(
                ConnectTarget::parse("10.0.0.5:443").unwrap().host,
                TargetHost::Ip("10.0.0.5".parse().unwrap())
            );
            let v6 = ConnectTarget::parse("[::1]:443").unwrap();
            assert_eq!(v6.host, TargetHost::Ip("::1".parse().unwrap()));
            assert_eq!(v6.to_string(), "[::1]:443");
            assert_eq!(v6.https_authority(), "[::1]");
            assert_eq!(name("a.b", 5000).https_authority(), "a.b:5000");
        }

        #[test]
        fn refuses_malformed_targets() {
            use AuthorityError::*;
            let cases: &[(&str, AuthorityError)] = &[
                ("registry-1.docker.io", MissingPort),
                ("registry-1.docker.io:", MissingPort),
                (":443", EmptyHost),
                ("host:0", BadPort("0".into())),
                ("host:65536", BadPort("65536".into())),
                ("host:+443", BadPort("+443".into())),
                ("host:44 3", BadPort("44 3".into())),
                ("host:0443443", BadPort("0443443".into())),
                ("::1:443", BadIpv6),
                ("[::1:443", BadIpv6),
                ("[nothex]:443", BadIpv6),
                ("[::1]", MissingPort),
                ("[::1]443", MissingPort),
                ("user@host:443", UserInfo),
                ("bad_host!:443", BadHost("bad_host!".into())),
                ("-lead.example:443", BadHost("-lead.example".into())),
                ("a..b:443", BadHost("a..b".into())),
                ("../etc/passwd:443", BadHost("../etc/passwd".into())),
                ("127.0.0.1.:443", BadHost("127.0.0.1.".into())),
            ];
            for (input, expected) in cases {
                assert_eq!(
                    ConnectTarget::parse(input).as_ref(),
                    Err(expected),
                    "input {input:?}"
                );
            }
            let long = format!("{}:443", "a".repeat(300));
            assert_eq!(ConnectTarget::parse(&long), Err(TooLong));
        }
    }
}
