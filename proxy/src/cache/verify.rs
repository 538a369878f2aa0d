//! `pullcache cache verify`: re-hashes every committed blob against the
//! digest it is filed under and removes the ones that no longer match.
//!
//! Commits are verified before they land in `blobs/`, so a mismatch found
//! here means the file changed afterwards (disk errors, a hand edit, a
//! restore from a bad backup). Removing it is always safe: the cache is a
//! copy, and the next pull fetches the blob again. The file goes first and
//! the index row after, so an interrupted run leaves a row that start-up
//! drops, never a bad file that start-up would adopt.
//!
//! This runs offline. It opens the cache the way the server does (the same
//! crash recovery, the same index lock), so it refuses to run while a server
//! holds the index rather than racing its writes. Everything here blocks.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::store::Hasher;
use super::{Cache, CacheError, Recovery};
use crate::data_dir::LAYOUT_VERSION;
use crate::registry::digest::Digest;

/// Blobs are read in chunks this large: big enough that the syscall count
/// does not matter next to hashing, small enough to stay out of the way.
const READ_CHUNK: usize = 1024 * 1024;

/// Why verification could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The data directory does not exist or cannot be read.
    #[error("data_dir {}: {source}", .path.display())]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The folder exists but is not a pullcache data directory this build
    /// can read.
    #[error("data_dir {}: {why}", .path.display())]
    NotADataDir {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A server (or another verify) holds the index.
    #[error("{0}")]
    InUse(CacheError),
    /// The cache could not be opened.
    #[error("{0}")]
    Cache(CacheError),
}

/// What was wrong with one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The bytes hash to another digest.
    Mismatch {
        /// What the bytes hash to.
        actual: Digest,
        /// How many bytes were read.
        size: u64,
    },
    /// The file's size is not the size recorded when it was committed
    /// (found while opening the cache, before any hashing).
    WrongSize {
        /// The size recorded at commit.
        recorded: u64,
        /// The size of the file.
        found: u64,
    },
    /// The file could not be read to the end.
    Unreadable(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Mismatch { actual, size } => {
                write!(f, "content hashes to {actual} ({size} bytes)")
            }
            Problem::WrongSize { recorded, found } => write!(
                f,
                "{found} bytes on disk, {recorded} recorded when it was committed"
            ),
            Problem::Unreadable(why) => write!(f, "cannot be read: {why}"),
        }
    }
}

/// One corrupt blob and whether it is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    /// The digest the file is filed under (what its content should hash to).
    pub digest: Digest,
    /// What is wrong.
    pub problem: Problem,
    /// `None` once the file and its index row are gone; otherwise why the
    /// removal failed.
    pub removal_error: Option<String>,
}

/// What a verification found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blob files examined.
    pub checked: usize,
    /// Their total size on disk.
    pub bytes: u64,
    /// The corrupt ones, in digest order.
    pub corrupt: Vec<Corrupt>,
    /// Tags that pointed at a removed manifest, dropped.
    pub tags_dropped: usize,
    /// What opening the cache recovered first (crash leftovers, a rebuilt
    /// index), as at a server's start.
    pub recovery: Recovery,
}

impl VerifyReport {
    /// How many corrupt blobs were removed.
    pub fn removed(&self) -> usize {
        self.corrupt
            .iter()
            .filter(|c| c.removal_error.is_none())
            .count()
    }

    /// `checked N blobs (X bytes), corrupt K, removed K`.
    pub fn summary(&self) -> String {
        format!(
            "checked {} blobs ({} bytes), corrupt {}, removed {}",
            self.checked,
            self.bytes,
            self.corrupt.len(),
            self.removed()
        )
    }
}

/// Verifies every blob in `data_dir`'s cache and removes the corrupt ones.
///
/// Fails only when the cache cannot be examined: `data_dir` is missing or
/// not a pullcache data directory, another process holds the index, or the
/// store cannot be read. Corrupt blobs are not an error; they are reported.
pub fn verify(data_dir: &Path) -> Result<VerifyReport, VerifyError> {
    check_data_dir(data_dir)?;
    let (cache, recovery) = Cache::open(data_dir).map_err(|error| match error {
        CacheError::InUse { .. } => VerifyError::InUse(error),
        other => VerifyError::Cache(other),
    })?;
    let mut report = VerifyReport::default();

    // Blobs removed while opening (their size gave them away) count as
    // checked and corrupt: they were in the store when verify started.
    for wrong in &recovery.wrong_size_removed {
        report.checked += 1;
        report.bytes += wrong.found;
        report.corrupt.push(Corrupt {
            digest: wrong.digest.clone(),
            problem: Problem::WrongSize {
                recorded: wrong.recorded,
                found: wrong.found,
            },
            removal_error: None,
        });
    }

    let mut digests: Vec<(Digest, u64)> = cache
        .blobs
        .iter()
        .map(|entry| (entry.key().clone(), entry.value().size))
        .collect();
    digests.sort();
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut bad = Vec::new();
    for (digest, size) in digests {
        report.checked += 1;
        report.bytes += size;
        let path = cache.store().blob_path(&digest);
        match hash_file(&path, &digest, &mut buffer) {
            Ok((actual, _)) if actual == digest => {}
            Ok((actual, read)) => bad.push((digest, Problem::Mismatch { actual, size: read })),
            Err(error) => bad.push((digest, Problem::Unreadable(error.to_string()))),
        }
    }

    let removed = remove(&cache, bad, &mut report);
    report.tags_dropped = drop_tags(&cache, &removed);
    report.corrupt.sort_by(|a, b| a.digest.cmp(&b.digest));
    report.recovery = recovery;
    Ok(report)
}

/// Refuses a folder that is missing, unreadable or not a data directory,
/// before anything creates files in it (opening the cache would).
fn check_data_dir(data_dir: &Path) -> Result<(), VerifyError> {
    let io_error = |source| VerifyError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    let meta = std::fs::metadata(data_dir).map_err(io_error)?;
    if !meta.is_dir() {
        return Err(VerifyError::NotADataDir {
            path: data_dir.to_owned(),
            why: "not a directory".to_owned(),
        });
    }
    std::fs::read_dir(data_dir).map_err(io_error)?;
    match std::fs::read_to_string(data_dir.join("LAYOUT")) {
        Ok(found) if found.trim() == LAYOUT_VERSION => Ok(()),
        Ok(found) => Err(VerifyError::NotADataDir {
            path: data_dir.to_owned(),
            why: format!(
                "layout version {:?} is not supported (this build uses {LAYOUT_VERSION:?})",
                found.trim()
            ),
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Err(VerifyError::NotADataDir {
            path: data_dir.to_owned(),
            why: "no LAYOUT file; not a pullcache data directory".to_owned(),
        }),
        Err(source) => Err(io_error(source)),
    }
}

/// Hashes a file with `digest`'s algorithm; returns the digest and the
/// number of bytes read.
fn hash_file(path: &Path, digest: &Digest, buffer: &mut [u8]) -> io::Result<(Digest, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Hasher::new(digest.algorithm());
    let mut read = 0u64;
    loop {
        match file.read(buffer) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buffer[..n]);
                read += n as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok((hasher.finish(), read))
}

/// Removes each corrupt blob's file, then its index row; records the
/// outcome in `report`. Returns the digests that are gone.
fn remove(
    cache: &Cache,
    bad: Vec<(Digest, Problem)>,
    report: &mut VerifyReport,
) -> HashSet<Digest> {
    let mut gone: HashSet<Digest> = report.corrupt.iter().map(|c| c.digest.clone()).collect();
    for (digest, problem) in bad {
        warn!(oci.digest = %digest, %problem, "removing a corrupt cached blob");
        let removal_error = match cache.store().remove_blob(&digest) {
            Ok(()) => match cache.index.remove_blobs(std::slice::from_ref(&digest)) {
                Ok(()) => {
                    cache.blobs.remove(&digest);
                    gone.insert(digest.clone());
                    None
                }
                // The file is gone; the row is dropped at the next start.
                Err(error) => {
                    gone.insert(digest.clone());
                    warn!(oci.digest = %digest, %error, "could not drop the index row; the next start drops it");
                    None
                }
            },
            Err(error) => Some(error.to_string()),
        };
        report.corrupt.push(Corrupt {
            digest,
            problem,
            removal_error,
        });
    }
    gone
}

/// Drops the tags that pointed at a removed manifest, so that a pull by
/// tag asks upstream again instead of finding a dangling digest.
fn drop_tags(cache: &Cache, gone: &HashSet<Digest>) -> usize {
    if gone.is_empty() {
        return 0;
    }
    let dead: Vec<String> = cache
        .tags
        .iter()
        .filter(|entry| gone.contains(&entry.value().digest))
        .map(|entry| entry.key().clone())
        .collect();
    if dead.is_empty() {
        return 0;
    }
    for key in &dead {
        cache.tags.remove(key);
    }
    if let Err(error) = cache.index.remove_tags(&dead) {
        // The manifest is gone, so the next start drops these tags anyway.
        warn!(%error, "could not drop the tags of removed manifests; the next start drops them");
    }
    dead.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::digest_of;
    use crate::registry::digest::Algorithm;
    use std::os::unix::fs::PermissionsExt;

    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn data_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        crate::data_dir::prepare(dir.path()).unwrap();
        dir
    }

    /// Commits `bytes` and records them, as a fill does.
    async fn add(cache: &Cache, bytes: &[u8], media_type: Option<&str>) -> Digest {
        let digest = digest_of(Algorithm::Sha256, bytes);
        let mut ingest = cache.store().create_ingest(Algorithm::Sha256).unwrap();
        ingest.write(bytes).unwrap();
        ingest.commit(cache.store(), &digest, None).unwrap();
        cache
            .record_blob(&digest, bytes.len() as u64, media_type)
            .await;
        digest
    }

    /// Flips one byte of a committed (read-only) blob file in place.
    fn flip_a_byte(path: &Path, at: usize) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut bytes = std::fs::read(path).unwrap();
        bytes[at] ^= 0x01;
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
    }

    #[tokio::test]
    async fn finds_and_removes_exactly_the_flipped_blob() {
        let dir = data_dir();
        let big: Vec<u8> = (0..3 * READ_CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let (good, bad, manifest) = {
            let (cache, _) = Cache::open(dir.path()).unwrap();
            let good = add(&cache, b"a good layer", None).await;
            let bad = add(&cache, &big, None).await;
            let manifest = add(&cache, b"{\"schemaVersion\":2}", Some(MANIFEST)).await;
            cache.put_tag("r.example/app:1", &manifest, MANIFEST).await;
            (good, bad, manifest)
        };
        let bad_path = dir
            .path()
            .join("blobs/sha256")
            .join(&bad.hex()[..2])
            .join(bad.hex());
        // Past the first chunk, so the whole file must be read to notice.
        flip_a_byte(&bad_path, 2 * READ_CHUNK + 5);

        let report = verify(dir.path()).unwrap();
        assert_eq!(report.checked, 3);
        assert_eq!(report.bytes, (12 + big.len() + 19) as u64);
        assert_eq!(report.corrupt.len(), 1, "{report:#?}");
        assert_eq!(report.corrupt[0].digest, bad);
        assert!(
            matches!(&report.corrupt[0].problem, Problem::Mismatch { size, .. } if *size == big.len() as u64),
            "{report:#?}"
        );
        assert_eq!(report.removed(), 1);
        assert_eq!(report.tags_dropped, 0, "the tag points at a good manifest");
        assert_eq!(
            report.summary(),
            format!(
                "checked 3 blobs ({} bytes), corrupt 1, removed 1",
                12 + big.len() + 19
            )
        );
        assert!(!bad_path.exists());

        // The index agrees: the next open drops nothing and adopts nothing.
        let (cache, recovery) = Cache::open(dir.path()).unwrap();
        assert_eq!(recovery, Recovery::default());
        assert!(cache.blob(&bad).is_none());
        assert!(cache.blob(&good).is_some());
        assert_eq!(cache.tag("r.example/app:1").unwrap().digest, manifest);
        drop(cache);

        let again = verify(dir.path()).unwrap();
        assert_eq!((again.checked, again.corrupt.len()), (2, 0));
    }

    #[tokio::test]
    async fn a_corrupt_manifest_takes_its_tags_with_it() {
        let dir = data_dir();
        let manifest = {
            let (cache, _) = Cache::open(dir.path()).unwrap();
            let manifest = add(&cache, b"{\"schemaVersion\":2}", Some(MANIFEST)).await;
            cache.put_tag("r.example/app:1", &manifest, MANIFEST).await;
            cache
                .put_tag("r.example/app:latest", &manifest, MANIFEST)
                .await;
            manifest
        };
        let path = dir
            .path()
            .join("blobs/sha256")
            .join(&manifest.hex()[..2])
            .join(manifest.hex());
        flip_a_byte(&path, 0);

        let report = verify(dir.path()).unwrap();
        assert_eq!((report.corrupt.len(), report.tags_dropped), (1, 2));
        let (cache, recovery) = Cache::open(dir.path()).unwrap();
        assert_eq!(recovery.tags_dropped, 0, "verify already dropped them");
        assert!(cache.tag("r.example/app:1").is_none());
        assert!(cache.tag("r.example/app:latest").is_none());
    }

    #[tokio::test]
    async fn a_truncated_blob_is_caught_by_its_size() {
        let dir = data_dir();
        let digest = {
            let (cache, _) = Cache::open(dir.path()).unwrap();
            add(&cache, b"twenty bytes of data", None).await
        };
        let path = dir
            .path()
            .join("blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&path, b"twenty").unwrap();

        let report = verify(dir.path()).unwrap();
        assert_eq!(report.checked, 1);
        assert_eq!(
            report.corrupt,
            vec![Corrupt {
                digest,
                problem: Problem::WrongSize {
                    recorded: 20,
                    found: 6
                },
                removal_error: None,
            }]
        );
        assert!(!path.exists());
    }

    #[test]
    fn a_missing_data_dir_is_an_error_and_is_not_created() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let error = verify(&missing).unwrap_err();
        assert!(matches!(error, VerifyError::DataDir { .. }), "{error}");
        assert!(!missing.exists());
    }

    #[test]
    fn a_folder_without_layout_is_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let error = verify(tmp.path()).unwrap_err();
        assert!(error.to_string().contains("no LAYOUT file"), "{error}");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_while_the_index_is_held() {
        let dir = data_dir();
        let (_server, _) = Cache::open(dir.path()).unwrap();
        let error = verify(dir.path()).unwrap_err();
        assert!(matches!(error, VerifyError::InUse(_)), "{error}");
        assert!(
            error.to_string().contains("in use by another process"),
            "{error}"
        );
    }
}
