//! Block and inode allocators: DRAM only, rebuilt by recovery or loaded from the state saved at
//! clean unmount.
//!
//! Blocks are split by address into shards (one per CPU), each a map of free extents
//! (start -> length) behind its own lock. A thread allocates from its home shard and steals from
//! the others when it runs dry; a freed block returns to the shard that owns its address, where
//! it merges with its neighbours.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::sync::{AtomicU64, Mutex, Padded};

use crate::error::{Error, Result};

/// A run of blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Extent {
    /// First block.
    pub start: u64,
    /// Blocks.
    pub len: u64,
}

/// Extents of one allocation, inline up to two (no heap allocation on the write path).
pub type Extents = smallvec::SmallVec<[Extent; 2]>;

struct Shard {
    free: BTreeMap<u64, u64>,
    /// Single blocks freed recently, reused first (LIFO: likely still in the CPU cache), merged
    /// into `free` when the stack fills up.
    recent: Vec<u64>,
    /// Blocks free here (in `free` and `recent`): the shard's share of the free count, kept
    /// under its own lock (no count shared by every allocation).
    count: u64,
    /// First block of the shard (the base of `marks`).
    base: u64,
    /// Which of the shard's blocks are log pages of a loaded inode, a bit per block from
    /// `base` up to the highest marked one (see [`BlockAlloc::mark_log`]).
    marks: Vec<u64>,
}

/// How many free extents an allocation of `n` blocks looks at for one run that holds them
/// all: `max(FIT_SCAN, n)` (the scan costs no more than writing the blocks would).
const FIT_SCAN: usize = 16;

/// Recently freed single blocks kept per shard before merging.
const RECENT_MAX: usize = 64;

impl Shard {
    /// Whether any block of `[lo, hi)` is free here (recently freed or in the extent map).
    fn holds_any(&self, lo: u64, hi: u64) -> bool {
        let recent = if hi == lo + 1 {
            // One block (every free of a data block or log page): a branch-free scan the
            // compiler vectorises (the short-circuiting one cost ~200 instructions a call).
            self.recent.iter().fold(false, |hit, &b| hit | (b == lo))
        } else {
            self.recent.iter().any(|&b| b >= lo && b < hi)
        };
        recent
            || self
                .free
                .range(..hi)
                .next_back()
                .is_some_and(|(&s, &l)| s + l > lo)
    }

    fn merge_recent(&mut self) {
        let mut recent = std::mem::take(&mut self.recent);
        // Sorted, runs of consecutive blocks go in as one extent: blocks freed together
        // (the log pages of files created together, then removed) are often adjacent, and
        // each insert is up to four B-tree operations.
        recent.sort_unstable();
        for run in recent.chunk_by(|a, b| a + 1 == *b) {
            self.insert(run[0], run.len() as u64);
        }
        recent.clear();
        self.recent = recent;
    }

    /// Put `[start, start + len)` into the extent map (the count is the caller's).
    fn insert(&mut self, mut start: u64, mut len: u64) {
        if let Some((&ps, &pl)) = self.free.range(..start).next_back() {
            debug_assert!(ps + pl <= start, "double free of block {start}");
            if ps + pl == start {
                self.free.remove(&ps);
                start = ps;
                len += pl;
            }
        }
        if let Some(&nl) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += nl;
        }
        self.free.insert(start, len);
    }

    /// Take up to `want` blocks (all of them when `count` allows), preferring one contiguous
    /// run; the count follows.
    fn take(&mut self, want: u64, out: &mut Extents) -> u64 {
        let got = self.take_runs(want, out);
        self.count -= got;
        got
    }

    fn take_runs(&mut self, want: u64, out: &mut Extents) -> u64 {
        if want == 1 {
            if let Some(b) = self.recent.pop() {
                out.push(Extent { start: b, len: 1 });
                return 1;
            }
        }
        if self.free.is_empty() || want > 1 {
            self.merge_recent();
        }
        let mut got = 0;
        // First fit for the whole request, among the first extents only: a shard fragmented
        // into many single-block holes (the old pages of copy-on-write overwrites) would make
        // a full first-fit scan cost O(holes) per small write. A request the first ones
        // cannot hold whole takes runs in address order.
        let fit = self
            .free
            .iter()
            .take(FIT_SCAN.max(want as usize))
            .find(|(_, &l)| l >= want)
            .map(|(&s, &l)| (s, l));
        if let Some((s, l)) = fit {
            self.free.remove(&s);
            if l > want {
                self.free.insert(s + want, l - want);
            }
            out.push(Extent {
                start: s,
                len: want,
            });
            return want;
        }
        while got < want {
            let Some((&s, &l)) = self.free.iter().next() else {
                break;
            };
            self.free.remove(&s);
            let n = l.min(want - got);
            if l > n {
                self.free.insert(s + n, l - n);
            }
            out.push(Extent { start: s, len: n });
            got += n;
        }
        got
    }

    /// Take up to `want` blocks from the top of the shard's free space (log pages: they
    /// gather at the high end while data fills from the low end, so the pages recovery reads
    /// lie together); the count follows.
    fn take_top(&mut self, want: u64, out: &mut Extents) -> u64 {
        let mut got = 0;
        while got < want {
            let Some((&s, &l)) = self.free.iter().next_back() else {
                if self.recent.is_empty() {
                    break;
                }
                self.merge_recent();
                continue;
            };
            let n = l.min(want - got);
            if l > n {
                self.free.insert(s, l - n);
            } else {
                self.free.remove(&s);
            }
            out.push(Extent {
                start: s + l - n,
                len: n,
            });
            got += n;
        }
        self.count -= got;
        got
    }

    /// Mark (or unmark) `block`, one of this shard's, as a loaded inode's log page.
    fn mark(&mut self, block: u64, on: bool) {
        let i = block - self.base;
        let (w, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        if w >= self.marks.len() {
            if !on {
                return;
            }
            self.marks.resize(w + 1, 0);
        }
        if on {
            self.marks[w] |= bit;
        } else {
            self.marks[w] &= !bit;
        }
    }

    /// Whether any block of `[lo, hi)` (this shard's) is marked.
    fn marked_any(&self, lo: u64, hi: u64) -> bool {
        let mut b = lo - self.base;
        let end = hi - self.base;
        while b < end {
            let Some(&word) = self.marks.get((b / 64) as usize) else {
                return false;
            };
            let at = b % 64;
            let n = (end - b).min(64 - at);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << at
            };
            if word & mask != 0 {
                return true;
            }
            b += n;
        }
        false
    }
}

/// The block allocator.
pub struct BlockAlloc {
    /// Each on its own cache lines: two threads' allocations touch no common line.
    shards: Box<[Padded<Mutex<Shard>>]>,
    first: u64,
    /// One past the last managed block (grows with [`BlockAlloc::grow`]).
    end: AtomicU64,
    shard_span: u64,
    /// Blocks only space-freeing operations may take, so that deleting always works on a
    /// full image (their log entries need room).
    reserve: u64,
    /// Frees refused because a block of the range was free already or is a loaded inode's log
    /// page (see [`BlockAlloc::free`]).
    refused: AtomicU64,
}

// Log-page marks. Which blocks are log pages of a loaded inode is, on the clean-mount fast
// path, the only global knowledge of block ownership besides the free map (DESIGN §5.8). A
// block is marked when an inode is admitted and when a commit links new log pages, and
// unmarked by [`BlockAlloc::free_log`]. A data or cache block that is marked is another inode's
// log page: admission refuses it and [`BlockAlloc::free`] refuses to free it. The bits live in
// the shard that owns the block, under its lock, so a free checks them in the same lock round
// trip. Each shard's bitmap reaches its highest marked block: at most one bit per block of the
// image (32 MiB of DRAM for a 1 TiB image).

impl BlockAlloc {
    /// An allocator for blocks `[first, end)`, all in use until [`BlockAlloc::free`]d.
    pub fn new(first: u64, end: u64, shards: usize) -> BlockAlloc {
        let shards = shards.max(1);
        let span = (end.saturating_sub(first)).div_ceil(shards as u64).max(1);
        BlockAlloc {
            shards: (0..shards as u64)
                .map(|i| {
                    Padded(Mutex::new(Shard {
                        free: BTreeMap::new(),
                        recent: Vec::with_capacity(RECENT_MAX),
                        count: 0,
                        base: first + i * span,
                        marks: Vec::new(),
                    }))
                })
                .collect(),
            first,
            end: AtomicU64::new(end),
            shard_span: span,
            reserve: (end.saturating_sub(first) / 256).clamp(4, 256),
            refused: AtomicU64::new(0),
        }
    }

    fn shard_of(&self, block: u64) -> usize {
        (((block - self.first) / self.shard_span) as usize).min(self.shards.len() - 1)
    }

    /// The shards covering `[start, start + len)` (inside the managed range), each with the
    /// part of the range it owns.
    fn pieces(&self, start: u64, len: u64) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        let end = start.saturating_add(len).min(self.end());
        let mut s = start.max(self.first);
        std::iter::from_fn(move || {
            if s >= end {
                return None;
            }
            let sh = self.shard_of(s);
            let shard_end = if sh + 1 == self.shards.len() {
                end
            } else {
                self.first + (sh as u64 + 1) * self.shard_span
            };
            let e = end.min(shard_end);
            let piece = (sh, s, e);
            s = e;
            Some(piece)
        })
    }

    /// Blocks free now (a sum over the shards: for statistics, not a fast path).
    pub fn free_blocks(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().count).sum()
    }

    /// Managed range.
    pub fn range(&self) -> (u64, u64) {
        (self.first, self.end())
    }

    fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Manage blocks up to `new_end` (more than now; the image grew): `[end, new_end)` become
    /// free (in the last shard; allocations take from any shard when theirs is empty).
    pub fn grow(&self, new_end: u64) {
        let old = self.end.fetch_max(new_end, Ordering::AcqRel);
        if new_end > old {
            self.free(old, new_end - old);
        }
    }

    /// Blocks held back for space-freeing operations.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Allocate `n` blocks (as few extents as the free space allows), leaving the reserve.
    /// All or nothing.
    pub fn alloc(&self, n: u64) -> Result<Vec<Extent>> {
        self.alloc_with(n, false)
    }

    /// Allocate `n` blocks; `use_reserve` lets a space-freeing operation (unlink, rmdir,
    /// rename, truncate, punch) dip into the reserve.
    ///
    /// The fast path locks only this thread's home shard ([`crate::sync::home`]): it serves
    /// the request when the shard alone holds `n` blocks beyond the whole reserve (so the
    /// image keeps its reserve whatever the other shards hold). Otherwise every shard is
    /// locked, in index order (the order of every multi-shard lock here), the free count is
    /// their sum and the blocks come from the home shard first, then the others.
    pub fn alloc_with(&self, n: u64, use_reserve: bool) -> Result<Vec<Extent>> {
        let mut out = Extents::new();
        self.alloc_into(n, use_reserve, &mut out)?;
        Ok(out.into_vec())
    }

    /// [`BlockAlloc::alloc_with`], the extents appended to `out` (the write path's: a change
    /// that takes one or two extents allocates no memory for them). Nothing is appended on
    /// failure.
    pub fn alloc_into(&self, n: u64, use_reserve: bool, out: &mut Extents) -> Result<()> {
        self.alloc_from(n, use_reserve, false, out)
    }

    /// [`BlockAlloc::alloc_into`] for log pages: taken from the top of the free space (data
    /// blocks come from the bottom), so that logs lie together and a rebuild's reads of them
    /// touch few pages of the mapping (DESIGN.md 5.8).
    pub fn alloc_log_into(&self, n: u64, use_reserve: bool, out: &mut Extents) -> Result<()> {
        self.alloc_from(n, use_reserve, true, out)
    }

    fn alloc_from(&self, n: u64, use_reserve: bool, top: bool, out: &mut Extents) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let floor = if use_reserve { 0 } else { self.reserve };
        let k = self.shards.len();
        let home = crate::sync::home() % k;
        {
            let mut sh = self.shards[home].lock();
            if sh.count >= n.saturating_add(floor) {
                let got = if top {
                    sh.take_top(n, out)
                } else {
                    sh.take(n, out)
                };
                debug_assert_eq!(got, n, "a shard's count and its extents disagree");
                return Ok(());
            }
        }
        let mut all: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
        let total: u64 = all.iter().map(|s| s.count).sum();
        if total < n.saturating_add(floor) {
            return Err(Error::NoSpace);
        }
        let mut got = 0;
        for i in 0..k {
            let sh = &mut all[(home + i) % k];
            got += if top {
                sh.take_top(n - got, out)
            } else {
                sh.take(n - got, out)
            };
            if got == n {
                break;
            }
        }
        debug_assert_eq!(got, n, "the shards' counts and their extents disagree");
        Ok(())
    }

    /// Allocate exactly one contiguous run of `n` blocks.
    pub fn alloc_contiguous(&self, n: u64) -> Result<u64> {
        let ext = self.alloc(n)?;
        if ext.len() == 1 {
            return Ok(ext[0].start);
        }
        // Try each shard for a run that fits.
        self.free_extents(&ext);
        for s in self.shards.iter() {
            let mut sh = s.lock();
            sh.merge_recent();
            let fit = sh.free.iter().find(|(_, &l)| l >= n).map(|(&s, &l)| (s, l));
            if let Some((st, l)) = fit {
                sh.free.remove(&st);
                if l > n {
                    sh.free.insert(st + n, l - n);
                }
                sh.count -= n;
                return Ok(st);
            }
        }
        Err(Error::NoSpace)
    }

    /// Return blocks to the free pool (log pages of loaded inodes go back through
    /// [`BlockAlloc::free_log`]). A range with a block that is free already, or that is a
    /// loaded inode's log page, is refused whole (and counted, [`BlockAlloc::refused_frees`]):
    /// a second free would let two owners be handed the same block. The engine never does
    /// either on a sound image; a crafted one whose extents cross-link two inodes, which the
    /// clean-mount fast path cannot see until both are loaded (DESIGN §5.8), makes an
    /// overwrite of one free the other's block. The blocks of a refused range stay in use (a
    /// leak that fsck reports), never doubly owned.
    pub fn free(&self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        assert!(
            start >= self.first && start + len <= self.end(),
            "freeing blocks {start}+{len} outside [{}, {})",
            self.first,
            self.end()
        );
        let home = self.shard_of(start);
        if len == 1 {
            let mut sh = self.shards[home].lock();
            self.free_one(&mut sh, start);
            return;
        }
        if home == self.shard_of(start + len - 1) {
            // One shard (the common case): one lock, no lists.
            let mut sh = self.shards[home].lock();
            if sh.marked_any(start, start + len) || sh.holds_any(start, start + len) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            sh.insert(start, len);
            sh.count += len;
            return;
        }
        // Every shard the range touches, locked in index order, checked before any change.
        let pieces: Vec<(usize, u64, u64)> = self.pieces(start, len).collect();
        let mut locked: Vec<_> = pieces.iter().map(|p| self.shards[p.0].lock()).collect();
        let refused = pieces
            .iter()
            .zip(&locked)
            .any(|(&(_, lo, hi), sh)| sh.marked_any(lo, hi) || sh.holds_any(lo, hi));
        if refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        for (&(_, lo, hi), sh) in pieces.iter().zip(locked.iter_mut()) {
            sh.insert(lo, hi - lo);
            sh.count += hi - lo;
        }
    }

    /// Free one block of the locked shard `sh` (refused if marked or free already).
    fn free_one(&self, sh: &mut Shard, block: u64) {
        if sh.marked_any(block, block + 1) || sh.holds_any(block, block + 1) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if sh.recent.len() >= RECENT_MAX {
            sh.merge_recent();
        }
        sh.recent.push(block);
        sh.count += 1;
    }

    /// Return a log page of a loaded inode (its mark cleared) to the free pool.
    pub fn free_log(&self, page: u64) {
        assert!(
            page >= self.first && page < self.end(),
            "freeing log page {page} outside [{}, {})",
            self.first,
            self.end()
        );
        let mut sh = self.shards[self.shard_of(page)].lock();
        sh.mark(page, false);
        self.free_one(&mut sh, page);
    }

    /// Note `pages` as log pages of a loaded inode (pages outside the managed range are no
    /// blocks of the allocator's and are not noted).
    pub fn mark_log(&self, pages: &[u64]) {
        let (first, end) = (self.first, self.end());
        // One lock round trip per run of pages in one shard (a rebuild marks every loaded
        // log's pages in one call, sorted).
        let mut held: Option<(usize, crate::sync::MutexGuard<'_, Shard>)> = None;
        for &p in pages {
            if p < first || p >= end {
                continue;
            }
            let k = self.shard_of(p);
            match &mut held {
                Some((at, sh)) if *at == k => sh.mark(p, true),
                _ => {
                    drop(held.take()); // one shard lock at a time
                    let mut sh = self.shards[k].lock();
                    sh.mark(p, true);
                    held = Some((k, sh));
                }
            }
        }
    }

    /// Whether any block of `[start, start + len)` is a loaded inode's log page.
    pub fn any_log(&self, start: u64, len: u64) -> bool {
        self.pieces(start, len)
            .any(|(sh, lo, hi)| self.shards[sh].lock().marked_any(lo, hi))
    }

    /// Frees refused because a block was free already: 0 on a sound image.
    pub fn refused_frees(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Return extents to the free pool.
    pub fn free_extents(&self, ext: &[Extent]) {
        for e in ext {
            self.free(e.start, e.len);
        }
    }

    /// All free extents, sorted (for saving state and for fsck).
    pub fn extents(&self) -> Vec<Extent> {
        let mut v: Vec<Extent> = Vec::new();
        for s in self.shards.iter() {
            let mut sh = s.lock();
            sh.merge_recent();
            v.extend(sh.free.iter().map(|(&start, &len)| Extent { start, len }));
        }
        v.sort();
        v
    }

    /// Whether any block of `[start, start + len)` is free.
    pub fn any_free(&self, start: u64, len: u64) -> bool {
        self.pieces(start, len)
            .any(|(sh, lo, hi)| self.shards[sh].lock().holds_any(lo, hi))
    }

    /// Whether `block` is free.
    pub fn is_free(&self, block: u64) -> bool {
        if block < self.first || block >= self.end() {
            return false;
        }
        let sh = self.shards[self.shard_of(block)].lock();
        if sh.recent.contains(&block) {
            return true;
        }
        sh.free
            .range(..=block)
            .next_back()
            .is_some_and(|(&s, &l)| block < s + l)
    }
}

/// The inode-number allocator: a bitmap of free numbers (bit set = free) with a search hint.
pub struct InodeAlloc {
    inner: Mutex<InoBits>,
}

struct InoBits {
    words: Vec<u64>,
    free: u64,
    /// No free number below `hint * 64`.
    hint: usize,
}

impl InoBits {
    fn set(&mut self, ino: u64) -> bool {
        let (w, b) = ((ino / 64) as usize, ino % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        if !was {
            self.free += 1;
            self.hint = self.hint.min(w);
        }
        !was
    }
}

impl InodeAlloc {
    /// An allocator with the given free inode numbers.
    pub fn new(free: impl IntoIterator<Item = u64>) -> InodeAlloc {
        let mut bits = InoBits {
            words: Vec::new(),
            free: 0,
            hint: 0,
        };
        for i in free {
            bits.set(i);
        }
        InodeAlloc {
            inner: Mutex::new(bits),
        }
    }

    /// Take the lowest free inode number.
    pub fn alloc(&self) -> Option<u64> {
        let mut g = self.inner.lock();
        let start = g.hint;
        for w in start..g.words.len() {
            let word = g.words[w];
            if word != 0 {
                let b = word.trailing_zeros() as u64;
                g.words[w] &= !(1 << b);
                g.free -= 1;
                g.hint = w;
                return Some(w as u64 * 64 + b);
            }
        }
        g.hint = g.words.len();
        None
    }

    /// Return an inode number.
    pub fn free(&self, ino: u64) {
        let fresh = self.inner.lock().set(ino);
        debug_assert!(fresh, "double free of inode {ino}");
    }

    /// Add many free numbers under one lock (recovery).
    pub fn add_free(&self, inos: impl IntoIterator<Item = u64>) {
        let mut g = self.inner.lock();
        for i in inos {
            g.set(i);
        }
    }

    /// Add many free numbers given as a bitmap (bit `i % 64` of `words[i / 64]` set: `i` is
    /// free), under one lock, a word at a time (recovery: the numbers one by one cost a tenth
    /// of a small image's mount).
    pub fn add_free_words(&self, words: &[u64]) {
        let mut g = self.inner.lock();
        if g.words.len() < words.len() {
            g.words.resize(words.len(), 0);
        }
        let mut lowest = None;
        for (i, &w) in words.iter().enumerate() {
            let fresh = w & !g.words[i];
            if fresh != 0 {
                g.words[i] |= fresh;
                g.free += u64::from(fresh.count_ones());
                lowest.get_or_insert(i);
            }
        }
        if let Some(i) = lowest {
            g.hint = g.hint.min(i);
        }
    }

    /// Add a range of fresh numbers (a new inode-table chunk).
    pub fn add_range(&self, start: u64, end: u64) {
        let mut g = self.inner.lock();
        for i in start..end {
            g.set(i);
        }
    }

    /// Take each of `inos` that is free out of the free numbers, under one lock; returns how
    /// many were free.
    pub fn take(&self, inos: impl IntoIterator<Item = u64>) -> u64 {
        let mut g = self.inner.lock();
        let mut taken = 0;
        for ino in inos {
            let (w, b) = ((ino / 64) as usize, ino % 64);
            if let Some(word) = g.words.get_mut(w).filter(|word| **word & (1 << b) != 0) {
                *word &= !(1 << b);
                taken += 1;
            }
        }
        g.free -= taken;
        taken
    }

    /// Whether `ino` is free.
    pub fn is_free(&self, ino: u64) -> bool {
        let g = self.inner.lock();
        g.words
            .get((ino / 64) as usize)
            .is_some_and(|w| w & (1 << (ino % 64)) != 0)
    }

    /// Free inode numbers now.
    pub fn free_count(&self) -> u64 {
        self.inner.lock().free
    }

    /// All free numbers, ascending (for saving state).
    pub fn snapshot(&self) -> Vec<u64> {
        let g = self.inner.lock();
        let mut out = Vec::with_capacity(g.free as usize);
        for (w, &word) in g.words.iter().enumerate() {
            let mut x = word;
            while x != 0 {
                let b = x.trailing_zeros() as u64;
                out.push(w as u64 * 64 + b);
                x &= x - 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_pages_come_from_the_top_data_from_the_bottom() {
        let a = BlockAlloc::new(10, 110, 1);
        a.free(10, 100);
        let mut data = Extents::new();
        a.alloc_into(3, false, &mut data).unwrap();
        let mut logs = Extents::new();
        a.alloc_log_into(3, false, &mut logs).unwrap();
        assert_eq!(data.as_slice(), &[Extent { start: 10, len: 3 }]);
        assert_eq!(logs.as_slice(), &[Extent { start: 107, len: 3 }]);
        assert_eq!(a.free_blocks(), 94);
        // Freed single blocks wait in the shard's recent list; a log allocation that finds
        // the extents exhausted takes them too, and the counts stay exact.
        for b in 10..13 {
            a.free(b, 1);
        }
        let mut rest = Extents::new();
        a.alloc_log_into(97 - 4, true, &mut rest).unwrap();
        assert_eq!(rest.iter().map(|e| e.len).sum::<u64>(), 93);
        assert_eq!(a.free_blocks(), 4);
        let mut last = Extents::new();
        a.alloc_log_into(4, true, &mut last).unwrap();
        assert_eq!(a.free_blocks(), 0);
        assert_eq!(last.iter().map(|e| e.len).sum::<u64>(), 4);
        assert!(last.iter().any(|e| e.start == 10), "{last:?}");
        assert!(a.alloc_log_into(1, true, &mut last).is_err());
        a.free_extents(&logs);
        a.free_extents(&rest);
        a.free_extents(&last);
        assert_eq!(a.free_blocks(), 100);
    }

    #[test]
    fn alloc_free_merge() {
        let a = BlockAlloc::new(10, 110, 2);
        a.free(10, 100);
        assert_eq!(a.free_blocks(), 100);
        let e = a.alloc(30).unwrap();
        assert_eq!(e.iter().map(|e| e.len).sum::<u64>(), 30);
        assert_eq!(a.free_blocks(), 70);
        assert!(matches!(a.alloc(71), Err(Error::NoSpace)));
        // The reserve (4 blocks here) is only for space-freeing operations.
        assert!(matches!(a.alloc(67), Err(Error::NoSpace)));
        assert_eq!(a.free_blocks(), 70);
        a.free_extents(&e);
        assert_eq!(a.free_blocks(), 100);
        let ext = a.extents();
        assert_eq!(ext.iter().map(|e| e.len).sum::<u64>(), 100);
        // Merged back within each shard: at most one extent per shard.
        assert!(ext.len() <= 2, "{ext:?}");
        assert!(matches!(a.alloc(97), Err(Error::NoSpace)));
        let all = a.alloc_with(100, true).unwrap();
        assert_eq!(all.iter().map(|e| e.len).sum::<u64>(), 100);
        assert!(matches!(a.alloc(1), Err(Error::NoSpace)));
        assert!(!a.is_free(50));
    }

    /// Single blocks freed in any order merge back into one extent, in runs.
    #[test]
    fn single_frees_merge_into_runs() {
        let a = BlockAlloc::new(0, 300, 1);
        let order: Vec<u64> = (0..300).map(|i| (i * 7919) % 300).collect();
        for &b in &order {
            a.free(b, 1);
        }
        assert_eq!(a.free_blocks(), 300);
        assert_eq!(a.extents(), vec![Extent { start: 0, len: 300 }]);
        let all = a.alloc_with(300, true).unwrap();
        assert_eq!(all, vec![Extent { start: 0, len: 300 }]);
    }

    /// A shard riddled with single-block holes serves a small multi-block request from the
    /// first holes, in address order, instead of scanning every hole for a run that holds
    /// it whole (O(holes) per two-page write); a request it cannot hold among the first
    /// `max(FIT_SCAN, n)` extents still gets all its blocks, and a run among them is used.
    #[test]
    fn first_fit_looks_at_the_first_extents_only() {
        let a = BlockAlloc::new(0, 1000, 1);
        for b in (0..400).step_by(2) {
            a.free(b, 1); // 200 holes
        }
        a.free(500, 500); // and one long run
        let two = a.alloc(2).unwrap();
        assert_eq!(two.iter().map(|e| e.len).sum::<u64>(), 2);
        assert!(
            two.iter().all(|e| e.len == 1 && e.start < 400),
            "the first holes, not the far run: {two:?}"
        );
        let n = FIT_SCAN as u64 + 8;
        let some = a.alloc(n).unwrap();
        assert_eq!(some.iter().map(|e| e.len).sum::<u64>(), n);
        assert!(some.iter().all(|e| e.start < 400), "{some:?}");
        // Few holes left ahead of the run: the run holds a request whole.
        let b = BlockAlloc::new(0, 1000, 1);
        for x in (0..10).step_by(2) {
            b.free(x, 1);
        }
        b.free(500, 500);
        assert_eq!(b.alloc(3).unwrap(), vec![Extent { start: 500, len: 3 }]);
        for e in two.iter().chain(&some) {
            a.free(e.start, e.len);
        }
        assert_eq!(a.free_blocks(), 700);
    }

    /// A free of a block that is free already, or of a marked log page, is refused and
    /// counted; nothing is held twice, and a log page goes back through `free_log`.
    #[test]
    fn double_frees_and_log_page_frees_are_refused() {
        let a = BlockAlloc::new(10, 110, 2);
        a.free(10, 50);
        a.free(20, 1); // free already (in the extent map)
        a.free(55, 10); // overlaps the free range
        assert_eq!(a.refused_frees(), 2);
        assert_eq!(a.free_blocks(), 50);
        a.free(70, 1);
        a.free(70, 1); // free already (in the recent stack)
        assert_eq!(a.refused_frees(), 3);
        assert_eq!(a.free_blocks(), 51);
        a.mark_log(&[80, 81]);
        assert!(a.any_log(79, 2) && !a.any_log(82, 20));
        a.free(81, 1);
        a.free(75, 10);
        assert_eq!(a.refused_frees(), 5);
        assert!(!a.is_free(80) && !a.is_free(81));
        // One mark_log call across both shards ([10, 60) and [60, 110)); a range across them
        // with a marked page is refused whole.
        a.mark_log(&[63, 90, 200]);
        assert!(a.any_log(63, 1) && a.any_log(90, 1) && !a.any_log(100, 10));
        a.free(58, 7);
        assert_eq!(a.refused_frees(), 6);
        a.free_log(63);
        a.free_log(90);
        assert_eq!(a.free_blocks(), 53);
        a.free_log(80);
        a.free_log(81);
        assert!(a.is_free(80) && a.is_free(81) && !a.any_log(0, 200));
        assert_eq!(a.free_blocks(), 55);
        // Every block is held once: allocating all of them hands out each exactly once.
        let all = a.alloc_with(55, true).unwrap();
        let mut blocks: Vec<u64> = all.iter().flat_map(|e| e.start..e.start + e.len).collect();
        blocks.sort_unstable();
        blocks.dedup();
        assert_eq!(blocks.len(), 55);
    }

    #[test]
    fn counter_matches_extents_under_churn() {
        let a = BlockAlloc::new(0, 1000, 2);
        a.free(0, 1000);
        let mut held: Vec<u64> = Vec::new();
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if !x.is_multiple_of(3) || held.is_empty() {
                if let Ok(e) = a.alloc(1 + x % 3) {
                    held.extend(e.iter().flat_map(|e| e.start..e.start + e.len));
                }
            } else {
                let b = held.swap_remove((x as usize / 3) % held.len());
                a.free(b, 1);
            }
            let sum: u64 = a.extents().iter().map(|e| e.len).sum();
            assert_eq!(sum, a.free_blocks());
            assert_eq!(sum + held.len() as u64, 1000);
        }
        for &b in &held {
            assert!(!a.is_free(b));
        }
    }

    #[test]
    fn inode_bitmap() {
        let a = InodeAlloc::new([5, 3, 200]);
        assert_eq!(a.free_count(), 3);
        assert!(a.is_free(200) && !a.is_free(4) && !a.is_free(100_000));
        assert_eq!(a.alloc(), Some(3));
        assert_eq!(a.alloc(), Some(5));
        a.free(3);
        assert_eq!(a.snapshot(), vec![3, 200]);
        assert_eq!(a.alloc(), Some(3));
        assert_eq!(a.alloc(), Some(200));
        assert_eq!(a.alloc(), None);
        a.add_range(64, 66);
        assert_eq!(a.alloc(), Some(64));
        assert_eq!(a.free_count(), 1);
        // take: only free numbers count, huge ones are ignored, the count follows.
        a.add_range(70, 73);
        assert_eq!(a.take([65, 71, 66, 72, 71, u64::MAX]), 3);
        assert_eq!(a.snapshot(), vec![70]);
        assert_eq!(a.free_count(), 1);
    }

    #[test]
    fn words_free_the_same_numbers_as_one_at_a_time() {
        // Some numbers free already (one of them again in the words), a gap, a partial last
        // word: the same free count, the same allocation order.
        let free: Vec<u64> = (2..200).filter(|i| i % 3 != 0 || *i > 150).collect();
        let mut words = vec![0u64; 200usize.div_ceil(64)];
        for &i in &free {
            words[(i / 64) as usize] |= 1 << (i % 64);
        }
        let (a, b) = (InodeAlloc::new([5, 300]), InodeAlloc::new([5, 300]));
        a.add_free(free.iter().copied());
        b.add_free_words(&words);
        assert_eq!(a.free_count(), b.free_count());
        assert_eq!(a.snapshot(), b.snapshot());
        let take = |x: &InodeAlloc| (0..50).map(|_| x.alloc()).collect::<Vec<_>>();
        assert_eq!(take(&a), take(&b));
        assert_eq!(b.alloc(), a.alloc());
    }
}
