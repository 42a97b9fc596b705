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

/// What a journal slot read from the image says (see [`JournalSlot::decode`]).
#[derive(Debug, PartialEq, Eq)]
pub enum SlotState<'a> {
    /// No operation in flight.
    Idle,
    /// An interrupted operation: its undo records, each naming a log word inside the inode
    /// table.
    Active(&'a [JournalEntry]),
}

/// Why a journal slot cannot be trusted.
#[derive(Debug, PartialEq, Eq)]
pub enum SlotDamage {
    /// The commit word, record count or checksum is wrong.
    Damaged,
    /// Record `addr` does not name an inode's log tail or head word in the inode table.
    BadAddress(u64),
}

/// Whether `addr` is an undo record's legal target: the log tail word (multi-inode commits)
/// or log head word (log compaction) of an inode slot inside one of the inode-table `chunks`.
pub fn undo_address_ok(addr: u64, chunks: &[u64]) -> bool {
    use super::inode::{HEAD_OFFSET, TAIL_OFFSET};
    use super::{BLOCK, CHUNK_BLOCKS, INODE_SIZE};
    matches!(addr % INODE_SIZE, TAIL_OFFSET | HEAD_OFFSET)
        && chunks.iter().any(|&c| {
            let start = c.saturating_mul(BLOCK);
            addr >= start && addr < start.saturating_add(CHUNK_BLOCKS * BLOCK)
        })
}

impl JournalSlot {
    /// Decode an untrusted slot of an image whose inode table is `chunks`: idle, or active
    /// with a valid commit word, record count and checksum, and every record's address a
    /// legal undo target. The one decoder of mount (journal undo) and fsck.
    pub fn decode(&self, chunks: &[u64]) -> Result<SlotState<'_>, SlotDamage> {
        if self.commit == 0 {
            return Ok(SlotState::Idle);
        }
        if self.commit != JOURNAL_ACTIVE | self.n as u64
            || self.n as usize > MAX_ENTRIES
            || self.csum != self.compute_csum()
        {
            return Err(SlotDamage::Damaged);
        }
        let records = &self.entries[..self.n as usize];
        if let Some(e) = records.iter().find(|e| !undo_address_ok(e.addr, chunks)) {
            return Err(SlotDamage::BadAddress(e.addr));
        }
        Ok(SlotState::Active(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::inode::{HEAD_OFFSET, TAIL_OFFSET};
    use crate::layout::{BLOCK, INODE_SIZE};

    fn slot(records: &[(u64, u64)]) -> JournalSlot {
        let mut js = JournalSlot::zeroed();
        js.n = records.len() as u32;
        for (i, &(addr, old)) in records.iter().enumerate() {
            js.entries[i] = JournalEntry { addr, old };
        }
        js.commit = JOURNAL_ACTIVE | records.len() as u64;
        js.csum = js.compute_csum();
        js
    }

    #[test]
    fn decodes_idle_active_and_damaged_slots() {
        let chunks = [40];
        let tail = 40 * BLOCK + 5 * INODE_SIZE + TAIL_OFFSET;
        let head = 40 * BLOCK + 9 * INODE_SIZE + HEAD_OFFSET;
        assert_eq!(JournalSlot::zeroed().decode(&chunks), Ok(SlotState::Idle));
        let good = slot(&[(tail, 7), (head, 8)]);
        assert!(matches!(good.decode(&chunks), Ok(SlotState::Active(r)) if r.len() == 2));
        let mut bad_csum = good;
        bad_csum.entries[1].old ^= 1;
        assert_eq!(bad_csum.decode(&chunks), Err(SlotDamage::Damaged));
        let mut bad_n = good;
        bad_n.commit = JOURNAL_ACTIVE | 3;
        assert_eq!(bad_n.decode(&chunks), Err(SlotDamage::Damaged));
        // Not a log word, outside the inode table, or past u64::MAX.
        for addr in [
            tail + 8,
            39 * BLOCK + TAIL_OFFSET,
            72 * BLOCK + TAIL_OFFSET,
            u64::MAX,
        ] {
            assert_eq!(
                slot(&[(tail, 1), (addr, 2)]).decode(&chunks),
                Err(SlotDamage::BadAddress(addr))
            );
        }
        assert!(slot(&[(tail, 1)]).decode(&[u64::MAX]).is_err());
    }
}
