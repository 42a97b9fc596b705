//! DRAM state of an inode, rebuilt from its slot and its log.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sync::AtomicU64;

use crate::sync::RwLock;

use crate::cursor::LogCursor;
use crate::error::{Error, Result};
use crate::layout::entry::{attr_mask, Entry, EntryMarks, RedoRef};
use crate::layout::inode::InodeSlot;
pub use crate::layout::Bounds;
use crate::layout::{Kind, BLOCK};
pub use crate::log::{LogState, PageLive};
use crate::media::Media;

/// Attributes of an inode, as returned by `getattr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Slot generation (for NFS/FUSE handles).
    pub generation: u64,
    /// File type.
    pub kind: Kind,
    /// Length in bytes.
    pub size: u64,
    /// Data blocks allocated.
    pub blocks: u64,
    /// Hard links (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time.
    pub atime_ns: u64,
    /// Modification time.
    pub mtime_ns: u64,
    /// Change time.
    pub ctime_ns: u64,
    /// Creation time.
    pub crtime_ns: u64,
    /// Device number of a device node (0 otherwise).
    pub rdev: u64,
}

/// The write cache's index: file page -> cache block. The mapped store path looks a page up on
/// every call, so pages below 8 GiB sit in a two-level radix table (leaves of 512 pages, 2 MiB
/// of file each: one dependent load into a leaf, where a hash map costs two cache misses on a
/// large cache); pages beyond go to a hash map. Block 0 is never a cache block (it is the
/// superblock), so 0 marks an empty slot.
#[derive(Clone, Debug, Default)]
pub struct CacheMap {
    leaves: Vec<Option<Box<[u64; LEAF_PAGES]>>>,
    far: crate::hash::U64Map<u64>,
    len: usize,
}

/// An inode's write cache (DESIGN.md §5.4): its pages, its log and how they were attached.
/// Boxed in the inode's state and made at the first attachment: most inodes never have one,
/// and it was 184 of the state's 704 bytes (DRAM per inode bounds recovery, §5.8).
#[derive(Debug)]
pub struct WriteCache {
    /// File page -> cache block (pages written through a mapping, not yet migrated into the
    /// file map).
    pub map: CacheMap,
    /// The cache log's position.
    pub log: LogState,
    /// The cache holds failure-atomic pages (recovery discards them).
    pub atomic: bool,
    /// When the oldest cached page was attached (for background writeback).
    pub since: Option<std::time::Instant>,
}

impl WriteCache {
    /// No page, an empty log.
    pub const EMPTY: WriteCache = WriteCache {
        map: CacheMap {
            leaves: Vec::new(),
            far: std::collections::HashMap::with_hasher(std::hash::BuildHasherDefault::new()),
            len: 0,
        },
        log: LogState::EMPTY,
        atomic: false,
        since: None,
    };
}

/// What [`InodeState::cache`] shows of an inode without a write cache.
static NO_CACHE: WriteCache = WriteCache::EMPTY;

const LEAF_PAGES: usize = 512;
const DIRECT_PAGES: u64 = 1 << 21;

impl CacheMap {
    /// The cache block of file page `pg`.
    #[inline]
    pub fn get(&self, pg: &u64) -> Option<&u64> {
        let pg = *pg;
        if pg < DIRECT_PAGES {
            let leaf = self
                .leaves
                .get((pg / LEAF_PAGES as u64) as usize)?
                .as_ref()?;
            let v = &leaf[(pg % LEAF_PAGES as u64) as usize];
            (*v != 0).then_some(v)
        } else {
            self.far.get(&pg)
        }
    }

    /// Whether file page `pg` is cached.
    #[inline]
    pub fn contains_key(&self, pg: &u64) -> bool {
        self.get(pg).is_some()
    }

    /// Cache file page `pg` in `block` (not 0); returns the block it replaces.
    pub fn insert(&mut self, pg: u64, block: u64) -> Option<u64> {
        debug_assert!(block != 0);
        let old = if pg < DIRECT_PAGES {
            let i = (pg / LEAF_PAGES as u64) as usize;
            if self.leaves.len() <= i {
                self.leaves.resize(i + 1, None);
            }
            let leaf = self.leaves[i].get_or_insert_with(|| Box::new([0; LEAF_PAGES]));
            let old = std::mem::replace(&mut leaf[(pg % LEAF_PAGES as u64) as usize], block);
            (old != 0).then_some(old)
        } else {
            self.far.insert(pg, block)
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Forget every page.
    pub fn clear(&mut self) {
        self.leaves.clear();
        self.far.clear();
        self.len = 0;
    }

    /// Pages cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No page cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// (file page, cache block) pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let direct = self.leaves.iter().enumerate().flat_map(|(i, l)| {
            l.iter().flat_map(move |leaf| {
                leaf.iter()
                    .enumerate()
                    .filter(|(_, &b)| b != 0)
                    .map(move |(j, &b)| ((i * LEAF_PAGES + j) as u64, b))
            })
        });
        direct.chain(self.far.iter().map(|(&p, &b)| (p, b)))
    }

    /// Cached file pages.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(p, _)| p)
    }

    /// Cache blocks.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(_, b)| b)
    }

    /// Keep only the pages for which `f` holds.
    pub fn retain(&mut self, mut f: impl FnMut(u64, u64) -> bool) {
        let mut gone = 0;
        for (i, l) in self.leaves.iter_mut().enumerate() {
            if let Some(leaf) = l {
                for (j, b) in leaf.iter_mut().enumerate() {
                    if *b != 0 && !f((i * LEAF_PAGES + j) as u64, *b) {
                        *b = 0;
                        gone += 1;
                    }
                }
            }
        }
        let before = self.far.len();
        self.far.retain(|&p, &mut b| f(p, b));
        self.len -= gone + (before - self.far.len());
    }
}

impl PartialEq for CacheMap {
    /// The same pages in the same blocks (whatever the table shapes).
    fn eq(&self, other: &CacheMap) -> bool {
        self.len == other.len && self.iter().all(|(p, b)| other.get(&p) == Some(&b))
    }
}

impl Eq for CacheMap {}

impl std::ops::Index<&u64> for CacheMap {
    type Output = u64;
    fn index(&self, pg: &u64) -> &u64 {
        self.get(pg).expect("page cached")
    }
}

/// A directory entry in DRAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEnt {
    /// Child inode.
    pub ino: u64,
    /// Child kind.
    pub kind: Kind,
    /// Logical log page holding the entry that added the name (GC bookkeeping; see
    /// [`LogState::first`]).
    pub log_page: u64,
}

/// A file map: file page -> block, each with the logical log page of the entry that set it
/// (GC bookkeeping, [`PageLive`]). Two forms: a file of at most [`SMALL_PAGES`] mapped pages
/// keeps them in a sorted vector (inline for one page: most files are small); a larger one
/// moves them into chunks of [`CHUNK_PAGES`] consecutive pages under one B-tree key, so a
/// lookup walks a tree 32 times smaller than one keyed by page (a 64 MiB file: 512 keys, two
/// levels instead of four or five, the upper ones staying cached) and then indexes an array.
/// Iteration and ranges are in page order in both forms. Block 0 is never a data block (the
/// superblock), so 0 marks an empty slot of a chunk. A chunk costs 520 bytes however few of its
/// pages are mapped (only files past `SMALL_PAGES` pages have chunks).
#[derive(Clone, Debug, Default)]
pub struct FileMap {
    /// The small form: mapped slots sorted by page (empty when `chunks` is not); a file of
    /// one page, the most common, keeps its slot inline (no allocation).
    small: smallvec::SmallVec<[Slot; 1]>,
    chunks: BTreeMap<u64, Box<Chunk>>,
    len: usize,
}

/// Pages per [`FileMap`] chunk.
pub const CHUNK_PAGES: u64 = 32;

/// Mapped pages a [`FileMap`] keeps in its small form.
pub const SMALL_PAGES: usize = 8;

/// One file page's mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapped {
    block: u64,
    owner: u64,
}

/// A slot of the small form: its page, block, owner.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    pg: u64,
    block: u64,
    owner: u64,
}

impl Slot {
    fn mapped(&self) -> Mapped {
        Mapped {
            block: self.block,
            owner: self.owner,
        }
    }
}

/// The pages `key * CHUNK_PAGES ..` of a larger file: blocks (0: not mapped) and owners in
/// separate arrays, so that a lookup reads one line of eight blocks (a read of a random page
/// of a large file misses on it: the data it copies evicts the map between reads).
#[derive(Clone, Debug)]
struct Chunk {
    live: u32,
    blocks: [u64; CHUNK_PAGES as usize],
    owners: [u64; CHUNK_PAGES as usize],
}

impl Chunk {
    fn mapped(&self, i: usize) -> Option<Mapped> {
        (self.blocks[i] != 0).then(|| Mapped {
            block: self.blocks[i],
            owner: self.owners[i],
        })
    }

    /// Unmap slot `i` (mapped); returns its mapping.
    fn take(&mut self, i: usize) -> Mapped {
        let m = Mapped {
            block: std::mem::take(&mut self.blocks[i]),
            owner: std::mem::take(&mut self.owners[i]),
        };
        self.live -= 1;
        m
    }
}

impl FileMap {
    /// The block of file page `pg`.
    #[inline]
    pub fn get(&self, pg: &u64) -> Option<&u64> {
        let pg = *pg;
        if self.chunks.is_empty() {
            return self.small.iter().find(|s| s.pg == pg).map(|s| &s.block);
        }
        let c = self.chunks.get(&(pg / CHUNK_PAGES))?;
        let b = &c.blocks[(pg % CHUNK_PAGES) as usize];
        (*b != 0).then_some(b)
    }

    /// Whether file page `pg` is mapped.
    #[inline]
    pub fn contains_key(&self, pg: &u64) -> bool {
        self.get(pg).is_some()
    }

    /// Mapped pages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No page mapped.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped (page, block) pairs of pages `lo ..= hi`, in page order (one of the two
    /// parts is empty).
    fn pairs(&self, lo: u64, hi: u64) -> impl DoubleEndedIterator<Item = (u64, u64)> + '_ {
        let small = self.small.iter().map(|s| (s.pg, s.block));
        let chunks = self
            .chunks
            .range(lo / CHUNK_PAGES..=hi / CHUNK_PAGES)
            .flat_map(|(&k, c)| {
                (0..CHUNK_PAGES).map(move |i| (k * CHUNK_PAGES + i, c.blocks[i as usize]))
            });
        small
            .chain(chunks)
            .filter(move |&(pg, b)| b != 0 && (lo..=hi).contains(&pg))
    }

    /// (file page, block) pairs in page order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, u64)> + '_ {
        self.pairs(0, u64::MAX)
    }

    /// (file page, block) pairs of the pages in `r`, in order (an empty or inverted range
    /// has none).
    pub fn range(
        &self,
        r: impl std::ops::RangeBounds<u64>,
    ) -> impl DoubleEndedIterator<Item = (u64, u64)> + '_ {
        use std::ops::Bound::*;
        let lo = match r.start_bound() {
            Included(&a) => Some(a),
            Excluded(&a) => a.checked_add(1),
            Unbounded => Some(0),
        };
        let hi = match r.end_bound() {
            Included(&b) => Some(b),
            Excluded(&b) => b.checked_sub(1),
            Unbounded => Some(u64::MAX),
        };
        let bounds = lo.zip(hi).filter(|(lo, hi)| lo <= hi);
        bounds
            .into_iter()
            .flat_map(move |(lo, hi)| self.pairs(lo, hi))
    }

    /// Mapped pages in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = u64> + '_ {
        self.iter().map(|(p, _)| p)
    }

    /// Blocks, in page order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = u64> + '_ {
        self.iter().map(|(_, b)| b)
    }

    /// Forget every page.
    pub fn clear(&mut self) {
        self.small.clear();
        self.chunks.clear();
        self.len = 0;
    }

    /// Map page `pg` (`m.block` not 0); returns the mapping it replaces.
    fn insert(&mut self, pg: u64, m: Mapped) -> Option<Mapped> {
        debug_assert!(m.block != 0, "block 0 is never a data block");
        let new = Slot {
            pg,
            block: m.block,
            owner: m.owner,
        };
        if self.chunks.is_empty() {
            match self.small.binary_search_by_key(&pg, |s| s.pg) {
                Ok(i) => {
                    let old = std::mem::replace(&mut self.small[i], new);
                    return Some(old.mapped());
                }
                Err(i) if self.small.len() < SMALL_PAGES => {
                    self.small.insert(i, new);
                    self.len += 1;
                    return None;
                }
                Err(_) => {
                    // The file outgrew the small form: its pages move into chunks.
                    for s in std::mem::take(&mut self.small) {
                        self.chunk_insert(s);
                    }
                }
            }
        }
        let old = self.chunk_insert(new);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Store `s` into its chunk; returns the mapping it replaces (`len` is the caller's).
    fn chunk_insert(&mut self, s: Slot) -> Option<Mapped> {
        let c = self.chunks.entry(s.pg / CHUNK_PAGES).or_insert_with(|| {
            Box::new(Chunk {
                live: 0,
                blocks: [0; CHUNK_PAGES as usize],
                owners: [0; CHUNK_PAGES as usize],
            })
        });
        let i = (s.pg % CHUNK_PAGES) as usize;
        let old = c.mapped(i);
        c.blocks[i] = s.block;
        c.owners[i] = s.owner;
        if old.is_none() {
            c.live += 1;
        }
        old
    }

    /// Unmap page `pg`; returns its mapping.
    fn remove(&mut self, pg: u64) -> Option<Mapped> {
        if self.chunks.is_empty() {
            let i = self.small.binary_search_by_key(&pg, |s| s.pg).ok()?;
            self.len -= 1;
            return Some(self.small.remove(i).mapped());
        }
        let key = pg / CHUNK_PAGES;
        let c = self.chunks.get_mut(&key)?;
        let i = (pg % CHUNK_PAGES) as usize;
        if c.blocks[i] == 0 {
            return None;
        }
        let old = c.take(i);
        self.len -= 1;
        if c.live == 0 {
            self.chunks.remove(&key);
        }
        Some(old)
    }

    /// The last mapped page.
    fn last_page(&self) -> Option<u64> {
        self.keys().next_back()
    }

    /// Unmap every page at or beyond `first`; returns their mappings in page order.
    fn split_off(&mut self, first: u64) -> Vec<Mapped> {
        if self.chunks.is_empty() {
            let i = self.small.partition_point(|s| s.pg < first);
            let gone: Vec<Mapped> = self.small.drain(i..).map(|s| s.mapped()).collect();
            self.len -= gone.len();
            return gone;
        }
        let mut tail = self.chunks.split_off(&(first / CHUNK_PAGES));
        let mut gone = Vec::new();
        // The first chunk of the tail may hold pages below `first`: they stay.
        if let Some(mut c) = tail.remove(&(first / CHUNK_PAGES)) {
            for i in (first % CHUNK_PAGES) as usize..CHUNK_PAGES as usize {
                if c.blocks[i] != 0 {
                    gone.push(c.take(i));
                }
            }
            if c.live > 0 {
                self.chunks.insert(first / CHUNK_PAGES, c);
            }
        }
        for c in tail.into_values() {
            gone.extend((0..CHUNK_PAGES as usize).filter_map(|i| c.mapped(i)));
        }
        self.len -= gone.len();
        gone
    }
}

impl PartialEq for FileMap {
    /// The same pages in the same blocks (owners are bookkeeping).
    fn eq(&self, other: &FileMap) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for FileMap {}

/// Contiguous runs `(first page, first block, pages)` of `(page, block)` pairs given in page
/// order: what one `Write` entry each can map.
pub fn extent_runs(
    pairs: impl IntoIterator<Item = (u64, u64)>,
) -> impl Iterator<Item = (u64, u64, u32)> {
    let mut pairs = pairs.into_iter().peekable();
    std::iter::from_fn(move || {
        let (p0, b0) = pairs.next()?;
        let mut n = 1u32;
        while n < u32::MAX
            && pairs
                .next_if(|&(p, b)| p == p0 + n as u64 && b == b0 + n as u64)
                .is_some()
        {
            n += 1;
        }
        Some((p0, b0, n))
    })
}

/// No owner (see [`Owners`]).
pub const NO_OWNER: u64 = u64::MAX;

/// Which log page set each attribute's current value (logical page numbers, [`NO_OWNER`]
/// when no entry of the log did).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owners {
    /// size, mtime, ctime, atime, mode, uid, gid, nlink, parent.
    pub attr: [u64; ATTR_KEYS],
}

/// Attribute keys tracked by [`Owners`].
pub const ATTR_KEYS: usize = 9;
const K_SIZE: usize = 0;
const K_MTIME: usize = 1;
const K_CTIME: usize = 2;
const K_ATIME: usize = 3;
const K_MODE: usize = 4;
const K_UID: usize = 5;
const K_GID: usize = 6;
const K_NLINK: usize = 7;
const K_PARENT: usize = 8;

impl Default for Owners {
    fn default() -> Self {
        Owners {
            attr: [NO_OWNER; ATTR_KEYS],
        }
    }
}

/// Move ownership of a key to logical page `at`.
#[inline]
fn claim(log: &mut LogState, owner: &mut u64, at: u64) {
    if *owner == at {
        return; // the same page keeps it
    }
    release(log, *owner);
    *owner = at;
    if let Some(p) = log.page_mut(at) {
        p.live += 1;
    }
}

/// The key's value set at page `owner` is gone.
fn release(log: &mut LogState, owner: u64) {
    if owner != NO_OWNER {
        if let Some(p) = log.page_mut(owner) {
            debug_assert!(p.live > 0, "liveness count of log page {owner} underflows");
            p.live = p.live.saturating_sub(1);
        }
    }
}

/// An extended attribute in DRAM.
#[derive(Clone, Debug, Default)]
pub struct Xattr {
    /// Its value.
    pub value: Vec<u8>,
    /// Logical log pages holding the entries that set it, ascending (GC bookkeeping: each
    /// counts it as one live key).
    pub pages: Vec<u64>,
}

impl PartialEq for Xattr {
    /// The same value (pages are bookkeeping).
    fn eq(&self, other: &Xattr) -> bool {
        self.value == other.value
    }
}

impl Eq for Xattr {}

/// Extended attributes by name.
pub type XattrMap = BTreeMap<Box<[u8]>, Xattr>;

/// The extended attributes of an inode and the value pieces being replayed: boxed in
/// [`InodeState`], since most inodes have none (64 bytes less per inode in DRAM).
#[derive(Debug, Default)]
struct XattrState {
    /// Extended attributes (and POSIX ACLs), by name.
    map: XattrMap,
    /// Value pieces of an `XattrSet` not yet replayed (between the chunks of one append and
    /// their set entry; empty between appends).
    pending: Vec<u8>,
    /// Logical log pages of those pieces.
    pending_pages: Vec<u64>,
}

/// An empty attribute map, for inodes without any.
static NO_XATTRS: XattrMap = BTreeMap::new();

/// Mutable state of an inode, behind its lock.
#[derive(Debug)]
pub struct InodeState {
    /// Extended attributes and pieces being replayed ([`InodeState::xattrs`]); `None`
    /// until the first one.
    xattr: Option<Box<XattrState>>,
    /// Attributes.
    pub attr: Attr,
    /// Parent directory (directories only; files may have many).
    pub parent: u64,
    /// Log position.
    pub log: LogState,
    /// File map: page index -> block (and the log page that set it).
    pub map: FileMap,
    /// Log pages that set each attribute (GC bookkeeping).
    pub owners: Owners,
    /// Directory index.
    pub dir: crate::hash::NameMap<DirEnt>,
    /// Unlinked from the tree (may still be open).
    pub removed: bool,
    /// Its blocks and slot were released.
    pub freed: bool,
    /// The write cache, once a page was attached ([`InodeState::cache`] reads it, empty
    /// when there is none; [`InodeState::cache_mut`] makes it).
    pub wc: Option<Box<WriteCache>>,
    /// Recovery only (`load_with`): the redo writes of the log that no later write of their
    /// page superseded, in log order, to store in place again (DESIGN.md §5.1.2).
    pub redo: Option<Vec<Redo>>,
    /// Region ranges (whole lines) of redo writes stored in place but not flushed yet
    /// (DESIGN.md §5.1.2): their entries are the durable record, so the lines are flushed
    /// (`txn::flush_unflushed`) only before GC drops entries, before the inode frees blocks,
    /// at a clean unmount, or when the list reaches `txn::UNFLUSHED_MAX` ranges. Adjacent
    /// writes (appends) share a range.
    pub unflushed: Vec<(u64, u64)>,
}

/// A redo write to store again after a crash (see [`InodeState::redo`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redo {
    /// File page.
    pub pgoff: u64,
    /// Its block.
    pub block: u64,
    /// Byte offset in the page.
    pub at: u16,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Where an inode lives on the image (see `Engine::inode_layout`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeLayout {
    /// Inode number.
    pub ino: u64,
    /// Region offset of its slot.
    pub slot_off: u64,
    /// Its log's pages, head first.
    pub log_pages: Vec<u64>,
    /// Its log's committed tail (a region byte offset; 0 = empty log).
    pub log_tail: u64,
    /// The sequence number its next log entry gets.
    pub next_seq: u64,
    /// File page -> block.
    pub map: std::collections::BTreeMap<u64, u64>,
    /// Its write cache's log pages.
    pub cache_log_pages: Vec<u64>,
    /// File page -> write-cache block.
    pub cached: std::collections::BTreeMap<u64, u64>,
}

/// An inode in the cache.
#[derive(Debug)]
pub struct Inode {
    /// Inode number.
    pub ino: u64,
    /// Region offset of its slot.
    pub slot_off: u64,
    /// Its state (private to the engine: front ends call operations, which take the lock).
    pub(crate) state: RwLock<InodeState>,
    /// Open handles.
    pub open: AtomicU32,
    /// The write cache's last store: `(page << 40) | (block + 1)` of the cache page it went
    /// to, 0 = none. Set under the shared lock by every mapped store, cleared under the
    /// exclusive lock whenever a cache page goes (migration, freeing). `persist` of a range in
    /// that page flushes the block without the lock (DESIGN.md §5.4).
    pub last_store: AtomicU64,
}

impl Inode {
    /// The state of an inode no one else holds yet (being built: recovery loads a state in
    /// place with [`load_into`]).
    pub fn state_mut(&mut self) -> &mut InodeState {
        self.state.get_mut()
    }

    /// Inode `ino` (slot at `slot_off`) with its loaded state, no handle open.
    pub fn new(ino: u64, slot_off: u64, st: InodeState) -> Inode {
        Inode {
            ino,
            slot_off,
            state: RwLock::new(st),
            open: Default::default(),
            last_store: Default::default(),
        }
    }
}

const MEMO_BLOCK_BITS: u32 = 40;

impl Inode {
    /// Remember that a mapped store went to cache block `block` for file page `page`.
    pub(crate) fn note_store(&self, page: u64, block: u64) {
        let v = if page < 1 << (64 - MEMO_BLOCK_BITS) && block + 1 < 1 << MEMO_BLOCK_BITS {
            (page << MEMO_BLOCK_BITS) | (block + 1)
        } else {
            0
        };
        self.last_store.store(v, Ordering::Release);
    }

    /// The cache block of the last mapped store if it went to file page `page`.
    pub(crate) fn last_store_in(&self, page: u64) -> Option<u64> {
        let v = self.last_store.load(Ordering::Acquire);
        (v != 0 && v >> MEMO_BLOCK_BITS == page).then(|| (v & ((1 << MEMO_BLOCK_BITS) - 1)) - 1)
    }

    /// Cache pages went away: forget the last store (exclusive lock held).
    pub(crate) fn forget_last_store(&self) {
        self.last_store.store(0, Ordering::Release);
    }
}

/// Region offset of inode `ino`'s slot, given the chunk list.
pub fn slot_offset(chunks: &[u64], ino: u64) -> Option<u64> {
    let per_chunk = crate::layout::INODES_PER_CHUNK;
    let chunk = chunks.get((ino / per_chunk) as usize).copied()?;
    if chunk == 0 {
        return None;
    }
    Some(chunk * BLOCK + (ino % per_chunk) * crate::layout::INODE_SIZE)
}

/// The names earlier entries of one append added (`Some(ino)`) and removed (`None`): a
/// prepare-time check of a multi-entry directory append, e.g. a rename within one directory.
/// A short list (an append holds a few entries), searched from the newest.
#[derive(Default)]
struct NameOverlay<'e> {
    /// Record what the entry checked next adds and removes (not for the last one).
    track: bool,
    changed: smallvec::SmallVec<[(&'e [u8], Option<u64>); 4]>,
    /// Pending xattr value bytes after the entries seen so far (None: the state's).
    xattr_pending: Option<usize>,
}

impl<'e> NameOverlay<'e> {
    /// The inode `name` names after the entries seen so far.
    fn lookup(&self, dir: &crate::hash::NameMap<DirEnt>, name: &[u8]) -> Option<u64> {
        match self.changed.iter().rev().find(|(n, _)| *n == name) {
            Some(&(_, now)) => now,
            None => dir.get(name).map(|e| e.ino),
        }
    }

    fn set(&mut self, name: &'e [u8], ino: Option<u64>) {
        if self.track {
            self.changed.push((name, ino));
        }
    }
}

impl InodeState {
    /// A fresh inode.
    pub fn new(ino: u64, slot: &InodeSlot, kind: Kind) -> InodeState {
        InodeState {
            attr: Attr {
                ino,
                generation: slot.generation,
                kind,
                size: 0,
                blocks: 0,
                nlink: if kind == Kind::Dir { 2 } else { 1 },
                mode: slot.mode,
                uid: slot.uid,
                gid: slot.gid,
                atime_ns: slot.ctime_ns,
                mtime_ns: slot.ctime_ns,
                ctime_ns: slot.ctime_ns,
                crtime_ns: slot.ctime_ns,
                rdev: slot.rdev,
            },
            parent: slot.parent,
            log: LogState {
                next_seq: 1,
                ..LogState::default()
            },
            map: FileMap::default(),
            owners: Owners::default(),
            dir: Default::default(),
            removed: false,
            freed: false,
            wc: None,
            xattr: None,
            redo: None,
            unflushed: Vec::new(),
        }
    }

    /// Extended attributes (and POSIX ACLs), by name.
    pub fn xattrs(&self) -> &XattrMap {
        self.xattr.as_ref().map_or(&NO_XATTRS, |x| &x.map)
    }

    /// The extended attributes, to change.
    pub fn xattrs_mut(&mut self) -> &mut XattrMap {
        &mut self.xattr.get_or_insert_default().map
    }

    /// Take the extended attributes, leaving none.
    pub fn take_xattrs(&mut self) -> XattrMap {
        self.xattr
            .as_mut()
            .map(|x| std::mem::take(&mut x.map))
            .unwrap_or_default()
    }

    /// Replace the extended attributes with `map` (no box made for an empty map on an inode
    /// that has none).
    pub fn set_xattrs(&mut self, map: XattrMap) {
        if !map.is_empty() || self.xattr.is_some() {
            self.xattr.get_or_insert_default().map = map;
        }
    }

    /// Value bytes of an `XattrSet` whose pieces were replayed and its set entry not yet
    /// (empty between appends).
    pub fn xattr_pending(&self) -> &[u8] {
        self.xattr.as_ref().map_or(&[], |x| &x.pending)
    }

    /// Drop the pending pieces (fsck, after reporting them).
    pub fn clear_xattr_pending(&mut self) {
        if let Some(x) = self.xattr.as_mut() {
            x.pending.clear();
            x.pending_pages.clear();
        }
    }

    /// Apply one committed entry read from media, which lies in logical log page `at` (GC
    /// bookkeeping: the page becomes the owner of every key the entry sets): [`Self::check`],
    /// then [`Self::apply_checked`]. Replay and fsck use it; an entry the state cannot take is
    /// `Corrupt` and changes nothing.
    pub fn apply(
        &mut self,
        e: &Entry,
        ino: u64,
        bounds: Bounds,
        freed: &mut impl Extend<u64>,
        at: u64,
    ) -> Result<()> {
        self.check(e, ino, bounds)?;
        self.apply_checked(e, freed, at);
        Ok(())
    }

    /// Whether `e` applies to this state (what [`Self::apply_checked`] assumes).
    pub fn check(&self, e: &Entry, ino: u64, bounds: Bounds) -> Result<()> {
        self.check_in(e, ino, bounds, &mut NameOverlay::default())
    }

    /// Whether `entries`, applied in order, all apply to this state: a transaction's prepare
    /// step checks its appends with it, so that applying them after the commit cannot fail.
    pub fn check_all(&self, entries: &[Entry], ino: u64, bounds: Bounds) -> Result<()> {
        let mut names = NameOverlay::default();
        for (i, e) in entries.iter().enumerate() {
            // The last entry's names need not be recorded (no allocation for one entry).
            names.track = i + 1 < entries.len();
            self.check_in(e, ino, bounds, &mut names)?;
        }
        Ok(())
    }

    /// [`Self::check`] with the names earlier entries of the same append added and removed.
    fn check_in<'e>(
        &self,
        e: &'e Entry,
        ino: u64,
        bounds: Bounds,
        names: &mut NameOverlay<'e>,
    ) -> Result<()> {
        let bad = |what: &str| Error::corrupt(what.to_string(), format!("inode {ino}"));
        let pending = names.xattr_pending.unwrap_or(self.xattr_pending().len());
        match e {
            Entry::XattrChunk { offset, data } => {
                if *offset as usize != pending {
                    return Err(bad("xattr value piece out of order"));
                }
                names.xattr_pending = Some(pending + data.len());
                return Ok(());
            }
            Entry::XattrSet {
                value_len, inline, ..
            } => {
                if pending + inline.len() != *value_len as usize {
                    return Err(bad("xattr value length against its pieces"));
                }
                names.xattr_pending = Some(0);
                return Ok(());
            }
            _ if pending != 0 => return Err(bad("xattr value pieces without their set entry")),
            Entry::XattrRemove { .. } => return Ok(()),
            Entry::Write {
                pgoff,
                block,
                num_pages,
                ..
            } => {
                if self.attr.kind == Kind::Dir {
                    return Err(bad("write entry in a directory log"));
                }
                if self.attr.kind.is_special() {
                    return Err(bad("write entry in the log of a FIFO, socket or device"));
                }
                let n = *num_pages as u64;
                if *block != 0 && !bounds.contains(*block, n) {
                    return Err(bad("write extent outside the image"));
                }
                if pgoff
                    .checked_add(n)
                    .is_none_or(|e| e > crate::layout::MAX_FILE_PAGES)
                {
                    return Err(bad("write extent beyond the largest file"));
                }
            }
            Entry::SetAttr(a) => {
                if a.mask & attr_mask::SIZE != 0 && self.attr.kind == Kind::Dir {
                    return Err(bad("size change in a directory log"));
                }
                if a.mask & attr_mask::SIZE != 0 && a.size != 0 && self.attr.kind.is_special() {
                    return Err(bad("a size for a FIFO, socket or device"));
                }
            }
            Entry::Link { .. } => {}
            Entry::DirAdd {
                ino: child, name, ..
            } => {
                if self.attr.kind != Kind::Dir {
                    return Err(bad("directory entry in a non-directory log"));
                }
                if names.lookup(&self.dir, name).is_some() {
                    return Err(bad("duplicate name in directory log"));
                }
                names.set(name, Some(*child));
            }
            Entry::DirRemove {
                ino: child, name, ..
            } => {
                if self.attr.kind != Kind::Dir {
                    return Err(bad("directory entry in a non-directory log"));
                }
                if names.lookup(&self.dir, name) != Some(*child) {
                    return Err(bad("removal of a name the directory does not hold"));
                }
                names.set(name, None);
            }
            Entry::CacheAttach { .. } => return Err(bad("cache entry in an inode log")),
            Entry::WriteRedo { .. } => {
                if let Some(r) = e.as_redo() {
                    self.check_redo(&r, ino)?;
                }
            }
        }
        Ok(())
    }

    /// Whether redo write `r` applies to this state (the `WriteRedo` arm of the checks).
    pub fn check_redo(&self, r: &RedoRef<'_>, ino: u64) -> Result<()> {
        let bad = |what: &str| Error::corrupt(what.to_string(), format!("inode {ino}"));
        if self.attr.kind != Kind::File {
            return Err(bad("redo write in the log of a non-file"));
        }
        // Unmapped here: the `Write` that mapped the page was collected by fast GC, which
        // needs a later entry that remapped the page, and that entry follows this one (a redo
        // write is made while its block is the page's): superseded.
        if self.map.get(&r.pgoff).is_some_and(|&b| b != r.block) {
            return Err(bad("redo write to a page mapped to another block"));
        }
        let end = r
            .pgoff
            .checked_mul(BLOCK)
            .and_then(|o| o.checked_add(r.at as u64 + r.data.len() as u64));
        if end.is_none_or(|e| e > r.size) {
            return Err(bad("redo write past the file size it sets"));
        }
        Ok(())
    }

    /// Apply redo write `r`, held by logical log page `at` (the `WriteRedo` arm of
    /// [`Self::apply_checked`]). The bytes are in the block already (stored in place after
    /// the commit, or again by recovery from `redo`): only the attributes change here.
    pub fn apply_redo(&mut self, r: &RedoRef<'_>, at: u64) {
        self.attr.size = r.size;
        self.attr.mtime_ns = r.mtime_ns;
        self.attr.ctime_ns = r.mtime_ns;
        self.own(&[K_SIZE, K_MTIME, K_CTIME], at);
        // Recovery only (`redo` is None after the mount): a write whose block is still the
        // page's is stored again.
        if self.redo.is_none() {
            return;
        }
        let current = self.map.get(&r.pgoff).copied() == Some(r.block);
        if let Some(list) = self.redo.as_mut().filter(|_| current) {
            list.push(Redo {
                pgoff: r.pgoff,
                block: r.block,
                at: r.at,
                data: r.data.to_vec(),
            });
        }
    }

    /// Apply one entry that [`Self::check`] accepted (infallible: a transaction applies its
    /// committed entries with it, after the commit point).
    pub fn apply_checked(&mut self, e: &Entry, freed: &mut impl Extend<u64>, at: u64) {
        match e {
            Entry::Write {
                pgoff,
                block,
                num_pages,
                size,
                mtime_ns,
            } => {
                let n = *num_pages as u64;
                if *block == 0 {
                    // A hole: visit only the pages mapped in range (`num_pages` is untrusted,
                    // up to 2^32: a loop over every page would stall the mount).
                    let mapped: Vec<u64> = self
                        .map
                        .range(*pgoff..*pgoff + n)
                        .map(|(pg, _)| pg)
                        .collect();
                    for pg in mapped {
                        if let Some(m) = self.map.remove(pg) {
                            release(&mut self.log, m.owner);
                            freed.extend([m.block]);
                            self.attr.blocks -= 1;
                        }
                    }
                } else {
                    for i in 0..n {
                        let pg = pgoff + i;
                        let new = Mapped {
                            block: block + i,
                            owner: at,
                        };
                        let old = self.map.insert(pg, new);
                        if old.is_none_or(|m| m.owner != at) {
                            if let Some(p) = self.log.page_mut(at) {
                                p.live += 1;
                            }
                            if let Some(m) = old {
                                release(&mut self.log, m.owner);
                            }
                        }
                        match old.map(|m| m.block) {
                            // Re-applying a mapping it already has frees nothing.
                            Some(b) if b == block + i => {}
                            Some(b) => freed.extend([b]),
                            None => self.attr.blocks += 1,
                        }
                    }
                }
                self.attr.size = *size;
                self.attr.mtime_ns = *mtime_ns;
                self.attr.ctime_ns = *mtime_ns;
                self.own(&[K_SIZE, K_MTIME, K_CTIME], at);
                if let Some(r) = &mut self.redo {
                    r.retain(|w| !(*pgoff..pgoff.saturating_add(n)).contains(&w.pgoff));
                }
            }
            Entry::WriteRedo { .. } => {
                if let Some(r) = e.as_redo() {
                    self.apply_redo(&r, at);
                }
            }
            Entry::SetAttr(a) => {
                if a.mask & attr_mask::MODE != 0 {
                    self.attr.mode = a.mode;
                    self.own(&[K_MODE], at);
                }
                if a.mask & attr_mask::UID != 0 {
                    self.attr.uid = a.uid;
                    self.own(&[K_UID], at);
                }
                if a.mask & attr_mask::GID != 0 {
                    self.attr.gid = a.gid;
                    self.own(&[K_GID], at);
                }
                if a.mask & attr_mask::SIZE != 0 {
                    // A shrink drops the pages beyond the new size; a grow keeps pages
                    // allocated past the old size (fallocate KEEP_SIZE: zero-filled), as
                    // tmpfs and ext4 do.
                    if a.size < self.attr.size {
                        freed.extend(self.truncate_map(a.size));
                        let kept = a.size.div_ceil(BLOCK);
                        if let Some(r) = &mut self.redo {
                            r.retain(|w| w.pgoff < kept);
                        }
                    }
                    self.attr.size = a.size;
                    self.own(&[K_SIZE], at);
                }
                if a.mask & attr_mask::ATIME != 0 {
                    self.attr.atime_ns = a.atime_ns;
                    self.own(&[K_ATIME], at);
                }
                if a.mask & attr_mask::MTIME != 0 {
                    self.attr.mtime_ns = a.mtime_ns;
                    self.own(&[K_MTIME], at);
                }
                if a.mask & attr_mask::CTIME != 0 {
                    self.attr.ctime_ns = a.ctime_ns;
                    self.own(&[K_CTIME], at);
                }
            }
            Entry::Link {
                nlink,
                ctime_ns,
                parent,
            } => {
                if self.attr.kind != Kind::Dir {
                    self.attr.nlink = *nlink;
                    self.own(&[K_NLINK], at);
                }
                if *parent != 0 {
                    self.parent = *parent;
                    self.own(&[K_PARENT], at);
                }
                self.attr.ctime_ns = *ctime_ns;
                self.own(&[K_CTIME], at);
            }
            Entry::DirAdd {
                ino: child,
                kind,
                name,
                mtime_ns,
            } => {
                let ent = DirEnt {
                    ino: *child,
                    kind: *kind,
                    log_page: at,
                };
                let old = self.dir.insert(crate::hash::Name::from_slice(name), ent);
                debug_assert!(old.is_none(), "checked: the name was free");
                if let Some(p) = self.log.page_mut(at) {
                    p.live += 1;
                }
                if *kind == Kind::Dir {
                    self.attr.nlink += 1;
                }
                self.attr.mtime_ns = *mtime_ns;
                self.attr.ctime_ns = *mtime_ns;
                self.own(&[K_MTIME, K_CTIME], at);
            }
            Entry::CacheAttach { .. } => debug_assert!(false, "checked: not in an inode log"),
            Entry::XattrChunk { data, .. } => {
                let x = self.xattr.get_or_insert_default();
                x.pending.extend_from_slice(data);
                if x.pending_pages.last() != Some(&at) {
                    x.pending_pages.push(at);
                }
            }
            Entry::XattrSet {
                name,
                inline,
                ctime_ns,
                ..
            } => {
                let x = self.xattr.get_or_insert_default();
                let mut value = std::mem::take(&mut x.pending);
                value.extend_from_slice(inline);
                let mut pages = std::mem::take(&mut x.pending_pages);
                if pages.last() != Some(&at) {
                    pages.push(at);
                }
                for &p in &pages {
                    if let Some(l) = self.log.page_mut(p) {
                        l.live += 1;
                        // A prefix that drops a piece must drop its set entry too (replaying
                        // the set needs its pieces).
                        l.reach = l.reach.max(at);
                    }
                }
                let old = self
                    .xattrs_mut()
                    .insert(name.clone().into_boxed_slice(), Xattr { value, pages });
                if let Some(old) = old {
                    for p in old.pages {
                        release(&mut self.log, p);
                    }
                }
                self.attr.ctime_ns = *ctime_ns;
                self.own(&[K_CTIME], at);
            }
            Entry::XattrRemove { name, ctime_ns } => {
                // A removal needs nothing: replaying it after its set was dropped is a no-op.
                let old = self
                    .xattr
                    .as_mut()
                    .and_then(|x| x.map.remove(name.as_slice()));
                if let Some(old) = old {
                    for p in old.pages {
                        release(&mut self.log, p);
                    }
                }
                self.attr.ctime_ns = *ctime_ns;
                self.own(&[K_CTIME], at);
            }
            Entry::DirRemove {
                ino: child,
                name,
                mtime_ns,
            } => {
                if let Some(ent) = self.dir.remove(name.as_slice()) {
                    debug_assert_eq!(ent.ino, *child, "checked: the name held the inode");
                    if ent.kind == Kind::Dir {
                        self.attr.nlink -= 1;
                    }
                    release(&mut self.log, ent.log_page);
                    if let Some(p) = self.log.page_mut(ent.log_page) {
                        p.reach = p.reach.max(at);
                    }
                }
                self.attr.mtime_ns = *mtime_ns;
                self.attr.ctime_ns = *mtime_ns;
                self.own(&[K_MTIME, K_CTIME], at);
            }
        }
        if let Some(p) = self.log.page_mut(at) {
            p.entries += 1;
        }
    }

    /// Page `at` now owns attribute keys `keys`.
    fn own(&mut self, keys: &[usize], at: u64) {
        for &k in keys {
            claim(&mut self.log, &mut self.owners.attr[k], at);
        }
    }

    /// Apply a committed append of `entries` (staged as `staged`, checked with
    /// [`Self::check_all`] before its commit): the log position, then every entry with the
    /// page that holds it. Blocks the entries replaced go to `freed`.
    pub fn apply_staged(
        &mut self,
        staged: &crate::log::Staged,
        entries: &[Entry],
        freed: &mut impl Extend<u64>,
    ) {
        let (first, breaks) = staged.apply(&mut self.log);
        if breaks.is_empty() {
            // Every entry in one page (most appends).
            for e in entries {
                self.apply_checked(e, freed, first);
            }
            return;
        }
        let mut at = first;
        let mut next_break = breaks.iter().peekable();
        for (i, e) in entries.iter().enumerate() {
            while next_break.next_if(|&&b| b <= i).is_some() {
                at += 1;
            }
            self.apply_checked(e, freed, at);
        }
    }

    /// Apply one committed entry of the write-cache log read from media.
    pub fn apply_cache(&mut self, e: &Entry, bounds: Bounds) -> Result<()> {
        self.check_cache(std::slice::from_ref(e), bounds)?;
        self.apply_cache_checked(e);
        Ok(())
    }

    /// Whether `entries` all apply to the write cache: attachments of distinct pages not
    /// cached yet, to blocks inside the image.
    pub fn check_cache(&self, entries: &[Entry], bounds: Bounds) -> Result<()> {
        let mut seen =
            std::collections::HashSet::with_capacity(entries.len().min(64).saturating_sub(1));
        for e in entries {
            let Entry::CacheAttach { pgoff, block, .. } = e else {
                return Err(Error::corrupt(
                    "non-cache entry in the cache log",
                    "cache log",
                ));
            };
            if !bounds.contains(*block, 1) || *pgoff >= crate::layout::MAX_FILE_PAGES {
                return Err(Error::corrupt("cache entry out of range", "cache log"));
            }
            if self.cache().map.contains_key(pgoff) || (entries.len() > 1 && !seen.insert(*pgoff)) {
                return Err(Error::corrupt("page cached twice", "cache log"));
            }
        }
        Ok(())
    }

    /// Apply one cache entry [`Self::check_cache`] accepted (infallible).
    pub fn apply_cache_checked(&mut self, e: &Entry) {
        if let Entry::CacheAttach {
            pgoff,
            block,
            atomic,
        } = e
        {
            let wc = self.cache_mut();
            wc.map.insert(*pgoff, *block);
            wc.atomic = *atomic;
            if wc.since.is_none() {
                wc.since = Some(std::time::Instant::now());
            }
        }
    }

    /// Drop mappings at or beyond `size`; returns the dropped blocks.
    pub fn truncate_map(&mut self, size: u64) -> Vec<u64> {
        let first_gone = size.div_ceil(BLOCK);
        // Most size changes leave every mapped page in place: no split (it allocates).
        if self.map.last_page().is_none_or(|last| last < first_gone) {
            return Vec::new();
        }
        let gone = self.map.split_off(first_gone);
        self.attr.blocks -= gone.len() as u64;
        gone.into_iter()
            .map(|m| {
                release(&mut self.log, m.owner);
                m.block
            })
            .collect()
    }

    /// Public attributes.
    pub fn attr(&self) -> Attr {
        self.attr.clone()
    }

    /// The write cache (an empty one, not stored, when the inode has none).
    #[inline]
    pub fn cache(&self) -> &WriteCache {
        self.wc.as_deref().unwrap_or(&NO_CACHE)
    }

    /// The write cache, made empty if the inode has none.
    pub fn cache_mut(&mut self) -> &mut WriteCache {
        self.wc.get_or_insert_with(|| Box::new(WriteCache::EMPTY))
    }

    /// Forget the write cache: no page, an empty log (its blocks are the caller's to free).
    pub fn drop_cache(&mut self) {
        self.wc = None;
    }
}

/// Read, validate and replay inode `ino` from media: its slot, its log and its write-cache
/// log.
pub fn load(media: &Media, slot_off: u64, ino: u64, bounds: Bounds) -> Result<InodeState> {
    load_with(media, slot_off, ino, bounds, None, false).map(|(st, _)| st)
}

/// [`load`] for recovery. `torn`: the last session made one-fence commits (the mount state
/// says so), so the log's last commit may be torn; if it is ([`torn_cut`], with the checks
/// given), the state is loaded up to the end of the commit before it, and that tail is
/// returned for the caller to store. `redo`: collect the redo writes to store again
/// ([`InodeState::redo`]).
pub fn load_with(
    media: &Media,
    slot_off: u64,
    ino: u64,
    bounds: Bounds,
    torn: Option<&TornCheck<'_>>,
    redo: bool,
) -> Result<(InodeState, Option<u64>)> {
    let (slot, kind) = read_slot(media, slot_off, ino)?;
    let mut st = InodeState::new(ino, &slot, kind);
    let cut = load_into(
        media,
        slot_off,
        (&slot, kind),
        ino,
        bounds,
        torn,
        redo,
        &mut st,
    )?;
    Ok((st, cut))
}

/// The slot of inode `ino` at `slot_off`, validated, and its kind ([`Error::NotFound`]: a
/// free slot).
pub fn read_slot(media: &Media, slot_off: u64, ino: u64) -> Result<(InodeSlot, Kind)> {
    let slot: InodeSlot = media.read_pod(slot_off)?;
    if slot.kind == 0 {
        return Err(Error::NotFound);
    }
    let kind = slot.validate(ino)?;
    Ok((slot, kind))
}

/// [`load_with`] into `st`, made by `InodeState::new(ino, slot, kind)` from [`read_slot`]:
/// the state is built where it will live (an inode's lock in its `Arc`), not moved there
/// (it is 700 bytes, and a load returned by value was copied about nine times on its way).
#[allow(clippy::too_many_arguments)]
pub fn load_into(
    media: &Media,
    slot_off: u64,
    (slot, kind): (&InodeSlot, Kind),
    ino: u64,
    bounds: Bounds,
    torn: Option<&TornCheck<'_>>,
    redo: bool,
    st: &mut InodeState,
) -> Result<Option<u64>> {
    use crate::layout::inode::{CACHE_HEAD_OFFSET, CACHE_TAIL_OFFSET, HEAD_OFFSET, TAIL_OFFSET};
    let tail = media.load_u64(slot_off + TAIL_OFFSET)?;
    let head = media.load_u64(slot_off + HEAD_OFFSET)?;
    if redo {
        st.redo = Some(Vec::new());
    }
    let main = |tail, st: &mut InodeState| load_log(media, ino, head, tail, bounds, st);
    // One walk in the common case: a torn commit is looked for (a second walk, `torn_cut`)
    // only where this one broke, or ended inside a commit, or the last commit's data runs
    // do not match their checksums.
    let cut = match torn {
        None => {
            main(tail, st)?;
            None
        }
        Some(check) => {
            let first = main(tail, st);
            let whole = match &first {
                Ok(last) if !last.more => {
                    let whole = check.whole(media, ino, &last.checks)?;
                    if !whole {
                        // torn_cut takes these pages from the budget again.
                        check
                            .budget
                            .fetch_add(run_pages(&last.checks.runs), Ordering::Relaxed);
                    }
                    whole
                }
                _ => false,
            };
            if whole {
                None
            } else {
                match torn_cut(media, ino, head, tail, bounds, check)? {
                    Some(c) => {
                        // Replayed again, from a new state, up to the cut.
                        *st = InodeState::new(ino, slot, kind);
                        if redo {
                            st.redo = Some(Vec::new());
                        }
                        main(c, st)?;
                        Some(c)
                    }
                    None => {
                        first?;
                        None
                    }
                }
            }
        }
    };
    let ctail = media.load_u64(slot_off + CACHE_TAIL_OFFSET)?;
    let chead = media.load_u64(slot_off + CACHE_HEAD_OFFSET)?;
    if ctail != 0 && kind != Kind::File {
        return Err(Error::corrupt(
            "write cache on a non-file",
            format!("inode {ino}"),
        ));
    }
    let (cache_log, _) = walk_log(
        media,
        ino,
        "cache log",
        chead,
        ctail,
        bounds,
        |e, _, where_| {
            st.apply_cache(e, bounds)
                .map_err(|err| Error::corrupt(err.to_string(), where_()))
        },
    )?;
    // An attachment replayed made the cache; an empty cache log leaves none.
    if cache_log.tail_off != 0 {
        st.cache_mut().log = cache_log;
    }
    Ok(cut)
}

/// Replay the log of inode `ino` from `head` to `tail` into `st` (new: `InodeState::new`);
/// also returns what the walk saw of the last commit.
fn load_log(
    media: &Media,
    ino: u64,
    head: u64,
    tail: u64,
    bounds: Bounds,
    st: &mut InodeState,
) -> Result<LastCommit> {
    let mut scratch = Vec::new();
    // The walk numbers pages from 0; each page's liveness record exists before its entries
    // are applied.
    let (log, last) = walk_log(media, ino, "log", head, tail, bounds, |e, at, where_| {
        let want = usize::try_from(at + 1).unwrap_or(usize::MAX);
        if st.log.live.len() < want {
            st.log.live.resize(want, PageLive::default());
        }
        st.apply(e, ino, bounds, &mut scratch, at)
            .map_err(|err| match err {
                Error::Corrupt { what, .. } => Error::corrupt(what, where_()),
                other => other,
            })?;
        scratch.clear();
        Ok(())
    })?;
    if !st.xattr_pending().is_empty() {
        return Err(Error::corrupt(
            "xattr value pieces without their set entry at the end of the log",
            format!("inode {ino}"),
        ));
    }
    let mut live = std::mem::take(&mut st.log.live);
    live.resize(log.pages.len(), PageLive::default());
    st.log = LogState { live, ..log };
    Ok(last)
}

/// Where a torn last commit of a one-fence session ends the log of inode `ino`, if it has
/// one (DESIGN.md §5.1): the walk breaks inside the tail page (the commit's entries were not
/// all durable: past the old tail the page was zero), or the last entry says more of its
/// commit follows, or a data run of the last commit does not match its checksum, or a new
/// inode's slot it names does not hold the checksum its `DirAdd` carries. The cut is
/// the end of the commit before it, which must lie in the tail page too (a one-fence commit
/// never starts a page); anything else is not a torn commit (`None`: the load reports it).
pub fn torn_cut(
    media: &Media,
    ino: u64,
    head: u64,
    tail: u64,
    bounds: Bounds,
    check: &TornCheck<'_>,
) -> Result<Option<u64>> {
    if tail == 0 {
        return Ok(None);
    }
    let tail_page = tail / BLOCK;
    let in_tail_page = |b: u64| b / BLOCK == tail_page && !b.is_multiple_of(BLOCK) && b < tail;
    // End of the last entry that ends a commit, and the one before it.
    let (mut boundary, mut before) = (0u64, 0u64);
    // Checks of the commit in progress, and of the last one.
    let mut open = CommitChecks::default();
    let mut last = CommitChecks::default();
    let mut more = false;
    for item in LogCursor::new(media, ino, "log", head, tail, bounds) {
        let Ok(item) = item else {
            return Ok(in_tail_page(boundary).then_some(boundary));
        };
        open.note(&item);
        more = item.marks.more;
        if !more {
            before = boundary;
            boundary = item.page * BLOCK + item.offset + item.len;
            last = std::mem::take(&mut open);
        }
    }
    if more {
        return Ok(in_tail_page(boundary).then_some(boundary));
    }
    if last
        .runs
        .iter()
        .any(|&(block, pages, _)| !bounds.contains(block, u64::from(pages)))
    {
        return Ok(None); // the load reports it
    }
    if check.whole(media, ino, &last)? {
        Ok(None)
    } else {
        Ok(in_tail_page(before).then_some(before))
    }
}

/// Walk a log chain from `head` to `tail`, validating it, calling `f` on every entry in order.
/// Returns the log's position (pages, tail, next seq).
fn walk_log(
    media: &Media,
    ino: u64,
    which: &'static str,
    head: u64,
    tail: u64,
    bounds: Bounds,
    mut f: impl FnMut(&Entry, u64, &dyn Fn() -> String) -> Result<()>,
) -> Result<(LogState, LastCommit)> {
    let mut log = LogState {
        next_seq: 1,
        ..LogState::default()
    };
    let mut last = LastCommit::default();
    if tail == 0 {
        return Ok((log, last));
    }
    // Checks of the commit in progress.
    let mut open = CommitChecks::default();
    let mut cursor = LogCursor::new(media, ino, which, head, tail, bounds);
    for item in cursor.by_ref() {
        let item = item?;
        let (page, pos) = (item.page, item.offset);
        let where_ = || format!("inode {ino} {which} page {page} offset {pos}");
        f(&item.entry, item.page_index, &where_)?;
        log.entries += 1;
        open.note(&item);
        last.more = item.marks.more;
        if !last.more {
            last.checks = std::mem::take(&mut open);
        }
    }
    log.next_seq = cursor.last_seq() + 1;
    log.pages = cursor.into_pages();
    log.head_block = head;
    log.tail_off = tail;
    Ok((log, last))
}

/// What a log walk saw of the log's last commit (DESIGN.md §5.1.1).
#[derive(Default)]
struct LastCommit {
    /// The last entry says more of its commit follows (a torn commit).
    more: bool,
    /// What the last whole commit's entries carry to check.
    checks: CommitChecks,
}

/// What the entries of one commit carry for recovery to check (DESIGN.md §5.1.1, §5.3).
#[derive(Default)]
struct CommitChecks {
    /// Checksummed data runs: (first block, pages, crc32).
    runs: Vec<(u64, u32, u32)>,
    /// New inodes' slots: (inode, slot checksum).
    slots: Vec<(u64, u32)>,
}

impl CommitChecks {
    /// Take in the checks of one entry of the commit.
    fn note(&mut self, item: &crate::cursor::LogItem) {
        match (&item.entry, item.marks) {
            (
                &Entry::Write {
                    block, num_pages, ..
                },
                EntryMarks {
                    data_crc: Some(crc),
                    ..
                },
            ) => self.runs.push((block, num_pages, crc)),
            (
                &Entry::DirAdd { ino, .. },
                EntryMarks {
                    slot_crc: Some(crc),
                    ..
                },
            ) => self.slots.push((ino, crc)),
            _ => {}
        }
    }
}

/// What recovery checks the last commit of a one-fence session's logs against (DESIGN.md
/// §5.1.1, §5.3).
pub struct TornCheck<'a> {
    /// Data pages all the checks of one image may still read. Whole images' last commits
    /// name distinct blocks, so the image's block count is enough; a crafted image whose logs
    /// claim the same blocks over and over fails as `Corrupt` instead of reading for hours.
    pub budget: &'a std::sync::atomic::AtomicU64,
    /// The inode-table chunks (`read_chunks`), where the slots of new inodes are read.
    pub chunks: &'a [u64],
}

impl TornCheck<'_> {
    /// Whether everything `checks` names persisted: every data run matches its crc32, every
    /// new inode's slot is valid and holds the checksum its `DirAdd` carries.
    fn whole(&self, media: &Media, ino: u64, checks: &CommitChecks) -> Result<bool> {
        for &(new, crc) in &checks.slots {
            let Some(off) = slot_offset(self.chunks, new) else {
                return Ok(false);
            };
            match read_slot(media, off, new) {
                Ok((slot, _)) if slot.csum == crc => {}
                Ok(_) | Err(Error::NotFound | Error::Corrupt { .. }) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        runs_whole(media, ino, &checks.runs, self.budget)
    }
}

/// Data pages the checksummed runs `runs` name.
fn run_pages(runs: &[(u64, u32, u32)]) -> u64 {
    runs.iter().map(|&(_, n, _)| u64::from(n)).sum()
}

/// Whether every checksummed data run of `runs` (inside the image) matches its crc32, after
/// taking its pages from the torn-commit `budget` (`Corrupt` once that is spent).
fn runs_whole(
    media: &Media,
    ino: u64,
    runs: &[(u64, u32, u32)],
    budget: &std::sync::atomic::AtomicU64,
) -> Result<bool> {
    if runs.is_empty() {
        return Ok(true);
    }
    let need = run_pages(runs);
    if budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            b.checked_sub(need)
        })
        .is_err()
    {
        return Err(Error::corrupt(
            "checksummed data runs of last commits claim more blocks than the image has",
            format!("inode {ino}"),
        ));
    }
    let mut buf = vec![0u8; BLOCK as usize];
    for &(block, pages, crc) in runs {
        let mut h = crate::layout::crc_hasher();
        for k in 0..u64::from(pages) {
            media.read((block + k) * BLOCK, &mut buf)?;
            h.update(&buf);
        }
        if h.finalize() != crc {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::inode::NewInode;

    fn file_state() -> InodeState {
        let slot = InodeSlot::fresh(NewInode {
            kind: Kind::File,
            generation: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            parent: crate::ROOT_INO,
            ctime_ns: 0,
            rdev: 0,
        });
        let mut st = InodeState::new(9, &slot, Kind::File);
        st.log.live.resize(1, PageLive::default());
        st
    }

    /// The file map (small and chunked forms) against a page-keyed B-tree: inserts, removals,
    /// lookups, ordered iteration both ways, ranges (empty, inverted, unbounded, at chunk
    /// edges), truncation, the move from one form to the other.
    #[test]
    fn file_map_behaves_like_a_page_keyed_tree() {
        use proptest::prelude::*;
        #[derive(Debug, Clone)]
        enum Op {
            Insert(u64, u64),
            Remove(u64),
            Split(u64),
            Range(u64, u64),
        }
        let page = prop_oneof![
            0u64..200,
            Just(u64::MAX / CHUNK_PAGES * CHUNK_PAGES),
            0u64..4
        ];
        let op = prop_oneof![
            (page.clone(), 1u64..1000).prop_map(|(p, b)| Op::Insert(p, b)),
            page.clone().prop_map(Op::Remove),
            page.clone().prop_map(Op::Split),
            (page.clone(), page).prop_map(|(a, b)| Op::Range(a, b)),
        ];
        proptest!(ProptestConfig::with_cases(300), |(ops in proptest::collection::vec(op, 1..80))| {
            let mut m = FileMap::default();
            let mut model: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            for (i, o) in ops.into_iter().enumerate() {
                let owner = i as u64;
                match o {
                    Op::Insert(p, b) => {
                        let old = m.insert(p, Mapped { block: b, owner });
                        let want = model.insert(p, (b, owner));
                        prop_assert_eq!(old.map(|x| (x.block, x.owner)), want);
                    }
                    Op::Remove(p) => {
                        let old = m.remove(p);
                        prop_assert_eq!(old.map(|x| (x.block, x.owner)), model.remove(&p));
                    }
                    Op::Split(f) => {
                        let gone: Vec<(u64, u64)> =
                            m.split_off(f).into_iter().map(|x| (x.block, x.owner)).collect();
                        let want: Vec<(u64, u64)> = model.split_off(&f).into_values().collect();
                        prop_assert_eq!(gone, want);
                    }
                    Op::Range(a, b) => {
                        let got: Vec<(u64, u64)> = m.range(a..b).collect();
                        let want: Vec<(u64, u64)> = if a <= b {
                            model.range(a..b).map(|(&p, &(b, _))| (p, b)).collect()
                        } else {
                            Vec::new()
                        };
                        prop_assert_eq!(got, want);
                        let got: Vec<u64> = m.range(a..=b).rev().map(|(p, _)| p).collect();
                        let want: Vec<u64> = if a <= b {
                            model.range(a..=b).rev().map(|(&p, _)| p).collect()
                        } else {
                            Vec::new()
                        };
                        prop_assert_eq!(got, want);
                        let got: Vec<u64> = m.range(a..).map(|(p, _)| p).collect();
                        let want: Vec<u64> = model.range(a..).map(|(&p, _)| p).collect();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(m.len(), model.len());
                let all: Vec<(u64, u64)> = m.iter().collect();
                let want: Vec<(u64, u64)> = model.iter().map(|(&p, &(b, _))| (p, b)).collect();
                prop_assert_eq!(&all, &want);
                prop_assert_eq!(m.keys().next_back(), model.keys().next_back().copied());
                for p in [0u64, 1, 31, 32, 33, 63, 64, 199] {
                    prop_assert_eq!(m.get(&p).copied(), model.get(&p).map(|x| x.0));
                }
                // No empty chunk is kept; one form at a time; the small form sorted and small.
                prop_assert!(m.chunks.values().all(|c| c.live > 0));
                prop_assert!(m.small.is_empty() || m.chunks.is_empty());
                prop_assert!(m.small.windows(2).all(|w| w[0].pg < w[1].pg));
                prop_assert!(m.small.len() <= SMALL_PAGES);
            }
        });
    }

    /// Found by the `log_replay` fuzz target (fuzz/regressions/log_replay/): a hole entry of
    /// 2^32 - 1 pages looped over every page (minutes per entry at mount). Now it visits only
    /// the mapped pages; the mapped page in range is freed, the one past it is kept.
    #[test]
    fn hole_of_four_billion_pages_applies_at_once() {
        let bounds = Bounds { lo: 10, hi: 1000 };
        let mut st = file_state();
        let mut freed = Vec::new();
        let data = |pgoff, block| Entry::Write {
            pgoff,
            block,
            num_pages: 1,
            size: 1 << 40,
            mtime_ns: 1,
        };
        st.apply(&data(5, 20), 9, bounds, &mut freed, 0).unwrap();
        st.apply(&data(u32::MAX as u64 + 7, 21), 9, bounds, &mut freed, 0)
            .unwrap();
        assert_eq!(st.attr.blocks, 2);
        let start = std::time::Instant::now();
        let hole = Entry::Write {
            pgoff: 3,
            block: 0,
            num_pages: u32::MAX,
            size: 1 << 40,
            mtime_ns: 2,
        };
        st.apply(&hole, 9, bounds, &mut freed, 0).unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(freed, vec![20]);
        assert_eq!(st.attr.blocks, 1);
        assert_eq!(st.map.get(&(u32::MAX as u64 + 7)), Some(&21));
        assert_eq!(st.map.get(&5), None);
    }
}

#[cfg(test)]
mod size {
    /// The state is most of the DRAM an inode costs, and DRAM per inode bounds recovery
    /// (DESIGN.md §5.8): the write cache and other rare parts stay boxed.
    #[test]
    fn inode_state_stays_small() {
        assert!(
            std::mem::size_of::<super::InodeState>() <= 472,
            "InodeState is {} bytes",
            std::mem::size_of::<super::InodeState>()
        );
    }
}
