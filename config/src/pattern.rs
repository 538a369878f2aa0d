//! Host patterns: which CONNECT targets the proxy intercepts, written either
//! as an exact name (or IP literal) or as a leading-wildcard `*.domain`.
//!
//! The grammar is deliberately narrow. Every pattern also becomes a name
//! constraint on the proxy's CA, so a pattern that is broader than intended
//! (`*`, `*.dev`) would let the CA mint certificates for far more of the
//! internet than the operator meant to.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::host::{canonical_host, normalize_host, NameError};

/// One entry of `intercept.hosts`, already normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Matches this one name (or IP literal) only.
    Exact(String),
    /// Matches any name with one or more labels in front of `suffix`, but
    /// not `suffix` itself.
    Wildcard {
        /// The domain after the `*.`, e.g. `pkg.dev`.
        suffix: String,
    },
}

/// Why a string is not a valid host pattern. Each message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// `*` (or `*.`) on its own.
    #[error("{input:?}: a bare \"*\" would intercept every host; write \"*.\" and a domain, e.g. \"*.pkg.dev\"")]
    BareWildcard {
        /// The pattern as written.
        input: String,
    },
    /// `*foo.dev`, `**.dev`: the star is part of a label rather than the
    /// whole of it.
    #[error(
        "{input:?}: a wildcard must be a whole leading label, written \"*.\" (e.g. \"*.pkg.dev\")"
    )]
    PartialLabel {
        /// The pattern as written.
        input: String,
    },
    /// `a.*.dev`, `*.*.dev`: a star anywhere but the first label.
    #[error("{input:?}: a wildcard may only be a leading \"*.\" label")]
    Misplaced {
        /// The pattern as written.
        input: String,
    },
    /// `*.dev`: would cover a whole top-level domain.
    #[error("{input:?}: a wildcard needs at least two labels after \"*.\" (\"*.pkg.dev\", not \"*.dev\")")]
    TooBroad {
        /// The pattern as written.
        input: String,
    },
    /// `*.10.0.0.1`: IP addresses have no subdomains.
    #[error("{input:?}: a wildcard cannot cover an IP address")]
    IpWildcard {
        /// The pattern as written.
        input: String,
    },
    /// The name (or the part after `*.`) is not a valid host name.
    #[error("{input:?}: not a valid host name: {reason}")]
    InvalidName {
        /// The pattern as written.
        input: String,
        /// What is wrong with the name.
        reason: NameError,
    },
}

impl HostPattern {
    /// Parses and normalises a pattern (lowercase, one trailing dot removed).
    pub fn parse(s: &str) -> Result<HostPattern, PatternError> {
        let input = || s.to_owned();
        if !s.contains('*') {
            return canonical_host(s).map(HostPattern::Exact).map_err(|reason| {
                PatternError::InvalidName {
                    input: input(),
                    reason,
                }
            });
        }
        let first_label = s.split('.').next().unwrap_or(s);
        if first_label != "*" {
            return Err(if first_label.contains('*') {
                PatternError::PartialLabel { input: input() }
            } else {
                PatternError::Misplaced { input: input() }
            });
        }
        // The first label is exactly "*", so the pattern is "*" or "*.rest".
        let rest = s.strip_prefix("*.").unwrap_or("");
        if rest.contains('*') {
            return Err(PatternError::Misplaced { input: input() });
        }
        if rest.is_empty() || rest == "." {
            return Err(PatternError::BareWildcard { input: input() });
        }
        let suffix = canonical_host(rest).map_err(|reason| PatternError::InvalidName {
            input: input(),
            reason,
        })?;
        if suffix.parse::<IpAddr>().is_ok() {
            return Err(PatternError::IpWildcard { input: input() });
        }
        if !suffix.contains('.') {
            return Err(PatternError::TooBroad { input: input() });
        }
        Ok(HostPattern::Wildcard { suffix })
    }

    /// Whether `host` (normalised the same way as patterns) matches. Invalid
    /// host names match nothing.
    pub fn matches(&self, host: &str) -> bool {
        normalize_host(host).is_some_and(|host| self.matches_normalized(&host))
    }

    /// Matching for a host already passed through `normalize_host`, so a
    /// list of patterns normalises the host once.
    pub(crate) fn matches_normalized(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Wildcard { suffix } => host
                .strip_suffix(suffix.as_str())
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|front| !front.is_empty()),
        }
    }

    /// The pattern as written, normalised (`*.pkg.dev`, `quay.io`, `::1`).
    pub fn as_str(&self) -> String {
        match self {
            HostPattern::Exact(name) => name.clone(),
            HostPattern::Wildcard { suffix } => format!("*.{suffix}"),
        }
    }

    /// The name an X.509 name constraint for this pattern is built from:
    /// the domain after `*.` for a wildcard, the name itself for an exact
    /// pattern. A DNS constraint on it also permits its subdomains (and, for
    /// a wildcard, the bare domain), which is broader than the pattern but
    /// the narrowest a constraint can express. For an IP literal this is the
    /// address text; see [`HostPattern::ip_addr`].
    pub fn constraint_base(&self) -> &str {
        match self {
            HostPattern::Exact(name) => name,
            HostPattern::Wildcard { suffix } => suffix,
        }
    }

    /// The address, for an exact pattern that is an IP literal; such a
    /// pattern needs an IP-address name constraint rather than a DNS one.
    pub fn ip_addr(&self) -> Option<IpAddr> {
        match self {
            HostPattern::Exact(name) => name.parse().ok(),
            HostPattern::Wildcard { .. } => None,
        }
    }
}

impl FromStr for HostPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostPattern::parse(s)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard { suffix } => write!(f, "*.{suffix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(name: &str) -> HostPattern {
        HostPattern::Exact(name.into())
    }

    fn wildcard(suffix: &str) -> HostPattern {
        HostPattern::Wildcard {
            suffix: suffix.into(),
        }
    }

    mod parse {
        use super::*;

        #[test]
        fn valid_patterns() {
            let cases = [
                ("registry-1.docker.io", exact("registry-1.docker.io")),
                ("Quay.IO.", exact("quay.io")),
                ("localhost", exact("localhost")),
                ("10.0.0.5", exact("10.0.0.5")),
                ("::1", exact("::1")),
                ("[::1]", exact("::1")),
                ("*.pkg.dev", wildcard("pkg.dev")),
                ("*.PKG.dev.", wildcard("pkg.dev")),
                (
                    "*.data.mcr.microsoft.com",
                    wildcard("data.mcr.microsoft.com"),
                ),
            ];
            for (input, expected) in cases {
                assert_eq!(HostPattern::parse(input), Ok(expected), "{input}");
            }
        }

        #[test]
        fn invalid_patterns_get_specific_messages() {
            let cases = [
                ("*", "a bare \"*\""),
                ("*.", "a bare \"*\""),
                ("*.dev", "at least two labels after \"*.\""),
                ("*.localhost.", "at least two labels after \"*.\""),
                ("a.*.dev", "a wildcard may only be a leading \"*.\" label"),
                ("*.*.dev", "a wildcard may only be a leading \"*.\" label"),
                ("a.b*.dev", "a wildcard may only be a leading \"*.\" label"),
                ("*foo.dev", "must be a whole leading label"),
                ("**.dev", "must be a whole leading label"),
                ("foo*.dev", "must be a whole leading label"),
                ("*.10.0.0.1", "cannot cover an IP address"),
                ("", "the name is empty"),
                ("a..dev", "empty label"),
                ("bad_name.io", "contains '_'"),
                ("*.bad_name.io", "contains '_'"),
                ("-a.io", "starts or ends with '-'"),
                ("10.0.0", "all digits"),
            ];
            for (input, fragment) in cases {
                let err = HostPattern::parse(input).expect_err(input);
                let text = err.to_string();
                assert!(text.starts_with(&format!("{input:?}: ")), "{text}");
                assert!(text.contains(fragment), "{input:?} gave {text:?}");
            }
        }

        #[test]
        fn from_str_agrees_with_parse() {
            assert_eq!(
                "*.pkg.dev".parse::<HostPattern>(),
                HostPattern::parse("*.pkg.dev")
            );
        }
    }

    mod matches {
        use super::*;

        #[test]
        fn table() {
            let cases = [
                ("*.pkg.dev", "us-docker.pkg.dev", true),
                ("*.pkg.dev", "a.b.pkg.dev", true),
                ("*.pkg.dev", "US-Docker.PKG.dev.", true),
                ("*.pkg.dev", "pkg.dev", false),
                ("*.pkg.dev", "xpkg.dev", false),
                ("*.pkg.dev", "pkg.dev.evil.com", false),
                ("*.pkg.dev", ".pkg.dev", false),
                ("quay.io", "quay.io", true),
                ("quay.io", "QUAY.io.", true),
                ("quay.io", "cdn.quay.io", false),
                ("quay.io", "quay.io.evil", false),
                ("::1", "[::1]", true),
                ("::1", "0::1", true),
                ("10.0.0.5", "10.0.0.5", true),
                ("10.0.0.5", "10.0.0.50", false),
            ];
            for (pattern, host, expected) in cases {
                let p = HostPattern::parse(pattern).unwrap();
                assert_eq!(p.matches(host), expected, "{pattern} vs {host}");
            }
        }
    }

    mod as_str {
        use super::*;

        #[test]
        fn round_trips_normalised_text() {
            for (input, expected) in [("*.PKG.dev.", "*.pkg.dev"), ("Quay.io", "quay.io")] {
                let p = HostPattern::parse(input).unwrap();
                assert_eq!(p.as_str(), expected);
                assert_eq!(p.to_string(), expected);
                assert_eq!(HostPattern::parse(&p.as_str()), Ok(p));
            }
        }
    }

    mod constraint_base {
        use super::*;

        #[test]
        fn wildcard_drops_the_star_and_exact_is_itself() {
            assert_eq!(wildcard("pkg.dev").constraint_base(), "pkg.dev");
            assert_eq!(exact("quay.io").constraint_base(), "quay.io");
        }
    }

    mod ip_addr {
        use super::*;

        #[test]
        fn only_ip_literals_have_one() {
            assert_eq!(exact("::1").ip_addr(), Some("::1".parse().unwrap()));
            assert_eq!(exact("quay.io").ip_addr(), None);
            assert_eq!(wildcard("pkg.dev").ip_addr(), None);
        }
    }
}
