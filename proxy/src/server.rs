//! The proxy listener: accept, serve HTTP/1.1 on each connection (CONNECT
//! and the admin pages), and drain on shutdown.
//!
//! CONNECTed streams leave hyper once upgraded, so hyper's own graceful
//! shutdown no longer sees them; they run on the [`State`]'s task tracker,
//! which shutdown waits for (up to the grace period) together with the
//! connections still in hyper.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn, Instrument};

use crate::body::Body;
use crate::connect;
use crate::error::{error_response, ProxyError, Side};
use crate::{admin, policy, State};

/// Pause after a failed accept (e.g. out of file descriptors) so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until shutdown, then waits for the work in flight
/// for at most the grace period.
pub async fn accept_loop(state: Arc<State>, listener: TcpListener) {
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = tracing::debug_span!("client", client.addr = %peer);
                    state.tasks.spawn(serve_client(state.clone(), stream, peer).instrument(span));
                }
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

async fn serve_client(state: Arc<State>, stream: TcpStream, peer: SocketAddr) {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%error, "cannot set TCP_NODELAY");
    }
    let service_state = state.clone();
    let service = service_fn(move |req| {
        let state = service_state.clone();
        async move { Ok::<_, Infallible>(handle(state, peer, req).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.timeouts.header_read)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = state.shutdown.cancelled() => {
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
async fn handle(state: Arc<State>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let target = req.uri().to_string();
    match route(state, peer, req).await {
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
) -> Result<Response<Body>, ProxyError> {
    policy::check_client(&state.config, peer.ip())?;
    if req.method() == Method::CONNECT {
        return connect::handle_connect(state, peer, req).await;
    }
    if req.uri().authority().is_some() {
        return Err(ProxyError::NotConnect {
            method: req.method().clone(),
            uri: req.uri().clone(),
        });
    }
    Ok(admin::handle(&state, &req))
}
