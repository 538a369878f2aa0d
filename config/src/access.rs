//! Who may use the proxy and which ports CONNECT may reach: the `[access]`
//! section, validated, and the checks the server runs on every connection.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::defaults::{DEFAULT_CLIENTS, DEFAULT_CONNECT_PORTS, DEFAULT_TUNNEL};
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

    /// Whether CONNECT may reach `port`.
    pub fn port_allowed(&self, port: u16) -> bool {
        self.connect_ports.contains(&port)
    }

    pub(crate) fn from_raw(raw: RawAccess, problems: &mut Problems) -> AccessConfig {
        let defaults = AccessConfig::default();
        let clients = match raw.clients {
            None => defaults.clients,
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, text)| {
                    let net = parse_client_net(text);
                    if net.is_none() {
                        problems.push(
                            format!("access.clients[{i}]"),
                            format!("{text:?} is not a CIDR or IP address"),
                        );
                    }
                    net
                })
                .collect(),
        };
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
        AccessConfig {
            clients,
            connect_ports,
            tunnel: raw.tunnel.unwrap_or(defaults.tunnel),
        }
    }
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
        }
    }
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
            };
            let mut problems = Problems::default();
            let a = AccessConfig::from_raw(raw, &mut problems);
            assert!(a.clients.is_empty());
            assert_eq!(a.connect_ports, vec![443, 5000]);
            assert!(!a.tunnel);
        }
    }
}
