//! The engine: inode-level operations over the logs, the journal and the allocators.
//!
//! Locking: every inode has a `RwLock<InodeState>`. Operations that change several inodes lock
//! them in ascending inode order after looking the names up, then re-check the names (and
//! retry if a concurrent operation changed them). Renames also take a global rename lock, so
//! that the "not into its own subtree" walk sees a stable tree.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::alloc::{BlockAlloc, InodeAlloc};
use crate::error::{Error, Result};
use crate::inode::{slot_offset, Attr, Bounds, DirEnt, Inode, InodeLayout, InodeState};
use crate::journal::Journal;
use crate::layout::entry::Entry;
use crate::layout::superblock::Superblock;
use crate::layout::{Kind, BLOCK, CHUNK_BLOCKS, INODES_PER_CHUNK, NAME_MAX};
use crate::media::{Media, MediaMode};
use crate::txn::{Committed, Store, Txn};

pub use crate::layout::MAX_FILE_PAGES;
/// Most hard links to one file.
pub const MAX_LINKS: u32 = 65_000;

pub(crate) const CACHE_SHARDS: usize = 64;

/// Inodes for one cache shard, with their numbers.
pub(crate) type ShardList = Vec<(u64, Arc<Inode>)>;

/// The inode cache's shard of inode `ino`.
pub(crate) fn shard_of(ino: u64) -> usize {
    (ino as usize) % CACHE_SHARDS
}

type InoMap<V> = crate::hash::U64Map<V>;

/// Attribute changes for [`Engine::setattr`].
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New length (truncate or extend).
    pub size: Option<u64>,
    /// New access time.
    pub atime_ns: Option<u64>,
    /// New modification time.
    pub mtime_ns: Option<u64>,
}

/// One entry of [`Engine::readdir`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Inode.
    pub ino: u64,
    /// Kind.
    pub kind: Kind,
}

/// File-system-wide counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatFs {
    /// Block size.
    pub block_size: u64,
    /// Blocks in the image.
    pub blocks_total: u64,
    /// Blocks free.
    pub blocks_free: u64,
    /// Blocks free for ordinary allocations (a small reserve is kept so that deleting
    /// always works on a full image).
    pub blocks_avail: u64,
    /// Inodes that could exist.
    pub inodes_total: u64,
    /// Inodes that could still be created.
    pub inodes_free: u64,
    /// Longest name.
    pub name_max: u64,
}

/// Rename behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// Fail with `AlreadyExists` instead of replacing the target.
    pub noreplace: bool,
    /// Swap the two names atomically (both must exist; `RENAME_EXCHANGE`).
    pub exchange: bool,
}

/// The engine.
pub struct Engine {
    pub(crate) media: Arc<Media>,
    /// The superblock as last committed (it changes only when the image grows, `grow.rs`).
    sb: RwLock<Superblock>,
    /// Serialises [`Engine::grow`].
    pub(crate) grow_lock: Mutex<()>,
    pub(crate) blocks: BlockAlloc,
    pub(crate) inos: InodeAlloc,
    pub(crate) chunks: RwLock<Vec<u64>>,
    chunk_grow: Mutex<()>,
    cache: Vec<RwLock<InoMap<Arc<Inode>>>>,
    pub(crate) journal: Journal,
    pub(crate) rename_lock: Mutex<()>,
    pub(crate) read_only: bool,
    pub(crate) mounted: AtomicBool,
    pub(crate) writeback: crate::state::writeback::Writeback,
    pub(crate) gc: crate::state::gc::Gc,
    /// Mutating operations hold it shared; unmount and crash exclusively.
    pub(crate) gate: crate::state::gate::Gate,
    /// Which loaded directory names each subdirectory (a second name is `Corrupt`).
    pub(crate) dir_names: crate::state::dirnames::DirNames,
    /// Live direct-access mappings per inode (`mapping.rs`).
    pub(crate) maps: crate::state::maptable::MapTable,
    /// Slots whose kind word was cleared at free and not flushed yet (DESIGN.md §5.5): flushed
    /// a batch at a time, and all before a clean unmount's fence.
    freed_slots: Mutex<Vec<u64>>,
}

/// Freed slots whose kind-word lines are flushed together ([`Engine::free_inode`]).
const FREED_SLOTS_BATCH: usize = 512;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("media", &self.media)
            .field("blocks_total", &self.superblock().blocks_total)
            .finish()
    }
}

impl Engine {
    pub(crate) fn new_internal(
        media: Arc<Media>,
        sb: Superblock,
        blocks: BlockAlloc,
        inos: InodeAlloc,
        chunks: Vec<u64>,
        read_only: bool,
    ) -> Engine {
        Engine {
            journal: Journal::new(sb.journal_block),
            media,
            sb: RwLock::new(sb),
            grow_lock: Mutex::new(()),
            blocks,
            inos,
            chunks: RwLock::new(chunks),
            chunk_grow: Mutex::new(()),
            cache: (0..CACHE_SHARDS)
                .map(|_| RwLock::new(InoMap::default()))
                .collect(),
            rename_lock: Mutex::new(()),
            read_only,
            mounted: AtomicBool::new(true),
            writeback: Default::default(),
            gc: Default::default(),
            gate: Default::default(),
            dir_names: Default::default(),
            maps: Default::default(),
            freed_slots: Default::default(),
        }
    }

    /// Stop as a crash would: no state is saved and the next mount runs recovery. (For tests
    /// and the crash harness; a killed process behaves the same.)
    pub fn crash(&self) {
        self.mounted.store(false, Ordering::Release);
        drop(self.gate.write()); // wait for operations in flight
                                 // Mapped stores to cached pages take only their inode's lock (`cache_write`'s fast
                                 // path): wait for those in flight too.
        for i in self.cached_inodes() {
            drop(i.state.write());
        }
        self.stop_writeback();
        self.maps_revoke_all(); // a killed process's mappings go with it
                                // A killed process's lock goes with it.
        self.media.release();
    }

    /// The media (the engine's own: front ends call operations).
    pub(crate) fn media(&self) -> &Arc<Media> {
        &self.media
    }

    /// Block frees the allocator refused because the block was free already or is a loaded
    /// inode's log page: 0 unless the image cross-links blocks between inodes (damage the
    /// clean-mount fast path sees only once it has been acted on; fsck repairs it). See
    /// `BlockAlloc::free`.
    pub fn refused_frees(&self) -> u64 {
        self.blocks.refused_frees()
    }

    /// The persistence path in use.
    pub fn media_mode(&self) -> MediaMode {
        self.media.mode()
    }

    /// Whether this session commits single-inode appends with one fence (DESIGN.md §5.1.1;
    /// `MountOptions::one_fence`: on by default).
    pub fn one_fence_commits(&self) -> bool {
        self.media.one_fence()
    }

    /// Whether a one-fence session's writes of whole pages commit with one fence too, their
    /// data runs checksummed (DESIGN.md §5.1.1; by default in msync mode only).
    pub fn data_crcs(&self) -> bool {
        self.media.data_crcs()
    }

    /// Choose [`Engine::data_crcs`] for this session (tests and benches compare the two
    /// commit forms on one backend). Safe at any moment: recovery checks a data run's
    /// checksum only where its entry carries one.
    pub fn set_data_crcs(&self, on: bool) {
        self.media.set_data_crcs(on);
    }

    /// The superblock (a copy: it changes when the image grows).
    pub fn superblock(&self) -> Superblock {
        *self.sb.read()
    }

    /// The blocks an extent may use: the block allocator's range, which is the superblock's
    /// (first free block to the replica) and follows a growth once the new superblock is
    /// committed (read without the superblock's lock: this is on every transaction's path).
    pub(crate) fn bounds(&self) -> Bounds {
        let (lo, hi) = self.blocks.range();
        Bounds { lo, hi }
    }

    /// Replace the superblock after its new value was committed to the media (`grow.rs`).
    pub(crate) fn set_superblock(&self, sb: Superblock) {
        *self.sb.write() = sb;
    }

    /// Durability system calls made so far (msync mode: one `msync` per fence that had
    /// anything to sync; 0 in the other modes). For monitoring and tests.
    pub fn durability_calls(&self) -> u64 {
        self.media.sync_calls()
    }

    /// Pages of the image the kernel still holds dirty, not yet written back (msync mode,
    /// where the kernel can say: `cachestat`; `None` where it cannot or in other modes).
    pub fn unsynced_pages(&self) -> Result<Option<u64>> {
        self.media.unsynced_pages(0, self.media.len())
    }

    /// A byte copy of the whole image as it is now, for checking a mounted image offline
    /// (fsck of the copy). Not a consistent snapshot while operations run.
    pub fn copy_image(&self) -> Result<Vec<u8>> {
        let len = usize::try_from(self.media.len())
            .map_err(|_| Error::InvalidArgument("image larger than the address space".into()))?;
        let mut buf = vec![0u8; len];
        self.media.read(0, &mut buf)?;
        Ok(buf)
    }

    /// Inode-table chunk blocks.
    pub fn chunk_blocks(&self) -> Vec<u64> {
        self.chunks.read().clone()
    }

    /// Admit a mutating operation: the returned guard keeps unmount and crash from starting
    /// until the operation is done (they take the gate exclusively).
    pub(crate) fn writable(&self) -> Result<parking_lot::RwLockReadGuard<'_, ()>> {
        self.check_mounted()?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let guard = self.gate.read();
        self.check_mounted()?;
        Ok(guard)
    }

    /// `Unmounted` once the engine was unmounted (or crashed): every public call checks it,
    /// so handles and clones that outlive the unmount fail, reads included.
    pub fn check_mounted(&self) -> Result<()> {
        if self.mounted.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::Unmounted)
        }
    }

    fn shard(&self, ino: u64) -> &RwLock<InoMap<Arc<Inode>>> {
        &self.cache[shard_of(ino)]
    }

    pub(crate) fn slot_off(&self, ino: u64) -> Option<u64> {
        slot_offset(&self.chunks.read(), ino)
    }

    /// Put a new inode into the cache (its state built in place: no copy of it).
    pub(crate) fn cache_insert(&self, inode: Arc<Inode>) {
        self.shard(inode.ino).write().insert(inode.ino, inode);
    }

    /// Put the inodes a rebuild loaded into the cache, shard `k` by shard (each table sized once).
    pub(crate) fn cache_insert_shards(&self, shards: Vec<(usize, ShardList)>) {
        for (k, inodes) in shards {
            let mut shard = self.cache[k].write();
            shard.reserve(inodes.len());
            for (ino, inode) in inodes {
                debug_assert_eq!(shard_of(ino), k);
                shard.insert(ino, inode);
            }
        }
    }

    /// Whether block `block` is free in the allocator, as of now: for tools, tests and fault
    /// injection that must pick a block no inode holds.
    pub fn block_is_free(&self, block: u64) -> bool {
        self.blocks.is_free(block)
    }

    /// Where inode `ino` lives on the image, as of now (an owned snapshot taken under its
    /// shared lock): for tools, tests and fault injection that must find its log pages or
    /// blocks on the media.
    pub fn inode_layout(&self, ino: u64) -> Result<InodeLayout> {
        let i = self.inode(ino)?;
        let st = i.state.read();
        Ok(InodeLayout {
            ino,
            slot_off: i.slot_off,
            log_pages: st.log.pages.to_vec(),
            log_tail: st.log.tail_off,
            next_seq: st.log.next_seq,
            map: st.map.iter().collect(),
            cache_log_pages: st.cache().log.pages.to_vec(),
            cached: st.cache().map.iter().collect(),
        })
    }

    /// The attributes of an open inode (an unlinked one too, while a handle holds it).
    pub fn attr_of(&self, inode: &Inode) -> Result<Attr> {
        self.check_mounted()?;
        Ok(inode.state.read().attr())
    }

    /// Read up to `buf.len()` bytes at `off` of an open inode (an unlinked one too); returns
    /// the bytes read (0 at end of file). One consistent snapshot: a concurrent write is wholly
    /// in it or not.
    pub fn read_open(&self, inode: &Inode, off: u64, buf: &mut [u8]) -> Result<usize> {
        let st = inode.state.read();
        self.read_locked(&st, off, buf)
    }

    /// The cached inode `ino`, loading it from its log if needed. `Unmounted` after unmount.
    pub fn inode(&self, ino: u64) -> Result<Arc<Inode>> {
        self.check_mounted()?;
        self.load_inode(ino)
    }

    /// [`Engine::inode`] without the mounted check (unmount's own migrations).
    pub(crate) fn load_inode(&self, ino: u64) -> Result<Arc<Inode>> {
        if let Some(i) = self.shard(ino).read().get(&ino) {
            return Ok(i.clone());
        }
        if ino == 0 || self.inos.is_free(ino) {
            return Err(Error::NotFound);
        }
        let slot_off = self.slot_off(ino).ok_or(Error::NotFound)?;
        let st = crate::inode::load(&self.media, slot_off, ino, self.bounds())?;
        if let Err(e) = self.admit_blocks(ino, &st) {
            // Not damage when a concurrent load cached the inode and an operation changed it
            // meanwhile (an overwrite frees the blocks this older state maps), or when it was
            // freed meanwhile (kind word cleared).
            if let Some(i) = self.shard(ino).read().get(&ino) {
                return Ok(i.clone());
            }
            let kind_word = self.media.load_u64(slot_off + 16)?;
            return Err(if kind_word & 0xff == 0 {
                Error::NotFound
            } else {
                e
            });
        }
        if st.attr.kind == Kind::Dir {
            self.quarantine_dangling_names(&st);
        }
        if !st.cache().map.is_empty() {
            self.writeback.dirty.lock().insert(ino);
        }
        let log_pages: Vec<u64> = st
            .log
            .pages
            .iter()
            .chain(&st.cache().log.pages)
            .copied()
            .collect();
        // Nothing under the shard lock may be a loom scheduling point (it is a parking_lot
        // lock): the directory-name check takes only a parking_lot mutex.
        let mut shard = self.shard(ino).write();
        let mut inserted = false;
        let i = match shard.entry(ino) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                inserted = true;
                if st.attr.kind == Kind::Dir {
                    // Under the shard lock: no operation changed this directory since its
                    // log was read, so its names are current.
                    self.dir_names.note_loaded(ino, &st)?;
                }
                v.insert(Arc::new(Inode {
                    ino,
                    slot_off,
                    state: crate::sync::RwLock::new(st),
                    open: Default::default(),
                    last_store: Default::default(),
                }))
            }
        };
        let i = i.clone();
        drop(shard);
        if inserted {
            self.blocks.mark_log(&log_pages);
        }
        Ok(i)
    }

    /// A directory was loaded on the clean-mount fast path, where nothing checked that
    /// its names reach inodes in use: a name of an inode number the allocator holds free is
    /// damage (a corrupt entry). The number is taken out of the allocator, so that no new
    /// inode is ever reached through the stale name as well as its own (a file or directory
    /// named twice); the stale name reads as `NotFound` until fsck removes it. (A create in
    /// another directory that took the number before this directory was loaded is not seen
    /// here: DESIGN §5.8, damage only a rebuild or fsck sees.)
    fn quarantine_dangling_names(&self, st: &InodeState) {
        self.inos.take(st.dir.values().map(|e| e.ino));
    }

    /// Inodes currently cached.
    pub fn cached_inodes(&self) -> Vec<Arc<Inode>> {
        self.cache
            .iter()
            .flat_map(|s| s.read().values().cloned().collect::<Vec<_>>())
            .collect()
    }

    pub(crate) fn uncache(&self, ino: u64) {
        self.shard(ino).write().remove(&ino);
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let i = self.inode(ino)?;
        let st = i.state.read();
        if st.freed {
            return Err(Error::NotFound);
        }
        Ok(st.attr())
    }

    /// Look `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        let ent = self.lookup_ent(parent, name)?;
        self.getattr(ent.ino)
    }

    /// Look `name` up in `parent`, returning the directory entry only.
    pub fn lookup_ent(&self, parent: u64, name: &[u8]) -> Result<DirEnt> {
        if name.len() > NAME_MAX {
            return Err(Error::NameTooLong(name.len()));
        }
        let p = self.inode(parent)?;
        self.lookup_in(&p, name)
    }

    /// [`Engine::lookup_ent`] in directory `p`, already at hand (no second cache lookup).
    pub(crate) fn lookup_in(&self, p: &Inode, name: &[u8]) -> Result<DirEnt> {
        if name.len() > NAME_MAX {
            return Err(Error::NameTooLong(name.len()));
        }
        let st = p.state.read();
        if st.attr.kind != Kind::Dir {
            return Err(Error::NotADirectory);
        }
        if name == b"." {
            return Ok(DirEnt {
                ino: p.ino,
                kind: Kind::Dir,
                log_page: crate::inode::NO_OWNER,
            });
        }
        if name == b".." {
            return Ok(DirEnt {
                ino: st.parent,
                kind: Kind::Dir,
                log_page: crate::inode::NO_OWNER,
            });
        }
        st.dir.get(name).copied().ok_or(Error::NotFound)
    }

    /// Parent of directory `ino`.
    pub fn parent_of(&self, ino: u64) -> Result<u64> {
        Ok(self.inode(ino)?.state.read().parent)
    }

    /// The entries of directory `ino` (without `.` and `..`).
    pub fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let d = self.inode(ino)?;
        let st = d.state.read();
        if st.attr.kind != Kind::Dir {
            return Err(Error::NotADirectory);
        }
        Ok(st
            .dir
            .iter()
            .map(|(n, e)| DirEntry {
                name: n.to_vec(),
                ino: e.ino,
                kind: e.kind,
            })
            .collect())
    }

    // ----- inode-table growth -----

    pub(crate) fn alloc_ino(&self) -> Result<u64> {
        if let Some(i) = self.inos.alloc() {
            return Ok(i);
        }
        let _g = self.chunk_grow.lock();
        if let Some(i) = self.inos.alloc() {
            return Ok(i);
        }
        let idx = self.chunks.read().len() as u64;
        if idx >= self.superblock().max_chunks() {
            return Err(Error::NoInodes);
        }
        let block = self
            .blocks
            .alloc_contiguous(CHUNK_BLOCKS)
            .map_err(|e| match e {
                Error::NoSpace => Error::NoInodes,
                e => e,
            })?;
        let res = (|| {
            self.media.zero_nt(block * BLOCK, CHUNK_BLOCKS * BLOCK)?;
            self.media.fence();
            self.media.commit_u64(
                self.superblock().itable_map_start * BLOCK + idx * 8,
                crate::layout::itable_map::encode(idx, block),
            )
        })();
        if let Err(e) = res {
            self.blocks.free(block, CHUNK_BLOCKS);
            return Err(e);
        }
        self.chunks.write().push(block);
        self.inos
            .add_range(idx * INODES_PER_CHUNK, (idx + 1) * INODES_PER_CHUNK);
        self.inos.alloc().ok_or(Error::NoInodes)
    }

    /// A transaction on this engine's image, labelled `mark` in the crash harness's trace.
    pub(crate) fn txn(&self, mark: &'static str) -> Txn<'_> {
        Txn::new(
            Store {
                media: &self.media,
                blocks: Some(&self.blocks),
                inos: Some(&self.inos),
                journal: Some(&self.journal),
                bounds: self.bounds(),
            },
            mark,
        )
    }

    /// Apply the parts of a committed transaction that belong to inode `ino` (slot at
    /// `slot_off`, its write lock held), then let GC look at its log. Returns the blocks
    /// the entries replaced (the caller frees them).
    pub(crate) fn apply(
        &self,
        done: &mut Committed,
        ino: u64,
        slot_off: u64,
        st: &mut InodeState,
    ) -> crate::txn::Freed {
        let old_size = st.attr.size;
        let applied = done.apply(&self.blocks, ino, st);
        if applied.appended {
            self.appended(
                ino,
                slot_off,
                st,
                &applied.entries,
                old_size,
                &applied.freed,
            );
        }
        applied.freed
    }

    /// What follows an applied append of `entries` to inode `ino`'s log (its size was
    /// `old_size`; `freed` are the blocks the entries replaced, not freed yet): mapped pages
    /// the entries changed are refreshed before the caller frees those blocks (DESIGN
    /// §5.4.1), a directory's name index learns the names, and GC looks at the log.
    pub(crate) fn appended(
        &self,
        ino: u64,
        slot_off: u64,
        st: &mut InodeState,
        entries: &[Entry],
        old_size: u64,
        freed: &[u64],
    ) {
        self.maps_refresh_applied(ino, st, entries, old_size, freed);
        if !freed.is_empty() {
            // Blocks about to be freed (and reused, by non-temporal stores too) must hold no
            // line of an unflushed redo write: its write-back could land after the new data.
            let _ = crate::txn::flush_unflushed(&self.media, &mut st.unflushed);
        }
        if st.attr.kind == Kind::Dir {
            self.dir_names.note_applied(ino, entries);
        }
        self.gc_after(slot_off, st, ino);
    }

    /// Release the blocks and slot of an inode whose last link and handle are gone.
    pub(crate) fn free_inode(&self, inode: &Inode, st: &mut InodeState) -> Result<()> {
        if st.freed {
            return Ok(());
        }
        // Before its blocks go back to the allocator (see `appended`).
        crate::txn::flush_unflushed(&self.media, &mut st.unflushed)?;
        st.freed = true;
        for b in st.map.values() {
            self.blocks.free(b, 1);
        }
        for &p in &st.log.pages {
            self.blocks.free_log(p);
        }
        for b in st.cache().map.values() {
            self.blocks.free(b, 1);
        }
        for &p in &st.cache().log.pages {
            self.blocks.free_log(p);
        }
        st.map.clear();
        // Only an inode with a write cache is in the writeback set (attached pages, or a
        // loaded cache, put it there; the reset that drops the cache takes it out): most
        // frees take no lock shared by every inode.
        let had_cache = st.wc.is_some();
        st.drop_cache();
        inode.forget_last_store();
        st.log = crate::inode::LogState::default();
        if had_cache {
            self.writeback.dirty.lock().remove(&inode.ino);
        }
        // Mark the slot free (kind word = 0). Not a commit: after a crash, reachability from
        // the root decides which slots are live; this only keeps fsck's view tidy. Its flush
        // waits for a batch (or the clean unmount): a flush here made the next lock
        // instruction (the cache shard's, just below) wait for the line's write-back, ~200 ns
        // of a ~1 µs unlink.
        self.media.store_u64(inode.slot_off + 16, 0)?;
        self.note_freed_slot(inode.slot_off + 16)?;
        self.uncache(inode.ino);
        self.inos.free(inode.ino);
        Ok(())
    }

    /// Remember the kind word at `off`, cleared and not flushed; flush the batch when it is
    /// full (outside the list's lock: a lock instruction waits for pending write-backs).
    fn note_freed_slot(&self, off: u64) -> Result<()> {
        let batch = {
            let mut l = self.freed_slots.lock();
            l.push(off);
            if l.len() < FREED_SLOTS_BATCH {
                return Ok(());
            }
            std::mem::replace(&mut *l, Vec::with_capacity(FREED_SLOTS_BATCH))
        };
        for off in batch {
            self.media.flush(off, 8)?;
        }
        Ok(())
    }

    /// Flush every cleared kind word not flushed yet (the caller fences: a clean unmount).
    pub(crate) fn flush_freed_slots(&self) -> Result<()> {
        for off in std::mem::take(&mut *self.freed_slots.lock()) {
            self.media.flush(off, 8)?;
        }
        Ok(())
    }

    // ----- open handles -----

    /// Count an open handle on `ino` (an unlinked inode stays until the last one closes). An
    /// unlinked inode that is still held (open, or referenced by the kernel through the FUSE
    /// mount) can gain handles; a freed one is `NotFound`.
    pub fn open_inode(&self, ino: u64) -> Result<Arc<Inode>> {
        let i = self.inode(ino)?;
        {
            let st = i.state.read();
            if st.freed {
                return Err(Error::NotFound);
            }
            i.open.fetch_add(1, Ordering::AcqRel);
        }
        Ok(i)
    }

    /// Drop an open handle; frees the inode if it was the last reference.
    pub fn release_inode(&self, inode: &Inode) -> Result<()> {
        if inode.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut st = inode.state.write();
            // After a crash (or unmount) nothing more is written: recovery reclaims orphans.
            if st.removed
                && inode.open.load(Ordering::Acquire) == 0
                && !self.read_only
                && self.mounted.load(Ordering::Acquire)
            {
                self.free_inode(inode, &mut st)?;
            }
        }
        Ok(())
    }

    /// Free inodes that were unlinked while open (at unmount).
    pub(crate) fn free_orphans(&self) -> Result<()> {
        for i in self.cached_inodes() {
            let mut st = i.state.write();
            if st.removed && !st.freed {
                self.free_inode(&i, &mut st)?;
            }
        }
        Ok(())
    }

    /// Make everything durable: operations already are; this also migrates every MAP_SYNC
    /// write cache (like msync of every mapping; failure-atomic caches wait for their owner's
    /// sync), fences, and msyncs in Msync mode.
    pub fn sync(&self) -> Result<()> {
        if !self.read_only {
            // Under the operation gate: unmount and crash wait for these migrations (they
            // allocate and free blocks) before saving or dropping the allocator state.
            let _op = self.gate.read();
            if self.mounted.load(Ordering::Acquire) {
                // Failure-atomic caches are committed only by their owner's sync.
                self.migrate_all(false)?;
            }
        }
        self.media.sync_all()
    }

    /// Fence (and msync in Msync mode) without migrating any write cache.
    pub fn sync_media(&self) -> Result<()> {
        self.check_mounted()?;
        self.media.sync_all()
    }

    /// File-system-wide counts.
    pub fn statfs(&self) -> StatFs {
        let chunks = self.chunks.read().len() as u64;
        let free_inos = self.inos.free_count();
        let blocks_free = self.blocks.free_blocks();
        let growable = (self.superblock().max_chunks() - chunks).min(blocks_free / CHUNK_BLOCKS);
        let inodes_free = free_inos + growable * INODES_PER_CHUNK;
        let inodes_used = (chunks * INODES_PER_CHUNK).saturating_sub(free_inos + 1);
        StatFs {
            block_size: BLOCK,
            blocks_total: self.superblock().blocks_total,
            blocks_free,
            blocks_avail: blocks_free.saturating_sub(self.blocks.reserve()),
            inodes_total: inodes_used + inodes_free,
            inodes_free,
            name_max: NAME_MAX as u64,
        }
    }
}

/// What the loom model checks (`engine/tests/loom_publish.rs`, built with `--cfg loom` only)
/// look at: the engine's internals, which the normal API keeps private.
#[cfg(loom)]
impl Engine {
    /// The media.
    pub fn loom_media(&self) -> &Arc<Media> {
        &self.media
    }

    /// The block allocator.
    pub fn loom_block_alloc(&self) -> &BlockAlloc {
        &self.blocks
    }

    /// Read from an inode whose state the caller has locked.
    pub fn loom_read_locked(&self, st: &InodeState, off: u64, buf: &mut [u8]) -> Result<usize> {
        self.read_locked(st, off, buf)
    }
}

#[cfg(loom)]
impl Inode {
    /// The inode's state lock.
    pub fn loom_state(&self) -> &crate::sync::RwLock<InodeState> {
        &self.state
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_writeback();
        // A forgotten unmount is still a clean unmount; `crash` skips this.
        if self.mounted.load(Ordering::Acquire) {
            let _ = self.unmount();
        }
    }
}
