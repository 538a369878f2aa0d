//! A throwaway certificate authority for the fake upstream registries.
//!
//! It is generated afresh by every test with `rcgen` and only ever written to a
//! temporary directory, so no key material lives in the repository. Its
//! subject deliberately does not contain the word "pullcache": tests tell
//! pullcache's interception leaf from an upstream's own certificate by the
//! issuer curl reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;

/// Common name of every [`TestCa`]; what curl prints as the issuer of an
/// upstream's certificate when it is seen without interception.
pub(crate) const TEST_CA_CN: &str = "e2e throwaway upstream CA";

pub(crate) struct TestCa {
    // Kept alive so `ca.crt` exists for as long as pullcache or curl may read it.
    _dir: TempDir,
    cert_path: PathBuf,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, TEST_CA_CN);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let dir = tempfile::Builder::new()
            .prefix("e2e-test-ca")
            .tempdir()
            .expect("tempdir");
        let cert_path = dir.path().join("ca.crt");
        std::fs::write(&cert_path, cert.pem()).expect("write test ca.crt");
        TestCa {
            _dir: dir,
            cert_path,
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// PEM file of the CA certificate: give it to curl (`--cacert`) or to
    /// pullcache (`upstream.ca_files`).
    pub(crate) fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// A server certificate for `names`, signed by this CA, with its key.
    pub(crate) fn leaf(
        &self,
        names: &[&str],
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("generate leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("leaf params");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone(), self.cert_der.clone()], key)
    }

    /// A rustls server config presenting a leaf for `names`, offering h2 and
    /// http/1.1 so pullcache may pick either towards the upstream.
    pub(crate) fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let (chain, key) = self.leaf(names);
        // An explicit provider, so the test does not depend on which rustls
        // backends cargo's feature unification happens to enable.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server cert");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
