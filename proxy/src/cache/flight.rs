//! Single flight for blob downloads: the first request for an uncached
//! digest starts one upstream fetch; every request for it, the first one
//! included, follows the download as bytes arrive: from the blocks the
//! fetch still holds in memory ([`Recent`]) while it keeps up, from the
//! ingest file when it falls further behind.
//!
//! The fetch runs in its own task, so a client that goes away does not
//! stop it; followers keep streaming and the blob is still committed. A
//! reader never sees the end of its body before the whole blob has been
//! verified: the last byte of every response is held back until then, so a
//! digest mismatch always reaches the client as an aborted body.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use futures_util::stream;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::{watch, Notify};

use crate::body::{Body, BoxError};
use crate::cache::block::{Block, BlockPool, BLOCK_SIZE, READ_BLOCK_SIZE};
use crate::registry::digest::Digest;

/// How much a reader moves per read: large reads keep syscalls and TLS
/// records few on the hot path.
pub const READ_CHUNK: usize = READ_BLOCK_SIZE;

/// How many of a download's latest blocks stay in memory for its readers,
/// who then need the disk only when they fall further behind.
const RECENT_BLOCKS: usize = 4;

/// How far a fetch may run ahead of its furthest reader before it waits:
/// two blocks, so that with the block being filled the reader's next bytes
/// are still among the [`RECENT_BLOCKS`].
const READER_LEAD: u64 = 2 * BLOCK_SIZE as u64;

/// The longest a fetch waits for its readers per block. A reader slower
/// than a block per this long (50 MB/s) does not slow the download further
/// and reads the file instead; nor does it keep the download's share of an
/// upstream h2 connection's window from draining.
const READER_WAIT: Duration = Duration::from_millis(20);

/// Where one download stands.
#[derive(Debug, Clone)]
pub enum FlightState {
    /// Asking upstream; no bytes yet.
    Starting,
    /// Bytes are arriving.
    Streaming {
        /// The ingest file, opened for reading. Readers share this handle,
        /// so the rename at commit time cannot pull the file from under them.
        file: Arc<File>,
        /// The announced length, if upstream sent one.
        total: Option<u64>,
        /// The media type upstream gave.
        media_type: Arc<str>,
        /// Bytes in the ingest file so far.
        written: u64,
        /// Bytes received so far: at least `written`; the rest are in
        /// the flight's [`Recent`] blocks.
        received: u64,
    },
    /// Every byte arrived and matched the digest; readers may finish.
    Verified {
        /// The verified length.
        size: u64,
        /// The file, still readable through this handle after the rename
        /// into `blobs/`, for requests that join this late.
        file: Arc<File>,
        /// The media type upstream gave.
        media_type: Arc<str>,
    },
    /// The download failed; readers must abort, unless it is
    /// `resumable`.
    Failed {
        /// Whether any byte was streamed (if not, a reader may still pass
        /// its own request through to upstream).
        streamed: bool,
        /// Why, for logs.
        reason: Arc<str>,
        /// Upstream was fine but we could not store the bytes (a full
        /// disk): readers go on fetching the rest from upstream themselves,
        /// uncached, instead of failing their clients.
        resumable: bool,
    },
}

/// One download shared by every request for its digest.
#[derive(Debug)]
pub struct Flight {
    state: watch::Sender<FlightState>,
    recent: Recent,
    pace: Arc<Pace>,
}

/// How far a download's readers have come. A fetch that ran ahead of every
/// reader would push blocks out of [`Recent`] before anyone sent them, and
/// its readers would read them back from the disk (measured: most of a
/// 256 MiB miss, and a third more CPU); so the fetch keeps within
/// [`READER_LEAD`] of the fastest reader, which is as fast as that client
/// could pull through any proxy. Slower readers fall back to the file.
#[derive(Debug, Default)]
struct Pace {
    /// Readers following the download.
    readers: AtomicUsize,
    /// The furthest any reader has taken bytes to.
    furthest: AtomicU64,
    /// Signalled when `furthest` grows or a reader leaves.
    moved: Notify,
}

/// A reader's hold on a download: its latest blocks, and the reader's
/// place among those that pace the fetch.
#[derive(Debug)]
pub struct Follower {
    recent: Recent,
    pace: Arc<Pace>,
}

impl Follower {
    /// Records that this reader has taken the bytes up to `position`.
    fn reached(&self, position: u64) {
        if self.pace.furthest.fetch_max(position, Ordering::AcqRel) < position {
            self.pace.moved.notify_one();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.pace.readers.fetch_sub(1, Ordering::AcqRel);
        self.pace.moved.notify_one();
    }
}

impl Flight {
    fn new() -> Flight {
        Flight {
            state: watch::Sender::new(FlightState::Starting),
            recent: Recent::default(),
            pace: Arc::default(),
        }
    }

    /// The latest blocks of the download (readers reach them through
    /// [`Flight::follow`]).
    #[cfg(test)]
    pub(crate) fn recent(&self) -> Recent {
        self.recent.clone()
    }

    /// Joins the download's readers; see [`growing_body`].
    pub fn follow(&self) -> Follower {
        self.pace.readers.fetch_add(1, Ordering::AcqRel);
        Follower {
            recent: self.recent.clone(),
            pace: self.pace.clone(),
        }
    }

    /// For the fetch, having handed readers the bytes up to `published`:
    /// waits until the furthest reader is within two blocks of them
    /// (`READER_LEAD`), no one is reading, or 20 ms (`READER_WAIT`) have
    /// passed. `false` if readers took nothing at all meanwhile: they have
    /// stopped, and the fetch should not wait for them again.
    pub async fn keep_within_reach(&self, published: u64) -> bool {
        let give_up = tokio::time::Instant::now() + READER_WAIT;
        let before = self.pace.furthest.load(Ordering::Acquire);
        loop {
            // Made before looking, so a move in between is not missed.
            let moved = self.pace.moved.notified();
            let furthest = self.pace.furthest.load(Ordering::Acquire);
            if self.pace.readers.load(Ordering::Acquire) == 0
                || published.saturating_sub(furthest) <= READER_LEAD
            {
                return true;
            }
            if tokio::time::timeout_at(give_up, moved).await.is_err() {
                return furthest > before;
            }
        }
    }

    /// Hands readers `bytes`, the download's bytes from `offset`, before
    /// they are in the file.
    pub fn publish(&self, offset: u64, bytes: Bytes) {
        let end = offset + bytes.len() as u64;
        self.recent.push(offset, bytes);
        self.state.send_modify(|state| {
            if let FlightState::Streaming { received, .. } = state {
                *received = (*received).max(end);
            }
        });
    }

    /// Watches the download's progress.
    pub fn subscribe(&self) -> watch::Receiver<FlightState> {
        self.state.subscribe()
    }

    /// Moves to a new state.
    pub fn set(&self, state: FlightState) {
        self.state.send_replace(state);
    }

    /// Records that more bytes are in the file.
    pub fn advance(&self, written_now: u64) {
        self.state.send_modify(|state| {
            if let FlightState::Streaming {
                written, received, ..
            } = state
            {
                *written = written_now;
                *received = (*received).max(written_now);
            }
        });
    }

    /// Marks the download failed unless it already finished.
    pub fn fail(&self, reason: &str) {
        self.finish_failed(reason, false);
    }

    /// Marks the download failed for a local storage reason: upstream is
    /// still good, so readers resume from it.
    pub fn fail_storage(&self, reason: &str) {
        self.finish_failed(reason, true);
    }

    fn finish_failed(&self, reason: &str, resumable: bool) {
        self.state.send_modify(|state| {
            let streamed = !matches!(state, FlightState::Starting);
            if !matches!(
                state,
                FlightState::Verified { .. } | FlightState::Failed { .. }
            ) {
                *state = FlightState::Failed {
                    streamed,
                    reason: reason.into(),
                    resumable,
                };
            }
        });
    }
}

/// A download's latest blocks, by their offset in the blob, newest last.
/// Blocks may overlap (a block's unaligned tail starts the next one).
#[derive(Debug, Clone, Default)]
pub struct Recent {
    blocks: Arc<Mutex<VecDeque<(u64, Bytes)>>>,
}

impl Recent {
    fn push(&self, offset: u64, bytes: Bytes) {
        let mut blocks = self.lock();
        if blocks.len() == RECENT_BLOCKS {
            blocks.pop_front();
        }
        blocks.push_back((offset, bytes));
    }

    /// The bytes from `position` up to `limit` (or the end of the block
    /// holding `position`), if a block in memory holds them.
    pub fn slice(&self, position: u64, limit: u64) -> Option<Bytes> {
        let blocks = self.lock();
        let (offset, bytes) = blocks.iter().rev().find(|(offset, bytes)| {
            *offset <= position && position < offset + bytes.len() as u64
        })?;
        let from = (position - offset) as usize;
        let to = (limit.min(offset + bytes.len() as u64) - offset) as usize;
        (to > from).then(|| bytes.slice(from..to))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Bytes)>> {
        self.blocks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The downloads in progress, by digest.
#[derive(Debug, Default)]
pub struct Flights {
    flights: DashMap<Digest, Arc<Flight>>,
}

/// Whether a request started a download or joined one.
pub enum Joined {
    /// This request must start the fetch.
    Leader(Arc<Flight>),
    /// A fetch was already running.
    Follower(Arc<Flight>),
}

impl Flights {
    /// Joins the download of `digest`, or registers a new one.
    pub fn join(&self, digest: &Digest) -> Joined {
        match self.flights.entry(digest.clone()) {
            Entry::Occupied(entry) => Joined::Follower(entry.get().clone()),
            Entry::Vacant(entry) => {
                let flight = Arc::new(Flight::new());
                entry.insert(flight.clone());
                Joined::Leader(flight)
            }
        }
    }

    /// Forgets a finished download, so the next request looks in the
    /// store (or starts afresh after a failure).
    pub fn remove(&self, digest: &Digest) {
        self.flights.remove(digest);
    }

    /// Downloads in progress.
    pub fn len(&self) -> usize {
        self.flights.len()
    }

    /// Whether nothing is downloading.
    pub fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }
}

/// Errors a streaming reader ends with.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The download failed; the body must not look complete.
    #[error("upstream download failed: {0}")]
    Failed(Arc<str>),
    /// Reading the file failed.
    #[error("reading the cached file failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What a reader knows about the bytes it may send.
enum Source {
    /// A committed file: everything up to the end is final.
    Complete,
    /// A download in progress, and the reader's hold on it.
    Growing(watch::Receiver<FlightState>, Follower),
    /// The shared download could not be stored; the rest comes straight
    /// from upstream.
    Upstream(Body),
}

/// Fetches bytes `[from, end)` of the blob from upstream, for a reader
/// whose shared download could not be stored. `end` is `u64::MAX` when
/// the length is unknown.
pub type Resume = Arc<dyn Fn(u64, u64) -> BoxFuture<'static, Result<Body, BoxError>> + Send + Sync>;

struct Reader {
    /// Where file reads land.
    pool: Arc<BlockPool>,
    file: Arc<File>,
    source: Source,
    position: u64,
    end: u64,
    resume: Option<Resume>,
}

/// A body of bytes `[start, end)` of a committed file, read into blocks
/// from `pool`.
pub fn file_body(pool: Arc<BlockPool>, file: File, start: u64, end: u64) -> Body {
    reader_body(Reader {
        pool,
        file: Arc::new(file),
        source: Source::Complete,
        position: start,
        end,
        resume: None,
    })
}

/// A body of bytes `[start, end)` of a download in progress, taken from
/// the `follower`'s blocks in memory or read from its ingest file (into
/// blocks from `pool`) as they arrive; how fast it is read paces the
/// fetch (see [`Flight::keep_within_reach`]). `file` must be the ingest
/// file, opened while the flight was streaming.
pub fn growing_body(
    pool: Arc<BlockPool>,
    file: Arc<File>,
    progress: watch::Receiver<FlightState>,
    follower: Follower,
    start: u64,
    end: u64,
    resume: Option<Resume>,
) -> Body {
    reader_body(Reader {
        pool,
        file,
        source: Source::Growing(progress, follower),
        position: start,
        end,
        resume,
    })
}

fn reader_body(reader: Reader) -> Body {
    let chunks = stream::unfold(reader, |mut reader| async move {
        if reader.position >= reader.end {
            return None;
        }
        match next_chunk(&mut reader).await {
            Ok(None) => None,
            Ok(Some(bytes)) => {
                reader.position += bytes.len() as u64;
                if let Source::Growing(_, follower) = &reader.source {
                    follower.reached(reader.position);
                }
                Some((Ok(Frame::data(bytes)), reader))
            }
            Err(error) => {
                // Ending the stream after an error aborts the response.
                reader.end = reader.position;
                Some((Err(BoxError::from(error)), reader))
            }
        }
    });
    StreamBody::new(chunks).boxed_unsync()
}

/// Waits until bytes past `position` may be sent, then takes them from
/// memory or reads up to [`READ_CHUNK`] of them from the file. `None` when
/// the body turned out to be complete.
async fn next_chunk(reader: &mut Reader) -> Result<Option<Bytes>, ReadError> {
    let limit = loop {
        match &mut reader.source {
            Source::Complete => break reader.end,
            Source::Upstream(body) => {
                return next_upstream_chunk(body, reader.position, reader.end).await
            }
            Source::Growing(progress, follower) => {
                let state = progress.borrow_and_update().clone();
                let allowed = match state {
                    FlightState::Verified { size, .. } => {
                        reader.end = reader.end.min(size);
                        if reader.position >= reader.end {
                            return Ok(None);
                        }
                        reader.end
                    }
                    // Hold back the last byte until the digest is verified.
                    FlightState::Streaming {
                        received, total, ..
                    } => {
                        let end = total.map_or(reader.end, |t| reader.end.min(t));
                        received.min(end.saturating_sub(1))
                    }
                    FlightState::Failed {
                        resumable: true,
                        streamed: true,
                        reason,
                    } => {
                        let Some(resume) = reader.resume.clone() else {
                            return Err(ReadError::Failed(reason));
                        };
                        tracing::warn!(%reason, offset = reader.position, "cannot store this download; continuing it from upstream, uncached");
                        let body = resume(reader.position, reader.end)
                            .await
                            .map_err(|e| ReadError::Failed(e.to_string().into()))?;
                        reader.source = Source::Upstream(body);
                        continue;
                    }
                    FlightState::Failed { reason, .. } => return Err(ReadError::Failed(reason)),
                    FlightState::Starting => reader.position,
                };
                if allowed > reader.position {
                    if let Some(bytes) = follower.recent.slice(reader.position, allowed) {
                        return Ok(Some(bytes));
                    }
                    // Older than the blocks in memory: from the file, once
                    // it is written there.
                    let on_disk = match &*progress.borrow() {
                        FlightState::Streaming { written, .. } => *written,
                        FlightState::Verified { size, .. } => *size,
                        // Ended meanwhile: the next turn says how.
                        FlightState::Starting | FlightState::Failed { .. } => reader.position,
                    };
                    if on_disk.min(allowed) > reader.position {
                        break on_disk.min(allowed);
                    }
                }
                if progress.changed().await.is_err() {
                    return Err(ReadError::Failed("the download stopped".into()));
                }
            }
        }
    };
    let want = (limit - reader.position).min(READ_CHUNK as u64) as usize;
    let mut block = reader.pool.take_for(want);
    let cached = read_if_cached(
        &reader.file,
        reader.position,
        &mut block.spare_mut()[..want],
    )?;
    let bytes = match cached {
        Some(read) => {
            block.grow(read);
            block.freeze()
        }
        None => {
            let file = reader.file.clone();
            let offset = reader.position;
            tokio::task::spawn_blocking(move || read_blocking(&file, offset, block, want))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??
        }
    };
    if bytes.is_empty() {
        return Err(ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the cached file is shorter than recorded",
        )));
    }
    Ok(Some(bytes))
}

/// Fills `buffer` from `offset` only if the kernel can copy the bytes
/// from the page cache without waiting for the disk (`RWF_NOWAIT`), which
/// is the usual case for hot blobs and for readers following a download.
/// Such a read is a memory copy, cheaper than the two thread hand-offs of
/// a blocking read, so it runs on the executor. Returns how many bytes
/// were read; `None`: some would have to come from the disk, or the kernel
/// cannot tell, so read blocking (into the same buffer).
#[cfg(target_os = "linux")]
fn read_if_cached(file: &File, offset: u64, buffer: &mut [u8]) -> std::io::Result<Option<usize>> {
    use rustix::io::{preadv2, Errno, ReadWriteFlags};
    use std::io::IoSliceMut;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Cleared the first time the kernel or file system refuses the flag,
    /// so an unsupported setup pays for the refusal once.
    static SUPPORTED: AtomicBool = AtomicBool::new(true);
    if !SUPPORTED.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let flags = ReadWriteFlags::NOWAIT;
    match preadv2(file, &mut [IoSliceMut::new(buffer)], offset, flags) {
        // Zero could be the end of the file or nothing cached yet; the
        // blocking read tells which.
        Ok(0) => Ok(None),
        Ok(read) => Ok(Some(read)),
        Err(Errno::AGAIN) => Ok(None),
        Err(Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS) => {
            SUPPORTED.store(false, Ordering::Relaxed);
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn read_if_cached(
    _file: &File,
    _offset: u64,
    _buffer: &mut [u8],
) -> std::io::Result<Option<usize>> {
    Ok(None)
}

/// Reads `want` bytes from `offset` into `block`, waiting for the disk if
/// need be; run on the blocking pool. Shorter only at the end of the file.
fn read_blocking(
    file: &File,
    offset: u64,
    mut block: Block,
    want: usize,
) -> std::io::Result<Bytes> {
    while block.len() < want {
        let at = offset + block.len() as u64;
        let room = want - block.len();
        let n = file.read_at(&mut block.spare_mut()[..room], at)?;
        if n == 0 {
            break;
        }
        block.grow(n);
    }
    Ok(block.freeze())
}

/// The next data from a resumed upstream body, cut off at `end`.
async fn next_upstream_chunk(
    body: &mut Body,
    position: u64,
    end: u64,
) -> Result<Option<Bytes>, ReadError> {
    loop {
        match body.frame().await {
            None if end == u64::MAX => return Ok(None),
            None => {
                return Err(ReadError::Failed(
                    "upstream ended the resumed download early".into(),
                ))
            }
            Some(Err(error)) => return Err(ReadError::Failed(error.to_string().into())),
            Some(Ok(frame)) => {
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                let room = end.saturating_sub(position);
                if data.len() as u64 > room {
                    data.truncate(room as usize);
                }
                if !data.is_empty() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pool() -> Arc<BlockPool> {
        Arc::new(BlockPool::for_reads())
    }

    /// Marks `flight` as streaming into `tmp`, `total` bytes announced.
    fn streaming(flight: &Flight, tmp: &tempfile::NamedTempFile, total: u64) {
        flight.set(FlightState::Streaming {
            file: Arc::new(tmp.reopen().unwrap()),
            total: Some(total),
            media_type: "application/octet-stream".into(),
            written: 0,
            received: 0,
        });
    }

    /// Marks `flight` as verified at `size` bytes.
    fn verified(flight: &Flight, tmp: &tempfile::NamedTempFile, size: u64) {
        flight.set(FlightState::Verified {
            size,
            file: Arc::new(tmp.reopen().unwrap()),
            media_type: "application/octet-stream".into(),
        });
    }

    /// A reader of bytes `[start, end)` of `flight`'s download in `tmp`.
    fn follow(
        flight: &Flight,
        tmp: &tempfile::NamedTempFile,
        start: u64,
        end: u64,
        resume: Option<Resume>,
    ) -> Body {
        growing_body(
            pool(),
            Arc::new(tmp.reopen().unwrap()),
            flight.subscribe(),
            flight.follow(),
            start,
            end,
            resume,
        )
    }

    async fn collect(body: Body) -> Result<Vec<u8>, BoxError> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn a_committed_file_is_served_by_range() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(b"0123456789").unwrap();
        let body = file_body(pool(), tmp.reopen().unwrap(), 2, 7);
        assert_eq!(collect(body).await.unwrap(), b"23456");
    }

    #[tokio::test]
    async fn page_cache_reads_and_blocking_reads_agree() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..3 * READ_CHUNK + 1234)
            .map(|i| (i % 251) as u8)
            .collect();
        tmp.write_all(&data).unwrap();
        let file = tmp.reopen().unwrap();
        for offset in [0, 1, READ_CHUNK as u64 - 7, 3 * READ_CHUNK as u64] {
            let want = READ_CHUNK.min(data.len() - offset as usize);
            let blocking = read_blocking(&file, offset, pool().take(), want).unwrap();
            assert_eq!(&blocking[..], &data[offset as usize..][..want]);
            // Either the page cache had every byte, some prefix, or the
            // kernel declined; what it returns must be the file's bytes.
            let mut cached = vec![0; want];
            if let Some(read) = read_if_cached(&file, offset, &mut cached).unwrap() {
                assert!(read > 0 && read <= want);
                assert_eq!(&cached[..read], &data[offset as usize..][..read]);
            }
        }
        let body = file_body(pool(), tmp.reopen().unwrap(), 5, data.len() as u64 - 3);
        assert_eq!(collect(body).await.unwrap(), &data[5..data.len() - 3]);
    }

    #[tokio::test]
    async fn readers_follow_the_download_and_finish_only_when_verified() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let flights = Flights::default();
        let digest = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        let Joined::Leader(flight) = flights.join(&digest) else {
            panic!("the first request leads");
        };
        assert!(matches!(flights.join(&digest), Joined::Follower(_)));

        streaming(&flight, &tmp, 6);
        let reader = tokio::spawn(collect(follow(&flight, &tmp, 0, 6, None)));
        tmp.write_all(b"abc").unwrap();
        flight.advance(3);
        tmp.write_all(b"def").unwrap();
        flight.advance(6);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !reader.is_finished(),
            "the last byte waits for verification"
        );
        verified(&flight, &tmp, 6);
        assert_eq!(reader.await.unwrap().unwrap(), b"abcdef");
    }

    #[tokio::test]
    async fn readers_take_published_bytes_before_they_reach_the_file() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let flight = Flight::new();
        streaming(&flight, &tmp, 6);
        let mut body = follow(&flight, &tmp, 1, 6, None);
        flight.publish(0, Bytes::from_static(b"abcdef"));
        // The file is still empty: these bytes can only come from memory,
        // and the last one waits for verification.
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"bcde");
        verified(&flight, &tmp, 6);
        assert_eq!(collect(body).await.unwrap(), b"f");
    }

    #[tokio::test]
    async fn a_reader_behind_the_blocks_in_memory_reads_the_file() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let flight = Flight::new();
        streaming(&flight, &tmp, 12);
        let data = b"0123456789AB";
        tmp.write_all(data).unwrap();
        flight.advance(10);
        // Two-byte blocks: more than the window keeps, so the first ones
        // are only in the file.
        for offset in (0..12).step_by(2) {
            flight.publish(
                offset,
                Bytes::copy_from_slice(&data[offset as usize..][..2]),
            );
        }
        assert!(
            flight.recent().slice(0, 12).is_none(),
            "the oldest block was dropped"
        );
        let reader = tokio::spawn(collect(follow(&flight, &tmp, 0, 12, None)));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        verified(&flight, &tmp, 12);
        assert_eq!(reader.await.unwrap().unwrap(), data);
    }

    /// Publishes `blocks` whole blocks of a download, as the fetch does.
    fn publish_blocks(flight: &Flight, blocks: usize) -> u64 {
        for index in 0..blocks {
            let offset = (index * BLOCK_SIZE) as u64;
            flight.publish(offset, Bytes::from(vec![index as u8; BLOCK_SIZE]));
        }
        (blocks * BLOCK_SIZE) as u64
    }

    #[tokio::test]
    async fn a_fetch_with_no_readers_never_waits() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let flight = Flight::new();
        streaming(&flight, &tmp, u64::MAX);
        let published = publish_blocks(&flight, 4);
        assert!(flight.keep_within_reach(published).await);
        // A reader that left no longer counts.
        drop(follow(&flight, &tmp, 0, published, None));
        assert!(flight.keep_within_reach(published).await);
    }

    /// A download four blocks ahead of its one new reader, and the fetch
    /// waiting for readers to come within reach.
    async fn four_blocks_ahead(
        tmp: &tempfile::NamedTempFile,
    ) -> (Arc<Flight>, Body, tokio::task::JoinHandle<bool>) {
        let flight = Arc::new(Flight::new());
        streaming(&flight, tmp, u64::MAX);
        let reader = follow(&flight, tmp, 0, u64::MAX, None);
        let published = publish_blocks(&flight, 4);
        let waiting = tokio::spawn({
            let flight = flight.clone();
            async move { flight.keep_within_reach(published).await }
        });
        tokio::task::yield_now().await;
        (flight, reader, waiting)
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_waits_for_its_fastest_reader_to_come_within_reach() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let started = tokio::time::Instant::now();
        let (flight, mut fast, waiting) = four_blocks_ahead(&tmp).await;
        // A reader that never reads does not hold the fetch back while
        // another keeps up.
        let _idle = follow(&flight, &tmp, 0, u64::MAX, None);
        // Taking the first block leaves the reader three blocks behind.
        fast.frame().await.unwrap().unwrap();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "three blocks behind: still waiting");
        // The second brings it within reach.
        let bytes = fast.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(bytes.len(), BLOCK_SIZE, "a whole block from memory");
        assert!(waiting.await.unwrap());
        assert!(
            started.elapsed() < READER_WAIT,
            "went on as soon as the reader was within reach"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn readers_that_stop_reading_are_left_behind() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let started = tokio::time::Instant::now();
        let (_flight, _stuck, waiting) = four_blocks_ahead(&tmp).await;
        assert!(!waiting.await.unwrap(), "the fetch stops waiting");
        assert_eq!(started.elapsed(), READER_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_holds_the_fetch_back_only_so_long() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let started = tokio::time::Instant::now();
        let (_flight, mut slow, waiting) = four_blocks_ahead(&tmp).await;
        // One block taken: progress, but not within reach.
        slow.frame().await.unwrap().unwrap();
        let kept_pace = waiting.await.unwrap();
        assert!(kept_pace, "a reader that moves still paces the next block");
        assert_eq!(started.elapsed(), READER_WAIT);
    }

    #[test]
    fn recent_blocks_answer_from_the_newest_that_holds_a_position() {
        let recent = Recent::default();
        recent.push(0, Bytes::from_static(b"abcd"));
        // The next block starts with the previous one's unwritten tail.
        recent.push(2, Bytes::from_static(b"cdefgh"));
        assert_eq!(&recent.slice(0, 100).unwrap()[..], b"abcd");
        assert_eq!(&recent.slice(3, 100).unwrap()[..], b"defgh");
        assert_eq!(&recent.slice(3, 5).unwrap()[..], b"de");
        assert!(recent.slice(8, 100).is_none());
        assert!(recent.slice(3, 3).is_none());
    }

    #[tokio::test]
    async fn a_download_that_cannot_be_stored_continues_from_upstream() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let flight = Flight::new();
        streaming(&flight, &tmp, 8);
        // Upstream serves from the offset asked for, with junk past the
        // end that the reader must cut off.
        let resume: Resume = Arc::new(|from, end| {
            Box::pin(async move {
                assert_eq!(end, 8);
                let rest = format!("{}XXX", &"abcdefgh"[from as usize..]);
                Ok(crate::body::full(rest))
            })
        });
        let reader = tokio::spawn(collect(follow(&flight, &tmp, 0, 8, Some(resume))));
        tmp.write_all(b"abcd").unwrap();
        flight.advance(4);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        flight.fail_storage("No space left on device");
        let got = reader.await.unwrap().unwrap();
        assert_eq!(got, b"abcdefgh");
    }

    #[tokio::test]
    async fn a_failed_download_aborts_every_reader() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let flight = Flight::new();
        streaming(&flight, &tmp, 4);
        let reader = tokio::spawn(collect(follow(&flight, &tmp, 0, 4, None)));
        tmp.write_all(b"wxyz").unwrap();
        flight.advance(4);
        flight.fail("digest mismatch");
        let error = reader.await.unwrap().unwrap_err();
        assert!(error.to_string().contains("digest mismatch"), "{error}");
    }
}
