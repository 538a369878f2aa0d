//! Who may use the proxy and which ports CONNECT may reach: the `[access]`
//! section, validated, and the checks the server runs on every connection.

use std::net::IpAddr;

use ipnet::IpNet;

use std::path::PathBuf;

use crate::defaults::{
    DEFAULT_CLIENTS, DEFAULT_CONNECT_PORTS, DEFAULT_DENY_DESTINATIONS, DEFAULT_TUNNEL,
};
use crate::error::Problems;
use crate::raw::RawAccess;

/// The validated `[access]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    /// Networks whose addresses may use the proxy; empty refuses everyone.
    pub clients: Vec<IpNet>,
    /// Ports a CONNECT request may name.
    pub connect_ports: Vec<u16>,
    /// Whether hosts that are not intercepted may be tunnelled at all.
    pub tunnel: bool,
    /// Addresses CONNECT may never reach, whatever name resolves there
    /// (link-local, cloud metadata, loopback). `[upstream.resolve]`
    /// overrides are the operator's own choice and are exempt.
    pub deny_destinations: Vec<IpNet>,
    /// Users allowed to use the proxy (`Proxy-Authorization: Basic`), read
    /// from `access.users_file`; `None` means no proxy authentication.
    pub users: Option<Users>,
}

/// Users and their bcrypt password hashes, as in an `htpasswd -B` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Users {
    /// The file they were read from.
    pub path: PathBuf,
    /// `(user, bcrypt hash)` pairs, in file order.
    pub entries: Vec<(String, String)>,
}

impl Users {
    /// The bcrypt hash for `user`, if listed.
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(name, _)| name == user)
            .map(|(_, hash)| hash.as_str())
    }
}

impl AccessConfig {
    /// Whether a client connecting from `ip` may use the proxy.
    ///
    /// An IPv4-mapped IPv6 address (what a dual-stack listener reports for
    /// an IPv4 client) is checked as the IPv4 address it carries, and only
    /// as that: otherwise allowing `::/0` would silently admit every IPv4
    /// client too.
    pub fn client_allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.clients.iter().any(|net| net.contains(&ip))
    }

    /// Whether CONNECT may reach `ip` (checked on every resolved address).
    pub fn destination_allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !self.deny_destinations.iter().any(|net| net.contains(&ip))
    }

    /// Whether CONNECT may reach `port`.
    pub fn port_allowed(&self, port: u16) -> bool {
        self.connect_ports.contains(&port)
    }

    pub(crate) fn from_raw(raw: RawAccess, problems: &mut Problems) -> AccessConfig {
        let defaults = AccessConfig::default();
        let clients = raw.clients.map_or(defaults.clients, |list| {
            parse_net_list(problems, "access.clients", &list)
        });
        let connect_ports = match raw.connect_ports {
            None => defaults.connect_ports,
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, &port)| match u16::try_from(port) {
                    Ok(port) if port != 0 => Some(port),
                    _ => {
                        problems.push(
                            format!("access.connect_ports[{i}]"),
                            format!("port {port} is not allowed (1-65535)"),
                        );
                        None
                    }
                })
                .collect(),
        };
        let deny_destinations = raw
            .deny_destinations
            .map_or(defaults.deny_destinations, |list| {
                parse_net_list(problems, "access.deny_destinations", &list)
            });
        let users = raw
            .users_file
            .and_then(|path| match read_users(&PathBuf::from(&path)) {
                Ok(users) => Some(users),
                Err(message) => {
                    problems.push("access.users_file", message);
                    None
                }
            });
        AccessConfig {
            clients,
            connect_ports,
            tunnel: raw.tunnel.unwrap_or(defaults.tunnel),
            deny_destinations,
            users,
        }
    }
}

/// Reads an `htpasswd -B` style file: `user:$2y$…` per line; blank lines
/// and `#` comments are skipped. Only bcrypt hashes are accepted, because
/// the older htpasswd schemes (crypt, MD5, SHA-1) are too weak to keep.
fn read_users(path: &PathBuf) -> Result<Users, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {:?}: {e}", path.display().to_string()))?;
    let mut entries: Vec<(String, String)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let where_ = format!("{}, line {}", path.display(), number + 1);
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| format!("{where_}: expected user:hash"))?;
        if user.is_empty() || user.contains(char::is_whitespace) {
            return Err(format!("{where_}: the user name is empty or has spaces"));
        }
        if !is_bcrypt(hash) {
            return Err(format!(
                "{where_}: the hash for {user:?} is not bcrypt (create it with `htpasswd -B`)"
            ));
        }
        if entries.iter().any(|(name, _)| name == user) {
            return Err(format!("{where_}: user {user:?} is listed twice"));
        }
        entries.push((user.to_owned(), hash.to_owned()));
    }
    if entries.is_empty() {
        return Err(format!("{:?} lists no users", path.display().to_string()));
    }
    Ok(Users {
        path: path.clone(),
        entries,
    })
}

/// `$2a$`, `$2b$` or `$2y$`, a two-digit cost, `$`, then 53 characters.
fn is_bcrypt(hash: &str) -> bool {
    let bytes = hash.as_bytes();
    hash.len() == 60
        && (hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
        && bytes[4].is_ascii_digit()
        && bytes[5].is_ascii_digit()
        && bytes[6] == b'$'
        && bytes[7..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'/')
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            clients: DEFAULT_CLIENTS
                .iter()
                .map(|text| parse_client_net(text).expect("DEFAULT_CLIENTS are valid CIDRs"))
                .collect(),
            connect_ports: DEFAULT_CONNECT_PORTS.to_vec(),
            tunnel: DEFAULT_TUNNEL,
            deny_destinations: DEFAULT_DENY_DESTINATIONS
                .iter()
                .map(|text| {
                    parse_client_net(text).expect("DEFAULT_DENY_DESTINATIONS are valid CIDRs")
                })
                .collect(),
            users: None,
        }
    }
}

/// Parses a list of CIDRs or addresses, naming `key[i]` in each problem.
fn parse_net_list(problems: &mut Problems, key: &str, list: &[String]) -> Vec<IpNet> {
    list.iter()
        .enumerate()
        .filter_map(|(i, text)| {
            let net = parse_client_net(text);
            if net.is_none() {
                problems.push(
                    format!("{key}[{i}]"),
                    format!("{text:?} is not a CIDR or IP address"),
                );
            }
            net
        })
        .collect()
}

/// A CIDR, or a bare address meaning just that host. Host bits below the
/// prefix are cleared so the stored network prints the way it behaves.
fn parse_client_net(text: &str) -> Option<IpNet> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    mod users {
        use super::*;
        use std::io::Write;

        const HASH: &str = "$2y$05$abcdefghijklmnopqrstuuXJ6y1YrZKmP1lMv/bG2nBhZ0q7Eb9e6";

        fn file(text: &str) -> tempfile::NamedTempFile {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(text.as_bytes()).unwrap();
            f
        }

        #[test]
        fn reads_bcrypt_lines() {
            let f = file(&format!("# users\nalice:{HASH}\n\nbob:{HASH}\n"));
            let users = read_users(&f.path().to_path_buf()).unwrap();
            assert_eq!(users.entries.len(), 2);
            assert_eq!(users.hash_of("bob"), Some(HASH));
            assert_eq!(users.hash_of("carol"), None);
        }

        #[test]
        fn refuses_weak_or_malformed_lines() {
            for (text, fragment) in [
                ("alice:$apr1$x$y\n", "not bcrypt"),
                ("alice:{SHA}abc=\n", "not bcrypt"),
                ("no colon here\n", "expected user:hash"),
                (&format!(":{HASH}\n") as &str, "user name is empty"),
                (&format!("a:{HASH}\na:{HASH}\n"), "listed twice"),
                ("# only a comment\n", "lists no users"),
            ] {
                let f = file(text);
                let error = read_users(&f.path().to_path_buf()).unwrap_err();
                assert!(error.contains(fragment), "{text:?}: {error}");
            }
        }
    }

    #[test]
    fn metadata_and_link_local_destinations_are_denied_by_default() {
        let access = AccessConfig::default();
        for denied in [
            "169.254.169.254",
            "fd00:ec2::254",
            "127.0.0.1",
            "::1",
            "fe80::1",
            "::ffff:169.254.1.1",
        ] {
            assert!(
                !access.destination_allowed(denied.parse().unwrap()),
                "{denied}"
            );
        }
        for allowed in ["10.0.0.5", "93.184.216.34", "2001:db8::1"] {
            assert!(
                access.destination_allowed(allowed.parse().unwrap()),
                "{allowed}"
            );
        }
    }

    fn access(clients: &[&str]) -> AccessConfig {
        let raw = RawAccess {
            clients: Some(clients.iter().map(|s| s.to_string()).collect()),
            ..RawAccess::default()
        };
        let mut problems = Problems::default();
        let access = AccessConfig::from_raw(raw, &mut problems);
        problems.finish(access).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    mod client_allowed {
        use super::*;

        #[test]
        fn defaults_admit_private_and_loopback_only() {
            let a = AccessConfig::default();
            for allowed in [
                "127.0.0.1",
                "::1",
                "10.1.2.3",
                "172.31.255.255",
                "192.168.1.1",
                "fd00::5",
            ] {
                assert!(a.client_allowed(ip(allowed)), "{allowed}");
            }
            for refused in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "::2"] {
                assert!(!a.client_allowed(ip(refused)), "{refused}");
            }
        }

        #[test]
        fn ipv4_mapped_ipv6_is_checked_as_ipv4() {
            let a = access(&["10.0.0.0/8"]);
            assert!(a.client_allowed(ip("::ffff:10.1.2.3")));
            assert!(!a.client_allowed(ip("::ffff:11.1.2.3")));
        }

        #[test]
        fn ipv6_wide_open_does_not_admit_mapped_ipv4() {
            let a = access(&["::/0"]);
            assert!(a.client_allowed(ip("2001:db8::1")));
            assert!(!a.client_allowed(ip("::ffff:10.1.2.3")));
        }

        #[test]
        fn bare_ip_is_a_single_host() {
            let a = access(&["192.0.2.7", "2001:db8::7"]);
            assert_eq!(a.clients[0].prefix_len(), 32);
            assert_eq!(a.clients[1].prefix_len(), 128);
            assert!(a.client_allowed(ip("192.0.2.7")));
            assert!(!a.client_allowed(ip("192.0.2.8")));
            assert!(a.client_allowed(ip("2001:db8::7")));
        }

        #[test]
        fn host_bits_are_cleared() {
            let a = access(&["10.1.2.3/8"]);
            assert_eq!(a.clients[0].to_string(), "10.0.0.0/8");
            assert!(a.client_allowed(ip("10.200.0.1")));
        }

        #[test]
        fn empty_list_refuses_everyone() {
            let a = access(&[]);
            assert!(!a.client_allowed(ip("127.0.0.1")));
        }
    }

    mod port_allowed {
        use super::*;

        #[test]
        fn only_listed_ports() {
            let a = AccessConfig::default();
            assert!(a.port_allowed(443));
            assert!(!a.port_allowed(80));
            assert!(!a.port_allowed(25));
        }
    }

    mod from_raw {
        use super::*;

        fn problems_for(raw: RawAccess) -> Vec<String> {
            let mut problems = Problems::default();
            let access = AccessConfig::from_raw(raw, &mut problems);
            match problems.finish(access) {
                Ok(_) => vec![],
                Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
            }
        }

        #[test]
        fn bad_clients_are_named_by_index() {
            let raw = RawAccess {
                clients: Some(vec![
                    "10.0.0.0/8".into(),
                    "::1".into(),
                    "10.0.0.0/33".into(),
                    "lan".into(),
                ]),
                ..RawAccess::default()
            };
            assert_eq!(
                problems_for(raw),
                vec![
                    "access.clients[2]: \"10.0.0.0/33\" is not a CIDR or IP address",
                    "access.clients[3]: \"lan\" is not a CIDR or IP address",
                ]
            );
        }

        #[test]
        fn out_of_range_ports_are_named_by_index() {
            let raw = RawAccess {
                connect_ports: Some(vec![0, 443, 65535, 65536, -1]),
                ..RawAccess::default()
            };
            assert_eq!(
                problems_for(raw),
                vec![
                    "access.connect_ports[0]: port 0 is not allowed (1-65535)",
                    "access.connect_ports[3]: port 65536 is not allowed (1-65535)",
                    "access.connect_ports[4]: port -1 is not allowed (1-65535)",
                ]
            );
        }

        #[test]
        fn set_values_replace_defaults() {
            let raw = RawAccess {
                clients: Some(vec![]),
                connect_ports: Some(vec![443, 5000]),
                tunnel: Some(false),
                ..RawAccess::default()
            };
            let mut problems = Problems::default();
            let a = AccessConfig::from_raw(raw, &mut problems);
            assert!(a.clients.is_empty());
            assert_eq!(a.connect_ports, vec![443, 5000]);
            assert!(!a.tunnel);
        }
    }
}
