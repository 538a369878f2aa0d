//! Crash-safe, race-safe file writes for the CA's two files.
//!
//! Each file is written to a temporary name in the target directory, synced,
//! and only then given its real name, so a crash never leaves a truncated
//! `ca.key` behind. Without `overwrite` the final name is taken with a hard
//! link, which fails if the name already exists: two pullcache processes
//! initialising the same directory at once cannot end up with one's
//! certificate next to the other's key.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::error::CaError;
use crate::random;

/// Whether `path` exists (as anything, including a dangling symlink).
pub(crate) fn exists(path: &Path) -> Result<bool, CaError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CaError::io("inspect", path, e)),
    }
}

/// Creates `dir` (and missing parents) readable only by the owner; an
/// existing directory is left as it is.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), CaError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| CaError::io("create directory", dir, e))
}

/// Makes completed renames and links in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), CaError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CaError::io("sync directory", dir, e))
}

/// Writes `contents` to `dir/name` with permission bits `mode`, atomically.
pub(crate) fn write_file(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> Result<(), CaError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        random::hex(6)?
    ));
    let result = write_tmp(&tmp, contents, mode).and_then(|()| place(&tmp, &path, overwrite));
    // After a successful link the temporary name is redundant; after a
    // failure it is litter (possibly holding a private key).
    if let Err(e) = fs::remove_file(&tmp) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %tmp.display(), error = %e, "could not remove temporary file");
        }
    }
    result
}

fn write_tmp(tmp: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    // The mode is applied at creation, so a key file is never readable by
    // others, not even between open and chmod.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let mut file = options
        .open(tmp)
        .map_err(|e| CaError::io("create", tmp, e))?;
    file.write_all(contents)
        .map_err(|e| CaError::io("write", tmp, e))?;
    // The umask may have narrowed the requested bits (e.g. the certificate's
    // 0644 under umask 077); set them exactly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| CaError::io("set permissions of", tmp, e))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.sync_all().map_err(|e| CaError::io("sync", tmp, e))
}

fn place(tmp: &Path, path: &Path, overwrite: bool) -> Result<(), CaError> {
    if overwrite {
        return fs::rename(tmp, path).map_err(|e| CaError::io("rename into", path, e));
    }
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CaError::AlreadyExists {
            path: path.to_owned(),
        }),
        // Some file systems have no hard links; settle for check-then-rename.
        Err(_) => {
            if exists(path)? {
                return Err(CaError::AlreadyExists {
                    path: path.to_owned(),
                });
            }
            fs::rename(tmp, path).map_err(|e| CaError::io("rename into", path, e))
        }
    }
}
