//! The speed benchmark's own parts (`benches/speed.rs`), next to the shared
//! ones in `benches/support/` (the origin registry, the certificates, the
//! pullcache process runner, the blob generator, curl's program lookup):
//! the minimal rustls file server (the ceiling), the bare relay (the
//! tunnel's ceiling), Debian's nginx (two baselines), the curl client, the
//! in-process client pool, `/proc` readings, the machine's own hashing and
//! copying floor and the statistics.

pub(crate) mod curl;
pub(crate) mod files;
pub(crate) mod floor;
pub(crate) mod nginx;
pub(crate) mod pool;
pub(crate) mod procfs;
pub(crate) mod relay;
pub(crate) mod stats;
