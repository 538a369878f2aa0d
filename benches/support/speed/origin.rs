//! The upstream registry of the speed benchmark: an in-process HTTPS server
//! (tokio-rustls + hyper-util's auto server, so h2 or HTTP/1.1 by ALPN) on
//! a runtime of its own (one worker thread named `speed-origin`), serving
//! blobs held in memory under `/v2/bench/blobs/sha256:<hex>` to anyone who
//! asks, without credentials (so pullcache treats the repository as
//! public). Blobs are added and removed while it runs, so a run never holds
//! more than the blobs of the current round. Bodies go out as 256 KiB
//! slices of one shared `Bytes`: no copies, so the origin is never the
//! bottleneck.
//!
//! It listens three times on 127.0.0.1: for curl's direct downloads, for
//! pullcache and for nginx's `proxy_cache`. Each listener counts requests
//! by method and path, body bytes handed out by path, and connections by
//! ALPN protocol, separately: "pullcache fetched this blob exactly once,
//! and exactly its size in bytes" is checked on the pullcache listener's
//! counts alone.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
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

use crate::support::blob_path;

/// Size of the body frames handed to hyper.
const CHUNK: usize = 256 * 1024;

/// Which listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Side {
    /// curl, downloading straight from the origin (the miss baseline).
    Direct,
    /// pullcache's upstream requests.
    Pullcache,
    /// nginx's `proxy_cache` upstream requests.
    Nginx,
}

const SIDES: [Side; 3] = [Side::Direct, Side::Pullcache, Side::Nginx];

/// What one listener saw.
#[derive(Default)]
struct Counters {
    /// `(method, path)` → requests.
    requests: Mutex<BTreeMap<(String, String), usize>>,
    /// path → body bytes handed to hyper.
    bytes: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// ALPN protocol (or `none`) → connections.
    alpn: Mutex<BTreeMap<String, usize>>,
}

struct State {
    /// path → body.
    blobs: RwLock<HashMap<String, Bytes>>,
    counters: [Counters; 3],
}

impl State {
    fn counters(&self, side: Side) -> &Counters {
        &self.counters[side as usize]
    }
}

/// The running origin; dropping it stops every listener and connection.
pub(crate) struct Origin {
    addrs: [SocketAddr; 3],
    state: Arc<State>,
    runtime: Option<Runtime>,
}

impl Origin {
    /// Starts serving with `tls` (whose leaf must name every host that is
    /// resolved to the origin) on three fresh ports of 127.0.0.1.
    pub(crate) fn start(tls: Arc<rustls::ServerConfig>) -> anyhow::Result<Origin> {
        let acceptor = TlsAcceptor::from(tls);
        let state = Arc::new(State {
            blobs: RwLock::new(HashMap::new()),
            counters: Default::default(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("speed-origin")
            .enable_all()
            .build()
            .context("cannot build the origin's runtime")?;
        let mut addrs = Vec::new();
        for side in SIDES {
            let listener = runtime
                .block_on(TcpListener::bind("127.0.0.1:0"))
                .context("cannot bind the origin on 127.0.0.1")?;
            addrs.push(listener.local_addr()?);
            runtime.spawn(accept_loop(listener, acceptor.clone(), state.clone(), side));
        }
        Ok(Origin {
            addrs: [addrs[0], addrs[1], addrs[2]],
            state,
            runtime: Some(runtime),
        })
    }

    /// Where `side` connects.
    pub(crate) fn addr(&self, side: Side) -> SocketAddr {
        self.addrs[side as usize]
    }

    /// Serves `bytes` as blob `hex` from now on.
    pub(crate) fn add(&self, hex: &str, bytes: Bytes) {
        write(&self.state.blobs).insert(blob_path(hex), bytes);
    }

    /// Stops serving blob `hex` (and frees it once no response holds it).
    pub(crate) fn remove(&self, hex: &str) {
        write(&self.state.blobs).remove(&blob_path(hex));
    }

    /// `GET`s of blob `hex` that arrived on `side`.
    pub(crate) fn gets(&self, side: Side, hex: &str) -> usize {
        lock(&self.state.counters(side).requests)
            .get(&("GET".to_owned(), blob_path(hex)))
            .copied()
            .unwrap_or(0)
    }

    /// Requests of any kind for blob `hex` on `side`, by method.
    pub(crate) fn requests_for(&self, side: Side, hex: &str) -> BTreeMap<String, usize> {
        let path = blob_path(hex);
        lock(&self.state.counters(side).requests)
            .iter()
            .filter(|((_, p), _)| *p == path)
            .map(|((m, _), n)| (m.clone(), *n))
            .collect()
    }

    /// Body bytes of blob `hex` handed out on `side`.
    pub(crate) fn bytes_served(&self, side: Side, hex: &str) -> u64 {
        lock(&self.state.counters(side).bytes)
            .get(&blob_path(hex))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Connections accepted on `side`, by negotiated ALPN.
    pub(crate) fn connections(&self, side: Side) -> BTreeMap<String, usize> {
        lock(&self.state.counters(side).alpn).clone()
    }

    /// Requests on `side`, by `(method, path)`.
    pub(crate) fn requests(&self, side: Side) -> BTreeMap<(String, String), usize> {
        lock(&self.state.counters(side).requests).clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(rw: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    rw.write().unwrap_or_else(|poisoned| poisoned.into_inner())
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

fn answer(state: &State, side: Side, req: &Request<Incoming>) -> Response<CountedBody> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let counters = state.counters(side);
    *lock(&counters.requests)
        .entry((method.to_string(), path.clone()))
        .or_default() += 1;

    let is_get = method == Method::GET;
    let is_head = method == Method::HEAD;
    if is_get && (path == "/v2/" || path == "/v2") {
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("docker-distribution-api-version", "registry/2.0")
            .body(CountedBody::fixed(Bytes::from_static(b"{}")))
            .expect("ping response");
    }
    let found = state
        .blobs
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&path)
        .cloned();
    match found {
        Some(bytes) if is_get || is_head => {
            let length = bytes.len();
            let digest = path.rsplit('/').next().unwrap_or_default().to_owned();
            let body = if is_head {
                // No body for HEAD, but the length it would have.
                CountedBody::fixed(Bytes::new())
            } else {
                let counter = lock(&counters.bytes).entry(path).or_default().clone();
                CountedBody {
                    rest: bytes,
                    counter: Some(counter),
                }
            };
            Response::builder()
                .status(StatusCode::OK)
                .header("content-length", length)
                .header("content-type", "application/octet-stream")
                .header("docker-content-digest", digest)
                .header("docker-distribution-api-version", "registry/2.0")
                .body(body)
                .expect("blob response")
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "application/json")
            .body(CountedBody::fixed(Bytes::from_static(
                br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"not found"}]}"#,
            )))
            .expect("404 response"),
    }
}

/// A response body that hands out one shared `Bytes` in [`CHUNK`]-sized
/// slices (reference-counted, never copied), adding each slice's length to
/// a counter as hyper takes it.
pub(crate) struct CountedBody {
    rest: Bytes,
    counter: Option<Arc<AtomicU64>>,
}

impl CountedBody {
    fn fixed(bytes: Bytes) -> CountedBody {
        CountedBody {
            rest: bytes,
            counter: None,
        }
    }
}

impl hyper::body::Body for CountedBody {
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
        if let Some(counter) = &self.counter {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}
