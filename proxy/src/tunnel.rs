//! Tunnels: bytes spliced between the client and the real host, untouched,
//! until both sides are done or the tunnel has been idle too long.
//!
//! Half-close is passed on: when one side finishes sending, the other side's
//! write half is shut down and the opposite direction keeps flowing, which
//! is what TLS close_notify exchanges and HTTP/1.0-style bodies rely on.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::idle::{Activity, Tracked};

/// Buffer per direction; large enough that a bulk transfer moves in few
/// syscalls, small enough that thousands of idle tunnels stay cheap.
const SPLICE_BUFFER: usize = 64 * 1024;

/// Copies bytes both ways between `client` and `upstream` until both
/// directions have finished, an error occurs, or nothing moved for `idle`.
pub async fn splice<C>(client: C, upstream: TcpStream, idle: Duration)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut client = Tracked::new(client, activity.clone());
    let mut upstream = Tracked::new(upstream, activity.clone());
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        SPLICE_BUFFER,
        SPLICE_BUFFER,
    );
    tokio::select! {
        result = copy => match result {
            Ok((up, down)) => debug!(bytes.up = up, bytes.down = down, "tunnel closed"),
            Err(error) => debug!(%error, "tunnel ended with an error"),
        },
        () = activity.idle_for(idle) => info!(idle = ?idle, "tunnel idle for too long; closing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A loopback pair: (our end, the peer's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn bytes_pass_untouched_and_half_close_is_forwarded() {
        let (client_near, mut client_far) = pair().await;
        let (upstream_near, mut upstream_far) = pair().await;
        let task = tokio::spawn(splice(client_near, upstream_near, Duration::from_secs(5)));

        client_far.write_all(b"hello upstream").await.unwrap();
        client_far.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello upstream");

        // The other direction still flows after the client's half-close.
        upstream_far.write_all(b"and back").await.unwrap();
        drop(upstream_far);
        let mut back = Vec::new();
        client_far.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"and back");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("splice ends when both sides are done")
            .unwrap();
    }

    #[tokio::test]
    async fn idle_tunnels_are_closed() {
        let (client_near, mut client_far) = pair().await;
        let (upstream_near, _upstream_far) = pair().await;
        let task = tokio::spawn(splice(
            client_near,
            upstream_near,
            Duration::from_millis(200),
        ));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("an idle tunnel is closed")
            .unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            client_far.read(&mut buf).await.unwrap(),
            0,
            "client sees EOF"
        );
    }
}
