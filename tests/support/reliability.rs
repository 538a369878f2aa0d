//! The reliability table in the README is built from what the tests
//! actually did: each fault or hostile-input test, after asserting its
//! outcome, records how many times it tried and what happened. `tests/run.sh`
//! renders the records into a table and fails when the README's copy
//! differs, so the table cannot drift from the tests.
//!
//! Records go to the file named by `PULLCACHE_RELIABILITY_LOG`, one JSON
//! object per line; without the variable (a plain `cargo test`) nothing is
//! written.

use std::io::Write;

/// Records that `fault` was tried `tries` times, each time with `outcome`.
/// Call it only after the test has asserted that outcome.
pub(crate) fn record(fault: &str, tries: u32, outcome: &str) {
    let Some(path) = std::env::var_os("PULLCACHE_RELIABILITY_LOG") else {
        return;
    };
    let line = serde_json::json!({ "fault": fault, "tries": tries, "outcome": outcome });
    // One short O_APPEND write per record keeps lines from parallel tests whole.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open the reliability log");
    file.write_all(format!("{line}\n").as_bytes())
        .expect("write the reliability log");
}
