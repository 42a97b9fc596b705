//! The live direct-access mappings of each inode (the userspace page table) and what each of
//! their pages maps (the operations on them are `mapping.rs`).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::inode::Inode;
use crate::layout::BLOCK;
use crate::media::map::{MapView, Uffd, VolatileSlice};
use crate::media::FlushKind;
use crate::state::writeback::MapMode;

/// What one virtual page of a mapping points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The block mapped (0: the zero page; block 0 is the superblock, never file data).
    pub(crate) block: u64,
    /// Mapped read-write (only while `block` is the page's cache block).
    pub(crate) writable: bool,
}

pub(crate) const ZERO: Slot = Slot {
    block: 0,
    writable: false,
};

/// One live mapping: its memory and what each of its pages maps.
pub struct MapInner {
    pub(crate) ino: u64,
    /// File page of the view's first page.
    pub(crate) first_page: u64,
    /// The mapped file range.
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) atomic: bool,
    pub(crate) view: MapView,
    pub(crate) slots: Mutex<Vec<Slot>>,
    /// Pages mapped writable.
    pub(crate) writable_pages: AtomicUsize,
    /// Set once the mapping is closed (dropped).
    pub(crate) dead: AtomicBool,
    /// View pages `[lo, hi)` that `map_prepare` is about to map read-write itself: the refresh
    /// run by its attachment leaves them alone (one remap instead of two). Written and read
    /// only under the inode's exclusive lock.
    pub(crate) skip: (AtomicUsize, AtomicUsize),
    /// Transparent write access: read-only pages are armed for write-protect faults.
    pub(crate) uffd: Option<Arc<Uffd>>,
    /// Offset of the mapping's first byte in the view (`offset % BLOCK`).
    pub(crate) start: usize,
    /// The flush instruction of `persist` on a real view in a flush mode (dax, emulated);
    /// `None`: msync mode or the traced backend (the general path).
    pub(crate) flush: Option<FlushKind>,
}

impl std::fmt::Debug for MapInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapInner")
            .field("ino", &self.ino)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("atomic", &self.atomic)
            .field("view", &self.view)
            .finish()
    }
}

impl MapInner {
    /// The mapped bytes `[offset, offset + len)` of the file, as a volatile slice.
    pub fn slice(&self) -> VolatileSlice<'_> {
        let start = (self.offset - self.first_page * BLOCK) as usize;
        // The view covers every page of the range (built so in `map_range`).
        self.view
            .slice(start, self.len as usize)
            .unwrap_or_else(|_| unreachable!("the view covers the mapped range"))
    }

    /// The mapped file range.
    pub fn range(&self) -> (u64, u64) {
        (self.offset, self.len)
    }

    /// The persistence mode.
    pub fn mode(&self) -> MapMode {
        if self.atomic {
            MapMode::Atomic
        } else {
            MapMode::Sync
        }
    }

    /// Pages of `[off, off + len)` (file offsets inside the mapping), as view page indices.
    pub(crate) fn view_pages(&self, off: u64, len: u64) -> std::ops::Range<usize> {
        if len == 0 {
            return 0..0;
        }
        let a = (off / BLOCK - self.first_page) as usize;
        let b = ((off + len - 1) / BLOCK - self.first_page) as usize;
        a..b + 1
    }
}

/// The live mappings of each inode.
#[derive(Default)]
pub(crate) struct MapTable {
    pub(crate) live: AtomicUsize,
    pub(crate) by_ino: Mutex<HashMap<u64, Vec<Weak<MapInner>>>>,
    /// The write-protect fault handler of transparent mappings (started by the first one).
    pub(crate) faults: Mutex<Option<Arc<FaultHandler>>>,
}

/// Registered ranges of transparent mappings: addresses, mapping, inode.
pub(crate) type FaultRegs = Vec<(usize, usize, Weak<MapInner>, Weak<Inode>)>;

/// The userfaultfd and the mappings it serves.
pub(crate) struct FaultHandler {
    pub(crate) uffd: Arc<Uffd>,
    pub(crate) regs: Mutex<FaultRegs>,
    pub(crate) stop: AtomicBool,
}

impl Drop for MapTable {
    fn drop(&mut self) {
        if let Some(h) = self.faults.lock().take() {
            h.stop.store(true, Ordering::Release);
        }
    }
}

impl MapTable {
    pub(crate) fn of(&self, ino: u64) -> Vec<Arc<MapInner>> {
        if self.live.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let mut t = self.by_ino.lock();
        let Some(v) = t.get_mut(&ino) else {
            return Vec::new();
        };
        v.retain(|w| w.strong_count() > 0);
        let out: Vec<Arc<MapInner>> = v
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|m| !m.dead.load(Ordering::Acquire))
            .collect();
        if v.is_empty() {
            t.remove(&ino);
        }
        out
    }

    pub(crate) fn all(&self) -> Vec<Arc<MapInner>> {
        let t = self.by_ino.lock();
        t.values().flatten().filter_map(Weak::upgrade).collect()
    }
}
