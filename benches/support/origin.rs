//! The benchmarks' origin: an in-process HTTPS server (tokio-rustls +
//! hyper-util's auto server, so h2 or HTTP/1.1 by ALPN) on a runtime of its
//! own, playing the upstream registry and, for the soak test, the plain TLS
//! site that clients reach through pullcache's tunnel.
//!
//! As the registry it answers `GET /v2/` with `{}` and `GET`/`HEAD` of
//! `/v2/<repository>/blobs/sha256:<hex>` with a blob of its [`Catalogue`],
//! needs no credentials (so pullcache treats the repository as public) and
//! answers 404 to anything else. As the tunnel site it answers
//! `GET /tunnel/<seed>/<size>` with that seed's bytes.
//!
//! Serving must never be the bottleneck: a blob held in memory goes out as
//! 256 KiB slices of its one shared `Bytes` (reference-counted, never
//! copied), and a seeded blob is generated 256 KiB at a time as hyper asks
//! for it, never held whole.
//!
//! It listens on 127.0.0.1 once per [`Side`] the benchmark asks for and
//! counts what each listener saw separately: connections (accepted, still
//! open, by ALPN), requests, and on the registry's listeners requests by
//! method and path and body bytes by path. So "pullcache fetched this blob
//! exactly once, and exactly its size in bytes" is checked on pullcache's
//! listener alone, even when a baseline downloads the same bytes from
//! another.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::blobs::SeededBytes;
use super::server::ServerRuntime;

/// Size of the body frames handed to hyper (a multiple of 8, as
/// [`SeededBytes`] needs).
const CHUNK: usize = 256 * 1024;

/// Who connects to a listener. Each side has a port and counters of its
/// own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// curl, downloading straight from the origin (the baseline).
    Direct,
    /// pullcache's upstream requests.
    Pullcache,
    /// nginx's `proxy_cache` upstream requests.
    Nginx,
    /// A second pullcache's upstream requests (the speed benchmark's
    /// comparison binary).
    Compare,
    /// Clients through pullcache's tunnel: the tunnel site, not the
    /// registry.
    Tunnel,
}

/// A blob's bytes, as the origin serves them.
#[derive(Clone)]
pub(crate) enum Content {
    /// Held in memory; sent as slices of it.
    Shared(Bytes),
    /// The first `size` bytes of `seed`'s [`SeededBytes`] stream, made as
    /// they are sent.
    Seeded { seed: u64, size: u64 },
}

impl Content {
    fn len(&self) -> u64 {
        match self {
            Content::Shared(bytes) => bytes.len() as u64,
            Content::Seeded { size, .. } => *size,
        }
    }
}

/// The blobs the registry serves, by hex digest. Benchmarks add and remove
/// blobs while it runs: the speed benchmark holds only the current round's,
/// the soak test's clients register each fresh miss before asking for it.
#[derive(Default)]
pub(crate) struct Catalogue {
    blobs: RwLock<HashMap<String, Content>>,
}

impl Catalogue {
    pub(crate) fn insert(&self, hex: String, content: Content) {
        self.blobs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(hex, content);
    }

    /// Stops serving `hex`; its bytes are freed once no response holds them.
    pub(crate) fn remove(&self, hex: &str) {
        self.blobs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(hex);
    }

    fn get(&self, hex: &str) -> Option<Content> {
        self.blobs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(hex)
            .cloned()
    }
}

/// `/tunnel/<seed>/<size>`: what the tunnel site answers with `size` bytes
/// of `seed`'s stream.
pub(crate) fn tunnel_path(seed: u64, size: u64) -> String {
    format!("/tunnel/{seed}/{size}")
}

fn parse_tunnel_path(path: &str) -> Option<(u64, u64)> {
    let (seed, size) = path.strip_prefix("/tunnel/")?.split_once('/')?;
    Some((seed.parse().ok()?, size.parse().ok()?))
}

/// What a benchmark's origin is made of.
pub(crate) struct OriginSetup {
    /// The runtime thread's name, by which a benchmark finds the origin's
    /// CPU time.
    pub(crate) thread_name: &'static str,
    /// Its leaf must name every host resolved to the origin.
    pub(crate) tls: Arc<rustls::ServerConfig>,
    /// One listener each, in this order.
    pub(crate) sides: &'static [Side],
    /// The registry's only repository.
    pub(crate) repository: &'static str,
    pub(crate) catalogue: Arc<Catalogue>,
}

/// The connection counts of one listener at one moment.
#[derive(Clone, Debug)]
pub(crate) struct Connections {
    pub(crate) accepted: u64,
    pub(crate) open: i64,
    pub(crate) requests: u64,
    /// Negotiated ALPN protocol (or `none`) → connections.
    pub(crate) alpn: BTreeMap<String, usize>,
}

/// What one listener saw.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicI64,
    requests: AtomicU64,
    alpn: Mutex<BTreeMap<String, usize>>,
    /// Registry requests by path (the tunnel site's paths are all distinct
    /// and not kept).
    paths: Mutex<HashMap<String, PathCounts>>,
}

#[derive(Default)]
struct PathCounts {
    /// Method → requests.
    requests: BTreeMap<String, usize>,
    /// Body bytes handed to hyper.
    body_bytes: Arc<AtomicU64>,
}

impl Counters {
    /// Counts a registry request; returns the counter of its path's body
    /// bytes.
    fn count(&self, method: &Method, path: &str) -> Arc<AtomicU64> {
        let mut paths = lock(&self.paths);
        let counts = paths.entry(path.to_owned()).or_default();
        *counts
            .requests
            .entry(method.as_str().to_owned())
            .or_default() += 1;
        counts.body_bytes.clone()
    }
}

/// What every registry listener answers from.
struct Registry {
    /// `/v2/<repository>/blobs/sha256:`.
    blob_prefix: String,
    catalogue: Arc<Catalogue>,
}

struct Listener {
    side: Side,
    addr: SocketAddr,
    counters: Arc<Counters>,
}

/// The running origin; dropping it stops every listener and connection.
pub(crate) struct Origin {
    listeners: Vec<Listener>,
    registry: Arc<Registry>,
    _runtime: ServerRuntime,
}

impl Origin {
    pub(crate) fn start(setup: OriginSetup) -> anyhow::Result<Origin> {
        let runtime = ServerRuntime::start(setup.thread_name)?;
        let acceptor = TlsAcceptor::from(setup.tls);
        let registry = Arc::new(Registry {
            blob_prefix: format!("/v2/{}/blobs/sha256:", setup.repository),
            catalogue: setup.catalogue,
        });
        let mut listeners = Vec::new();
        for &side in setup.sides {
            let counters = Arc::new(Counters::default());
            let (acceptor, registry, listener_counters) =
                (acceptor.clone(), registry.clone(), counters.clone());
            let addr = runtime.listen(move |tcp| {
                let _ = tcp.set_nodelay(true);
                let connection = OpenConnection::accepted(listener_counters.clone());
                let (acceptor, registry) = (acceptor.clone(), registry.clone());
                tokio::spawn(serve(tcp, acceptor, side, registry, connection));
            })?;
            listeners.push(Listener {
                side,
                addr,
                counters,
            });
        }
        Ok(Origin {
            listeners,
            registry,
            _runtime: runtime,
        })
    }

    fn listener(&self, side: Side) -> &Listener {
        let listener = self.listeners.iter().find(|l| l.side == side);
        listener.expect("a side the origin listens for")
    }

    fn counters(&self, side: Side) -> &Counters {
        &self.listener(side).counters
    }

    /// Where `side` connects.
    pub(crate) fn addr(&self, side: Side) -> SocketAddr {
        self.listener(side).addr
    }

    pub(crate) fn catalogue(&self) -> &Catalogue {
        &self.registry.catalogue
    }

    /// Registry requests on `side`, by `(method, path)`.
    pub(crate) fn requests(&self, side: Side) -> BTreeMap<(String, String), usize> {
        let paths = lock(&self.counters(side).paths);
        let mut all = BTreeMap::new();
        for (path, counts) in paths.iter() {
            for (method, n) in &counts.requests {
                all.insert((method.clone(), path.clone()), *n);
            }
        }
        all
    }

    /// Requests for blob `hex` on `side`, by method.
    pub(crate) fn blob_requests(&self, side: Side, hex: &str) -> BTreeMap<String, usize> {
        let path = format!("{}{hex}", self.registry.blob_prefix);
        lock(&self.counters(side).paths)
            .get(&path)
            .map(|counts| counts.requests.clone())
            .unwrap_or_default()
    }

    /// `GET`s of blob `hex` on `side`.
    pub(crate) fn blob_gets(&self, side: Side, hex: &str) -> usize {
        let requests = self.blob_requests(side, hex);
        requests.get("GET").copied().unwrap_or(0)
    }

    /// Body bytes of blob `hex` handed out on `side`.
    pub(crate) fn blob_bytes_sent(&self, side: Side, hex: &str) -> u64 {
        let path = format!("{}{hex}", self.registry.blob_prefix);
        lock(&self.counters(side).paths)
            .get(&path)
            .map_or(0, |counts| counts.body_bytes.load(Ordering::Relaxed))
    }

    pub(crate) fn connections(&self, side: Side) -> Connections {
        let counters = self.counters(side);
        Connections {
            accepted: counters.accepted.load(Ordering::SeqCst),
            open: counters.open.load(Ordering::SeqCst),
            requests: counters.requests.load(Ordering::SeqCst),
            alpn: lock(&counters.alpn).clone(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One accepted connection, counted by its listener as accepted and open
/// from the accept on, and no longer open once dropped with its task,
/// however the task ends.
struct OpenConnection(Arc<Counters>);

impl OpenConnection {
    fn accepted(counters: Arc<Counters>) -> OpenConnection {
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        counters.open.fetch_add(1, Ordering::SeqCst);
        OpenConnection(counters)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The TLS handshake, then HTTP until the client is done.
async fn serve(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    side: Side,
    registry: Arc<Registry>,
    connection: OpenConnection,
) {
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let counters = connection.0.clone();
    let alpn = tls.get_ref().1.alpn_protocol().map_or_else(
        || "none".to_owned(),
        |p| String::from_utf8_lossy(p).into_owned(),
    );
    *lock(&counters.alpn).entry(alpn).or_default() += 1;
    let service = service_fn(move |req| {
        let response = answer(&registry, side, &counters, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

fn answer(
    registry: &Registry,
    side: Side,
    counters: &Counters,
    req: &Request<Incoming>,
) -> Response<Body> {
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let (method, path) = (req.method(), req.uri().path());
    if side == Side::Tunnel {
        return match parse_tunnel_path(path) {
            Some((seed, size)) if method == Method::GET => Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/octet-stream")
                .header("content-length", size)
                .body(Body::new(Content::Seeded { seed, size }, None))
                .expect("tunnel response"),
            _ => not_found(),
        };
    }
    let body_bytes = counters.count(method, path);

    let is_get = method == Method::GET;
    let is_head = method == Method::HEAD;
    if is_get && (path == "/v2/" || path == "/v2") {
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("docker-distribution-api-version", "registry/2.0")
            .body(Body::text(b"{}"))
            .expect("ping response");
    }
    let found = path
        .strip_prefix(&registry.blob_prefix)
        .and_then(|hex| Some((hex, registry.catalogue.get(hex)?)));
    match found {
        Some((hex, content)) if is_get || is_head => Response::builder()
            .status(StatusCode::OK)
            .header("content-length", content.len())
            .header("content-type", "application/octet-stream")
            .header("docker-content-digest", format!("sha256:{hex}"))
            .header("docker-distribution-api-version", "registry/2.0")
            // No body for HEAD, but the length it would have: hyper's h2
            // server would otherwise send one, which no registry does.
            .body(if is_head {
                Body::text(b"")
            } else {
                Body::new(content, Some(body_bytes))
            })
            .expect("blob response"),
        _ => not_found(),
    }
}

fn not_found() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header("content-type", "application/json")
        .body(Body::text(
            br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"not found"}]}"#,
        ))
        .expect("404 response")
}

/// A response body handed to hyper in [`CHUNK`]-sized frames, each added to
/// a byte counter as hyper takes it.
pub(crate) struct Body {
    rest: Rest,
    counter: Option<Arc<AtomicU64>>,
}

enum Rest {
    /// Sliced off, never copied.
    Shared(Bytes),
    /// Generated frame by frame.
    Seeded { bytes: SeededBytes, left: u64 },
}

impl Body {
    fn new(content: Content, counter: Option<Arc<AtomicU64>>) -> Body {
        let rest = match content {
            Content::Shared(bytes) => Rest::Shared(bytes),
            Content::Seeded { seed, size } => Rest::Seeded {
                bytes: SeededBytes::new(seed),
                left: size,
            },
        };
        Body { rest, counter }
    }

    fn text(text: &'static [u8]) -> Body {
        Body::new(Content::Shared(Bytes::from_static(text)), None)
    }

    fn left(&self) -> u64 {
        match &self.rest {
            Rest::Shared(bytes) => bytes.len() as u64,
            Rest::Seeded { left, .. } => *left,
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match &mut self.rest {
            Rest::Shared(rest) if rest.is_empty() => return Poll::Ready(None),
            Rest::Shared(rest) => rest.split_to(rest.len().min(CHUNK)),
            Rest::Seeded { left: 0, .. } => return Poll::Ready(None),
            Rest::Seeded { bytes, left } => {
                let n = (*left).min(CHUNK as u64) as usize;
                let mut buf = vec![0u8; n];
                bytes.fill(&mut buf);
                *left -= n as u64;
                Bytes::from(buf)
            }
        };
        if let Some(counter) = &self.counter {
            counter.fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.left() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left())
    }
}
