//! Admitting a lazily loaded inode into the cache. `inode::load` validates what one log can
//! prove by itself (checksums, sequence, chain, extents inside the allocatable area); on the
//! clean-mount fast path nothing else has looked at the image, so before a loaded state is
//! served the engine checks it against what it knows globally, cheaply:
//!
//! - every block the inode holds (data, log pages, write-cache blocks and log pages) lies
//!   outside the inode-table chunks, is not free in the allocator, and is held once;
//! - every subdirectory a directory names is not already named by another loaded directory,
//!   nor twice by this one ([`DirNames`]): a directory hard link or a cycle is `Corrupt` as soon
//!   as both names have been loaded.
//!
//! What stays unseen until a rebuild or fsck (DESIGN.md §5.8): a block held by two inodes when
//! the other is not loaded yet (or is not free), and a directory's second name in a directory
//! not loaded yet.
#![forbid(unsafe_code)]

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::inode::{extent_runs, InodeState};
use crate::layout::CHUNK_BLOCKS;

impl Engine {
    /// Check the blocks of a freshly loaded state of inode `ino` against the engine's global
    /// knowledge before it enters the cache (the allocator's free map is final: the rebuild
    /// after an unclean stop inserts what it loads itself and checks block ownership
    /// globally). Called without the cache shard lock (the allocator's locks are loom's in
    /// the model checks); a failure may come from a concurrent change, which the caller rules
    /// out before reporting it.
    pub(crate) fn admit_blocks(&self, ino: u64, st: &InodeState) -> Result<()> {
        let mut chunks = self.chunks.read().clone();
        chunks.sort_unstable();
        let bad = |what: &str, start: u64| {
            Error::corrupt(
                format!("{what} (an extent or log page naming metadata or a free block)"),
                format!("inode {ino} block {start}"),
            )
        };
        let mut runs: Vec<(u64, u64)> = extent_runs(st.map.iter())
            .map(|(_, b, n)| (b, u64::from(n)))
            .chain(st.cache().map.iter().map(|(_, b)| (b, 1)))
            .collect();
        // A log page of a loaded inode is no one else's block: not this inode's data or cache
        // block, nor a log page of its own (that would be the same page in two logs).
        for &(start, len) in &runs {
            if self.blocks.any_log(start, len) {
                return Err(bad("block that is a loaded inode's log page", start));
            }
        }
        for &p in st.log.pages.iter().chain(&st.cache().log.pages) {
            if self.blocks.any_log(p, 1) {
                return Err(bad("log page of another loaded inode", p));
            }
            runs.push((p, 1));
        }
        runs.sort_unstable();
        for (i, &(start, len)) in runs.iter().enumerate() {
            // `inode::load` checked that every run lies inside the allocatable area.
            let end = start.saturating_add(len);
            let next_chunk = chunks.partition_point(|&c| c + CHUNK_BLOCKS <= start);
            if chunks.get(next_chunk).is_some_and(|&c| c < end) {
                return Err(bad("block inside the inode table", start));
            }
            if self.blocks.any_free(start, len) {
                return Err(bad("block the allocator holds free", start));
            }
            if runs.get(i + 1).is_some_and(|&(next, _)| next < end) {
                return Err(bad("block held twice", start));
            }
        }
        Ok(())
    }
}
