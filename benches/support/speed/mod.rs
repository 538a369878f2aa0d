//! The speed benchmark's own parts (`benches/speed.rs`), next to the load
//! benchmark's shared ones in `benches/support/` (the pullcache process
//! runner, the seeded blob generator, curl's program lookup): the run-time
//! certificates, the in-memory origin registry, the minimal rustls file
//! server (the ceiling), Debian's nginx (two baselines), the curl client,
//! the in-process client pool, `/proc` readings and the statistics.

pub(crate) mod certs;
pub(crate) mod curl;
pub(crate) mod files;
pub(crate) mod nginx;
pub(crate) mod origin;
pub(crate) mod pool;
pub(crate) mod procfs;
pub(crate) mod stats;
