//! Page-aligned, recycled buffers for the bytes of blobs: those a download
//! carries from the network to the disk and to the readers following it,
//! and those a cache hit reads from the file for its client.
//!
//! A fill copies upstream bytes into a block, writes the block's aligned
//! part to the ingest file straight from it (direct I/O: no copy into the
//! page cache) and hands the same memory to its readers as [`Bytes`]; a hit
//! reads the file into a block and hands it to its client the same way.
//! When the last holder lets go, the block's memory goes back to its pool,
//! so the data path keeps reusing memory it has already touched instead of
//! allocating, zeroing and faulting in fresh pages for every chunk.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// The capacity of a download's block: large enough that a direct write
/// of a full block costs little more than its copy.
pub const BLOCK_SIZE: usize = 1024 * 1024;

/// The capacity of a hit's block: one read and a few TLS records' worth,
/// so a hundred clients reading at once hold little memory.
pub const READ_BLOCK_SIZE: usize = 256 * 1024;

/// What direct I/O needs of a buffer's address, a write's length and its
/// file offset: the page size covers the logical block size of every
/// common device.
pub const ALIGN: usize = 4096;

/// Idle block memory of one size, shared by every request.
#[derive(Debug)]
pub struct BlockPool {
    idle: Mutex<Vec<Vec<u8>>>,
    block_size: usize,
    /// Idle blocks kept for reuse; more are freed.
    keep: usize,
}

impl BlockPool {
    /// A pool of `block_size` blocks that keeps up to `keep` idle ones.
    pub fn new(block_size: usize, keep: usize) -> BlockPool {
        BlockPool {
            idle: Mutex::default(),
            block_size,
            keep,
        }
    }

    /// The pool downloads fill: 8 MiB idle at most, what a few large
    /// downloads in a row keep reusing.
    pub fn for_downloads() -> BlockPool {
        BlockPool::new(BLOCK_SIZE, 8)
    }

    /// The pool cache hits read into: 16 MiB idle at most.
    pub fn for_reads() -> BlockPool {
        BlockPool::new(READ_BLOCK_SIZE, 64)
    }

    /// A block to fill, reused when one is idle.
    pub fn take(self: &Arc<Self>) -> Block {
        let storage = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .unwrap_or_else(|| vec![0; self.block_size + ALIGN]);
        Block::new(storage, self.block_size, Some(self.clone()))
    }

    /// A block for a read of `want` bytes: a pooled one, or for less than a
    /// quarter of the pool's size a block of just that many whole pages,
    /// freed after use, so that small blobs (configs, small layers) do not
    /// each pin a whole pooled block. Downloads size their blocks in
    /// `fill` instead, one-off below a whole block; for reads that rule
    /// cost about 5% more CPU under the soak (a fresh allocation for every
    /// blob's last read) and did not lower its peak memory.
    pub fn take_for(self: &Arc<Self>, want: usize) -> Block {
        if want >= self.block_size / 4 {
            return self.take();
        }
        Block::one_off(want)
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
        if idle.len() < self.keep {
            idle.push(storage);
        }
    }
}

/// A buffer of up to its pool's block size starting at an [`ALIGN`]ed
/// address. Its memory returns to the pool when it is dropped, or when the
/// last [`Bytes`] made by [`Block::freeze`] is.
#[derive(Debug)]
pub struct Block {
    storage: Vec<u8>,
    start: usize,
    len: usize,
    capacity: usize,
    /// Where the memory goes back to; `None` for a small one-off block.
    pool: Option<Arc<BlockPool>>,
}

impl Block {
    /// A block of just enough whole pages for `want` bytes, freed after
    /// use; for nothing, a block with no memory.
    pub fn one_off(want: usize) -> Block {
        if want == 0 {
            return Block::new(Vec::new(), 0, None);
        }
        let capacity = want.div_ceil(ALIGN) * ALIGN;
        Block::new(vec![0; capacity + ALIGN], capacity, None)
    }

    fn new(storage: Vec<u8>, capacity: usize, pool: Option<Arc<BlockPool>>) -> Block {
        // Alignment is a speed matter only: a misaligned block is written
        // through the page cache instead.
        let start = match storage.as_ptr().align_offset(ALIGN) {
            offset if offset <= ALIGN && capacity > 0 => offset,
            _ => 0,
        };
        Block {
            storage,
            start,
            len: 0,
            capacity,
            pool,
        }
    }

    /// How much it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

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
        self.capacity - self.len
    }

    /// The room left, to read into; [`Block::grow`] then counts what was
    /// put there. (Its old contents are stale bytes, never uninitialised
    /// memory.)
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let from = self.start + self.len;
        &mut self.storage[from..self.start + self.capacity]
    }

    /// Counts `n` bytes written into [`Block::spare_mut`] as held.
    pub fn grow(&mut self, n: usize) {
        assert!(n <= self.room(), "a block cannot grow past its capacity");
        self.len += n;
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
        if let Some(pool) = &self.pool {
            pool.give_back(std::mem::take(&mut self.storage));
        }
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
        let pool = Arc::new(BlockPool::for_downloads());
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
        let pool = Arc::new(BlockPool::for_downloads());
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
        let pool = Arc::new(BlockPool::for_downloads());
        let blocks: Vec<Block> = (0..pool.keep + 3).map(|_| pool.take()).collect();
        drop(blocks);
        assert_eq!(pool.idle(), pool.keep);
    }

    #[test]
    fn small_blocks_fit_what_is_wanted_and_are_not_pooled() {
        let pool = Arc::new(BlockPool::for_downloads());
        let mut small = pool.take_for(5000);
        assert_eq!(small.capacity(), 2 * ALIGN, "whole pages");
        assert!(small.is_aligned());
        assert_eq!(small.fill(&[1u8; 9000]), 2 * ALIGN);
        drop(small.freeze());
        assert_eq!(pool.idle(), 0, "a one-off block is freed, not pooled");
        let mut empty = pool.take_for(0);
        assert_eq!(empty.capacity(), 0);
        assert_eq!(empty.fill(b"more"), 0, "holds nothing");
        assert!(empty.freeze().is_empty());
        let large = pool.take_for(BLOCK_SIZE / 4);
        assert_eq!(large.capacity(), BLOCK_SIZE);
        drop(large);
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn reads_land_in_the_spare_room() {
        let pool = Arc::new(BlockPool::for_reads());
        let mut block = pool.take();
        block.fill(b"ab");
        assert_eq!(block.spare_mut().len(), READ_BLOCK_SIZE - 2);
        block.spare_mut()[..3].copy_from_slice(b"cde");
        block.grow(3);
        assert_eq!(&block.freeze()[..], b"abcde");
    }

    #[test]
    fn aligned_down_rounds_to_whole_pages() {
        assert_eq!(aligned_down(0), 0);
        assert_eq!(aligned_down(ALIGN - 1), 0);
        assert_eq!(aligned_down(ALIGN), ALIGN);
        assert_eq!(aligned_down(3 * ALIGN + 17), 3 * ALIGN);
    }
}
