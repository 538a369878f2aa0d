//! The metadata index in `<data>/index.redb`: what each blob is (size,
//! media type, when fetched, last access, hits), which digest each tag
//! pointed to and when, and which repositories were confirmed public.
//!
//! The index is metadata only: the blobs themselves are files, and the
//! index can be rebuilt from `blobs/` (tags and visibility are then
//! relearned from upstream). All calls are blocking.

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
#[error("index: {0}")]
pub struct IndexError(String);

macro_rules! index_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for IndexError {
            fn from(error: $t) -> Self { IndexError(error.to_string()) }
        }
    )*};
}
index_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

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
}
