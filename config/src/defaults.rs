//! The value every knob takes when neither the file nor an override sets it,
//! kept in one place so the docs, `Config::default()` and an empty file agree.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

/// `listen`: every IPv4 interface on the conventional proxy port.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 3128));

/// `data_dir`: where the cache and the generated CA live.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/pullcache";

/// `access.clients`: loopback, the RFC 1918 private ranges and IPv6 unique
/// local addresses, so a freshly started proxy is not an open relay.
pub const DEFAULT_CLIENTS: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];

/// `access.connect_ports`: HTTPS only, so the proxy cannot be used to reach
/// arbitrary services such as SMTP.
pub const DEFAULT_CONNECT_PORTS: &[u16] = &[443];

/// `access.tunnel`: hosts that are not intercepted are passed through.
pub const DEFAULT_TUNNEL: bool = true;

/// `intercept.hosts`: the well-known public registries and the CDNs their
/// blobs are redirected to. A configured list replaces this one entirely.
pub const DEFAULT_INTERCEPT_HOSTS: &[&str] = &[
    "registry-1.docker.io",
    "index.docker.io",
    "production.cloudflare.docker.com",
    "quay.io",
    "cdn.quay.io",
    "cdn01.quay.io",
    "cdn02.quay.io",
    "cdn03.quay.io",
    "ghcr.io",
    "pkg-containers.githubusercontent.com",
    "registry.k8s.io",
    "k8s.gcr.io",
    "gcr.io",
    "*.gcr.io",
    "*.pkg.dev",
    "mcr.microsoft.com",
    "*.data.mcr.microsoft.com",
    "public.ecr.aws",
    "nvcr.io",
];

/// `upstream.connect_timeout`: how long to wait for a TCP connection to an
/// upstream registry.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `timeouts.tls_handshake`: how long a client may take to finish the TLS
/// handshake on an intercepted connection.
pub const DEFAULT_TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// `timeouts.header_read`: how long a client may take to send a request's
/// headers.
pub const DEFAULT_HEADER_READ: Duration = Duration::from_secs(30);

/// `timeouts.tunnel_idle`: a tunnel with no bytes in either direction for
/// this long is closed.
pub const DEFAULT_TUNNEL_IDLE: Duration = Duration::from_secs(5 * 60);

/// `timeouts.shutdown_grace`: on SIGTERM, how long in-flight transfers may
/// run before they are cut off.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// `cache.tag_ttl`: how long a tag → digest answer is served without asking
/// upstream again. Short, because tags move; revalidation is a cheap HEAD.
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(5 * 60);

/// `cache.visibility_ttl`: how long "this repository is public" is believed
/// before it is checked again with an anonymous token request.
pub const DEFAULT_VISIBILITY_TTL: Duration = Duration::from_secs(60 * 60);

/// `cache.upstream_stall`: the longest an upstream may go without sending a
/// byte of a response before the fetch is abandoned.
pub const DEFAULT_UPSTREAM_STALL: Duration = Duration::from_secs(60);

/// `access.deny_destinations`: where CONNECT may never go, whatever a name
/// resolves to: this host (loopback), link-local addresses (where cloud
/// metadata services live, 169.254.169.254 among them), the EC2 IPv6
/// metadata address, and "this network".
pub const DEFAULT_DENY_DESTINATIONS: &[&str] = &[
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "::1/128",
    "fe80::/10",
    "fd00:ec2::254/128",
];

/// `timeouts.keepalive_idle`: a client connection with no bytes either way
/// for this long is closed.
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(90);

/// `limits.max_connections`: client connections open at once, in total.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;

/// `limits.max_connections_per_client`: client connections open at once
/// from one address (a whole cluster behind NAT may share one).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: u32 = 1024;

/// `limits.max_header_bytes`: the request line and headers together.
pub const DEFAULT_MAX_HEADER_BYTES: u32 = 64 * 1024;

/// `limits.max_headers`: header fields in one request.
pub const DEFAULT_MAX_HEADERS: u32 = 100;
