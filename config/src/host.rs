//! Host-name normalisation shared by intercept patterns, resolve overrides
//! and the proxy's own lookups, so that a name written in the config and the
//! same name arriving in a CONNECT request compare equal.
//!
//! Names are compared in their canonical form: ASCII lowercase, one trailing
//! dot removed, IP literals in their standard textual form. Internationalised
//! names must be written as A-labels (`xn--...`), which is what arrives on
//! the wire anyway.

use std::net::{IpAddr, Ipv6Addr};

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Why a string is not a usable host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing left once the trailing dot is removed.
    #[error("the name is empty")]
    Empty,
    /// Longer than DNS allows.
    #[error("the name is {len} characters long (at most 253 are allowed)")]
    TooLong {
        /// Length after normalisation.
        len: usize,
    },
    /// Two dots in a row, or a leading dot.
    #[error("the name has an empty label")]
    EmptyLabel,
    /// A label longer than DNS allows.
    #[error("label {label:?} is {len} characters long (at most 63 are allowed)")]
    LabelTooLong {
        /// The offending label.
        label: String,
        /// Its length.
        len: usize,
    },
    /// A character outside letters, digits and hyphen.
    #[error("label {label:?} contains {ch:?} (only letters, digits and '-' are allowed)")]
    InvalidChar {
        /// The offending label.
        label: String,
        /// The first character that is not allowed.
        ch: char,
    },
    /// A label that begins or ends with a hyphen.
    #[error("label {label:?} starts or ends with '-'")]
    Hyphen {
        /// The offending label.
        label: String,
    },
    /// A name like `10.0.0` or `1.2.3.4.5`: resolvers and URL parsers treat
    /// such strings as (malformed) addresses, so accepting them as names
    /// would let the config and the client disagree about what was meant.
    #[error(
        "the last label {label:?} is all digits, so it is neither a host name nor an IP address"
    )]
    NumericLastLabel {
        /// The last label.
        label: String,
    },
}

/// The canonical form of `host`, or `None` if it is neither a valid DNS name
/// nor an IP literal.
///
/// DNS names are lowercased and lose one trailing dot; IPv4 and IPv6
/// literals (IPv6 bare or in brackets) are rewritten in standard form.
pub fn normalize_host(host: &str) -> Option<String> {
    canonical_host(host).ok()
}

/// Like [`normalize_host`], but says what is wrong.
pub(crate) fn canonical_host(host: &str) -> Result<String, NameError> {
    if let Some(ip) = ip_literal(host) {
        return Ok(ip.to_string());
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    check_dns_name(&name)?;
    Ok(name)
}

/// Parses `host` as an IP literal, bare or (for IPv6) in brackets as it
/// appears in URLs and CONNECT targets.
pub(crate) fn ip_literal(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    let inner = host.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

fn check_dns_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    for label in name.split('.') {
        check_label(label)?;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NameError::NumericLastLabel {
            label: last.to_owned(),
        });
    }
    Ok(())
}

fn check_label(label: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(NameError::EmptyLabel);
    }
    if let Some(ch) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(NameError::InvalidChar {
            label: label.to_owned(),
            ch,
        });
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(NameError::LabelTooLong {
            label: label.to_owned(),
            len: label.len(),
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(NameError::Hyphen {
            label: label.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    mod normalize_host {
        use super::*;

        #[test]
        fn valid_inputs_are_canonicalised() {
            let cases = [
                ("registry-1.docker.io", "registry-1.docker.io"),
                ("Registry-1.Docker.IO", "registry-1.docker.io"),
                ("quay.io.", "quay.io"),
                ("localhost", "localhost"),
                ("xn--bcher-kva.example", "xn--bcher-kva.example"),
                ("10.0.0.5", "10.0.0.5"),
                ("::1", "::1"),
                ("[::1]", "::1"),
                ("0:0:0:0:0:0:0:1", "::1"),
                ("FE80::1", "fe80::1"),
                ("3com.net", "3com.net"),
            ];
            for (input, expected) in cases {
                assert_eq!(normalize_host(input).as_deref(), Some(expected), "{input}");
            }
        }

        #[test]
        fn a_name_of_exactly_the_limits_is_accepted() {
            let label = "a".repeat(63);
            let name = [label.as_str(); 4].join(".");
            assert_eq!(name.len(), 255);
            assert!(normalize_host(&name[..253]).is_some());
            assert!(normalize_host(&label).is_some());
        }

        #[test]
        fn invalid_inputs_are_refused() {
            let long_label = "a".repeat(64);
            let long_name = ["abcdefghi"; 26].join(".");
            let cases = [
                "",
                ".",
                "quay.io..",
                "a..b",
                ".quay.io",
                "-quay.io",
                "quay-.io",
                "under_score.io",
                "spa ce.io",
                "bücher.example",
                "10.0.0",
                "1.2.3.4.",
                "010.0.0.1",
                "[10.0.0.1]",
                "::1.",
                "*.pkg.dev",
                long_label.as_str(),
                long_name.as_str(),
            ];
            for input in cases {
                assert_eq!(normalize_host(input), None, "{input:?}");
            }
        }
    }

    mod canonical_host {
        use super::*;

        #[test]
        fn errors_name_the_problem() {
            assert_eq!(canonical_host("."), Err(NameError::Empty));
            assert_eq!(canonical_host("a..b"), Err(NameError::EmptyLabel));
            assert_eq!(
                canonical_host("a_b.io"),
                Err(NameError::InvalidChar {
                    label: "a_b".into(),
                    ch: '_'
                })
            );
            assert_eq!(
                canonical_host("a.-b.io"),
                Err(NameError::Hyphen { label: "-b".into() })
            );
            assert_eq!(
                canonical_host("10.0.0"),
                Err(NameError::NumericLastLabel { label: "0".into() })
            );
        }
    }
}
