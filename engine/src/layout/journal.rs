//! The journal: 16 slots of 256 bytes in one block, for operations that touch several inodes.
//!
//! ```text
//! 0  commit u64   (JOURNAL_ACTIVE | n when active, 0 when idle; the commit word)
//! 8  csum u32     (over bytes 12..16+16n)
//! 12 n u32
//! 16 entries [JournalEntry; 15]: addr u64 (region offset of a tail word), old u64
//! ```
//! An active slot is an undo record: recovery stores every `old` back to its `addr`.

use bytemuck::{Pod, Zeroable};
use std::mem::offset_of;

use super::checksum;

/// Slots in the journal block.
pub const SLOTS: usize = 16;
/// Bytes per slot.
pub const SLOT_BYTES: u64 = 256;
/// Undo entries per slot.
pub const MAX_ENTRIES: usize = 15;
/// High half of an active commit word.
pub const JOURNAL_ACTIVE: u64 = 0x4a52_4e4c << 32; // "JRNL"

/// One undo record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct JournalEntry {
    /// Region offset of an 8-byte word.
    pub addr: u64,
    /// Its value before the operation.
    pub old: u64,
}

/// A journal slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct JournalSlot {
    /// Commit word.
    pub commit: u64,
    /// Checksum of `n` and the entries in use.
    pub csum: u32,
    /// Entries in use.
    pub n: u32,
    /// Undo records.
    pub entries: [JournalEntry; MAX_ENTRIES],
}

const _: () = {
    assert!(size_of::<JournalSlot>() as u64 == SLOT_BYTES);
    assert!(offset_of!(JournalSlot, commit) == 0);
    assert!(offset_of!(JournalSlot, n) == 12);
    assert!(offset_of!(JournalSlot, entries) == 16);
    assert!(SLOTS as u64 * SLOT_BYTES == super::BLOCK);
};

impl JournalSlot {
    /// Checksum over `n` and the used entries.
    pub fn compute_csum(&self) -> u32 {
        let n = (self.n as usize).min(MAX_ENTRIES);
        checksum(&bytemuck::bytes_of(self)[12..16 + 16 * n])
    }
}
