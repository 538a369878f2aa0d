//! The soak test's upstream: one in-process HTTPS server (tokio-rustls +
//! hyper's auto server, h2 or HTTP/1.1 by ALPN) on its own runtime thread,
//! listening twice on 127.0.0.1 with one leaf for both names it plays:
//!
//! - the registry `registry-1.docker.io`, for pullcache only: `GET /v2/`
//!   answers `{}` (no credentials, so pullcache treats `soak` as public),
//!   `GET`/`HEAD /v2/soak/blobs/sha256:<hex>` serves any blob of the
//!   [`Catalogue`], regenerated from its seed as it streams;
//! - the site `tunnel.test`, reached by the clients through pullcache's
//!   tunnel: `GET /tunnel/<seed>/<size>` answers the seed's bytes.
//!
//! Each listener counts its connections (accepted, still open, by ALPN) and
//! the registry counts requests per method and path, so the soak can check
//! that pullcache fetched every blob exactly once and closed every tunnel.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

use super::{lock, parse_tunnel_path, BlobSpec, Catalogue, REPOSITORY, TUNNEL_HOST};
use crate::support::blobs::SeededBytes;
use crate::support::upstream::tls_config;
use crate::support::REGISTRY_HOST;

/// Size of the body frames handed to hyper (a multiple of 8, as
/// [`SeededBytes`] needs).
const CHUNK: usize = 256 * 1024;

/// Which listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Site {
    /// The registry, for pullcache's fetches.
    Registry,
    /// The tunnel target, for the clients' tunnelled requests.
    Tunnel,
}

/// Requests for one path, by method.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PathCount {
    pub(crate) get: u64,
    pub(crate) head: u64,
    pub(crate) other: u64,
}

/// What one listener saw.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicI64,
    requests: AtomicU64,
    alpn: Mutex<BTreeMap<String, u64>>,
}

struct State {
    catalogue: Arc<Catalogue>,
    /// Registry requests by path (the tunnel site's paths are all distinct
    /// and not kept).
    paths: Mutex<HashMap<String, PathCount>>,
    registry: Counters,
    tunnel: Counters,
}

impl State {
    fn counters(&self, site: Site) -> &Counters {
        match site {
            Site::Registry => &self.registry,
            Site::Tunnel => &self.tunnel,
        }
    }
}

/// Connection counts of one listener at one moment.
#[derive(Clone, Debug)]
pub(crate) struct Connections {
    pub(crate) accepted: u64,
    pub(crate) open: i64,
    pub(crate) requests: u64,
    pub(crate) alpn: BTreeMap<String, u64>,
}

pub(crate) struct SoakUpstream {
    registry_addr: SocketAddr,
    tunnel_addr: SocketAddr,
    ca_path: PathBuf,
    state: Arc<State>,
    // Dropping the runtime stops both listeners and every connection.
    runtime: Option<Runtime>,
}

impl SoakUpstream {
    /// Starts serving the blobs of `catalogue`, writing the CA certificate
    /// to `dir/upstream-ca.crt`.
    pub(crate) fn start(dir: &Path, catalogue: Arc<Catalogue>) -> anyhow::Result<SoakUpstream> {
        let (ca_pem, tls) = tls_config(&[REGISTRY_HOST, TUNNEL_HOST])?;
        let ca_path = dir.join("upstream-ca.crt");
        std::fs::write(&ca_path, ca_pem)
            .with_context(|| format!("cannot write {}", ca_path.display()))?;
        let acceptor = TlsAcceptor::from(tls);
        let state = Arc::new(State {
            catalogue,
            paths: Mutex::default(),
            registry: Counters::default(),
            tunnel: Counters::default(),
        });
        // One worker: the upstream's work is light (generating and
        // encrypting the miss blobs) and the machine has two cores to share
        // with pullcache and the clients.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("soak-upstream")
            .enable_all()
            .build()
            .context("cannot build the upstream's runtime")?;
        let mut addrs = Vec::new();
        for site in [Site::Registry, Site::Tunnel] {
            let listener = runtime
                .block_on(TcpListener::bind("127.0.0.1:0"))
                .context("cannot bind the upstream on 127.0.0.1")?;
            addrs.push(listener.local_addr()?);
            runtime.spawn(accept_loop(listener, acceptor.clone(), state.clone(), site));
        }
        Ok(SoakUpstream {
            registry_addr: addrs[0],
            tunnel_addr: addrs[1],
            ca_path,
            state,
            runtime: Some(runtime),
        })
    }

    /// Where pullcache is told `registry-1.docker.io` is.
    pub(crate) fn registry_addr(&self) -> SocketAddr {
        self.registry_addr
    }

    /// Where pullcache is told `tunnel.test` is.
    pub(crate) fn tunnel_addr(&self) -> SocketAddr {
        self.tunnel_addr
    }

    /// PEM file of the throwaway CA that signed the upstream's leaf.
    pub(crate) fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// Registry requests for `path`.
    pub(crate) fn path_count(&self, path: &str) -> PathCount {
        lock(&self.state.paths)
            .get(path)
            .copied()
            .unwrap_or_default()
    }

    /// Every registry path requested, with its counts.
    pub(crate) fn paths(&self) -> HashMap<String, PathCount> {
        lock(&self.state.paths).clone()
    }

    pub(crate) fn connections(&self, site: Site) -> Connections {
        let counters = self.state.counters(site);
        Connections {
            accepted: counters.accepted.load(Ordering::SeqCst),
            open: counters.open.load(Ordering::SeqCst),
            requests: counters.requests.load(Ordering::SeqCst),
            alpn: lock(&counters.alpn).clone(),
        }
    }
}

impl Drop for SoakUpstream {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Decrements a listener's open-connection count when its task ends,
/// however it ends.
struct OpenGuard<'a>(&'a AtomicI64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>, site: Site) {
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
        let counters = state.counters(site);
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        counters.open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let _open = OpenGuard(&state.counters(site).open);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let alpn = tls.get_ref().1.alpn_protocol().map_or_else(
                || "none".to_owned(),
                |p| String::from_utf8_lossy(p).into_owned(),
            );
            *lock(&state.counters(site).alpn).entry(alpn).or_default() += 1;
            let service_state = state.clone();
            let service = service_fn(move |req| {
                let state = service_state.clone();
                async move { Ok::<_, Infallible>(answer(&state, site, &req)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn answer(state: &State, site: Site, req: &Request<Incoming>) -> Response<SeededBody> {
    state.counters(site).requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path();
    let method = req.method();
    match site {
        Site::Registry => {
            {
                let mut paths = lock(&state.paths);
                let count = paths.entry(path.to_owned()).or_default();
                match *method {
                    Method::GET => count.get += 1,
                    Method::HEAD => count.head += 1,
                    _ => count.other += 1,
                }
            }
            registry_answer(state, method, path)
        }
        Site::Tunnel => match parse_tunnel_path(path) {
            Some((seed, size)) if method == Method::GET => Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/octet-stream")
                .header("content-length", size)
                .body(SeededBody::new(BlobSpec { seed, size }))
                .expect("tunnel response"),
            _ => not_found(),
        },
    }
}

fn registry_answer(state: &State, method: &Method, path: &str) -> Response<SeededBody> {
    let is_get = method == Method::GET;
    let is_head = method == Method::HEAD;
    if is_get && (path == "/v2/" || path == "/v2") {
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("docker-distribution-api-version", "registry/2.0")
            .body(SeededBody::fixed(b"{}"))
            .expect("ping response");
    }
    let prefix = format!("/v2/{REPOSITORY}/blobs/sha256:");
    let spec = path
        .strip_prefix(&prefix)
        .and_then(|hex| state.catalogue.get(hex).map(|spec| (hex, spec)));
    match spec {
        Some((hex, spec)) if is_get || is_head => Response::builder()
            .status(StatusCode::OK)
            .header("content-length", spec.size)
            .header("content-type", "application/octet-stream")
            .header("docker-content-digest", format!("sha256:{hex}"))
            .header("docker-distribution-api-version", "registry/2.0")
            // No body for HEAD, but the length it would have: hyper's h2
            // server would otherwise send one, which no registry does.
            .body(if is_head {
                SeededBody::fixed(b"")
            } else {
                SeededBody::new(spec)
            })
            .expect("blob response"),
        _ => not_found(),
    }
}

fn not_found() -> Response<SeededBody> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header("content-type", "application/json")
        .body(SeededBody::fixed(
            br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"not found"}]}"#,
        ))
        .expect("404 response")
}

/// A response body: a seed's bytes generated [`CHUNK`] at a time as hyper
/// asks for them, or a fixed short text.
pub(crate) struct SeededBody {
    bytes: SeededBytes,
    left: u64,
    fixed: Option<Bytes>,
}

impl SeededBody {
    fn new(spec: BlobSpec) -> SeededBody {
        SeededBody {
            bytes: SeededBytes::new(spec.seed),
            left: spec.size,
            fixed: None,
        }
    }

    fn fixed(text: &'static [u8]) -> SeededBody {
        SeededBody {
            bytes: SeededBytes::new(0),
            left: text.len() as u64,
            fixed: Some(Bytes::from_static(text)),
        }
    }
}

impl hyper::body::Body for SeededBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if let Some(text) = self.fixed.take() {
            self.left = 0;
            return Poll::Ready(Some(Ok(Frame::data(text))));
        }
        let n = self.left.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; n];
        self.bytes.fill(&mut buf);
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
