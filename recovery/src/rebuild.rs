//! The rebuild after an unclean stop (DESIGN.md §5.8): walk the tree from the root, level by
//! level, loading each reachable inode's log on all threads, and derive what the clean
//! unmount would have saved: which blocks are in use (inode table, log pages, data, write
//! caches) and which inode numbers are, checking on the way what only a global walk can see
//! (a block used twice, a directory reachable twice, a directory entry whose kind or parent
//! differs from its inode, a link count that differs from the names found). The loaded inode
//! states go to the engine (`Engine::assemble`), so the first accesses after recovery find
//! them warm.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use novafs_engine::alloc::{BlockAlloc, InodeAlloc};
use novafs_engine::bugs::{self, Bug};
use novafs_engine::inode::{self, slot_offset, Bounds, Inode, InodeState};
use novafs_engine::layout::inode::{InodeSlot, HEAD_OFFSET};
use novafs_engine::layout::superblock::Superblock;
use novafs_engine::layout::{Kind, BLOCK, CHUNK_BLOCKS, INODES_PER_CHUNK, ROOT_INO};
use novafs_engine::media::Media;
use novafs_engine::mount::{cores, Loaded};
use novafs_engine::{Error, Result};

/// What the rebuild found.
pub struct Rebuilt {
    /// Every block no reachable inode uses, freed.
    pub blocks: BlockAlloc,
    /// Every inode number no directory names, free.
    pub inos: InodeAlloc,
    /// The reachable inodes, built on the walk's threads (write caches trimmed as recovery
    /// keeps them) and made ready for filing there.
    pub loaded: Loaded,
    /// The loaded inodes with a write cache (for `Engine::recover_caches`).
    pub with_cache: Vec<Arc<Inode>>,
    /// The loaded inodes whose log starts with dead pages (for `Engine::gc_dead_prefixes`).
    pub dead_prefix: Vec<Arc<Inode>>,
    /// Inodes scanned.
    pub scanned: u64,
    /// Torn last commits cut off (one-fence sessions only).
    pub torn_cut: u64,
    /// The most threads that loaded one level.
    pub threads_used: usize,
}

/// A bitmap whose bits are set atomically (for the parallel walk).
struct AtomicBits {
    words: Vec<AtomicU64>,
}

impl AtomicBits {
    fn new(bits: u64) -> AtomicBits {
        AtomicBits {
            words: (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Set bit `i`; returns whether it was already set.
    fn set(&self, i: u64) -> bool {
        let bit = 1u64 << (i % 64);
        self.words[(i / 64) as usize].fetch_or(bit, Ordering::AcqRel) & bit != 0
    }

    fn get(&self, i: u64) -> bool {
        self.words[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// Bits `64 * w ..` as one word.
    fn word(&self, w: usize) -> u64 {
        self.words[w].load(Ordering::Acquire)
    }
}

/// The walk's shared state.
struct Walk<'a> {
    media: &'a Media,
    chunks: &'a [u64],
    bounds: Bounds,
    /// The last session made one-fence commits: the data pages the torn-commit checks may
    /// still read (`inode::torn_cut`).
    torn: Option<AtomicU64>,
    max_ino: u64,
    used: AtomicBits,
    seen: AtomicBits,
    /// Names found per inode.
    refs: Vec<AtomicU32>,
    /// Torn last commits cut off.
    cuts: AtomicU64,
}

/// How long the mounting thread loads a level alone before helper threads join it.
const SPAWN_AFTER: Duration = Duration::from_micros(100);

/// A reachable inode to load: (inode, the kind its directory entry says, the directory).
type Item = (u64, Kind, u64);

/// What one worker did with its share of a level.
#[derive(Default)]
struct Share {
    /// The next level's items.
    next: Vec<Item>,
    /// The inodes loaded.
    done: Loaded,
    /// Each loaded non-directory's stored link count.
    links: Vec<(u64, u32)>,
    /// Those of `done` with a write cache, and with a dead log prefix.
    with_cache: Vec<Arc<Inode>>,
    dead_prefix: Vec<Arc<Inode>>,
}

/// Rebuild on `threads` threads (0 = one per core). Returns the allocators and the loaded
/// inodes, or the first inconsistency found as `Corrupt`. `torn`: the last session made
/// one-fence commits, so a log's last commit may be torn: it is cut off (`inode::torn_cut`),
/// and the cut tail stored, fenced, before the walk goes on.
pub fn rebuild(
    media: &Media,
    sb: &Superblock,
    chunks: &[u64],
    threads: usize,
    torn: bool,
) -> Result<Rebuilt> {
    let threads = if threads == 0 { cores() } else { threads };
    let max_ino = chunks.len() as u64 * INODES_PER_CHUNK;
    let w = Walk {
        media,
        chunks,
        bounds: Bounds::of(sb),
        torn: torn.then(|| AtomicU64::new(sb.blocks_total)),
        max_ino,
        used: AtomicBits::new(sb.blocks_total),
        seen: AtomicBits::new(max_ino),
        refs: (0..max_ino).map(|_| AtomicU32::new(0)).collect(),
        cuts: AtomicU64::new(0),
    };
    for b in 0..sb.first_free_block {
        w.used.set(b);
    }
    w.used.set(sb.replica_block);
    for &c in chunks {
        for b in c..c + CHUNK_BLOCKS {
            if w.used.set(b) {
                return Err(Error::corrupt(
                    "inode-table chunk overlaps",
                    format!("block {b}"),
                ));
            }
        }
    }
    w.seen.set(ROOT_INO);
    let mut all = Share::default();
    let mut threads_used = 0;
    let mut frontier: Vec<Item> = vec![(ROOT_INO, Kind::Dir, ROOT_INO)];
    while !frontier.is_empty() {
        let cursor = AtomicUsize::new(0);
        // Work is taken in grains of up to 64 items, small enough that every thread gets
        // several (a level of 100 directories is 100 grains of one on 2 threads, not 64 + 36).
        let grain = (frontier.len() / (threads * 8)).clamp(1, 64);
        // Load one grain into `sh`; false when the level is done.
        let grain_into = |sh: &mut Share| -> Result<bool> {
            let start = cursor.fetch_add(grain, Ordering::Relaxed);
            if start >= frontier.len() {
                return Ok(false);
            }
            let items = &frontier[start..(start + grain).min(frontier.len())];
            for (j, &item) in items.iter().enumerate() {
                // Ahead of the loads: the slot two items on, the log head page of the next
                // one (its slot prefetched a step ago), so their misses overlap this load.
                w.prefetch(items.get(j + 2).map(|i| i.0), items.get(j + 1).map(|i| i.0));
                // The inode is built here, on the walk's threads, its state loaded where it
                // will live (no moves of the state); the engine only files it.
                let (off, slot, kind) = w.slot(item)?;
                let mut inode = Arc::new(Inode::new(
                    item.0,
                    off,
                    InodeState::new(item.0, &slot, kind),
                ));
                let Some(new) = Arc::get_mut(&mut inode) else {
                    unreachable!("a new Arc has one owner");
                };
                w.load_one(item, off, (&slot, kind), new.state_mut(), &mut sh.next)?;
                let st = new.state_mut();
                if st.attr.kind != Kind::Dir {
                    sh.links.push((item.0, st.attr.nlink));
                }
                let (cached, dead) = (st.cache().log.tail_off != 0, st.log.dead_prefix() != 0);
                if cached {
                    sh.with_cache.push(inode.clone());
                }
                if dead {
                    sh.dead_prefix.push(inode.clone());
                }
                sh.done.push(inode);
            }
            Ok(true)
        };
        let work = || -> Result<Share> {
            let mut sh = Share::default();
            while grain_into(&mut sh)? {}
            Ok(sh)
        };
        // Helper threads start only once the level has taken this thread a while: a thread
        // costs more to start (tens of microseconds on a VM: a system call, a stack mapped
        // and unmapped) than a small level takes to load (a few microseconds per inode), and
        // the crash harness mounts hundreds of thousands of small images (8.7k images/s per
        // thread with helpers at every level of more than one grain, 28.6k without).
        let results: Vec<Result<Share>> = std::thread::scope(|s| {
            let began = Instant::now();
            let mut hs = Vec::new();
            let mut sh = Share::default();
            let mut mine = Ok(());
            loop {
                match grain_into(&mut sh) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        mine = Err(e);
                        break;
                    }
                }
                let taken = cursor.load(Ordering::Relaxed);
                if hs.is_empty()
                    && threads > 1
                    && taken < frontier.len()
                    && began.elapsed() >= SPAWN_AFTER
                {
                    // No more helpers than grains left.
                    let left = (frontier.len() - taken).div_ceil(grain);
                    hs = (1..threads.min(left + 1)).map(|_| s.spawn(work)).collect();
                }
            }
            threads_used = threads_used.max(1 + hs.len());
            let mut results = vec![mine.map(|()| sh)];
            results.extend(hs.into_iter().map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::corrupt("recovery worker panicked", "rebuild")))
            }));
            results
        });
        frontier = Vec::new();
        for r in results {
            let sh = r?;
            frontier.extend(sh.next);
            all.done.append(sh.done);
            all.links.extend(sh.links);
            all.with_cache.extend(sh.with_cache);
            all.dead_prefix.extend(sh.dead_prefix);
        }
    }
    // Link counts of non-directories against the names found.
    for &(ino, nlink) in &all.links {
        let names = w.refs[ino as usize].load(Ordering::Relaxed);
        if nlink != names {
            return Err(Error::corrupt(
                "link count",
                format!("inode {ino}: {nlink} stored, {names} names"),
            ));
        }
    }
    // Everything not reached is free.
    let blocks = BlockAlloc::new(sb.first_free_block, sb.replica_block, cores());
    let mut b = sb.first_free_block;
    while b < sb.replica_block {
        if w.used.get(b) {
            b += 1;
            continue;
        }
        let start = b;
        while b < sb.replica_block && !w.used.get(b) {
            b += 1;
        }
        blocks.free(start, b - start);
    }
    // Every number above the root's not reached is free (a word at a time).
    let free: Vec<u64> = (0..max_ino.div_ceil(64))
        .map(|k| {
            let base = k * 64;
            let from = (ROOT_INO + 1).saturating_sub(base).min(64);
            let to = max_ino.saturating_sub(base).min(64);
            let in_range = if to > from {
                (u64::MAX >> (64 - (to - from))) << from
            } else {
                0
            };
            !w.seen.word(k as usize) & in_range
        })
        .collect();
    let inos = InodeAlloc::new([]);
    inos.add_free_words(&free);
    let scanned = all.done.len() as u64;
    Ok(Rebuilt {
        blocks,
        inos,
        loaded: all.done,
        with_cache: all.with_cache,
        dead_prefix: all.dead_prefix,
        scanned,
        torn_cut: w.cuts.load(Ordering::Relaxed),
        threads_used,
    })
}

impl Walk<'_> {
    /// Load one reachable inode: check it against the entry that named it, mark its blocks,
    /// queue its unseen children.
    /// Its slot is `slot` at `off` ([`Walk::slot`]); loads into `st`, made from the slot.
    fn load_one(
        &self,
        (ino, kind, parent): Item,
        off: u64,
        slot: (&InodeSlot, Kind),
        st: &mut InodeState,
        next: &mut Vec<Item>,
    ) -> Result<()> {
        let torn = self.torn.as_ref().map(|budget| inode::TornCheck {
            budget,
            chunks: self.chunks,
        });
        let cut = inode::load_into(
            self.media,
            off,
            slot,
            ino,
            self.bounds,
            torn.as_ref(),
            true,
            st,
        )?;
        if let Some(tail) = cut {
            // A torn last commit: its blocks are left unmarked (free); the shorter log is
            // made durable before anything can allocate them.
            let mut txn = novafs_engine::txn::Txn::in_place(self.media, "torn-cut");
            txn.store_word(off + novafs_engine::layout::inode::TAIL_OFFSET, tail);
            txn.commit_in_place()?;
            self.cuts.fetch_add(1, Ordering::Relaxed);
        }
        // Redo writes still in the log: their in-place stores may not all have reached the
        // media before the crash; store them again, in log order, fenced (DESIGN.md §5.1.2).
        let redo = st.redo.take().filter(|r| !r.is_empty());
        if let Some(redo) = redo.filter(|_| !bugs::active(Bug::RedoNotReapplied)) {
            let mut txn = novafs_engine::txn::Txn::in_place(self.media, "redo");
            for w in &redo {
                debug_assert_eq!(st.map.get(&w.pgoff), Some(&w.block));
                txn.rewrite(w.block * BLOCK + w.at as u64, &w.data);
            }
            txn.commit_in_place()?;
        }
        if st.attr.kind != kind {
            return Err(Error::corrupt(
                "directory entry kind differs from the inode's",
                format!("inode {ino} (named in directory {parent})"),
            ));
        }
        if kind == Kind::Dir && st.parent != parent {
            return Err(Error::corrupt(
                "directory parent",
                format!("inode {ino}: stored {}, named in {parent}", st.parent),
            ));
        }
        let mark = |b: u64, what: &str| -> Result<()> {
            if self.used.set(b) {
                return Err(Error::corrupt(
                    format!("{what} block used twice"),
                    format!("inode {ino} block {b}"),
                ));
            }
            Ok(())
        };
        for &p in &st.log.pages {
            mark(p, "log page")?;
        }
        for b in st.map.values() {
            mark(b, "data")?;
        }
        if st.cache().log.tail_off != 0 {
            if st.cache().atomic {
                // Failure-atomic: discard what was not synced (nothing is marked, so the cache
                // blocks and cache log pages come back free; the tail is reset by
                // `Engine::recover_caches`).
                st.cache_mut().map.clear();
            } else {
                // A crash between a migration's two commits leaves entries whose block the
                // file map already holds: those pages are migrated already. Entries past the
                // end of file cannot be (a corrupt image): both are dropped, their blocks left
                // free.
                let pages = st.attr.size.div_ceil(BLOCK);
                if let Some(wc) = st.wc.as_mut() {
                    let map = &st.map;
                    wc.map
                        .retain(|pg, b| map.get(&pg) != Some(&b) && pg < pages);
                }
                for &p in &st.cache().log.pages {
                    mark(p, "cache log page")?;
                }
                for b in st.cache().map.values() {
                    mark(b, "cache")?;
                }
            }
        }
        if st.attr.kind == Kind::Dir {
            for (name, ent) in &st.dir {
                let loc = || format!("inode {ino} entry {:?}", String::from_utf8_lossy(name));
                if ent.ino >= self.max_ino || ent.ino <= ROOT_INO {
                    return Err(Error::corrupt("directory entry inode number", loc()));
                }
                self.refs[ent.ino as usize].fetch_add(1, Ordering::Relaxed);
                let was_seen = self.seen.set(ent.ino);
                if was_seen && ent.kind == Kind::Dir {
                    return Err(Error::corrupt("directory reachable twice (cycle)", loc()));
                }
                if !was_seen {
                    next.push((ent.ino, ent.kind, ino));
                }
            }
        }
        Ok(())
    }

    /// Prefetch hints: the slot of inode `slot`, the first lines of inode `log`'s head page
    /// (read from its slot's head word, unchecked: a hint outside the image does nothing).
    fn prefetch(&self, slot: Option<u64>, log: Option<u64>) {
        if let Some(off) = slot.and_then(|i| slot_offset(self.chunks, i)) {
            self.media.prefetch(off, 128);
        }
        if let Some(off) = log.and_then(|i| slot_offset(self.chunks, i)) {
            if let Ok(head) = self.media.load_u64(off + HEAD_OFFSET) {
                self.media.prefetch(head.saturating_mul(BLOCK), 256);
            }
        }
    }

    /// The slot of a reachable inode: its offset, the slot, its kind.
    fn slot(&self, (ino, _, _): Item) -> Result<(u64, InodeSlot, Kind)> {
        let off = slot_offset(self.chunks, ino).ok_or_else(|| {
            Error::corrupt("inode number outside the table", format!("inode {ino}"))
        })?;
        let (slot, kind) = inode::read_slot(self.media, off, ino).map_err(|e| match e {
            Error::NotFound => {
                Error::corrupt("directory entry to a free inode", format!("inode {ino}"))
            }
            e => e,
        })?;
        Ok((off, slot, kind))
    }
}
