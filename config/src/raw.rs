//! The configuration file exactly as written: serde structs that refuse
//! unknown keys but otherwise accept any value of the right TOML type.
//!
//! Values stay strings (and ports stay wide integers) so that validation,
//! not serde, words the error messages and can report every bad value at
//! once rather than only the first one serde trips over.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file. A missing key or section means "use the default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `listen`: socket address to accept clients on.
    pub listen: Option<String>,
    /// `data_dir`: where the cache and the CA live.
    pub data_dir: Option<String>,
    /// `[access]`
    #[serde(default)]
    pub access: RawAccess,
    /// `[intercept]`
    #[serde(default)]
    pub intercept: RawIntercept,
    /// `[upstream]`
    #[serde(default)]
    pub upstream: RawUpstream,
    /// `[timeouts]`
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// `[cache]`
    #[serde(default)]
    pub cache: RawCache,
    /// `[limits]`
    #[serde(default)]
    pub limits: RawLimits,
}

/// The `[access]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    /// `clients`: CIDRs or bare IPs that may use the proxy.
    pub clients: Option<Vec<String>>,
    /// `connect_ports`: wider than `u16` so 0 and 65536 reach validation
    /// and get a proper message.
    pub connect_ports: Option<Vec<i64>>,
    /// `tunnel`: whether non-intercepted hosts may be tunnelled.
    pub tunnel: Option<bool>,
    /// `deny_destinations`: CIDRs CONNECT may never reach.
    pub deny_destinations: Option<Vec<String>>,
    /// `users_file`: an htpasswd-style file of bcrypt hashes; enables proxy
    /// authentication.
    pub users_file: Option<String>,
}

/// The `[intercept]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntercept {
    /// `hosts`: patterns to intercept; an empty list is not the same as a
    /// missing one, which means the default list.
    pub hosts: Option<Vec<String>>,
}

/// The `[upstream]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// `ca_files`: extra PEM roots for upstream TLS.
    pub ca_files: Option<Vec<String>>,
    /// `connect_timeout`: a humantime duration.
    pub connect_timeout: Option<String>,
    /// `[upstream.resolve]`: host name to socket address.
    pub resolve: Option<BTreeMap<String, String>>,
}

/// The `[timeouts]` section; every value is a humantime duration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// `tls_handshake`
    pub tls_handshake: Option<String>,
    /// `header_read`
    pub header_read: Option<String>,
    /// `tunnel_idle`
    pub tunnel_idle: Option<String>,
    /// `shutdown_grace`
    pub shutdown_grace: Option<String>,
    /// `keepalive_idle`
    pub keepalive_idle: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    mod deserialize {
        use super::*;

        #[test]
        fn empty_text_is_all_defaults() {
            let raw: RawConfig = toml::from_str("").unwrap();
            assert_eq!(raw, RawConfig::default());
        }

        #[test]
        fn empty_list_is_kept_distinct_from_missing() {
            let raw: RawConfig = toml::from_str("[intercept]\nhosts = []\n").unwrap();
            assert_eq!(raw.intercept.hosts, Some(vec![]));
        }

        #[test]
        fn out_of_range_ports_survive_to_validation() {
            let raw: RawConfig =
                toml::from_str("[access]\nconnect_ports = [0, 70000, -1]\n").unwrap();
            assert_eq!(raw.access.connect_ports, Some(vec![0, 70000, -1]));
        }

        #[test]
        fn unknown_key_in_section_is_refused() {
            let err = toml::from_str::<RawConfig>("[timeouts]\nidle = \"5m\"\n").unwrap_err();
            assert!(err.to_string().contains("idle"), "{err}");
        }
    }
}

/// The `[cache]` section; every value is a humantime duration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// `tag_ttl`
    pub tag_ttl: Option<String>,
    /// `visibility_ttl`
    pub visibility_ttl: Option<String>,
    /// `upstream_stall`
    pub upstream_stall: Option<String>,
}

/// The `[limits]` section; wide integers so that out-of-range values reach
/// validation and get a proper message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// `max_connections`
    pub max_connections: Option<i64>,
    /// `max_connections_per_client`
    pub max_connections_per_client: Option<i64>,
    /// `max_header_bytes`
    pub max_header_bytes: Option<i64>,
    /// `max_headers`
    pub max_headers: Option<i64>,
}
