//! Name constraints: turning the operator's list of registries into the
//! X.509 extension of a new root, and reading the extension back from any
//! root so that `permits` and `describe` report what the certificate really
//! says rather than what the configuration hoped for.

use std::fmt;
use std::net::IpAddr;

use rcgen::{CidrSubnet, GeneralSubtree, NameConstraints};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::error::CaError;
use crate::host::{check_dns_name, Host};

/// Which names a newly generated root may sign leaves for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraints {
    /// Only these DNS names (and their subdomains) may appear in leaves; IP
    /// SANs are excluded unless listed. Each entry is a host name
    /// ("registry-1.docker.io"), a constraint base for a wildcard pattern
    /// ("pkg.dev" for "*.pkg.dev"; a leading "*." or "." is stripped), an IP
    /// literal, or an IP network in CIDR notation ("10.0.0.0/8").
    Permitted(Vec<String>),
    /// No name constraints (opt-out; a leaked key could impersonate any site).
    Unconstrained,
}

/// One parsed entry of [`Constraints::Permitted`].
pub(crate) enum Entry {
    Dns(String),
    Ip(CidrSubnet),
}

pub(crate) fn parse_entry(raw: &str) -> Result<Entry, CaError> {
    let invalid = |why: &str| CaError::InvalidConstraint {
        entry: raw.to_owned(),
        why: why.to_owned(),
    };
    let entry = raw.trim();
    if entry.is_empty() {
        return Err(invalid("empty entry"));
    }
    if let Some((addr, prefix)) = entry.split_once('/') {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| invalid("the part before '/' is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| invalid(&format!("the prefix length must be 0..={max}")))?;
        // Host bits set in the base address make the constraint ambiguous to
        // some verifiers, so clear them.
        return Ok(Entry::Ip(
            match CidrSubnet::from_addr_prefix(addr, prefix) {
                CidrSubnet::V4(a, m) => CidrSubnet::V4(mask_bytes(a, m), m),
                CidrSubnet::V6(a, m) => CidrSubnet::V6(mask_bytes(a, m), m),
            },
        ));
    }
    match Host::parse(entry) {
        Ok(Host::Ip(ip)) => {
            let full = if ip.is_ipv4() { 32 } else { 128 };
            return Ok(Entry::Ip(CidrSubnet::from_addr_prefix(ip, full)));
        }
        Ok(Host::Dns(_)) | Err(_) => {}
    }
    let lower = entry.to_ascii_lowercase();
    let base = lower
        .strip_prefix("*.")
        .or_else(|| lower.strip_prefix('.'))
        .unwrap_or(&lower);
    let base = base.strip_suffix('.').unwrap_or(base);
    // An empty DNS base would permit every name, the opposite of intent.
    check_dns_name(base).map_err(invalid)?;
    Ok(Entry::Dns(base.to_owned()))
}

fn mask_bytes<const N: usize>(addr: [u8; N], mask: [u8; N]) -> [u8; N] {
    std::array::from_fn(|i| addr[i] & mask[i])
}

impl Constraints {
    /// The extension for a new root, or `None` when unconstrained.
    pub(crate) fn to_rcgen(&self) -> Result<Option<NameConstraints>, CaError> {
        let entries = match self {
            Constraints::Unconstrained => return Ok(None),
            Constraints::Permitted(entries) => entries,
        };
        if entries.is_empty() {
            // With no permitted DNS subtree, RFC 5280 leaves DNS names
            // unrestricted: an empty list would quietly mean "anything".
            return Err(CaError::InvalidConstraint {
                entry: String::new(),
                why: "the permitted list is empty; list at least one registry host, \
                      or choose Unconstrained explicitly"
                    .to_owned(),
            });
        }
        let mut permitted = Vec::new();
        let (mut has_v4, mut has_v6) = (false, false);
        for raw in entries {
            let subtree = match parse_entry(raw)? {
                Entry::Dns(name) => GeneralSubtree::DnsName(name),
                Entry::Ip(subnet) => {
                    match subnet {
                        CidrSubnet::V4(..) => has_v4 = true,
                        CidrSubnet::V6(..) => has_v6 = true,
                    }
                    GeneralSubtree::IpAddress(subnet)
                }
            };
            if !permitted.contains(&subtree) {
                permitted.push(subtree);
            }
        }
        // A v4 subnet already keeps out every other v4 address, but nothing
        // in RFC 5280 keeps out a family with no permitted subtree at all;
        // exclude it explicitly.
        let mut excluded = Vec::new();
        if !has_v4 {
            excluded.push(GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix(
                [0; 4], 0,
            )));
        }
        if !has_v6 {
            excluded.push(GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(
                [0; 16], 0,
            )));
        }
        Ok(Some(NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: excluded,
        }))
    }
}

/// An iPAddress constraint as encoded: address followed by mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IpSubnet {
    addr: IpAddr,
    mask: Vec<u8>,
}

impl IpSubnet {
    fn from_der(bytes: &[u8]) -> Option<Self> {
        let (addr, mask) = bytes.split_at(bytes.len() / 2);
        let addr = match bytes.len() {
            8 => IpAddr::from(<[u8; 4]>::try_from(addr).ok()?),
            32 => IpAddr::from(<[u8; 16]>::try_from(addr).ok()?),
            _ => return None,
        };
        Some(IpSubnet {
            addr,
            mask: mask.to_vec(),
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip): (Vec<u8>, Vec<u8>) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (n.octets().into(), i.octets().into()),
            (IpAddr::V6(n), IpAddr::V6(i)) => (n.octets().into(), i.octets().into()),
            _ => return false,
        };
        net.iter()
            .zip(&ip)
            .zip(&self.mask)
            .all(|((n, i), m)| n & m == i & m)
    }

    /// The prefix length, if the mask is a contiguous run of leading ones.
    fn prefix(&self) -> Option<u32> {
        let mut ones = 0;
        let mut seen_zero = false;
        for byte in &self.mask {
            for bit in (0..8).rev() {
                if byte >> bit & 1 == 1 {
                    if seen_zero {
                        return None;
                    }
                    ones += 1;
                } else {
                    seen_zero = true;
                }
            }
        }
        Some(ones)
    }
}

impl fmt::Display for IpSubnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix() {
            Some(prefix) => write!(f, "{}/{prefix}", self.addr),
            None => {
                let mask: Vec<String> = self.mask.iter().map(|b| format!("{b:02x}")).collect();
                write!(f, "{} mask {}", self.addr, mask.join(":"))
            }
        }
    }
}

/// One side (permitted or excluded) of a certificate's name constraints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Subtrees {
    pub(crate) dns: Vec<String>,
    pub(crate) ip: Vec<IpSubnet>,
    /// Name forms pullcache does not evaluate, for display only.
    pub(crate) other: Vec<String>,
}

impl Subtrees {
    fn from_x509(subtrees: Option<&Vec<x509_parser::extensions::GeneralSubtree<'_>>>) -> Self {
        let mut out = Subtrees::default();
        for subtree in subtrees.into_iter().flatten() {
            match &subtree.base {
                GeneralName::DNSName(name) => out.dns.push(name.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => match IpSubnet::from_der(bytes) {
                    Some(subnet) => out.ip.push(subnet),
                    None => out
                        .other
                        .push(format!("malformed iPAddress ({} bytes)", bytes.len())),
                },
                other => out.other.push(other.to_string()),
            }
        }
        out
    }
}

/// The name constraints of a root, as read from its certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NameRules {
    /// `None` when the certificate has no name constraints extension.
    pub(crate) extension: Option<ConstraintsExtension>,
}

/// A present name constraints extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConstraintsExtension {
    pub(crate) critical: bool,
    pub(crate) permitted: Subtrees,
    pub(crate) excluded: Subtrees,
}

impl NameRules {
    pub(crate) fn from_x509(cert: &X509Certificate<'_>) -> Result<Self, String> {
        let ext = cert
            .name_constraints()
            .map_err(|e| format!("unreadable name constraints extension: {e}"))?;
        Ok(NameRules {
            extension: ext.map(|ext| ConstraintsExtension {
                critical: ext.critical,
                permitted: Subtrees::from_x509(ext.value.permitted_subtrees.as_ref()),
                excluded: Subtrees::from_x509(ext.value.excluded_subtrees.as_ref()),
            }),
        })
    }

    /// RFC 5280 §4.2.1.10 for the name forms a leaf carries: a name must
    /// match some permitted subtree of its own form, if there are any of
    /// that form, and no excluded one.
    pub(crate) fn permits(&self, host: &Host) -> bool {
        let Some(ext) = &self.extension else {
            return true;
        };
        match host {
            Host::Dns(name) => {
                (ext.permitted.dns.is_empty()
                    || ext.permitted.dns.iter().any(|c| dns_within(name, c)))
                    && !ext.excluded.dns.iter().any(|c| dns_within(name, c))
            }
            Host::Ip(ip) => {
                (ext.permitted.ip.is_empty() || ext.permitted.ip.iter().any(|s| s.contains(*ip)))
                    && !ext.excluded.ip.iter().any(|s| s.contains(*ip))
            }
        }
    }
}

/// Whether `name` lies in the dNSName subtree `base`, with the semantics
/// rustls-webpki applies: "example.com" covers itself and every subdomain
/// (but not "badexample.com"), ".example.com" only the subdomains, and an
/// empty base everything.
fn dns_within(name: &str, base: &str) -> bool {
    let base = base.to_ascii_lowercase();
    let base = base.strip_suffix('.').unwrap_or(&base);
    if base.is_empty() {
        return true;
    }
    if base.starts_with('.') {
        return name.len() > base.len() && name.ends_with(base);
    }
    name == base
        || (name.len() > base.len()
            && name.ends_with(base)
            && name.as_bytes()[name.len() - base.len() - 1] == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_subtree_matching() {
        assert!(dns_within("docker.io", "docker.io"));
        assert!(dns_within("registry-1.docker.io", "docker.io"));
        assert!(!dns_within("evil-docker.io", "docker.io"));
        assert!(!dns_within("docker.io.evil.com", "docker.io"));
        assert!(!dns_within("io", "docker.io"));
        assert!(dns_within("a.example.com", ".example.com"));
        assert!(!dns_within("example.com", ".example.com"));
        assert!(dns_within("anything", ""));
    }

    #[test]
    fn entries_are_normalised() {
        let c = Constraints::Permitted(vec![
            "*.PKG.dev".into(),
            ".gcr.io".into(),
            "quay.io.".into(),
            "quay.io".into(),
            "10.1.2.3/8".into(),
            "[fd00::1]".into(),
        ]);
        let nc = c.to_rcgen().unwrap().unwrap();
        assert_eq!(
            nc.permitted_subtrees,
            vec![
                GeneralSubtree::DnsName("pkg.dev".into()),
                GeneralSubtree::DnsName("gcr.io".into()),
                GeneralSubtree::DnsName("quay.io".into()),
                GeneralSubtree::IpAddress(CidrSubnet::V4([10, 0, 0, 0], [255, 0, 0, 0])),
                GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(
                    "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                    128
                )),
            ]
        );
        // Both families are listed, so neither is blanket-excluded.
        assert!(nc.excluded_subtrees.is_empty());
    }

    #[test]
    fn unlisted_ip_families_are_excluded() {
        let nc = Constraints::Permitted(vec!["docker.io".into(), "10.0.0.5".into()])
            .to_rcgen()
            .unwrap()
            .unwrap();
        assert_eq!(
            nc.excluded_subtrees,
            vec![GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(
                [0; 16], 0
            ))]
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "",
            "*",
            "*.",
            ".",
            "a b",
            "docker.io:443",
            "10.0.0.0/33",
            "::/129",
            "x/8",
        ] {
            let err = Constraints::Permitted(vec![bad.into()]).to_rcgen();
            assert!(
                matches!(err, Err(CaError::InvalidConstraint { .. })),
                "{bad:?} gave {err:?}"
            );
        }
        assert!(matches!(
            Constraints::Permitted(vec![]).to_rcgen(),
            Err(CaError::InvalidConstraint { .. })
        ));
        assert_eq!(Constraints::Unconstrained.to_rcgen().unwrap(), None);
    }

    #[test]
    fn subnet_display_and_membership() {
        let s = IpSubnet::from_der(&[10, 0, 0, 0, 255, 0, 0, 0]).unwrap();
        assert_eq!(s.to_string(), "10.0.0.0/8");
        assert!(s.contains("10.200.1.1".parse().unwrap()));
        assert!(!s.contains("11.0.0.1".parse().unwrap()));
        assert!(!s.contains("::1".parse().unwrap()));
        let all6 = IpSubnet::from_der(&[0; 32]).unwrap();
        assert_eq!(all6.to_string(), "::/0");
        let odd = IpSubnet::from_der(&[10, 0, 0, 0, 255, 0, 255, 0]).unwrap();
        assert_eq!(odd.to_string(), "10.0.0.0 mask ff:00:ff:00");
        assert!(IpSubnet::from_der(&[1, 2, 3]).is_none());
    }
}
