//! CONNECT authorities (`host:port`, `[v6]:port`) through `ConnectTarget::parse`.
//! The checks live in `fuzz/src/lib.rs`; see docs/fuzzing.md.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if pullcache_fuzz::connect_authority(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
