//! Appending to a per-inode log.
//!
//! [`stage`] writes entries past the committed tail (linking new pages as needed) and flushes
//! them, but commits nothing: the caller fences and then stores the new tail with
//! [`Staged::commit_tail`] (or through the journal for multi-inode operations). Until the tail
//! store is durable, nothing of the append is visible after a crash.

use crate::alloc::BlockAlloc;
use crate::bugs::{self, Bug};
use crate::error::Result;
use crate::inode::{LogState, PageLive};
use crate::layout::entry::Entry;
use crate::layout::inode::{CACHE_HEAD_OFFSET, CACHE_TAIL_OFFSET, HEAD_OFFSET, TAIL_OFFSET};
use crate::layout::logpage::{PageTrailer, ENTRY_BYTES, TRAILER_OFFSET};
use crate::layout::BLOCK;
use crate::media::Media;

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
}

/// Write `entries` after the tail of `log` (of the inode whose slot is at `slot_off`).
/// Everything it needs is allocated first: on `NoSpace` nothing was written. `use_reserve`:
/// the operation frees space and may use the allocator's reserve.
pub fn stage(
    media: &Media,
    alloc: &BlockAlloc,
    slot_off: u64,
    log: &LogState,
    entries: &[Entry],
    use_reserve: bool,
) -> Result<Staged> {
    stage_in(
        media,
        alloc,
        LogWords::file(slot_off),
        log,
        entries,
        use_reserve,
    )
}

/// [`stage`] for any log (the inode's or its write cache's).
pub fn stage_in(
    media: &Media,
    alloc: &BlockAlloc,
    words: LogWords,
    log: &LogState,
    entries: &[Entry],
    use_reserve: bool,
) -> Result<Staged> {
    stage_chain(media, alloc, words, log, entries, use_reserve, true)
}

/// [`stage_in`]; when the log is empty and `store_head` is false, the new chain's head is
/// not stored (a chain that replaces a log: the caller switches head and tail together).
pub fn stage_chain(
    media: &Media,
    alloc: &BlockAlloc,
    words: LogWords,
    log: &LogState,
    entries: &[Entry],
    use_reserve: bool,
    store_head: bool,
) -> Result<Staged> {
    // The entries are encoded into a per-thread buffer (no allocation per append); a nested
    // or interleaved use (loom schedules threads on one OS thread) falls back to a fresh one.
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
        stage_into(
            buf,
            media,
            alloc,
            words,
            log,
            entries,
            use_reserve,
            store_head,
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn stage_into(
    buf: &mut Vec<u8>,
    media: &Media,
    alloc: &BlockAlloc,
    words: LogWords,
    log: &LogState,
    entries: &[Entry],
    use_reserve: bool,
    store_head: bool,
) -> Result<Staged> {
    // Plan placement from the entries' lengths: which entries start a new page.
    let mut room = if log.tail == 0 {
        0
    } else {
        ENTRY_BYTES - log.tail % BLOCK
    };
    let mut new_page_count = 0u64;
    // Entries (after the first page of an empty log) that start a further page.
    let mut page_breaks = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let len = e.len_bytes() as u64;
        if len > room {
            if new_page_count > 0 || log.tail != 0 {
                page_breaks.push(i);
            }
            new_page_count += 1;
            room = ENTRY_BYTES;
        }
        room -= len;
    }
    // Logical number of the page the first entry goes to (the tail page, or the first new
    // page of an empty log).
    let first_page = if log.tail == 0 {
        log.first + log.pages.len() as u64
    } else {
        log.tail_logical()
    };
    let mut pages = Vec::with_capacity(new_page_count as usize);
    if new_page_count > 0 {
        for ext in alloc.alloc_with(new_page_count, use_reserve)? {
            pages.extend(ext.start..ext.start + ext.len);
        }
    }
    let mut new_head = None;
    let mut cur_page = log.tail_page();
    let mut pos = log.tail;
    let mut page_iter = pages.iter().copied();
    let mut next_break = page_breaks.iter().copied().peekable();
    // Write runs of entries that share a page with one store + one flush each.
    let mut run_start_pos = pos;
    let mut run_buf_start = 0usize;
    let mut deferred_flush = Vec::new();
    let mut put = |off: u64, bytes: &[u8]| -> Result<()> {
        if bugs::active(Bug::NoLogFlush) || bugs::active(Bug::TailBeforeEntry) {
            deferred_flush.push((off, bytes.len() as u64));
            return media.write(off, bytes);
        }
        media.write_flush(off, bytes)
    };
    let mut seq = log.next_seq;
    for (i, e) in entries.iter().enumerate() {
        let start = buf.len();
        let fresh = (i == 0 && log.tail == 0) || next_break.next_if_eq(&i).is_some();
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
        e.encode(seq, buf);
        seq += 1;
        debug_assert_eq!(buf.len() - start, e.len_bytes());
        pos += (buf.len() - start) as u64;
    }
    if pos > run_start_pos {
        put(run_start_pos, &buf[run_buf_start..])?;
    }
    if !bugs::active(Bug::TailBeforeEntry) {
        deferred_flush.clear();
    }
    if let (Some(h), true) = (new_head, store_head) {
        // Only read while the tail is non-zero, which the later tail store makes it.
        media.store_u64(words.head, h)?;
        media.flush(words.head, 8)?;
    }
    Ok(Staged {
        words,
        old_tail: log.tail,
        new_tail: pos,
        new_head,
        new_pages: pages,
        next_seq: seq,
        count: entries.len() as u64,
        first_page,
        page_breaks,
        deferred_flush,
    })
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

    /// Fence, store the new tail, flush, fence: the single-inode commit.
    pub fn commit_tail(&self, media: &Media) -> Result<()> {
        if !bugs::active(Bug::NoFenceBeforeTail) {
            media.fence();
        }
        self.store_tail(media)?;
        media.fence();
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
    pub fn apply(self, log: &mut LogState) -> (u64, Vec<usize>) {
        if let Some(h) = self.new_head {
            log.head = h;
        }
        log.live.resize(log.pages.len(), PageLive::default());
        log.live
            .extend(self.new_pages.iter().map(|_| PageLive::default()));
        log.pages.extend(self.new_pages);
        log.tail = self.new_tail;
        log.next_seq = self.next_seq;
        log.entries += self.count;
        (self.first_page, self.page_breaks)
    }

    /// The DRAM position of a chain staged into an empty log (a compaction's new chain),
    /// before any entry is applied.
    pub fn detached_log(&self) -> LogState {
        LogState {
            head: self.new_head.unwrap_or(0),
            tail: self.new_tail,
            pages: self.new_pages.clone(),
            next_seq: self.next_seq,
            entries: self.count,
            first: 0,
            live: vec![PageLive::default(); self.new_pages.len()],
            gc_next: 0,
        }
    }

    /// Give back the pages of an append that will not be committed.
    pub fn abort(self, alloc: &BlockAlloc) {
        for p in self.new_pages {
            alloc.free(p, 1);
        }
    }
}
