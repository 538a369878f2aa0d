//! PEM encoding. rustls-pki-types only decodes PEM, and a loaded CA must be
//! written back (and shown) in a canonical form regardless of how its file
//! was laid out, so the few lines of base64 live here.

use rustls_pki_types::PrivateKeyDer;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Wraps `der` in a PEM block with the given label (RFC 7468: standard
/// base64, 64-column lines).
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = match *chunk {
            [a, b, c] => u32::from_be_bytes([0, a, b, c]),
            [a, b] => u32::from_be_bytes([0, a, b, 0]),
            [a] => u32::from_be_bytes([0, a, 0, 0]),
            _ => unreachable!("chunks(3) yields one to three bytes"),
        };
        let sextets = [n >> 18, n >> 12, n >> 6, n].map(|s| ALPHABET[(s & 0x3f) as usize] as char);
        let kept = chunk.len() + 1;
        b64.extend(&sextets[..kept]);
        b64.extend(std::iter::repeat_n('=', 4 - kept));
    }

    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // Base64 output is ASCII, so slicing at byte offsets is safe.
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// The PEM label matching the encoding of a private key, so a SEC1 or PKCS#1
/// key loaded from disk is written back under the label its bytes deserve.
pub(crate) fn private_key_label(key: &PrivateKeyDer<'_>) -> &'static str {
    match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    use super::encode;

    #[test]
    fn known_vectors() {
        let pem = encode("X", b"foobar");
        assert_eq!(pem, "-----BEGIN X-----\nZm9vYmFy\n-----END X-----\n");
        assert!(encode("X", b"fooba").contains("\nZm9vYmE=\n"));
        assert!(encode("X", b"foob").contains("\nZm9vYg==\n"));
        assert_eq!(encode("X", b""), "-----BEGIN X-----\n-----END X-----\n");
    }

    #[test]
    fn round_trips_through_the_decoder_at_every_length() {
        for len in 0..200usize {
            let der: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let pem = encode("CERTIFICATE", &der);
            assert!(pem.lines().all(|l| l.len() <= 64), "line too long at {len}");
            if len == 0 {
                continue;
            }
            let decoded = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(decoded.as_ref(), der.as_slice(), "length {len}");
        }
    }
}
