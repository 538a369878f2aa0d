//! Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`), validated
//! strictly enough that the hex part can safely name a file.
//!
//! The OCI grammar allows other algorithms and upper-case or base64-style
//! encodings; we accept only the two registered algorithms in lowercase hex
//! and pass anything else through uncached.

use std::fmt;

/// A registered digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the one every registry uses.
    Sha256,
    /// SHA-512, registered by the OCI image spec.
    Sha512,
}

impl Algorithm {
    /// The name used in digests and directory names.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a string is not a digest we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `algorithm:` prefix.
    #[error("a digest is algorithm:hex")]
    NoAlgorithm,
    /// An algorithm other than sha256 or sha512.
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The hex part has the wrong length or characters.
    #[error("the encoded part must be {0} lowercase hex characters")]
    BadHex(usize),
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (algorithm, hex) = s.split_once(':').ok_or(DigestError::NoAlgorithm)?;
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(other.to_owned())),
        };
        let valid = hex.len() == algorithm.hex_len()
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(DigestError::BadHex(algorithm.hex_len()));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// Builds a digest from raw hash output.
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        use std::fmt::Write;
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(hex, "{b:02x}");
        }
        debug_assert_eq!(hex.len(), algorithm.hex_len());
        Digest { algorithm, hex }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex encoding (safe as a file name).
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl std::str::FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_sha256_and_sha512() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        let long = "a".repeat(128);
        assert_eq!(
            Digest::parse(&format!("sha512:{long}"))
                .unwrap()
                .algorithm(),
            Algorithm::Sha512
        );
    }

    #[test]
    fn refuses_anything_that_could_not_name_a_file_safely() {
        let upper = HEX.to_uppercase();
        let cases = [
            HEX.to_owned(),
            format!("sha256:{upper}"),
            format!("sha256:{}", &HEX[1..]),
            format!("sha256:{HEX}0"),
            format!("sha256:../../{}", &HEX[6..]),
            format!("sha256:{}/x", &HEX[2..]),
            format!("md5:{HEX}"),
            format!("sha256+b64:{HEX}"),
            format!("sha512:{HEX}"),
            "sha256:".to_owned(),
            String::new(),
        ];
        for case in cases {
            assert!(Digest::parse(&case).is_err(), "{case:?} was accepted");
        }
    }
}
