//! The registry API as far as caching needs it: which requests are blob or
//! manifest fetches, the digests and references they name, media types,
//! auth challenges, and how cacheable requests are answered.

pub mod challenge;
pub mod digest;
pub mod media;
pub mod route;
