//! An in-process HTTPS server standing in for a real registry.
//!
//! It runs on a small tokio runtime of its own rather than on the test's, so
//! tests can stay synchronous and block on curl or on the proxy's logs while
//! the upstream keeps serving. It records every request that reaches it:
//! tests assert both on what was forwarded and on what was *not*.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

use super::TestCa;

/// A request as the upstream received it.
#[derive(Clone, Debug)]
pub(crate) struct SeenRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    /// The `Host` header, or the `:authority` of an HTTP/2 request.
    pub(crate) host: Option<String>,
    pub(crate) body: Bytes,
}

/// Decides the response; the request's body has already been read.
pub(crate) type Handler = Arc<dyn Fn(&SeenRequest) -> Response<Full<Bytes>> + Send + Sync>;

pub(crate) struct TlsUpstream {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    // Dropping the runtime stops the listener and every connection task.
    runtime: Option<Runtime>,
}

impl TlsUpstream {
    /// Serves TLS for `names` (certificate from `ca`) on 127.0.0.1 with an
    /// ephemeral port, answering through `handler`.
    pub(crate) fn start(ca: &TestCa, names: &[&str], handler: Handler) -> Self {
        let acceptor = TlsAcceptor::from(ca.server_config(names));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tls-upstream")
            .enable_all()
            .build()
            .expect("upstream runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let count = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count2, seen2, handshakes2) = (count.clone(), seen.clone(), handshakes.clone());
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let (handler, count, seen) = (handler.clone(), count2.clone(), seen2.clone());
                let handshakes = handshakes2.clone();
                tokio::spawn(async move {
                    // A failed handshake is expected in tests where the client
                    // rejects our certificate; nothing to report here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    let service = service_fn(move |req| {
                        handle(req, handler.clone(), count.clone(), seen.clone())
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsUpstream {
            addr,
            count,
            handshakes,
            seen,
            runtime: Some(runtime),
        }
    }

    /// The default handler: 200 with a body naming this upstream, the method
    /// and the path, and the Host it saw echoed in `x-seen-host`.
    pub(crate) fn echo(label: &str) -> Handler {
        let label = label.to_owned();
        Arc::new(move |req: &SeenRequest| {
            let mut resp = Response::builder()
                .status(200)
                .header("content-type", "text/plain")
                .header("x-upstream", label.as_str());
            if let Some(host) = &req.host {
                resp = resp.header("x-seen-host", host.as_str());
            }
            resp.body(Full::new(Bytes::from(format!(
                "upstream:{label} {} {}",
                req.method, req.path
            ))))
            .expect("response")
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests reached this upstream.
    pub(crate) fn request_count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// How many TLS handshakes with this upstream completed.
    pub(crate) fn handshake_count(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Every request that reached this upstream, in arrival order.
    pub(crate) fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("seen lock").clone()
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    handler: Handler,
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.to_string());
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let request = SeenRequest {
        method,
        path,
        host,
        body,
    };
    count.fetch_add(1, Ordering::SeqCst);
    seen.lock().expect("seen lock").push(request.clone());
    let mut response = handler(&request);
    if request.method == "HEAD" {
        // A HEAD response carries the length of the body it would have had
        // and no body. hyper's HTTP/1 server drops the body by itself but its
        // h2 server sends it, which a real registry never does (and which an
        // h2 client rightly treats as a protocol error).
        let len = response.body().size_hint().exact().unwrap_or(0);
        response
            .headers_mut()
            .entry(hyper::header::CONTENT_LENGTH)
            .or_insert_with(|| len.into());
        *response.body_mut() = Full::new(Bytes::new());
    }
    Ok(response)
}
