//! Appending to a per-inode log.
//!
//! [`stage`] writes entries past the committed tail (linking new pages as needed) with
//! non-temporal stores, but commits nothing: the caller fences and then stores the new tail with
//! [`Staged::commit_tail`] (or through the journal for multi-inode operations). Until the tail
//! store is durable, nothing of the append is visible after a crash.
#![forbid(unsafe_code)]

use crate::alloc::BlockAlloc;
use crate::bugs::{self, Bug};
use crate::error::Result;
use crate::layout::entry::{Entry, EntryMarks};
use crate::layout::inode::{CACHE_HEAD_OFFSET, CACHE_TAIL_OFFSET, HEAD_OFFSET, TAIL_OFFSET};
use crate::layout::logpage::{PageTrailer, ENTRY_BYTES, TRAILER_OFFSET};
use crate::layout::BLOCK;
use crate::media::Media;
use smallvec::SmallVec;

/// Liveness of one log page, for GC (DESIGN.md §5.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageLive {
    /// Entries in the page.
    pub entries: u32,
    /// Keys (file pages, names, attributes) whose current value an entry of this page set.
    pub live: u32,
    /// The latest logical page holding the removal of a name this page added: a prefix of
    /// the log that drops this page must drop that page too (replaying a removal needs its
    /// addition).
    pub reach: u64,
}

/// A log's page list: one page inline (a vector's size with smallvec's `union` feature).
pub type LogPages = SmallVec<[u64; 1]>;

/// Where the log of an inode stands.
#[derive(Clone, Debug, Default)]
pub struct LogState {
    /// Block of the first page (0 = empty log).
    pub head_block: u64,
    /// Region byte offset of the committed tail (0 = empty log).
    pub tail_off: u64,
    /// All pages of the chain, in order (most logs have one: kept inline, no allocation).
    pub pages: LogPages,
    /// Next entry sequence number.
    pub next_seq: u64,
    /// Entries in the log (live and dead), for GC decisions.
    pub entries: u64,
    /// Logical number of `pages[0]`: pages are numbered from the start of the chain's life,
    /// so that dropping a prefix (fast GC) does not renumber the rest.
    pub first: u64,
    /// Liveness per page, parallel to `pages` (inline for one page, as `pages`).
    pub live: SmallVec<[PageLive; 1]>,
    /// Entry count at which GC looks at this log again.
    pub gc_next: u64,
    /// Page count at which GC looks at this log's length in pages again.
    pub gc_next_pages: u64,
    /// The tail page's entry area past the committed tail is durably zero, so a one-fence
    /// append may go there (DESIGN.md §5.1). False for a log loaded from media: the first
    /// append of a one-fence session zeroes it, with two fences.
    pub tail_zeroed: bool,
    /// Pages from the start known dead, none of them a drop point ([`LogState::dead_prefix_from`]
    /// resumes there): a dead page's record never changes (only the pages of the append being
    /// applied gain live keys; a page loses its last key, and gets its reach, once).
    pub dead_scanned: u32,
    /// The largest reach among those pages.
    pub dead_reach: u64,
}

impl LogState {
    /// An empty log whose first entry gets sequence number 1 (a write cache's log before its
    /// first attachment).
    pub const EMPTY: LogState = LogState {
        head_block: 0,
        tail_off: 0,
        pages: SmallVec::new_const(),
        next_seq: 1,
        entries: 0,
        first: 0,
        live: SmallVec::new_const(),
        gc_next: 0,
        gc_next_pages: 0,
        tail_zeroed: false,
        dead_scanned: 0,
        dead_reach: 0,
    };

    /// Block of the page holding the tail.
    pub fn tail_page(&self) -> Option<u64> {
        self.pages.last().copied()
    }

    /// Logical number of the page holding the tail.
    pub fn tail_logical(&self) -> u64 {
        (self.first + self.pages.len() as u64).saturating_sub(1)
    }

    /// Liveness record of logical page `at` (None when it is not in the chain).
    pub fn page_mut(&mut self, at: u64) -> Option<&mut PageLive> {
        let i = at.checked_sub(self.first)?;
        self.live.get_mut(usize::try_from(i).ok()?)
    }

    /// How many leading pages a fast GC may drop: pages with no live key, never the tail
    /// page, and only up to a point where no later page removes a name they added.
    pub fn dead_prefix(&self) -> usize {
        self.scan_dead(0, 0).0
    }

    /// [`LogState::dead_prefix`], resuming where the last call that found nothing to drop
    /// stopped (a directory with churn keeps a long dead run that a later page's removals
    /// pin: scanning it again after every append cost ~640 instructions per unlink).
    pub fn dead_prefix_from(&mut self) -> usize {
        let n = self.pages.len().min(self.live.len());
        if n < 2 {
            return 0; // the tail page alone (most logs): never dropped
        }
        let (from, reach) = if (self.dead_scanned as usize) < n {
            (self.dead_scanned as usize, self.dead_reach)
        } else {
            (0, 0)
        };
        let (k, scanned, reach) = self.scan_dead(from, reach);
        // Nothing to drop: the dead pages seen stay dead and keep their reach, so the next
        // call resumes after them. Something to drop: the caller drops it (the cache is reset
        // by `drop_prefix`), or fails and the next call scans again.
        (self.dead_scanned, self.dead_reach) = if k == 0 {
            (u32::try_from(scanned).unwrap_or(0), reach)
        } else {
            (0, 0)
        };
        k
    }

    /// Scan the dead run from page `from` (pages before it dead, none a drop point, their
    /// largest reach `reach`): returns the drop point, where the run stopped, and its reach.
    fn scan_dead(&self, from: usize, mut reach: u64) -> (usize, usize, u64) {
        let n = self.pages.len().min(self.live.len());
        let mut k = 0;
        let mut i = from;
        while i + 1 < n {
            let p = &self.live[i];
            if p.live > 0 {
                break;
            }
            reach = reach.max(p.reach);
            if reach <= self.first + i as u64
                || crate::bugs::active(crate::bugs::Bug::GcIgnoresReach)
            {
                k = i + 1;
            }
            i += 1;
        }
        (k, i, reach)
    }

    /// Move the committed position: the tail to `new_tail` (in the tail page, or in pages the
    /// caller linked already), `count` more entries, next sequence number `next_seq`, and
    /// whether the tail page is zero past the new tail.
    pub fn advance(&mut self, new_tail: u64, next_seq: u64, count: u64, rest_zero: bool) {
        if self.live.len() != self.pages.len() {
            self.live.resize(self.pages.len(), PageLive::default());
        }
        self.tail_off = new_tail;
        self.next_seq = next_seq;
        self.entries += count;
        self.tail_zeroed = rest_zero;
    }

    /// Drop the first `k` pages from the DRAM state (after the head moved past them);
    /// returns their blocks.
    pub fn drop_prefix(&mut self, k: usize) -> Vec<u64> {
        let gone: Vec<u64> = self.pages.drain(..k).collect();
        let dead: u64 = self.live.drain(..k).map(|p| p.entries as u64).sum();
        self.entries -= dead.min(self.entries);
        self.first += k as u64;
        (self.dead_scanned, self.dead_reach) = (0, 0);
        if let Some(&h) = self.pages.first() {
            self.head_block = h;
        }
        gone
    }
}

/// Where a log's head and tail words live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogWords {
    /// Region offset of the head word.
    pub head: u64,
    /// Region offset of the tail word (the commit word).
    pub tail: u64,
}

impl LogWords {
    /// The inode's log, for the slot at `slot_off`.
    pub fn file(slot_off: u64) -> LogWords {
        LogWords {
            head: slot_off + HEAD_OFFSET,
            tail: slot_off + TAIL_OFFSET,
        }
    }

    /// The inode's write-cache log.
    pub fn cache(slot_off: u64) -> LogWords {
        LogWords {
            head: slot_off + CACHE_HEAD_OFFSET,
            tail: slot_off + CACHE_TAIL_OFFSET,
        }
    }
}

/// An append written but not yet committed.
#[derive(Debug)]
pub struct Staged {
    /// The log's words.
    pub words: LogWords,
    /// Tail before.
    pub old_tail: u64,
    /// Tail after.
    pub new_tail: u64,
    /// New head if the log was empty.
    pub new_head: Option<u64>,
    /// Pages linked by this append.
    pub new_pages: Vec<u64>,
    /// Next sequence number after it.
    pub next_seq: u64,
    /// Entries appended.
    pub count: u64,
    /// Logical page (see [`LogState::first`]) of the first entry.
    pub first_page: u64,
    /// Indices of the entries that start a further page (empty, so no allocation, for an
    /// append that stays in one page).
    pub page_breaks: Vec<usize>,
    /// Entry ranges left unflushed (only by an injected bug).
    deferred_flush: Vec<(u64, u64)>,
    /// Commit with one fence: the entries stay in a tail page that was zero past the tail,
    /// and every data run they name carries its checksum (DESIGN.md §5.1).
    pub one_fence: bool,
    /// `DirAdd` entries that carry their new inode's slot checksum (one-fence only; the
    /// commit keeps its first fence for a new slot no entry checks, DESIGN.md §5.3).
    pub slots_checked: usize,
    /// After the commit, the tail page is zero past the new tail ([`LogState::tail_zeroed`]).
    pub rest_zero: bool,
    /// What to zero again (and fence) if the append is given back: the entries written over
    /// a zeroed tail page.
    rezero: Option<(u64, u64)>,
}

/// How an append is staged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageOptions {
    /// The change frees space (a removal, a shrink, a migration, a compaction): its log pages
    /// may come from the allocator's reserve.
    pub use_reserve: bool,
    /// A chain that replaces a log (compaction): when the log is empty, its new head word is
    /// not stored here; the commit switches head and tail together.
    pub detached: bool,
    /// The session makes one-fence commits (`Media::one_fence`) and this is an inode's own
    /// log: keep its tail page zero past the tail, and commit with one fence when the append
    /// can (see [`Staged::one_fence`]).
    pub one_fence: bool,
}

/// What the entries of a one-fence append carry for recovery to tell a torn commit from a
/// whole one (DESIGN.md §5.1.1, §5.3).
#[derive(Clone, Copy, Debug, Default)]
pub struct Checks<'a> {
    /// (first block, crc32) of every data run written for the append: its `Write` entry's
    /// `data_crc`.
    pub data: &'a [(u64, u32)],
    /// (inode, slot checksum) of every new inode's slot written for it: the `slot_crc` of
    /// the `DirAdd` that names the inode.
    pub slots: &'a [(u64, u32)],
}

/// Write `entries` after the tail of `log`, whose head and tail words are `words`, linking
/// new log pages as needed, and flush them. Commits nothing (see the module docs). Its log
/// pages are allocated before anything is written: on `NoSpace` nothing was.
pub fn stage(
    media: &Media,
    alloc: &BlockAlloc,
    words: LogWords,
    log: &LogState,
    entries: &[Entry],
    opts: StageOptions,
    checks: Checks<'_>,
) -> Result<Staged> {
    with_buf(|buf| match entries {
        [e] if !opts.detached && fits_one(log, e.len_bytes(), opts.one_fence) => {
            stage_one(buf, media, words, log, e, checks)
        }
        _ => stage_planned(buf, media, alloc, words, log, entries, opts, checks),
    })
}

/// Run `f` with an empty per-thread encoding buffer (no allocation per append); a nested or
/// interleaved use (loom schedules threads on one OS thread) gets a fresh one.
fn with_buf<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|cell| {
        let mut shared = cell.try_borrow_mut();
        let mut own = Vec::new();
        let buf = match shared.as_deref_mut() {
            Ok(b) => {
                b.clear();
                b
            }
            Err(_) => &mut own,
        };
        f(buf)
    })
}

/// Whether one entry of `len` bytes can be appended to `log` by [`append_one`]: the session
/// makes one-fence commits (`one_fence`), the log's tail page is zero past the tail and has
/// room for the entry (no new page, no trailer), and no bug is injected (the injected bugs
/// live in the general path).
pub fn fits_one(log: &LogState, len: usize, one_fence: bool) -> bool {
    one_fence
        && log.tail_zeroed
        && log.tail_off != 0
        && ENTRY_BYTES - log.tail_off % BLOCK >= len as u64
        && bugs::none_active()
}

/// The one-entry commit of a one-fence session (DESIGN.md §5.1.3), for an append that
/// [`fits_one`]: copy the encoded entry `bytes` (its sequence number the log's next one)
/// after the tail non-temporally, store the new tail word, flush, fence; then advance the
/// DRAM position. The media sees exactly what [`stage`] + [`Staged::commit_tail`] store for
/// the same single entry (no new page, no zeroing: the page is zero past the tail already).
/// Returns the logical page the entry is in. On `Err` the DRAM position stays where it was
/// and the tail page is marked not zeroed (past the tail it may hold the entry's bytes), so
/// that the next append zeroes it with two fences; a media error after the tail store leaves
/// the commit's fate to recovery, as in [`crate::txn::Txn::commit`].
pub fn append_one(media: &Media, words: LogWords, log: &mut LogState, bytes: &[u8]) -> Result<u64> {
    debug_assert!(fits_one(log, bytes.len(), true));
    let new_tail = log.tail_off + bytes.len() as u64;
    let committed = media
        .write_nt(log.tail_off, bytes)
        .and_then(|()| commit_word(media, words.tail, new_tail, true));
    if let Err(e) = committed {
        log.tail_zeroed = false;
        return Err(e);
    }
    log.advance(new_tail, log.next_seq + 1, 1, true);
    Ok(log.tail_logical())
}

/// Store a commit word and make it durable: fence (left out for a one-fence commit), store,
/// flush, fence.
fn commit_word(media: &Media, addr: u64, value: u64, one_fence: bool) -> Result<()> {
    if !one_fence {
        media.fence();
    }
    media.store_u64(addr, value)?;
    media.flush(addr, 8)?;
    media.fence();
    Ok(())
}

/// [`stage`]'s general path: entries placed by a plan of the pages they need.
#[allow(clippy::too_many_arguments)]
fn stage_planned(
    buf: &mut Vec<u8>,
    media: &Media,
    alloc: &BlockAlloc,
    words: LogWords,
    log: &LogState,
    entries: &[Entry],
    opts: StageOptions,
    checks: Checks<'_>,
) -> Result<Staged> {
    // Plan placement from the entries' lengths: which entries start a new page.
    let mut room = if log.tail_off == 0 {
        0
    } else {
        ENTRY_BYTES - log.tail_off % BLOCK
    };
    let mut new_page_count = 0u64;
    // Entries (after the first page of an empty log) that start a further page.
    let mut page_breaks = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let len = e.len_bytes() as u64;
        if len > room {
            if new_page_count > 0 || log.tail_off != 0 {
                page_breaks.push(i);
            }
            new_page_count += 1;
            room = ENTRY_BYTES;
        }
        room -= len;
    }
    // Logical number of the page the first entry goes to (the tail page, or the first new
    // page of an empty log).
    let first_page = if log.tail_off == 0 {
        log.first + log.pages.len() as u64
    } else {
        log.tail_logical()
    };
    let mut slots_checked = 0;
    // The append stays in the current tail page, which is zero past the tail.
    let in_zeroed_page = log.tail_zeroed && new_page_count == 0 && log.tail_off != 0;
    let one_fence = opts.one_fence
        && !opts.detached
        && in_zeroed_page
        && entries.iter().all(|e| checks.covers(e));
    let mut pages = Vec::with_capacity(new_page_count as usize);
    if new_page_count > 0 {
        let mut ext = crate::alloc::Extents::new();
        alloc.alloc_log_into(new_page_count, opts.use_reserve, &mut ext)?;
        for e in ext {
            pages.extend(e.start..e.start + e.len);
        }
    }
    let mut new_head = None;
    let mut cur_page = log.tail_page();
    let mut pos = log.tail_off;
    let mut page_iter = pages.iter().copied();
    let mut next_break = page_breaks.iter().copied().peekable();
    // Write runs of entries that share a page with one non-temporal copy each: entries are
    // whole, aligned lines, durable at the next fence as flushed stores are, and a log page's
    // lines (zeroed non-temporally) are not read into the cache to be written.
    let mut run_start_pos = pos;
    let mut run_buf_start = 0usize;
    let mut deferred_flush = Vec::new();
    let mut put = |off: u64, bytes: &[u8]| -> Result<()> {
        if bugs::active(Bug::NoLogFlush) || bugs::active(Bug::TailBeforeEntry) {
            deferred_flush.push((off, bytes.len() as u64));
            return media.write(off, bytes);
        }
        media.write_nt(off, bytes)
    };
    let mut seq = log.next_seq;
    for (i, e) in entries.iter().enumerate() {
        let start = buf.len();
        let fresh = (i == 0 && log.tail_off == 0) || next_break.next_if_eq(&i).is_some();
        if fresh {
            if pos > run_start_pos {
                put(run_start_pos, &buf[run_buf_start..start])?;
            }
            let next = page_iter.next().expect("planned page");
            match cur_page {
                Some(p) => {
                    let used = (pos - p * BLOCK) as u32;
                    let t = PageTrailer::new(next, used);
                    media.write_flush(p * BLOCK + TRAILER_OFFSET, bytemuck::bytes_of(&t))?;
                }
                None => new_head = Some(next),
            }
            cur_page = Some(next);
            pos = next * BLOCK;
            run_start_pos = pos;
            run_buf_start = start;
        }
        let more = i + 1 < entries.len();
        let marks = if one_fence {
            checks.marks_of(e, more)
        } else {
            EntryMarks {
                more,
                ..EntryMarks::default()
            }
        };
        slots_checked += usize::from(marks.slot_crc.is_some());
        e.encode_marked(seq, marks, buf);
        seq += 1;
        debug_assert_eq!(buf.len() - start, e.len_bytes());
        pos += (buf.len() - start) as u64;
    }
    if pos > run_start_pos {
        put(run_start_pos, &buf[run_buf_start..])?;
    }
    // A one-fence session keeps the tail page zero past the tail: zero the rest of the page
    // this append ends in unless it already was (durable at the commit's first fence).
    let rest_zero = opts.one_fence && !opts.detached;
    if rest_zero && !in_zeroed_page {
        let end = (pos - 1) / BLOCK * BLOCK + ENTRY_BYTES;
        if end > pos {
            media.zero_nt(pos, end - pos)?;
        }
    }
    let rezero = (rest_zero && log.tail_zeroed && log.tail_off != 0).then(|| {
        (
            log.tail_off,
            (log.tail_off - 1) / BLOCK * BLOCK + ENTRY_BYTES,
        )
    });
    if !bugs::active(Bug::TailBeforeEntry) {
        deferred_flush.clear();
    }
    if let (Some(h), false) = (new_head, opts.detached) {
        // Only read while the tail is non-zero, which the later tail store makes it.
        media.store_u64(words.head, h)?;
        media.flush(words.head, 8)?;
    }
    Ok(Staged {
        words,
        old_tail: log.tail_off,
        new_tail: pos,
        new_head,
        new_pages: pages,
        next_seq: seq,
        count: entries.len() as u64,
        first_page,
        page_breaks,
        deferred_flush,
        one_fence,
        slots_checked,
        rest_zero,
        rezero,
    })
}

/// [`stage`] for one entry that [`fits_one`] the log's tail page (zero past the tail,
/// the session's one-fence commits): the same stores and the same [`Staged`], without the
/// placement plan of the general path (no new page, no trailer, nothing to zero).
fn stage_one(
    buf: &mut Vec<u8>,
    media: &Media,
    words: LogWords,
    log: &LogState,
    e: &Entry,
    checks: Checks<'_>,
) -> Result<Staged> {
    let one_fence = checks.covers(e);
    let marks = if one_fence {
        checks.marks_of(e, false)
    } else {
        EntryMarks::default()
    };
    e.encode_marked(log.next_seq, marks, buf);
    debug_assert_eq!(buf.len(), e.len_bytes());
    media.write_nt(log.tail_off, buf)?;
    let page_end = (log.tail_off - 1) / BLOCK * BLOCK + ENTRY_BYTES;
    Ok(Staged {
        words,
        old_tail: log.tail_off,
        new_tail: log.tail_off + buf.len() as u64,
        new_head: None,
        new_pages: Vec::new(),
        next_seq: log.next_seq + 1,
        count: 1,
        first_page: log.tail_logical(),
        page_breaks: Vec::new(),
        deferred_flush: Vec::new(),
        one_fence,
        slots_checked: usize::from(marks.slot_crc.is_some()),
        rest_zero: true,
        rezero: Some((log.tail_off, page_end)),
    })
}

impl Checks<'_> {
    /// Whether a one-fence commit can check `e`: a `Write` of a data run has its run's
    /// checksum (so recovery can tell a torn commit from a whole one); other entries need none.
    fn covers(&self, e: &Entry) -> bool {
        match e {
            Entry::Write { block, .. } if *block != 0 => self.data_crc(*block).is_some(),
            _ => true,
        }
    }

    fn data_crc(&self, block: u64) -> Option<u32> {
        self.data.iter().find(|(b, _)| *b == block).map(|&(_, c)| c)
    }

    /// The checks an entry of a one-fence append carries.
    fn marks_of(&self, e: &Entry, more: bool) -> EntryMarks {
        let mut m = EntryMarks {
            more,
            ..EntryMarks::default()
        };
        match e {
            Entry::Write { block, .. } if *block != 0 => m.data_crc = self.data_crc(*block),
            Entry::DirAdd { ino, .. } => {
                m.slot_crc = self.slots.iter().find(|(i, _)| i == ino).map(|&(_, c)| c);
            }
            _ => {}
        }
        m
    }
}

impl Staged {
    /// Region offset of the tail word.
    pub fn tail_addr(&self) -> u64 {
        self.words.tail
    }

    /// Store the new tail and flush it (the caller fences).
    pub fn store_tail(&self, media: &Media) -> Result<()> {
        media.store_u64(self.tail_addr(), self.new_tail)?;
        media.flush(self.tail_addr(), 8)
    }

    /// The tail store of a one-fence commit without its fence (the caller fences, once for
    /// several independent appends): store the new tail, flush it, and the entry lines an
    /// injected bug left unflushed.
    pub fn store_tail_unfenced(&self, media: &Media) -> Result<()> {
        debug_assert!(self.one_fence);
        self.store_tail(media)?;
        for &(off, len) in &self.deferred_flush {
            media.flush(off, len)?;
        }
        Ok(())
    }

    /// Fence, store the new tail, flush, fence: the single-inode commit. `one_fence` (only
    /// for an append that is [`Staged::one_fence`], in a transaction that wrote nothing else
    /// that must be durable first) leaves out the first fence.
    pub fn commit_tail(&self, media: &Media, one_fence: bool) -> Result<()> {
        debug_assert!(!one_fence || self.one_fence);
        let skip_first = one_fence || bugs::active(Bug::NoFenceBeforeTail);
        commit_word(media, self.tail_addr(), self.new_tail, skip_first)?;
        if !self.deferred_flush.is_empty() {
            for &(off, len) in &self.deferred_flush {
                media.flush(off, len)?;
            }
            media.fence();
        }
        Ok(())
    }

    /// Logical page of entry `i` of this append.
    pub fn entry_page(&self, i: usize) -> u64 {
        self.first_page + self.page_breaks.partition_point(|&b| b <= i) as u64
    }

    /// Make the DRAM log state match the committed append; returns, for
    /// [`crate::inode::InodeState::apply`], the logical page of the first entry and the indices
    /// of the entries that start a further page.
    /// Applied in place (no move of the staged append out of its committed part).
    pub fn apply(&self, log: &mut LogState) -> (u64, &[usize]) {
        if let Some(h) = self.new_head {
            log.head_block = h;
        }
        if !self.new_pages.is_empty() {
            log.live.resize(log.pages.len(), PageLive::default());
            log.live
                .extend(self.new_pages.iter().map(|_| PageLive::default()));
            log.pages.extend_from_slice(&self.new_pages);
        }
        log.advance(self.new_tail, self.next_seq, self.count, self.rest_zero);
        (self.first_page, &self.page_breaks)
    }

    /// The DRAM position of a chain staged into an empty log (a compaction's new chain),
    /// before any entry is applied.
    pub fn detached_log(&self) -> LogState {
        LogState {
            head_block: self.new_head.unwrap_or(0),
            tail_off: self.new_tail,
            pages: LogPages::from_slice(&self.new_pages),
            next_seq: self.next_seq,
            entries: self.count,
            first: 0,
            live: smallvec::smallvec![PageLive::default(); self.new_pages.len()],
            gc_next: 0,
            gc_next_pages: 0,
            tail_zeroed: self.rest_zero,
            dead_scanned: 0,
            dead_reach: 0,
        }
    }

    /// Give back the pages of an append that will not be committed, and zero again what it
    /// wrote over a zeroed tail page (fenced: a later one-fence append there must not find
    /// these entries after a crash).
    pub fn abort(self, alloc: &BlockAlloc, media: &Media) {
        if let Some((from, to)) = self.rezero {
            if to > from && media.zero_nt(from, to - from).is_ok() {
                media.fence();
            }
        }
        for p in self.new_pages {
            alloc.free(p, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::entry::LINE_BYTES;
    use crate::layout::Kind;
    use proptest::prelude::*;

    /// One step of a log's life as the engine's appends and GC make it.
    #[derive(Clone, Debug)]
    enum Step {
        /// An append that links a page, its entries adding `keys` live keys there.
        Link { keys: u32 },
        /// A key of page `page` (an index, modulo the non-tail pages with a live key)
        /// released by an entry in the tail page; `pin`: the release is a name's removal,
        /// which sets the page's reach to the tail page.
        Release { page: usize, pin: bool },
        /// A fast GC: drop what [`LogState::dead_prefix_from`] says.
        Gc,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u32..4).prop_map(|keys| Step::Link { keys }),
            (any::<usize>(), any::<bool>()).prop_map(|(page, pin)| Step::Release { page, pin }),
            Just(Step::Gc),
        ]
    }

    proptest! {
        /// The resumed scan answers what the full scan answers, at every step, while pages
        /// die, get pinned by later removals and are dropped.
        #[test]
        fn dead_prefix_from_agrees_with_the_full_scan(steps in prop::collection::vec(step(), 1..200)) {
            let mut log = LogState::default();
            let mut next_block = 100u64;
            for s in steps {
                match s {
                    Step::Link { keys } => {
                        log.pages.push(next_block);
                        next_block += 1;
                        log.live.push(PageLive { entries: keys, live: keys, reach: 0 });
                    }
                    Step::Release { page, pin } => {
                        let tail = log.tail_logical();
                        let n = log.pages.len();
                        let live: Vec<usize> =
                            (0..n.saturating_sub(1)).filter(|&i| log.live[i].live > 0).collect();
                        if let Some(&i) = live.get(page % live.len().max(1)) {
                            let p = &mut log.live[i];
                            p.live -= 1;
                            if pin {
                                p.reach = p.reach.max(tail);
                            }
                        }
                    }
                    Step::Gc => {
                        let full = log.dead_prefix();
                        let resumed = log.dead_prefix_from();
                        prop_assert_eq!(full, resumed);
                        if resumed > 0 {
                            log.drop_prefix(resumed);
                        }
                    }
                }
                prop_assert_eq!(log.dead_prefix(), log.clone().dead_prefix_from());
            }
        }
    }

    fn one_entry() -> impl Strategy<Value = Entry> {
        let name = prop::collection::vec(b'a'..=b'z', 1..=255usize);
        prop_oneof![
            (1u64..1000, name.clone(), any::<u64>(), any::<bool>()).prop_map(|(ino, n, t, dir)| {
                Entry::DirAdd {
                    ino,
                    kind: if dir { Kind::Dir } else { Kind::File },
                    name: n.as_slice().into(),
                    mtime_ns: t,
                }
            }),
            (1u64..1000, name, any::<u64>()).prop_map(|(ino, n, t)| Entry::DirRemove {
                ino,
                name: n.as_slice().into(),
                mtime_ns: t,
            }),
            (any::<u32>(), any::<u64>(), 0u64..1000).prop_map(|(nlink, t, parent)| {
                Entry::Link {
                    nlink,
                    ctime_ns: t,
                    parent,
                }
            }),
        ]
    }

    proptest! {
        /// The one-entry staging makes the stores and the `Staged` the planner makes for the
        /// same entry (§5.1.4): same bytes on the media, same fields.
        #[test]
        fn stage_one_is_the_planner_for_one_entry(
            e in one_entry(),
            lines_used in 1u64..60,
            seq in 1u64..1_000_000,
            slot_crc in any::<Option<u32>>(),
        ) {
            const PAGE: u64 = 10;
            let log = LogState {
                head_block: PAGE,
                tail_off: PAGE * BLOCK + lines_used * LINE_BYTES as u64,
                pages: LogPages::from_slice(&[PAGE]),
                next_seq: seq,
                entries: lines_used,
                live: smallvec::smallvec![PageLive::default()],
                tail_zeroed: true,
                ..LogState::default()
            };
            prop_assume!(fits_one(&log, e.len_bytes(), true));
            let ino = match &e {
                Entry::DirAdd { ino, .. } => *ino,
                _ => 0,
            };
            let slots: Vec<(u64, u32)> = slot_crc.map(|c| (ino, c)).into_iter().collect();
            let checks = Checks { data: &[], slots: &slots };
            let opts = StageOptions { use_reserve: false, detached: false, one_fence: true };
            let words = LogWords::file(BLOCK);
            let stage_with = |one: bool| {
                let media = Media::traced(32 * BLOCK);
                let alloc = BlockAlloc::new(16, 32, 1);
                let mut buf = Vec::new();
                let staged = if one {
                    stage_one(&mut buf, &media, words, &log, &e, checks)
                } else {
                    stage_planned(&mut buf, &media, &alloc, words, &log, std::slice::from_ref(&e), opts, checks)
                };
                (format!("{:?}", staged), media.snapshot())
            };
            let (one, one_bytes) = stage_with(true);
            let (planned, planned_bytes) = stage_with(false);
            prop_assert_eq!(one, planned);
            prop_assert!(one_bytes == planned_bytes, "the media differ");
        }
    }
}
