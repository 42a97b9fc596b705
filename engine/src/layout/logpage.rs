//! Log pages: 4 KiB blocks chained into a per-inode log.
//!
//! ```text
//! 0    .. 4032  entries (63 lines of 64 bytes)
//! 4032 next u64   (block of the next log page; 0 = none)
//! 4040 used u32   (bytes of entries in this page; meaningful once next != 0)
//! 4044 magic u32
//! 4048 csum u32   (over 4032..4048 and 4052..4096)
//! 4052 reserved [u8; 44] (zero)
//! ```
//! The trailer is written once, when the next page is linked, and is durable before the tail
//! word points into the next page.

use bytemuck::{Pod, Zeroable};
use std::mem::offset_of;

use super::checksum;
use crate::error::{Error, Result};

/// Bytes of entries per log page.
pub const ENTRY_BYTES: u64 = 4032;
/// Offset of the trailer.
pub const TRAILER_OFFSET: u64 = 4032;
/// Trailer magic.
pub const TRAILER_MAGIC: u32 = 0x4c4f_4750; // "LOGP"

/// The page trailer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct PageTrailer {
    /// Next page block.
    pub next: u64,
    /// Used entry bytes.
    pub used: u32,
    /// [`TRAILER_MAGIC`].
    pub magic: u32,
    /// Checksum.
    pub csum: u32,
    /// Zero.
    pub reserved: [u8; 44],
}

const _: () = {
    assert!(size_of::<PageTrailer>() == 64);
    assert!(offset_of!(PageTrailer, next) == 0);
    assert!(offset_of!(PageTrailer, csum) == 16);
    assert!(TRAILER_OFFSET + 64 == super::BLOCK);
};

impl PageTrailer {
    /// A sealed trailer linking to `next` after `used` bytes of entries.
    pub fn new(next: u64, used: u32) -> PageTrailer {
        let mut t = PageTrailer {
            next,
            used,
            magic: TRAILER_MAGIC,
            csum: 0,
            reserved: [0; 44],
        };
        t.csum = t.compute_csum();
        t
    }

    fn compute_csum(&self) -> u32 {
        let mut c = *self;
        c.csum = 0;
        checksum(bytemuck::bytes_of(&c))
    }

    /// Validate an untrusted trailer of log page `block` of inode `ino`.
    pub fn validate(&self, ino: u64, block: u64, blocks_total: u64) -> Result<()> {
        let loc = || format!("inode {ino} log page {block}");
        if self.magic != TRAILER_MAGIC || self.csum != self.compute_csum() {
            return Err(Error::corrupt("log page trailer", loc()));
        }
        if self.next == 0 || self.next >= blocks_total || self.used as u64 > ENTRY_BYTES {
            return Err(Error::corrupt("log page link", loc()));
        }
        if !self.used.is_multiple_of(64) || self.reserved.iter().any(|&b| b != 0) {
            return Err(Error::corrupt("log page trailer fields", loc()));
        }
        Ok(())
    }
}
