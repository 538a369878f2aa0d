//! The HTTPS client that talks to real registries: verified TLS (webpki
//! roots, the system's roots and `upstream.ca_files`), HTTP/1.1 or h2 by
//! ALPN, connection pooling, and connections made through [`Resolver`].
//!
//! A host with no pooled connection can be warmed: its TCP and TLS
//! handshakes start while the client's own TLS handshake with us runs, and
//! the first request to that host takes the connection (or waits for it,
//! errors included, so a failure is never tried twice). Warming is skipped
//! for a host that had a request or a warming within the pool's idle time,
//! and an untaken connection is closed after [`WARM_CONNECTION_TTL`].

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tower_service::Service;
use tracing::{debug, warn};

use crate::body::Body;
use crate::error::ProxyError;
use crate::resolve::Resolver;

/// h2 receive window per stream.
const H2_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
/// h2 receive window per connection (several blobs at once).
const H2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
/// The largest h2 frame we accept.
const H2_MAX_FRAME: u32 = 1024 * 1024;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a warmed connection waits for its first request. A client
/// sends its first request within milliseconds of its handshake; one that
/// does not may never send one.
const WARM_CONNECTION_TTL: Duration = Duration::from_secs(10);

/// Hosts remembered as recently used before the stale ones are pruned.
const RECENT_HOSTS_PRUNE_AT: usize = 1024;

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    /// An `upstream.ca_files` entry could not be read or held no certificate.
    #[error("upstream.ca_files: {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// The shared client for every upstream request.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<WarmingConnector, Body>,
    connector: WarmingConnector,
}

impl UpstreamClient {
    /// Builds the client: roots from webpki-roots, the system store and
    /// `ca_files`; connections through `resolver`.
    pub fn new(
        resolver: Arc<Resolver>,
        ca_files: &[impl AsRef<Path>],
    ) -> Result<Self, UpstreamSetupError> {
        let roots = root_store(ca_files)?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .wrap_connector(ResolvingConnector { resolver });
        let connector = WarmingConnector {
            https,
            warm: Arc::new(Mutex::new(Warm::default())),
            warm_ttl: WARM_CONNECTION_TTL,
        };
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // Blobs are large: windows and frames sized for bulk transfer
            // keep an h2 upstream from stalling on flow control or
            // cutting the stream into 16 KiB pieces.
            .http2_initial_stream_window_size(H2_STREAM_WINDOW)
            .http2_initial_connection_window_size(H2_CONNECTION_WINDOW)
            .http2_max_frame_size(H2_MAX_FRAME)
            .build(connector.clone());
        Ok(UpstreamClient { client, connector })
    }

    /// Starts connecting to `authority` (`host` or `host:port`, as in an
    /// `https://` URI) unless a pooled connection is likely, so the next
    /// request there need not wait for TCP and TLS handshakes.
    pub fn warm(&self, authority: &str) {
        let Ok(uri) = Uri::builder()
            .scheme("https")
            .authority(authority)
            .path_and_query("/")
            .build()
        else {
            return;
        };
        let Some(key) = HostKey::of(&uri) else {
            return;
        };
        let (sender, receiver) = oneshot::channel();
        let id = {
            let mut warm = self.connector.lock();
            if warm.recently_used(&key) {
                return;
            }
            warm.note_use(key.clone());
            warm.next_id += 1;
            let id = warm.next_id;
            warm.ready.insert(key.clone(), (id, receiver));
            id
        };
        let mut https = self.connector.https.clone();
        let warm = self.connector.warm.clone();
        let ttl = self.connector.warm_ttl;
        tokio::spawn(async move {
            let connected = https.call(uri).await;
            if let Err(error) = &connected {
                debug!(upstream.host = %key.0, %error, "warming an upstream connection failed");
            }
            if sender.send(connected).is_err() {
                return;
            }
            tokio::time::sleep(ttl).await;
            let mut warm = warm.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if warm.ready.get(&key).is_some_and(|(ready, _)| *ready == id) {
                // Dropping the receiver closes the connection nobody took.
                warm.ready.remove(&key);
            }
        });
    }

    /// Sends one request (its URI must be absolute `https://`) and returns
    /// the response head as soon as it arrives; the body streams.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        let host = req.uri().host().unwrap_or_default().to_owned();
        if let Some(key) = HostKey::of(req.uri()) {
            self.connector.lock().note_use(key);
        }
        self.client
            .request(req)
            .await
            .map_err(|source| classify(host, source))
    }
}

/// An upstream connection as the client pools it.
type Connection = MaybeHttpsStream<TokioIo<TcpStream>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The outcome of a warming, waiting for the request that takes it.
type WarmConnection = oneshot::Receiver<Result<Connection, BoxError>>;

/// Lowercase host and port: what a connection is made to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct HostKey(String, u16);

impl HostKey {
    fn of(uri: &Uri) -> Option<HostKey> {
        let host = uri.host()?.to_ascii_lowercase();
        Some(HostKey(host, uri.port_u16().unwrap_or(443)))
    }
}

/// Warmed connections and when each host was last used.
#[derive(Default)]
struct Warm {
    /// Connections opened ahead of a request, each tagged with the id of
    /// the warming that opened it.
    ready: HashMap<HostKey, (u64, WarmConnection)>,
    /// When each host last had a request or a warming: the pool may still
    /// hold a connection to it.
    recent: HashMap<HostKey, Instant>,
    next_id: u64,
}

impl Warm {
    fn recently_used(&self, key: &HostKey) -> bool {
        self.recent
            .get(key)
            .is_some_and(|at| at.elapsed() < POOL_IDLE_TIMEOUT)
    }

    fn note_use(&mut self, key: HostKey) {
        if self.recent.len() >= RECENT_HOSTS_PRUNE_AT {
            self.recent.retain(|_, at| at.elapsed() < POOL_IDLE_TIMEOUT);
        }
        self.recent.insert(key, Instant::now());
    }
}

/// The connector the pool calls: a warmed connection for the host if there
/// is one, else a new one.
#[derive(Clone)]
pub struct WarmingConnector {
    https: HttpsConnector<ResolvingConnector>,
    warm: Arc<Mutex<Warm>>,
    /// [`WARM_CONNECTION_TTL`], shorter in tests.
    warm_ttl: Duration,
}

impl WarmingConnector {
    fn lock(&self) -> MutexGuard<'_, Warm> {
        // The map holds no invariant a panicking holder could break.
        self.warm
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Service<Uri> for WarmingConnector {
    type Response = Connection;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Connection, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let warmed = HostKey::of(&uri).and_then(|key| self.lock().ready.remove(&key));
        match warmed {
            None => self.https.call(uri),
            Some((_, connection)) => {
                let mut https = self.https.clone();
                Box::pin(async move {
                    match connection.await {
                        Ok(connected) => connected,
                        // The warming task is gone (shutdown): connect anew.
                        Err(_) => https.call(uri).await,
                    }
                })
            }
        }
    }
}

/// Maps a client error to the error the client of the proxy should see:
/// connect failures we made ourselves keep their meaning (timeout → 504).
fn classify(host: String, source: hyper_util::client::legacy::Error) -> ProxyError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&source);
    while let Some(error) = cause {
        if let Some(ProxyError::UpstreamTimeout { after, .. }) = error.downcast_ref::<ProxyError>()
        {
            return ProxyError::UpstreamTimeout {
                host,
                after: *after,
            };
        }
        cause = error.source();
    }
    ProxyError::Upstream { host, source }
}

fn root_store(ca_files: &[impl AsRef<Path>]) -> Result<RootCertStore, UpstreamSetupError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let native = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(
        roots.system = added,
        roots.ignored = ignored,
        "loaded system roots"
    );
    if !native.errors.is_empty() {
        warn!(
            errors = native.errors.len(),
            "some system root certificates could not be read"
        );
    }
    for path in ca_files {
        let path = path.as_ref();
        let ca_error = |reason: String| UpstreamSetupError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no PEM certificate in the file".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ca_error(format!("not a usable CA certificate: {e}")))?;
        }
    }
    Ok(roots)
}

/// The TCP half of the upstream connector: resolves through [`Resolver`] so
/// `[upstream.resolve]` applies, with the override's own port.
#[derive(Clone)]
pub struct ResolvingConnector {
    resolver: Arc<Resolver>,
}

impl Service<Uri> for ResolvingConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let resolver = self.resolver.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let stream = resolver.connect(&host, port).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::io::Write as _;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::server::conn::auto;
    use pullcache_ca::{CertificateAuthority, Constraints, LeafCache, LeafOptions};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::resolve::DestinationGuard;
    use crate::tls::TlsSettings;

    const HOST: &str = "registry.test";

    /// A TLS registry for [`HOST`] on loopback that answers 200 to
    /// everything and counts handshakes and connections that ended.
    struct Registry {
        addr: SocketAddr,
        ca_file: tempfile::NamedTempFile,
        handshakes: Arc<AtomicUsize>,
        ended: Arc<AtomicUsize>,
    }

    impl Registry {
        async fn start() -> Registry {
            let ca = Arc::new(
                CertificateAuthority::generate(&Constraints::Permitted(vec![HOST.into()])).unwrap(),
            );
            let mut ca_file = tempfile::NamedTempFile::new().unwrap();
            ca_file.write_all(ca.cert_pem().as_bytes()).unwrap();
            let leaf = LeafCache::new(ca, LeafOptions::default())
                .await
                .unwrap()
                .get(HOST)
                .await
                .unwrap();
            let acceptor = TlsAcceptor::from(TlsSettings::new().unwrap().server_config(leaf));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let handshakes = Arc::new(AtomicUsize::new(0));
            let ended = Arc::new(AtomicUsize::new(0));
            let (handshakes2, ended2) = (handshakes.clone(), ended.clone());
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, handshakes, ended) =
                        (acceptor.clone(), handshakes2.clone(), ended2.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        handshakes.fetch_add(1, Ordering::SeqCst);
                        let service = service_fn(|_| async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                        ended.fetch_add(1, Ordering::SeqCst);
                    });
                }
            });
            Registry {
                addr,
                ca_file,
                handshakes,
                ended,
            }
        }

        fn client(&self, warm_ttl: Duration) -> UpstreamClient {
            let overrides = BTreeMap::from([(HOST.to_owned(), self.addr)]);
            let resolver = Resolver::new(
                overrides,
                Duration::from_secs(5),
                DestinationGuard::default(),
            );
            let mut client =
                UpstreamClient::new(Arc::new(resolver), &[self.ca_file.path()]).expect("client");
            client.connector.warm_ttl = warm_ttl;
            client
        }
    }

    /// Waits up to 5 s for `counter` to reach `want`.
    async fn reaches(counter: &AtomicUsize, want: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while counter.load(Ordering::SeqCst) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        counter.load(Ordering::SeqCst) == want
    }

    #[tokio::test]
    async fn an_untaken_warm_connection_is_closed_after_its_ttl() {
        let registry = Registry::start().await;
        let client = registry.client(Duration::from_millis(300));

        client.warm(HOST);
        client.warm(HOST);
        assert!(reaches(&registry.handshakes, 1).await, "no warm handshake");
        assert!(
            reaches(&registry.ended, 1).await,
            "the warm connection outlived its TTL"
        );
        assert_eq!(
            registry.handshakes.load(Ordering::SeqCst),
            1,
            "a host just warmed is not warmed again"
        );
        assert!(client.connector.lock().ready.is_empty());
    }

    #[tokio::test]
    async fn the_first_request_takes_the_warm_connection() {
        let registry = Registry::start().await;
        let client = registry.client(WARM_CONNECTION_TTL);

        client.warm(HOST);
        assert!(reaches(&registry.handshakes, 1).await, "no warm handshake");
        let request = Request::get(format!("https://{HOST}/v2/"))
            .body(crate::body::empty())
            .unwrap();
        let response = client.send(request).await.expect("response");
        assert_eq!(response.status(), 200);
        assert_eq!(registry.handshakes.load(Ordering::SeqCst), 1);
        assert!(client.connector.lock().ready.is_empty());
    }
}
