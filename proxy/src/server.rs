//! The proxy listener: accept within the connection limits, serve HTTP/1.1
//! on each connection (CONNECT and the admin pages), and drain on shutdown.
//!
//! CONNECTed streams leave hyper once upgraded, so hyper's own graceful
//! shutdown no longer sees them; they run on the [`State`]'s task tracker,
//! which shutdown waits for (up to the grace period) together with the
//! connections still in hyper. A connection's slot in the limits is held
//! until its tunnel or intercepted session ends, not just until upgrade.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use http::{Method, Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn, Instrument};

use crate::body::Body;
use crate::connect;
use crate::error::{error_response, ProxyError, Refusal, Side};
use crate::idle::{Activity, Tracked};
use crate::{admin, policy, State};

/// Pause after a failed accept (e.g. out of file descriptors) so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// How long writing a refusal to an over-limit client may take.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Open client connections, in total and per address.
#[derive(Debug, Default)]
pub struct ConnectionLimits {
    total: AtomicUsize,
    per_client: DashMap<IpAddr, usize>,
}

/// Why a new connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overload {
    /// `limits.max_connections` reached: 503.
    Total,
    /// `limits.max_connections_per_client` reached for this address: 429.
    PerClient,
}

impl ConnectionLimits {
    /// Open connections in total.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn acquire(&self, ip: IpAddr, limits: &pullcache_config::Limits) -> Result<(), Overload> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= limits.max_connections as usize {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Overload::Total);
        }
        let mut count = self.per_client.entry(ip).or_insert(0);
        if *count >= limits.max_connections_per_client as usize {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Overload::PerClient);
        }
        *count += 1;
        Ok(())
    }

    fn release(&self, ip: IpAddr) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.per_client.remove_if_mut(&ip, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// A connection's slot in [`ConnectionLimits`], released when the last
/// clone is dropped (the upgraded tunnel keeps one).
pub struct ConnectionSlot {
    state: Arc<State>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.state.connections.release(self.ip);
    }
}

/// Accepts connections until shutdown, then waits for the work in flight
/// for at most the grace period.
pub async fn accept_loop(state: Arc<State>, listener: TcpListener) {
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => admit(&state, stream, peer),
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    state.tasks.close();
    let grace = state.config.timeouts.shutdown_grace;
    info!(in_flight = state.tasks.len(), grace = ?grace, "stopped accepting; draining");
    if tokio::time::timeout(grace, state.tasks.wait())
        .await
        .is_err()
    {
        warn!(
            in_flight = state.tasks.len(),
            "grace period over; closing what is left"
        );
    }
}

/// Starts serving a new connection, or turns it away with 503 or 429 when
/// a connection limit is reached.
fn admit(state: &Arc<State>, stream: TcpStream, peer: SocketAddr) {
    let ip = peer.ip().to_canonical();
    match state.connections.acquire(ip, &state.config.limits) {
        Ok(()) => {
            let slot = Arc::new(ConnectionSlot {
                state: state.clone(),
                ip,
            });
            let span = tracing::debug_span!("client", client.addr = %peer);
            state
                .tasks
                .spawn(serve_client(state.clone(), stream, peer, slot).instrument(span));
        }
        Err(overload) => {
            let (status, reason) = match overload {
                Overload::Total => ("503 Service Unavailable", "limits.max_connections"),
                Overload::PerClient => {
                    ("429 Too Many Requests", "limits.max_connections_per_client")
                }
            };
            info!(client.addr = %peer, limit = reason, "refused: connection limit reached");
            state.tasks.spawn(refuse_connection(stream, status, reason));
        }
    }
}

/// Writes a minimal response to a connection we will not serve.
async fn refuse_connection(mut stream: TcpStream, status: &'static str, limit: &'static str) {
    let body = format!("pullcache: too many connections ({limit})\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 1\r\nProxy-Status: pullcache; error=connection_limit_reached\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, write).await;
}

async fn serve_client(
    state: Arc<State>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<ConnectionSlot>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%error, "cannot set TCP_NODELAY");
    }
    let activity = Activity::new();
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let service_state = state.clone();
    let service = service_fn(move |req| {
        let state = service_state.clone();
        let slot = slot.clone();
        async move { Ok::<_, Infallible>(handle(state, peer, req, slot).await) }
    });
    let limits = &state.config.limits;
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.timeouts.header_read)
        .max_buf_size(limits.max_header_bytes as usize)
        .max_headers(limits.max_headers as usize)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let idle = state.config.timeouts.keepalive_idle;
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = state.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = activity.idle_for(idle) => {
            debug!(client.addr = %peer, "closing an idle client connection");
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        if error.is_parse() || error.is_parse_too_large() {
            info!(client.addr = %peer, %error, "refused malformed request");
        } else if error.is_timeout() {
            info!(client.addr = %peer, %error, "refused: request headers not received in time");
        } else {
            debug!(client.addr = %peer, %error, "client connection ended with an error");
        }
    }
}

/// Answers one request on the proxy port; errors become responses here.
async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
    slot: Arc<ConnectionSlot>,
) -> Response<Body> {
    let method = req.method().clone();
    let target = req.uri().to_string();
    match route(state, peer, req, slot).await {
        Ok(response) => response,
        Err(error) => {
            match error.side() {
                Side::Client => {
                    info!(client.addr = %peer, http.method = %method, http.target = %target, %error, "refused")
                }
                Side::Upstream | Side::Local => {
                    warn!(client.addr = %peer, http.method = %method, http.target = %target, %error, "failed")
                }
            }
            error_response(&error)
        }
    }
}

async fn route(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
    slot: Arc<ConnectionSlot>,
) -> Result<Response<Body>, ProxyError> {
    policy::check_client(&state.config, peer.ip())?;
    // Nothing on the proxy port takes a body: CONNECT carries its payload
    // after the upgrade, and the admin pages are reads.
    if !req.body().is_end_stream() {
        return Err(ProxyError::UnexpectedBody {
            method: req.method().clone(),
        });
    }
    let proxied = req.method() == Method::CONNECT || req.uri().authority().is_some();
    if proxied {
        // The admin pages stay open (within access.clients) so nodes can
        // fetch ca.crt before they have credentials configured.
        if let Some(auth) = &state.auth {
            let user = auth.check(req.headers()).await.map_err(Refusal::from)?;
            debug!(client.addr = %peer, proxy.user = %user, "authenticated");
        }
    }
    if req.method() == Method::CONNECT {
        return connect::handle_connect(state, peer, req, slot).await;
    }
    if proxied {
        return Err(ProxyError::NotConnect {
            method: req.method().clone(),
            uri: req.uri().clone(),
        });
    }
    Ok(admin::handle(&state, &req))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_per_client_and_in_total() {
        let limits = pullcache_config::Limits {
            max_connections: 3,
            max_connections_per_client: 2,
            ..Default::default()
        };
        let counts = ConnectionLimits::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(counts.acquire(a, &limits), Ok(()));
        assert_eq!(counts.acquire(a, &limits), Ok(()));
        assert_eq!(counts.acquire(a, &limits), Err(Overload::PerClient));
        assert_eq!(counts.acquire(b, &limits), Ok(()));
        assert_eq!(counts.acquire(b, &limits), Err(Overload::Total));
        assert_eq!(counts.open(), 3);
        counts.release(a);
        counts.release(a);
        assert!(
            !counts.per_client.contains_key(&a),
            "released addresses are forgotten"
        );
        assert_eq!(counts.acquire(b, &limits), Ok(()));
        assert_eq!(counts.open(), 2);
    }
}
