//! TLS settings: the crypto provider both sides use, and the server
//! settings for intercepted connections (one per leaf, all sharing one
//! session cache and ticket key so resumption works across connections and
//! hosts).
//!
//! Bulk transfer is what pullcache does, so the cipher suite matters: with
//! AES hardware AES-128-GCM runs about 40% faster than AES-256-GCM (10
//! rounds, not 14) at a security level TLS 1.3 makes mandatory. The server
//! prefers it unless the client's own first choice is ChaCha20-Poly1305,
//! which a client lists first when it has no AES hardware (Go's and
//! BoringSSL's rule, OpenSSL's `PRIORITIZE_CHACHA`); then the client's
//! order wins, since software AES would be slow for it.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{
    ClientHello, ProducesTickets, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{CipherSuite, ServerConfig, SupportedCipherSuite};

/// How many TLS sessions the server remembers for resumption.
const SESSION_CACHE_SIZE: usize = 4096;

/// aws-lc-rs with AES-128-GCM ahead of AES-256-GCM for each TLS version
/// (the provider's own order puts AES-256 first); otherwise unchanged.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // A stable sort keeps the provider's order among equals: TLS 1.3
    // before 1.2, ECDSA before RSA.
    provider.cipher_suites.sort_by_key(|suite| {
        let tls12 = matches!(suite, SupportedCipherSuite::Tls12(_));
        (tls12, bulk_rank(suite.suite()))
    });
    Arc::new(provider)
}

/// Bulk cipher preference: cheapest with AES hardware first.
fn bulk_rank(suite: CipherSuite) -> u8 {
    if is_aes_128_gcm(suite) {
        0
    } else if is_chacha(suite) {
        2
    } else {
        1
    }
}

fn is_aes_128_gcm(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

fn is_chacha(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

/// What every intercepted handshake shares.
pub struct TlsSettings {
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

impl TlsSettings {
    /// Creates the shared session cache and ticket key.
    pub fn new() -> Result<TlsSettings, rustls::Error> {
        Ok(TlsSettings {
            provider: provider(),
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()?,
        })
    }

    /// Whether the client's first choice among the suites we offer is
    /// ChaCha20-Poly1305 (GREASE and suites we lack are skipped).
    pub fn client_prefers_chacha(&self, hello: &ClientHello<'_>) -> bool {
        hello
            .cipher_suites()
            .iter()
            .find(|offered| {
                self.provider
                    .cipher_suites
                    .iter()
                    .any(|ours| ours.suite() == **offered)
            })
            .is_some_and(|first| is_chacha(*first))
    }

    /// A server config presenting `leaf`, offering h2 and HTTP/1.1, TLS 1.2
    /// and 1.3 only, choosing the cipher suite by our order unless
    /// `chacha_first` (see the module docs).
    pub fn server_config(&self, leaf: Arc<CertifiedKey>, chacha_first: bool) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(leaf)));
        config.ignore_client_order = !chacha_first;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = self.sessions.clone();
        config.ticketer = self.ticketer.clone();
        Arc::new(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pullcache_ca::{CertificateAuthority, Constraints, LeafCache, LeafOptions};
    use rustls::server::Acceptor;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use rustls_pki_types::ServerName;

    const HOST: &str = "registry.test";

    /// Runs a handshake in memory between a client offering `offered` (in
    /// that order) and an intercepting server; returns the suite chosen.
    async fn negotiate(offered: &[CipherSuite]) -> CipherSuite {
        let ca = Arc::new(
            CertificateAuthority::generate(&Constraints::Permitted(vec![HOST.into()])).unwrap(),
        );
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let leaves = LeafCache::new(ca, LeafOptions::default()).await.unwrap();
        let leaf = leaves.get(HOST).await.unwrap();

        let mut client_provider = rustls::crypto::aws_lc_rs::default_provider();
        client_provider.cipher_suites = offered
            .iter()
            .map(|want| {
                *client_provider
                    .cipher_suites
                    .iter()
                    .find(|s| s.suite() == *want)
                    .unwrap()
            })
            .collect();
        let client_config = ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client =
            ClientConnection::new(Arc::new(client_config), ServerName::try_from(HOST).unwrap())
                .unwrap();

        let settings = TlsSettings::new().unwrap();
        let mut acceptor = Acceptor::default();
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        acceptor.read_tls(&mut wire.as_slice()).unwrap();
        let accepted = acceptor.accept().unwrap().expect("a whole ClientHello");
        let chacha_first = settings.client_prefers_chacha(&accepted.client_hello());
        let mut server = accepted
            .into_connection(settings.server_config(leaf, chacha_first))
            .unwrap();
        while server.is_handshaking() || client.is_handshaking() {
            let mut to_client = Vec::new();
            server.write_tls(&mut to_client).unwrap();
            client.read_tls(&mut to_client.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            let mut to_server = Vec::new();
            client.write_tls(&mut to_server).unwrap();
            server.read_tls(&mut to_server.as_slice()).unwrap();
            server.process_new_packets().unwrap();
        }
        let chosen = server.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(client.negotiated_cipher_suite().unwrap().suite(), chosen);
        chosen
    }

    #[tokio::test]
    async fn aes_128_gcm_wins_over_a_client_preferring_aes_256() {
        let chosen = negotiate(&[
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            CipherSuite::TLS13_AES_128_GCM_SHA256,
        ])
        .await;
        assert_eq!(chosen, CipherSuite::TLS13_AES_128_GCM_SHA256);
    }

    #[tokio::test]
    async fn a_client_listing_chacha_first_gets_chacha() {
        let chosen = negotiate(&[
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            CipherSuite::TLS13_AES_128_GCM_SHA256,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
        ])
        .await;
        assert_eq!(chosen, CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    }

    #[tokio::test]
    async fn tls12_clients_get_aes_128_gcm_too() {
        let chosen = negotiate(&[
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ])
        .await;
        assert_eq!(chosen, CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    }

    #[test]
    fn aes_128_gcm_leads_each_version_and_nothing_is_lost() {
        let ours: Vec<CipherSuite> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let stock: Vec<CipherSuite> = rustls::crypto::aws_lc_rs::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours.len(), stock.len());
        assert!(stock.iter().all(|suite| ours.contains(suite)));
        assert_eq!(ours[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        let first_tls12 = provider()
            .cipher_suites
            .iter()
            .find(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(|s| s.suite());
        assert_eq!(
            first_tls12,
            Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
        );
        let chacha_13 = ours
            .iter()
            .position(|s| *s == CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        let aes256_13 = ours
            .iter()
            .position(|s| *s == CipherSuite::TLS13_AES_256_GCM_SHA384);
        assert!(aes256_13 < chacha_13);
    }
}
