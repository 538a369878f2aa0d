//! Turning an upstream host and port into a connected TCP stream, honouring
//! `[upstream.resolve]` overrides before DNS.
//!
//! Both the tunnel and the upstream HTTP client connect through here, so an
//! air-gapped gateway (or a test) that maps a registry name to an internal
//! address gets the same answer on every path.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::debug;

use crate::error::{ProxyError, Refusal};

/// Connects to upstream hosts.
#[derive(Debug, Clone)]
pub struct Resolver {
    overrides: BTreeMap<String, SocketAddr>,
    connect_timeout: Duration,
    guard: DestinationGuard,
}

/// Where no connection may go, whatever a name resolves to: the denied
/// networks and the proxy's own listener (a CONNECT back to ourselves
/// would loop).
#[derive(Debug, Clone, Default)]
pub struct DestinationGuard {
    /// `access.deny_destinations` and friends.
    pub access: Option<pullcache_config::AccessConfig>,
    /// The address the proxy listens on.
    pub listener: Option<SocketAddr>,
}

impl DestinationGuard {
    /// Whether a connection to `addr` is allowed.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        if let Some(access) = &self.access {
            if !access.destination_allowed(ip) {
                return false;
            }
        }
        match self.listener {
            Some(listener) if listener.port() == addr.port() => {
                let own = listener.ip().to_canonical();
                !(ip == own || (own.is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
            }
            _ => true,
        }
    }
}

impl Resolver {
    /// A resolver with the configured overrides (keys are lowercase names).
    /// Overrides are the operator's own choice and bypass `guard`; every
    /// other address is checked against it.
    pub fn new(
        overrides: BTreeMap<String, SocketAddr>,
        connect_timeout: Duration,
        guard: DestinationGuard,
    ) -> Resolver {
        let overrides = overrides
            .into_iter()
            .map(|(name, addr)| (normalise(&name), addr))
            .collect();
        Resolver {
            overrides,
            connect_timeout,
            guard,
        }
    }

    /// The addresses to try for `host:port`: the override if there is one
    /// (its own port wins, since it names where the service really is), an
    /// IP literal as it is, or what DNS says.
    pub async fn addresses(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Some(addr) = self.overrides.get(&normalise(host)) {
            return Ok(vec![*addr]);
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} has no addresses"),
            ));
        }
        Ok(addrs)
    }

    /// Connects to the first address of `host:port` that answers, within
    /// the connect timeout for the whole attempt.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
        let overridden = self.overrides.contains_key(&normalise(
            host.trim_start_matches('[').trim_end_matches(']'),
        ));
        let attempt = async {
            let mut last_error = None;
            let mut denied = None;
            for addr in self.addresses(host, port).await? {
                if !overridden && !self.guard.allows(addr) {
                    denied.get_or_insert(addr);
                    continue;
                }
                match TcpStream::connect(addr).await {
                    Ok(stream) => {
                        // Small writes (TLS handshakes, HTTP heads) must not wait for Nagle.
                        stream.set_nodelay(true)?;
                        debug!(upstream.addr = %addr, "connected");
                        return Ok(stream);
                    }
                    Err(error) => last_error = Some(error),
                }
            }
            match (last_error, denied) {
                (None, Some(addr)) => Err(Attempt::Denied(addr)),
                (error, _) => Err(Attempt::Failed(
                    error.unwrap_or_else(|| io::Error::other("no address to try")),
                )),
            }
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(Attempt::Denied(addr))) => {
                Err(ProxyError::Refused(Refusal::DestinationDenied(addr.ip())))
            }
            Ok(Err(Attempt::Failed(source))) => Err(ProxyError::UpstreamConnect {
                host: host.to_owned(),
                source,
            }),
            Err(_) => Err(ProxyError::UpstreamTimeout {
                host: host.to_owned(),
                after: self.connect_timeout,
            }),
        }
    }
}

/// How one connection attempt ended, before the timeout is applied.
enum Attempt {
    /// Every address was refused by the guard.
    Denied(SocketAddr),
    /// Connecting failed.
    Failed(io::Error),
}

impl From<io::Error> for Attempt {
    fn from(error: io::Error) -> Self {
        Attempt::Failed(error)
    }
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> Resolver {
        let overrides = [(
            "Registry-1.Docker.io".to_owned(),
            "127.0.0.1:5443".parse().unwrap(),
        )]
        .into_iter()
        .collect();
        Resolver::new(
            overrides,
            Duration::from_secs(1),
            DestinationGuard::default(),
        )
    }

    #[tokio::test]
    async fn overrides_win_over_dns_and_keep_their_port() {
        let addrs = resolver()
            .addresses("registry-1.docker.io.", 443)
            .await
            .unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:5443".parse().unwrap()]);
    }

    #[tokio::test]
    async fn ip_literals_are_used_as_they_are() {
        let addrs = resolver().addresses("[::1]", 8443).await.unwrap();
        assert_eq!(addrs, vec!["[::1]:8443".parse().unwrap()]);
    }

    #[tokio::test]
    async fn denied_destinations_are_refused_but_overrides_are_not() {
        let guard = DestinationGuard {
            access: Some(pullcache_config::AccessConfig::default()),
            listener: Some("0.0.0.0:3128".parse().unwrap()),
        };
        let overrides = [("local.test".to_owned(), "127.0.0.1:9".parse().unwrap())]
            .into_iter()
            .collect();
        let resolver = Resolver::new(overrides, Duration::from_secs(1), guard.clone());
        for target in ["169.254.169.254", "127.0.0.1", "[::1]"] {
            let error = resolver.connect(target, 443).await.unwrap_err();
            assert!(
                matches!(error, ProxyError::Refused(Refusal::DestinationDenied(_))),
                "{target}: {error:?}"
            );
        }
        // Port 9 on loopback refuses the connection: it was attempted.
        let error = resolver.connect("local.test", 443).await.unwrap_err();
        assert!(
            matches!(error, ProxyError::UpstreamConnect { .. }),
            "{error:?}"
        );
        assert!(guard.allows("10.9.8.7:443".parse().unwrap()));
        assert!(!DestinationGuard {
            access: None,
            listener: Some("10.0.0.1:3128".parse().unwrap()),
        }
        .allows("10.0.0.1:3128".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_upstream_connect_error() {
        // Bind and drop to find a loopback port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let error = resolver().connect("127.0.0.1", port).await.unwrap_err();
        assert!(
            matches!(error, ProxyError::UpstreamConnect { .. }),
            "{error:?}"
        );
    }
}
