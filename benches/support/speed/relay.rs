//! The tunnel's ceiling: the plainest TCP relay, written here. Each
//! connection it accepts is joined to a fresh connection to one target
//! address and bytes are copied both ways through a 1 MiB buffer per
//! direction (tokio's `copy_bidirectional`, as a socat-style relay does),
//! with no request to parse, no policy and no idle tracking, on one worker
//! thread named `speed-relay`.
//!
//! On a machine whose cores are already busy with the client and the
//! server, whatever a relay costs per byte comes out of their share, so a
//! direct download is not a relay's ceiling; this is. The client reaches it
//! as if it were the server (`--resolve`), so the TLS session is end to end
//! with the server, as through pullcache's tunnel.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::support::server::ServerRuntime;

/// Buffer per direction: the size pullcache's tunnel grows its stage to.
const BUFFER: usize = 1024 * 1024;

/// The thread name of the relay's runtime, for its CPU time.
pub(crate) const THREAD_NAME: &str = "speed-relay";

/// The running relay; dropping it stops it.
pub(crate) struct Relay {
    addr: SocketAddr,
    _runtime: ServerRuntime,
}

impl Relay {
    /// Relays connections to a fresh port of 127.0.0.1 to `target`.
    pub(crate) fn start(target: SocketAddr) -> anyhow::Result<Relay> {
        let runtime = ServerRuntime::start(THREAD_NAME)?;
        let addr = runtime.listen(move |mut client| {
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut server,
                    BUFFER,
                    BUFFER,
                )
                .await;
            });
        })?;
        Ok(Relay {
            addr,
            _runtime: runtime,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}
