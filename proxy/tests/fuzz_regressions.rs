//! Replays every committed fuzz input — `fuzz/seeds/<target>/*` and
//! `fuzz/regressions/<target>/*` — through the same checks the fuzz targets
//! run (`fuzz/src/lib.rs`), on the stable toolchain, in a plain
//! `cargo test`. A crash the fuzzer found stays fixed once its input is
//! saved under `fuzz/regressions/<target>/`. See docs/fuzzing.md.
//!
//! It lives in `proxy/tests/` because the `pullcache` crate already depends
//! on both crates the checks use.

use std::path::{Path, PathBuf};

#[allow(unreachable_pub)]
#[path = "../../fuzz/src/lib.rs"]
mod checks;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The input files for one target, sorted; a missing directory has none.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("read a fuzz input directory").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Runs every input of `kind` through its target's checks and returns how
/// many ran; fails naming every input whose checks panicked.
fn replay(kind: &str) -> usize {
    let mut ran = 0;
    let mut failures = Vec::new();
    for (target, check) in checks::TARGETS {
        for path in inputs(kind, target) {
            let data = std::fs::read(&path).expect("read a fuzz input");
            // The panic message and location are printed by the panic hook.
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failures.push(format!("{target}: {}", path.display()));
            }
            ran += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} input(s) fail the fuzz checks:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    ran
}

#[test]
fn seeds_pass_the_fuzz_checks() {
    let ran = replay("seeds");
    assert!(ran > 0, "no seeds found under {}", fuzz_dir().display());
}

#[test]
fn saved_fuzz_findings_stay_fixed() {
    replay("regressions");
}
