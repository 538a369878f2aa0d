//! Test and benchmark suite for pullcache; the code lives in the member crates.
