//! Leaf certificates: minting one for a host, and the in-memory cache that
//! mints each host's leaf once and hands the same `CertifiedKey` to every
//! TLS handshake until it is due for renewal.
//!
//! All leaves of a process share one key pair. Generating a key per host
//! would cost more than the signature and buy nothing: the key never leaves
//! memory, and every leaf already shares the root's fate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::authority::{CertificateAuthority, BACKDATE};
use crate::error::CaError;
use crate::host::Host;

/// Browsers refuse server certificates valid for longer than this (398
/// days, less a day of margin for clock skew).
const MAX_LEAF_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);
/// Renew at most this long before a leaf expires.
const MAX_RENEWAL_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// How leaves are minted and cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafOptions {
    /// How long each leaf is valid (default 7 days; at most 397 days). The
    /// cache re-mints a leaf a quarter of this (at most a day) before it
    /// expires.
    pub validity: Duration,
    /// How many leaves to keep in memory (default 10 000).
    pub max_entries: u64,
}

impl Default for LeafOptions {
    fn default() -> Self {
        LeafOptions {
            validity: Duration::from_secs(7 * 24 * 3600),
            max_entries: 10_000,
        }
    }
}

impl LeafOptions {
    fn check(&self) -> Result<(), CaError> {
        if self.validity < Duration::from_secs(60) {
            return Err(CaError::InvalidOptions(
                "leaf validity must be at least one minute".to_owned(),
            ));
        }
        if self.validity > MAX_LEAF_VALIDITY {
            return Err(CaError::InvalidOptions(
                "leaf validity must be at most 397 days; clients reject longer-lived \
                 server certificates"
                    .to_owned(),
            ));
        }
        if self.max_entries == 0 {
            return Err(CaError::InvalidOptions(
                "max_entries must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }

    /// Cache lifetime: the validity less a margin, so a cached leaf is
    /// never served after (or just before) it expires.
    fn time_to_live(&self) -> Duration {
        self.validity - (self.validity / 4).min(MAX_RENEWAL_MARGIN)
    }
}

/// Mints a leaf certificate for `host` (a DNS name or an IP literal) with
/// `leaf_key`'s public key, signed by `ca`.
///
/// The leaf has the host as its only subjectAltName (a dNSName for a name,
/// an iPAddress for an IP literal), CN = host for DNS names of up to 64
/// characters (no subject at all for IP literals), is valid from
/// an hour ago until `validity` from now (but not past the root's expiry),
/// has EKU serverAuth and key usage digitalSignature, is not a CA, and has a
/// random serial. Refuses hosts the root's name constraints do not permit.
pub fn mint_leaf(
    ca: &CertificateAuthority,
    leaf_key: &KeyPair,
    host: &str,
    validity: Duration,
) -> Result<CertificateDer<'static>, CaError> {
    let host = Host::parse(host)?;
    if !ca.permits_host(&host) {
        return Err(CaError::NotPermitted {
            host: host.to_string(),
        });
    }
    mint(ca, leaf_key, &host, validity)
}

/// [`mint_leaf`] without the name constraint check, so tests can show that
/// clients enforce the constraints embedded in the root.
#[cfg(test)]
pub(crate) fn mint_leaf_unchecked(
    ca: &CertificateAuthority,
    leaf_key: &KeyPair,
    host: &str,
    validity: Duration,
) -> Result<CertificateDer<'static>, CaError> {
    mint(ca, leaf_key, &Host::parse(host)?, validity)
}

fn mint(
    ca: &CertificateAuthority,
    leaf_key: &KeyPair,
    host: &Host,
    validity: Duration,
) -> Result<CertificateDer<'static>, CaError> {
    let now = OffsetDateTime::now_utc();
    if now >= ca.not_after() {
        return Err(CaError::CaExpired {
            not_after: crate::describe::utc(ca.not_after()),
        });
    }
    let validity = time::Duration::try_from(validity)
        .map_err(|_| CaError::InvalidOptions("leaf validity out of range".to_owned()))?;

    let mut params = CertificateParams::default();
    params.not_before = (now - BACKDATE).max(ca.not_before());
    params.not_after = now.saturating_add(validity).min(ca.not_after());
    params.serial_number = Some(crate::random::serial_number()?);
    let mut dn = DistinguishedName::new();
    match host {
        Host::Dns(name) => {
            params.subject_alt_names = vec![SanType::DnsName(name.clone().try_into()?)];
            // RFC 5280 caps a CN at 64 characters; longer names live in the
            // SAN alone, which is all clients look at anyway.
            if name.len() <= 64 {
                dn.push(DnType::CommonName, name.clone());
            }
        }
        // No CN for IP leaves: with no dNSName SAN present, OpenSSL checks a
        // dotted-quad CN against the root's dNSName constraints as if it
        // were a host name, and would reject the leaf.
        Host::Ip(ip) => params.subject_alt_names = vec![SanType::IpAddress(*ip)],
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;

    let cert = params.signed_by(leaf_key, ca.issuer())?;
    Ok(cert.der().clone())
}

/// Mints leaf certificates for hosts on first use and keeps them in memory.
///
/// Cheap to share: wrap it in an `Arc` and call [`get`](Self::get) from any
/// number of tasks.
pub struct LeafCache {
    ca: Arc<CertificateAuthority>,
    leaf_key: Arc<KeyPair>,
    signing_key: Arc<dyn rustls::sign::SigningKey>,
    validity: Duration,
    cache: moka::future::Cache<Host, Arc<CertifiedKey>>,
    minted: Arc<AtomicU64>,
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("ca", &self.ca)
            .field("validity", &self.validity)
            .field("cached", &self.cache.entry_count())
            .field("minted", &self.minted())
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// Generates the process's one ECDSA P-256 leaf key (off the async
    /// threads) and sets up an empty cache.
    pub async fn new(ca: Arc<CertificateAuthority>, options: LeafOptions) -> Result<Self, CaError> {
        options.check()?;
        let leaf_key =
            tokio::task::spawn_blocking(|| KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256))
                .await
                .map_err(|e| CaError::Task(e.to_string()))??;
        let signing_key = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(leaf_key.serialized_der()),
        ))
        .map_err(CaError::LeafKey)?;
        let cache = moka::future::Cache::builder()
            .max_capacity(options.max_entries)
            .time_to_live(options.time_to_live())
            .build();
        Ok(LeafCache {
            ca,
            leaf_key: Arc::new(leaf_key),
            signing_key,
            validity: options.validity,
            cache,
            minted: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Returns the leaf for `host` (a DNS name already validated and
    /// lowercased by the caller, or an IP literal) as a chain of
    /// `[leaf, root]` with the shared leaf key, minting it on first use.
    ///
    /// Concurrent first calls for the same host wait for a single mint,
    /// which runs on tokio's blocking pool. Hosts the root's name
    /// constraints do not permit are refused with
    /// [`CaError::NotPermitted`] before anything is minted.
    pub async fn get(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let host = Host::parse(host)?;
        if !self.ca.permits_host(&host) {
            return Err(CaError::NotPermitted {
                host: host.to_string(),
            });
        }
        let ca = Arc::clone(&self.ca);
        let leaf_key = Arc::clone(&self.leaf_key);
        let signing_key = Arc::clone(&self.signing_key);
        let minted = Arc::clone(&self.minted);
        let validity = self.validity;
        let for_mint = host.clone();
        let init = async move {
            tokio::task::spawn_blocking(move || {
                let leaf = mint(&ca, &leaf_key, &for_mint, validity)?;
                minted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(host = %for_mint, "minted leaf certificate");
                Ok(Arc::new(CertifiedKey::new(
                    vec![leaf, ca.cert_der().clone()],
                    signing_key,
                )))
            })
            .await
            .map_err(|e| CaError::Task(e.to_string()))?
        };
        self.cache
            .try_get_with(host, init)
            .await
            .map_err(CaError::unshare)
    }

    /// How many leaves have been minted so far.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// The root this cache mints from.
    pub fn authority(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::verify;
    use crate::Constraints;

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    fn docker_only() -> CertificateAuthority {
        CertificateAuthority::generate(&Constraints::Permitted(vec!["docker.io".into()])).unwrap()
    }

    #[test]
    fn a_leaf_outside_the_constraints_is_rejected_by_webpki() {
        let ca = docker_only();
        let key = KeyPair::generate().unwrap();

        // The control: inside the constraints the same path verifies.
        let inside = mint_leaf_unchecked(&ca, &key, "registry-1.docker.io", WEEK).unwrap();
        verify(ca.cert_der(), &inside, "registry-1.docker.io").unwrap();

        for host in ["example.com", "evil-docker.io"] {
            let outside = mint_leaf_unchecked(&ca, &key, host, WEEK).unwrap();
            assert_eq!(
                verify(ca.cert_der(), &outside, host),
                Err(webpki::Error::NameConstraintViolation),
                "{host}"
            );
            assert!(matches!(
                mint_leaf(&ca, &key, host, WEEK),
                Err(CaError::NotPermitted { .. })
            ));
        }
    }

    #[test]
    fn an_ip_leaf_from_a_dns_only_root_is_rejected_by_webpki() {
        let ca = docker_only();
        let key = KeyPair::generate().unwrap();
        for ip in ["10.0.0.5", "127.0.0.1", "::1", "fd00::5"] {
            let leaf = mint_leaf_unchecked(&ca, &key, ip, WEEK).unwrap();
            assert_eq!(
                verify(ca.cert_der(), &leaf, ip),
                Err(webpki::Error::NameConstraintViolation),
                "{ip}"
            );
            assert!(matches!(
                mint_leaf(&ca, &key, ip, WEEK),
                Err(CaError::NotPermitted { .. })
            ));
        }
    }

    #[test]
    fn an_ip_outside_the_permitted_subnet_is_rejected_by_webpki() {
        let ca = CertificateAuthority::generate(&Constraints::Permitted(vec![
            "registry.local".into(),
            "10.0.0.0/24".into(),
        ]))
        .unwrap();
        let key = KeyPair::generate().unwrap();
        let inside = mint_leaf_unchecked(&ca, &key, "10.0.0.7", WEEK).unwrap();
        verify(ca.cert_der(), &inside, "10.0.0.7").unwrap();
        // IPv6 has no permitted subnet, so it is excluded wholesale.
        for ip in ["10.0.1.7", "fd00::7"] {
            let outside = mint_leaf_unchecked(&ca, &key, ip, WEEK).unwrap();
            assert_eq!(
                verify(ca.cert_der(), &outside, ip),
                Err(webpki::Error::NameConstraintViolation),
                "{ip}"
            );
        }
    }

    #[test]
    fn options_are_checked() {
        let short = LeafOptions {
            validity: Duration::from_secs(1),
            ..LeafOptions::default()
        };
        assert!(short.check().is_err());
        let long = LeafOptions {
            validity: Duration::from_secs(400 * 24 * 3600),
            ..LeafOptions::default()
        };
        assert!(long.check().is_err());
        let empty = LeafOptions {
            max_entries: 0,
            ..LeafOptions::default()
        };
        assert!(empty.check().is_err());
        let default = LeafOptions::default();
        default.check().unwrap();
        assert_eq!(default.time_to_live(), Duration::from_secs(6 * 24 * 3600));
        let hour = LeafOptions {
            validity: Duration::from_secs(3600),
            ..LeafOptions::default()
        };
        assert_eq!(hour.time_to_live(), Duration::from_secs(45 * 60));
    }
}
