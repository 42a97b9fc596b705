//! The superblock: immutable after format; a replica lives in the last block.
//!
//! ```text
//! 0   magic "NOVAFS\0\x01"   8   version u32   12 block_size u32
//! 16  blocks_total u64       24  uuid [u8;16]  40 format_time_ns u64
//! 48  itable_map_start u64   56  itable_map_blocks u64
//! 64  chunk_blocks u32       68  inodes_per_chunk u32
//! 72  journal_block u64      80  state_block u64
//! 88  first_free_block u64   96  replica_block u64
//! 104 reserved [u8;148] (zero)                252 csum u32 (over 0..252)
//! ```

use bytemuck::{Pod, Zeroable};
use std::mem::offset_of;

use super::{checksum, BLOCK, CHUNK_BLOCKS, INODES_PER_CHUNK, ITABLE_MAP_START};
use crate::error::{Error, Result};

/// Magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"NOVAFS\0\x01";
/// The on-media format version this build writes (version 2 added the special inode kinds and
/// the slot's `rdev`; version 3 the extended-attribute log entries, kinds 7..9, and sealed
/// inode-table map words, `layout::itable_map`; version 4 growable images: the inode-table map
/// keeps the size format gave it when the image grows, so it may be smaller than
/// `blocks_total` alone would make it, see [`Superblock::grown`]; version 5 log-entry flags,
/// `layout::entry::flags`, and one-fence commits, DESIGN.md §5.1; version 6 the `DirAdd` flag
/// `SLOT_CRC`: one-fence creates, DESIGN.md §5.3).
pub const FORMAT_VERSION: u32 = 6;
/// The first version whose inode-table map may be smaller than the image's size needs.
pub const GROWN_VERSION: u32 = 4;
/// The oldest version this build reads; a read-write mount upgrades it (DESIGN.md §5.8).
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// The on-media superblock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct Superblock {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Always 4096.
    pub block_size: u32,
    /// Blocks in the image.
    pub blocks_total: u64,
    /// Random identity of this image.
    pub uuid: [u8; 16],
    /// When it was formatted.
    pub format_time_ns: u64,
    /// First block of the inode-table map.
    pub itable_map_start: u64,
    /// Blocks of the inode-table map.
    pub itable_map_blocks: u64,
    /// Blocks per inode-table chunk.
    pub chunk_blocks: u32,
    /// Inodes per chunk.
    pub inodes_per_chunk: u32,
    /// The journal block.
    pub journal_block: u64,
    /// The mount-state block.
    pub state_block: u64,
    /// First block managed by the allocator.
    pub first_free_block: u64,
    /// Block of the replica.
    pub replica_block: u64,
    /// Must be zero.
    pub reserved: [u8; 148],
    /// Checksum over bytes 0..252.
    pub csum: u32,
}

const _: () = {
    assert!(size_of::<Superblock>() == 256);
    assert!(offset_of!(Superblock, blocks_total) == 16);
    assert!(offset_of!(Superblock, itable_map_start) == 48);
    assert!(offset_of!(Superblock, chunk_blocks) == 64);
    assert!(offset_of!(Superblock, journal_block) == 72);
    assert!(offset_of!(Superblock, replica_block) == 96);
    assert!(offset_of!(Superblock, reserved) == 104);
    assert!(offset_of!(Superblock, csum) == 252);
};

impl Superblock {
    /// Lay out an image of `blocks_total` blocks.
    pub fn new(blocks_total: u64, uuid: [u8; 16], now_ns: u64) -> Superblock {
        let map_blocks = map_blocks(blocks_total);
        let mut sb = Superblock {
            magic: MAGIC,
            version: FORMAT_VERSION,
            block_size: BLOCK as u32,
            blocks_total,
            uuid,
            format_time_ns: now_ns,
            itable_map_start: ITABLE_MAP_START,
            itable_map_blocks: map_blocks,
            chunk_blocks: CHUNK_BLOCKS as u32,
            inodes_per_chunk: INODES_PER_CHUNK as u32,
            journal_block: super::JOURNAL_BLOCK,
            state_block: super::STATE_BLOCK,
            first_free_block: ITABLE_MAP_START + map_blocks,
            replica_block: blocks_total - 1,
            reserved: [0; 148],
            csum: 0,
        };
        sb.csum = sb.compute_csum();
        sb
    }

    /// This superblock at the current [`FORMAT_VERSION`], sealed (an older image has nothing a
    /// newer reader would read differently: each version only added).
    pub fn upgraded(&self) -> Superblock {
        let mut sb = *self;
        sb.version = FORMAT_VERSION;
        sb.csum = sb.compute_csum();
        sb
    }

    /// This superblock for the image grown to `blocks_total` blocks (more than now): the
    /// replica moves to the new last block, the inode-table map stays where and as large as it
    /// is (it can still address `max_chunks` chunks: one inode per 128 bytes of the size the
    /// image was formatted with, which bounds the inode count of a grown image, not its data),
    /// at the current [`FORMAT_VERSION`] (older readers refuse it: their check of the map's
    /// size would fail).
    pub fn grown(&self, blocks_total: u64) -> Superblock {
        let mut sb = *self;
        sb.version = FORMAT_VERSION;
        sb.blocks_total = blocks_total;
        sb.replica_block = blocks_total - 1;
        sb.csum = sb.compute_csum();
        sb
    }

    fn compute_csum(&self) -> u32 {
        checksum(&bytemuck::bytes_of(self)[..252])
    }

    /// Number of inode-table chunk pointers the map can hold.
    pub fn max_chunks(&self) -> u64 {
        self.itable_map_blocks * BLOCK / 8
    }

    /// Whether an inode-table chunk may start at block `b` (an untrusted map word): the
    /// whole chunk inside the allocatable area. The one check the engine and fsck share.
    pub fn chunk_in_range(&self, b: u64) -> bool {
        b >= self.first_free_block
            && b.checked_add(CHUNK_BLOCKS)
                .is_some_and(|end| end <= self.replica_block)
    }

    /// Validate an untrusted copy read from `where_`.
    pub fn validate(&self, where_: &str, image_len: u64) -> Result<()> {
        if self.magic != MAGIC {
            return Err(Error::NotNovafs);
        }
        if self.csum != self.compute_csum() {
            return Err(Error::corrupt("superblock checksum", where_));
        }
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&self.version) {
            return Err(Error::UnsupportedVersion {
                found: self.version,
                supported: FORMAT_VERSION,
            });
        }
        let bad = |what: &str| Err(Error::corrupt(format!("superblock field {what}"), where_));
        if self.block_size as u64 != BLOCK {
            return bad("block_size");
        }
        if self
            .blocks_total
            .checked_mul(BLOCK)
            .is_none_or(|n| n > image_len)
        {
            return Err(Error::corrupt(
                "image shorter than its superblock says (truncated image file?)",
                format!(
                    "{where_}: {} blocks expected, file holds {}",
                    self.blocks_total,
                    image_len / BLOCK
                ),
            ));
        }
        if self.chunk_blocks as u64 != CHUNK_BLOCKS
            || self.inodes_per_chunk as u64 != INODES_PER_CHUNK
        {
            return bad("chunk geometry");
        }
        // Every field is untrusted (a crafted superblock can carry a valid checksum): no
        // arithmetic below may overflow, and the map's size must be the one format computes,
        // so that `max_chunks` and every chunk pointer check stay in range.
        if self.blocks_total < MIN_BLOCKS
            || self.itable_map_start != ITABLE_MAP_START
            || self.journal_block != super::JOURNAL_BLOCK
            || self.state_block != super::STATE_BLOCK
            || !map_size_ok(self.version, self.itable_map_blocks, self.blocks_total)
            || self.itable_map_start.checked_add(self.itable_map_blocks)
                != Some(self.first_free_block)
            || self.first_free_block >= self.replica_block
            || self.blocks_total.checked_sub(1) != Some(self.replica_block)
        {
            return bad("layout");
        }
        if self.reserved.iter().any(|&b| b != 0) {
            return bad("reserved");
        }
        Ok(())
    }
}

/// The fewest blocks a valid image has (format's minimum size).
const MIN_BLOCKS: u64 = super::MIN_IMAGE_BYTES / BLOCK;

/// Whether an inode-table map of `map` blocks is right for an image of `blocks_total` blocks:
/// the size format computes, or, from [`GROWN_VERSION`] on (an image that grew keeps its map),
/// at least one block and at most that size.
fn map_size_ok(version: u32, map: u64, blocks_total: u64) -> bool {
    let full = map_blocks(blocks_total);
    if version >= GROWN_VERSION {
        (1..=full).contains(&map)
    } else {
        map == full
    }
}

/// Blocks of the inode-table map of an image of `blocks_total` blocks (room for a pointer to
/// every chunk the image could hold).
fn map_blocks(blocks_total: u64) -> u64 {
    let max_chunks = blocks_total / CHUNK_BLOCKS + 1;
    (max_chunks * 8).div_ceil(BLOCK).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let sb = Superblock::new(1024, [7; 16], 42);
        sb.validate("test", 1024 * BLOCK).unwrap();
        let bytes = bytemuck::bytes_of(&sb).to_vec();
        let back: Superblock = bytemuck::pod_read_unaligned(&bytes);
        assert_eq!(back, sb);
        for i in 0..256 {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let s: Superblock = bytemuck::pod_read_unaligned(&b);
            assert!(
                s.validate("test", 1024 * BLOCK).is_err(),
                "flip at byte {i} undetected"
            );
        }
        let zero = Superblock::zeroed();
        assert!(zero.validate("t", 1 << 30).is_err());
    }

    #[test]
    fn a_grown_superblock_keeps_its_map_and_moves_its_replica() {
        let sb = Superblock::new(1024, [7; 16], 42);
        let g = sb.grown(100_000);
        g.validate("grown", 100_000 * BLOCK).unwrap();
        assert_eq!(g.itable_map_blocks, sb.itable_map_blocks);
        assert_eq!(g.first_free_block, sb.first_free_block);
        assert_eq!(g.replica_block, 99_999);
        assert!(map_blocks(100_000) > sb.itable_map_blocks);
        // The file must hold the grown size.
        assert!(g.validate("short", 1024 * BLOCK).is_err());
        // Before version 4 the map must have the size format computes.
        let mut old = g;
        old.version = 3;
        old.csum = old.compute_csum();
        assert!(old.validate("v3", 100_000 * BLOCK).is_err());
        // A map larger than the size needs is wrong in every version.
        let mut big = sb.grown(1024);
        big.itable_map_blocks = map_blocks(1024) + 1;
        big.first_free_block += 1;
        big.csum = big.compute_csum();
        assert!(big.validate("big", 1024 * BLOCK).is_err());
    }

    /// Found by the `fsck` fuzz target (fuzz/regressions/fsck/): a sealed superblock with
    /// `blocks_total` 0 underflowed `blocks_total - 1` (a panic with overflow checks).
    #[test]
    fn zero_blocks_total_is_corrupt_not_a_panic() {
        let mut sb = Superblock::new(256, [7; 16], 42);
        sb.blocks_total = 0;
        sb.csum = sb.compute_csum();
        let err = sb.validate("test", 256 * BLOCK).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { what, .. } if what == "superblock field layout"),
            "{err:?}"
        );
    }
}
