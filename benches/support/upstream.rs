//! The upstream registry the benchmark downloads from: an in-process HTTPS
//! server (tokio-rustls + hyper via hyper-util's auto server, so h2 or
//! HTTP/1.1 by ALPN) with a throwaway CA and a leaf for
//! `registry-1.docker.io`, both made with `rcgen` at start.
//!
//! It answers `GET /v2/` with `{}` and `GET`/`HEAD` of
//! `/v2/bench/blobs/sha256:<hex>` with the blob's bytes, needs no
//! credentials (so pullcache treats the repository as public) and answers
//! 404 to anything else. Bodies go out as 256 KiB slices of one shared
//! `Bytes`, so serving costs no copies and the upstream is not the
//! bottleneck.
//!
//! It listens twice on 127.0.0.1, once for curl's direct downloads and once
//! for pullcache (the port its `[upstream.resolve]` names), and counts
//! requests per method and path and connections per ALPN protocol on each
//! listener separately. So "the upstream served this blob to pullcache
//! exactly once" can be checked even though the direct baseline downloads
//! the same bytes. Everything runs on a tokio runtime of its own thread, so
//! the benchmark's blocking curl runs cannot starve it.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

use super::blobs::Blob;
use super::{blob_path, REGISTRY_HOST};

/// Size of the body frames handed to hyper.
const CHUNK: usize = 256 * 1024;

/// Which listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// curl's direct downloads (the baseline).
    Direct,
    /// pullcache's requests.
    Pullcache,
}

/// What one listener saw.
#[derive(Default)]
struct Counters {
    /// `(method, path)` → requests.
    requests: Mutex<BTreeMap<(String, String), usize>>,
    /// ALPN protocol (or `none`) → connections.
    alpn: Mutex<BTreeMap<String, usize>>,
}

struct Served {
    bytes: Bytes,
    digest: String,
}

struct State {
    /// By path.
    blobs: HashMap<String, Served>,
    direct: Counters,
    pullcache: Counters,
}

impl State {
    fn counters(&self, side: Side) -> &Counters {
        match side {
            Side::Direct => &self.direct,
            Side::Pullcache => &self.pullcache,
        }
    }
}

pub(crate) struct Upstream {
    direct_addr: SocketAddr,
    pullcache_addr: SocketAddr,
    ca_path: PathBuf,
    state: Arc<State>,
    // Dropping the runtime stops both listeners and every connection.
    runtime: Option<Runtime>,
}

impl Upstream {
    /// Starts serving `blobs`, writing the CA certificate to
    /// `dir/upstream-ca.crt`.
    pub(crate) fn start(dir: &Path, blobs: &[Blob]) -> anyhow::Result<Upstream> {
        let (ca_pem, tls) = tls_config(&[REGISTRY_HOST])?;
        let ca_path = dir.join("upstream-ca.crt");
        std::fs::write(&ca_path, ca_pem)
            .with_context(|| format!("cannot write {}", ca_path.display()))?;
        let acceptor = TlsAcceptor::from(tls);

        let state = Arc::new(State {
            blobs: blobs
                .iter()
                .map(|b| {
                    let served = Served {
                        bytes: b.bytes.clone(),
                        digest: format!("sha256:{}", b.hex),
                    };
                    (blob_path(&b.hex), served)
                })
                .collect(),
            direct: Counters::default(),
            pullcache: Counters::default(),
        });

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-upstream")
            .enable_all()
            .build()
            .context("cannot build the upstream's runtime")?;
        let mut addrs = Vec::new();
        for side in [Side::Direct, Side::Pullcache] {
            let listener = runtime
                .block_on(TcpListener::bind("127.0.0.1:0"))
                .context("cannot bind the upstream on 127.0.0.1")?;
            addrs.push(listener.local_addr()?);
            runtime.spawn(accept_loop(listener, acceptor.clone(), state.clone(), side));
        }
        Ok(Upstream {
            direct_addr: addrs[0],
            pullcache_addr: addrs[1],
            ca_path,
            state,
            runtime: Some(runtime),
        })
    }

    /// Where curl downloads directly.
    pub(crate) fn direct_addr(&self) -> SocketAddr {
        self.direct_addr
    }

    /// Where pullcache is told `registry-1.docker.io` is.
    pub(crate) fn pullcache_addr(&self) -> SocketAddr {
        self.pullcache_addr
    }

    /// PEM file of the throwaway CA that signed the upstream's leaf.
    pub(crate) fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// Requests that arrived on `side`'s listener, by `(method, path)`.
    pub(crate) fn requests(&self, side: Side) -> BTreeMap<(String, String), usize> {
        lock(&self.state.counters(side).requests).clone()
    }

    /// Connections accepted on `side`'s listener, by negotiated ALPN.
    pub(crate) fn connections(&self, side: Side) -> BTreeMap<String, usize> {
        lock(&self.state.counters(side).alpn).clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A throwaway CA (returned as PEM) and a rustls server config presenting a
/// leaf for `names` (the first is also its common name) signed by it,
/// offering h2 and http/1.1.
pub(crate) fn tls_config(names: &[&str]) -> anyhow::Result<(String, Arc<rustls::ServerConfig>)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pullcache bench throwaway upstream CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let ca_der = ca_cert.der().clone();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    leaf_params.distinguished_name = DistinguishedName::new();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca_der];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));

    // An explicit provider, independent of which rustls backends cargo's
    // feature unification enables.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((ca_pem, Arc::new(config)))
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>, side: Side) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Out of file descriptors or similar: back off, don't spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let alpn = tls.get_ref().1.alpn_protocol().map_or_else(
                || "none".to_owned(),
                |p| String::from_utf8_lossy(p).into_owned(),
            );
            *lock(&state.counters(side).alpn).entry(alpn).or_default() += 1;
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, side, &req)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn answer(state: &State, side: Side, req: &Request<Incoming>) -> Response<ChunkBody> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    *lock(&state.counters(side).requests)
        .entry((method.to_string(), path.clone()))
        .or_default() += 1;

    let is_get = method == Method::GET;
    let is_head = method == Method::HEAD;
    if is_get && (path == "/v2/" || path == "/v2") {
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("docker-distribution-api-version", "registry/2.0")
            .body(ChunkBody::new(Bytes::from_static(b"{}")))
            .expect("ping response");
    }
    match state.blobs.get(&path) {
        Some(blob) if is_get || is_head => {
            let body = if is_head {
                // No body for HEAD, but the length it would have. hyper's h2
                // server would otherwise send a body, which no registry does.
                ChunkBody::new(Bytes::new())
            } else {
                ChunkBody::new(blob.bytes.clone())
            };
            Response::builder()
                .status(StatusCode::OK)
                .header("content-length", blob.bytes.len())
                .header("content-type", "application/octet-stream")
                .header("docker-content-digest", blob.digest.as_str())
                .header("docker-distribution-api-version", "registry/2.0")
                .body(body)
                .expect("blob response")
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "application/json")
            .body(ChunkBody::new(Bytes::from_static(
                br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"not found"}]}"#,
            )))
            .expect("404 response"),
    }
}

/// A response body that hands out one shared `Bytes` in [`CHUNK`]-sized
/// slices (reference-counted, never copied).
pub(crate) struct ChunkBody {
    rest: Bytes,
}

impl ChunkBody {
    fn new(bytes: Bytes) -> ChunkBody {
        ChunkBody { rest: bytes }
    }
}

impl hyper::body::Body for ChunkBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.rest.len().min(CHUNK);
        let chunk = self.rest.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}
