//! The on-disk cache: verified blobs ([`store`]), the metadata index
//! ([`index`]), single-flight downloads ([`flight`]) and, here, the
//! in-memory view of all three that the request path reads without
//! touching the disk.
//!
//! Writes go to memory first and then to the index on a blocking thread;
//! the index is loaded into memory at start-up after recovery has made it
//! agree with the files in `blobs/`. A damaged index is set aside and
//! rebuilt from `blobs/`; [`verify`] re-hashes every blob offline.

pub mod block;
pub mod flight;
pub mod index;
pub mod store;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tracing::{info, warn};

use crate::registry::digest::Digest;
use block::BlockPool;
use flight::Flights;
use index::{BlobRecord, Index, IndexError, RepoRecord, Snapshot, TagRecord};
use store::BlobStore;

/// What the cache knows of a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Size in bytes.
    pub size: u64,
    /// The media type upstream gave, if known.
    pub media_type: Option<Arc<str>>,
}

/// What a tag pointed to, and when upstream last said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest media type.
    pub media_type: Arc<str>,
    /// When upstream last confirmed it.
    pub fetched_at: SystemTime,
}

/// Whether a repository is public, and when that was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepoInfo {
    /// Anonymous pulls are allowed.
    pub public: bool,
    /// When it was checked.
    pub checked_at: SystemTime,
}

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The folders or files could not be read or created.
    #[error("cache storage in {path}: {source}")]
    Io {
        /// The data directory.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Another process holds the index: a running server, or `cache verify`.
    #[error(
        "the cache index {path} is in use by another process \
         (a pullcache server or `cache verify` on the same data_dir)"
    )]
    InUse {
        /// The index file.
        path: String,
    },
    /// The index could not be opened.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// What start-up recovery did, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Ingest files removed.
    pub ingest_removed: usize,
    /// Index rows whose file was missing, dropped.
    pub rows_dropped: usize,
    /// Files the index did not know, adopted.
    pub files_adopted: usize,
    /// Files that do not belong in `blobs/`, removed.
    pub strays_removed: usize,
    /// Tags whose manifest was gone, dropped.
    pub tags_dropped: usize,
    /// Files whose size differs from the size recorded when they were
    /// committed (so their content cannot be right), removed.
    pub wrong_size_removed: Vec<WrongSize>,
    /// The index was missing or damaged while `blobs/` held files, and was
    /// rebuilt from them (tags and visibility are relearned from upstream).
    pub index_rebuilt: bool,
    /// Where a damaged index was moved, kept for forensics.
    pub damaged_index: Option<PathBuf>,
}

/// A committed file whose size is not the size recorded at its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongSize {
    /// The blob.
    pub digest: Digest,
    /// The size recorded when it was verified and committed.
    pub recorded: u64,
    /// The size of the file found.
    pub found: u64,
}

/// The index file inside the data directory.
pub const INDEX_FILE: &str = "index.redb";

/// The cache shared by every request.
pub struct Cache {
    store: BlobStore,
    index: Arc<Index>,
    blobs: DashMap<Digest, BlobInfo>,
    tags: DashMap<String, TagInfo>,
    repos: DashMap<String, RepoInfo>,
    /// Hits since the last flush: digest → (count, last access).
    pending_hits: Mutex<HashMap<Digest, (u64, u64)>>,
    /// Blob downloads in progress.
    pub flights: Flights,
    /// Buffers those downloads carry their bytes in.
    pub blocks: Arc<BlockPool>,
    /// Buffers hits read blobs into.
    pub read_blocks: Arc<BlockPool>,
}

impl Cache {
    /// Opens the cache in `data_dir`, recovering from any crash: clears
    /// `ingest/`, drops index rows whose file is missing, removes files whose
    /// size is not the one recorded at commit, adopts verified files the
    /// index does not know. A damaged index is moved aside to
    /// `index.redb.damaged-<unix time>` and rebuilt from `blobs/`; one that
    /// another process holds is [`CacheError::InUse`] and left alone.
    /// Blocking.
    pub fn open(data_dir: &Path) -> Result<(Cache, Recovery), CacheError> {
        let io_error = |source| CacheError::Io {
            path: data_dir.display().to_string(),
            source,
        };
        let store = BlobStore::open(data_dir).map_err(io_error)?;
        let index_path = data_dir.join(INDEX_FILE);
        let index_existed = std::fs::symlink_metadata(&index_path).is_ok();
        // Opening the index takes redb's lock, which proves no other process
        // is using this data directory; only then is clearing ingest/ safe.
        let (index, snapshot, damaged_index) = match Index::open_and_read(&index_path) {
            Ok((index, snapshot)) => (index, snapshot, None),
            Err(IndexError::Damaged(why)) => {
                let aside = set_aside(&index_path).map_err(io_error)?;
                warn!(
                    index.path = %index_path.display(),
                    index.moved_to = %aside.display(),
                    error = %why,
                    "the index cannot be read; moved it aside, rebuilding it from blobs/"
                );
                let index = Index::open(&index_path).map_err(|e| in_use(e, &index_path))?;
                (index, Snapshot::default(), Some(aside))
            }
            Err(error) => return Err(in_use(error, &index_path)),
        };
        let mut recovery = Recovery {
            ingest_removed: store.clear_ingest().map_err(io_error)?,
            ..Recovery::default()
        };

        let scan = store.scan().map_err(io_error)?;
        for stray in &scan.strays {
            warn!(path = %stray.display(), "removing a file that does not belong in blobs/");
            let _ = std::fs::remove_file(stray);
            recovery.strays_removed += 1;
        }
        let on_disk: HashMap<Digest, u64> = scan.blobs.into_iter().collect();

        let blobs = DashMap::new();
        let mut known = HashSet::new();
        let mut missing = Vec::new();
        for record in snapshot.blobs {
            match on_disk.get(&record.digest) {
                Some(&size) if size != record.size => {
                    // The size was checked at commit, so the file was cut
                    // short or written to since: its content is wrong. The
                    // file goes before the row, so that a crash in between
                    // leaves a row recovery drops, never a file it adopts.
                    warn!(
                        oci.digest = %record.digest,
                        size.recorded = record.size,
                        size.found = size,
                        "removing a cached blob whose size changed since it was committed"
                    );
                    store.remove_blob(&record.digest).map_err(io_error)?;
                    known.insert(record.digest.clone());
                    recovery.wrong_size_removed.push(WrongSize {
                        digest: record.digest.clone(),
                        recorded: record.size,
                        found: size,
                    });
                    missing.push(record.digest);
                }
                Some(&size) => {
                    known.insert(record.digest.clone());
                    blobs.insert(
                        record.digest,
                        BlobInfo {
                            size,
                            media_type: record.media_type.map(Arc::from),
                        },
                    );
                }
                None => missing.push(record.digest),
            }
        }
        recovery.rows_dropped = missing.len() - recovery.wrong_size_removed.len();
        index.remove_blobs(&missing)?;
        // Files only reach blobs/ after verification, so one the index does
        // not know is a commit whose index write was cut short: keep it.
        let now = unix_now();
        for (digest, size) in on_disk {
            if known.contains(&digest) {
                continue;
            }
            index.put_blob(&BlobRecord {
                digest: digest.clone(),
                size,
                media_type: None,
                fetched_at: now,
                last_access: now,
                hits: 0,
            })?;
            blobs.insert(
                digest,
                BlobInfo {
                    size,
                    media_type: None,
                },
            );
            recovery.files_adopted += 1;
        }
        // A first start has no index and no blobs: nothing was lost. An
        // index that vanished while blobs/ kept files is a rebuild, like a
        // damaged one, and just as worth telling the operator about.
        recovery.index_rebuilt =
            damaged_index.is_some() || (!index_existed && recovery.files_adopted > 0);
        if recovery.index_rebuilt {
            let why = if damaged_index.is_some() {
                "damaged"
            } else {
                "missing"
            };
            warn!(
                recovery.files_adopted = recovery.files_adopted,
                "index was {why}; rebuilt from blobs/ ({} blobs); tags and repository visibility will be relearned from upstream",
                recovery.files_adopted
            );
        }
        recovery.damaged_index = damaged_index;

        let tags = DashMap::new();
        let mut dead_tags = Vec::new();
        for record in snapshot.tags {
            if blobs.contains_key(&record.digest) {
                tags.insert(
                    record.key,
                    TagInfo {
                        digest: record.digest,
                        media_type: record.media_type.into(),
                        fetched_at: from_unix(record.fetched_at),
                    },
                );
            } else {
                dead_tags.push(record.key);
            }
        }
        recovery.tags_dropped = dead_tags.len();
        index.remove_tags(&dead_tags)?;

        let repos = snapshot
            .repos
            .into_iter()
            .map(|r| {
                (
                    r.key,
                    RepoInfo {
                        public: r.public,
                        checked_at: from_unix(r.checked_at),
                    },
                )
            })
            .collect();

        info!(
            cache.blobs = blobs.len(),
            cache.tags = tags.len(),
            recovery.ingest_removed = recovery.ingest_removed,
            recovery.rows_dropped = recovery.rows_dropped,
            recovery.files_adopted = recovery.files_adopted,
            recovery.strays_removed = recovery.strays_removed,
            recovery.tags_dropped = recovery.tags_dropped,
            recovery.wrong_size_removed = recovery.wrong_size_removed.len(),
            recovery.index_rebuilt = recovery.index_rebuilt,
            "cache opened"
        );
        let cache = Cache {
            store,
            index: Arc::new(index),
            blobs,
            tags,
            repos,
            pending_hits: Mutex::default(),
            flights: Flights::default(),
            blocks: Arc::new(BlockPool::for_downloads()),
            read_blocks: Arc::new(BlockPool::for_reads()),
        };
        Ok((cache, recovery))
    }

    /// The blob store.
    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// A committed blob, if the cache has it.
    pub fn blob(&self, digest: &Digest) -> Option<BlobInfo> {
        self.blobs.get(digest).map(|entry| entry.clone())
    }

    /// Records a newly committed blob, in memory at once and in the index
    /// on a blocking thread. An index failure is logged, not returned: the
    /// file is committed and recovery adopts it at the next start.
    pub async fn record_blob(&self, digest: &Digest, size: u64, media_type: Option<&str>) {
        self.blobs.insert(
            digest.clone(),
            BlobInfo {
                size,
                media_type: media_type.map(Arc::from),
            },
        );
        let now = unix_now();
        let record = BlobRecord {
            digest: digest.clone(),
            size,
            media_type: media_type.map(str::to_owned),
            fetched_at: now,
            last_access: now,
            hits: 0,
        };
        self.write_index(move |index| index.put_blob(&record)).await;
    }

    /// Forgets a blob that turned out to be missing or corrupt on disk.
    pub async fn forget_blob(&self, digest: &Digest) {
        self.blobs.remove(digest);
        let digests = vec![digest.clone()];
        self.write_index(move |index| index.remove_blobs(&digests))
            .await;
    }

    /// Counts a cache hit; flushed to the index by [`Cache::flush_hits`].
    pub fn note_hit(&self, digest: &Digest) {
        let mut pending = self.pending_hits.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending.entry(digest.clone()).or_default();
        entry.0 += 1;
        entry.1 = unix_now();
    }

    /// Writes the hit counts gathered since the last flush.
    pub async fn flush_hits(&self) {
        let batch: Vec<(Digest, u64, u64)> = {
            let mut pending = self.pending_hits.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().map(|(d, (n, t))| (d, n, t)).collect()
        };
        if !batch.is_empty() {
            self.write_index(move |index| index.record_access(&batch))
                .await;
        }
    }

    /// What `key` (`host/name:tag`) pointed to.
    pub fn tag(&self, key: &str) -> Option<TagInfo> {
        self.tags.get(key).map(|entry| entry.clone())
    }

    /// Records what a tag points to, now.
    pub async fn put_tag(&self, key: &str, digest: &Digest, media_type: &str) {
        let info = TagInfo {
            digest: digest.clone(),
            media_type: media_type.into(),
            fetched_at: SystemTime::now(),
        };
        self.tags.insert(key.to_owned(), info);
        let record = TagRecord {
            key: key.to_owned(),
            digest: digest.clone(),
            media_type: media_type.to_owned(),
            fetched_at: unix_now(),
        };
        self.write_index(move |index| index.put_tag(&record)).await;
    }

    /// Whether `key` (`host/name`) was found public, and when.
    pub fn repo(&self, key: &str) -> Option<RepoInfo> {
        self.repos.get(key).map(|entry| *entry)
    }

    /// Records a repository's visibility, now. The answer counts at once;
    /// the returned future makes it durable, so a request that just probed
    /// need not wait for the index's fsync: spawn it, or await it where
    /// the record must be on disk before going on.
    pub fn put_repo(
        &self,
        key: &str,
        public: bool,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.repos.insert(
            key.to_owned(),
            RepoInfo {
                public,
                checked_at: SystemTime::now(),
            },
        );
        let record = RepoRecord {
            key: key.to_owned(),
            public,
            checked_at: unix_now(),
        };
        write_index(self.index.clone(), move |index| index.put_repo(&record))
    }

    async fn write_index<F>(&self, write: F)
    where
        F: FnOnce(&Index) -> Result<(), IndexError> + Send + 'static,
    {
        write_index(self.index.clone(), write).await;
    }
}

/// Runs one index write on the blocking pool; a failure is logged, not
/// returned: the index is a record of the cache, which stays usable.
async fn write_index<F>(index: Arc<Index>, write: F)
where
    F: FnOnce(&Index) -> Result<(), IndexError> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || write(&index)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(%error, "index write failed; the cache stays usable"),
        Err(error) => warn!(%error, "index write task failed"),
    }
}

/// Maps "in use" to the error that says what to do about it.
fn in_use(error: IndexError, path: &Path) -> CacheError {
    match error {
        IndexError::InUse => CacheError::InUse {
            path: path.display().to_string(),
        },
        other => CacheError::Index(other),
    }
}

/// Renames a damaged index to `index.redb.damaged-<unix time>` beside it
/// (with a counter if that name is taken), keeping it for forensics, and
/// syncs the directory so the rebuilt index never shares its name.
fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let now = unix_now();
    let mut n = 0u32;
    let target = loop {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".damaged-{now}"));
        if n > 0 {
            name.push(format!(".{n}"));
        }
        let candidate = PathBuf::from(name);
        if std::fs::symlink_metadata(&candidate).is_err() {
            break candidate;
        }
        n += 1;
    };
    std::fs::rename(path, &target)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(target)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn from_unix(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

/// Whether something recorded at `at` is younger than `ttl`.
pub fn is_fresh(at: SystemTime, ttl: Duration) -> bool {
    SystemTime::now()
        .duration_since(at)
        .map(|age| age < ttl)
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Algorithm;
    use std::os::unix::fs::PermissionsExt;
    use store::digest_of;

    fn commit(store: &BlobStore, bytes: &[u8]) -> Digest {
        let digest = digest_of(Algorithm::Sha256, bytes);
        let mut ingest = store.create_ingest(Algorithm::Sha256).unwrap();
        ingest.write(bytes).unwrap();
        ingest.commit(store, &digest, None).unwrap();
        digest
    }

    mod recovery {
        use super::*;

        #[tokio::test]
        async fn a_crash_between_rename_and_index_write_keeps_the_blob() {
            let dir = tempfile::tempdir().unwrap();
            let digest = {
                let (cache, _) = Cache::open(dir.path()).unwrap();
                // Crash point: the file is committed, the index row never written.
                commit(cache.store(), b"adopt me")
            };
            let (cache, recovery) = Cache::open(dir.path()).unwrap();
            assert_eq!(recovery.files_adopted, 1);
            assert_eq!(cache.blob(&digest).unwrap().size, 8);
        }

        #[tokio::test]
        async fn a_crash_mid_download_leaves_nothing() {
            let dir = tempfile::tempdir().unwrap();
            {
                let (cache, _) = Cache::open(dir.path()).unwrap();
                let mut ingest = cache.store().create_ingest(Algorithm::Sha256).unwrap();
                ingest.write(b"half a blo").unwrap();
                // Crash point: the process dies with the ingest file open.
                std::mem::forget(ingest);
            }
            let (cache, recovery) = Cache::open(dir.path()).unwrap();
            assert_eq!(recovery.ingest_removed, 1);
            assert!(cache.blobs.is_empty());
            assert_eq!(
                std::fs::read_dir(dir.path().join("ingest"))
                    .unwrap()
                    .count(),
                0
            );
        }

        /// Commits three blobs, one a manifest with a tag, and closes.
        async fn populated(dir: &Path) -> Vec<Digest> {
            let (cache, _) = Cache::open(dir).unwrap();
            let mut digests = Vec::new();
            for bytes in [&b"layer one"[..], b"layer two", b"{\"manifest\":2}"] {
                let digest = commit(cache.store(), bytes);
                cache.record_blob(&digest, bytes.len() as u64, None).await;
                digests.push(digest);
            }
            cache
                .put_tag(
                    "r.example/app:1",
                    &digests[2],
                    "application/vnd.oci.image.manifest.v1+json",
                )
                .await;
            digests
        }

        fn damaged_files(dir: &Path) -> Vec<PathBuf> {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("index.redb.damaged-")
                })
                .collect()
        }

        #[tokio::test]
        async fn a_garbage_index_is_set_aside_and_rebuilt_from_blobs() {
            let dir = tempfile::tempdir().unwrap();
            let digests = populated(dir.path()).await;
            let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 31 + 7) as u8).collect();
            std::fs::write(dir.path().join(INDEX_FILE), &garbage).unwrap();

            let (cache, recovery) = Cache::open(dir.path()).unwrap();
            assert!(recovery.index_rebuilt);
            assert_eq!(recovery.files_adopted, 3);
            for digest in &digests {
                assert!(cache.blob(digest).is_some(), "{digest} adopted");
            }
            assert!(cache.tag("r.example/app:1").is_none(), "tags are lost");
            let aside = damaged_files(dir.path());
            assert_eq!(aside, vec![recovery.damaged_index.clone().unwrap()]);
            assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage, "kept as it was");
            drop(cache);

            // The rebuilt index is a good one: the next start changes nothing.
            let (_, again) = Cache::open(dir.path()).unwrap();
            assert_eq!(again, Recovery::default());
        }

        #[tokio::test]
        async fn a_table_of_the_wrong_type_counts_as_damage() {
            let dir = tempfile::tempdir().unwrap();
            let digests = populated(dir.path()).await;
            let path = dir.path().join(INDEX_FILE);
            std::fs::remove_file(&path).unwrap();
            {
                // A valid redb file whose "blobs" table this build cannot read.
                let db = redb::Database::create(&path).unwrap();
                let tx = db.begin_write().unwrap();
                {
                    let mut table = tx
                        .open_table(redb::TableDefinition::<u64, u64>::new("blobs"))
                        .unwrap();
                    table.insert(1, 2).unwrap();
                }
                tx.commit().unwrap();
            }

            let (cache, recovery) = Cache::open(dir.path()).unwrap();
            assert!(recovery.index_rebuilt, "{recovery:?}");
            assert!(recovery.damaged_index.is_some());
            assert_eq!(recovery.files_adopted, digests.len());
            assert_eq!(damaged_files(dir.path()).len(), 1);
            assert!(cache.blob(&digests[0]).is_some());
        }

        #[tokio::test]
        async fn a_deleted_index_is_rebuilt_without_a_damaged_file() {
            let dir = tempfile::tempdir().unwrap();
            let digests = populated(dir.path()).await;
            std::fs::remove_file(dir.path().join(INDEX_FILE)).unwrap();

            let (cache, recovery) = Cache::open(dir.path()).unwrap();
            assert!(recovery.index_rebuilt);
            assert_eq!(recovery.damaged_index, None);
            assert_eq!(recovery.files_adopted, 3);
            assert!(cache.blob(&digests[1]).is_some());
            assert!(damaged_files(dir.path()).is_empty());
        }

        #[test]
        fn a_first_start_is_not_a_rebuild() {
            let dir = tempfile::tempdir().unwrap();
            let (_, recovery) = Cache::open(dir.path()).unwrap();
            assert_eq!(recovery, Recovery::default());
        }

        #[tokio::test]
        async fn an_index_in_use_is_refused_and_left_alone() {
            let dir = tempfile::tempdir().unwrap();
            populated(dir.path()).await;
            let (_server, _) = Cache::open(dir.path()).unwrap();
            let error = Cache::open(dir.path()).err().expect("a second open fails");
            assert!(matches!(error, CacheError::InUse { .. }), "{error}");
            assert!(damaged_files(dir.path()).is_empty());
        }

        #[tokio::test]
        async fn a_file_of_the_wrong_size_is_removed() {
            let dir = tempfile::tempdir().unwrap();
            let digests = populated(dir.path()).await;
            let path = dir
                .path()
                .join("blobs/sha256")
                .join(&digests[2].hex()[..2])
                .join(digests[2].hex());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::write(&path, b"{}").unwrap();

            let (cache, recovery) = Cache::open(dir.path()).unwrap();
            assert_eq!(
                recovery.wrong_size_removed,
                vec![WrongSize {
                    digest: digests[2].clone(),
                    recorded: 14,
                    found: 2
                }]
            );
            assert_eq!((recovery.rows_dropped, recovery.tags_dropped), (0, 1));
            assert!(!path.exists());
            assert!(cache.blob(&digests[2]).is_none());
            assert!(cache.tag("r.example/app:1").is_none());
        }

        #[tokio::test]
        async fn rows_whose_file_vanished_are_dropped_with_their_tags() {
            let dir = tempfile::tempdir().unwrap();
            let digest = {
                let (cache, _) = Cache::open(dir.path()).unwrap();
                let digest = commit(cache.store(), b"{\"manifest\":1}");
                cache
                    .record_blob(
                        &digest,
                        14,
                        Some("application/vnd.oci.image.manifest.v1+json"),
                    )
                    .await;
                cache
                    .put_tag(
                        "r.example/app:1",
                        &digest,
                        "application/vnd.oci.image.manifest.v1+json",
                    )
                    .await;
                cache.put_repo("r.example/app", true).await;
                cache.note_hit(&digest);
                cache.flush_hits().await;
                digest
            };
            {
                let (cache, recovery) = Cache::open(dir.path()).unwrap();
                assert_eq!(
                    recovery,
                    Recovery::default(),
                    "a clean reopen changes nothing"
                );
                assert_eq!(cache.tag("r.example/app:1").unwrap().digest, digest);
                assert!(cache.repo("r.example/app").unwrap().public);
                let path = cache.store().blob_path(&digest);
                std::fs::remove_file(path).unwrap();
            }
            let (cache, recovery) = Cache::open(dir.path()).unwrap();
            assert_eq!(recovery.rows_dropped, 1);
            assert_eq!(recovery.tags_dropped, 1);
            assert!(cache.blob(&digest).is_none());
            assert!(cache.tag("r.example/app:1").is_none());
        }
    }
}
