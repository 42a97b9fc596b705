//! DRAM state of an inode, rebuilt from its slot and its log.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU32;

use crate::sync::RwLock;

use crate::error::{Error, Result};
use crate::layout::entry::{attr_mask, Entry, LINE_BYTES};
use crate::layout::inode::InodeSlot;
use crate::layout::logpage::{PageTrailer, ENTRY_BYTES, TRAILER_OFFSET};
use crate::layout::{Kind, BLOCK};
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
}

/// The write cache's index: file page -> cache block (a hash map: O(1) for the store path).
pub type CacheMap = HashMap<u64, u64, std::hash::BuildHasherDefault<crate::engine::InoHasher>>;

/// A directory entry in DRAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEnt {
    /// Child inode.
    pub ino: u64,
    /// Child kind.
    pub kind: Kind,
}

/// Where the log of an inode stands.
#[derive(Clone, Debug, Default)]
pub struct LogState {
    /// First page (0 = empty log).
    pub head: u64,
    /// Committed tail offset (0 = empty log).
    pub tail: u64,
    /// All pages of the chain, in order.
    pub pages: Vec<u64>,
    /// Next entry sequence number.
    pub next_seq: u64,
    /// Entries in the log (live and dead), for GC decisions.
    pub entries: u64,
}

impl LogState {
    /// Block of the page holding the tail.
    pub fn tail_page(&self) -> Option<u64> {
        self.pages.last().copied()
    }
}

/// Mutable state of an inode, behind its lock.
#[derive(Debug)]
pub struct InodeState {
    /// Attributes.
    pub attr: Attr,
    /// Parent directory (directories only; files may have many).
    pub parent: u64,
    /// Log position.
    pub log: LogState,
    /// File map: page index -> block.
    pub map: BTreeMap<u64, u64>,
    /// Directory index.
    pub dir: HashMap<Box<[u8]>, DirEnt>,
    /// Unlinked from the tree (may still be open).
    pub removed: bool,
    /// Its blocks and slot were released.
    pub freed: bool,
    /// Write cache: file page -> cache block (pages written through a mapping, not yet
    /// migrated into the file map).
    pub cache: CacheMap,
    /// The cache log's position.
    pub cache_log: LogState,
    /// The cache holds failure-atomic pages (recovery discards them).
    pub cache_atomic: bool,
    /// When the oldest cached page was attached (for background writeback).
    pub cache_since: Option<std::time::Instant>,
}

/// An inode in the cache.
#[derive(Debug)]
pub struct Inode {
    /// Inode number.
    pub ino: u64,
    /// Region offset of its slot.
    pub slot_off: u64,
    /// Its state.
    pub state: RwLock<InodeState>,
    /// Open handles.
    pub open: AtomicU32,
}

/// The blocks a log page or a data extent may use: `[lo, hi)` (the allocator's range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// First allocatable block.
    pub lo: u64,
    /// One past the last.
    pub hi: u64,
}

impl Bounds {
    /// The bounds of an image.
    pub fn of(sb: &crate::layout::superblock::Superblock) -> Bounds {
        Bounds {
            lo: sb.first_free_block,
            hi: sb.replica_block,
        }
    }

    /// Whether `[start, start+n)` lies inside.
    pub fn contains(&self, start: u64, n: u64) -> bool {
        start >= self.lo && start.checked_add(n).is_some_and(|e| e <= self.hi)
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
            },
            parent: slot.parent,
            log: LogState {
                next_seq: 1,
                ..LogState::default()
            },
            map: BTreeMap::new(),
            dir: HashMap::new(),
            removed: false,
            freed: false,
            cache: CacheMap::default(),
            cache_log: LogState {
                next_seq: 1,
                ..LogState::default()
            },
            cache_atomic: false,
            cache_since: None,
        }
    }

    /// Apply one committed entry.
    pub fn apply(
        &mut self,
        e: &Entry,
        ino: u64,
        bounds: Bounds,
        freed: &mut Vec<u64>,
    ) -> Result<()> {
        let bad = |what: &str| Error::corrupt(what.to_string(), format!("inode {ino}"));
        match e {
            Entry::Write {
                pgoff,
                block,
                num_pages,
                size,
                mtime_ns,
            } => {
                if self.attr.kind == Kind::Dir {
                    return Err(bad("write entry in a directory log"));
                }
                let n = *num_pages as u64;
                if *block != 0 && !bounds.contains(*block, n) {
                    return Err(bad("write extent outside the image"));
                }
                if pgoff
                    .checked_add(n)
                    .is_none_or(|e| e > crate::MAX_FILE_PAGES)
                {
                    return Err(bad("write extent beyond the largest file"));
                }
                for i in 0..n {
                    let old = if *block == 0 {
                        self.map.remove(&(pgoff + i))
                    } else {
                        self.map.insert(pgoff + i, block + i)
                    };
                    match old {
                        // Re-applying a mapping it already has frees nothing.
                        Some(b) if *block != 0 && b == block + i => {}
                        Some(b) => freed.push(b),
                        None if *block != 0 => self.attr.blocks += 1,
                        None => {}
                    }
                    if *block == 0 && old.is_some() {
                        self.attr.blocks -= 1;
                    }
                }
                self.attr.size = *size;
                self.attr.mtime_ns = *mtime_ns;
                self.attr.ctime_ns = *mtime_ns;
            }
            Entry::SetAttr(a) => {
                if a.mask & attr_mask::MODE != 0 {
                    self.attr.mode = a.mode;
                }
                if a.mask & attr_mask::UID != 0 {
                    self.attr.uid = a.uid;
                }
                if a.mask & attr_mask::GID != 0 {
                    self.attr.gid = a.gid;
                }
                if a.mask & attr_mask::SIZE != 0 {
                    if self.attr.kind == Kind::Dir {
                        return Err(bad("size change in a directory log"));
                    }
                    freed.extend(self.truncate_map(a.size));
                    self.attr.size = a.size;
                }
                if a.mask & attr_mask::ATIME != 0 {
                    self.attr.atime_ns = a.atime_ns;
                }
                if a.mask & attr_mask::MTIME != 0 {
                    self.attr.mtime_ns = a.mtime_ns;
                }
                if a.mask & attr_mask::CTIME != 0 {
                    self.attr.ctime_ns = a.ctime_ns;
                }
            }
            Entry::Link {
                nlink,
                ctime_ns,
                parent,
            } => {
                if self.attr.kind != Kind::Dir {
                    self.attr.nlink = *nlink;
                }
                if *parent != 0 {
                    self.parent = *parent;
                }
                self.attr.ctime_ns = *ctime_ns;
            }
            Entry::DirAdd {
                ino: child,
                kind,
                name,
                mtime_ns,
            } => {
                if self.attr.kind != Kind::Dir {
                    return Err(bad("directory entry in a non-directory log"));
                }
                let ent = DirEnt {
                    ino: *child,
                    kind: *kind,
                };
                if self
                    .dir
                    .insert(name.clone().into_boxed_slice(), ent)
                    .is_some()
                {
                    return Err(bad("duplicate name in directory log"));
                }
                if *kind == Kind::Dir {
                    self.attr.nlink += 1;
                }
                self.attr.mtime_ns = *mtime_ns;
                self.attr.ctime_ns = *mtime_ns;
            }
            Entry::CacheAttach { .. } => {
                return Err(bad("cache entry in an inode log"));
            }
            Entry::DirRemove {
                ino: child,
                name,
                mtime_ns,
            } => {
                if self.attr.kind != Kind::Dir {
                    return Err(bad("directory entry in a non-directory log"));
                }
                match self.dir.remove(name.as_slice()) {
                    Some(ent) if ent.ino == *child => {
                        if ent.kind == Kind::Dir {
                            self.attr.nlink -= 1;
                        }
                    }
                    _ => return Err(bad("removal of a name the directory does not hold")),
                }
                self.attr.mtime_ns = *mtime_ns;
                self.attr.ctime_ns = *mtime_ns;
            }
        }
        Ok(())
    }

    /// Apply one committed entry of the write-cache log.
    pub fn apply_cache(&mut self, e: &Entry, bounds: Bounds) -> Result<()> {
        match e {
            Entry::CacheAttach {
                pgoff,
                block,
                atomic,
            } => {
                if !bounds.contains(*block, 1) || *pgoff >= crate::MAX_FILE_PAGES {
                    return Err(Error::corrupt("cache entry out of range", "cache log"));
                }
                if self.cache.insert(*pgoff, *block).is_some() {
                    return Err(Error::corrupt("page cached twice", "cache log"));
                }
                self.cache_atomic = *atomic;
                if self.cache_since.is_none() {
                    self.cache_since = Some(std::time::Instant::now());
                }
                Ok(())
            }
            _ => Err(Error::corrupt(
                "non-cache entry in the cache log",
                "cache log",
            )),
        }
    }

    /// Drop mappings at or beyond `size`; returns the dropped blocks.
    pub fn truncate_map(&mut self, size: u64) -> Vec<u64> {
        let first_gone = size.div_ceil(BLOCK);
        let gone = self.map.split_off(&first_gone);
        self.attr.blocks -= gone.len() as u64;
        gone.into_values().collect()
    }

    /// Public attributes.
    pub fn attr(&self) -> Attr {
        self.attr.clone()
    }
}

/// Read, validate and replay inode `ino` from media: its slot, its log and its write-cache
/// log.
pub fn load(media: &Media, slot_off: u64, ino: u64, bounds: Bounds) -> Result<InodeState> {
    use crate::layout::inode::{CACHE_HEAD_OFFSET, CACHE_TAIL_OFFSET, HEAD_OFFSET, TAIL_OFFSET};
    let slot: InodeSlot = media.read_pod(slot_off)?;
    if slot.kind == 0 {
        return Err(Error::NotFound);
    }
    let kind = slot.validate(ino)?;
    let mut st = InodeState::new(ino, &slot, kind);
    let tail = media.load_u64(slot_off + TAIL_OFFSET)?;
    let head = media.load_u64(slot_off + HEAD_OFFSET)?;
    let mut scratch = Vec::new();
    st.log = walk_log(media, ino, "log", head, tail, bounds, |e, where_| {
        st.apply(e, ino, bounds, &mut scratch)
            .map_err(|err| match err {
                Error::Corrupt { what, .. } => Error::corrupt(what, where_()),
                other => other,
            })?;
        scratch.clear();
        Ok(())
    })?;
    let ctail = media.load_u64(slot_off + CACHE_TAIL_OFFSET)?;
    let chead = media.load_u64(slot_off + CACHE_HEAD_OFFSET)?;
    if ctail != 0 && kind != Kind::File {
        return Err(Error::corrupt(
            "write cache on a non-file",
            format!("inode {ino}"),
        ));
    }
    let cache_log = walk_log(
        media,
        ino,
        "cache log",
        chead,
        ctail,
        bounds,
        |e, where_| {
            st.apply_cache(e, bounds)
                .map_err(|err| Error::corrupt(err.to_string(), where_()))
        },
    )?;
    st.cache_log = cache_log;
    Ok(st)
}

/// Walk a log chain from `head` to `tail`, validating it, calling `f` on every entry in order.
/// Returns the log's position (pages, tail, next seq).
fn walk_log(
    media: &Media,
    ino: u64,
    which: &str,
    head: u64,
    tail: u64,
    bounds: Bounds,
    mut f: impl FnMut(&Entry, &dyn Fn() -> String) -> Result<()>,
) -> Result<LogState> {
    let mut log = LogState {
        next_seq: 1,
        ..LogState::default()
    };
    if tail == 0 {
        return Ok(log);
    }
    let loc = |what: &str| Error::corrupt(format!("{which} {what}"), format!("inode {ino}"));
    if !bounds.contains(head, 1) {
        return Err(loc("head"));
    }
    if !tail.is_multiple_of(LINE_BYTES as u64) || !bounds.contains(tail / BLOCK, 1) {
        return Err(loc("tail"));
    }
    let tail_page = tail / BLOCK;
    if tail % BLOCK > ENTRY_BYTES || tail.is_multiple_of(BLOCK) {
        return Err(loc("tail outside its page's entry area"));
    }
    let mut page = head;
    let mut buf = vec![0u8; ENTRY_BYTES as usize];
    let mut last_seq = 0u64;
    let mut hops = 0u64;
    loop {
        hops += 1;
        if hops > bounds.hi {
            return Err(loc("chain cycle"));
        }
        log.pages.push(page);
        let (end, next) = if page == tail_page {
            (tail % BLOCK, 0)
        } else {
            let t: PageTrailer = media.read_pod(page * BLOCK + TRAILER_OFFSET)?;
            t.validate(ino, page, bounds.hi)?;
            if !bounds.contains(t.next, 1) {
                return Err(loc("page link outside the allocatable area"));
            }
            (t.used as u64, t.next)
        };
        media.read(page * BLOCK, &mut buf[..end as usize])?;
        let mut pos = 0usize;
        while (pos as u64) < end {
            let where_ = || format!("inode {ino} {which} page {page} offset {pos}");
            let lines = Entry::peek_lines(&buf[pos..pos + LINE_BYTES], where_)?;
            let len = lines * LINE_BYTES;
            if (pos + len) as u64 > end {
                return Err(Error::corrupt(
                    "log entry crosses the committed end",
                    where_(),
                ));
            }
            let (e, seq) = Entry::decode(&buf[pos..pos + len], where_)?;
            if seq <= last_seq {
                return Err(Error::corrupt("log entry sequence", where_()));
            }
            last_seq = seq;
            f(&e, &where_)?;
            log.entries += 1;
            pos += len;
        }
        if page == tail_page {
            break;
        }
        page = next;
    }
    log.head = head;
    log.tail = tail;
    log.next_seq = last_seq + 1;
    Ok(log)
}
