//! Content-addressed files on disk: verified blobs and in-flight ingests.
//!
//! ```text
//! <data>/blobs/sha256/ab/ab12…   committed, verified, read-only (0444)
//! <data>/ingest/<random>         being downloaded; deleted on failure and at start-up
//! ```
//!
//! A blob becomes visible under `blobs/` only by a rename after its bytes
//! hashed to the digest it is filed under and were synced, so a crash at
//! any point leaves either no file there or a complete, verified one. File
//! names come only from a validated [`Digest`], never from a request path.
//!
//! Everything here is blocking file I/O: call it from `spawn_blocking` or a
//! dedicated thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest as _;

use crate::cache::block::ALIGN;
use crate::registry::digest::{Algorithm, Digest};

/// The blob store rooted in the data directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

/// What a successful commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The blob was added.
    Added,
    /// Another writer committed the same digest first; ours was dropped.
    AlreadyPresent,
}

/// Why a commit did not happen. The ingest file is gone in every case.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The bytes hash to something else.
    #[error("content does not match {expected}: got {actual}")]
    DigestMismatch {
        /// The digest the blob was requested by.
        expected: Digest,
        /// What the bytes hashed to.
        actual: Digest,
    },
    /// The upstream announced one length and sent another.
    #[error("expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The announced length.
        expected: u64,
        /// What arrived.
        actual: u64,
    },
    /// A file operation failed.
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

impl BlobStore {
    /// Opens (creating if needed) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> io::Result<BlobStore> {
        let store = BlobStore {
            blobs: data_dir.join("blobs"),
            ingest: data_dir.join("ingest"),
        };
        fs::create_dir_all(&store.blobs)?;
        fs::create_dir_all(&store.ingest)?;
        Ok(store)
    }

    /// Where a committed blob lives: `blobs/<alg>/<2 hex>/<hex>`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    /// The size of a committed blob, if present.
    pub fn blob_size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Opens a committed blob for reading, with its size.
    pub fn open_blob(&self, digest: &Digest) -> io::Result<Option<(File, u64)>> {
        match File::open(self.blob_path(digest)) {
            Ok(file) => {
                let size = file.metadata()?.len();
                Ok(Some((file, size)))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Removes a committed blob (e.g. one found corrupt).
    pub fn remove_blob(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.blob_path(digest)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Starts a new download for `digest`, written through the page cache.
    pub fn create_ingest(&self, algorithm: Algorithm) -> io::Result<IngestFile> {
        self.new_ingest(algorithm, false)
    }

    /// Starts a new download whose aligned writes skip the page cache
    /// (`O_DIRECT`), for large blobs whose readers get the bytes from
    /// memory; see [`IngestFile::write_announcing`]. Falls back to the page
    /// cache where the file system refuses direct I/O.
    pub fn create_direct_ingest(&self, algorithm: Algorithm) -> io::Result<IngestFile> {
        self.new_ingest(algorithm, true)
    }

    fn new_ingest(&self, algorithm: Algorithm, direct: bool) -> io::Result<IngestFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let name = format!(
                "{}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                random_suffix()
            );
            let path = self.ingest.join(name);
            let mut options = OpenOptions::new();
            options.write(true).create_new(true).mode(0o600);
            let opened = match direct_flag().filter(|_| direct) {
                Some(flag) => match options.clone().custom_flags(flag).open(&path) {
                    // tmpfs and some network file systems have no direct I/O.
                    Err(error)
                        if error.raw_os_error()
                            == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
                    {
                        options.open(&path).map(|file| (file, false))
                    }
                    other => other.map(|file| (file, true)),
                },
                None => options.open(&path).map(|file| (file, false)),
            };
            match opened {
                Ok((file, direct)) => {
                    let sink = IngestSink {
                        path,
                        file,
                        direct,
                        written: 0,
                        finished: false,
                    };
                    return Ok(IngestFile::from_parts(sink, Hasher::new(algorithm)));
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Deletes every file in `ingest/`; run at start-up, when no download
    /// can be in flight. Returns how many were removed.
    pub fn clear_ingest(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.ingest)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(entry.path())?;
            } else {
                fs::remove_file(entry.path())?;
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Every committed blob on disk, with its size. Files whose names are
    /// not valid digests, or that sit in the wrong fan-out folder, are
    /// returned separately so recovery can remove them.
    pub fn scan(&self) -> io::Result<Scan> {
        let mut scan = Scan::default();
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let root = self.blobs.join(algorithm.as_str());
            let Ok(fanouts) = fs::read_dir(&root) else {
                continue;
            };
            for fanout in fanouts {
                let fanout = fanout?;
                if !fanout.file_type()?.is_dir() {
                    scan.strays.push(fanout.path());
                    continue;
                }
                for entry in fs::read_dir(fanout.path())? {
                    let entry = entry?;
                    let name = entry.file_name();
                    let digest = name
                        .to_str()
                        .and_then(|hex| {
                            Digest::parse(&format!("{}:{hex}", algorithm.as_str())).ok()
                        })
                        .filter(|d| d.hex()[..2] == *fanout.file_name().to_string_lossy());
                    match digest {
                        Some(digest) if entry.file_type()?.is_file() => {
                            scan.blobs.push((digest, entry.metadata()?.len()));
                        }
                        _ => scan.strays.push(entry.path()),
                    }
                }
            }
        }
        Ok(scan)
    }
}

/// What [`BlobStore::scan`] found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Committed blobs and their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Files that do not belong in `blobs/`.
    pub strays: Vec<PathBuf>,
}

/// A download in progress: bytes are hashed as they are written. Dropped
/// without a successful [`IngestFile::commit`], the file is deleted.
#[derive(Debug)]
pub struct IngestFile {
    sink: IngestSink,
    hasher: Hasher,
}

/// The file half of an [`IngestFile`]: appends bytes without hashing them,
/// so that the hash can run on another thread at the same time (see
/// [`IngestFile::split`]). Dropped before its ingest is committed, the
/// file is deleted.
#[derive(Debug)]
pub struct IngestSink {
    path: PathBuf,
    file: File,
    /// Whether the file is open with `O_DIRECT`.
    direct: bool,
    written: u64,
    finished: bool,
}

impl IngestFile {
    /// Appends and hashes a chunk.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.write_announcing(&[chunk], |_| {})
    }

    /// Appends `chunks` (see [`IngestSink::write_announcing`]), then hashes
    /// them: readers following the file may send these bytes while the
    /// hash runs; they cannot finish before [`IngestFile::verify`] anyway.
    pub fn write_announcing<B: AsRef<[u8]>>(
        &mut self,
        chunks: &[B],
        announce: impl FnOnce(u64),
    ) -> io::Result<()> {
        self.sink.write_announcing(chunks, announce)?;
        for chunk in chunks {
            self.hasher.update(chunk.as_ref());
        }
        Ok(())
    }

    /// Parts the file from the hash, to write on one thread and hash on
    /// another; every byte written must be hashed, in order, before the
    /// parts are put back together with [`IngestFile::from_parts`].
    pub fn split(self) -> (IngestSink, Hasher) {
        (self.sink, self.hasher)
    }

    /// An ingest from the parts [`IngestFile::split`] made.
    pub fn from_parts(sink: IngestSink, hasher: Hasher) -> IngestFile {
        IngestFile { sink, hasher }
    }

    /// Whether writes still skip the page cache.
    pub fn is_direct(&self) -> bool {
        self.sink.direct
    }

    /// The file's path, for readers that follow the download.
    pub fn path(&self) -> &Path {
        &self.sink.path
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.sink.written
    }

    /// Verifies the bytes against `expected` (and `expected_size` when the
    /// upstream announced one). On success the bytes are known good but not
    /// yet durable or visible; [`VerifiedIngest::persist`] does that.
    pub fn verify(
        self,
        expected: &Digest,
        expected_size: Option<u64>,
    ) -> Result<VerifiedIngest, CommitError> {
        let IngestFile { sink, hasher } = self;
        if let Some(size) = expected_size.filter(|&size| size != sink.written) {
            return Err(CommitError::SizeMismatch {
                expected: size,
                actual: sink.written,
            });
        }
        let actual = hasher.finish();
        if actual != *expected {
            return Err(CommitError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        Ok(VerifiedIngest {
            ingest: sink,
            digest: actual,
        })
    }

    /// [`IngestFile::verify`] then [`VerifiedIngest::persist`].
    pub fn commit(
        self,
        store: &BlobStore,
        expected: &Digest,
        expected_size: Option<u64>,
    ) -> Result<Committed, CommitError> {
        Ok(self.verify(expected, expected_size)?.persist(store)?)
    }
}

impl IngestSink {
    /// Appends `chunks` with one vectored write, then calls `announce` with
    /// the new length: the bytes are in the file.
    ///
    /// On a direct ingest, chunks whose addresses and lengths are all
    /// [`ALIGN`]ed go straight to the disk; the first that are not (a
    /// download's last bytes) switch the file to the page cache for good.
    pub fn write_announcing<B: AsRef<[u8]>>(
        &mut self,
        chunks: &[B],
        announce: impl FnOnce(u64),
    ) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> =
            chunks.iter().map(|c| IoSlice::new(c.as_ref())).collect();
        if self.direct && !slices.iter().all(|s| is_aligned(s)) {
            self.stop_direct()?;
        }
        self.write_all_vectored(&mut slices)?;
        self.written += slices_len(chunks);
        announce(self.written);
        Ok(())
    }

    /// `Write::write_all` for several buffers (the standard library's
    /// `write_all_vectored` is not stable yet). A direct write the file
    /// system refuses is retried, from where it stopped, through the page
    /// cache: some accept the flag at open and not at write.
    fn write_all_vectored(&mut self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        while !slices.is_empty() {
            match self.file.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error)
                    if self.direct
                        && error.raw_os_error()
                            == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
                {
                    self.stop_direct()?
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    fn stop_direct(&mut self) -> io::Result<()> {
        use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
        let flags = fcntl_getfl(&self.file)?;
        fcntl_setfl(&self.file, flags - OFlags::DIRECT)?;
        self.direct = false;
        Ok(())
    }
}

/// An ingest whose bytes matched their digest, waiting to be made durable
/// and visible. Dropped without [`VerifiedIngest::persist`], it is deleted.
#[derive(Debug)]
pub struct VerifiedIngest {
    ingest: IngestSink,
    digest: Digest,
}

impl VerifiedIngest {
    /// The verified size.
    pub fn size(&self) -> u64 {
        self.ingest.written
    }

    /// Syncs the file, renames it into `blobs/`, syncs the directory and
    /// makes the file read-only.
    pub fn persist(mut self, store: &BlobStore) -> io::Result<Committed> {
        let ingest = &mut self.ingest;
        ingest.file.sync_all()?;
        fs::set_permissions(&ingest.path, fs::Permissions::from_mode(0o444))?;
        let target = store.blob_path(&self.digest);
        let parent = target.parent().expect("blob paths have a parent");
        fs::create_dir_all(parent)?;
        if target.exists() {
            // Content-addressed: an existing file with this name is the same
            // verified content, committed by a writer that finished first.
            return Ok(Committed::AlreadyPresent);
        }
        fs::rename(&ingest.path, &target)?;
        ingest.finished = true;
        // The rename is durable only once the directory entry is synced,
        // and a fan-out folder made just now only once its parent is.
        File::open(parent)?.sync_all()?;
        if let Some(grandparent) = parent.parent() {
            File::open(grandparent)?.sync_all()?;
        }
        Ok(Committed::Added)
    }
}

impl Drop for IngestSink {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A running hash of either registered algorithm.
#[derive(Debug, Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-512.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::from_bytes(Algorithm::Sha256, &h.finalize()),
            Hasher::Sha512(h) => Digest::from_bytes(Algorithm::Sha512, &h.finalize()),
        }
    }
}

/// Hashes a whole byte slice.
pub fn digest_of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(bytes);
    hasher.finish()
}

/// A short random suffix so ingest names from restarted processes with a
/// recycled PID still differ.
fn random_suffix() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher as _};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", h.finish())
}

/// The `custom_flags` value for `O_DIRECT`, where the platform has it.
fn direct_flag() -> Option<i32> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        i32::try_from(rustix::fs::OFlags::DIRECT.bits()).ok()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        None
    }
}

fn is_aligned(slice: &IoSlice<'_>) -> bool {
    slice.as_ptr().align_offset(ALIGN) == 0 && slice.len().is_multiple_of(ALIGN)
}

fn slices_len<B: AsRef<[u8]>>(chunks: &[B]) -> u64 {
    chunks.iter().map(|c| c.as_ref().len() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        (dir, store)
    }

    mod commit {
        use super::*;

        #[test]
        fn verified_bytes_land_read_only_under_their_digest() {
            let (_dir, store) = store();
            let bytes = b"layer bytes";
            let digest = digest_of(Algorithm::Sha256, bytes);
            let mut ingest = store.create_ingest(Algorithm::Sha256).unwrap();
            ingest.write(&bytes[..5]).unwrap();
            ingest.write(&bytes[5..]).unwrap();
            let ingest_path = ingest.path().to_owned();
            assert_eq!(
                ingest
                    .commit(&store, &digest, Some(bytes.len() as u64))
                    .unwrap(),
                Committed::Added
            );
            assert!(!ingest_path.exists());
            let path = store.blob_path(&digest);
            assert_eq!(fs::read(&path).unwrap(), bytes);
            assert!(path.starts_with(store.blobs.join("sha256").join(&digest.hex()[..2])));
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o444);
        }

        #[test]
        fn batches_are_written_whole_and_announced_before_they_are_hashed() {
            let (_dir, store) = store();
            let chunks: Vec<Vec<u8>> = (0u8..40).map(|i| vec![i; 1000 + usize::from(i)]).collect();
            let all = chunks.concat();
            let digest = digest_of(Algorithm::Sha256, &all);
            let mut ingest = store.create_ingest(Algorithm::Sha256).unwrap();
            let reader = File::open(ingest.path()).unwrap();
            let mut announced = Vec::new();
            for batch in chunks.chunks(16) {
                ingest
                    .write_announcing(batch, |written| {
                        // Announced bytes are already readable in the file.
                        assert_eq!(reader.metadata().unwrap().len(), written);
                        announced.push(written);
                    })
                    .unwrap();
            }
            let sizes: Vec<u64> = chunks
                .chunks(16)
                .scan(0, |total, batch| {
                    *total += slices_len(batch);
                    Some(*total)
                })
                .collect();
            assert_eq!(announced, sizes);
            let ingest_path = ingest.path().to_owned();
            ingest
                .commit(&store, &digest, Some(all.len() as u64))
                .unwrap();
            assert!(!ingest_path.exists());
            assert_eq!(fs::read(store.blob_path(&digest)).unwrap(), all);
        }

        #[test]
        fn a_direct_ingest_writes_aligned_blocks_directly_and_the_tail_through_the_page_cache() {
            use crate::cache::block::{BlockPool, ALIGN};
            let (_dir, store) = store();
            let pool = std::sync::Arc::new(BlockPool::for_downloads());
            let data: Vec<u8> = (0..5 * ALIGN + 321).map(|i| (i % 253) as u8).collect();
            let digest = digest_of(Algorithm::Sha256, &data);
            let mut ingest = store.create_direct_ingest(Algorithm::Sha256).unwrap();
            // Only a file system without direct I/O (tmpfs on old kernels)
            // starts out buffered; the bytes must come out right either way.
            let started_direct = ingest.is_direct();
            let mut block = pool.take();
            block.fill(&data[..3 * ALIGN]);
            ingest.write_announcing(&[block.freeze()], |_| {}).unwrap();
            assert_eq!(
                ingest.is_direct(),
                started_direct,
                "aligned writes stay direct"
            );
            let mut block = pool.take();
            block.fill(&data[3 * ALIGN..]);
            ingest.write_announcing(&[block.freeze()], |_| {}).unwrap();
            assert!(!ingest.is_direct(), "an unaligned tail ends direct I/O");
            assert_eq!(ingest.written(), data.len() as u64);
            ingest
                .commit(&store, &digest, Some(data.len() as u64))
                .unwrap();
            assert_eq!(fs::read(store.blob_path(&digest)).unwrap(), data);
        }

        #[test]
        fn wrong_bytes_are_never_committed() {
            let (_dir, store) = store();
            let digest = digest_of(Algorithm::Sha256, b"what was asked for");
            let mut ingest = store.create_ingest(Algorithm::Sha256).unwrap();
            ingest.write(b"something else").unwrap();
            let ingest_path = ingest.path().to_owned();
            let error = ingest.commit(&store, &digest, None).unwrap_err();
            assert!(
                matches!(error, CommitError::DigestMismatch { .. }),
                "{error}"
            );
            assert!(!ingest_path.exists(), "the ingest file is deleted");
            assert_eq!(store.blob_size(&digest).unwrap(), None);
        }

        #[test]
        fn a_short_body_is_a_size_mismatch() {
            let (_dir, store) = store();
            let digest = digest_of(Algorithm::Sha256, b"abc");
            let mut ingest = store.create_ingest(Algorithm::Sha256).unwrap();
            ingest.write(b"ab").unwrap();
            let error = ingest.commit(&store, &digest, Some(3)).unwrap_err();
            assert!(matches!(
                error,
                CommitError::SizeMismatch {
                    expected: 3,
                    actual: 2
                }
            ));
            assert_eq!(store.scan().unwrap().blobs.len(), 0);
        }

        #[test]
        fn a_second_writer_of_the_same_digest_is_a_success() {
            let (_dir, store) = store();
            let digest = digest_of(Algorithm::Sha256, b"same");
            for expected in [Committed::Added, Committed::AlreadyPresent] {
                let mut ingest = store.create_ingest(Algorithm::Sha256).unwrap();
                ingest.write(b"same").unwrap();
                assert_eq!(ingest.commit(&store, &digest, Some(4)).unwrap(), expected);
            }
            assert_eq!(fs::read_dir(&store.ingest).unwrap().count(), 0);
        }

        #[test]
        fn dropping_an_unfinished_ingest_deletes_it() {
            let (_dir, store) = store();
            let mut ingest = store.create_ingest(Algorithm::Sha512).unwrap();
            ingest.write(b"partial").unwrap();
            let path = ingest.path().to_owned();
            drop(ingest);
            assert!(!path.exists());
        }
    }

    mod scan {
        use super::*;

        #[test]
        fn finds_blobs_and_strays() {
            let (_dir, store) = store();
            let digest = digest_of(Algorithm::Sha256, b"x");
            let mut ingest = store.create_ingest(Algorithm::Sha256).unwrap();
            ingest.write(b"x").unwrap();
            ingest.commit(&store, &digest, None).unwrap();
            let stray_dir = store.blobs.join("sha256").join("zz");
            fs::create_dir_all(&stray_dir).unwrap();
            fs::write(stray_dir.join("not-a-digest"), b"?").unwrap();
            // A valid name in the wrong fan-out folder is a stray too.
            let other = digest_of(Algorithm::Sha256, b"y");
            fs::write(stray_dir.join(other.hex()), b"y").unwrap();

            let scan = store.scan().unwrap();
            assert_eq!(scan.blobs, vec![(digest, 1)]);
            assert_eq!(scan.strays.len(), 2);
        }

        #[test]
        fn clear_ingest_empties_the_folder() {
            let (_dir, store) = store();
            let ingest = store.create_ingest(Algorithm::Sha256).unwrap();
            // Simulate a crash: the process is gone, the file stays.
            std::mem::forget(ingest);
            assert_eq!(store.clear_ingest().unwrap(), 1);
            assert_eq!(fs::read_dir(&store.ingest).unwrap().count(), 0);
        }
    }
}
