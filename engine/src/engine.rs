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
use crate::bugs::{self, Bug};
use crate::error::{Error, Result};
use crate::inode::{slot_offset, Attr, Bounds, DirEnt, Inode, InodeLayout, InodeState};
use crate::journal::Journal;
use crate::layout::entry::{attr_mask, Entry, SetAttrEntry};
use crate::layout::inode::{InodeSlot, NewInode};
use crate::layout::superblock::Superblock;
use crate::layout::{now_ns, Kind, BLOCK, CHUNK_BLOCKS, INODES_PER_CHUNK, NAME_MAX};
use crate::media::{Media, MediaMode};
use crate::sync::RwLockWriteGuard;
use crate::txn::{Committed, Page, Store, Txn};

pub use crate::layout::MAX_FILE_PAGES;
/// Most hard links to one file.
pub const MAX_LINKS: u32 = 65_000;

const CACHE_SHARDS: usize = 64;

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
    pub(crate) sb: Superblock,
    pub(crate) blocks: BlockAlloc,
    pub(crate) inos: InodeAlloc,
    pub(crate) chunks: RwLock<Vec<u64>>,
    chunk_grow: Mutex<()>,
    cache: Vec<RwLock<InoMap<Arc<Inode>>>>,
    pub(crate) journal: Journal,
    rename_lock: Mutex<()>,
    pub(crate) read_only: bool,
    pub(crate) mounted: AtomicBool,
    pub(crate) writeback: crate::cache::Writeback,
    pub(crate) gc: crate::gc::Gc,
    /// Mutating operations hold it shared; unmount and crash exclusively.
    pub(crate) gate: RwLock<()>,
    /// Which loaded directory names each subdirectory (a second name is `Corrupt`).
    pub(crate) dir_names: crate::admit::DirNames,
    /// Live direct-access mappings per inode (`mapping.rs`).
    pub(crate) maps: crate::mapping::MapTable,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("media", &self.media)
            .field("blocks_total", &self.sb.blocks_total)
            .finish()
    }
}

/// What [`Engine::clear_range`] leaves in whole pages of its range.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clear {
    /// Holes (`punch_hole`; the range stops at the end of the file).
    Punch,
    /// Zero-filled blocks (`zero_range`).
    Zero {
        /// The range stops at the end of the file, which keeps its size.
        keep_size: bool,
    },
}

/// Validate one name.
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidPath("empty name".into()));
    }
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong(name.len()));
    }
    if name == b"." || name == b".." {
        return Err(Error::InvalidPath(
            "'.' and '..' cannot be created or removed".into(),
        ));
    }
    if name.iter().any(|&b| b == 0 || b == b'/') {
        return Err(Error::InvalidPath("names cannot contain '/' or NUL".into()));
    }
    Ok(())
}

/// `data` as whole pages from page 0: full pages borrowed, the last partial one padded with
/// zeros (bytes past the end of file are always zero).
fn content_pages(data: &[u8]) -> Vec<(u64, Page<'_>)> {
    data.chunks(BLOCK as usize)
        .enumerate()
        .map(|(pg, c)| {
            let page = if c.len() == BLOCK as usize {
                Page::Borrowed(c)
            } else {
                let mut buf = vec![0u8; BLOCK as usize];
                buf[..c.len()].copy_from_slice(c);
                Page::Owned(buf)
            };
            (pg as u64, page)
        })
        .collect()
}

/// Locks on several inodes, taken in inode order.
struct Locked<'a> {
    guards: Vec<(u64, RwLockWriteGuard<'a, InodeState>)>,
}

impl<'a> Locked<'a> {
    fn new(inodes: &'a [Arc<Inode>]) -> Locked<'a> {
        let mut refs: Vec<&'a Arc<Inode>> = inodes.iter().collect();
        refs.sort_by_key(|i| i.ino);
        refs.dedup_by_key(|i| i.ino);
        Locked {
            guards: refs.into_iter().map(|i| (i.ino, i.state.write())).collect(),
        }
    }

    fn get(&mut self, ino: u64) -> &mut InodeState {
        let i = self
            .guards
            .iter()
            .position(|(n, _)| *n == ino)
            .expect("inode locked");
        &mut self.guards[i].1
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
            sb,
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
            gate: RwLock::new(()),
            dir_names: Default::default(),
            maps: Default::default(),
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

    /// The persistence path in use.
    pub fn media_mode(&self) -> MediaMode {
        self.media.mode()
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
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
        let mut buf = vec![0u8; usize::try_from(self.media.len()).map_err(|_| Error::NoSpace)?];
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
        let guard = self.gate.read_recursive();
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
        &self.cache[(ino as usize) % CACHE_SHARDS]
    }

    pub(crate) fn slot_off(&self, ino: u64) -> Option<u64> {
        slot_offset(&self.chunks.read(), ino)
    }

    /// Put a loaded inode into the cache (recovery).
    pub(crate) fn cache_insert(&self, ino: u64, st: InodeState) -> Result<Arc<Inode>> {
        let slot_off = self.slot_off(ino).ok_or(Error::NotFound)?;
        let inode = Arc::new(Inode {
            ino,
            slot_off,
            state: crate::sync::RwLock::new(st),
            open: Default::default(),
            last_store: Default::default(),
        });
        self.shard(ino).write().insert(ino, inode.clone());
        Ok(inode)
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
            log_pages: st.log.pages.clone(),
            log_tail: st.log.tail_off,
            next_seq: st.log.next_seq,
            map: st.map.iter().map(|(&p, &b)| (p, b)).collect(),
            cache_log_pages: st.cache_log.pages.clone(),
            cached: st.cache.iter().collect(),
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
        let st = crate::inode::load(&self.media, slot_off, ino, Bounds::of(&self.sb))?;
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
        if !st.cache.is_empty() {
            self.writeback.dirty.lock().insert(ino);
        }
        // Nothing under the shard lock may be a loom scheduling point (it is a parking_lot
        // lock): the directory-name check takes only a parking_lot mutex.
        let mut shard = self.shard(ino).write();
        let i = match shard.entry(ino) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
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
        Ok(i.clone())
    }

    /// Inodes currently cached.
    pub fn cached_inodes(&self) -> Vec<Arc<Inode>> {
        self.cache
            .iter()
            .flat_map(|s| s.read().values().cloned().collect::<Vec<_>>())
            .collect()
    }

    fn uncache(&self, ino: u64) {
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
        let st = p.state.read();
        if st.attr.kind != Kind::Dir {
            return Err(Error::NotADirectory);
        }
        if name == b"." {
            return Ok(DirEnt {
                ino: parent,
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

    fn alloc_ino(&self) -> Result<u64> {
        if let Some(i) = self.inos.alloc() {
            return Ok(i);
        }
        let _g = self.chunk_grow.lock();
        if let Some(i) = self.inos.alloc() {
            return Ok(i);
        }
        let idx = self.chunks.read().len() as u64;
        if idx >= self.sb.max_chunks() {
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
                self.sb.itable_map_start * BLOCK + idx * 8,
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

    // ----- namespace operations -----

    /// Create a regular file.
    pub fn create(&self, parent: u64, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.make_node(parent, name, (Kind::File, 0), mode, uid, gid, None)
    }

    /// Create a FIFO, socket, or character or block device node (`rdev`: its device number,
    /// Linux `dev_t` encoding; 0 for FIFOs and sockets). Such an inode has attributes and no
    /// data. On a format-1 image mounted read-only: `ReadOnly`, as every change.
    #[allow(clippy::too_many_arguments)]
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        kind: Kind,
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
    ) -> Result<Attr> {
        if !kind.is_special() {
            return Err(Error::InvalidArgument(
                "mknod makes FIFOs, sockets and device nodes".into(),
            ));
        }
        if rdev != 0 && !kind.is_device() {
            return Err(Error::InvalidArgument(
                "only device nodes have a device number".into(),
            ));
        }
        if rdev > u64::from(u32::MAX) {
            return Err(Error::InvalidArgument(
                "device number beyond Linux's 32-bit encoding".into(),
            ));
        }
        self.make_node(parent, name, (kind, rdev), mode, uid, gid, None)
    }

    /// Create a regular file holding `data`, in one commit: after a crash the name is absent,
    /// or present with all of `data` (never empty or partly written). `AlreadyExists` if the
    /// name is taken.
    pub fn create_with(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        owner: (u32, u32),
        data: &[u8],
    ) -> Result<Attr> {
        if data.len() as u64 > MAX_FILE_PAGES * BLOCK {
            return Err(Error::FileTooLarge);
        }
        let (uid, gid) = owner;
        self.make_node(parent, name, (Kind::File, 0), mode, uid, gid, Some(data))
    }

    /// Create a directory.
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.make_node(parent, name, (Kind::Dir, 0), mode, uid, gid, None)
    }

    /// Create a symbolic link to `target`.
    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        if target.is_empty() || target.len() > BLOCK as usize || target.contains(&0) {
            return Err(Error::InvalidArgument(
                "symlink target must be 1..4096 bytes without NUL".into(),
            ));
        }
        self.make_node(
            parent,
            name,
            (Kind::Symlink, 0),
            0o777,
            uid,
            gid,
            Some(target),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn make_node(
        &self,
        parent: u64,
        name: &[u8],
        (kind, rdev): (Kind, u64),
        mode: u32,
        uid: u32,
        gid: u32,
        content: Option<&[u8]>,
    ) -> Result<Attr> {
        check_name(name)?;
        let _op = self.writable()?;
        let p = self.inode(parent)?;
        let mut ps = p.state.write();
        if ps.attr.kind != Kind::Dir {
            return Err(Error::NotADirectory);
        }
        if ps.removed {
            return Err(Error::NotFound);
        }
        if ps.dir.contains_key(name) {
            return Err(Error::AlreadyExists);
        }
        if kind == Kind::Dir && ps.attr.nlink >= MAX_LINKS {
            return Err(Error::TooManyLinks);
        }
        let mut txn = self.txn("create");
        let ino = self.alloc_ino()?;
        txn.alloc_ino(ino);
        let slot_off = self.slot_off(ino).ok_or(Error::NoInodes)?;
        let old: InodeSlot = self.media.read_pod(slot_off)?;
        let now = now_ns();
        // A directory's default ACL is inherited (POSIX `posix_acl_create`), in this commit.
        let (inherit, mode) = crate::xattr::inherit_acl(&ps.xattrs, kind, mode);
        let mut slot = InodeSlot::fresh(NewInode {
            kind,
            generation: old.generation.wrapping_add(1),
            mode,
            uid,
            gid,
            parent,
            ctime_ns: now,
            rdev,
        });
        let mut child = InodeState::new(ino, &slot, kind);
        // The new inode's log is prepared before anything names it: the parent's commit
        // makes the inode and its contents (and inherited ACLs) visible together (one tail
        // store: the child's log is reached only through the parent's new entry).
        let mut entries = Vec::new();
        if let Some(data) = content.filter(|d| !d.is_empty()) {
            txn.write_pages(
                &child.map,
                &content_pages(data),
                data.len() as u64,
                now,
                &mut entries,
            )?;
        }
        for (n, v) in &inherit {
            entries.extend(crate::layout::entry::xattr_set_entries(n, v, now));
        }
        if !entries.is_empty() {
            (slot.log_head, slot.log_tail) = txn.new_log(ino, slot_off, &child, entries)?;
        }
        // The whole slot, including head and tail for a prepared log.
        if bugs::active(Bug::NoInodeSlotFlush) {
            self.media.write(slot_off, bytemuck::bytes_of(&slot))?;
        } else {
            self.media
                .write_flush(slot_off, bytemuck::bytes_of(&slot))?;
        }
        let pe = Entry::DirAdd {
            ino,
            kind,
            name: name.to_vec(),
            mtime_ns: now,
        };
        txn.append(parent, p.slot_off, &ps, vec![pe])?;
        let mut done = txn.commit()?;
        self.apply(&mut done, parent, p.slot_off, &mut ps);
        let _ = done.apply(&self.blocks, ino, &mut child);
        let attr = child.attr();
        self.cache_insert(ino, child)?;
        Ok(attr)
    }

    /// A transaction on this engine's image, labelled `mark` in the crash harness's trace.
    pub(crate) fn txn(&self, mark: &'static str) -> Txn<'_> {
        Txn::new(
            Store {
                media: &self.media,
                blocks: &self.blocks,
                inos: Some(&self.inos),
                journal: Some(&self.journal),
                bounds: Bounds::of(&self.sb),
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
    ) -> Vec<u64> {
        let old_size = st.attr.size;
        let applied = done.apply(&self.blocks, ino, st);
        if applied.appended {
            // Mapped pages the entries changed, before the caller frees what they replaced
            // (DESIGN §5.4.1).
            self.maps_refresh_applied(ino, st, &applied.entries, old_size, &applied.freed);
            if st.attr.kind == Kind::Dir {
                self.dir_names.note_applied(ino, &applied.entries);
            }
            self.gc_after(slot_off, st, ino);
        }
        applied.freed
    }

    /// Release the blocks and slot of an inode whose last link and handle are gone.
    fn free_inode(&self, inode: &Inode, st: &mut InodeState) -> Result<()> {
        if st.freed {
            return Ok(());
        }
        st.freed = true;
        for &b in st.map.values() {
            self.blocks.free(b, 1);
        }
        for &p in &st.log.pages {
            self.blocks.free(p, 1);
        }
        for b in st.cache.values() {
            self.blocks.free(b, 1);
        }
        for &p in &st.cache_log.pages {
            self.blocks.free(p, 1);
        }
        st.map.clear();
        st.cache.clear();
        inode.forget_last_store();
        st.log = crate::inode::LogState::default();
        st.cache_log = crate::inode::LogState::default();
        self.writeback.dirty.lock().remove(&inode.ino);
        // Mark the slot free (kind word = 0). Not a commit: after a crash, reachability from
        // the root decides which slots are live; this only keeps fsck's view tidy.
        self.media.store_u64(inode.slot_off + 16, 0)?;
        self.media.flush(inode.slot_off + 16, 8)?;
        self.uncache(inode.ino);
        self.inos.free(inode.ino);
        Ok(())
    }

    /// Remove the name of a non-directory.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.remove(parent, name, false)
    }

    /// Remove an empty directory.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &[u8], dir: bool) -> Result<()> {
        check_name(name)?;
        let _op = self.writable()?;
        loop {
            let ent = self.lookup_ent(parent, name)?;
            match (dir, ent.kind == Kind::Dir) {
                (false, true) => return Err(Error::IsADirectory),
                (true, false) => return Err(Error::NotADirectory),
                _ => {}
            }
            let inodes = [self.inode(parent)?, self.inode(ent.ino)?];
            let mut l = Locked::new(&inodes);
            if l.get(parent).dir.get(name) != Some(&ent) {
                continue; // changed under us; retry
            }
            let now = now_ns();
            let cs = l.get(ent.ino);
            if cs.attr.kind != ent.kind {
                // The fast path trusts the logs: never free an inode of another kind than
                // the name says (a directory's children would be lost).
                return Err(Error::corrupt(
                    "directory entry kind differs from the inode's",
                    format!("inode {} (named in directory {parent})", ent.ino),
                ));
            }
            if dir && !cs.dir.is_empty() {
                return Err(Error::DirectoryNotEmpty);
            }
            if dir && cs.parent != parent {
                // A directory named by a second directory: freeing it would leave the name
                // its real parent holds pointing at a free inode.
                return Err(Error::corrupt(
                    "directory named outside its parent (a directory hard link)",
                    format!(
                        "inode {} (named in directory {parent}, parent {})",
                        ent.ino, cs.parent
                    ),
                ));
            }
            let child_entries = if !dir && cs.attr.nlink > 1 {
                vec![Entry::Link {
                    nlink: cs.attr.nlink - 1,
                    ctime_ns: now,
                    parent: 0,
                }]
            } else {
                vec![]
            };
            let pe = vec![Entry::DirRemove {
                ino: ent.ino,
                name: name.to_vec(),
                mtime_ns: now,
            }];
            let last_link = dir || child_entries.is_empty();
            // Removing frees space: it may use the reserve.
            let mut txn = self.txn("remove").frees_space(true);
            txn.append(parent, inodes[0].slot_off, l.get(parent), pe)?;
            txn.append(ent.ino, inodes[1].slot_off, l.get(ent.ino), child_entries)?;
            let mut done = txn.commit()?;
            self.apply(&mut done, parent, inodes[0].slot_off, l.get(parent));
            self.apply(&mut done, ent.ino, inodes[1].slot_off, l.get(ent.ino));
            let cs = l.get(ent.ino);
            if last_link {
                cs.attr.nlink = 0;
                cs.removed = true;
                cs.attr.ctime_ns = now;
                if inodes[1].open.load(Ordering::Acquire) == 0 {
                    self.free_inode(&inodes[1], cs)?;
                }
            }
            return Ok(());
        }
    }

    /// Add a hard link `new_parent/new_name` to `ino`.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> Result<Attr> {
        check_name(new_name)?;
        let _op = self.writable()?;
        let inodes = [self.inode(new_parent)?, self.inode(ino)?];
        let mut l = Locked::new(&inodes);
        {
            let ps = l.get(new_parent);
            if ps.attr.kind != Kind::Dir {
                return Err(Error::NotADirectory);
            }
            if ps.removed {
                return Err(Error::NotFound);
            }
            if ps.dir.contains_key(new_name) {
                return Err(Error::AlreadyExists);
            }
        }
        let cs = l.get(ino);
        if cs.attr.kind == Kind::Dir {
            return Err(Error::NotPermitted("hard links to directories"));
        }
        if cs.removed || cs.freed {
            return Err(Error::NotFound);
        }
        if cs.attr.nlink >= MAX_LINKS {
            return Err(Error::TooManyLinks);
        }
        let now = now_ns();
        let kind = cs.attr.kind;
        let ce = vec![Entry::Link {
            nlink: cs.attr.nlink + 1,
            ctime_ns: now,
            parent: 0,
        }];
        let pe = vec![Entry::DirAdd {
            ino,
            kind,
            name: new_name.to_vec(),
            mtime_ns: now,
        }];
        let mut txn = self.txn("link");
        txn.append(new_parent, inodes[0].slot_off, l.get(new_parent), pe)?;
        txn.append(ino, inodes[1].slot_off, l.get(ino), ce)?;
        let mut done = txn.commit()?;
        self.apply(&mut done, new_parent, inodes[0].slot_off, l.get(new_parent));
        self.apply(&mut done, ino, inodes[1].slot_off, l.get(ino));
        Ok(l.get(ino).attr())
    }

    /// Rename `src_parent/src_name` to `dst_parent/dst_name` (POSIX rules).
    pub fn rename(
        &self,
        src_parent: u64,
        src_name: &[u8],
        dst_parent: u64,
        dst_name: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        check_name(src_name)?;
        check_name(dst_name)?;
        if flags.exchange && flags.noreplace {
            return Err(Error::InvalidArgument(
                "exchange and noreplace together".into(),
            ));
        }
        let _op = self.writable()?;
        let _rename = self.rename_lock.lock();
        if flags.exchange {
            return self.exchange(src_parent, src_name, dst_parent, dst_name);
        }
        loop {
            let src = self.lookup_ent(src_parent, src_name)?;
            let dst = match self.lookup_ent(dst_parent, dst_name) {
                Ok(d) => Some(d),
                Err(Error::NotFound) => None,
                Err(e) => return Err(e),
            };
            if let Some(d) = dst {
                if d.ino == src.ino {
                    return Ok(()); // both names link the same inode: POSIX says do nothing
                }
                if flags.noreplace {
                    return Err(Error::AlreadyExists);
                }
                match (src.kind == Kind::Dir, d.kind == Kind::Dir) {
                    (true, false) => return Err(Error::NotADirectory),
                    (false, true) => return Err(Error::IsADirectory),
                    _ => {}
                }
            }
            // The destination must not be the moved directory or inside it.
            if src.kind == Kind::Dir
                && src_parent != dst_parent
                && self.within(dst_parent, src.ino)?
            {
                return Err(Error::RenameIntoSelf);
            }
            let mut inodes = vec![self.inode(src_parent)?, self.inode(src.ino)?];
            if dst_parent != src_parent {
                inodes.push(self.inode(dst_parent)?);
            }
            if let Some(d) = dst {
                inodes.push(self.inode(d.ino)?);
            }
            let mut l = Locked::new(&inodes);
            if l.get(src_parent).dir.get(src_name) != Some(&src)
                || l.get(dst_parent).dir.get(dst_name).copied() != dst
            {
                continue;
            }
            if l.get(dst_parent).removed {
                return Err(Error::NotFound);
            }
            if let Some(d) = dst {
                if d.kind == Kind::Dir && !l.get(d.ino).dir.is_empty() {
                    return Err(Error::DirectoryNotEmpty);
                }
            }
            let now = now_ns();
            let remove_src = Entry::DirRemove {
                ino: src.ino,
                name: src_name.to_vec(),
                mtime_ns: now,
            };
            let add_dst = Entry::DirAdd {
                ino: src.ino,
                kind: src.kind,
                name: dst_name.to_vec(),
                mtime_ns: now,
            };
            let mut dst_entries = Vec::new();
            if let Some(d) = dst {
                dst_entries.push(Entry::DirRemove {
                    ino: d.ino,
                    name: dst_name.to_vec(),
                    mtime_ns: now,
                });
            }
            dst_entries.push(add_dst);
            let (src_entries, dst_entries) = if src_parent == dst_parent {
                let mut v = vec![remove_src];
                v.extend(dst_entries);
                (v, Vec::new())
            } else {
                (vec![remove_src], dst_entries)
            };
            // The moved inode's ctime changes (as on ext4 and tmpfs); a directory that changes
            // parent records the new one.
            let moved_entries = vec![Entry::Link {
                nlink: l.get(src.ino).attr.nlink,
                ctime_ns: now,
                parent: if src.kind == Kind::Dir && src_parent != dst_parent {
                    dst_parent
                } else {
                    0
                },
            }];
            let victim_gone = match dst {
                Some(d) => d.kind == Kind::Dir || l.get(d.ino).attr.nlink <= 1,
                None => false,
            };
            let victim_entries = match dst {
                Some(d) if d.kind != Kind::Dir && l.get(d.ino).attr.nlink > 1 => {
                    vec![Entry::Link {
                        nlink: l.get(d.ino).attr.nlink - 1,
                        ctime_ns: now,
                        parent: 0,
                    }]
                }
                _ => vec![],
            };
            let mut plan: Vec<(u64, Vec<Entry>)> = vec![(src_parent, src_entries)];
            if src_parent != dst_parent {
                plan.push((dst_parent, dst_entries));
            }
            plan.push((src.ino, moved_entries));
            if let Some(d) = dst {
                plan.push((d.ino, victim_entries));
            }
            // Only a rename that frees its victim may dip into the reserve: a plain move on a
            // full image fails with NoSpace.
            self.commit_locked(&mut l, &inodes, plan, victim_gone, "rename")?;
            if let Some(d) = dst {
                let vs = l.get(d.ino);
                if victim_gone {
                    vs.attr.nlink = 0;
                    vs.removed = true;
                    let victim = inodes.iter().find(|i| i.ino == d.ino).expect("locked");
                    if victim.open.load(Ordering::Acquire) == 0 {
                        self.free_inode(victim, vs)?;
                    }
                }
            }
            return Ok(());
        }
    }

    /// Whether directory `dir` is `ancestor` or lies inside it (the rename lock held).
    fn within(&self, dir: u64, ancestor: u64) -> Result<bool> {
        let mut cur = dir;
        let mut hops = 0u64;
        // A parent chain longer than the inode table holds inodes is a cycle.
        let max_hops = self.chunks.read().len() as u64 * INODES_PER_CHUNK;
        loop {
            if cur == ancestor {
                return Ok(true);
            }
            if cur == crate::layout::ROOT_INO {
                return Ok(false);
            }
            cur = self.parent_of(cur)?;
            hops += 1;
            if hops > max_hops {
                return Err(Error::corrupt("directory cycle", format!("inode {dir}")));
            }
        }
    }

    /// `RENAME_EXCHANGE`: swap what two names point at, in one journaled commit (the rename
    /// lock and the operation gate held).
    fn exchange(
        &self,
        src_parent: u64,
        src_name: &[u8],
        dst_parent: u64,
        dst_name: &[u8],
    ) -> Result<()> {
        loop {
            let src = self.lookup_ent(src_parent, src_name)?;
            let dst = self.lookup_ent(dst_parent, dst_name)?;
            if src.ino == dst.ino {
                return Ok(());
            }
            if src_parent != dst_parent
                && ((src.kind == Kind::Dir && self.within(dst_parent, src.ino)?)
                    || (dst.kind == Kind::Dir && self.within(src_parent, dst.ino)?))
            {
                return Err(Error::RenameIntoSelf);
            }
            let mut inodes = vec![
                self.inode(src_parent)?,
                self.inode(src.ino)?,
                self.inode(dst.ino)?,
            ];
            if dst_parent != src_parent {
                inodes.push(self.inode(dst_parent)?);
            }
            let mut l = Locked::new(&inodes);
            if l.get(src_parent).dir.get(src_name) != Some(&src)
                || l.get(dst_parent).dir.get(dst_name) != Some(&dst)
            {
                continue;
            }
            let cross = src_parent != dst_parent;
            // A parent that trades a non-directory for a directory gains a link.
            let gains_dir = |to: &DirEnt, from: &DirEnt| {
                cross && to.kind == Kind::Dir && from.kind != Kind::Dir
            };
            if (gains_dir(&dst, &src) && l.get(src_parent).attr.nlink >= MAX_LINKS)
                || (gains_dir(&src, &dst) && l.get(dst_parent).attr.nlink >= MAX_LINKS)
            {
                return Err(Error::TooManyLinks);
            }
            let now = now_ns();
            let remove = |e: &DirEnt, name: &[u8]| Entry::DirRemove {
                ino: e.ino,
                name: name.to_vec(),
                mtime_ns: now,
            };
            let add = |e: &DirEnt, name: &[u8]| Entry::DirAdd {
                ino: e.ino,
                kind: e.kind,
                name: name.to_vec(),
                mtime_ns: now,
            };
            let mut plan: Vec<(u64, Vec<Entry>)> = if cross {
                vec![
                    (
                        src_parent,
                        vec![remove(&src, src_name), add(&dst, src_name)],
                    ),
                    (
                        dst_parent,
                        vec![remove(&dst, dst_name), add(&src, dst_name)],
                    ),
                ]
            } else {
                vec![(
                    src_parent,
                    vec![
                        remove(&src, src_name),
                        remove(&dst, dst_name),
                        add(&dst, src_name),
                        add(&src, dst_name),
                    ],
                )]
            };
            // Both inodes change ctime; a directory that changes parent records it.
            for (e, new_parent) in [(&src, dst_parent), (&dst, src_parent)] {
                let nlink = l.get(e.ino).attr.nlink;
                plan.push((
                    e.ino,
                    vec![Entry::Link {
                        nlink,
                        ctime_ns: now,
                        parent: if e.kind == Kind::Dir && cross {
                            new_parent
                        } else {
                            0
                        },
                    }],
                ));
            }
            return self.commit_locked(&mut l, &inodes, plan, false, "exchange");
        }
    }

    /// Prepare each locked inode's entries of `plan` (empty lists add nothing), commit them
    /// together (journaled when several) and apply them.
    fn commit_locked(
        &self,
        l: &mut Locked<'_>,
        inodes: &[Arc<Inode>],
        plan: Vec<(u64, Vec<Entry>)>,
        frees_space: bool,
        mark: &'static str,
    ) -> Result<()> {
        let slot_of = |ino: u64| {
            inodes
                .iter()
                .find(|i| i.ino == ino)
                .map(|i| i.slot_off)
                .expect("locked")
        };
        let mut txn = self.txn(mark).frees_space(frees_space);
        let mut touched = Vec::with_capacity(plan.len());
        for (ino, entries) in plan {
            txn.append(ino, slot_of(ino), l.get(ino), entries)?;
            touched.push(ino);
        }
        let mut done = txn.commit()?;
        for ino in touched {
            self.apply(&mut done, ino, slot_of(ino), l.get(ino));
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

    // ----- data -----

    /// Read up to `buf.len()` bytes at `off`; returns the bytes read (0 at end of file).
    pub fn read(&self, ino: u64, off: u64, buf: &mut [u8]) -> Result<usize> {
        let i = self.inode(ino)?;
        let st = i.state.read();
        self.read_locked(&st, off, buf)
    }

    /// Read from an inode whose state the caller has locked.
    pub(crate) fn read_locked(&self, st: &InodeState, off: u64, buf: &mut [u8]) -> Result<usize> {
        self.check_mounted()?;
        if st.attr.kind == Kind::Dir {
            return Err(Error::IsADirectory);
        }
        if off >= st.attr.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(st.attr.size - off) as usize;
        let mut done = 0usize;
        while done < n {
            let pos = off + done as u64;
            let pg = pos / BLOCK;
            let in_pg = (pos % BLOCK) as usize;
            let chunk = (BLOCK as usize - in_pg).min(n - done);
            let dst = &mut buf[done..done + chunk];
            // The write cache holds the newest copy of a page written through a mapping.
            match st.cache.get(&pg).or_else(|| st.map.get(&pg)) {
                Some(&b) => self.media.read(b * BLOCK + in_pg as u64, dst)?,
                None => dst.fill(0),
            }
            done += chunk;
        }
        Ok(n)
    }

    /// `lseek(SEEK_DATA)` (`data`) or `lseek(SEEK_HOLE)` from the file map: the first offset
    /// at or after `off` in a page that holds data (a mapped or cached page) or in a hole (a
    /// page with no block, or the end of the file). `PastEnd` (ENXIO) when `off` is at or past
    /// the end, or no data follows.
    pub fn seek(&self, ino: u64, off: u64, data: bool) -> Result<u64> {
        let i = self.inode(ino)?;
        let st = i.state.read();
        if st.freed {
            return Err(Error::NotFound);
        }
        if st.attr.kind == Kind::Dir {
            return Err(Error::IsADirectory);
        }
        let size = st.attr.size;
        if off >= size {
            return Err(Error::PastEnd);
        }
        let first = off / BLOCK;
        let held = |pg: u64| st.map.contains_key(&pg) || st.cache.get(&pg).is_some();
        let at = |pg: u64| (pg * BLOCK).max(off);
        if data {
            let in_map = st.map.range(first..).next().map(|(&pg, _)| pg);
            let in_cache = st.cache.keys().filter(|&pg| pg >= first).min();
            return match in_map.into_iter().chain(in_cache).min() {
                Some(pg) if at(pg) < size => Ok(at(pg)),
                _ => Err(Error::PastEnd),
            };
        }
        let mut pg = first;
        while pg * BLOCK < size && held(pg) {
            pg += 1;
        }
        Ok(at(pg).min(size))
    }

    /// `copy_file_range`: copy up to `len` bytes at `src_off` of `src` (stopping at its end)
    /// to `dst_off` of `dst`, without the data leaving the engine. Each piece of up to 1 MiB
    /// is one atomic, durable write; returns the bytes copied. Overlapping ranges of one file
    /// are refused (`InvalidArgument`), as Linux does.
    pub fn copy_range(
        &self,
        src: &Inode,
        src_off: u64,
        dst: &Inode,
        dst_off: u64,
        len: u64,
    ) -> Result<u64> {
        const PIECE: u64 = 1 << 20;
        if src.ino == dst.ino
            && src_off < dst_off.saturating_add(len)
            && dst_off < src_off.saturating_add(len)
        {
            return Err(Error::InvalidArgument(
                "copy_file_range within one file with overlapping ranges".into(),
            ));
        }
        let mut buf = vec![0u8; PIECE.min(len) as usize];
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(PIECE) as usize;
            let n = self.read_locked(&src.state.read(), src_off + done, &mut buf[..want])?;
            if n == 0 {
                break;
            }
            self.write_inode(dst, Some(dst_off + done), &buf[..n])?;
            done += n as u64;
        }
        Ok(done)
    }

    /// Write `data` at `off` (or at the end of file if `off` is `None`): copy-on-write, atomic
    /// and durable on return. Returns the offset written at.
    pub fn write(&self, ino: u64, off: Option<u64>, data: &[u8]) -> Result<u64> {
        let i = self.inode(ino)?;
        self.write_inode(&i, off, data)
    }

    /// [`Engine::write`] through an inode the caller holds (an open handle).
    pub fn write_inode(&self, i: &Inode, off: Option<u64>, data: &[u8]) -> Result<u64> {
        let _op = self.writable()?;
        let mut st = i.state.write();
        if st.attr.kind != Kind::File {
            return Err(if st.attr.kind == Kind::Dir {
                Error::IsADirectory
            } else {
                Error::InvalidArgument("write to a symlink, FIFO, socket or device node".into())
            });
        }
        if st.freed {
            return Err(Error::NotFound);
        }
        let off = off.unwrap_or(st.attr.size);
        if data.is_empty() {
            return Ok(off);
        }
        let end = off
            .checked_add(data.len() as u64)
            .ok_or(Error::FileTooLarge)?;
        if end.div_ceil(BLOCK) > MAX_FILE_PAGES {
            return Err(Error::FileTooLarge);
        }
        let first = off / BLOCK;
        let last = (end - 1) / BLOCK;
        // Mapped stores and write_at are ordered: if pages of the range sit in the write
        // cache, it is migrated first (for a failure-atomic mapping this commits its pending
        // pages, like a sync).
        // A failure-atomic cache's migration commits together with this write (one tail
        // store): see `migrate_or_fold`.
        let overlaps = !st.cache.is_empty() && {
            if st.cache.len() as u64 <= last - first {
                st.cache.keys().any(|p| (first..=last).contains(&p))
            } else {
                (first..=last).any(|p| st.cache.contains_key(&p))
            }
        };
        let (pre, migrating) = if overlaps {
            self.migrate_or_fold(i, &mut st)?
        } else {
            (Vec::new(), false)
        };
        let mut pages = Vec::with_capacity((last - first + 1) as usize);
        for pg in first..=last {
            let pg_start = pg * BLOCK;
            let lo = off.max(pg_start);
            let hi = end.min(pg_start + BLOCK);
            let src = &data[(lo - off) as usize..(hi - off) as usize];
            if hi - lo == BLOCK {
                pages.push((pg, Page::Borrowed(src)));
            } else {
                let mut buf = vec![0u8; BLOCK as usize];
                if let Some(&b) = st.cache.get(&pg).or_else(|| st.map.get(&pg)) {
                    self.media.read(b * BLOCK, &mut buf)?;
                }
                buf[(lo - pg_start) as usize..(hi - pg_start) as usize].copy_from_slice(src);
                pages.push((pg, Page::Owned(buf)));
            }
        }
        let size = st.attr.size.max(end);
        self.commit_pages(i, &mut st, pages, size, pre, false, "write")?;
        if migrating {
            self.finish_migration(i, &mut st)?;
        }
        Ok(off)
    }

    /// Copy-on-write commit of whole pages (plus `pre` entries, applied first) to file
    /// `inode` (its state `st` locked), in one transaction labelled `mark`.
    #[allow(clippy::too_many_arguments)]
    fn commit_pages(
        &self,
        inode: &Inode,
        st: &mut InodeState,
        pages: Vec<(u64, Page<'_>)>,
        size: u64,
        pre: Vec<Entry>,
        frees_space: bool,
        mark: &'static str,
    ) -> Result<()> {
        let mut txn = self.txn(mark).frees_space(frees_space);
        let mut entries = pre;
        let in_place = txn.write_pages(&st.map, &pages, size, now_ns(), &mut entries)?;
        txn.append(inode.ino, inode.slot_off, st, entries)?;
        let mut done = txn.commit()?;
        for b in self.apply(&mut done, inode.ino, inode.slot_off, st) {
            if !in_place.contains(&b) {
                self.blocks.free(b, 1);
            }
        }
        Ok(())
    }

    /// Replace the whole contents of file `i` with `data` (its new length), in one commit:
    /// the new pages are written copy-on-write, then one log append (a size change that drops
    /// the old pages past the new end, and the new pages' `Write` entries) is committed by
    /// one tail store. After a crash the file holds the old contents or all of `data`.
    pub fn replace_inode(&self, i: &Inode, data: &[u8]) -> Result<()> {
        let _op = self.writable()?;
        let len = data.len() as u64;
        if len.div_ceil(BLOCK) > MAX_FILE_PAGES {
            return Err(Error::FileTooLarge);
        }
        let mut st = i.state.write();
        match st.attr.kind {
            Kind::File if st.freed => return Err(Error::NotFound),
            Kind::File => {}
            Kind::Dir => return Err(Error::IsADirectory),
            _ => {
                return Err(Error::InvalidArgument(
                    "write to a symlink, FIFO, socket or device node".into(),
                ))
            }
        }
        // Cached pages are migrated first (or with this, for a failure-atomic cache).
        let (mut pre, migrating) = self.migrate_or_fold(i, &mut st)?;
        let now = now_ns();
        let mut a = SetAttrEntry::zeroed_entry();
        a.mask = attr_mask::SIZE | attr_mask::MTIME | attr_mask::CTIME;
        a.size = len;
        a.mtime_ns = now;
        a.ctime_ns = now;
        pre.push(Entry::SetAttr(a));
        self.commit_pages(i, &mut st, content_pages(data), len, pre, false, "replace")?;
        if migrating {
            self.finish_migration(i, &mut st)?;
        }
        Ok(())
    }

    /// Change attributes; a size change truncates or extends (holes read as zeros).
    pub fn setattr(&self, ino: u64, req: &SetAttr) -> Result<Attr> {
        let _op = self.writable()?;
        let i = self.inode(ino)?;
        let mut st = i.state.write();
        if st.freed {
            return Err(Error::NotFound);
        }
        let now = now_ns();
        let mut a = SetAttrEntry::zeroed_entry();
        a.mask = attr_mask::CTIME;
        a.ctime_ns = now;
        if let Some(m) = req.mode {
            a.mask |= attr_mask::MODE;
            a.mode = m & 0o7777;
        }
        if let Some(u) = req.uid {
            a.mask |= attr_mask::UID;
            a.uid = u;
        }
        if let Some(g) = req.gid {
            a.mask |= attr_mask::GID;
            a.gid = g;
        }
        if let Some(t) = req.atime_ns {
            a.mask |= attr_mask::ATIME;
            a.atime_ns = t;
        }
        if let Some(t) = req.mtime_ns {
            a.mask |= attr_mask::MTIME;
            a.mtime_ns = t;
        }
        let mut pages = Vec::new();
        let mut size = st.attr.size;
        let mut migrate_pre: Vec<Entry> = Vec::new();
        let mut folded = false;
        if let Some(new) = req.size {
            match st.attr.kind {
                Kind::Dir => return Err(Error::IsADirectory),
                Kind::Symlink => {
                    return Err(Error::InvalidArgument("truncate of a symlink".into()))
                }
                k if k.is_special() => {
                    return Err(Error::InvalidArgument(
                        "truncate of a FIFO, socket or device node".into(),
                    ))
                }
                _ => {}
            }
            if new.div_ceil(BLOCK) > MAX_FILE_PAGES {
                return Err(Error::FileTooLarge);
            }
            if !st.cache.is_empty() {
                // A size change migrates the cached pages first, or with it for a
                // failure-atomic cache (pages past a cut are then freed).
                (migrate_pre, folded) = self.migrate_or_fold(&i, &mut st)?;
            }
            a.mask |= attr_mask::SIZE;
            a.size = new;
            if req.mtime_ns.is_none() {
                a.mask |= attr_mask::MTIME;
                a.mtime_ns = now;
            }
            // Keep the invariant that bytes past EOF in the last page are zero.
            if new < st.attr.size && new % BLOCK != 0 {
                let pg = new / BLOCK;
                if let Some(&b) = st.cache.get(&pg).or_else(|| st.map.get(&pg)) {
                    let mut buf = vec![0u8; BLOCK as usize];
                    self.media
                        .read(b * BLOCK, &mut buf[..(new % BLOCK) as usize])?;
                    pages.push((pg, Page::Owned(buf)));
                }
            }
            size = new;
        }
        // Shrinking frees space: it may use the reserve.
        let shrinks = req.size.is_some_and(|n| n < st.attr.size);
        migrate_pre.push(Entry::SetAttr(a));
        if req.mode.is_some() {
            // An access ACL follows the new mode (owner, mask or group, other), in this commit.
            migrate_pre.extend(crate::xattr::chmod_acl_entry(&st.xattrs, a.mode, now));
        }
        self.commit_pages(&i, &mut st, pages, size, migrate_pre, shrinks, "setattr")?;
        if folded {
            self.finish_migration(&i, &mut st)?;
        }
        Ok(st.attr())
    }

    /// Deallocate `[off, off+len)`: it reads as zeros afterwards; the size does not change.
    pub fn punch_hole(&self, ino: u64, off: u64, len: u64) -> Result<()> {
        self.clear_range(ino, off, len, Clear::Punch)
    }

    /// `fallocate(FALLOC_FL_ZERO_RANGE)`: `[off, off+len)` reads as zeros and is backed by
    /// zero-filled blocks (partial pages copied with zeros), in one atomic commit; the size
    /// grows to cover the range unless `keep_size` (then the range stops at the end).
    pub fn zero_range(&self, ino: u64, off: u64, len: u64, keep_size: bool) -> Result<()> {
        self.clear_range(ino, off, len, Clear::Zero { keep_size })
    }

    /// Punch or zero `[off, off+len)` in one commit (see [`Clear`]).
    fn clear_range(&self, ino: u64, off: u64, len: u64, how: Clear) -> Result<()> {
        let _op = self.writable()?;
        let i = self.inode(ino)?;
        let mut st = i.state.write();
        if st.attr.kind != Kind::File {
            return Err(Error::InvalidArgument(
                "punch_hole and zero_range need a regular file".into(),
            ));
        }
        if st.freed {
            return Err(Error::NotFound);
        }
        let end = match how {
            Clear::Zero { keep_size: false } => {
                let end = off.checked_add(len).ok_or(Error::FileTooLarge)?;
                if end.div_ceil(BLOCK) > MAX_FILE_PAGES {
                    return Err(Error::FileTooLarge);
                }
                end
            }
            _ => off.saturating_add(len).min(st.attr.size),
        };
        if len == 0 || off >= end {
            return Ok(());
        }
        // Cached pages are migrated first (or with the hole, for a failure-atomic cache).
        let (pre, migrating) = self.migrate_or_fold(&i, &mut st)?;
        let mut pages = Vec::new();
        let first = off / BLOCK;
        let last = (end - 1) / BLOCK;
        for pg in first..=last {
            let ps = pg * BLOCK;
            let lo = off.max(ps);
            let hi = end.min(ps + BLOCK);
            let zero = matches!(how, Clear::Zero { .. });
            let Some(&b) = st.cache.get(&pg).or_else(|| st.map.get(&pg)) else {
                // A hole reads as zeros already; zeroing backs it with a zeroed block.
                if zero {
                    pages.push((pg, Page::Zero));
                }
                continue;
            };
            if hi - lo == BLOCK {
                pages.push((pg, if zero { Page::Zero } else { Page::Hole }));
            } else {
                let mut buf = vec![0u8; BLOCK as usize];
                self.media.read(b * BLOCK, &mut buf)?;
                buf[(lo - ps) as usize..(hi - ps) as usize].fill(0);
                pages.push((pg, Page::Owned(buf)));
            }
        }
        // Zeroing past the end grows the file: its range is never empty, so the new pages'
        // entries carry the size.
        let size = st.attr.size.max(end);
        // Punching frees space, so it may dip into the reserve; zeroing allocates.
        let mark = match how {
            Clear::Punch => "punch",
            Clear::Zero { .. } => "zero-range",
        };
        self.commit_pages(&i, &mut st, pages, size, pre, how == Clear::Punch, mark)?;
        if migrating {
            self.finish_migration(&i, &mut st)?;
        }
        Ok(())
    }

    /// Allocate blocks for `[off, off+len)` (zero-filled) and extend the size to cover it.
    pub fn allocate(&self, ino: u64, off: u64, len: u64) -> Result<()> {
        self.allocate_with(ino, off, len, false)
    }

    /// `fallocate`: allocate zero-filled blocks for the unmapped pages of `[off, off+len)`,
    /// in one commit. The size grows to cover the range unless `keep_size`
    /// (`FALLOC_FL_KEEP_SIZE`): then pages past the end are allocated and the size stays;
    /// they are counted in `blocks`, read as nothing (reads stop at the size), and read as
    /// zeros once the size grows over them (a write past the end or a truncate up; a size
    /// change drops the pages beyond the new size, as `truncate(2)` does on ext4).
    pub fn allocate_with(&self, ino: u64, off: u64, len: u64, keep_size: bool) -> Result<()> {
        let _op = self.writable()?;
        if len == 0 {
            return Err(Error::InvalidArgument("allocate of zero bytes".into()));
        }
        let i = self.inode(ino)?;
        let mut st = i.state.write();
        if st.freed {
            return Err(Error::NotFound);
        }
        if st.attr.kind != Kind::File {
            return Err(Error::InvalidArgument(
                "allocate needs a regular file".into(),
            ));
        }
        let end = off.checked_add(len).ok_or(Error::FileTooLarge)?;
        if end.div_ceil(BLOCK) > MAX_FILE_PAGES {
            return Err(Error::FileTooLarge);
        }
        // Cached pages are migrated first (or with this, for a failure-atomic cache).
        let (mut pre, migrating) = self.migrate_or_fold(&i, &mut st)?;
        let pages: Vec<(u64, Page<'_>)> = (off / BLOCK..end.div_ceil(BLOCK))
            .filter(|pg| !st.map.contains_key(pg) && !st.cache.contains_key(pg))
            .map(|pg| (pg, Page::Zero))
            .collect();
        let size = if keep_size {
            st.attr.size
        } else {
            st.attr.size.max(end)
        };
        if pages.is_empty() && size != st.attr.size {
            let mut a = SetAttrEntry::zeroed_entry();
            a.mask = attr_mask::SIZE;
            a.size = size;
            pre.push(Entry::SetAttr(a));
        }
        self.commit_pages(&i, &mut st, pages, size, pre, false, "allocate")?;
        if migrating {
            self.finish_migration(&i, &mut st)?;
        }
        Ok(())
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let i = self.inode(ino)?;
        let st = i.state.read();
        if st.attr.kind != Kind::Symlink {
            return Err(Error::InvalidArgument("not a symbolic link".into()));
        }
        if st.attr.size == 0 || st.attr.size > BLOCK || !st.map.contains_key(&0) {
            return Err(Error::corrupt("symlink length", format!("inode {ino}")));
        }
        let mut buf = vec![0u8; st.attr.size as usize];
        let n = self.read_locked(&st, 0, &mut buf)?;
        buf.truncate(n);
        if buf.contains(&0) {
            return Err(Error::corrupt("symlink target", format!("inode {ino}")));
        }
        Ok(buf)
    }

    /// Make everything durable: operations already are; this also migrates every MAP_SYNC
    /// write cache (like msync of every mapping; failure-atomic caches wait for their owner's
    /// sync), fences, and msyncs in Msync mode.
    pub fn sync(&self) -> Result<()> {
        if !self.read_only {
            // Under the operation gate: unmount and crash wait for these migrations (they
            // allocate and free blocks) before saving or dropping the allocator state.
            let _op = self.gate.read_recursive();
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
        let growable = (self.sb.max_chunks() - chunks).min(blocks_free / CHUNK_BLOCKS);
        let inodes_free = free_inos + growable * INODES_PER_CHUNK;
        let inodes_used = (chunks * INODES_PER_CHUNK).saturating_sub(free_inos + 1);
        StatFs {
            block_size: BLOCK,
            blocks_total: self.sb.blocks_total,
            blocks_free,
            blocks_avail: blocks_free.saturating_sub(self.blocks.reserve()),
            inodes_total: inodes_used + inodes_free,
            inodes_free,
            name_max: NAME_MAX as u64,
        }
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

impl SetAttrEntry {
    /// An empty attribute entry.
    pub fn zeroed_entry() -> SetAttrEntry {
        bytemuck::Zeroable::zeroed()
    }
}
