//! The per-inode persistent write cache: mapped writes with MAP_SYNC semantics.
//!
//! When a page of a mapping is first written (clean -> dirty), its current contents are copied
//! (non-temporal) into a newly allocated block, and a `CacheAttach { pgoff, block }` entry is
//! committed to the inode's cache log (its own chain of log pages, committed by the 8-byte
//! `cache_tail` word of the inode slot) before the store is allowed. Stores then go into that
//! block and are durable once flushed and fenced (`persist`), with no fsync. Reads (mapped or
//! `read_at`) see the cached page.
//!
//! Migration (`sync`, background writeback, clean unmount, recovery) moves every cached page
//! into the file map with one atomic commit: Write entries pointing at the cache blocks are
//! appended to the inode's log and its tail is stored; then the cache tail is set to 0 (cache
//! empty), and the replaced blocks and the cache log pages are freed. A crash between the two
//! commits leaves cache entries whose block the file map already holds: recovery skips them, so
//! migration is idempotent. Failure-atomic caches are never migrated by writeback; recovery
//! discards them, leaving the file as of its last sync.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::state::writeback::Ctl;
pub use crate::state::writeback::{MapMode, WritebackConfig};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::inode::{Inode, InodeState};
use crate::layout::entry::Entry;
use crate::layout::{now_ns, Kind, BLOCK};
use crate::log::LogWords;

impl Engine {
    /// Store `data` at file offset `off` through the write cache (a mapped store). Clean pages
    /// are first copied into new cache pages whose attachment is durable before this returns;
    /// the stored bytes are durable after [`Engine::cache_persist`] (or a sync).
    pub fn cache_write(&self, inode: &Inode, off: u64, data: &[u8], mode: MapMode) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if data.is_empty() {
            return Ok(());
        }
        let end = off
            .checked_add(data.len() as u64)
            .ok_or(Error::FileTooLarge)?;
        let atomic = mode == MapMode::Atomic;
        {
            // Fast path: every page already in the cache (in this mode): the stores change no
            // DRAM state, so the inode's shared lock is enough (like CPU stores to a mapped
            // page), and the operation gate is not taken. The lock excludes migration and
            // freeing (both take it exclusively); unmount migrates every cache under it, and
            // `crash` drains every inode's lock after clearing `mounted`, so a store that saw
            // `mounted` set lands before either completes.
            let st = inode.state.read();
            if !self.mounted.load(Ordering::Acquire) {
                return Err(Error::Unmounted);
            }
            let (first, last) = (off / BLOCK, (end - 1) / BLOCK);
            if st.attr.kind == Kind::File
                && !st.freed
                && end <= st.attr.size
                && st.cache().atomic == atomic
                && (first..=last).all(|p| st.cache().map.contains_key(&p))
            {
                return self.store_cached(inode, &st, off, end, data);
            }
        }
        let _op = self.writable()?;
        let mut st = inode.state.write();
        if st.attr.kind != Kind::File || st.freed {
            return Err(Error::InvalidArgument("mapped write to a non-file".into()));
        }
        let end = off
            .checked_add(data.len() as u64)
            .ok_or(Error::FileTooLarge)?;
        if end > st.attr.size {
            return Err(Error::InvalidArgument(format!(
                "mapped write beyond the end of file ({end} > {}): extend the file first",
                st.attr.size
            )));
        }
        if !st.cache().map.is_empty() && st.cache().atomic != atomic {
            // One mode per cache generation: commit the other mode's pages first.
            self.migrate_locked(inode, &mut st)?;
        }
        let first = off / BLOCK;
        let last = (end - 1) / BLOCK;
        let clean: Vec<u64> = (first..=last)
            .filter(|p| !st.cache().map.contains_key(p))
            .collect();
        if !clean.is_empty() {
            self.attach(inode, &mut st, &clean, atomic)?;
        }
        self.store_cached(inode, &st, off, end, data)
    }

    /// The stores themselves, into pages known to be cached.
    fn store_cached(
        &self,
        inode: &Inode,
        st: &InodeState,
        off: u64,
        end: u64,
        data: &[u8],
    ) -> Result<()> {
        self.media().mark("map-write");
        let mut pos = off;
        while pos < end {
            let pg = pos / BLOCK;
            let in_pg = pos % BLOCK;
            let n = (BLOCK - in_pg).min(end - pos);
            let b = st.cache().map[&pg];
            let src = &data[(pos - off) as usize..(pos - off + n) as usize];
            self.media().write(b * BLOCK + in_pg, src)?;
            inode.note_store(pg, b);
            pos += n;
        }
        Ok(())
    }

    /// Copy clean pages into new cache blocks and durably attach them (one transaction on
    /// the cache log).
    pub(crate) fn attach(
        &self,
        inode: &Inode,
        st: &mut InodeState,
        pages: &[u64],
        atomic: bool,
    ) -> Result<()> {
        let mut txn = self.txn("cache-attach");
        // Region to region, no DRAM buffer; word-atomic loads (a Sync-mode mapping may be
        // storing into the old block: DESIGN §2 "Soundness").
        let srcs: Vec<Option<u64>> = pages.iter().map(|pg| st.map.get(pg).copied()).collect();
        let blocks = txn.copy_blocks(&srcs)?;
        let entries: Vec<Entry> = pages
            .iter()
            .zip(&blocks)
            .map(|(&pgoff, &block)| Entry::CacheAttach {
                pgoff,
                block,
                atomic,
            })
            .collect();
        txn.append_cache(inode.ino, inode.slot_off, st, entries)?;
        let mut done = txn.commit()?;
        let _ = done.apply(&self.blocks, inode.ino, st);
        self.writeback.dirty.lock().insert(inode.ino);
        let span = (pages.iter().min().copied(), pages.iter().max().copied());
        if let (Some(lo), Some(hi)) = span {
            self.maps_refresh(inode.ino, st, &[], (lo, hi + 1)); // mapped pages: cache blocks
        }
        Ok(())
    }

    /// Make the mapped stores in `[off, off+len)` durable: flush their lines, fence.
    pub fn cache_persist(&self, inode: &Inode, off: u64, len: u64) -> Result<()> {
        self.check_mounted()?;
        let end = off.saturating_add(len);
        if len > 0 && off / BLOCK == (end - 1) / BLOCK {
            // A range inside the page of the last mapped store: flush that block without the
            // lock. If the page was migrated meanwhile, the migration flushed it (and a block
            // freed since only gets a harmless flush); a later store to the page went to a new
            // block and noted it before this load.
            if let Some(b) = inode.last_store_in(off / BLOCK) {
                self.media().flush(b * BLOCK + off % BLOCK, len)?;
                self.media().fence();
                return Ok(());
            }
        }
        let st = inode.state.read();
        let end = off.saturating_add(len).min(st.attr.size);
        let mut pos = off;
        while pos < end {
            let pg = pos / BLOCK;
            let in_pg = pos % BLOCK;
            let n = (BLOCK - in_pg).min(end - pos);
            if let Some(&b) = st.cache().map.get(&pg) {
                self.media().flush(b * BLOCK + in_pg, n)?;
            }
            pos += n;
        }
        self.media().fence();
        Ok(())
    }

    /// Migrate the inode's cached pages into its file map (msync / fsync of a mapping).
    pub fn cache_sync(&self, inode: &Inode) -> Result<()> {
        let _op = self.writable()?;
        if inode.state.read().cache().log.tail_off == 0 {
            return Ok(());
        }
        let mut st = inode.state.write();
        self.migrate_locked(inode, &mut st)
    }

    /// The first half of a migration: flush every cached page and return the Write entries
    /// that hand them to the file (to be committed with the caller's own entries, if any).
    pub(crate) fn migration_entries(&self, st: &InodeState) -> Result<Vec<Entry>> {
        let media = self.media();
        // Everything stored into the cache pages is durable before the commit's fence.
        for b in st.cache().map.values() {
            media.flush(b * BLOCK, BLOCK)?;
        }
        let now = now_ns();
        let mut sorted: Vec<(u64, u64)> = st.cache().map.iter().collect();
        sorted.sort_unstable();
        Ok(crate::inode::extent_runs(sorted)
            .map(|(p0, b0, n)| write_entry(p0, b0, n, st.attr.size, now))
            .collect())
    }

    /// Before an operation that needs the cache migrated (`write_at` over cached pages,
    /// `set_len`, `punch_hole`, `allocate`): a MAP_SYNC cache is migrated now, by its own
    /// commits (recovery's "already migrated" rule, `map[pgoff] == block`, stays exact); a
    /// failure-atomic cache's migration entries are returned instead, to be committed with the
    /// operation's own entries (a crash cannot separate the implicit sync from the operation;
    /// recovery discards atomic caches, so it needs no rule). Returns the entries and whether
    /// the caller must call [`Engine::finish_migration`] after its commit.
    pub(crate) fn migrate_or_fold(
        &self,
        inode: &Inode,
        st: &mut InodeState,
    ) -> Result<(Vec<Entry>, bool)> {
        self.maps_publish(inode.ino); // traced mappings' stores first (DESIGN §5.4.1)
        if st.cache().map.is_empty() && st.cache().log.tail_off == 0 {
            return Ok((Vec::new(), false));
        }
        if st.cache().atomic {
            Ok((self.migration_entries(st)?, true))
        } else {
            self.migrate_locked(inode, st)?;
            Ok((Vec::new(), false))
        }
    }

    /// The second half, once the migration entries are committed and applied: empty the cache
    /// durably (its tail word to 0) and free its log pages.
    pub(crate) fn finish_migration(&self, inode: &Inode, st: &mut InodeState) -> Result<()> {
        // The pages belong to the file now, whatever happens next (a retry finds the cache
        // empty and only resets the cache log).
        let span = crate::mapping::cache_span(st);
        if let Some(wc) = st.wc.as_mut() {
            wc.map.clear();
        }
        inode.forget_last_store();
        let mut txn = self.txn("cache-reset");
        txn.reset_cache(inode.ino, inode.slot_off);
        let mut done = txn.commit()?;
        let _ = done.apply(&self.blocks, inode.ino, st);
        self.writeback.dirty.lock().remove(&inode.ino);
        self.maps_refresh(inode.ino, st, &[], span); // migrated pages (atomic: revoked)
        Ok(())
    }

    /// Migrate with the inode locked. See the module docs for the protocol.
    pub(crate) fn migrate_locked(&self, inode: &Inode, st: &mut InodeState) -> Result<()> {
        self.maps_publish(inode.ino); // traced mappings' stores first (DESIGN §5.4.1)
        if st.cache().map.is_empty() && st.cache().log.tail_off == 0 {
            return Ok(());
        }
        let entries = self.migration_entries(st)?;
        // A migration frees space (the replaced blocks): it may use the reserve.
        let mut txn = self.txn("migrate").frees_space(true);
        txn.append(inode.ino, inode.slot_off, st, entries)?;
        if crate::bugs::active(crate::bugs::Bug::MigrationFreesBeforeCommit) {
            // Injected bug: the cache (and what it holds) is released before the commit
            // that hands its pages to the file.
            let mut early = crate::txn::Txn::in_place(&self.media, "bug-early-reset");
            early.store_word(LogWords::cache(inode.slot_off).tail, 0);
            early.commit_in_place()?;
        }
        let mut done = txn.commit()?;
        for b in self.apply(&mut done, inode.ino, inode.slot_off, st) {
            self.blocks.free(b, 1);
        }
        self.finish_migration(inode, st)
    }

    /// Migrate every inode's cache; failure-atomic ones only with `include_atomic` (clean
    /// unmount: a clean stop keeps the data).
    pub(crate) fn migrate_all(&self, include_atomic: bool) -> Result<()> {
        let inos: Vec<u64> = self.writeback.dirty.lock().iter().copied().collect();
        for ino in inos {
            let i = self.load_inode(ino)?;
            let mut st = i.state.write();
            if !st.freed && (include_atomic || !st.cache().atomic) {
                self.migrate_locked(&i, &mut st)?;
            }
        }
        Ok(())
    }

    /// Start the background writeback thread (no-op when `cfg.interval` is zero).
    pub fn start_writeback(self: &Arc<Engine>, cfg: WritebackConfig) {
        if cfg.interval.is_zero() || self.read_only {
            return;
        }
        let weak: Weak<Engine> = Arc::downgrade(self);
        let ctl = self.writeback.ctl.clone();
        let handle = std::thread::Builder::new()
            .name("novafs-writeback".into())
            .spawn(move || writeback_loop(weak, ctl, cfg));
        if let Ok(h) = handle {
            let id = h.thread().id();
            *self.writeback.thread.lock() = Some((id, h));
        }
    }

    /// Stop the writeback thread and wait for it (called at unmount and drop).
    pub(crate) fn stop_writeback(&self) {
        *self.writeback.ctl.stop.lock() = true;
        self.writeback.ctl.cv.notify_all();
        let t = self.writeback.thread.lock().take();
        if let Some((id, h)) = t {
            if id != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    /// One writeback pass: migrate caches that are old or big enough. Returns inodes migrated.
    pub fn writeback_pass(&self, cfg: &WritebackConfig, force: bool) -> Result<usize> {
        let inos: Vec<u64> = self.writeback.dirty.lock().iter().copied().collect();
        let mut n = 0;
        for ino in inos {
            if !self.mounted.load(Ordering::Acquire) {
                break;
            }
            let Ok(i) = self.inode(ino) else { continue };
            let mut st = i.state.write();
            if st.freed || st.cache().map.is_empty() || st.cache().atomic {
                continue;
            }
            let old = st.cache().since.is_some_and(|t| t.elapsed() >= cfg.max_age);
            if force || old || st.cache().map.len() >= cfg.max_dirty_pages {
                // One inode's failure (say no space for its log entry) must not starve the
                // others: try it again next pass.
                if self.migrate_locked(&i, &mut st).is_ok() {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

fn write_entry(pgoff: u64, block: u64, n: u32, size: u64, now: u64) -> Entry {
    Entry::Write {
        pgoff,
        block,
        num_pages: n,
        size,
        mtime_ns: now,
    }
}

fn writeback_loop(weak: Weak<Engine>, ctl: Arc<Ctl>, cfg: WritebackConfig) {
    loop {
        {
            let mut stop = ctl.stop.lock();
            if *stop {
                return;
            }
            let deadline = Instant::now() + cfg.interval;
            ctl.cv.wait_until(&mut stop, deadline);
            if *stop {
                return;
            }
        }
        // Hold the engine only for the pass, so that dropping the last handle unmounts.
        let Some(engine) = weak.upgrade() else { return };
        let _ = engine.writeback_pass(&cfg, false);
        let _ = engine.gc_pass();
        drop(engine);
    }
}
