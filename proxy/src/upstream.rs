//! The HTTPS client that talks to real registries: verified TLS (webpki
//! roots, the system's roots and `upstream.ca_files`), HTTP/1.1 or h2 by
//! ALPN, connection pooling, and connections made through [`Resolver`].

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
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
    client: Client<HttpsConnector<ResolvingConnector>, Body>,
}

impl UpstreamClient {
    /// Builds the client: roots from webpki-roots, the system store and
    /// `ca_files`; connections through `resolver`.
    pub fn new(
        resolver: Arc<Resolver>,
        ca_files: &[impl AsRef<Path>],
    ) -> Result<Self, UpstreamSetupError> {
        let roots = root_store(ca_files)?;
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .wrap_connector(ResolvingConnector { resolver });
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
            .build(https);
        Ok(UpstreamClient { client })
    }

    /// Sends one request (its URI must be absolute `https://`) and returns
    /// the response head as soon as it arrives; the body streams.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        let host = req.uri().host().unwrap_or_default().to_owned();
        self.client
            .request(req)
            .await
            .map_err(|source| classify(host, source))
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

impl tower_service::Service<Uri> for ResolvingConnector {
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
