//! The ceiling: a minimal HTTPS file server written here, with nothing but
//! what serving a file over TLS needs. tokio + tokio-rustls with the
//! aws-lc-rs provider (the same TLS stack and provider as pullcache), one
//! worker thread named `speed-files` (like nginx's single worker), and per
//! connection: the TLS handshake, one HTTP/1.1 request head read, a
//! `200` head with `Content-Length`, then the file in 256 KiB reads, each
//! handed to the TLS stream as one large write, then `close_notify` and
//! close (`Connection: close`). `HEAD` gets the head alone. No keep-alive,
//! no ranges, no h2, no logging.
//!
//! Reads are plain blocking `read`s on the async thread: the served files
//! are in the page cache, where a 256 KiB read is a memory copy of tens of
//! microseconds, cheaper than a hop to a blocking pool. The paths it serves
//! are under one root directory and are checked character by character.
//!
//! It is both the hit baseline pullcache should approach and the target
//! host of the tunnel measurement (`bulk.test`).

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::support::server::ServerRuntime;

/// Read size from the file, and the size of each write to the TLS stream.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// The longest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// The thread name of the server's runtime, for its CPU time.
pub(crate) const THREAD_NAME: &str = "speed-files";

/// The running server; dropping it stops it.
pub(crate) struct FileServer {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    _runtime: ServerRuntime,
}

impl FileServer {
    /// Serves the files under `root` with `tls` on a fresh port of 127.0.0.1.
    pub(crate) fn start(root: &Path, tls: Arc<rustls::ServerConfig>) -> anyhow::Result<FileServer> {
        let runtime = ServerRuntime::start(THREAD_NAME)?;
        let acceptor = TlsAcceptor::from(tls);
        let root = Arc::new(root.to_path_buf());
        let connections = Arc::new(AtomicU64::new(0));
        let accepted = connections.clone();
        let addr = runtime.listen(move |tcp| {
            accepted.fetch_add(1, Ordering::Relaxed);
            let (acceptor, root) = (acceptor.clone(), root.clone());
            tokio::spawn(async move {
                let _ = serve(acceptor, tcp, &root).await;
            });
        })?;
        Ok(FileServer {
            addr,
            connections,
            _runtime: runtime,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

async fn serve(acceptor: TlsAcceptor, tcp: TcpStream, root: &Path) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut tls = acceptor.accept(tcp).await?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Ok(());
        }
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let file = match (method, file_for(root, target)) {
        ("GET" | "HEAD", Some(path)) => std::fs::File::open(path).ok(),
        _ => None,
    };
    let Some(mut file) = file else {
        tls.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return tls.shutdown().await;
    };
    let size = file.metadata()?.len();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(response.as_bytes()).await?;
    if method == "GET" {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            let n = file.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            tls.write_all(&chunk[..n]).await?;
        }
    }
    tls.shutdown().await
}

/// The file under `root` a request target names, if it is a plain path of
/// `[A-Za-z0-9._:-]` segments (no `..`, no query).
fn file_for(root: &Path, target: &str) -> Option<PathBuf> {
    let relative = target.strip_prefix('/')?;
    let plain = relative.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    });
    plain.then(|| root.join(relative))
}
