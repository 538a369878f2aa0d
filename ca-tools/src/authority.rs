//! The root CA itself: creating a new one, loading and checking one from
//! disk, saving it safely, and answering what it may sign.
//!
//! Every way of obtaining a [`CertificateAuthority`] ends in the same checks
//! (is it a CA, does the key match, can leaves chain to it), and every fact
//! it reports is read back from the certificate, so a generated CA and a
//! loaded one behave identically.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::{self as pki_pem, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::constraints::{self, Constraints, NameRules};
use crate::describe::{colon_hex, sha256_fingerprint, CaDescription, NameConstraintsDescription};
use crate::error::CaError;
use crate::host::Host;
use crate::{pem, random, store};

/// File name of the root certificate (PEM) inside the CA directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the root's private key (PEM) inside the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// Roughly ten years; long enough that nobody has to re-distribute the root
/// to every client during a deployment's lifetime.
const CA_VALIDITY: time::Duration = time::Duration::days(3652);
/// Certificates start an hour in the past to tolerate clients whose clocks
/// are slightly behind.
pub(crate) const BACKDATE: time::Duration = time::Duration::hours(1);

/// The root CA: certificate + key, loaded from or saved to a directory as
/// `ca.crt` and `ca.key`.
pub struct CertificateAuthority {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    /// Kept in its original encoding so `save` writes back what was loaded.
    key_der: PrivateKeyDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    rules: NameRules,
    description: CaDescription,
}

impl fmt::Debug for CertificateAuthority {
    // Deliberately omits the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.description.subject)
            .field("sha256_fingerprint", &self.description.sha256_fingerprint)
            .finish_non_exhaustive()
    }
}

/// Where the certificate and key came from, for error messages.
struct Origin {
    cert: PathBuf,
    key: PathBuf,
}

impl Origin {
    fn dir(dir: &Path) -> Self {
        Origin {
            cert: dir.join(CA_CERT_FILE),
            key: dir.join(CA_KEY_FILE),
        }
    }

    fn generated() -> Self {
        Origin {
            cert: PathBuf::from("(newly generated) ca.crt"),
            key: PathBuf::from("(newly generated) ca.key"),
        }
    }
}

impl CertificateAuthority {
    /// Creates a new root: ECDSA P-256, valid from an hour ago for ten
    /// years, CA:TRUE with path length 0, key usage keyCertSign + cRLSign, a
    /// random serial, and subject `CN=pullcache root CA <date> <random>,
    /// O=pullcache` so that two installations can be told apart in a trust
    /// store.
    ///
    /// With [`Constraints::Permitted`] the root carries critical X.509 name
    /// constraints: a permitted dNSName subtree per listed name, a permitted
    /// iPAddress subtree per listed IP, and an excluded subtree for each IP
    /// family (0.0.0.0/0, ::/0) that has no listed IP, so that a leaked key
    /// cannot mint certificates for other sites or for arbitrary addresses.
    pub fn generate(constraints: &Constraints) -> Result<Self, CaError> {
        let name_constraints = constraints.to_rcgen()?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = OffsetDateTime::now_utc();

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!(
                "pullcache root CA {:04}-{:02}-{:02} {}",
                now.year(),
                u8::from(now.month()),
                now.day(),
                random::hex(3)?
            ),
        );
        dn.push(DnType::OrganizationName, "pullcache");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random::serial_number()?);
        params.name_constraints = name_constraints;

        let cert = params.self_signed(&key)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Self::from_parts(cert.der().clone(), key_der, &Origin::generated())
    }

    /// Loads `dir/ca.crt` and `dir/ca.key`, checking that the certificate is
    /// a CA, that the key belongs to it, and that leaves issued from it will
    /// chain to it. Errors name the file and the problem.
    ///
    /// Accepts any single CA certificate with an ECDSA (P-256, P-384,
    /// P-521), Ed25519 or RSA key in PKCS#8, SEC1 or PKCS#1 PEM, so an
    /// operator may bring their own root.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let origin = Origin::dir(dir);
        let cert_pem = fs::read(&origin.cert).map_err(|e| CaError::io("read", &origin.cert, e))?;
        let key_pem = fs::read(&origin.key).map_err(|e| CaError::io("read", &origin.key, e))?;
        let cert_der = parse_cert_pem(&origin.cert, &cert_pem)?;
        let key_der = parse_key_pem(&origin.key, &key_pem)?;
        warn_if_key_exposed(&origin.key);

        let ca = Self::from_parts(cert_der, key_der, &origin)?;
        if OffsetDateTime::now_utc() > ca.not_after {
            tracing::warn!(
                path = %origin.cert.display(),
                "the CA certificate has expired; clients will reject every leaf it signs"
            );
        }
        tracing::debug!(
            path = %origin.cert.display(),
            fingerprint = %ca.description.sha256_fingerprint,
            "loaded CA"
        );
        Ok(ca)
    }

    /// Writes `dir/ca.crt` (mode 0644) and `dir/ca.key` (mode 0600 from
    /// creation on), each through a synced temporary file renamed into
    /// place, then syncs `dir`. Creates `dir` with mode 0700 if missing.
    ///
    /// Without `overwrite`, refuses with [`CaError::AlreadyExists`] if either
    /// file exists, and nothing is written.
    pub fn save(&self, dir: &Path, overwrite: bool) -> Result<(), CaError> {
        store::ensure_dir(dir)?;
        if !overwrite {
            for name in [CA_KEY_FILE, CA_CERT_FILE] {
                let path = dir.join(name);
                if store::exists(&path)? {
                    return Err(CaError::AlreadyExists { path });
                }
            }
        }
        // The key goes first: whoever wins the race for `ca.key` owns the
        // directory, and a loser stops before touching `ca.crt`.
        let key_pem = pem::encode(
            pem::private_key_label(&self.key_der),
            self.key_der.secret_der(),
        );
        store::write_file(dir, CA_KEY_FILE, key_pem.as_bytes(), 0o600, overwrite)?;
        drop(key_pem);
        if let Err(e) = store::write_file(
            dir,
            CA_CERT_FILE,
            self.cert_pem.as_bytes(),
            0o644,
            overwrite,
        ) {
            if !overwrite {
                // The key was created by this call; without its certificate
                // it would only make the directory look half-initialised.
                let _ = fs::remove_file(dir.join(CA_KEY_FILE));
            }
            return Err(e);
        }
        store::sync_dir(dir)
    }

    /// Loads the CA in `dir` if `ca.crt` exists there, otherwise generates
    /// one and saves it. Returns the CA and whether it was created.
    ///
    /// If only one of the two files exists, refuses with
    /// [`CaError::Incomplete`] and touches nothing. An existing CA is used
    /// as it is even if `constraints` differ; the difference is logged. If
    /// another process creates the CA at the same moment, both end up using
    /// the one that reached the disk first.
    ///
    /// Like [`load`](Self::load) and [`save`](Self::save) this does blocking
    /// file I/O (and may wait up to a second for a concurrent creator); from
    /// async code, call it through `tokio::task::spawn_blocking`.
    pub fn load_or_create(dir: &Path, constraints: &Constraints) -> Result<(Self, bool), CaError> {
        // Serialise creators (threads or processes) on a lock file, so none
        // of them can see the half-written state of another's save.
        let _lock = lock_dir(dir)?;
        if let Some(ca) = Self::load_existing(dir)? {
            ca.warn_if_constraints_differ(dir, constraints);
            return Ok((ca, false));
        }
        let ca = Self::generate(constraints)?;
        match ca.save(dir, false) {
            Ok(()) => {
                tracing::info!(
                    dir = %dir.display(),
                    fingerprint = %ca.description.sha256_fingerprint,
                    "created a new CA; clients must trust {} to use the proxy",
                    dir.join(CA_CERT_FILE).display()
                );
                Ok((ca, true))
            }
            Err(CaError::AlreadyExists { path }) => {
                // Another process created the CA between our check and our
                // save. It writes the key first and the certificate right
                // after; give it a moment, then use its CA.
                for _ in 0..50 {
                    if store::exists(&dir.join(CA_CERT_FILE))?
                        && store::exists(&dir.join(CA_KEY_FILE))?
                    {
                        break;
                    }
                    std::thread::sleep(StdDuration::from_millis(20));
                }
                match Self::load_existing(dir)? {
                    Some(ca) => Ok((ca, false)),
                    None => Err(CaError::AlreadyExists { path }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `Ok(None)` if neither file exists.
    fn load_existing(dir: &Path) -> Result<Option<Self>, CaError> {
        let origin = Origin::dir(dir);
        match (store::exists(&origin.cert)?, store::exists(&origin.key)?) {
            (true, true) => Self::load(dir).map(Some),
            (false, false) => Ok(None),
            (true, false) => Err(CaError::Incomplete {
                present: origin.cert,
                missing: origin.key,
            }),
            (false, true) => Err(CaError::Incomplete {
                present: origin.key,
                missing: origin.cert,
            }),
        }
    }

    fn warn_if_constraints_differ(&self, dir: &Path, wanted: &Constraints) {
        match (wanted, &self.rules.extension) {
            (Constraints::Unconstrained, Some(_)) => tracing::warn!(
                dir = %dir.display(),
                "the existing CA has name constraints although none are configured; \
                 leaves outside them will be refused until the CA is regenerated"
            ),
            (Constraints::Permitted(_), None) => tracing::warn!(
                dir = %dir.display(),
                "the existing CA has no name constraints: if its key leaks it can \
                 impersonate any site; regenerate it to add them"
            ),
            (Constraints::Permitted(entries), Some(_)) => {
                for entry in entries {
                    let host = match constraints::parse_entry(entry) {
                        Ok(constraints::Entry::Dns(name)) => Host::Dns(name),
                        Ok(constraints::Entry::Ip(subnet)) => Host::Ip(match subnet {
                            rcgen::CidrSubnet::V4(addr, _) => addr.into(),
                            rcgen::CidrSubnet::V6(addr, _) => addr.into(),
                        }),
                        Err(_) => continue,
                    };
                    if !self.rules.permits(&host) {
                        tracing::warn!(
                            dir = %dir.display(),
                            entry = %entry,
                            "the existing CA's name constraints do not cover this configured \
                             name; leaves for it will be refused until the CA is regenerated"
                        );
                    }
                }
            }
            (Constraints::Unconstrained, None) => {}
        }
    }

    /// The common end of `generate` and `load`.
    fn from_parts(
        cert_der: CertificateDer<'static>,
        key_der: PrivateKeyDer<'static>,
        origin: &Origin,
    ) -> Result<Self, CaError> {
        let bad_cert = |why: String| CaError::BadCertificate {
            path: origin.cert.clone(),
            why,
        };
        let not_a_ca = |why: &str| CaError::NotACa {
            path: origin.cert.clone(),
            why: why.to_owned(),
        };
        let (rest, x509) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| bad_cert(e.to_string()))?;
        if !rest.is_empty() {
            return Err(bad_cert("trailing data after the certificate".to_owned()));
        }

        match x509.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => return Err(not_a_ca("basicConstraints does not say CA:TRUE")),
            Err(e) => return Err(bad_cert(format!("unreadable basicConstraints: {e}"))),
        }
        match x509.key_usage() {
            Ok(Some(ku)) if !ku.value.key_cert_sign() => {
                return Err(not_a_ca("keyUsage does not include keyCertSign"))
            }
            Ok(_) => {}
            Err(e) => return Err(bad_cert(format!("unreadable keyUsage: {e}"))),
        }

        // rcgen's message names the problem, never the key bytes.
        let key = KeyPair::try_from(&key_der).map_err(|e| CaError::BadKey {
            path: origin.key.clone(),
            why: format!(
                "{e} (expected an unencrypted ECDSA P-256/P-384/P-521, Ed25519 or RSA key)"
            ),
        })?;
        if key.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::KeyMismatch {
                cert: origin.cert.clone(),
                key: origin.key.clone(),
            });
        }

        let unsupported = |why: String| CaError::UnsupportedCa {
            path: origin.cert.clone(),
            why,
        };
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| unsupported(e.to_string()))?;
        // Clients find a leaf's issuer by comparing names byte for byte.
        // rcgen re-encodes the subject, which can differ for unusual names
        // (repeated attributes), so issue a throwaway certificate and check.
        let probe = CertificateParams::default().signed_by(issuer.key(), &issuer)?;
        let (_, probe) = x509_parser::parse_x509_certificate(probe.der())
            .map_err(|e| unsupported(format!("a test certificate did not parse: {e}")))?;
        if probe.issuer().as_raw() != x509.subject().as_raw() {
            return Err(unsupported(
                "its subject name cannot be reproduced exactly in the certificates it \
                 issues (repeated or unusual attributes), so clients could not chain them to it"
                    .to_owned(),
            ));
        }

        let time = |asn1: x509_parser::time::ASN1Time| {
            OffsetDateTime::from_unix_timestamp(asn1.timestamp())
                .map_err(|e| bad_cert(format!("validity out of range: {e}")))
        };
        let not_before = time(x509.validity().not_before)?;
        let not_after = time(x509.validity().not_after)?;
        let rules = NameRules::from_x509(&x509).map_err(bad_cert)?;

        let description = CaDescription {
            subject: x509.subject().to_string(),
            serial: colon_hex(x509.raw_serial()),
            not_before,
            not_after,
            sha256_fingerprint: sha256_fingerprint(&cert_der),
            name_constraints: NameConstraintsDescription::from_rules(&rules),
        };
        let cert_pem = pem::encode("CERTIFICATE", &cert_der);
        drop(x509);
        Ok(CertificateAuthority {
            cert_der,
            cert_pem,
            key_der,
            issuer,
            not_before,
            not_after,
            rules,
            description,
        })
    }

    /// The root certificate in PEM, for distribution to clients.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root certificate in DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Subject, serial, validity, SHA-256 fingerprint and name constraints,
    /// as read from the certificate. Its `Display` is the text of
    /// `pullcache ca show`.
    pub fn describe(&self) -> CaDescription {
        self.description.clone()
    }

    /// Whether the root's name constraints allow a leaf for `host`: a DNS
    /// name must equal or be a subdomain of a permitted dNSName (when there
    /// are any) and match no excluded one; an IP literal must lie in a
    /// permitted iPAddress subnet (when there are any) and in no excluded
    /// one. Always true for a root without name constraints, and always
    /// false for a string that is neither a DNS name nor an IP literal.
    ///
    /// Constraints on other name forms (directoryName, URI, e-mail) are
    /// shown by [`describe`](Self::describe) but not evaluated here.
    pub fn permits(&self, host: &str) -> bool {
        Host::parse(host).is_ok_and(|host| self.rules.permits(&host))
    }

    pub(crate) fn permits_host(&self, host: &Host) -> bool {
        self.rules.permits(host)
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    pub(crate) fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    pub(crate) fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}

fn parse_cert_pem(path: &Path, bytes: &[u8]) -> Result<CertificateDer<'static>, CaError> {
    let bad = |what: String| CaError::BadPem {
        path: path.to_owned(),
        what,
    };
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(bytes) {
        certs.push(item.map_err(|e| bad(format!("not valid PEM: {e}")))?);
    }
    match certs.len() {
        1 => Ok(certs.remove(0)),
        0 => Err(bad(
            "no \"BEGIN CERTIFICATE\" block found (expected the root CA certificate in PEM form)"
                .to_owned(),
        )),
        n => Err(bad(format!(
            "holds {n} certificates; expected only the root CA certificate"
        ))),
    }
}

fn parse_key_pem(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, CaError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| CaError::BadPem {
        path: path.to_owned(),
        // The parser's own messages may quote the file; this one holds a
        // secret, so describe the problem in our own words.
        what: match e {
            pki_pem::Error::NoItemsFound => "no \"BEGIN PRIVATE KEY\", \"BEGIN EC PRIVATE KEY\" \
                 or \"BEGIN RSA PRIVATE KEY\" block found (encrypted keys are not supported)"
                .to_owned(),
            pki_pem::Error::MissingSectionEnd { .. } => {
                "a PEM block is missing its END line".to_owned()
            }
            pki_pem::Error::IllegalSectionStart { .. } => "malformed PEM BEGIN line".to_owned(),
            pki_pem::Error::Base64Decode(_) => "corrupt base64 inside a PEM block".to_owned(),
            _ => "unreadable PEM".to_owned(),
        },
    })
}

/// A root key readable by other users is a standing invitation; say so, but
/// do not refuse to start over it.
fn warn_if_key_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "the CA private key is accessible to other users; run chmod 600 on it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Takes an exclusive lock on `dir/.lock` (creating `dir` with mode 0700
/// if needed); released when the returned file is dropped.
fn lock_dir(dir: &Path) -> Result<std::fs::File, CaError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| CaError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create", dir))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("open", &path))?;
    file.lock().map_err(io("lock", &path))?;
    Ok(file)
}
