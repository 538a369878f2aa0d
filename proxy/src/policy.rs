//! Who may use the proxy and where a CONNECT may go: intercept, tunnel or
//! refuse.
//!
//! The decision is a pure function of the configuration and the CONNECT
//! target, so it is tested without sockets.

use std::net::IpAddr;

use pullcache_config::Config;

use crate::connect::{ConnectTarget, TargetHost};
use crate::error::Refusal;

/// What to do with an allowed CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Terminate TLS with a leaf of ours and serve the registry API.
    Intercept,
    /// Splice bytes to the real host, untouched.
    Tunnel,
}

/// Whether a client address may use the proxy at all.
pub fn check_client(config: &Config, client: IpAddr) -> Result<(), Refusal> {
    if config.access.client_allowed(client) {
        Ok(())
    } else {
        Err(Refusal::ClientNotAllowed)
    }
}

/// Decides what happens to a CONNECT from an allowed client.
pub fn decide(config: &Config, target: &ConnectTarget) -> Result<Decision, Refusal> {
    if !config.access.port_allowed(target.port) {
        return Err(Refusal::PortNotAllowed(target.port));
    }
    let intercepted = match &target.host {
        TargetHost::Name(name) => config.intercept.intercepts(name),
        TargetHost::Ip(ip) => config.intercept.intercepts(&ip.to_string()),
    };
    if intercepted {
        Ok(Decision::Intercept)
    } else if config.access.tunnel {
        Ok(Decision::Tunnel)
    } else {
        Err(Refusal::TunnelDisabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::from_toml_str(toml, "test", &Default::default()).expect("valid config")
    }

    fn target(s: &str) -> ConnectTarget {
        ConnectTarget::parse(s).unwrap()
    }

    #[test]
    fn intercepts_listed_hosts_and_tunnels_the_rest() {
        let config = config("[intercept]\nhosts = [\"registry-1.docker.io\", \"*.pkg.dev\"]\n");
        assert_eq!(
            decide(&config, &target("registry-1.docker.io:443")),
            Ok(Decision::Intercept)
        );
        assert_eq!(
            decide(&config, &target("europe-docker.pkg.dev:443")),
            Ok(Decision::Intercept)
        );
        assert_eq!(
            decide(&config, &target("example.com:443")),
            Ok(Decision::Tunnel)
        );
    }

    #[test]
    fn refuses_ports_and_disabled_tunnels() {
        let config = config("[access]\nconnect_ports = [443]\ntunnel = false\n");
        assert_eq!(
            decide(&config, &target("registry-1.docker.io:22")),
            Err(Refusal::PortNotAllowed(22))
        );
        assert_eq!(
            decide(&config, &target("example.com:443")),
            Err(Refusal::TunnelDisabled)
        );
        assert_eq!(
            decide(&config, &target("quay.io:443")),
            Ok(Decision::Intercept)
        );
    }

    #[test]
    fn clients_outside_the_list_are_refused() {
        let config = config("[access]\nclients = [\"10.0.0.0/8\"]\n");
        assert_eq!(check_client(&config, "10.1.2.3".parse().unwrap()), Ok(()));
        assert_eq!(
            check_client(&config, "8.8.8.8".parse().unwrap()),
            Err(Refusal::ClientNotAllowed)
        );
        let nobody = self::config("[access]\nclients = []\n");
        assert_eq!(
            check_client(&nobody, "127.0.0.1".parse().unwrap()),
            Err(Refusal::ClientNotAllowed)
        );
    }
}
