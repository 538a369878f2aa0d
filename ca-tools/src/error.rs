//! The crate's single error type. Messages are written for the operator who
//! has to fix the problem: they say what went wrong and with which file, and
//! never include key material.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong while creating, loading, saving or using the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A file system operation failed.
    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        /// What was being attempted ("read", "create directory", ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A file is not the PEM it should be.
    #[error("{}: {what}", .path.display())]
    BadPem {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },

    /// The certificate file holds PEM, but not a certificate pullcache can parse.
    #[error("{}: not a valid X.509 certificate: {why}", .path.display())]
    BadCertificate {
        /// The offending file.
        path: PathBuf,
        /// The parser's complaint.
        why: String,
    },

    /// The key file holds PEM, but not a private key pullcache can use.
    #[error("{}: unusable private key: {why}", .path.display())]
    BadKey {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it (never the key itself).
        why: String,
    },

    /// The private key does not belong to the certificate.
    #[error(
        "the private key in {} does not match the certificate in {}; \
         restore the matching pair, or move both away to create a new CA",
        .key.display(), .cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },

    /// The certificate cannot sign other certificates.
    #[error("{}: not a CA certificate ({why})", .path.display())]
    NotACa {
        /// The certificate file.
        path: PathBuf,
        /// Which property is missing.
        why: String,
    },

    /// The certificate is a CA, but one pullcache cannot issue from faithfully.
    #[error("{}: cannot issue certificates from this CA: {why}", .path.display())]
    UnsupportedCa {
        /// The certificate file.
        path: PathBuf,
        /// Why not.
        why: String,
    },

    /// Saving would overwrite an existing file.
    #[error("{} already exists; refusing to overwrite it", .path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },

    /// Only one of `ca.crt` and `ca.key` is present.
    #[error(
        "{} exists but {} does not; refusing to guess: restore the missing file, \
         or move the other one away to create a new CA",
        .present.display(), .missing.display()
    )]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },

    /// The CA's name constraints do not allow a certificate for this host.
    #[error("the CA's name constraints do not permit a certificate for {host:?}")]
    NotPermitted {
        /// The host that was asked for.
        host: String,
    },

    /// The host is neither a DNS name nor an IP literal.
    #[error("{host:?} is not a valid host name or IP address: {why}")]
    InvalidHost {
        /// The host that was asked for.
        host: String,
        /// What is wrong with it.
        why: &'static str,
    },

    /// An entry of [`Constraints::Permitted`](crate::Constraints::Permitted) is unusable.
    #[error("invalid name constraint {entry:?}: {why}")]
    InvalidConstraint {
        /// The offending entry.
        entry: String,
        /// What is wrong with it.
        why: String,
    },

    /// [`LeafOptions`](crate::LeafOptions) are out of range.
    #[error("invalid leaf options: {0}")]
    InvalidOptions(String),

    /// The root has expired, so no leaf it signs would be accepted.
    #[error("the CA certificate expired at {not_after}; create a new CA")]
    CaExpired {
        /// When it expired.
        not_after: String,
    },

    /// rcgen failed to generate a key or certificate.
    #[error("could not generate a key or certificate: {0}")]
    Generate(#[from] rcgen::Error),

    /// rustls refused the leaf key.
    #[error("rustls cannot use the leaf key: {0}")]
    LeafKey(#[source] rustls::Error),

    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,

    /// A background minting task panicked or was cancelled.
    #[error("certificate minting task failed: {0}")]
    Task(String),

    /// An error shared by several callers waiting for the same leaf.
    #[error(transparent)]
    Shared(Arc<CaError>),
}

impl CaError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        CaError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Unwraps errors shared between concurrent callers where possible, so
    /// callers can match on the variant they care about.
    pub(crate) fn unshare(shared: Arc<CaError>) -> Self {
        Arc::try_unwrap(shared).unwrap_or_else(CaError::Shared)
    }
}
