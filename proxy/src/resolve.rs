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

use crate::error::ProxyError;

/// Connects to upstream hosts.
#[derive(Debug, Clone)]
pub struct Resolver {
    overrides: BTreeMap<String, SocketAddr>,
    connect_timeout: Duration,
}

impl Resolver {
    /// A resolver with the configured overrides (keys are lowercase names).
    pub fn new(overrides: BTreeMap<String, SocketAddr>, connect_timeout: Duration) -> Resolver {
        let overrides = overrides
            .into_iter()
            .map(|(name, addr)| (normalise(&name), addr))
            .collect();
        Resolver {
            overrides,
            connect_timeout,
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
        let attempt = async {
            let mut last_error = None;
            for addr in self.addresses(host, port).await? {
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
            Err(last_error.unwrap_or_else(|| io::Error::other("no address to try")))
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(ProxyError::UpstreamConnect {
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
        Resolver::new(overrides, Duration::from_secs(1))
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
