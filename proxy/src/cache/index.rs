//! The metadata index in `<data>/index.redb`: what each blob is (size,
//! media type, when fetched, last access, hits), which digest each tag
//! pointed to and when, and which repositories were confirmed public.
//!
//! The index is metadata only: the blobs themselves are files, and the
//! index can be rebuilt from `blobs/` (tags and visibility are then
//! relearned from upstream). That is why errors are sorted into
//! [`IndexError::Damaged`] (set the file aside and rebuild),
//! [`IndexError::InUse`] (another process has it: never touch the file)
//! and the rest. All calls are blocking.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::registry::digest::Digest;

/// digest → (size, media type or "", fetched at, last access, hits); times in Unix seconds.
const BLOBS: TableDefinition<&str, (u64, &str, u64, u64, u64)> = TableDefinition::new("blobs");
/// "host/name:tag" → (digest, media type, fetched at).
const TAGS: TableDefinition<&str, (&str, &str, u64)> = TableDefinition::new("tags");
/// "host/name" → (public, checked at).
const REPOS: TableDefinition<&str, (bool, u64)> = TableDefinition::new("repos");

/// A failure of the index database.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Another process (a running server, or `cache verify`) has the file
    /// open; redb allows one writer process at a time.
    #[error("index: the database is open in another process")]
    InUse,
    /// The file is not an index this build can read: not a redb file, a
    /// page that fails its checks, a table of another type, or a format too
    /// old. Being metadata only, such a file can be set aside and rebuilt.
    #[error("index: the database is damaged: {0}")]
    Damaged(String),
    /// Anything else (I/O errors, permissions): the file may be fine, so
    /// nothing is rebuilt.
    #[error("index: {0}")]
    Failed(String),
}

impl From<redb::StorageError> for IndexError {
    fn from(error: redb::StorageError) -> Self {
        match error {
            redb::StorageError::Corrupted(_) => IndexError::Damaged(error.to_string()),
            // redb reports a file that is not redb at all (bad magic
            // number) as invalid data, and a file cut short as a read past
            // its end; the OS reports neither for a file it can read.
            redb::StorageError::Io(ref io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                IndexError::Damaged(error.to_string())
            }
            other => IndexError::Failed(other.to_string()),
        }
    }
}

impl From<redb::DatabaseError> for IndexError {
    fn from(error: redb::DatabaseError) -> Self {
        match error {
            redb::DatabaseError::DatabaseAlreadyOpen
            | redb::DatabaseError::LockProtocolMismatch => IndexError::InUse,
            // Repair runs after a crash and is aborted when it cannot
            // complete; an old format cannot be read without an upgrade.
            // Either way the rows are out of reach, which is what damage
            // means for metadata that can be rebuilt.
            redb::DatabaseError::RepairAborted | redb::DatabaseError::UpgradeRequired(_) => {
                IndexError::Damaged(error.to_string())
            }
            redb::DatabaseError::Storage(storage) => storage.into(),
            other => IndexError::Failed(other.to_string()),
        }
    }
}

impl From<redb::TableError> for IndexError {
    fn from(error: redb::TableError) -> Self {
        match error {
            redb::TableError::Storage(storage) => storage.into(),
            // A table this build cannot read as its own: the rows are lost
            // to it just as if the pages were garbage.
            redb::TableError::TableTypeMismatch { .. }
            | redb::TableError::TableIsMultimap(_)
            | redb::TableError::TableIsNotMultimap(_)
            | redb::TableError::TypeDefinitionChanged { .. }
            | redb::TableError::TableDoesNotExist(_) => IndexError::Damaged(error.to_string()),
            other => IndexError::Failed(other.to_string()),
        }
    }
}

impl From<redb::TransactionError> for IndexError {
    fn from(error: redb::TransactionError) -> Self {
        match error {
            redb::TransactionError::Storage(storage) => storage.into(),
            other => IndexError::Failed(other.to_string()),
        }
    }
}

impl From<redb::CommitError> for IndexError {
    fn from(error: redb::CommitError) -> Self {
        match error {
            redb::CommitError::Storage(storage) => storage.into(),
            other => IndexError::Failed(other.to_string()),
        }
    }
}

impl From<redb::SetDurabilityError> for IndexError {
    fn from(error: redb::SetDurabilityError) -> Self {
        IndexError::Failed(error.to_string())
    }
}

/// What the index knows of one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    /// The digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// The media type upstream gave, if known.
    pub media_type: Option<String>,
    /// When it was fetched (Unix seconds).
    pub fetched_at: u64,
    /// When it was last served (Unix seconds).
    pub last_access: u64,
    /// How many times it was served from the cache.
    pub hits: u64,
}

/// What a tag pointed to when it was last seen upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRecord {
    /// The key: `host/name:tag`.
    pub key: String,
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// When upstream last confirmed it (Unix seconds).
    pub fetched_at: u64,
}

/// Whether a repository allows anonymous pulls, and when that was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRecord {
    /// The key: `host/name`.
    pub key: String,
    /// Anonymous pulls allowed.
    pub public: bool,
    /// When it was checked (Unix seconds).
    pub checked_at: u64,
}

/// Everything the index holds, read at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every blob row.
    pub blobs: Vec<BlobRecord>,
    /// Every tag row.
    pub tags: Vec<TagRecord>,
    /// Every repository row.
    pub repos: Vec<RepoRecord>,
}

/// The index database.
pub struct Index {
    db: Database,
}

impl Index {
    /// Opens or creates the index file.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let db = Database::create(path)?;
        // Create the tables so that reads never meet a missing one.
        let tx = db.begin_write()?;
        tx.open_table(BLOBS)?;
        tx.open_table(TAGS)?;
        tx.open_table(REPOS)?;
        tx.commit()?;
        Ok(Index { db })
    }

    /// Opens the index and reads every row, as start-up does. A file that
    /// makes redb panic counts as damaged rather than taking the process
    /// down: redb unwraps the UTF-8 of string keys and values it reads (in
    /// release builds too), and its debug builds assert on some malformed
    /// pages. The panic message still reaches stderr through the hook.
    pub fn open_and_read(path: &Path) -> Result<(Index, Snapshot), IndexError> {
        let path = path.to_owned();
        std::panic::catch_unwind(move || {
            let index = Index::open(&path)?;
            let snapshot = index.snapshot()?;
            Ok((index, snapshot))
        })
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(IndexError::Damaged(format!("reading it panicked: {why}")))
        })
    }

    /// Reads every row. Rows that no longer parse are skipped.
    pub fn snapshot(&self) -> Result<Snapshot, IndexError> {
        let tx = self.db.begin_read()?;
        let mut snapshot = Snapshot::default();
        for row in tx.open_table(BLOBS)?.iter()? {
            let (key, value) = row?;
            let (size, media_type, fetched_at, last_access, hits) = value.value();
            if let Ok(digest) = Digest::parse(key.value()) {
                snapshot.blobs.push(BlobRecord {
                    digest,
                    size,
                    media_type: (!media_type.is_empty()).then(|| media_type.to_owned()),
                    fetched_at,
                    last_access,
                    hits,
                });
            }
        }
        for row in tx.open_table(TAGS)?.iter()? {
            let (key, value) = row?;
            let (digest, media_type, fetched_at) = value.value();
            if let Ok(digest) = Digest::parse(digest) {
                snapshot.tags.push(TagRecord {
                    key: key.value().to_owned(),
                    digest,
                    media_type: media_type.to_owned(),
                    fetched_at,
                });
            }
        }
        for row in tx.open_table(REPOS)?.iter()? {
            let (key, value) = row?;
            let (public, checked_at) = value.value();
            snapshot.repos.push(RepoRecord {
                key: key.value().to_owned(),
                public,
                checked_at,
            });
        }
        Ok(snapshot)
    }

    /// Records a committed blob (durably: it is the record of a commit).
    pub fn put_blob(&self, record: &BlobRecord) -> Result<(), IndexError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(BLOBS)?;
            let key = record.digest.to_string();
            table.insert(
                key.as_str(),
                (
                    record.size,
                    record.media_type.as_deref().unwrap_or(""),
                    record.fetched_at,
                    record.last_access,
                    record.hits,
                ),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes blob rows.
    pub fn remove_blobs(&self, digests: &[Digest]) -> Result<(), IndexError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(BLOBS)?;
            for digest in digests {
                table.remove(digest.to_string().as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds access counts and last-access times. These are statistics, so
    /// they are written without forcing a sync; a crash may lose the last
    /// few, never a blob.
    pub fn record_access(&self, accesses: &[(Digest, u64, u64)]) -> Result<(), IndexError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)?;
        {
            let mut table = tx.open_table(BLOBS)?;
            for (digest, hits, last_access) in accesses {
                let key = digest.to_string();
                let current = table.get(key.as_str())?.map(|v| {
                    let (size, media_type, fetched_at, _, old_hits) = v.value();
                    (size, media_type.to_owned(), fetched_at, old_hits)
                });
                if let Some((size, media_type, fetched_at, old_hits)) = current {
                    table.insert(
                        key.as_str(),
                        (
                            size,
                            media_type.as_str(),
                            fetched_at,
                            *last_access,
                            old_hits + hits,
                        ),
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records what a tag points to.
    pub fn put_tag(&self, record: &TagRecord) -> Result<(), IndexError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(TAGS)?;
            let digest = record.digest.to_string();
            table.insert(
                record.key.as_str(),
                (
                    digest.as_str(),
                    record.media_type.as_str(),
                    record.fetched_at,
                ),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes tag rows.
    pub fn remove_tags(&self, keys: &[String]) -> Result<(), IndexError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(TAGS)?;
            for key in keys {
                table.remove(key.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records whether a repository is public.
    pub fn put_repo(&self, record: &RepoRecord) -> Result<(), IndexError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(REPOS)?;
            table.insert(record.key.as_str(), (record.public, record.checked_at))?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::digest_of;
    use crate::registry::digest::Algorithm;

    #[test]
    fn rows_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let digest = digest_of(Algorithm::Sha256, b"m");
        {
            let index = Index::open(&path).unwrap();
            index
                .put_blob(&BlobRecord {
                    digest: digest.clone(),
                    size: 1,
                    media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
                    fetched_at: 10,
                    last_access: 10,
                    hits: 0,
                })
                .unwrap();
            index
                .put_tag(&TagRecord {
                    key: "registry-1.docker.io/library/alpine:3".into(),
                    digest: digest.clone(),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    fetched_at: 11,
                })
                .unwrap();
            index
                .put_repo(&RepoRecord {
                    key: "registry-1.docker.io/library/alpine".into(),
                    public: true,
                    checked_at: 12,
                })
                .unwrap();
            index.record_access(&[(digest.clone(), 3, 20)]).unwrap();
        }
        let index = Index::open(&path).unwrap();
        let snapshot = index.snapshot().unwrap();
        assert_eq!(snapshot.blobs.len(), 1);
        assert_eq!(snapshot.blobs[0].hits, 3);
        assert_eq!(snapshot.blobs[0].last_access, 20);
        assert_eq!(snapshot.tags[0].digest, digest);
        assert!(snapshot.repos[0].public);

        index.remove_blobs(&[digest]).unwrap();
        index
            .remove_tags(&["registry-1.docker.io/library/alpine:3".into()])
            .unwrap();
        let snapshot = index.snapshot().unwrap();
        assert!(snapshot.blobs.is_empty() && snapshot.tags.is_empty());
    }

    /// A populated index file's bytes.
    fn populated(path: &Path) -> Vec<u8> {
        {
            let index = Index::open(path).unwrap();
            for i in 0..200u32 {
                let digest = digest_of(Algorithm::Sha256, &i.to_le_bytes());
                index
                    .put_blob(&BlobRecord {
                        digest: digest.clone(),
                        size: u64::from(i),
                        media_type: None,
                        fetched_at: 1,
                        last_access: 1,
                        hits: 0,
                    })
                    .unwrap();
                index
                    .put_tag(&TagRecord {
                        key: format!("r.example/app:{i}"),
                        digest,
                        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                        fetched_at: 1,
                    })
                    .unwrap();
            }
        }
        std::fs::read(path).unwrap()
    }

    #[test]
    fn damage_reads_as_damage_or_is_repaired_never_as_another_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let good = populated(&path);
        let mut damaged = 0;
        let mut cases: Vec<Vec<u8>> = Vec::new();
        // Cut short at several points, and bytes flipped through the file.
        for cut in [1, 100, 4096, good.len() / 2, good.len() - 1] {
            cases.push(good[..cut].to_vec());
        }
        for at in (0..good.len()).step_by(good.len() / 16) {
            let mut bytes = good.clone();
            for b in &mut bytes[at..(at + 64).min(good.len())] {
                *b ^= 0xA5;
            }
            cases.push(bytes);
        }
        for (n, bytes) in cases.iter().enumerate() {
            std::fs::write(&path, bytes).unwrap();
            match Index::open_and_read(&path) {
                // redb repairs some damage from its redundant header copies.
                Ok(_) => {}
                Err(IndexError::Damaged(_)) => damaged += 1,
                Err(other) => panic!("case {n}: damage read as {other:?}"),
            }
        }
        assert!(damaged > 0, "some of the damage must be noticed");
    }
}
