//! pullcache: a caching man-in-the-middle HTTPS proxy for container
//! registries.
//!
//! Clients send `CONNECT host:443`. For intercepted registry hosts the proxy
//! terminates TLS with a leaf certificate minted by its own CA and forwards
//! each request to the real registry; every other host is tunnelled
//! untouched. The path of one connection:
//!
//! `server` (accept, HTTP/1.1) → `connect` (parse, `policy`) →
//! `tunnel` | `intercept` (TLS, HTTP/1.1 or h2) → `forward` → `upstream`.

pub mod admin;
pub mod body;
pub mod cache;
pub mod connect;
pub mod data_dir;
pub mod error;
pub mod fill;
pub mod forward;
pub mod idle;
pub mod intercept;
pub mod keyed_lock;
pub mod lane;
pub mod metrics;
pub mod policy;
pub mod proxy_auth;
pub mod registry;
pub mod resolve;
pub mod server;
pub mod tls;
pub mod tunnel;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use pullcache_ca::{CertificateAuthority, Constraints, LeafCache, LeafOptions};
use pullcache_config::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cache::Cache;
use crate::keyed_lock::KeyedLocks;
use crate::metrics::Metrics;
use crate::proxy_auth::ProxyAuth;
use crate::registry::access::Access;
use crate::registry::fetch::Fetcher;
use crate::resolve::{DestinationGuard, Resolver};
use crate::tls::TlsSettings;
use crate::upstream::UpstreamClient;

/// What every connection task shares.
pub struct State {
    /// The validated configuration.
    pub config: Config,
    /// The root CA (its certificate is served at `/ca.crt`).
    pub ca: Arc<CertificateAuthority>,
    /// Leaf certificates, minted on first use per host.
    pub leaves: LeafCache,
    /// TLS settings shared by intercepted handshakes.
    pub tls: TlsSettings,
    /// Upstream name resolution with `[upstream.resolve]` overrides.
    pub resolver: Arc<Resolver>,
    /// The HTTPS client for upstream requests.
    pub upstream: UpstreamClient,
    /// pullcache's own registry requests (fills, probes, revalidations).
    pub fetcher: Fetcher,
    /// Which repositories may be served from the cache.
    pub access: Access,
    /// The blob and manifest cache.
    pub cache: Arc<Cache>,
    /// One manifest fetch at a time per tag or digest.
    pub manifest_locks: KeyedLocks,
    /// Counters served at `/metrics`.
    pub metrics: Metrics,
    /// Proxy authentication, when `access.users_file` is set.
    pub auth: Option<ProxyAuth>,
    /// Open client connections, in total and per address.
    pub connections: server::ConnectionLimits,
    /// Every task that serves a client, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Cancelled when the proxy should stop taking new work.
    pub shutdown: CancellationToken,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory is unusable.
    #[error(transparent)]
    DataDir(#[from] data_dir::DataDirError),
    /// The CA could not be loaded or created.
    #[error("CA in {dir}: {source}")]
    Ca {
        /// The CA directory.
        dir: String,
        /// What failed.
        source: pullcache_ca::CaError,
    },
    /// The upstream client could not be built.
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamSetupError),
    /// TLS settings could not be created.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The cache could not be opened.
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// The name constraints a new CA gets: the intercepted host patterns.
pub fn constraints_for(config: &Config) -> Constraints {
    let mut names: Vec<String> = config
        .intercept
        .hosts
        .iter()
        .map(|pattern| pattern.constraint_base().to_owned())
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        // Nothing is intercepted, so the CA should sign nothing: permit only
        // the reserved `.invalid` domain (RFC 6761), which no site can use.
        names.push("invalid".to_owned());
    }
    Constraints::Permitted(names)
}

/// A proxy that has its CA and its listener, ready to serve.
pub struct Server {
    state: Arc<State>,
    listener: TcpListener,
}

impl Server {
    /// Prepares the data directory, loads or creates the CA, builds the
    /// upstream client and binds the listener. Nothing is served yet.
    pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Server, StartError> {
        data_dir::prepare(&config.data_dir)?;
        let ca_dir = data_dir::ca_dir(&config.data_dir);
        let constraints = constraints_for(&config);
        let ca_error = |source| StartError::Ca {
            dir: ca_dir.display().to_string(),
            source,
        };
        let (ca, created) = {
            let ca_dir = ca_dir.clone();
            // Key generation and file syncs are blocking work.
            tokio::task::spawn_blocking(move || {
                CertificateAuthority::load_or_create(&ca_dir, &constraints)
            })
            .await
            .expect("CA setup does not panic")
            .map_err(ca_error)?
        };
        if !created {
            info!(ca.dir = %ca_dir.display(), "loaded the root CA");
        }
        for pattern in &config.intercept.hosts {
            if !ca.permits(pattern.constraint_base()) {
                warn!(
                    intercept.pattern = %pattern,
                    "the CA's name constraints do not cover this intercepted host; clients will reject its certificates (re-issue the CA with `pullcache ca init --force`)"
                );
            }
        }
        let ca = Arc::new(ca);
        let leaves = LeafCache::new(ca.clone(), LeafOptions::default())
            .await
            .map_err(ca_error)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let guard = DestinationGuard {
            access: Some(config.access.clone()),
            listener: listener.local_addr().ok(),
        };
        let resolver = Arc::new(Resolver::new(
            config.upstream.resolve.clone(),
            config.upstream.connect_timeout,
            guard,
        ));
        let upstream = UpstreamClient::new(resolver.clone(), &config.upstream.ca_files)?;
        let fetcher = Fetcher::new(upstream.clone(), config.cache.upstream_stall);
        let access = Access::new(fetcher.clone(), config.cache.visibility_ttl);
        let data_dir = config.data_dir.clone();
        let (cache, _recovery) = tokio::task::spawn_blocking(move || Cache::open(&data_dir))
            .await
            .expect("opening the cache does not panic")?;
        let auth = config.access.users.clone().map(ProxyAuth::new);
        let state = Arc::new(State {
            config,
            ca,
            leaves,
            tls: TlsSettings::new()?,
            resolver,
            upstream,
            fetcher,
            access,
            cache: Arc::new(cache),
            manifest_locks: KeyedLocks::default(),
            metrics: Metrics::default(),
            auth,
            connections: server::ConnectionLimits::default(),
            tasks: TaskTracker::new(),
            shutdown,
        });
        Ok(Server { state, listener })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the shutdown token is cancelled, then drains.
    pub async fn run(self) {
        let flusher = tokio::spawn(flush_hits_periodically(self.state.clone()));
        let state = self.state.clone();
        server::accept_loop(self.state, self.listener).await;
        flusher.abort();
        state.cache.flush_hits().await;
    }
}

/// Starts the proxy and serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let server = Server::start(config, shutdown).await?;
    info!(listen.addr = %server.local_addr().map_err(|source| StartError::Bind { addr: server.state.config.listen, source })?, "listening");
    server.run().await;
    Ok(())
}

/// How often hit counts and access times are written to the index.
const HIT_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

async fn flush_hits_periodically(state: Arc<State>) {
    let mut ticks = tokio::time::interval(HIT_FLUSH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        state.cache.flush_hits().await;
    }
}
