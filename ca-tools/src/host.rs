//! The two kinds of host a leaf can be minted for, and the light syntax check
//! that keeps anything else (ports, URLs, wildcards, spaces) out of
//! certificates and out of the leaf cache's keys.

use std::fmt;
use std::net::IpAddr;

use crate::error::CaError;

/// A host a leaf certificate may name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Host {
    /// A DNS name: lowercase, without a trailing dot.
    Dns(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl Host {
    /// Parses a DNS name or an IP literal (IPv6 optionally in brackets).
    pub(crate) fn parse(input: &str) -> Result<Self, CaError> {
        let invalid = |why| CaError::InvalidHost {
            host: input.to_owned(),
            why,
        };
        if let Some(inner) = input.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            return match inner.parse::<IpAddr>() {
                Ok(ip @ IpAddr::V6(_)) => Ok(Host::Ip(ip)),
                _ => Err(invalid("brackets may only enclose an IPv6 address")),
            };
        }
        if let Ok(ip) = input.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let name = input
            .strip_suffix('.')
            .unwrap_or(input)
            .to_ascii_lowercase();
        check_dns_name(&name).map_err(invalid)?;
        Ok(Host::Dns(name))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Dns(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Checks preferred-name-syntax DNS (RFC 1123), tolerating `_` because
/// some registries' internal names use it. Expects lowercase input.
pub(crate) fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("label starts or ends with '-'");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-', '_' and '.' are allowed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Host;

    #[test]
    fn parses_names_and_ip_literals() {
        assert_eq!(
            Host::parse("Registry-1.Docker.io.").unwrap(),
            Host::Dns("registry-1.docker.io".into())
        );
        assert_eq!(
            Host::parse("10.0.0.5").unwrap(),
            Host::Ip("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            Host::parse("[::1]").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        for bad in [
            "",
            "docker.io:443",
            "*.pkg.dev",
            "a..b",
            "-a.b",
            "has space",
            "[10.0.0.1]",
            "ex\u{e4}mple.com",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
