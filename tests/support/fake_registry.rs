//! An in-process fake registry that misbehaves on request.
//!
//! Like [`super::TlsUpstream`] it runs on a tokio runtime of its own and
//! serves TLS with a leaf from the test CA, here for two names:
//! `registry-1.docker.io` and [`CDN_HOST`] (where blob redirects point). It
//! serves `GET /v2/`, blobs and manifests the test registers, and for each
//! blob a fault can be switched on at run time: wrong bytes for the digest, a
//! connection reset part-way through the body, or a `307` to the CDN name.
//! Tag manifests can be made to answer `429`. Every request is recorded.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

use super::image::{digest_hex, sha256_digest};
use super::{ProxyConfig, TestCa, REGISTRY_HOST};

/// The second name the fake serves, standing in for a blob CDN. `.test` is
/// reserved, so it can never reach a real server.
pub(crate) const CDN_HOST: &str = "cdn.test";

/// How a registered blob misbehaves on `GET` (and, for a redirect, `HEAD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlobFault {
    /// Served correctly.
    None,
    /// 200 with the right length and digest header but different bytes.
    WrongBytes,
    /// 200 with the full Content-Length, then the connection (or h2 stream)
    /// is reset after this many body bytes.
    ResetAfter(usize),
    /// Answered with this status and an error body.
    Status(u16),
    /// Served correctly, but each 64 KiB chunk only after this many
    /// milliseconds, so a download takes long enough for clients to join
    /// it or give up on it.
    Trickle(u64),
    /// `307` to `https://cdn.test/cdn/<hex>?X-Amz-Signature=e2e`, where the
    /// right bytes are served (and a request carrying `Authorization` gets
    /// 400, like a presigned S3 URL).
    RedirectToCdn,
}

/// A request as the fake received it.
#[derive(Clone, Debug)]
pub(crate) struct FakeRequest {
    pub(crate) method: String,
    /// The `Host` header (or `:authority`) without a port.
    pub(crate) host: String,
    /// Path and query.
    pub(crate) path: String,
    pub(crate) authorization: bool,
}

struct BlobEntry {
    bytes: Bytes,
    digest: String,
    fault: BlobFault,
}

struct ManifestEntry {
    media_type: String,
    bytes: Bytes,
    digest: String,
    by_tag: bool,
}

#[derive(Default)]
struct State {
    /// By path, e.g. `/v2/test/x/blobs/sha256:…`.
    blobs: Mutex<HashMap<String, BlobEntry>>,
    /// By path, for both `/v2/<repo>/manifests/<tag>` and `…/<digest>`.
    manifests: Mutex<HashMap<String, ManifestEntry>>,
    throttle_tags: Arc<AtomicBool>,
    /// When not 0, tag manifest requests get this status (500, 503, ...).
    fail_tags: Arc<AtomicU16>,
    seen: Mutex<Vec<FakeRequest>>,
}

pub(crate) struct FakeRegistry {
    addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<Runtime>,
}

impl FakeRegistry {
    /// Serves TLS for `registry-1.docker.io` and `cdn.test` on 127.0.0.1
    /// with an ephemeral port.
    pub(crate) fn start(ca: &TestCa) -> FakeRegistry {
        let acceptor = TlsAcceptor::from(ca.server_config(&[REGISTRY_HOST, CDN_HOST]));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-registry")
            .enable_all()
            .build()
            .expect("fake registry runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind fake registry");
        let addr = listener.local_addr().expect("fake registry addr");
        let state = Arc::new(State::default());
        let shared = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let state = shared.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| handle(req, state.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeRegistry {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A proxy config that intercepts both names, trusts the test CA and
    /// resolves both names to this fake; `extra` is appended (e.g. a
    /// `[cache]` table).
    pub(crate) fn proxy_config(&self, ca: &TestCa, extra: &str) -> ProxyConfig {
        ProxyConfig {
            intercept: vec![REGISTRY_HOST.to_owned(), CDN_HOST.to_owned()],
            ca_files: vec![ca.cert_path().to_path_buf()],
            resolve: vec![
                (REGISTRY_HOST.to_owned(), self.addr),
                (CDN_HOST.to_owned(), self.addr),
            ],
            extra: extra.to_owned(),
            ..ProxyConfig::default()
        }
    }

    /// Registers a blob of `repo` served correctly; returns its digest.
    pub(crate) fn add_blob(&self, repo: &str, bytes: Vec<u8>) -> String {
        let digest = sha256_digest(&bytes);
        self.state.blobs.lock().expect("blobs lock").insert(
            blob_path(repo, &digest),
            BlobEntry {
                bytes: Bytes::from(bytes),
                digest: digest.clone(),
                fault: BlobFault::None,
            },
        );
        digest
    }

    /// Switches how a registered blob is served, effective for the next
    /// request.
    pub(crate) fn set_fault(&self, repo: &str, digest: &str, fault: BlobFault) {
        let mut blobs = self.state.blobs.lock().expect("blobs lock");
        let entry = blobs
            .get_mut(&blob_path(repo, digest))
            .unwrap_or_else(|| panic!("{repo}@{digest} is not registered"));
        entry.fault = fault;
    }

    /// Registers a manifest under `repo:tag` and `repo@digest`; returns its
    /// digest.
    pub(crate) fn add_manifest(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> String {
        let digest = sha256_digest(&bytes);
        let bytes = Bytes::from(bytes);
        let mut manifests = self.state.manifests.lock().expect("manifests lock");
        for (reference, by_tag) in [(tag, true), (digest.as_str(), false)] {
            manifests.insert(
                format!("/v2/{repo}/manifests/{reference}"),
                ManifestEntry {
                    media_type: media_type.to_owned(),
                    bytes: bytes.clone(),
                    digest: digest.clone(),
                    by_tag,
                },
            );
        }
        digest
    }

    /// While set, every request for a manifest by tag (GET and HEAD) is
    /// answered `429 Too Many Requests`.
    pub(crate) fn throttle_tags(&self) -> Arc<AtomicBool> {
        self.state.throttle_tags.clone()
    }

    /// A switch that makes tag manifest requests answer with its status
    /// (0 turns it off).
    pub(crate) fn fail_tags(&self) -> Arc<AtomicU16> {
        self.state.fail_tags.clone()
    }

    /// The path a redirected blob is served from on [`CDN_HOST`].
    pub(crate) fn cdn_path(digest: &str) -> String {
        format!("/cdn/{}", digest_hex(digest))
    }

    /// Every request so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<FakeRequest> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    /// Requests with `method` whose path (with query) contains `path_contains`.
    pub(crate) fn count(&self, method: &str, path_contains: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .count()
    }

    /// A readable list of every request, for assertion messages.
    pub(crate) fn summary(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                format!(
                    "{} https://{}{}{}",
                    r.method,
                    r.host,
                    r.path,
                    if r.authorization {
                        " (with Authorization)"
                    } else {
                        ""
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn blob_path(repo: &str, digest: &str) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

type Reply = Response<FaultBody>;

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Reply, Infallible> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
        _ => host,
    };
    let seen = FakeRequest {
        method: req.method().to_string(),
        host,
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.to_string()),
        authorization: req.headers().contains_key(hyper::header::AUTHORIZATION),
    };
    state.seen.lock().expect("seen lock").push(seen.clone());
    let head = seen.method == "HEAD";
    let path = req.uri().path().to_owned();
    Ok(route(&state, &seen, &path, head))
}

fn route(state: &State, req: &FakeRequest, path: &str, head: bool) -> Reply {
    if req.method != "GET" && req.method != "HEAD" {
        return error(405, "UNSUPPORTED", "method not allowed", head);
    }
    if req.host == CDN_HOST {
        return cdn(state, req, path, head);
    }
    if path == "/v2/" || path == "/v2" {
        return reply(
            200,
            "application/json",
            None,
            Bytes::from_static(b"{}"),
            head,
        );
    }
    if let Some(blob) = state.blobs.lock().expect("blobs lock").get(path) {
        return serve_blob(blob, head);
    }
    if let Some(m) = state.manifests.lock().expect("manifests lock").get(path) {
        let failing = state.fail_tags.load(Ordering::SeqCst);
        if m.by_tag && failing != 0 {
            return error(failing, "UNAVAILABLE", "injected failure", head);
        }
        if m.by_tag && state.throttle_tags.load(Ordering::SeqCst) {
            let mut resp = error(429, "TOOMANYREQUESTS", "slow down", head);
            resp.headers_mut()
                .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
            return resp;
        }
        return reply(200, &m.media_type, Some(&m.digest), m.bytes.clone(), head);
    }
    if path.contains("/manifests/") {
        error(404, "MANIFEST_UNKNOWN", "manifest unknown", head)
    } else {
        error(404, "BLOB_UNKNOWN", "blob unknown to registry", head)
    }
}

fn serve_blob(blob: &BlobEntry, head: bool) -> Reply {
    const OCTETS: &str = "application/octet-stream";
    match blob.fault {
        BlobFault::None => reply(200, OCTETS, Some(&blob.digest), blob.bytes.clone(), head),
        BlobFault::WrongBytes => {
            let wrong: Vec<u8> = blob.bytes.iter().map(|b| b ^ 0x5a).collect();
            reply(200, OCTETS, Some(&blob.digest), Bytes::from(wrong), head)
        }
        BlobFault::ResetAfter(n) => {
            let mut resp = reply(200, OCTETS, Some(&blob.digest), blob.bytes.clone(), head);
            if !head {
                let n = n.min(blob.bytes.len().saturating_sub(1));
                *resp.body_mut() = FaultBody::failing(blob.bytes.slice(..n));
            }
            resp
        }
        BlobFault::Status(status) => error(status, "UNAVAILABLE", "injected failure", head),
        BlobFault::Trickle(millis) => {
            let mut resp = reply(200, OCTETS, Some(&blob.digest), blob.bytes.clone(), head);
            if !head {
                *resp.body_mut() =
                    FaultBody::trickling(blob.bytes.clone(), Duration::from_millis(millis));
            }
            resp
        }
        BlobFault::RedirectToCdn => Response::builder()
            .status(307)
            .header(
                "location",
                format!(
                    "https://{CDN_HOST}{}?X-Amz-Signature=e2e",
                    FakeRegistry::cdn_path(&blob.digest)
                ),
            )
            .header("docker-distribution-api-version", "registry/2.0")
            .header("content-length", "0")
            .body(FaultBody::empty())
            .expect("redirect response"),
    }
}

fn cdn(state: &State, req: &FakeRequest, path: &str, head: bool) -> Reply {
    if req.authorization {
        // Presigned URLs refuse a request that also carries credentials.
        return error(
            400,
            "INVALID_ARGUMENT",
            "only one auth mechanism allowed",
            head,
        );
    }
    let blobs = state.blobs.lock().expect("blobs lock");
    let found = blobs
        .values()
        .find(|b| FakeRegistry::cdn_path(&b.digest) == path);
    match found {
        Some(blob) => reply(
            200,
            "application/octet-stream",
            None,
            blob.bytes.clone(),
            head,
        ),
        None => error(404, "NOT_FOUND", "no such object", head),
    }
}

fn reply(status: u16, content_type: &str, digest: Option<&str>, body: Bytes, head: bool) -> Reply {
    let mut resp = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("docker-distribution-api-version", "registry/2.0");
    if let Some(digest) = digest {
        resp = resp
            .header("docker-content-digest", digest)
            .header("etag", format!("\"{digest}\""));
    }
    // A HEAD answer carries the length but never a body (hyper's h2 server
    // would send one otherwise).
    let body = if head {
        FaultBody::empty()
    } else {
        FaultBody::full(body)
    };
    resp.body(body).expect("response")
}

fn error(status: u16, code: &str, message: &str, head: bool) -> Reply {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#);
    reply(status, "application/json", None, Bytes::from(body), head)
}

/// A response body that can stop with an error part-way: hyper then resets
/// the HTTP/1 connection or the h2 stream, as a dropped socket would.
pub(crate) struct FaultBody {
    chunks: VecDeque<Bytes>,
    fail: bool,
    /// A pause before the error, so the bytes before it reach the client.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A pause before every chunk, for slow transfers.
    gap: Option<Duration>,
    next_chunk: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl FaultBody {
    fn empty() -> FaultBody {
        FaultBody {
            chunks: VecDeque::new(),
            fail: false,
            pause: None,
            gap: None,
            next_chunk: None,
        }
    }

    fn full(bytes: Bytes) -> FaultBody {
        // Several frames, so a large body is streamed rather than written in
        // one piece.
        let mut chunks = VecDeque::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = rest.len().min(64 * 1024);
            chunks.push_back(rest.split_to(n));
        }
        FaultBody {
            chunks,
            fail: false,
            pause: None,
            gap: None,
            next_chunk: None,
        }
    }

    fn trickling(bytes: Bytes, gap: Duration) -> FaultBody {
        FaultBody {
            gap: Some(gap),
            ..FaultBody::full(bytes)
        }
    }

    fn failing(prefix: Bytes) -> FaultBody {
        FaultBody {
            fail: true,
            ..FaultBody::full(prefix)
        }
    }
}

impl hyper::body::Body for FaultBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let (Some(gap), false) = (self.gap, self.chunks.is_empty()) {
            let wait = self
                .next_chunk
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.next_chunk = None;
        }
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if !self.fail {
            return Poll::Ready(None);
        }
        let pause = self
            .pause
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(200))));
        match pause.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "e2e fake registry: injected reset",
            )))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && !self.fail
    }
}
