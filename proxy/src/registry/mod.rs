//! The registry API as far as caching needs it: which requests are blob or
//! manifest fetches, and the digests and references they name.

pub mod digest;
pub mod route;
