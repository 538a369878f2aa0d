//! `WWW-Authenticate` challenge values.
//! The checks live in `fuzz/src/lib.rs`; see docs/fuzzing.md.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if pullcache_fuzz::www_authenticate(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
