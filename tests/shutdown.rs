//! SIGTERM: pullcache stops accepting at once, lets open connections drain for
//! at most `timeouts.shutdown_grace`, and exits 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::client::raw_exchange;
use crate::support::{Fixture, ProxyConfig, TestProxy, TUNNELLED_HOST};

/// Whether `GET /healthz` is answered with 200 within `limit`. Any failure
/// (refused, reset, silence) counts as "not serving".
fn healthz_ok(addr: SocketAddr, limit: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, limit) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(limit));
    let request = b"GET /healthz HTTP/1.1\r\nHost: pullcache\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

#[test]
fn sigterm_stops_accepting_and_exits_zero_within_the_grace() {
    let fx = Fixture::new();
    let config = ProxyConfig {
        extra: "[timeouts]\nshutdown_grace = \"2s\"\n".to_owned(),
        ..fx.config()
    };
    let mut proxy = TestProxy::start(&config.render());
    let addr = proxy.addr();

    // An open tunnel: a connection the drain has to deal with.
    let connect =
        format!("CONNECT {TUNNELLED_HOST}:443 HTTP/1.1\r\nHost: {TUNNELLED_HOST}:443\r\n\r\n");
    let (_tunnel, head) = raw_exchange(addr, connect.as_bytes());
    assert!(head.starts_with("HTTP/1.1 200"), "CONNECT answer: {head:?}");
    assert!(
        healthz_ok(addr, Duration::from_secs(2)),
        "not serving before SIGTERM"
    );

    let signalled = Instant::now();
    proxy.send_sigterm();

    // New connections stop being served well before the grace runs out.
    loop {
        if !healthz_ok(addr, Duration::from_millis(300)) {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(1500),
            "still serving /healthz 1.5 s after SIGTERM"
        );
        thread::sleep(Duration::from_millis(25));
    }

    // 2 s of grace plus a margin for process teardown.
    let status = proxy.wait_exit(Duration::from_secs(5));
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running {:?} after SIGTERM with a 2 s grace; log: {:#?}",
            signalled.elapsed(),
            proxy.logs()
        )
    });
    assert!(
        status.success(),
        "exit status {status}; log: {:#?}",
        proxy.logs()
    );
}
