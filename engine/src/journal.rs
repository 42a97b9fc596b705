//! The undo journal for operations that change several inodes' logs at once.
//!
//! Protocol (see DESIGN.md, "Multi-inode commit"):
//! 1. the new entries of every inode are written and flushed past their tails (`log::stage`);
//! 2. `begin`: the undo records (tail address, old tail) are stored and flushed; fence; the
//!    slot's commit word is stored, flushed, fenced;
//! 3. the new tails are stored and flushed; fence;
//! 4. `end`: the commit word is cleared, flushed, fenced.
//!
//! A crash between 2 and 4 leaves an active slot: recovery (`novafs_recovery::undo`) stores
//! every old tail back, which undoes the whole operation. A crash before 2 leaves nothing
//! visible; after 4, all of it.
#![forbid(unsafe_code)]

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::layout::journal::{
    JournalEntry, JournalSlot, JOURNAL_ACTIVE, MAX_ENTRIES, SLOTS, SLOT_BYTES,
};
use crate::layout::BLOCK;
use crate::media::Media;

/// The pool of journal slots.
pub struct Journal {
    base: u64,
    free: Mutex<Vec<usize>>,
    cv: Condvar,
}

impl Journal {
    /// The journal at `block`.
    pub fn new(block: u64) -> Journal {
        Journal {
            base: block * BLOCK,
            free: Mutex::new((0..SLOTS).rev().collect()),
            cv: Condvar::new(),
        }
    }

    fn slot_off(&self, slot: usize) -> u64 {
        self.base + slot as u64 * SLOT_BYTES
    }

    /// Durably record the undo words; returns the slot to pass to [`Journal::end`].
    pub fn begin(&self, media: &Media, words: &[(u64, u64)]) -> Result<usize> {
        if words.len() > MAX_ENTRIES {
            return Err(Error::InvalidArgument(
                "too many inodes in one operation".into(),
            ));
        }
        let slot = {
            let mut free = self.free.lock();
            loop {
                if let Some(s) = free.pop() {
                    break s;
                }
                self.cv.wait(&mut free);
            }
        };
        let mut js = JournalSlot {
            commit: 0,
            csum: 0,
            n: words.len() as u32,
            entries: [JournalEntry { addr: 0, old: 0 }; MAX_ENTRIES],
        };
        for (i, &(addr, old)) in words.iter().enumerate() {
            js.entries[i] = JournalEntry { addr, old };
        }
        js.csum = js.compute_csum();
        let off = self.slot_off(slot);
        let bytes = &bytemuck::bytes_of(&js)[8..16 + 16 * words.len()];
        let res = (|| {
            media.write_flush(off + 8, bytes)?;
            media.fence();
            media.commit_u64(off, JOURNAL_ACTIVE | words.len() as u64)
        })();
        if let Err(e) = res {
            self.release(slot);
            return Err(e);
        }
        Ok(slot)
    }

    /// Durably retire the slot.
    pub fn end(&self, media: &Media, slot: usize) -> Result<()> {
        let r = media.commit_u64(self.slot_off(slot), 0);
        self.release(slot);
        r
    }

    fn release(&self, slot: usize) {
        self.free.lock().push(slot);
        self.cv.notify_one();
    }
}
