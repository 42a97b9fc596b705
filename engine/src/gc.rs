//! Log garbage collection (DESIGN.md §5.7).
//!
//! Every inode's DRAM state records, per log page, how many keys (file pages, names,
//! attributes) an entry of that page set last ([`crate::inode::PageLive`]); replay keeps it
//! exact, so recovery rebuilds it for free.
//!
//! - **Fast GC** drops a prefix of the log whose pages hold no live key: one 8-byte store of
//!   the head word, flush, fence, then the pages are freed. Removals need their additions on
//!   replay, so the prefix never ends between a name's addition and its removal.
//! - **Thorough GC** (compaction) writes a fresh chain that rebuilds the inode's current state
//!   (its attributes, file map or directory index) and switches head and tail together under
//!   one journal slot (the journal's commit word is the atomic store); the old chain is freed
//!   after. It runs inline when a log holds eight times the entries its state needs, and in
//!   the background at four times.
//!
//! GC works under the inode's write lock only: readers of other inodes never wait for it.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::Instant;

pub use crate::state::gc::{GcConfig, GcStats, BACKGROUND_RATIO, INLINE_RATIO};

use crate::engine::Engine;
use crate::error::Result;
use crate::inode::{extent_runs, Inode, InodeState};
use crate::layout::entry::{attr_mask, Entry};
use crate::layout::Kind;

/// Log usage of one inode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Pages in the log chain.
    pub pages: u64,
    /// Entries in the chain (live and dead).
    pub entries: u64,
    /// Entries a compaction would write (what the current state needs).
    pub needed: u64,
}

/// The entries that rebuild `st` from a fresh slot: attributes first (a size set on an empty
/// map drops nothing), then the file map as extents or the directory's names, then the link
/// entry (nlink, parent) whose ctime is the final one.
pub fn checkpoint_entries(st: &InodeState) -> Vec<Entry> {
    let a = &st.attr;
    let mut out = Vec::new();
    let mut sa = crate::layout::entry::SetAttrEntry::zeroed_entry();
    sa.mask = attr_mask::MODE
        | attr_mask::UID
        | attr_mask::GID
        | attr_mask::ATIME
        | attr_mask::MTIME
        | attr_mask::CTIME;
    if a.kind != Kind::Dir {
        sa.mask |= attr_mask::SIZE;
    }
    sa.mode = a.mode;
    sa.uid = a.uid;
    sa.gid = a.gid;
    sa.size = a.size;
    sa.atime_ns = a.atime_ns;
    sa.mtime_ns = a.mtime_ns;
    sa.ctime_ns = a.ctime_ns;
    out.push(Entry::SetAttr(sa));
    if a.kind == Kind::Dir {
        let mut names: Vec<_> = st.dir.iter().collect();
        names.sort_unstable_by(|x, y| x.0.cmp(y.0));
        out.extend(names.into_iter().map(|(name, ent)| Entry::DirAdd {
            ino: ent.ino,
            kind: ent.kind,
            name: name.clone(),
            mtime_ns: a.mtime_ns,
        }));
    } else {
        out.extend(
            extent_runs(st.map.iter()).map(|(pgoff, block, n)| Entry::Write {
                pgoff,
                block,
                num_pages: n,
                size: a.size,
                mtime_ns: a.mtime_ns,
            }),
        );
    }
    for (name, x) in st.xattrs() {
        out.extend(crate::layout::entry::xattr_set_entries(
            name, &x.value, a.ctime_ns,
        ));
    }
    out.push(Entry::Link {
        nlink: a.nlink,
        ctime_ns: a.ctime_ns,
        parent: st.parent,
    });
    out
}

/// Entries an extended attribute takes in a compacted log.
fn xattr_entries(name: &[u8], value: &[u8]) -> u64 {
    if name.len() + value.len() <= crate::layout::entry::XATTR_INLINE_MAX {
        1
    } else {
        1 + value.len().div_ceil(crate::layout::entry::XATTR_CHUNK_MAX) as u64
    }
}

/// A log shorter than this many pages is never compacted for its length in pages.
pub const PAGES_MIN: u64 = 64;

/// About how many log pages [`checkpoint_entries`] would fill (an upper bound).
pub fn needed_pages(st: &InodeState) -> u64 {
    let body: u64 = if st.attr.kind == Kind::Dir {
        st.dir
            .keys()
            .map(|n| 1 + n.len().saturating_sub(24).div_ceil(64) as u64)
            .sum()
    } else {
        extent_runs(st.map.iter()).count() as u64
    };
    let xattrs: u64 = st
        .xattrs()
        .iter()
        .map(|(n, x)| 2 + (n.len() + x.value.len()).div_ceil(60) as u64)
        .sum();
    (2 + body + xattrs).div_ceil(63) + 1
}

/// How far a log grows, in entries, before GC counts what its state needs again: twice the
/// keys that counting (and a compaction: checkpoint, replay check, comparison) walks, so
/// that the walks cost O(1) per appended entry.
fn walk_entries(st: &InodeState) -> u64 {
    2 * (st.map.len() + st.dir.len()) as u64
}

/// How far a log grows, in pages, before its length in pages may trigger a compaction
/// again: one page per 16 keys of its state, so that a compaction's walk of a large file
/// map or directory is paid for by at least that many appended pages (a log of small
/// overwrites of a large file stays under 1/16 of the file's size).
fn walk_pages(st: &InodeState) -> u64 {
    (st.map.len() + st.dir.len()) as u64 / 16
}

/// How many entries [`checkpoint_entries`] would write, without building them.
pub fn needed_entries(st: &InodeState) -> u64 {
    let body = if st.attr.kind == Kind::Dir {
        st.dir.len() as u64
    } else {
        extent_runs(st.map.iter()).count() as u64
    };
    let xattrs: u64 = st
        .xattrs()
        .iter()
        .map(|(n, x)| xattr_entries(n, &x.value))
        .sum();
    body + xattrs + 2
}

impl Engine {
    /// GC after a commit to the log at `words` of inode `ino` (its write lock held). Never
    /// fails the operation that committed: a GC that cannot run now (no space for a new
    /// chain) runs later.
    pub(crate) fn gc_after(&self, slot_off: u64, st: &mut InodeState, ino: u64) {
        if st.removed || st.freed || self.read_only {
            return;
        }
        if self.gc.fast.load(Ordering::Relaxed) {
            let _ = self.gc_fast(slot_off, st, ino);
        }
        let inline = self.gc.inline_min.load(Ordering::Relaxed);
        // Entries of up to a page each (xattr values) make a log long in pages while short in
        // entries: the same ratio, in pages (amortised: re-taken after the log has grown by
        // what the state needs).
        let pages = st.log.pages.len() as u64;
        if inline != 0 && pages >= PAGES_MIN && pages >= st.log.gc_next_pages {
            let need = needed_pages(st);
            if pages >= INLINE_RATIO * need {
                if let Ok(true) = self.compact(slot_off, st, ino) {
                    return;
                }
            }
            st.log.gc_next_pages = pages + need.max(16).max(walk_pages(st));
        }
        let entries = st.log.entries;
        let bg = self.gc.background_min.load(Ordering::Relaxed);
        // 0 turns a trigger off.
        let Some(min) = [inline, bg].into_iter().filter(|&m| m != 0).min() else {
            return;
        };
        if entries < min || entries < st.log.gc_next {
            return;
        }
        let needed = needed_entries(st);
        if inline != 0 && entries >= inline && needed * INLINE_RATIO <= entries {
            if let Ok(true) = self.compact(slot_off, st, ino) {
                return;
            }
        } else if bg != 0 && entries >= bg && needed * BACKGROUND_RATIO <= entries {
            self.gc.candidates.lock().insert(ino);
        }
        // Look again once the log has grown by what the state needs, or by twice what
        // counting it walked (the file map or the names): amortised O(1) per entry.
        st.log.gc_next = entries + needed.max(walk_entries(st)).max(64);
    }

    /// Fast GC: drop the dead prefix of the log (one transaction moving the head word).
    /// Returns pages freed.
    fn gc_fast(&self, slot_off: u64, st: &mut InodeState, ino: u64) -> Result<u64> {
        let k = st.log.dead_prefix_from();
        if k == 0 {
            return Ok(0);
        }
        // The dropped pages may hold redo writes whose in-place stores are not flushed:
        // flushed here, made durable by the commit's first fence (§5.1.2).
        crate::txn::flush_unflushed(&self.media, &mut st.unflushed)?;
        // The head is read only below the tail, which stays put: one atomic store moves it.
        let mut txn = self.txn("gc-fast");
        txn.drop_prefix(ino, slot_off, &st.log, k);
        let mut done = txn.commit()?;
        let freed = done.apply(&self.blocks, ino, st).log_pages_freed;
        self.gc.fast_runs.fetch_add(1, Ordering::Relaxed);
        self.gc.fast_pages.fetch_add(freed, Ordering::Relaxed);
        Ok(freed)
    }

    /// After a recovery: drop the dead prefix of every loaded log (`candidates`: the loaded
    /// inodes whose log may have one, as the rebuild lists them). Fast GC runs after each
    /// commit, so a crash between a commit and its GC (or inside a recovery, between a cache
    /// migration and its GC) leaves a dead prefix that no later commit of that inode may
    /// come to drop; recovery drops it, so that every recovery of an image ends with the same
    /// blocks in use, however often it was interrupted.
    pub fn gc_dead_prefixes(&self, candidates: &[std::sync::Arc<Inode>]) -> Result<u64> {
        let mut freed = 0;
        for i in candidates {
            let mut st = i.state.write();
            if st.removed || st.freed || st.log.dead_prefix() == 0 {
                continue;
            }
            freed += self.gc_fast(i.slot_off, &mut st, i.ino)?;
        }
        Ok(freed)
    }

    /// Thorough GC: rewrite the log as a fresh chain holding only what the state needs, then
    /// switch head and tail in one journaled transaction, which frees the old chain. Returns
    /// whether it ran (false: no space for the new chain, or the state changed under it).
    pub(crate) fn compact(&self, slot_off: u64, st: &mut InodeState, ino: u64) -> Result<bool> {
        if st.log.tail_off == 0 || st.removed || st.freed {
            return Ok(false);
        }
        let t0 = Instant::now();
        // The old chain's redo writes: their in-place lines flushed, made durable by the
        // journal's first fence before the new chain replaces them (§5.1.2).
        crate::txn::flush_unflushed(&self.media, &mut st.unflushed)?;
        let entries = checkpoint_entries(st);
        let mut txn = self.txn("gc-compact").frees_space(true);
        match txn.replace_log(ino, slot_off, st, &entries) {
            Ok(true) => {}
            Ok(false) | Err(crate::Error::NoSpace) => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut done = txn.commit()?;
        let written_before = st.log.pages.len();
        let applied = done.apply(&self.blocks, ino, st);
        debug_assert_eq!(applied.log_pages_freed, written_before as u64);
        let written = st.log.pages.len() as u64;
        st.log.gc_next = st.log.entries * 2 + 64;
        st.log.gc_next_pages = (written * INLINE_RATIO).max(written + walk_pages(st));
        self.gc.candidates.lock().remove(&ino);
        let pause = t0.elapsed().as_nanos() as u64;
        self.gc.runs.fetch_add(1, Ordering::Relaxed);
        self.gc
            .pages_freed
            .fetch_add(applied.log_pages_freed, Ordering::Relaxed);
        self.gc.pages_written.fetch_add(written, Ordering::Relaxed);
        self.gc.max_pause.fetch_max(pause, Ordering::Relaxed);
        self.gc.total_pause.fetch_add(pause, Ordering::Relaxed);
        Ok(true)
    }

    /// Compact inode `ino`'s log now if it holds any dead entry. Returns whether it ran.
    pub fn gc_inode(&self, ino: u64) -> Result<bool> {
        let _op = self.writable()?;
        let i = self.inode(ino)?;
        let mut st = i.state.write();
        if st.log.entries <= needed_entries(&st) {
            return Ok(false);
        }
        self.compact(i.slot_off, &mut st, ino)
    }

    /// One background GC pass over the inodes handed to it. Returns compactions run.
    pub fn gc_pass(&self) -> Result<usize> {
        let inos: Vec<u64> = self.gc.candidates.lock().drain().collect();
        let mut n = 0;
        for ino in inos {
            if !self.mounted.load(Ordering::Acquire) {
                break;
            }
            let Ok(_op) = self.writable() else { break };
            let Ok(i) = self.inode(ino) else { continue };
            let mut st = i.state.write();
            if st.log.entries >= BACKGROUND_RATIO * needed_entries(&st)
                && self.compact(i.slot_off, &mut st, ino)?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Change the GC settings of a mounted engine.
    pub fn set_gc_config(&self, cfg: &GcConfig) {
        self.gc.set(cfg);
    }

    /// GC counters since mount.
    pub fn gc_stats(&self) -> GcStats {
        let g = &self.gc;
        GcStats {
            fast_runs: g.fast_runs.load(Ordering::Relaxed),
            fast_pages_freed: g.fast_pages.load(Ordering::Relaxed),
            thorough_runs: g.runs.load(Ordering::Relaxed),
            thorough_pages_freed: g.pages_freed.load(Ordering::Relaxed),
            thorough_pages_written: g.pages_written.load(Ordering::Relaxed),
            max_pause_ns: g.max_pause.load(Ordering::Relaxed),
            total_pause_ns: g.total_pause.load(Ordering::Relaxed),
        }
    }

    /// Log usage of inode `ino`.
    pub fn log_stats(&self, ino: u64) -> Result<LogStats> {
        let i = self.inode(ino)?;
        let st = i.state.read();
        Ok(LogStats {
            pages: st.log.pages.len() as u64,
            entries: st.log.entries,
            needed: needed_entries(&st),
        })
    }
}
