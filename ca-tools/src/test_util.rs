//! Helpers shared by the unit tests: verifying a leaf the way a rustls
//! client would.

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Verifies `leaf` as a TLS server certificate for `host` issued by the
/// trusted root `root`, with rustls-webpki.
pub(crate) fn verify(
    root: &CertificateDer<'_>,
    leaf: &CertificateDer<'_>,
    host: &str,
) -> Result<(), webpki::Error> {
    let anchors = [webpki::anchor_from_trusted_cert(root)?];
    let cert = webpki::EndEntityCert::try_from(leaf)?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )?;
    let name = ServerName::try_from(host).expect("test host is a valid server name");
    cert.verify_is_valid_for_subject_name(&name)
}
