//! Filling the cache from upstream: the detached task behind a blob's
//! single flight, and committing small verified bodies such as manifests.
//!
//! A blob fill copies the upstream body into recycled, page-aligned blocks
//! (see [`crate::cache::block`]). Each block is handed to the readers
//! following the download as it is, and written to the ingest file with
//! direct I/O and hashed, each on its own [`Lane`] of the blocking pool
//! (disk and CPU work, kept off the async executor), while the next block
//! fills: the bytes are copied once on their way to the disk rather than
//! into the page cache and out again, and the network, the disk and the
//! hash overlap. The fill keeps within reach of its fastest reader (see
//! [`Flight::keep_within_reach`]). Only when every byte is in and the
//! digest matches do readers get their last byte; the file is then synced
//! and renamed into `blobs/`.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;
use http::header;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tracing::{info, warn, Instrument};

use crate::cache::block::{aligned_down, Block, BlockPool, BLOCK_SIZE};
use crate::cache::flight::{Flight, FlightState};
use crate::cache::store::{CommitError, Committed, Hasher, IngestFile, IngestSink};
use crate::lane::Lane;
use crate::registry::access::https_uri;
use crate::registry::digest::Digest;
use crate::registry::media::OCTET_STREAM;
use crate::registry::route::RepoName;
use crate::State;

/// The longest received bytes wait in a block before readers get them, so
/// a slow download still streams.
const PUBLISH_WITHIN: std::time::Duration = std::time::Duration::from_millis(5);

/// Blocks a download may have queued for writing, and for hashing, before
/// it waits: enough to ride out a slow write, within the
/// [`crate::cache::flight`] window readers take blocks from.
const LANE_DEPTH: usize = 4;

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
            let ingest = store.create_direct_ingest(algorithm)?;
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
        received: 0,
    });

    let stall = fetcher.stall();
    let mut body = response.into_body();
    let mut writer = Writer::new(ingest, flight.clone(), state.cache.blocks.clone(), total);
    let mut received: u64 = 0;
    let pumped: Result<(), FillError> = async {
        let mut stall_at = tokio::time::Instant::now() + stall;
        loop {
            let wake_at = writer.publish_by().map_or(stall_at, |at| at.min(stall_at));
            let frame = match tokio::time::timeout_at(wake_at, body.frame()).await {
                Err(_) if tokio::time::Instant::now() >= stall_at => {
                    return Err(FillError::Stalled(stall))
                }
                Err(_) => {
                    writer.flush(false).await?;
                    stall_at = tokio::time::Instant::now() + stall;
                    continue;
                }
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
            writer.push(&data).await?;
            // From here: the time spent handing the bytes on (waiting for
            // readers or the disk) is not upstream's stall.
            stall_at = tokio::time::Instant::now() + stall;
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

/// Carries a download from the network to its readers and its ingest
/// file, one block at a time.
///
/// Received bytes are copied into the current block. The block is handed
/// over when it is full, or when its oldest byte has waited
/// [`PUBLISH_WITHIN`]: readers get it at once (they take slices of it,
/// without copying), and its aligned part is queued on two lanes of the
/// blocking pool, one writing it with direct I/O, one hashing it, while
/// the next block fills; the unaligned rest starts the next block. Whole
/// blocks keep writes large and thread hand-offs few whatever the
/// network's frame size (256 KiB steps cost 0.1 CPU-s/GB more). With
/// [`LANE_DEPTH`] blocks queued on a lane the network waits for it, so
/// memory stays flat with blob size.
struct Writer {
    writes: Lane<IngestSink>,
    hashes: Lane<Hasher>,
    pool: Arc<BlockPool>,
    /// The length upstream announced, if it did.
    total: Option<u64>,
    block: Block,
    /// Where `block` starts in the blob.
    block_offset: u64,
    /// When the block's unpublished bytes must go to readers; `None` when
    /// readers have every byte received.
    publish_by: Option<tokio::time::Instant>,
    flight: Arc<Flight>,
    /// Whether the download still waits for readers that fall behind
    /// (see [`Flight::keep_within_reach`]).
    paced: bool,
}

impl Writer {
    fn new(
        ingest: IngestFile,
        flight: Arc<Flight>,
        pool: Arc<BlockPool>,
        total: Option<u64>,
    ) -> Writer {
        let (sink, hasher) = ingest.split();
        Writer {
            writes: Lane::new(sink, LANE_DEPTH),
            hashes: Lane::new(hasher, LANE_DEPTH),
            block: block_for(&pool, total, 0, 0),
            pool,
            total,
            block_offset: 0,
            publish_by: None,
            flight,
            paced: true,
        }
    }

    /// When [`Writer::flush`] must run for readers to get the bytes
    /// received so far; `None` if they have them all.
    fn publish_by(&self) -> Option<tokio::time::Instant> {
        self.publish_by
    }

    /// Takes received bytes; hands the block over when it is full.
    async fn push(&mut self, mut chunk: &[u8]) -> Result<(), FillError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.publish_by
            .get_or_insert_with(|| tokio::time::Instant::now() + PUBLISH_WITHIN);
        while !chunk.is_empty() {
            let taken = self.block.fill(chunk);
            chunk = &chunk[taken..];
            if self.block.room() == 0 {
                self.flush(false).await?;
                if !chunk.is_empty() {
                    self.publish_by = Some(tokio::time::Instant::now() + PUBLISH_WITHIN);
                }
            }
        }
        Ok(())
    }

    /// Hands the block to readers and queues its aligned part, or all of it
    /// when it is the `last`, to be written and hashed.
    async fn flush(&mut self, last: bool) -> Result<(), FillError> {
        let held = self.block.len();
        let to_write = if last { held } else { aligned_down(held) };
        let offset = self.block_offset;
        let next = block_for(
            &self.pool,
            self.total,
            held - to_write,
            offset + held as u64,
        );
        let block = std::mem::replace(&mut self.block, next);
        self.block.fill(&block.filled()[to_write..]);
        self.block_offset += to_write as u64;
        let bytes = block.freeze();
        // The bytes carried over into the next block go to readers now, so
        // that block starts with nothing unpublished.
        let published = self.publish_by.take().is_some();
        if published {
            self.flight.publish(offset, bytes.clone());
        }
        if to_write > 0 {
            let to_hash = bytes.slice(..to_write);
            let to_file = to_hash.clone();
            let flight = self.flight.clone();
            self.writes
                .push(move |sink| {
                    sink.write_announcing(&[to_file], |written| flight.advance(written))
                })
                .await?;
            self.hashes
                .push(move |hasher| {
                    hasher.update(&to_hash);
                    Ok(())
                })
                .await?;
        }
        if published && self.paced {
            self.paced = self.flight.keep_within_reach(offset + held as u64).await;
            if !self.paced {
                info!(
                    "readers stopped taking bytes; the download goes on without waiting for them"
                );
            }
        }
        Ok(())
    }

    /// Writes what is left, waits for the lanes and hands back the ingest
    /// file.
    async fn finish(mut self) -> Result<IngestFile, FillError> {
        if !self.block.is_empty() {
            self.flush(true).await?;
        }
        let sink = self.writes.finish().await?;
        let hasher = self.hashes.finish().await?;
        Ok(IngestFile::from_parts(sink, hasher))
    }
}

/// The next block of a download: room for `carry` bytes held over plus
/// what is still to come of an announced `total`, of which `received`
/// arrived. A pooled block only when a whole one will be filled (or the
/// length is unknown): a blob or a last block smaller than that gets just
/// its own size, so many small misses at once do not each pin 1 MiB.
fn block_for(pool: &Arc<BlockPool>, total: Option<u64>, carry: usize, received: u64) -> Block {
    let rest = total.map_or(BLOCK_SIZE as u64, |t| t.saturating_sub(received));
    let want = (carry as u64 + rest).min(BLOCK_SIZE as u64) as usize;
    if want < BLOCK_SIZE {
        Block::one_off(want)
    } else {
        pool.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::block::ALIGN;
    use crate::cache::flight::{Flights, Joined};
    use crate::cache::store::{digest_of, BlobStore};
    use crate::registry::digest::Algorithm;

    fn streaming(flight: &Flight, file: File) {
        flight.set(FlightState::Streaming {
            file: Arc::new(file),
            total: None,
            media_type: OCTET_STREAM.into(),
            written: 0,
            received: 0,
        });
    }

    fn progress(flight: &Flight) -> (u64, u64) {
        match &*flight.subscribe().borrow() {
            FlightState::Streaming {
                written, received, ..
            } => (*written, *received),
            other => panic!("not streaming: {other:?}"),
        }
    }

    #[tokio::test]
    async fn blocks_reach_readers_and_the_file_whatever_the_frame_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..2 * crate::cache::block::BLOCK_SIZE + 5 * ALIGN + 77)
            .map(|i| (i % 241) as u8)
            .collect();
        let digest = digest_of(Algorithm::Sha256, &data);
        let Joined::Leader(flight) = Flights::default().join(&digest) else {
            panic!("the first request leads");
        };
        let ingest = store.create_direct_ingest(Algorithm::Sha256).unwrap();
        streaming(&flight, File::open(ingest.path()).unwrap());
        let pool = Arc::new(BlockPool::for_downloads());
        // No announced length, as with a chunked upstream body.
        let mut writer = Writer::new(ingest, flight.clone(), pool.clone(), None);
        // Frames of awkward sizes, as a network delivers them.
        for frame in data.chunks(16_381) {
            writer.push(frame).await.unwrap();
            let (written, received) = progress(&flight);
            assert!(written <= received && received <= data.len() as u64);
            assert_eq!(
                written % ALIGN as u64,
                0,
                "until the end, only whole pages are written"
            );
        }
        let ingest = writer.finish().await.unwrap();
        assert_eq!(progress(&flight), (data.len() as u64, data.len() as u64));
        // The newest block in memory holds the last bytes.
        let tail = flight
            .recent()
            .slice(data.len() as u64 - 10, u64::MAX)
            .unwrap();
        assert_eq!(&tail[..], &data[data.len() - 10..]);
        let verified = ingest.verify(&digest, Some(data.len() as u64)).unwrap();
        verified.persist(&store).unwrap();
        assert_eq!(std::fs::read(store.blob_path(&digest)).unwrap(), data);
        drop((tail, flight));
        assert!(pool.idle() > 0, "a large download's blocks are reused");
    }

    #[test]
    fn only_whole_blocks_come_from_the_pool() {
        let pool = Arc::new(BlockPool::for_downloads());
        let kib = |k: usize| k * 1024;
        let mib = BLOCK_SIZE as u64;
        // A 600 KiB blob gets 600 KiB, not a pooled 1 MiB block.
        assert_eq!(
            block_for(&pool, Some(kib(600) as u64), 0, 0).capacity(),
            kib(600)
        );
        // A large one: pooled blocks until its last, partial one.
        let first = block_for(&pool, Some(3 * mib + 5), 0, 0);
        assert_eq!(first.capacity(), BLOCK_SIZE);
        let last = block_for(&pool, Some(3 * mib + 5), 100, 3 * mib);
        assert_eq!(last.capacity(), ALIGN, "100 carried and 5 to come");
        drop((first, last));
        assert_eq!(pool.idle(), 1, "only the whole block went back");
        // Unknown length: a pooled block.
        assert_eq!(block_for(&pool, None, 0, 0).capacity(), BLOCK_SIZE);
    }

    #[tokio::test]
    async fn a_few_bytes_reach_readers_before_a_page_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let Joined::Leader(flight) = Flights::default().join(&digest_of(Algorithm::Sha256, b"x"))
        else {
            panic!("the first request leads");
        };
        let ingest = store.create_direct_ingest(Algorithm::Sha256).unwrap();
        streaming(&flight, File::open(ingest.path()).unwrap());
        let pool = Arc::new(BlockPool::for_downloads());
        let mut writer = Writer::new(ingest, flight.clone(), pool.clone(), Some(24));
        assert!(writer.publish_by().is_none(), "nothing to hand over yet");
        writer.push(b"slow upstream").await.unwrap();
        assert!(writer.publish_by().is_some());
        // What the fill does when `publish_by` passes.
        writer.flush(false).await.unwrap();
        assert!(writer.publish_by().is_none());
        assert_eq!(progress(&flight), (0, 13), "published, not yet written");
        assert_eq!(&flight.recent().slice(0, 13).unwrap()[..], b"slow upstream");
        writer.push(b", then more").await.unwrap();
        let ingest = writer.finish().await.unwrap();
        assert_eq!(ingest.written(), 24);
        assert_eq!(
            std::fs::read(ingest.path()).unwrap(),
            b"slow upstream, then more"
        );
        drop(flight);
        assert_eq!(pool.idle(), 0, "a small blob takes no pooled block");
    }
}
