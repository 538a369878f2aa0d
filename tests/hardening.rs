//! Hostile and careless clients: oversized or overlong requests, too many
//! connections, slow or idle connections, missing proxy credentials,
//! CONNECTs aimed at metadata services or the proxy itself, and TLS that is
//! too old or names a host we do not intercept. Each must get a clear answer
//! (or a closed connection) and never reach an upstream.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::client::{curl, raw_exchange};
use crate::support::reliability::record;
use crate::support::{fetch, raw_request, Fixture, ProxyConfig, TestProxy};

/// Reads until the peer closes the connection, for at most `limit`.
/// Returns whether it closed.
fn closes_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

fn with_extra(extra: &str) -> TestProxy {
    TestProxy::start(
        &ProxyConfig {
            extra: extra.to_owned(),
            ..ProxyConfig::default()
        }
        .render(),
    )
}

#[test]
fn oversized_headers_get_431() {
    let proxy = with_extra("[limits]\nmax_header_bytes = 16384\nmax_headers = 20\n");
    let big = format!(
        "CONNECT registry-1.docker.io:443 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let reply = raw_request(proxy.addr(), big.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 431"), "got {reply:?}");

    let mut many = String::from("CONNECT registry-1.docker.io:443 HTTP/1.1\r\nHost: x\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let reply = raw_request(proxy.addr(), many.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 431"), "got {reply:?}");
    assert!(proxy.wait_for_log("refused malformed request", Duration::from_secs(5)));
    record(
        "Request headers over the size or count limit",
        2,
        "refused 431",
    );
}

#[test]
fn a_body_where_none_belongs_gets_413() {
    let proxy = with_extra("");
    let reply = raw_request(
        proxy.addr(),
        b"CONNECT registry-1.docker.io:443 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert!(reply.starts_with("HTTP/1.1 413"), "got {reply:?}");
    record("A body on CONNECT", 1, "refused 413");
}

#[test]
fn connections_over_the_limits_are_turned_away() {
    let proxy = with_extra("[limits]\nmax_connections_per_client = 2\n");
    // Two connections held open by one client address.
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(proxy.addr()).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let reply = raw_request(proxy.addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 429"), "got {reply:?}");
    drop(held);

    // Once they close, the client is served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reply = String::new();
    while Instant::now() < deadline {
        reply = raw_request(proxy.addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        if reply.starts_with("HTTP/1.1 200") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(reply.starts_with("HTTP/1.1 200"), "got {reply:?}");

    let proxy = with_extra("[limits]\nmax_connections = 1\n");
    let _held = TcpStream::connect(proxy.addr()).expect("connect");
    std::thread::sleep(Duration::from_millis(200));
    let reply = raw_request(proxy.addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 503"), "got {reply:?}");
    assert!(proxy.wait_for_log("connection limit reached", Duration::from_secs(5)));
    record(
        "Connections over the per-client or total limit",
        2,
        "refused 429 (per client) and 503 (total)",
    );
}

#[test]
fn slow_headers_and_idle_connections_are_closed() {
    let proxy = with_extra("[timeouts]\nheader_read = \"1s\"\nkeepalive_idle = \"1s\"\n");

    // Slowloris: a request line and then nothing.
    let mut slow = TcpStream::connect(proxy.addr()).expect("connect");
    slow.write_all(b"CONNECT registry-1.docker.io:443 HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    assert!(
        closes_within(&mut slow, Duration::from_secs(5)),
        "slow headers kept open"
    );

    // A keep-alive connection that goes quiet after one request.
    let (mut idle, head) = raw_exchange(proxy.addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "got {head:?}");
    let started = Instant::now();
    assert!(
        closes_within(&mut idle, Duration::from_secs(5)),
        "idle connection kept open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed before it was idle"
    );
    record(
        "Slow headers (slowloris) and an idle keep-alive connection",
        2,
        "connection closed after the timeout",
    );
}

#[test]
fn a_tls_handshake_that_never_comes_is_cut_off() {
    let proxy = with_extra("[timeouts]\ntls_handshake = \"1s\"\n");
    let (mut tunnel, head) = raw_exchange(
        proxy.addr(),
        b"CONNECT registry-1.docker.io:443 HTTP/1.1\r\nHost: registry-1.docker.io:443\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "got {head:?}");
    // Half a ClientHello, then silence.
    tunnel
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("write");
    let started = Instant::now();
    assert!(
        closes_within(&mut tunnel, Duration::from_secs(5)),
        "a stalled handshake kept open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed before the timeout"
    );
    assert!(proxy.wait_for_log("no TLS ClientHello within", Duration::from_secs(5)));
    record(
        "TLS handshake started and never finished",
        1,
        "connection closed after timeouts.tls_handshake",
    );
}

#[test]
fn metadata_loopback_and_the_proxy_itself_are_never_reached() {
    let fx = Fixture::new();
    let mut config = fx.config();
    config.connect_ports = vec![443, 80];
    let proxy = TestProxy::start(&config.render());
    for target in [
        "169.254.169.254:80",
        "[fd00:ec2::254]:443",
        "127.0.0.1:443",
        // A name that resolves to loopback through the system resolver.
        "localhost:443",
    ] {
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        let reply = raw_request(proxy.addr(), request.as_bytes());
        assert!(reply.starts_with("HTTP/1.1 403"), "{target}: got {reply:?}");
        assert!(
            reply.contains("destination_ip_prohibited"),
            "{target}: got {reply:?}"
        );
    }

    // The proxy's own address (loopback here, so also denied as such).
    let loop_target = format!("127.0.0.1:{}", proxy.addr().port());
    let request = format!("CONNECT {loop_target} HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = raw_request(proxy.addr(), request.as_bytes());
    assert!(
        reply.starts_with("HTTP/1.1 403"),
        "CONNECT to the proxy itself: got {reply:?}"
    );
    assert_eq!(fx.registry.request_count(), 0);
    assert_eq!(fx.tunnelled.request_count(), 0);
    record(
        "CONNECT to cloud metadata, loopback, a name resolving to loopback, the proxy itself",
        5,
        "refused 403 destination_ip_prohibited",
    );
}

#[test]
fn proxy_authentication_when_configured() {
    let fx = Fixture::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users");
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    std::fs::write(&users, format!("alice:{hash}\n")).expect("users file");
    let mut config = fx.config();
    config.extra = String::new();
    let body = config.render().replacen(
        "[access]\n",
        &format!("[access]\nusers_file = {:?}\n", users.display().to_string()),
        1,
    );
    let proxy = TestProxy::start(&body);
    let ca = proxy.ca_cert_path().display().to_string();
    let url = "https://registry-1.docker.io/v2/";

    let anonymous = fetch(&["-x", &proxy.url(), "--cacert", &ca, url]);
    assert_eq!(anonymous.connect_code, 407, "{anonymous:#?}");
    let reply = raw_request(
        proxy.addr(),
        b"CONNECT registry-1.docker.io:443 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(reply.contains("Basic realm=\"pullcache\""), "got {reply:?}");

    let wrong = format!("http://alice:nope@{}", proxy.addr());
    let refused = fetch(&["-x", &wrong, "--cacert", &ca, url]);
    assert_eq!(refused.connect_code, 407, "{refused:#?}");
    assert_eq!(fx.registry.request_count(), 0);

    let right = format!("http://alice:s3cret@{}", proxy.addr());
    let ok = fetch(&["-x", &right, "--cacert", &ca, url]);
    assert_eq!(ok.connect_code, 200, "{ok:#?}");
    assert_eq!(ok.http_code, 200, "{ok:#?}");

    // The admin pages stay open so nodes can fetch ca.crt to bootstrap.
    let health = raw_request(proxy.addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200"), "got {health:?}");
    record("Missing or wrong proxy credentials", 3, "refused 407");
}

#[test]
fn old_tls_and_foreign_sni_are_refused() {
    let fx = Fixture::new();
    let proxy = TestProxy::start(&fx.config().render());
    let ca = proxy.ca_cert_path().display().to_string();

    let old = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        &ca,
        "--tlsv1.0",
        "--tls-max",
        "1.1",
        "https://registry-1.docker.io/v2/",
    ]);
    assert_ne!(old.code(), 0, "TLS 1.1 was accepted: {old:?}");

    // openssl can name an SNI other than the CONNECT host.
    let proxy_arg = proxy.addr().to_string();
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-proxy",
            &proxy_arg,
            "-connect",
            "registry-1.docker.io:443",
            "-servername",
            "evil.example",
            "-CAfile",
            &ca,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("no peer certificate available"),
        "a foreign SNI got a certificate: {text}"
    );
    assert!(
        proxy.wait_for_log("is not an intercepted host", Duration::from_secs(5)),
        "{:#?}",
        proxy.logs()
    );
    assert_eq!(fx.registry.request_count(), 0);
    record(
        "TLS 1.1 client, and an SNI name that is not intercepted",
        2,
        "handshake refused; no certificate minted",
    );
}
