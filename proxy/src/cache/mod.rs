//! The on-disk cache: verified blobs, the metadata index, and the
//! in-memory view of both that the request path reads.

pub mod index;
pub mod store;
