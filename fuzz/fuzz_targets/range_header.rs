//! `Range` header values against a blob size (input: the size in decimal, a
//! newline, the header value).
//! The checks live in `fuzz/src/lib.rs`; see docs/fuzzing.md.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if pullcache_fuzz::range_header(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
