//! Whole config files through `Config::from_toml_str`, which must never
//! panic. The checks live in `fuzz/src/lib.rs`; see docs/fuzzing.md.
//!
//! Validation touches files the config names: it opens each
//! `upstream.ca_files` entry and reads `access.users_file` whole. A regular
//! file or a missing path is harmless, but opening a FIFO blocks (a hang
//! libFuzzer reports as a timeout), reading `/dev/zero` never ends (an
//! out-of-memory "crash"), and opening some devices has side effects. So an
//! input in which any string value names an existing path that is not a
//! small regular file or a directory, or lies under /dev, /proc or /sys, is
//! skipped here before the real parse. The screen looks at every string in
//! the document, not at known keys, so it keeps working as keys are added.
#![no_main]

use std::path::Path;

use libfuzzer_sys::{fuzz_target, Corpus};

/// Larger regular files are skipped too: reading one whole is only slow.
const MAX_FILE_LEN: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| -> Corpus {
    if names_special_file(data) {
        return Corpus::Reject;
    }
    if pullcache_fuzz::config_toml(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});

fn names_special_file(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    // Without a '/' (written or escaped) every path is a single name in the
    // current directory (fuzz/), which holds nothing special: skip the
    // second parse for most inputs.
    if !text.contains('/') && !text.contains("\\u") && !text.contains("\\U") {
        return false;
    }
    let Ok(doc) = toml::from_str::<toml::Table>(text) else {
        return false;
    };
    doc.values().any(names_special)
}

fn names_special(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(s) => !harmless_to_read(Path::new(s)),
        toml::Value::Array(items) => items.iter().any(names_special),
        toml::Value::Table(table) => table.values().any(names_special),
        _ => false,
    }
}

fn harmless_to_read(path: &Path) -> bool {
    if path.as_os_str().is_empty() {
        return true;
    }
    let Ok(meta) = std::fs::metadata(path) else {
        // Missing or unreadable: opening it fails the same way, doing nothing.
        return true;
    };
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    let pseudo = ["/dev", "/proc", "/sys"]
        .iter()
        .any(|dir| real.starts_with(dir));
    let plain = meta.is_dir() || (meta.is_file() && meta.len() <= MAX_FILE_LEN);
    plain && !pseudo
}
