//! pullcache's certificate authority: the root CA that the proxy's clients
//! trust, kept on disk as `ca.crt` and `ca.key`, and the leaf certificates it
//! mints on the fly for the registry hosts whose TLS the proxy terminates.
//!
//! The root carries X.509 name constraints by default, so that a leaked
//! `ca.key` can only impersonate the registries pullcache was set up for
//! rather than every site on the internet. The crate knows nothing of HTTP:
//! it hands out [`rustls::sign::CertifiedKey`]s and leaves serving them to
//! the proxy.
#![deny(missing_docs)]

mod authority;
mod constraints;
mod describe;
mod error;
mod host;
mod leaf;
mod pem;
mod random;
mod store;
#[cfg(test)]
mod test_util;

pub use authority::{CertificateAuthority, CA_CERT_FILE, CA_KEY_FILE};
pub use constraints::Constraints;
pub use describe::{CaDescription, NameConstraintsDescription};
pub use error::CaError;
pub use leaf::{mint_leaf, LeafCache, LeafOptions};

// Both types are shared across the proxy's tasks; losing either bound would
// only surface as a confusing error in another crate.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CertificateAuthority>();
    assert_send_sync::<LeafCache>();
};
