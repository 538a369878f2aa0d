//! The data directory: created on first start, stamped with a layout
//! version, and refused when the version is one this build does not know.
//!
//! ```text
//! <data>/LAYOUT        "1"
//! <data>/ca/ca.crt     the root certificate (ca.key beside it, mode 0600)
//! ```

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The on-disk layout this build reads and writes.
pub const LAYOUT_VERSION: &str = "1";

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory or its LAYOUT file could not be created or read.
    #[error("data_dir {path}: {source} (set data_dir, --data-dir or PULLCACHE_DATA_DIR to a writable folder)")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The LAYOUT file names a version this build does not know.
    #[error("data_dir {path}: layout version {found:?} is not supported (this build uses {LAYOUT_VERSION:?})")]
    UnknownLayout {
        /// The data directory.
        path: PathBuf,
        /// What LAYOUT said.
        found: String,
    },
}

/// Creates `dir` (mode 0700) if needed and checks or writes its LAYOUT file.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| DataDirError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))?;
    let layout = dir.join("LAYOUT");
    match std::fs::read_to_string(&layout) {
        Ok(found) if found.trim() == LAYOUT_VERSION => Ok(()),
        Ok(found) => Err(DataDirError::UnknownLayout {
            path: dir.to_owned(),
            found: found.trim().to_owned(),
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            std::fs::write(&layout, format!("{LAYOUT_VERSION}\n")).map_err(io_error(&layout))
        }
        Err(error) => Err(io_error(&layout)(error)),
    }
}

/// Where the CA lives inside the data directory.
pub fn ca_dir(dir: &Path) -> PathBuf {
    dir.join("ca")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_and_then_accepts_its_own_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        prepare(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("LAYOUT")).unwrap(), "1\n");
        prepare(&dir).unwrap();
    }

    #[test]
    fn refuses_an_unknown_layout() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("LAYOUT"), "7\n").unwrap();
        let error = prepare(tmp.path()).unwrap_err();
        assert!(
            error.to_string().contains("layout version \"7\""),
            "{error}"
        );
    }
}
