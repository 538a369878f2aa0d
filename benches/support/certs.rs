//! Certificates for the benchmarks' servers, made at run time with
//! `rcgen`: one throwaway CA per run, and leaves signed by it for whatever
//! names a server answers to. A leaf comes both as PEM files (for nginx
//! and curl) and as a rustls server config (for the in-process servers,
//! always with the aws-lc-rs provider, whatever cargo's feature unification
//! enables).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA that exists for one run.
pub(crate) struct TestCa {
    pem_path: PathBuf,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key.
pub(crate) struct Leaf {
    /// `leaf.pem`: the leaf then the CA, for nginx's `ssl_certificate`.
    pub(crate) chain_path: PathBuf,
    /// `leaf.key`: the PKCS#8 key, for nginx's `ssl_certificate_key`.
    pub(crate) key_path: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl TestCa {
    /// Creates the CA and writes its certificate to `dir/<label>-ca.crt`.
    pub(crate) fn new(dir: &Path, label: &str) -> anyhow::Result<TestCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("pullcache benchmark {label} CA"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let pem_path = dir.join(format!("{label}-ca.crt"));
        std::fs::write(&pem_path, cert.pem())
            .with_context(|| format!("cannot write {}", pem_path.display()))?;
        Ok(TestCa {
            pem_path,
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM), for `--cacert` and `ca_files`.
    pub(crate) fn pem_path(&self) -> &Path {
        &self.pem_path
    }

    /// A leaf for `names` (the first is also its CN), written to
    /// `dir/<label>.pem` and `dir/<label>.key`.
    pub(crate) fn leaf(&self, dir: &Path, label: &str, names: &[String]) -> anyhow::Result<Leaf> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("leaf", String::as_str),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain_path = dir.join(format!("{label}.pem"));
        let key_path = dir.join(format!("{label}.key"));
        let ca_pem = std::fs::read_to_string(&self.pem_path)?;
        std::fs::write(&chain_path, format!("{}{ca_pem}", cert.pem()))
            .with_context(|| format!("cannot write {}", chain_path.display()))?;
        std::fs::write(&key_path, key.serialize_pem())
            .with_context(|| format!("cannot write {}", key_path.display()))?;
        Ok(Leaf {
            chain_path,
            key_path,
            chain: vec![cert.der().clone(), self.der.clone()],
            key_der: key.serialize_der(),
        })
    }
}

impl Leaf {
    /// A rustls server config presenting this leaf and offering `alpn`,
    /// TLS 1.2 and 1.3, with the aws-lc-rs provider.
    pub(crate) fn server_config(
        &self,
        alpn: &[&[u8]],
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}
