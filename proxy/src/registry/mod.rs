//! The registry API as far as caching needs it: which requests are blob or
//! manifest fetches, the digests and references they name, media types,
//! ranges, auth challenges, who may be served from the cache, and how
//! cacheable requests are answered.

pub mod access;
pub mod challenge;
pub mod digest;
pub mod errors;
pub mod fetch;
pub mod media;
pub mod range;
pub mod route;
pub mod serve;
