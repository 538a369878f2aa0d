//! An in-process pool of async clients, for the one measurement that needs
//! more clients than curl processes a 2-core machine can run side by side
//! (100 concurrent downloads). Each client is a task on a runtime of its own
//! (two worker threads named `speed-pool`): TCP to pullcache, `CONNECT
//! host:443`, TLS with tokio-rustls (aws-lc-rs, ALPN `http/1.1`, trusting
//! pullcache's CA), then one `GET` with hyper's HTTP/1.1 client connection
//! (over hyper-util's `TokioIo`), streaming the body through SHA-256.
//! All clients start together; each one's time and digest is returned.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::to_hex;

/// Every client's limit, connection set-up included.
const CLIENT_LIMIT: Duration = Duration::from_secs(900);

/// One client's result.
pub(crate) struct Outcome {
    /// Seconds from its start to its last byte.
    pub(crate) secs: f64,
    pub(crate) bytes: u64,
    pub(crate) hex: String,
}

/// What the pool is told to do.
pub(crate) struct PoolJob<'a> {
    pub(crate) proxy: SocketAddr,
    /// pullcache's CA certificate (PEM).
    pub(crate) ca: &'a Path,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) clients: usize,
}

/// Runs `job.clients` downloads at once. Returns the wall time from the
/// start of the first to the end of the last, and each client's outcome
/// (or error).
pub(crate) fn run(job: &PoolJob<'_>) -> anyhow::Result<(f64, Vec<anyhow::Result<Outcome>>)> {
    if !job.proxy.ip().is_loopback() {
        bail!("refusing to use non-loopback proxy {}", job.proxy);
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(job.ca)
        .with_context(|| format!("cannot read {}", job.ca.display()))?
    {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(tls));
    let name = ServerName::try_from(job.host.to_owned())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("speed-pool")
        .enable_all()
        .build()
        .context("cannot build the client pool's runtime")?;
    let (proxy, host, path) = (job.proxy, job.host.to_owned(), job.path.to_owned());
    let clients = job.clients;
    let (wall, outcomes) = runtime.block_on(async move {
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (connector, name, host, path) =
                    (connector.clone(), name.clone(), host.clone(), path.clone());
                tokio::spawn(tokio::time::timeout(
                    CLIENT_LIMIT,
                    one(proxy, connector, name, host, path),
                ))
            })
            .collect();
        let mut outcomes = Vec::with_capacity(clients);
        for task in tasks {
            outcomes.push(match task.await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(anyhow::anyhow!("timed out after {CLIENT_LIMIT:?}")),
                Err(error) => Err(anyhow::anyhow!("client task failed: {error}")),
            });
        }
        (started.elapsed().as_secs_f64(), outcomes)
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok((wall, outcomes))
}

async fn one(
    proxy: SocketAddr,
    connector: TlsConnector,
    name: ServerName<'static>,
    host: String,
    path: String,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(proxy).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes())
        .await?;
    // The proxy sends nothing after its answer until the client's TLS
    // starts, so reading up to the blank line cannot swallow TLS bytes.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            bail!("the proxy closed or rambled before answering CONNECT");
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line =
        String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or_default())
            .into_owned();
    if status_line.split(' ').nth(1) != Some("200") {
        bail!("CONNECT answered {status_line:?}");
    }
    let tls = connector.connect(name, tcp).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let request = Request::get(path.as_str())
        .header(hyper::header::HOST, host.as_str())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if response.status() != hyper::StatusCode::OK {
        bail!("GET {path} answered {}", response.status());
    }
    let mut body = response.into_body();
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            bytes += data.len() as u64;
            hasher.update(&data);
        }
    }
    Ok(Outcome {
        secs: started.elapsed().as_secs_f64(),
        bytes,
        hex: to_hex(&hasher.finalize()),
    })
}
