//! Filling the cache from upstream: the detached task behind a blob's
//! single flight, and committing small verified bodies such as manifests.
//!
//! A blob fill streams the upstream body into an ingest file on a blocking
//! writer thread (writing and hashing are CPU and disk work, kept off the
//! async executor) while readers follow the file. Only when every byte is
//! in and the digest matches do readers get their last byte; the file is
//! then synced and renamed into `blobs/`.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;
use http::header;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use crate::cache::flight::{Flight, FlightState};
use crate::cache::store::{CommitError, Committed, IngestFile};
use crate::registry::access::https_uri;
use crate::registry::digest::Digest;
use crate::registry::media::OCTET_STREAM;
use crate::registry::route::RepoName;
use crate::State;

/// The most bytes gathered while a write is still running; past it the
/// network waits for the disk, so memory stays flat with blob size.
const WRITE_BATCH: usize = 1024 * 1024;

/// Why a fill did not commit.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// Upstream answered something other than 200.
    #[error("upstream answered {0}")]
    Status(StatusCode),
    /// The upstream request or body failed.
    #[error("upstream: {0}")]
    Upstream(String),
    /// Upstream went quiet for longer than `cache.upstream_stall`.
    #[error("upstream sent nothing for {0:?}")]
    Stalled(std::time::Duration),
    /// Upstream sent more than it announced.
    #[error("upstream sent more than the {0} bytes it announced")]
    TooLong(u64),
    /// The bytes were wrong.
    #[error(transparent)]
    Verify(#[from] CommitError),
    /// The ingest file could not be written.
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
}

/// Fetches `digest` from `uri` into the cache, publishing progress on
/// `flight`. Runs detached; always leaves the flight finished (verified or
/// failed) and removed from the in-progress map.
pub async fn fill_blob(
    state: Arc<State>,
    flight: Arc<Flight>,
    digest: Digest,
    path: String,
    repo: (String, RepoName),
) {
    let span = tracing::info_span!("fill", oci.digest = %digest);
    let _finish = FinishFlight {
        state: state.clone(),
        flight: flight.clone(),
        digest: digest.clone(),
    };
    async {
        match run_fill(&state, &flight, &digest, &path, &repo).await {
            Ok(size) => info!(bytes = size, "blob verified and cached"),
            Err(FillError::Storage(error)) => {
                warn!(%error, "cannot store a blob; its readers continue from upstream, uncached");
                state.metrics.storage_error();
                flight.fail_storage(&error.to_string());
            }
            Err(error) => {
                if matches!(error, FillError::Verify(CommitError::DigestMismatch { .. })) {
                    state.metrics.digest_mismatch();
                }
                warn!(%error, "blob fetch failed; nothing was cached");
                flight.fail(&error.to_string());
            }
        }
    }
    .instrument(span)
    .await
}

/// Ends a flight however its task ends (finished, failed, panicked or
/// cancelled at shutdown), so no reader waits on it forever and the next
/// request can start afresh.
struct FinishFlight {
    state: Arc<State>,
    flight: Arc<Flight>,
    digest: Digest,
}

impl Drop for FinishFlight {
    fn drop(&mut self) {
        self.flight.fail("the fetch was abandoned");
        self.state.cache.flights.remove(&self.digest);
    }
}

async fn run_fill(
    state: &Arc<State>,
    flight: &Arc<Flight>,
    digest: &Digest,
    path: &str,
    (registry, name): &(String, RepoName),
) -> Result<u64, FillError> {
    // Committed by another flight between this request's miss and now.
    if let Some(info) = state.cache.blob(digest) {
        // Readers find it in the cache when they see the flight end.
        flight.fail("already cached");
        return Ok(info.size);
    }
    let uri = https_uri(registry, path).map_err(|e| FillError::Upstream(e.to_string()))?;
    let headers = state.access.own_headers(registry, name).await;
    let fetcher = &state.fetcher;
    let had_token = headers.contains_key(header::AUTHORIZATION);
    let mut response = fetcher
        .send_following(Method::GET, uri.clone(), headers.clone())
        .await
        .map_err(|e| FillError::Upstream(e.to_string()))?;
    if response.status() == StatusCode::UNAUTHORIZED && had_token {
        state.access.forget_token(registry, name);
        let mut headers = headers;
        match state.access.authorization(registry, name).await {
            Some(value) => headers.insert(header::AUTHORIZATION, value),
            None => headers.remove(header::AUTHORIZATION),
        };
        response = fetcher
            .send_following(Method::GET, uri, headers)
            .await
            .map_err(|e| FillError::Upstream(e.to_string()))?;
    }
    if response.status() != StatusCode::OK {
        return Err(FillError::Status(response.status()));
    }
    let total = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let media_type: Arc<str> = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(OCTET_STREAM)
        .into();

    let store = state.cache.store().clone();
    let algorithm = digest.algorithm();
    let (ingest, reader) =
        tokio::task::spawn_blocking(move || -> std::io::Result<(IngestFile, File)> {
            let ingest = store.create_ingest(algorithm)?;
            let reader = File::open(ingest.path())?;
            Ok((ingest, reader))
        })
        .await
        .map_err(|e| FillError::Upstream(e.to_string()))??;
    let reader = Arc::new(reader);
    flight.set(FlightState::Streaming {
        file: reader.clone(),
        total,
        media_type: media_type.clone(),
        written: 0,
    });

    let stall = fetcher.stall();
    let mut body = response.into_body();
    let mut writer = Writer::new(ingest, flight.clone());
    let mut received: u64 = 0;
    let pumped: Result<(), FillError> = async {
        loop {
            let frame = match tokio::time::timeout(stall, body.frame()).await {
                Err(_) => return Err(FillError::Stalled(stall)),
                Ok(None) => return Ok(()),
                Ok(Some(Err(error))) => return Err(FillError::Upstream(error.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            received += data.len() as u64;
            if let Some(total) = total.filter(|&t| received > t) {
                return Err(FillError::TooLong(total));
            }
            writer.push(data).await?;
        }
    }
    .await;
    let ingest = match pumped {
        // The write that failed consumed the ingest file; nothing to finish.
        Err(FillError::Storage(error)) => return Err(FillError::Storage(error)),
        // A storage error while finishing outranks the network's: readers
        // can then resume from upstream.
        other => {
            let ingest = writer.finish().await?;
            other?;
            ingest
        }
    };

    let expected = digest.clone();
    let verified = tokio::task::spawn_blocking(move || ingest.verify(&expected, total))
        .await
        .map_err(|e| FillError::Upstream(e.to_string()))??;
    let size = verified.size();
    // Clients may finish now; making the file durable can take a while.
    flight.set(FlightState::Verified {
        size,
        file: reader,
        media_type: media_type.clone(),
    });

    let store = state.cache.store().clone();
    match tokio::task::spawn_blocking(move || verified.persist(&store)).await {
        Ok(Ok(_)) => {
            state
                .cache
                .record_blob(digest, size, Some(&media_type))
                .await
        }
        Ok(Err(error)) => warn!(%error, "blob served but not cached: storage error"),
        Err(error) => warn!(%error, "blob served but not cached"),
    }
    Ok(size)
}

/// Verifies and commits a small body already in memory (a manifest), and
/// records it. A storage failure is logged; the caller serves the bytes
/// either way.
pub async fn commit_bytes(state: &Arc<State>, digest: &Digest, bytes: &Bytes, media_type: &str) {
    if state.cache.blob(digest).is_some() {
        return;
    }
    let store = state.cache.store().clone();
    let (expected, payload) = (digest.clone(), bytes.clone());
    let committed = tokio::task::spawn_blocking(move || -> Result<Committed, CommitError> {
        let mut ingest = store.create_ingest(expected.algorithm())?;
        ingest.write(&payload)?;
        ingest.commit(&store, &expected, Some(payload.len() as u64))
    })
    .await;
    match committed {
        Ok(Ok(_)) => {
            state
                .cache
                .record_blob(digest, bytes.len() as u64, Some(media_type))
                .await
        }
        Ok(Err(error)) => warn!(oci.digest = %digest, %error, "manifest served but not cached"),
        Err(error) => warn!(oci.digest = %digest, %error, "manifest served but not cached"),
    }
}

/// Writes a download to its ingest file in batches on the blocking pool,
/// one write at a time, while the network keeps receiving.
///
/// A write starts as soon as the previous one has finished, with whatever
/// arrived meanwhile: when the disk keeps up, bytes reach readers at once;
/// when it does not, frames are gathered into larger writes (up to
/// [`WRITE_BATCH`]) instead of one syscall and wake-up per 16 KiB frame.
/// Frames are kept as they came and written with one vectored write, not
/// copied into a batch buffer. No blocking thread is held between writes.
struct Writer {
    idle: Option<IngestFile>,
    running: Option<JoinHandle<std::io::Result<IngestFile>>>,
    gathered: Vec<Bytes>,
    gathered_len: usize,
    flight: Arc<Flight>,
}

impl Writer {
    fn new(ingest: IngestFile, flight: Arc<Flight>) -> Writer {
        Writer {
            idle: Some(ingest),
            running: None,
            gathered: Vec::new(),
            gathered_len: 0,
            flight,
        }
    }

    /// Takes a chunk; starts a write if the writer is free, waits for the
    /// running one if too much has gathered.
    async fn push(&mut self, chunk: Bytes) -> Result<(), FillError> {
        self.gathered_len += chunk.len();
        self.gathered.push(chunk);
        let finished = self.running.as_ref().is_none_or(|w| w.is_finished());
        if finished || self.gathered_len >= WRITE_BATCH {
            self.start_write().await?;
        }
        Ok(())
    }

    /// Waits for the running write, then starts one with what gathered.
    async fn start_write(&mut self) -> Result<(), FillError> {
        let mut ingest = self.wait().await?;
        let batch = std::mem::take(&mut self.gathered);
        self.gathered_len = 0;
        let flight = self.flight.clone();
        self.running = Some(tokio::task::spawn_blocking(move || {
            ingest.write_announcing(&batch, |written| flight.advance(written))?;
            Ok(ingest)
        }));
        Ok(())
    }

    async fn wait(&mut self) -> Result<IngestFile, FillError> {
        if let Some(running) = self.running.take() {
            return running
                .await
                .map_err(|e| FillError::Upstream(e.to_string()))?
                .map_err(FillError::Storage);
        }
        self.idle
            .take()
            .ok_or_else(|| FillError::Upstream("the ingest file was lost to a failed write".into()))
    }

    /// Writes what is left and hands back the ingest file.
    async fn finish(mut self) -> Result<IngestFile, FillError> {
        if !self.gathered.is_empty() {
            self.start_write().await?;
        }
        self.wait().await
    }
}
