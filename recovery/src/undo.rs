//! Journal undo: the first step of recovery (DESIGN.md §5.2). Every active slot names the
//! commit words of an interrupted multi-inode commit and their old values; restoring them
//! (each flushed, one fence) and then clearing the slot returns every inode it names to its
//! state before that commit. A crash during undo leaves the slot active: undo runs again.

use novafs_engine::bugs::{self, Bug};
use novafs_engine::layout::journal::{JournalSlot, SlotDamage, SlotState, SLOTS, SLOT_BYTES};
use novafs_engine::layout::BLOCK;
use novafs_engine::media::Media;
use novafs_engine::txn::Txn;
use novafs_engine::{Error, Result};

/// Undo every active slot of the journal at `journal_block`. Returns how many were undone. `chunks`: the inode table
/// (every undo record must name a log word inside it, `undo_address_ok`).
pub fn undo_journal(media: &Media, journal_block: u64, chunks: &[u64]) -> Result<usize> {
    let mut undone = 0;
    for slot in 0..SLOTS {
        let off = journal_block * BLOCK + slot as u64 * SLOT_BYTES;
        let js: JournalSlot = media.read_pod(off)?;
        let loc = || format!("journal slot {slot}");
        let records = match js.decode(chunks) {
            Ok(SlotState::Idle) => continue,
            Ok(SlotState::Active(records)) => records,
            Err(SlotDamage::Damaged) => return Err(Error::corrupt("journal slot", loc())),
            Err(SlotDamage::BadAddress(_)) => {
                return Err(Error::corrupt("journal undo address", loc()))
            }
        };
        // The records (each flushed, one fence), then the slot cleared: two in-place
        // transactions, in that order.
        let mut undo = Txn::in_place(media, "journal-undo");
        for e in records {
            if bugs::active(Bug::RecoveryTrustsTails) {
                break;
            }
            undo.store_word(e.addr, e.old);
        }
        undo.commit_in_place()?;
        let mut clear = Txn::in_place(media, "journal-undo");
        clear.store_word(off, 0);
        clear.commit_in_place()?;
        undone += 1;
    }
    Ok(undone)
}
