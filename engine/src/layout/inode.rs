//! Inode slots: 128 bytes, 32 to a block, 1024 to an inode-table chunk.
//!
//! ```text
//! 0   log_head u64  (atomic; block of the first log page)
//! 8   log_tail u64  (atomic commit word; region offset just past the last committed entry)
//! 16  kind u8  _r u8  _r u16  _r u32
//! 24  generation u64
//! 32  mode u32  36 uid u32  40 gid u32  44 flags u32
//! 48  parent u64 (parent directory at creation)
//! 56  ctime_ns u64 (creation time)
//! 64  cache_head u64 (atomic; first page of the write-cache log)
//! 72  cache_tail u64 (atomic commit word of the write-cache log; 0 = cache empty)
//! 80  rdev u64 (device number of a character or block device; 0 otherwise; format 2)
//! 88  reserved [u8;36] (zero)
//! 124 csum u32 (over bytes 16..64 and 80..124: the fields fixed at allocation)
//! ```
//!
//! `kind == 0` marks a free slot. The checksum does not cover the four log words, which are
//! updated in place by 8-byte atomic stores.

use bytemuck::{Pod, Zeroable};
use std::mem::offset_of;

use super::Kind;
use crate::error::{Error, Result};

/// An inode slot as stored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct InodeSlot {
    /// Block of the first log page.
    pub log_head: u64,
    /// Offset just past the last committed log entry (the commit word).
    pub log_tail: u64,
    /// [`Kind`] as u8; 0 = free.
    pub kind: u8,
    /// Zero.
    pub reserved0: [u8; 7],
    /// Incremented each time the slot is reused.
    pub generation: u64,
    /// Permission bits (and setuid etc.), without the file-type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Zero for now.
    pub flags: u32,
    /// Parent directory at creation.
    pub parent: u64,
    /// Creation time.
    pub ctime_ns: u64,
    /// First page of the write-cache log.
    pub cache_head: u64,
    /// Commit word of the write-cache log (0 = empty).
    pub cache_tail: u64,
    /// Device number (Linux `dev_t` encoding) of a device node; 0 for every other kind.
    pub rdev: u64,
    /// Zero.
    pub reserved: [u8; 36],
    /// Checksum over bytes 16..124.
    pub csum: u32,
}

const _: () = {
    assert!(size_of::<InodeSlot>() == 128);
    assert!(offset_of!(InodeSlot, log_head) == 0);
    assert!(offset_of!(InodeSlot, log_tail) == 8);
    assert!(offset_of!(InodeSlot, kind) == 16);
    assert!(offset_of!(InodeSlot, generation) == GENERATION_OFFSET as usize);
    assert!(offset_of!(InodeSlot, mode) == 32);
    assert!(offset_of!(InodeSlot, parent) == 48);
    assert!(offset_of!(InodeSlot, cache_head) == 64);
    assert!(offset_of!(InodeSlot, cache_tail) == 72);
    assert!(offset_of!(InodeSlot, rdev) == 80);
    assert!(offset_of!(InodeSlot, reserved) == 88);
    assert!(offset_of!(InodeSlot, csum) == 124);
};

/// Offset of the tail word inside a slot.
pub const TAIL_OFFSET: u64 = 8;
/// Byte offset of the generation word (an aligned 8-byte field: a create reads only it).
pub const GENERATION_OFFSET: u64 = 24;
/// Offset of the head word inside a slot.
pub const HEAD_OFFSET: u64 = 0;
/// Offset of the write-cache log's head word.
pub const CACHE_HEAD_OFFSET: u64 = 64;
/// Offset of the write-cache log's tail word.
pub const CACHE_TAIL_OFFSET: u64 = 72;

/// The fields fixed when a slot is allocated.
#[derive(Clone, Copy, Debug)]
pub struct NewInode {
    /// Kind.
    pub kind: Kind,
    /// Generation (the slot's previous generation + 1).
    pub generation: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Parent directory.
    pub parent: u64,
    /// Creation time.
    pub ctime_ns: u64,
    /// Device number (device nodes only; 0 otherwise).
    pub rdev: u64,
}

impl InodeSlot {
    /// A sealed slot for a new inode with empty logs.
    pub fn fresh(n: NewInode) -> InodeSlot {
        InodeSlot {
            log_head: 0,
            log_tail: 0,
            kind: n.kind as u8,
            reserved0: [0; 7],
            generation: n.generation,
            mode: n.mode & 0o7777,
            uid: n.uid,
            gid: n.gid,
            flags: 0,
            parent: n.parent,
            ctime_ns: n.ctime_ns,
            cache_head: 0,
            cache_tail: 0,
            rdev: n.rdev,
            reserved: [0; 36],
            csum: 0,
        }
        .seal()
    }

    /// Compute the checksum of the static part.
    pub fn compute_csum(&self) -> u32 {
        let b = bytemuck::bytes_of(self);
        let mut h = super::crc_hasher();
        h.update(&b[16..64]);
        h.update(&b[80..124]);
        h.finalize() ^ super::CSUM_SALT
    }

    /// Seal the checksum.
    pub fn seal(mut self) -> InodeSlot {
        self.csum = self.compute_csum();
        self
    }

    /// Validate an untrusted slot of inode `ino`; returns its kind.
    pub fn validate(&self, ino: u64) -> Result<Kind> {
        let kind = Kind::from_u8(self.kind)
            .ok_or_else(|| Error::corrupt("inode kind", format!("inode {ino}")))?;
        if self.csum != self.compute_csum() {
            return Err(Error::corrupt("inode checksum", format!("inode {ino}")));
        }
        if (self.rdev != 0 && !kind.is_device()) || self.rdev > u64::from(u32::MAX) {
            // Only device nodes carry a number, and Linux's fit in 32 bits (mknod refuses more).
            return Err(Error::corrupt(
                "device number (none but a device's, 32 bits at most)",
                format!("inode {ino}"),
            ));
        }
        if self.reserved.iter().any(|&b| b != 0) || self.reserved0.iter().any(|&b| b != 0) {
            return Err(Error::corrupt(
                "inode reserved bytes",
                format!("inode {ino}"),
            ));
        }
        Ok(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(kind: Kind, rdev: u64) -> InodeSlot {
        InodeSlot::fresh(NewInode {
            kind,
            generation: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            parent: 1,
            ctime_ns: 0,
            rdev,
        })
    }

    #[test]
    fn only_devices_carry_a_device_number_of_32_bits() {
        assert_eq!(
            slot(Kind::CharDev, 0x0103).validate(9).unwrap(),
            Kind::CharDev
        );
        assert_eq!(slot(Kind::Fifo, 0).validate(9).unwrap(), Kind::Fifo);
        // Sealed with a valid checksum, still refused.
        assert!(slot(Kind::Fifo, 5).validate(9).is_err());
        assert!(slot(Kind::File, 5).validate(9).is_err());
        assert!(slot(Kind::BlockDev, 1 << 32).validate(9).is_err());
    }
}
