//! What `pullcache ca show` prints: a root's identity, validity, fingerprint
//! and name constraints, all read back from the certificate itself so that a
//! loaded CA describes itself truthfully.

use std::fmt;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::constraints::{NameRules, Subtrees};

/// A summary of a root CA certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaDescription {
    /// The subject distinguished name, e.g. `CN=pullcache root CA ..., O=pullcache`.
    pub subject: String,
    /// The serial number, colon-separated upper-case hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the certificate's DER, colon-separated upper-case hex, as
    /// browsers and `openssl x509 -fingerprint -sha256` show it.
    pub sha256_fingerprint: String,
    /// The name constraints extension, or `None` if the root has none.
    pub name_constraints: Option<NameConstraintsDescription>,
}

/// The name constraints of a root, as strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameConstraintsDescription {
    /// Whether the extension is marked critical.
    pub critical: bool,
    /// Permitted dNSName subtrees.
    pub permitted_dns: Vec<String>,
    /// Permitted iPAddress subtrees, in CIDR notation.
    pub permitted_ip: Vec<String>,
    /// Permitted subtrees of other name forms (not evaluated by pullcache).
    pub permitted_other: Vec<String>,
    /// Excluded dNSName subtrees.
    pub excluded_dns: Vec<String>,
    /// Excluded iPAddress subtrees, in CIDR notation.
    pub excluded_ip: Vec<String>,
    /// Excluded subtrees of other name forms (not evaluated by pullcache).
    pub excluded_other: Vec<String>,
}

impl NameConstraintsDescription {
    pub(crate) fn from_rules(rules: &NameRules) -> Option<Self> {
        let ext = rules.extension.as_ref()?;
        let ips = |s: &Subtrees| s.ip.iter().map(ToString::to_string).collect();
        Some(NameConstraintsDescription {
            critical: ext.critical,
            permitted_dns: ext.permitted.dns.clone(),
            permitted_ip: ips(&ext.permitted),
            permitted_other: ext.permitted.other.clone(),
            excluded_dns: ext.excluded.dns.clone(),
            excluded_ip: ips(&ext.excluded),
            excluded_other: ext.excluded.other.clone(),
        })
    }
}

/// Colon-separated upper-case hex, the customary rendering of fingerprints
/// and serial numbers.
pub(crate) fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn sha256_fingerprint(der: &[u8]) -> String {
    colon_hex(&Sha256::digest(der))
}

/// `2025-11-22 13:05:00 UTC`, independent of the `time` crate's optional
/// formatting feature.
pub(crate) fn utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

impl fmt::Display for CaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = OffsetDateTime::now_utc();
        let status = if now > self.not_after {
            "  (EXPIRED)"
        } else if now < self.not_before {
            "  (NOT YET VALID)"
        } else {
            ""
        };
        writeln!(f, "Subject:             {}", self.subject)?;
        writeln!(f, "Serial:              {}", self.serial)?;
        writeln!(f, "Not before:          {}", utc(self.not_before))?;
        writeln!(f, "Not after:           {}{status}", utc(self.not_after))?;
        writeln!(f, "SHA-256 fingerprint: {}", self.sha256_fingerprint)?;
        match &self.name_constraints {
            None => write!(
                f,
                "Name constraints:    none (this CA can sign certificates for any site)"
            ),
            Some(nc) => {
                let critical = if nc.critical {
                    "critical"
                } else {
                    "NOT critical (clients that do not understand them may ignore them)"
                };
                writeln!(f, "Name constraints:    {critical}")?;
                writeln!(f, "  Permitted DNS:     {}", list(&nc.permitted_dns))?;
                writeln!(f, "  Permitted IP:      {}", list(&nc.permitted_ip))?;
                if !nc.permitted_other.is_empty() {
                    writeln!(f, "  Permitted other:   {}", list(&nc.permitted_other))?;
                }
                writeln!(f, "  Excluded DNS:      {}", list(&nc.excluded_dns))?;
                write!(f, "  Excluded IP:       {}", list(&nc.excluded_ip))?;
                if !nc.excluded_other.is_empty() {
                    write!(f, "\n  Excluded other:    {}", list(&nc.excluded_other))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_hex() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(utc(t), "2023-11-14 22:13:20 UTC");
        assert_eq!(colon_hex(&[0x0a, 0xff, 0x10]), "0A:FF:10");
        assert_eq!(sha256_fingerprint(b"").len(), 32 * 3 - 1);
    }
}
