//! Cryptographically secure random bytes for serial numbers and name
//! suffixes, drawn from the same aws-lc-rs generator rustls uses, so the
//! crate needs no random-number crate of its own.

use std::sync::OnceLock;

use rustls::crypto::SecureRandom;

use crate::error::CaError;

fn generator() -> &'static dyn SecureRandom {
    static GENERATOR: OnceLock<&'static dyn SecureRandom> = OnceLock::new();
    *GENERATOR.get_or_init(|| rustls::crypto::aws_lc_rs::default_provider().secure_random)
}

/// Fills `buf` from the system's secure generator.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), CaError> {
    generator().fill(buf).map_err(|_| CaError::Random)
}

/// A fresh 128-bit positive serial number. RFC 5280 asks for unpredictable
/// serials of at most 20 octets; the top bit is cleared so the DER integer
/// stays positive without a padding byte, and a fixed bit keeps its length.
pub(crate) fn serial_number() -> Result<rcgen::SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    fill(&mut bytes)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// `len` random bytes as lowercase hex.
pub(crate) fn hex(len: usize) -> Result<String, CaError> {
    let mut bytes = vec![0u8; len];
    fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
