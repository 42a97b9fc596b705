//! Online growth: more blocks for a mounted image, in one atomic commit (DESIGN.md §5.9).
//!
//! The protocol, each step durable before the next starts:
//! 1. the image file is extended to the new size (allocated, `fsync`ed: its size is durable)
//!    and mapped in place ([`Media::grow`](crate::media::Media::grow));
//! 2. the new replica superblock is written to the new last block; fence;
//! 3. the new primary superblock is written to block 0; fence. This is the commit point.
//!
//! Then the DRAM superblock is replaced and the new blocks (the old replica's block up to the
//! new replica's) go to the block allocator. A crash before step 3 leaves the old, valid
//! primary (the file is longer than it says: the tail is ignored, and growing again reuses
//! it); a crash during step 3 leaves a primary whose checksum fails, and mount reads the
//! replica from the file's last block, which step 2 made the new one. Nothing else changes:
//! the inode-table map keeps its place and size (`Superblock::grown`), no inode or log refers
//! to a new block before the commit, and recovery rebuilds the allocators from the
//! superblock it finds.
#![forbid(unsafe_code)]

use crate::bugs::{self, Bug};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::layout::BLOCK;
use crate::txn::Txn;

impl Engine {
    /// Grow the image to `new_len` bytes (a multiple of 4096) while mounted: the new space is
    /// free for data and inode-table chunks when this returns, and the new size is durable
    /// (atomic: after a crash the image has its old size or its new one, nothing between).
    /// Growing to the current size does nothing; shrinking is refused with `InvalidArgument`,
    /// as is a device image (devdax) or a size beyond the address space this mount reserved
    /// (`MountOptions::grow_limit`; unmount and grow offline to go further). Returns the
    /// blocks added.
    pub fn grow(&self, new_len: u64) -> Result<u64> {
        let _op = self.writable()?;
        let _one = self.grow_lock.lock();
        if !new_len.is_multiple_of(BLOCK) {
            return Err(Error::InvalidArgument(format!(
                "new image size {new_len} is not a multiple of {BLOCK}"
            )));
        }
        let sb = self.superblock();
        let new_blocks = new_len / BLOCK;
        if new_blocks < sb.blocks_total {
            return Err(Error::InvalidArgument(format!(
                "shrinking an image is not supported ({} bytes now, {new_len} asked)",
                sb.blocks_total * BLOCK
            )));
        }
        if new_blocks == sb.blocks_total {
            return Ok(0);
        }
        let grown = sb.grown(new_blocks);
        self.media.mark("grow");
        self.media.grow(new_len)?;
        let replica = grown.replica_block * BLOCK;
        let primary_first = bugs::active(Bug::GrowPrimaryFirst);
        // Each superblock copy is an in-place rewrite committed (fenced) before the next.
        let rewrite = |off: u64| {
            let mut txn = Txn::in_place(&self.media, "grow");
            txn.rewrite(off, bytemuck::bytes_of(&grown));
            txn.commit_in_place()
        };
        if primary_first {
            rewrite(0)?;
        }
        // The block may hold a stale superblock of an interrupted grow: rewrite it whole (the
        // zeros are ordered before the copy by the rewrite's first fence).
        self.media.zero_nt(replica, BLOCK)?;
        rewrite(replica)?;
        if !primary_first {
            rewrite(0)?; // the commit point
        }
        self.set_superblock(grown);
        self.blocks.grow(grown.replica_block);
        Ok(new_blocks - sb.blocks_total)
    }
}
