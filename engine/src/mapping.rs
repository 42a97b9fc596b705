//! Direct-access mappings, the engine side (DESIGN §5.4.1): the per-inode table of live
//! mappings (the userspace page table), `prepare_write` over the write cache's attachment
//! protocol, persist, and the coherence hooks the rest of the engine calls.
//!
//! Invariant: a mapping's virtual page is writable only while it maps the current block of its
//! file page: the cache block in the mapping's mode, or (MAP_SYNC mode only) the block a
//! migration handed to the file in place. Every change of an inode's block map goes through
//! [`Engine::maps_refresh`] (from `apply_entries`, `attach` and `finish_migration`) under the
//! inode's exclusive lock, before replaced blocks are freed, so no virtual page ever maps a
//! freed block.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

pub(crate) use crate::state::maptable::FaultHandler;
pub use crate::state::maptable::MapInner;
use crate::state::maptable::{Slot, ZERO};
use crate::state::writeback::MapMode;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::inode::{Inode, InodeState};
use crate::layout::entry::Entry;
use crate::layout::{Kind, BLOCK};
use crate::media::map::{MapView, PageTarget, Uffd};
use crate::media::MediaMode;

/// Arm read-only pages of a transparent mapping for write-protect faults (no-op otherwise).
fn arm(m: &MapInner, page: usize, n: usize) -> Result<()> {
    match (&m.uffd, &m.view) {
        (Some(u), MapView::Real(r)) => u.arm(r, page, n),
        _ => Ok(()),
    }
}

/// The handler thread: each write-protect fault in a transparent mapping prepares its page
/// (attachment, remap writable) and wakes the faulting store; if that fails, the page is made
/// read-only first, so the store gets SIGSEGV instead of faulting again forever.
fn fault_loop(engine: Weak<Engine>, h: Arc<FaultHandler>) {
    loop {
        if h.stop.load(Ordering::Acquire) || engine.strong_count() == 0 {
            return;
        }
        let Ok(Some(addr)) = h.uffd.next_fault(100) else {
            continue;
        };
        let found = h
            .regs
            .lock()
            .iter()
            .find(|(a, b, _, _)| (*a..*b).contains(&addr))
            .and_then(|(a, _, m, i)| Some((*a, m.upgrade()?, i.upgrade()?)));
        let Some((start, m, inode)) = found else {
            continue;
        };
        let MapView::Real(r) = &m.view else { continue };
        let idx = (addr - start) / BLOCK as usize;
        let pg_start = (m.first_page + idx as u64) * BLOCK;
        let lo = pg_start.max(m.offset);
        let hi = (pg_start + BLOCK).min(m.offset + m.len);
        let ok = match engine.upgrade() {
            Some(e) => e.map_prepare(&inode, &m, lo, hi - lo).is_ok(),
            None => false,
        };
        if !ok {
            let _ = r.protect_read(idx, 1);
        }
        h.uffd.wake(r, idx, 1);
    }
}

/// The block a page should map: its cache block (unless this very change replaced it), else
/// its file block, else the zero page; and whether a writable slot on that same block may stay
/// writable: a failure-atomic mapping only while the block is its mode's cache block (a store
/// into a synced block could not be undone by recovery); a MAP_SYNC mapping also once the
/// block was migrated into the file in place (it is durably the file's: a persisted store to
/// it survives a crash).
fn target(st: &InodeState, pg: u64, gone: &[u64], atomic: bool) -> (u64, bool) {
    if pg * BLOCK >= st.attr.size.div_ceil(BLOCK) * BLOCK || st.freed {
        return (0, false);
    }
    if let Some(&b) = st.cache().map.get(&pg) {
        if !gone.contains(&b) {
            return (b, st.cache().atomic == atomic);
        }
    }
    match st.map.get(&pg) {
        Some(&b) => (b, !atomic),
        None => (0, false),
    }
}

impl Engine {
    /// Map the file range `[off, off + len)` of `inode` (DESIGN §5.4.1): every page read-only
    /// at first (its cache block, file block or the zero page). `len` must be non-zero and the
    /// range inside the file.
    pub fn map_range(
        &self,
        inode: &Arc<Inode>,
        off: u64,
        len: u64,
        mode: MapMode,
    ) -> Result<Arc<MapInner>> {
        self.map_range_with(inode, off, len, mode, None)
    }

    /// [`Engine::map_range`] with transparent write access (DESIGN §5.4.1): a store to a page
    /// not yet writable faults (userfaultfd write-protect) to a handler thread that runs
    /// `map_prepare` for the page and lets the store proceed. `NotSupported` where the kernel
    /// or its settings refuse userfaultfd write-protect, and on the traced backend.
    pub fn map_range_transparent(
        self: &Arc<Engine>,
        inode: &Arc<Inode>,
        off: u64,
        len: u64,
        mode: MapMode,
    ) -> Result<Arc<MapInner>> {
        self.check_mounted()?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if self.media().mode() == MediaMode::Traced {
            return Err(Error::NotSupported(
                "transparent write access on the traced backend",
            ));
        }
        let h = {
            let mut g = self.maps.faults.lock();
            match &*g {
                Some(h) => h.clone(),
                None => {
                    let h = Arc::new(FaultHandler {
                        uffd: Arc::new(Uffd::new()?),
                        regs: Mutex::new(Vec::new()),
                        stop: AtomicBool::new(false),
                    });
                    let weak = Arc::downgrade(self);
                    let hh = h.clone();
                    std::thread::Builder::new()
                        .name("novafs-mapfault".into())
                        .spawn(move || fault_loop(weak, hh))
                        .map_err(Error::Io)?;
                    *g = Some(h.clone());
                    h
                }
            }
        };
        let m = self.map_range_with(inode, off, len, mode, Some(h.uffd.clone()))?;
        if let MapView::Real(r) = &m.view {
            let (a, b) = r.addr_range();
            let mut regs = h.regs.lock();
            regs.retain(|(_, _, w, _)| w.strong_count() > 0);
            regs.push((a, b, Arc::downgrade(&m), Arc::downgrade(inode)));
        }
        Ok(m)
    }

    fn map_range_with(
        &self,
        inode: &Arc<Inode>,
        off: u64,
        len: u64,
        mode: MapMode,
        uffd: Option<Arc<Uffd>>,
    ) -> Result<Arc<MapInner>> {
        self.check_mounted()?;
        let st = inode.state.read();
        match st.attr.kind {
            Kind::File => {}
            Kind::Dir => return Err(Error::IsADirectory),
            _ => {
                return Err(Error::InvalidArgument(
                    "map of a symlink, FIFO, socket or device node".into(),
                ))
            }
        }
        if st.freed {
            return Err(Error::NotFound);
        }
        let end = off.checked_add(len).ok_or(Error::FileTooLarge)?;
        if len == 0 || end > st.attr.size {
            return Err(Error::InvalidArgument(format!(
                "map of [{off}, {end}) outside the file (length {}); a mapping is non-empty \
                 and inside the file: extend the file first",
                st.attr.size
            )));
        }
        let first = off / BLOCK;
        let npages =
            usize::try_from((end - 1) / BLOCK - first + 1).map_err(|_| Error::FileTooLarge)?;
        usize::try_from(len).map_err(|_| Error::FileTooLarge)?;
        let view = self.media().map_view(npages)?;
        let atomic = mode == MapMode::Atomic;
        let m = Arc::new(MapInner {
            ino: inode.ino,
            first_page: first,
            offset: off,
            len,
            atomic,
            view,
            slots: Mutex::new(vec![ZERO; npages]),
            writable_pages: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            skip: (AtomicUsize::new(0), AtomicUsize::new(0)),
            uffd,
            start: (off - first * BLOCK) as usize,
            flush: match self.media().mode() {
                MediaMode::Dax | MediaMode::Emulated => Some(self.media().flush_kind()),
                MediaMode::Msync | MediaMode::Traced => None,
            },
        });
        {
            let mut slots = m.slots.lock();
            let want: Vec<Slot> = (0..npages)
                .map(|i| Slot {
                    block: target(&st, first + i as u64, &[], atomic).0,
                    writable: false,
                })
                .collect();
            self.apply_slots(&m, &mut slots, 0, &want, true)?;
        }
        // Registered under the inode's shared lock: every later change of the map (exclusive
        // lock) sees it.
        self.maps.live.fetch_add(1, Ordering::AcqRel);
        self.maps
            .by_ino
            .lock()
            .entry(inode.ino)
            .or_default()
            .push(Arc::downgrade(&m));
        drop(st);
        Ok(m)
    }

    /// Point the pages whose slot differs from `want` at their target, a run of consecutive
    /// pages on consecutive blocks (same protection) per `mmap`. With `all`, every page.
    fn apply_slots(
        &self,
        m: &MapInner,
        slots: &mut [Slot],
        first: usize,
        want: &[Slot],
        all: bool,
    ) -> Result<()> {
        let slots = &mut slots[first..first + want.len()];
        let media = self.media();
        let mut i = 0;
        let mut res = Ok(());
        while i < want.len() {
            let w = want[i];
            let cur = slots[i];
            if !all && cur == w {
                i += 1;
                continue;
            }
            if !all && cur.block == w.block && cur.writable && !w.writable {
                // Same block, write access revoked: mprotect only.
                let mut j = i + 1;
                while j < want.len()
                    && slots[j].block == want[j].block
                    && slots[j].writable
                    && !want[j].writable
                {
                    j += 1;
                }
                let r = media
                    .map_protect_read(&m.view, first + i, j - i)
                    .and_then(|()| arm(m, first + i, j - i));
                for (k, &wk) in want.iter().enumerate().take(j).skip(i) {
                    self.set_slot(m, slots, k, if r.is_ok() { wk } else { ZERO });
                }
                if let Err(e) = r {
                    // Last resort: the zero page (never a stale writable block).
                    let _ = media.map_pages(&m.view, first + i, j - i, PageTarget::Zero);
                    res = res.and(Err(e));
                }
                i = j;
                continue;
            }
            if !all
                && m.uffd.is_none()
                && cur.block == w.block
                && cur.block != 0
                && !cur.writable
                && w.writable
            {
                // Same block, write access granted: mprotect only.
                let mut j = i + 1;
                while j < want.len()
                    && slots[j].block == want[j].block
                    && !slots[j].writable
                    && want[j].writable
                {
                    j += 1;
                }
                if let Err(e) = media.map_protect_write(&m.view, first + i, j - i) {
                    res = res.and(Err(e)); // (still read-only: nothing stale)
                } else {
                    for (k, &wk) in want.iter().enumerate().take(j).skip(i) {
                        self.set_slot(m, slots, k, wk);
                    }
                }
                i = j;
                continue;
            }
            let mut j = i + 1;
            while j < want.len()
                && (all || slots[j] != want[j])
                && want[j].writable == w.writable
                && ((w.block == 0 && want[j].block == 0)
                    || (w.block != 0 && want[j].block == w.block + (j - i) as u64))
            {
                j += 1;
            }
            let tgt = if w.block == 0 {
                PageTarget::Zero
            } else {
                PageTarget::Block {
                    block: w.block,
                    writable: w.writable,
                }
            };
            let r = media
                .map_pages(&m.view, first + i, j - i, tgt)
                .and_then(|()| {
                    if w.writable {
                        Ok(())
                    } else {
                        arm(m, first + i, j - i)
                    }
                });
            if let Err(e) = r {
                let _ = media.map_pages(&m.view, first + i, j - i, PageTarget::Zero);
                for k in i..j {
                    self.set_slot(m, slots, k, ZERO);
                }
                res = res.and(Err(e));
            } else {
                for (k, &wk) in want.iter().enumerate().take(j).skip(i) {
                    self.set_slot(m, slots, k, wk);
                }
            }
            i = j;
        }
        res
    }

    fn set_slot(&self, m: &MapInner, slots: &mut [Slot], k: usize, s: Slot) {
        if slots[k].writable && !s.writable {
            m.writable_pages.fetch_sub(1, Ordering::AcqRel);
        } else if !slots[k].writable && s.writable {
            m.writable_pages.fetch_add(1, Ordering::AcqRel);
        }
        slots[k] = s;
    }

    /// Coherence hook: after a change of file pages `span` (`lo..hi`) of inode `ino`'s block
    /// map (its exclusive lock held), point every mapped page there at its current block;
    /// `gone` are blocks this change replaced (a cache entry naming one is stale). Write access
    /// survives only on an unchanged block (and, failure-atomic, a still cached one).
    pub(crate) fn maps_refresh(&self, ino: u64, st: &InodeState, gone: &[u64], span: (u64, u64)) {
        if span.0 >= span.1 {
            return;
        }
        for m in self.maps.of(ino) {
            let n = m.view.pages() as u64;
            let lo = span.0.max(m.first_page) - m.first_page;
            let hi = span.1.min(m.first_page + n).saturating_sub(m.first_page);
            if lo >= hi {
                continue;
            }
            let (lo, hi) = (lo as usize, hi as usize);
            let skip = (
                m.skip.0.load(Ordering::Relaxed),
                m.skip.1.load(Ordering::Relaxed),
            );
            if skip.0 < skip.1 && skip.0 <= lo && hi <= skip.1 {
                continue; // map_prepare remaps these itself (else: refresh all, remap twice)
            }
            let mut slots = m.slots.lock();
            let want: Vec<Slot> = slots[lo..hi]
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let (block, keep) = target(st, m.first_page + (lo + i) as u64, gone, m.atomic);
                    Slot {
                        block,
                        writable: s.writable && keep && s.block == block,
                    }
                })
                .collect();
            // A failure leaves the page on the zero page (apply_slots), never stale.
            let _ = self.apply_slots(&m, &mut slots, lo, &want, false);
        }
    }

    /// [`Engine::maps_refresh`] after `apply_entries`: the pages the entries name, plus every
    /// page past the smaller of the old and new size if the size changed.
    pub(crate) fn maps_refresh_applied(
        &self,
        ino: u64,
        st: &InodeState,
        entries: &[Entry],
        old_size: u64,
        gone: &[u64],
    ) {
        if self.maps.live.load(Ordering::Acquire) == 0 {
            return;
        }
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for e in entries {
            if let Entry::Write {
                pgoff, num_pages, ..
            } = e
            {
                lo = lo.min(*pgoff);
                hi = hi.max(pgoff.saturating_add(u64::from(*num_pages)));
            }
        }
        if st.attr.size != old_size {
            lo = lo.min(st.attr.size.min(old_size) / BLOCK);
            hi = u64::MAX;
        }
        self.maps_refresh(ino, st, gone, (lo, hi));
    }

    /// Traced backend: publish every mapping's stores into the inode's cache blocks as traced
    /// stores (before a migration or an operation over cached pages; the caller holds the
    /// inode's lock), then refresh the shadows of the blocks that changed.
    pub(crate) fn maps_publish(&self, ino: u64) {
        if self.media().mode() != MediaMode::Traced {
            return;
        }
        let maps = self.maps.of(ino);
        if maps.is_empty() {
            return;
        }
        let mut changed = Vec::new();
        for m in &maps {
            let slots = m.slots.lock();
            for (i, s) in slots.iter().enumerate() {
                if s.writable {
                    if let Ok(true) = self.media().map_publish(&m.view, i, s.block) {
                        changed.push(s.block);
                    }
                }
            }
        }
        if changed.is_empty() {
            return;
        }
        for m in &maps {
            let slots = m.slots.lock();
            for (i, s) in slots.iter().enumerate() {
                if s.block != 0 && changed.contains(&s.block) {
                    let _ = self.media().map_pages(
                        &m.view,
                        i,
                        1,
                        PageTarget::Block {
                            block: s.block,
                            writable: s.writable,
                        },
                    );
                }
            }
        }
    }

    /// Pages of `ino` mapped writable, over all its mappings.
    pub fn maps_writable_pages(&self, ino: u64) -> usize {
        self.maps
            .of(ino)
            .iter()
            .map(|m| m.writable_pages.load(Ordering::Acquire))
            .sum()
    }

    /// Unmount and crash: every page of every live mapping becomes the zero page (read-only):
    /// a later mount may reuse the blocks.
    pub(crate) fn maps_revoke_all(&self) {
        for m in self.maps.all() {
            let mut slots = m.slots.lock();
            let n = slots.len();
            let _ = self.media().map_pages(&m.view, 0, n, PageTarget::Zero);
            for k in 0..n {
                self.set_slot(&m, &mut slots, k, ZERO);
            }
        }
    }

    /// Close a mapping: no hook sees it again (its memory goes with the last reference).
    pub fn map_close(&self, m: &MapInner) {
        if !m.dead.swap(true, Ordering::AcqRel) {
            self.maps.live.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Make the pages of `[off, off + len)` (file offsets inside `m`) writable: clean pages are
    /// attached to the write cache first by the crash-proven protocol (the attachment is
    /// durable before the page is writable: MAP_SYNC semantics), then remapped read-write to
    /// their cache blocks.
    pub fn map_prepare(&self, inode: &Inode, m: &MapInner, off: u64, len: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if len == 0 {
            return self.check_mounted();
        }
        check_inside(m, off, len)?;
        let pages = m.view_pages(off, len);
        {
            // Fast path: already writable in this mapping.
            let slots = m.slots.lock();
            if slots[pages.clone()].iter().all(|s| s.writable) {
                return self.check_mounted();
            }
        }
        let _op = self.writable()?;
        if m.dead.load(Ordering::Acquire) {
            return Err(Error::Unmounted);
        }
        let mut st = inode.state.write();
        if st.freed {
            return Err(Error::NotFound);
        }
        let end = off + len;
        if end > st.attr.size {
            return Err(Error::InvalidArgument(format!(
                "prepare_write of [{off}, {end}) beyond the end of file ({}): the file shrank",
                st.attr.size
            )));
        }
        if !st.cache().map.is_empty() && st.cache().atomic != m.atomic {
            // One mode per cache generation: commit the other mode's pages first.
            self.migrate_locked(inode, &mut st)?;
        }
        let fp = |i: usize| m.first_page + i as u64;
        let clean: Vec<u64> = pages
            .clone()
            .map(fp)
            .filter(|p| !st.cache().map.contains_key(p))
            .collect();
        if !clean.is_empty() {
            // Attaches durably, then refreshes every other mapping (read-only) to the cache
            // blocks; this mapping's pages of the range are remapped below, read-write.
            m.skip.0.store(pages.start, Ordering::Relaxed);
            m.skip.1.store(pages.end, Ordering::Relaxed);
            let r = self.attach(inode, &mut st, &clean, m.atomic);
            m.skip.0.store(0, Ordering::Relaxed);
            m.skip.1.store(0, Ordering::Relaxed);
            r?;
        }
        let mut slots = m.slots.lock();
        let want: Vec<Slot> = pages
            .clone()
            .map(|i| Slot {
                block: st.cache().map[&fp(i)],
                writable: true,
            })
            .collect();
        self.apply_slots(m, &mut slots, pages.start, &want, false)
    }

    /// Store `data` at file offset `off` through the mapping's addresses (prepare + volatile
    /// copy). The traced backend publishes the stores at once (unflushed), as CPU stores are.
    pub fn map_store(&self, inode: &Inode, m: &MapInner, off: u64, data: &[u8]) -> Result<()> {
        self.map_prepare(inode, m, off, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        self.media().mark("map-write");
        m.slice().write((off - m.offset) as usize, data)?;
        if self.media().mode() == MediaMode::Traced {
            let _st = inode.state.read();
            self.maps_publish(m.ino);
        }
        Ok(())
    }

    /// [`Engine::map_persist`] of `[at, at + len)` in mapping offsets, the lean path: in the
    /// flush modes, one relaxed load of the mounted flag, one bounds check here and one in the
    /// media layer, the flushes and one fence (no lock, no system call, no atomic read-modify-
    /// write). (Relaxed suffices: the flag only turns a call after unmount into an error; an
    /// unmount racing the persist revokes the pages, and a flush of a revoked page is
    /// harmless.) Other modes take the general path.
    #[inline]
    pub fn map_persist_at(&self, inode: &Inode, m: &MapInner, at: u64, len: u64) -> Result<()> {
        if let Some(kind) = m.flush {
            if !self.mounted.load(Ordering::Relaxed) {
                return Err(Error::Unmounted);
            }
            return match at.checked_add(len) {
                Some(end) if end <= m.len => {
                    m.view
                        .flush_fence(m.start + at as usize, len as usize, kind)
                }
                _ => Err(Error::InvalidArgument(format!(
                    "access [{at}, {}) outside the mapping of {} bytes",
                    at.saturating_add(len),
                    m.len
                ))),
            };
        }
        let off = m.offset.checked_add(at).ok_or(Error::FileTooLarge)?;
        self.map_persist(inode, m, off, len)
    }

    /// Make the program's stores in `[off, off + len)` durable: clwb (or the fallback) of the
    /// program's addresses + one fence, no lock and no system call (msync of the range in
    /// msync mode). Traced: publish, flush the cache blocks, fence.
    pub fn map_persist(&self, inode: &Inode, m: &MapInner, off: u64, len: u64) -> Result<()> {
        self.check_mounted()?;
        check_inside(m, off, len)?;
        if len == 0 {
            return Ok(());
        }
        if self.media().mode() != MediaMode::Traced {
            return self
                .media()
                .map_persist(&m.slice(), (off - m.offset) as usize, len as usize);
        }
        let _st = inode.state.read();
        self.maps_publish(m.ino);
        let slots = m.slots.lock();
        let end = off + len;
        let mut pos = off;
        while pos < end {
            let pg = pos / BLOCK;
            let in_pg = pos % BLOCK;
            let n = (BLOCK - in_pg).min(end - pos);
            let s = slots[(pg - m.first_page) as usize];
            if s.writable {
                self.media().flush(s.block * BLOCK + in_pg, n)?;
            }
            pos += n;
        }
        self.media().fence();
        Ok(())
    }
}

/// The file pages a cache holds, as `lo..hi` (empty for an empty cache).
pub(crate) fn cache_span(st: &InodeState) -> (u64, u64) {
    let (mut lo, mut hi) = (u64::MAX, 0);
    for p in st.cache().map.keys() {
        lo = lo.min(p);
        hi = hi.max(p + 1);
    }
    (lo, hi)
}

fn check_inside(m: &MapInner, off: u64, len: u64) -> Result<()> {
    match off.checked_add(len) {
        Some(end) if off >= m.offset && end <= m.offset + m.len => Ok(()),
        _ => Err(Error::InvalidArgument(format!(
            "range [{off}, +{len}) outside the mapping [{}, {})",
            m.offset,
            m.offset + m.len
        ))),
    }
}
