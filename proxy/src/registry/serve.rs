//! Answering registry requests inside an intercepted tunnel: blobs and
//! manifests from the cache when we may, through one shared upstream fetch
//! when we must, and everything else passed through untouched.
//!
//! The stages, in order: [`handle`] routes; [`Access::visibility`] decides
//! whether the repository may be served from the cache at all; then
//! [`blob`], [`manifest_by_digest`] or [`manifest_by_tag`] answer from the
//! cache ([`serve_blob_hit`], [`serve_manifest_hit`]) or fetch
//! ([`join_blob_fill`], [`fetch_manifest`]). Every answer carries a
//! [`CacheOutcome`] that is logged once.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::{info, warn};

use super::access::{https_uri, Visibility};
use super::digest::Digest;
use super::media::{self, accepts, DOCKER_CONTENT_DIGEST, MAX_MANIFEST_SIZE, OCTET_STREAM};
use super::range::RangeRequest;
use super::route::{Reference, RegistryRoute, RepoName, RouteKind};
use crate::body::{self, Body};
use crate::cache::flight::{self, FlightState, Joined};
use crate::cache::store::digest_of;
use crate::cache::{is_fresh, BlobInfo};
use crate::connect::ConnectTarget;
use crate::error::ProxyError;
use crate::{fill, forward, State};

/// How a request was answered, for the log and for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from the cache, no upstream request.
    Hit,
    /// Fetched from upstream (and committed if it verified).
    Miss,
    /// Joined a fetch another request had started.
    Joined,
    /// A tag past its TTL that upstream confirmed.
    Revalidated,
    /// A tag past its TTL served because upstream could not confirm it.
    Stale,
    /// Passed through to upstream, uncached.
    Bypass(NoCacheReason),
}

/// Why a cacheable request was passed through instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCacheReason {
    /// The repository needs credentials.
    NotPublic,
    /// Visibility could not be checked.
    VisibilityUnknown,
    /// The cached media type is not in the client's `Accept`.
    NotAcceptable,
    /// A `HEAD` for something not cached is sent upstream as a `HEAD`.
    HeadMiss,
    /// Upstream answered something other than 200.
    UpstreamStatus(u16),
    /// The response had no usable media type or was too big to cache.
    Uncacheable,
}

impl fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheOutcome::Hit => f.write_str("hit"),
            CacheOutcome::Miss => f.write_str("miss"),
            CacheOutcome::Joined => f.write_str("joined"),
            CacheOutcome::Revalidated => f.write_str("revalidated"),
            CacheOutcome::Stale => f.write_str("stale"),
            CacheOutcome::Bypass(reason) => write!(f, "bypass:{reason:?}"),
        }
    }
}

type Answer = Result<(Response<Body>, Option<CacheOutcome>), ProxyError>;

/// Answers one request received inside a tunnel opened to `target`.
/// Non-registry requests and uncacheable ones are forwarded untouched.
pub async fn handle(state: &Arc<State>, target: &ConnectTarget, req: Request<Incoming>) -> Answer {
    let cacheable_method = req.method() == Method::GET || req.method() == Method::HEAD;
    let path = req.uri().path();
    if cacheable_method && (path == "/v2/" || path == "/v2") {
        return ping(state, target, req).await.map(|r| (r, None));
    }
    let route = match RegistryRoute::parse(path) {
        Some(route) if cacheable_method => route,
        _ => {
            return forward::forward(state, target, req)
                .await
                .map(|r| (r, None))
        }
    };
    forward::check_authority(target, &req)?;
    let registry = target.https_authority();
    let visibility = state
        .access
        .visibility(&state.cache, &registry, &route.name, req.uri().path())
        .await;
    match visibility {
        Visibility::Public => {}
        Visibility::Private => return pass(state, target, req, NoCacheReason::NotPublic).await,
        Visibility::Unknown => {
            return pass(state, target, req, NoCacheReason::VisibilityUnknown).await
        }
    }
    let request = Cacheable {
        state,
        target,
        registry,
        name: route.name,
        accept: joined_accept(req.headers()),
        req,
    };
    match route.kind {
        RouteKind::Blob(digest) => blob(request, digest).await,
        RouteKind::Manifest(Reference::Digest(digest)) => manifest_by_digest(request, digest).await,
        RouteKind::Manifest(Reference::Tag(tag)) => manifest_by_tag(request, tag).await,
    }
}

/// All `Accept` header lines as one comma-separated list, if any.
fn joined_accept(headers: &HeaderMap) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// A blob or manifest request for a public repository.
struct Cacheable<'a> {
    state: &'a Arc<State>,
    target: &'a ConnectTarget,
    /// The upstream authority (`host` or `host:port`), part of tag keys.
    registry: String,
    name: RepoName,
    /// Every `Accept` line of the request, joined: Go clients send one line
    /// per media type.
    accept: Option<String>,
    req: Request<Incoming>,
}

impl Cacheable<'_> {
    /// Passes the client's own request through, uncached.
    async fn pass(self, reason: NoCacheReason) -> Answer {
        pass(self.state, self.target, self.req, reason).await
    }

    fn is_head(&self) -> bool {
        self.req.method() == Method::HEAD
    }

    fn accept(&self) -> Option<&str> {
        self.accept.as_deref()
    }

    /// Headers for pullcache's own request to upstream for this repository.
    async fn upstream_headers(&self, accept: bool) -> HeaderMap {
        let mut headers = self
            .state
            .access
            .own_headers(&self.registry, &self.name)
            .await;
        if accept {
            for value in self.req.headers().get_all(header::ACCEPT) {
                headers.append(header::ACCEPT, value.clone());
            }
        }
        headers
    }

    /// Sends pullcache's own request, renewing an anonymous token once if
    /// upstream refuses it.
    async fn fetch(&self, method: Method, accept: bool) -> Result<Response<Incoming>, ProxyError> {
        let uri = https_uri(&self.registry, self.req.uri().path())?;
        let fetcher = &self.state.fetcher;
        let headers = self.upstream_headers(accept).await;
        let had_token = headers.contains_key(header::AUTHORIZATION);
        let response = fetcher
            .send_following(method.clone(), uri.clone(), headers)
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED && had_token {
            self.state.access.forget_token(&self.registry, &self.name);
            let headers = self.upstream_headers(accept).await;
            return fetcher.send_following(method, uri, headers).await;
        }
        Ok(response)
    }
}

async fn pass(
    state: &Arc<State>,
    target: &ConnectTarget,
    req: Request<Incoming>,
    reason: NoCacheReason,
) -> Answer {
    let response = forward::forward(state, target, req).await?;
    Ok((response, Some(CacheOutcome::Bypass(reason))))
}

/// `GET /v2/`: passed through, but answered by pullcache itself when the
/// upstream cannot be reached or rate-limits, so that clients go on to ask
/// for (cached) content without needing the token service.
async fn ping(
    state: &Arc<State>,
    target: &ConnectTarget,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    match forward::forward(state, target, req).await {
        Ok(response) if response.status() != StatusCode::TOO_MANY_REQUESTS => Ok(response),
        Ok(_) => {
            warn!(registry.host = %target, "upstream rate-limits /v2/; answering it from pullcache");
            Ok(offline_ping())
        }
        Err(error) if error.is_upstream_unreachable() => {
            warn!(registry.host = %target, %error, "upstream unreachable; answering /v2/ from pullcache");
            Ok(offline_ping())
        }
        Err(error) => Err(error),
    }
}

fn offline_ping() -> Response<Body> {
    let mut response = Response::new(body::full("{}"));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        media::DOCKER_DISTRIBUTION_API_VERSION,
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

// === blobs ===

async fn blob(request: Cacheable<'_>, digest: Digest) -> Answer {
    let state = request.state;
    if let Some(info) = state.cache.blob(&digest) {
        if let Some(response) = serve_blob_hit(state, &digest, &info, &request.req).await? {
            return Ok((response, Some(CacheOutcome::Hit)));
        }
    }
    if request.is_head() {
        return request.pass(NoCacheReason::HeadMiss).await;
    }
    join_blob_fill(request, digest).await
}

/// Serves a committed blob, honouring `Range`. `None` if the file is gone
/// (it is then forgotten, and the request is treated as a miss).
async fn serve_blob_hit<B>(
    state: &Arc<State>,
    digest: &Digest,
    info: &BlobInfo,
    req: &Request<B>,
) -> Result<Option<Response<Body>>, ProxyError> {
    let store = state.cache.store().clone();
    let wanted = digest.clone();
    let opened = tokio::task::spawn_blocking(move || store.open_blob(&wanted))
        .await
        .map_err(|e| ProxyError::Local(e.to_string()))?;
    let (file, size) = match opened {
        Ok(Some(found)) => found,
        Ok(None) => {
            warn!(oci.digest = %digest, "a cached blob is missing from disk; fetching it again");
            state.cache.forget_blob(digest).await;
            return Ok(None);
        }
        Err(error) => {
            warn!(oci.digest = %digest, %error, "cannot open a cached blob; fetching it again");
            return Ok(None);
        }
    };
    state.cache.note_hit(digest);
    let media_type = info.media_type.as_deref().unwrap_or(OCTET_STREAM);
    let range = range_of(req, size);
    let head = req.method() == Method::HEAD;
    let mut response = blob_response(digest, media_type, size, range);
    if !head {
        if let Some((start, end)) = span(range, size) {
            *response.body_mut() =
                flight::file_body(state.cache.read_blocks.clone(), file, start, end);
        }
    }
    Ok(Some(response))
}

fn range_of<B>(req: &Request<B>, size: u64) -> RangeRequest {
    let header = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    RangeRequest::parse(header, size)
}

/// The byte span `[start, end)` a response body covers, if any.
fn span(range: RangeRequest, size: u64) -> Option<(u64, u64)> {
    match range {
        RangeRequest::Full => Some((0, size)),
        RangeRequest::Partial { start, end } => Some((start, end + 1)),
        RangeRequest::Unsatisfiable => None,
    }
}

/// The status and headers for a blob of known size; the body is empty
/// until the caller sets one.
fn blob_response(
    digest: &Digest,
    media_type: &str,
    size: u64,
    range: RangeRequest,
) -> Response<Body> {
    let mut response = Response::new(body::empty());
    let headers = response.headers_mut();
    let length = match range {
        RangeRequest::Full => size,
        RangeRequest::Partial { start, end } => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {start}-{end}/{size}")),
            );
            end - start + 1
        }
        RangeRequest::Unsatisfiable => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            0
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::CONTENT_TYPE, header_value(media_type));
    headers.insert(DOCKER_CONTENT_DIGEST, header_value(&digest.to_string()));
    headers.insert(header::ETAG, header_value(&format!("\"{digest}\"")));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    *response.status_mut() = match range {
        RangeRequest::Full => StatusCode::OK,
        RangeRequest::Partial { .. } => StatusCode::PARTIAL_CONTENT,
        RangeRequest::Unsatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
    };
    response
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Serves a blob through the single flight for its digest: starts the
/// upstream fetch if nobody has, then streams the growing file.
async fn join_blob_fill(request: Cacheable<'_>, digest: Digest) -> Answer {
    let state = request.state;
    let joined = state.cache.flights.join(&digest);
    let (flight, outcome) = match joined {
        Joined::Leader(flight) => {
            // Spawned before this function awaits anything: if this client
            // goes away now, the flight still finishes for its followers.
            let task = fill::fill_blob(
                state.clone(),
                flight.clone(),
                digest.clone(),
                request.req.uri().path().to_owned(),
                (request.registry.clone(), request.name.clone()),
            );
            state.tasks.spawn(task);
            (flight, CacheOutcome::Miss)
        }
        Joined::Follower(flight) => (flight, CacheOutcome::Joined),
    };
    let mut progress = flight.subscribe();
    let state_now = progress
        .wait_for(|s| !matches!(s, FlightState::Starting))
        .await
        .map(|s| s.clone())
        .unwrap_or(FlightState::Failed {
            resumable: false,
            streamed: false,
            reason: "the fetch ended".into(),
        });
    let streaming = match state_now.clone() {
        FlightState::Streaming {
            file,
            total,
            media_type,
            ..
        } => Some((file, total, media_type)),
        FlightState::Verified {
            file,
            size,
            media_type,
        } => Some((file, Some(size), media_type)),
        FlightState::Failed { .. } | FlightState::Starting => None,
    };
    match streaming {
        Some((file, total, media_type)) => {
            let (status_range, start, end) = match total {
                Some(size) => {
                    let range = range_of(&request.req, size);
                    match span(range, size) {
                        Some((start, end)) => (Some((range, size)), start, end),
                        None => (Some((range, size)), 0, 0),
                    }
                }
                None => (None, 0, u64::MAX),
            };
            let mut response = match status_range {
                Some((range, size)) => blob_response(&digest, &media_type, size, range),
                None => {
                    // Unknown length: streamed chunked, whole blob only.
                    let mut response = blob_response(&digest, &media_type, 0, RangeRequest::Full);
                    response.headers_mut().remove(header::CONTENT_LENGTH);
                    response.headers_mut().remove(header::ACCEPT_RANGES);
                    response
                }
            };
            if end > start {
                let resume = resume_from_upstream(
                    state.clone(),
                    request.registry.clone(),
                    request.name.clone(),
                    request.req.uri().path().to_owned(),
                );
                *response.body_mut() = flight::growing_body(
                    state.cache.read_blocks.clone(),
                    file,
                    progress,
                    flight.follow(),
                    start,
                    end,
                    Some(resume),
                );
            }
            Ok((response, Some(outcome)))
        }
        None => {
            // Failed before any byte, or found already cached: the cache
            // may have it now; otherwise go upstream ourselves.
            if let Some(info) = state.cache.blob(&digest) {
                if let Some(response) = serve_blob_hit(state, &digest, &info, &request.req).await? {
                    return Ok((response, Some(CacheOutcome::Hit)));
                }
            }
            let reason = match state_now {
                FlightState::Failed { reason, .. } => reason,
                _ => "the fetch finished before it could be joined".into(),
            };
            info!(oci.digest = %digest, %reason, "shared fetch unavailable; passing the request through");
            let Cacheable {
                state, target, req, ..
            } = request;
            let response = forward::forward(state, target, req).await?;
            let status = response.status().as_u16();
            Ok((
                response,
                Some(CacheOutcome::Bypass(NoCacheReason::UpstreamStatus(status))),
            ))
        }
    }
}

/// How a reader fetches the rest of a blob itself when the shared
/// download cannot be stored (a full disk): a range request to upstream
/// with pullcache's own credentials, abandoned like a fill if upstream goes
/// quiet for `cache.upstream_stall`. The client still gets every byte; the
/// cache simply does not keep them.
fn resume_from_upstream(
    state: Arc<State>,
    registry: String,
    name: RepoName,
    path: String,
) -> flight::Resume {
    Arc::new(move |from, end| {
        let (state, registry, name, path) =
            (state.clone(), registry.clone(), name.clone(), path.clone());
        Box::pin(async move {
            let uri = https_uri(&registry, &path)?;
            let mut headers = state.access.own_headers(&registry, &name).await;
            let range = if end == u64::MAX {
                format!("bytes={from}-")
            } else {
                format!("bytes={from}-{}", end - 1)
            };
            headers.insert(header::RANGE, header_value(&range));
            let response = state
                .fetcher
                .send_following(Method::GET, uri, headers)
                .await?;
            match response.status() {
                StatusCode::PARTIAL_CONTENT => {}
                StatusCode::OK if from == 0 => {}
                status => {
                    return Err(format!("upstream answered {status} to a range request").into())
                }
            }
            let body = body::boxed(response.into_body());
            Ok(body::with_stall(body, state.fetcher.stall()))
        })
    })
}

// === manifests ===

async fn manifest_by_digest(request: Cacheable<'_>, digest: Digest) -> Answer {
    let state = request.state;
    if let Some(info) = state.cache.blob(&digest) {
        if let Some(media_type) = info.media_type.clone() {
            if !accepts(request.accept(), &media_type) {
                return request.pass(NoCacheReason::NotAcceptable).await;
            }
            if let Some(response) =
                serve_manifest_hit(state, &digest, &media_type, &request.req).await?
            {
                return Ok((response, Some(CacheOutcome::Hit)));
            }
        }
    }
    if request.is_head() {
        return request.pass(NoCacheReason::HeadMiss).await;
    }
    let lock_key = digest.to_string();
    let _guard = state.manifest_locks.lock(&lock_key).await;
    // Another request may have fetched it while we waited.
    if let Some(info) = state.cache.blob(&digest) {
        if let Some(media_type) = info.media_type.as_deref() {
            if accepts(request.accept(), media_type) {
                if let Some(response) =
                    serve_manifest_hit(state, &digest, media_type, &request.req).await?
                {
                    return Ok((response, Some(CacheOutcome::Hit)));
                }
            }
        }
    }
    fetch_manifest(request, Some(&digest), None).await
}

async fn manifest_by_tag(request: Cacheable<'_>, tag: String) -> Answer {
    let state = request.state;
    let key = format!("{}/{}:{tag}", request.registry, request.name);
    let ttl = state.config.cache.tag_ttl;
    let cached = state.cache.tag(&key).filter(|t| {
        state.cache.blob(&t.digest).is_some() && accepts(request.accept(), &t.media_type)
    });
    let Some(cached) = cached else {
        if request.is_head() {
            return head_tag_upstream(request, &key).await;
        }
        let _guard = state.manifest_locks.lock(&key).await;
        // A request ahead of us may have just fetched this tag.
        if let Some(fresh) = state
            .cache
            .tag(&key)
            .filter(|t| is_fresh(t.fetched_at, ttl) && accepts(request.accept(), &t.media_type))
        {
            if let Some(response) =
                serve_manifest_hit(state, &fresh.digest, &fresh.media_type, &request.req).await?
            {
                return Ok((response, Some(CacheOutcome::Hit)));
            }
        }
        return fetch_manifest(request, None, Some(&key)).await;
    };
    if is_fresh(cached.fetched_at, ttl) {
        if let Some(response) =
            serve_manifest_hit(state, &cached.digest, &cached.media_type, &request.req).await?
        {
            return Ok((response, Some(CacheOutcome::Hit)));
        }
    }
    // Past its TTL: ask upstream with a HEAD (free under Docker Hub's limit).
    let revalidation = request.fetch(Method::HEAD, true).await;
    let current = match &revalidation {
        Ok(response) if response.status() == StatusCode::OK => response
            .headers()
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok()),
        _ => None,
    };
    match revalidation {
        Ok(response) if response.status() == StatusCode::OK => {
            let Some(current) = current else {
                // No digest to compare: fetch the manifest again.
                return fetch_manifest(request, None, Some(&key)).await;
            };
            if current == cached.digest {
                state
                    .cache
                    .put_tag(&key, &cached.digest, &cached.media_type)
                    .await;
                if let Some(response) =
                    serve_manifest_hit(state, &cached.digest, &cached.media_type, &request.req)
                        .await?
                {
                    return Ok((response, Some(CacheOutcome::Revalidated)));
                }
            }
            if let Some(media_type) = state.cache.blob(&current).and_then(|i| i.media_type) {
                if accepts(request.accept(), &media_type) {
                    state.cache.put_tag(&key, &current, &media_type).await;
                    if let Some(response) =
                        serve_manifest_hit(state, &current, &media_type, &request.req).await?
                    {
                        return Ok((response, Some(CacheOutcome::Revalidated)));
                    }
                }
            }
            if request.is_head() {
                // The tag moved to something we do not have; a HEAD is
                // answered with upstream's HEAD, never turned into a GET.
                let (mut parts, _) = response.into_parts();
                forward::strip_hop_by_hop(&mut parts.headers);
                let status = parts.status.as_u16();
                return Ok((
                    Response::from_parts(parts, body::empty()),
                    Some(CacheOutcome::Bypass(NoCacheReason::UpstreamStatus(status))),
                ));
            }
            fetch_manifest(request, None, Some(&key)).await
        }
        Ok(response) if is_upstream_trouble(response.status()) => {
            warn!(registry.host = %request.registry, oci.tag = %key, http.status = response.status().as_u16(), "upstream cannot revalidate a tag; serving it stale");
            serve_stale(request, &cached.digest, &cached.media_type).await
        }
        Ok(response) => {
            // 401, 403, 404…: upstream says something we must not paper
            // over; let the client hear it with its own request.
            let status = response.status().as_u16();
            request.pass(NoCacheReason::UpstreamStatus(status)).await
        }
        Err(error) if error.is_upstream_unreachable() => {
            warn!(registry.host = %request.registry, oci.tag = %key, %error, "upstream unreachable; serving a tag stale");
            serve_stale(request, &cached.digest, &cached.media_type).await
        }
        Err(error) => Err(error),
    }
}

/// A `HEAD` by tag that the cache cannot answer goes upstream as a `HEAD`.
/// What it says is remembered (tag → digest), because clients such as
/// containerd resolve a tag with `HEAD` and then fetch by digest: once that
/// manifest is cached, the tag can be answered offline too.
async fn head_tag_upstream(request: Cacheable<'_>, key: &str) -> Answer {
    let response = request.fetch(Method::HEAD, true).await?;
    let status = response.status();
    let (mut parts, _) = response.into_parts();
    forward::strip_hop_by_hop(&mut parts.headers);
    if status == StatusCode::OK {
        let digest = parts
            .headers
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let media_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| media::essence(v).to_owned());
        if let (Some(digest), Some(media_type)) = (digest, media_type) {
            request.state.cache.put_tag(key, &digest, &media_type).await;
        }
    }
    let outcome = CacheOutcome::Bypass(NoCacheReason::HeadMiss);
    Ok((Response::from_parts(parts, body::empty()), Some(outcome)))
}

fn is_upstream_trouble(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

async fn serve_stale(request: Cacheable<'_>, digest: &Digest, media_type: &str) -> Answer {
    match serve_manifest_hit(request.state, digest, media_type, &request.req).await? {
        Some(response) => Ok((response, Some(CacheOutcome::Stale))),
        None => Err(ProxyError::BadGateway(
            "upstream unavailable and the cached manifest is gone".into(),
        )),
    }
}

/// Serves a cached manifest from memory (manifests are small).
async fn serve_manifest_hit<B>(
    state: &Arc<State>,
    digest: &Digest,
    media_type: &str,
    req: &Request<B>,
) -> Result<Option<Response<Body>>, ProxyError> {
    let path = state.cache.store().blob_path(digest);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(error) => {
            warn!(oci.digest = %digest, %error, "a cached manifest cannot be read; fetching it again");
            state.cache.forget_blob(digest).await;
            return Ok(None);
        }
    };
    state.cache.note_hit(digest);
    Ok(Some(manifest_response(
        digest,
        media_type,
        Bytes::from(bytes),
        req.method() == Method::HEAD,
    )))
}

fn manifest_response(
    digest: &Digest,
    media_type: &str,
    bytes: Bytes,
    head: bool,
) -> Response<Body> {
    let mut response = blob_response(digest, media_type, bytes.len() as u64, RangeRequest::Full);
    response.headers_mut().remove(header::ACCEPT_RANGES);
    if !head {
        *response.body_mut() = body::full(bytes);
    }
    response
}

/// Fetches a manifest with pullcache's own (anonymous) request, verifies
/// it (against `expected` when fetched by digest, and against upstream's
/// `Docker-Content-Digest`), commits it, and records the tag if `tag_key`.
async fn fetch_manifest(
    request: Cacheable<'_>,
    expected: Option<&Digest>,
    tag_key: Option<&str>,
) -> Answer {
    let state = request.state;
    let response = request.fetch(Method::GET, true).await?;
    if response.status() != StatusCode::OK {
        let status = response.status().as_u16();
        let (mut parts, incoming) = response.into_parts();
        forward::strip_hop_by_hop(&mut parts.headers);
        return Ok((
            Response::from_parts(parts, body::boxed(incoming)),
            Some(CacheOutcome::Bypass(NoCacheReason::UpstreamStatus(status))),
        ));
    }
    let media_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| media::essence(v).to_owned())
        .filter(|v| !v.is_empty());
    let announced = response
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v).ok());
    let stall = state.fetcher.stall();
    let collected = tokio::time::timeout(
        stall,
        http_body_util::Limited::new(response.into_body(), MAX_MANIFEST_SIZE).collect(),
    )
    .await
    .map_err(|_| ProxyError::UpstreamTimeout {
        host: request.registry.clone(),
        after: stall,
    })?
    .map_err(|e| ProxyError::BadGateway(format!("manifest body: {e}")))?;
    let bytes = collected.to_bytes();

    let algorithm = expected.map_or(super::digest::Algorithm::Sha256, |d| d.algorithm());
    let actual = digest_of(algorithm, &bytes);
    if let Some(expected) = expected.filter(|e| **e != actual) {
        state.metrics.digest_mismatch();
        return Err(ProxyError::BadGateway(format!(
            "manifest from upstream does not match {expected} (got {actual})"
        )));
    }
    if let Some(announced) =
        announced.filter(|a| a.algorithm() == actual.algorithm() && *a != actual)
    {
        state.metrics.digest_mismatch();
        return Err(ProxyError::BadGateway(format!(
            "manifest from upstream announced {announced} but hashes to {actual}"
        )));
    }
    let Some(media_type) = media_type else {
        let response = manifest_response(&actual, OCTET_STREAM, bytes, request.is_head());
        return Ok((
            response,
            Some(CacheOutcome::Bypass(NoCacheReason::Uncacheable)),
        ));
    };
    fill::commit_bytes(state, &actual, &bytes, &media_type).await;
    if let Some(key) = tag_key {
        state.cache.put_tag(key, &actual, &media_type).await;
    }
    let response = manifest_response(&actual, &media_type, bytes, request.is_head());
    Ok((response, Some(CacheOutcome::Miss)))
}
