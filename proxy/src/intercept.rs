//! Intercepted tunnels: accept the client's TLS with a leaf of ours for the
//! name it asked for, then serve HTTP/1.1 or h2 on the decrypted stream.
//!
//! The ClientHello is read first (under the same deadline as the rest of the
//! handshake) so the leaf can be chosen, or minted, for the SNI name.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::server::{Acceptor, ClientHello};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;
use tracing::{debug, info, warn};

use crate::body::Body;
use crate::connect::{ConnectTarget, TargetHost};
use crate::error::{error_response, Side};
use crate::idle::{Activity, Tracked};
use crate::{registry, State};

/// Why an intercepted tunnel was closed before serving anything.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("no TLS ClientHello within {0:?}")]
    Timeout(std::time::Duration),
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("SNI {sni:?} is not an intercepted host")]
    SniNotIntercepted { sni: String },
    #[error("no certificate for {host}: {source}")]
    Leaf {
        host: String,
        #[source]
        source: pullcache_ca::CaError,
    },
}

/// Serves one intercepted tunnel until the client is done with it.
pub async fn serve<IO>(state: Arc<State>, io: IO, target: ConnectTarget, client: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tls = match accept_tls(&state, io, &target).await {
        Ok(tls) => tls,
        Err(error) => {
            info!(%error, "intercepted TLS refused");
            return;
        }
    };
    let target = Arc::new(target);
    let service_state = state.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let state = service_state.clone();
        let target = target.clone();
        async move { Ok::<_, Infallible>(handle(&state, &target, client, req).await) }
    });
    let limits = &state.config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.timeouts.header_read)
        .max_buf_size(limits.max_header_bytes as usize)
        .max_headers(limits.max_headers as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes)
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS);
    let mut tls = tls;
    if let Some(limit) = tls_buffer_limit(client) {
        tls.get_mut().1.set_buffer_limit(Some(limit));
    }
    let activity = Activity::new();
    let io = TokioIo::new(Tracked::new(tls, activity.clone()));
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let idle = state.config.timeouts.keepalive_idle;
    tokio::select! {
        result = connection.as_mut() => log_connection_end(result),
        () = state.shutdown.cancelled() => {
            // Finish the requests in flight, take no new ones.
            connection.as_mut().graceful_shutdown();
            log_connection_end(connection.await);
        }
        () = activity.idle_for(idle) => {
            debug!("closing an idle intercepted connection");
            connection.as_mut().graceful_shutdown();
            log_connection_end(connection.await);
        }
    }
}

/// TLS output buffered before it goes to a client on this machine: one
/// record.
///
/// rustls encrypts up to 64 KiB before the socket sees any of it. A client
/// on the same machine (a node-local proxy, or a test) receives over
/// loopback, where each write is delivered at once and the client decrypts
/// on the other core while we encrypt: writing each 16 KiB record as it is
/// sealed keeps both busy. Measured with curl on 2 cores: hits at 1.13–1.19×
/// nginx's throughput instead of 0.97×, for 0.54–0.62 CPU-s/GB instead of
/// 0.39 (four times the writes). A remote client receives at the network's
/// pace, where larger writes only save syscalls, so it keeps the default.
const LOCAL_CLIENT_TLS_BUFFER: usize = 16 * 1024;

/// The TLS buffer limit for a client at `addr`, if not rustls' default.
fn tls_buffer_limit(addr: SocketAddr) -> Option<usize> {
    addr.ip()
        .to_canonical()
        .is_loopback()
        .then_some(LOCAL_CLIENT_TLS_BUFFER)
}

/// Streams one h2 client may open at once: more than any registry client
/// uses, few enough to bound the work one connection can start.
const H2_MAX_CONCURRENT_STREAMS: u32 = 128;

fn log_connection_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(error) = result {
        debug!(%error, "intercepted connection ended with an error");
    }
}

async fn accept_tls<IO>(
    state: &State,
    io: IO,
    target: &ConnectTarget,
) -> Result<tokio_rustls::server::TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let limit = state.config.timeouts.tls_handshake;
    let deadline = tokio::time::Instant::now() + limit;
    let start = tokio::time::timeout_at(deadline, LazyConfigAcceptor::new(Acceptor::default(), io))
        .await
        .map_err(|_| HandshakeError::Timeout(limit))?
        .map_err(HandshakeError::Tls)?;
    let host = leaf_host(state, &start.client_hello(), target)?;
    let leaf = state
        .leaves
        .get(&host)
        .await
        .map_err(|source| HandshakeError::Leaf {
            host: host.clone(),
            source,
        })?;
    let config = state.tls.server_config(leaf);
    tokio::time::timeout_at(deadline, start.into_stream(config))
        .await
        .map_err(|_| HandshakeError::Timeout(limit))?
        .map_err(HandshakeError::Tls)
}

/// The name to present a certificate for: the SNI name when the client sent
/// one (it must be intercepted too), else the CONNECT host.
fn leaf_host(
    state: &State,
    hello: &ClientHello<'_>,
    target: &ConnectTarget,
) -> Result<String, HandshakeError> {
    match hello.server_name() {
        Some(sni) => {
            let normalised = pullcache_config::normalize_host(sni);
            match normalised {
                Some(name) if state.config.intercept.intercepts(&name) => Ok(name),
                _ => Err(HandshakeError::SniNotIntercepted {
                    sni: sni.to_owned(),
                }),
            }
        }
        None => Ok(match &target.host {
            TargetHost::Name(name) => name.clone(),
            TargetHost::Ip(ip) => ip.to_string(),
        }),
    }
}

/// Serves one decrypted request; every failure becomes a response here so
/// hyper never sees an error. Each request is logged once.
async fn handle(
    state: &Arc<State>,
    target: &ConnectTarget,
    client: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match registry::serve::handle(state, target, req).await {
        Ok((response, outcome)) => {
            let status = response.status().as_u16();
            match outcome {
                Some(outcome) => {
                    state.metrics.outcome(&outcome);
                    info!(client.addr = %client, http.method = %method, http.path = %path, http.status = status, cache.outcome = %outcome, "served");
                }
                None => {
                    debug!(client.addr = %client, http.method = %method, http.path = %path, http.status = status, "forwarded")
                }
            }
            response
        }
        Err(error) => {
            match error.side() {
                Side::Upstream | Side::Local => {
                    warn!(client.addr = %client, http.method = %method, http.path = %path, %error, "request failed")
                }
                Side::Client => {
                    info!(client.addr = %client, http.method = %method, http.path = %path, %error, "request refused")
                }
            }
            if path.starts_with("/v2/") {
                registry::errors::error_response(&error)
            } else {
                error_response(&error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clients_on_this_machine_get_record_sized_writes() {
        for local in [
            "127.0.0.1:1",
            "127.8.9.10:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            let addr: SocketAddr = local.parse().unwrap();
            assert_eq!(
                tls_buffer_limit(addr),
                Some(LOCAL_CLIENT_TLS_BUFFER),
                "{local}"
            );
        }
        for remote in [
            "10.0.0.7:1",
            "192.168.1.2:1",
            "[2001:db8::1]:1",
            "[::ffff:10.0.0.7]:1",
        ] {
            let addr: SocketAddr = remote.parse().unwrap();
            assert_eq!(tls_buffer_limit(addr), None, "{remote}");
        }
    }
}
