//! Page-aligned, recycled buffers that carry a download from the network to
//! the disk and to the readers following it.
//!
//! A fill copies upstream bytes into a block, writes the block's aligned
//! part to the ingest file straight from it (direct I/O: no copy into the
//! page cache) and hands the same memory to its readers as [`Bytes`]. When
//! the last reader lets go, the block's memory goes back to the pool, so a
//! miss keeps reusing memory it has already touched instead of faulting in
//! fresh pages for every megabyte.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// The capacity of one block: large enough that a direct write of a full
/// block costs little more than its copy, small enough that a reader sees
/// bytes soon after they arrive.
pub const BLOCK_SIZE: usize = 1024 * 1024;

/// What direct I/O needs of a buffer's address, a write's length and its
/// file offset: the page size covers the logical block size of every
/// common device.
pub const ALIGN: usize = 4096;

/// Idle blocks kept for reuse; more are freed.
const POOL_KEEP: usize = 16;

/// Idle block memory, shared by every fill.
#[derive(Debug, Default)]
pub struct BlockPool {
    idle: Mutex<Vec<Vec<u8>>>,
}

impl BlockPool {
    /// A block to fill, reused when one is idle.
    pub fn take(self: &Arc<Self>) -> Block {
        let storage = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .unwrap_or_else(|| vec![0; BLOCK_SIZE + ALIGN]);
        // Alignment is a speed matter only: a misaligned block is written
        // through the page cache instead.
        let start = match storage.as_ptr().align_offset(ALIGN) {
            offset if offset <= ALIGN => offset,
            _ => 0,
        };
        Block {
            storage,
            start,
            len: 0,
            pool: self.clone(),
        }
    }

    /// Idle blocks held now.
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    fn give_back(&self, storage: Vec<u8>) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < POOL_KEEP {
            idle.push(storage);
        }
    }
}

/// A buffer of up to [`BLOCK_SIZE`] bytes starting at an [`ALIGN`]ed
/// address. Its memory returns to the pool when it is dropped, or when the
/// last [`Bytes`] made by [`Block::freeze`] is.
#[derive(Debug)]
pub struct Block {
    storage: Vec<u8>,
    start: usize,
    len: usize,
    pool: Arc<BlockPool>,
}

impl Block {
    /// Appends as much of `bytes` as fits; returns how much did.
    pub fn fill(&mut self, bytes: &[u8]) -> usize {
        let taken = bytes.len().min(self.room());
        let at = self.start + self.len;
        self.storage[at..at + taken].copy_from_slice(&bytes[..taken]);
        self.len += taken;
        taken
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left.
    pub fn room(&self) -> usize {
        BLOCK_SIZE - self.len
    }

    /// Whether the block's address suits direct I/O.
    pub fn is_aligned(&self) -> bool {
        self.filled().as_ptr().align_offset(ALIGN) == 0
    }

    /// The bytes held.
    pub fn filled(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// Shares the bytes held without copying them.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Block {
    fn as_ref(&self) -> &[u8] {
        self.filled()
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.storage));
    }
}

/// The largest multiple of [`ALIGN`] not above `len`.
pub fn aligned_down(len: usize) -> usize {
    len - len % ALIGN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_fill_up_and_stop_at_their_capacity() {
        let pool = Arc::new(BlockPool::default());
        let mut block = pool.take();
        assert!(block.is_aligned());
        assert_eq!(block.fill(b"abc"), 3);
        assert_eq!(block.filled(), b"abc");
        let big = vec![7u8; BLOCK_SIZE];
        assert_eq!(block.fill(&big), BLOCK_SIZE - 3);
        assert_eq!(block.room(), 0);
        assert_eq!(block.fill(b"more"), 0);
        assert_eq!(block.len(), BLOCK_SIZE);
    }

    #[test]
    fn memory_returns_to_the_pool_when_the_last_reader_lets_go() {
        let pool = Arc::new(BlockPool::default());
        let mut block = pool.take();
        block.fill(b"shared bytes");
        let bytes = block.freeze();
        let reader = bytes.slice(7..);
        drop(bytes);
        assert_eq!(pool.idle(), 0, "a reader still holds the block");
        assert_eq!(&reader[..], b"bytes");
        drop(reader);
        assert_eq!(pool.idle(), 1);
        let reused = pool.take();
        assert!(reused.is_empty(), "a reused block starts empty");
        assert!(reused.is_aligned());
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_idle_blocks() {
        let pool = Arc::new(BlockPool::default());
        let blocks: Vec<Block> = (0..POOL_KEEP + 3).map(|_| pool.take()).collect();
        drop(blocks);
        assert_eq!(pool.idle(), POOL_KEEP);
    }

    #[test]
    fn aligned_down_rounds_to_whole_pages() {
        assert_eq!(aligned_down(0), 0);
        assert_eq!(aligned_down(ALIGN - 1), 0);
        assert_eq!(aligned_down(ALIGN), ALIGN);
        assert_eq!(aligned_down(3 * ALIGN + 17), 3 * ALIGN);
    }
}
