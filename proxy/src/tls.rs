//! The TLS server settings for intercepted connections: one per leaf, all
//! sharing one session cache and ticket key so resumption works across
//! connections and hosts.

use std::sync::Arc;

use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::ServerConfig;

/// How many TLS sessions the server remembers for resumption.
const SESSION_CACHE_SIZE: usize = 4096;

/// What every intercepted handshake shares.
pub struct TlsSettings {
    provider: Arc<rustls::crypto::CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

impl TlsSettings {
    /// Creates the shared session cache and ticket key.
    pub fn new() -> Result<TlsSettings, rustls::Error> {
        Ok(TlsSettings {
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()?,
        })
    }

    /// A server config presenting `leaf`, offering h2 and HTTP/1.1, TLS 1.2
    /// and 1.3 only.
    pub fn server_config(&self, leaf: Arc<CertifiedKey>) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(leaf)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = self.sessions.clone();
        config.ticketer = self.ticketer.clone();
        Arc::new(config)
    }
}
