//! The one reader of log chains. [`LogCursor`] walks a log (an inode's log or its write-cache
//! log) from its head page to its committed tail and yields every entry, decoded and checked,
//! as `Result<LogItem>`; the first error ends the walk. Mount replay, `novafs inspect` and the
//! fuzz targets read logs through it; fsck's repairing walk (which must go on past damage and
//! correct single flipped bits) uses its two halves, [`page_link`] and [`entry_at`], so the
//! rules of what a valid chain and a valid entry are live here once.
//!
//! Everything read is untrusted: the head and tail words, every trailer, every entry. A chain
//! is bounded by the image's block count (a cycle is an error, not a hang), offsets are checked
//! against the page's committed end before any slice is taken, and sequence numbers must
//! increase along the chain.
#![forbid(unsafe_code)]

use crate::error::{Error, Result};
use crate::layout::entry::LINE_BYTES;
use crate::layout::entry::{Entry, EntryMarks};
use crate::layout::logpage::{PageTrailer, ENTRY_BYTES, TRAILER_OFFSET};
use crate::layout::{Bounds, BLOCK};
use crate::media::Media;

/// What a cursor reads the image through: the engine's [`Media`], or a tool's read-only view
/// of an image file (`novafs inspect`).
pub trait ImageRead {
    /// Read `buf.len()` bytes at region offset `off` (an error past the end).
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()>;
}

impl ImageRead for Media {
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.read(off, buf)
    }
}

/// Sequence numbers at or above this are corrupt (a log would need 2^63 appends to reach it),
/// so that `last + 1` and the appends after it never overflow.
pub const SEQ_LIMIT: u64 = 1 << 63;

/// One entry of a log, with where it lies.
#[derive(Clone, Debug)]
pub struct LogItem {
    /// The block of the log page that holds it.
    pub page: u64,
    /// That page's position in the chain (0 = the head page).
    pub page_index: u64,
    /// Byte offset of the entry inside its page.
    pub offset: u64,
    /// Length in bytes (whole 64-byte lines).
    pub len: u64,
    /// Its sequence number.
    pub seq: u64,
    /// The decoded entry.
    pub entry: Entry,
    /// Its header flags and data checksum (format 5).
    pub marks: EntryMarks,
}

/// Decode the entry at byte `pos` of a log page's committed bytes `page[..end]`: the header
/// line first (kind and length), then the whole entry, never reading past `end`. Returns the
/// entry, its sequence number and its length in bytes.
pub fn entry_at(
    page: &[u8],
    pos: usize,
    end: usize,
    where_: impl Fn() -> String,
) -> Result<(Entry, u64, usize)> {
    let end = end.min(page.len());
    if pos.checked_add(LINE_BYTES).is_none_or(|e| e > end) {
        return Err(Error::corrupt(
            "log entry crosses the committed end",
            where_(),
        ));
    }
    let lines = Entry::peek_lines(&page[pos..pos + LINE_BYTES], &where_)?;
    let len = lines * LINE_BYTES;
    if pos + len > end {
        return Err(Error::corrupt(
            "log entry crosses the committed end",
            where_(),
        ));
    }
    let (e, seq) = Entry::decode(&page[pos..pos + len], where_)?;
    Ok((e, seq, len))
}

/// The link of a log page that is not the tail page: its trailer (the 64 bytes at
/// [`TRAILER_OFFSET`]), validated, with the next page inside the allocatable area. Returns the
/// page's committed entry bytes and the next page.
pub fn page_link(trailer: &PageTrailer, ino: u64, page: u64, bounds: Bounds) -> Result<(u64, u64)> {
    trailer.validate(ino, page, bounds.hi)?;
    if !bounds.contains(trailer.next, 1) {
        return Err(Error::corrupt(
            "log page link outside the allocatable area",
            format!("inode {ino} log page {page}"),
        ));
    }
    Ok((u64::from(trailer.used), trailer.next))
}

/// Check a log's head and tail words: the head a block inside the allocatable area, the tail
/// a 64-byte boundary inside the entry area of a page inside it (and not at the page's start:
/// a page is linked only once it holds an entry).
pub fn check_ends(ino: u64, which: &str, head: u64, tail: u64, bounds: Bounds) -> Result<()> {
    let loc = |what: &str| Error::corrupt(format!("{which} {what}"), format!("inode {ino}"));
    if !bounds.contains(head, 1) {
        return Err(loc("head"));
    }
    if !tail.is_multiple_of(LINE_BYTES as u64) || !bounds.contains(tail / BLOCK, 1) {
        return Err(loc("tail"));
    }
    if tail % BLOCK > ENTRY_BYTES || tail.is_multiple_of(BLOCK) {
        return Err(loc("tail outside its page's entry area"));
    }
    Ok(())
}

std::thread_local! {
    /// A page buffer per thread, lent to one cursor at a time (a rebuild walks a log per
    /// inode: one allocation and zero fill each, 2-3% of its instructions, without it). A
    /// cursor made while another holds it gets a buffer of its own.
    static PAGE_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A walk over one log chain. An empty log (tail 0) yields nothing.
pub struct LogCursor<'m, R: ImageRead + ?Sized = Media> {
    media: &'m R,
    ino: u64,
    which: &'static str,
    bounds: Bounds,
    tail: u64,
    /// The pages visited so far, in chain order.
    pages: crate::log::LogPages,
    /// The current page's committed bytes: the thread's [`PAGE_BUF`], taken for the walk
    /// and given back when the cursor is dropped.
    buf: Vec<u8>,
    /// Position in the current page and its committed end.
    pos: usize,
    end: usize,
    /// The page after the current one (0 on the tail page).
    next: u64,
    last_seq: u64,
    /// No more items: the tail was reached or an error was yielded.
    done: bool,
    /// The walk reached the committed tail.
    complete: bool,
}

impl<'m, R: ImageRead + ?Sized> LogCursor<'m, R> {
    /// A cursor over the log of inode `ino` (`which`: "log" or "cache log", for messages)
    /// from page `head` to byte offset `tail`. The head and tail are checked at the first
    /// call of `next`.
    pub fn new(
        media: &'m R,
        ino: u64,
        which: &'static str,
        head: u64,
        tail: u64,
        bounds: Bounds,
    ) -> LogCursor<'m, R> {
        LogCursor {
            media,
            ino,
            which,
            bounds,
            tail,
            pages: crate::log::LogPages::new(),
            buf: PAGE_BUF.with(|b| b.take()),
            pos: 0,
            end: 0,
            next: head,
            last_seq: 0,
            done: tail == 0,
            complete: tail == 0,
        }
    }

    /// The pages of the chain visited so far (all of them once the walk is complete).
    pub fn pages(&self) -> &[u64] {
        &self.pages
    }

    /// The pages, taking them.
    pub fn into_pages(mut self) -> crate::log::LogPages {
        std::mem::take(&mut self.pages)
    }

    /// The sequence number of the last entry yielded (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether the walk reached the committed tail without an error.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Read the next page of the chain into the buffer.
    fn enter(&mut self, page: u64) -> Result<()> {
        let ino = self.ino;
        if self.pages.len() as u64 >= self.bounds.hi {
            return Err(Error::corrupt(
                format!("{} chain cycle", self.which),
                format!("inode {ino}"),
            ));
        }
        self.pages.push(page);
        let (end, next) = if page == self.tail / BLOCK {
            (self.tail % BLOCK, 0)
        } else {
            let mut t = [0u8; 64];
            self.media.read_at(page * BLOCK + TRAILER_OFFSET, &mut t)?;
            page_link(&bytemuck::pod_read_unaligned(&t), ino, page, self.bounds)?
        };
        // `end` <= ENTRY_BYTES (checked with the tail or the trailer); the read fills
        // `buf[..end]` and nothing past `end` is ever decoded, so only growth is zeroed (was a
        // 4 KiB zero fill per cursor, 5% of the crash harness's instructions).
        let end_bytes = (end as usize).min(ENTRY_BYTES as usize);
        if self.buf.len() < end_bytes {
            self.buf.resize(end_bytes, 0);
        }
        self.media
            .read_at(page * BLOCK, &mut self.buf[..end as usize])?;
        self.pos = 0;
        self.end = end as usize;
        self.next = next;
        Ok(())
    }

    fn step(&mut self) -> Result<Option<LogItem>> {
        if self.pages.is_empty() && self.pos == 0 && self.end == 0 {
            // Before the first page: the head and tail words themselves (a head of 0 must not
            // end the walk as an empty chain).
            check_ends(self.ino, self.which, self.next, self.tail, self.bounds)?;
        }
        while self.pos >= self.end {
            if self.next == 0 {
                self.complete = true;
                return Ok(None);
            }
            self.enter(self.next)?;
        }
        let page = *self.pages.last().expect("a page was entered");
        let pos = self.pos;
        let (ino, which) = (self.ino, self.which);
        let where_ = || format!("inode {ino} {which} page {page} offset {pos}");
        let (entry, seq, len) = entry_at(&self.buf, pos, self.end, where_)?;
        // Increasing, and far below the end of the number space: appends add one per entry
        // (no log reaches 2^63 entries), so a number there is damage, not history.
        if seq <= self.last_seq || seq >= SEQ_LIMIT {
            return Err(Error::corrupt("log entry sequence", where_()));
        }
        self.last_seq = seq;
        self.pos += len;
        Ok(Some(LogItem {
            page,
            page_index: self.pages.len() as u64 - 1,
            offset: pos as u64,
            len: len as u64,
            seq,
            entry,
            marks: EntryMarks::of(&self.buf[pos..]),
        }))
    }
}

impl<R: ImageRead + ?Sized> Drop for LogCursor<'_, R> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // The larger buffer is kept (a nested cursor's may be the smaller one).
        let _ = PAGE_BUF.try_with(|b| {
            let held = b.take();
            b.set(if held.capacity() >= buf.capacity() {
                held
            } else {
                buf
            });
        });
    }
}

impl<R: ImageRead + ?Sized> Iterator for LogCursor<'_, R> {
    type Item = Result<LogItem>;

    fn next(&mut self) -> Option<Result<LogItem>> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds { lo: 4, hi: 64 };

    fn entry(i: u64) -> Entry {
        Entry::Write {
            pgoff: i,
            block: 20 + i,
            num_pages: 1,
            size: (i + 1) * BLOCK,
            mtime_ns: i,
        }
    }

    /// A log of `pages` (each `per_page` entries, seq numbers from 1), linked in order; the
    /// tail after the last entry. Returns the media and the tail.
    fn chain(pages: &[u64], per_page: u64, seq_of: impl Fn(u64) -> u64) -> (Media, u64) {
        let media = Media::traced(64 * BLOCK);
        let mut n = 0;
        let mut tail = 0;
        for (k, &p) in pages.iter().enumerate() {
            let mut bytes = Vec::new();
            for _ in 0..per_page {
                n += 1;
                entry(n).encode(seq_of(n), &mut bytes);
            }
            media.write(p * BLOCK, &bytes).unwrap();
            if let Some(&next) = pages.get(k + 1) {
                let t = PageTrailer::new(next, bytes.len() as u32);
                media
                    .write(p * BLOCK + TRAILER_OFFSET, bytemuck::bytes_of(&t))
                    .unwrap();
            } else {
                tail = p * BLOCK + bytes.len() as u64;
            }
        }
        (media, tail)
    }

    #[test]
    fn walks_a_chain_in_order_and_reports_its_pages() {
        let (media, tail) = chain(&[10, 7, 30], 3, |n| n);
        let mut c = LogCursor::new(&media, 5, "log", 10, tail, BOUNDS);
        let items: Vec<LogItem> = c.by_ref().map(|i| i.unwrap()).collect();
        assert!(c.complete());
        assert_eq!(c.pages(), &[10, 7, 30]);
        assert_eq!(items.len(), 9);
        assert_eq!(
            items.iter().map(|i| i.seq).collect::<Vec<_>>(),
            (1..=9).collect::<Vec<_>>()
        );
        assert_eq!(items[3].page, 7);
        assert_eq!(items[3].page_index, 1);
        assert_eq!(items[4].offset, items[3].len);
        assert_eq!(items[8].entry, entry(9));
        assert_eq!(c.last_seq(), 9);
    }

    #[test]
    fn an_empty_log_yields_nothing() {
        let media = Media::traced(64 * BLOCK);
        let mut c = LogCursor::new(&media, 5, "log", 0, 0, BOUNDS);
        assert!(c.next().is_none());
        assert!(c.complete());
    }

    #[test]
    fn a_cycle_ends_with_an_error_not_a_hang() {
        // 10 -> 7 -> 10 -> ... and a tail on page 30 that the chain never reaches.
        let (media, _) = chain(&[10, 7], 1, |n| n);
        let t = PageTrailer::new(10, 64);
        media
            .write(7 * BLOCK + TRAILER_OFFSET, bytemuck::bytes_of(&t))
            .unwrap();
        let c = LogCursor::new(&media, 5, "log", 10, 30 * BLOCK + 64, BOUNDS);
        let last = c.last().unwrap();
        assert!(matches!(last, Err(Error::Corrupt { .. })), "{last:?}");
    }

    /// A sequence number at the end of the number space is damage (found by the fuzzer: the
    /// rebuild's `last + 1` overflowed on `u64::MAX`).
    #[test]
    fn sequence_numbers_stay_below_the_limit() {
        for top in [SEQ_LIMIT, u64::MAX] {
            let (media, tail) = chain(&[10], 2, |n| if n == 2 { top } else { n });
            let r: Vec<Result<LogItem>> =
                LogCursor::new(&media, 5, "log", 10, tail, BOUNDS).collect();
            assert!(r[0].is_ok());
            assert!(
                matches!(&r[1], Err(Error::Corrupt { what, .. }) if what.contains("sequence")),
                "{top}"
            );
        }
        let (media, tail) = chain(&[10], 2, |n| if n == 2 { SEQ_LIMIT - 1 } else { n });
        let mut c = LogCursor::new(&media, 5, "log", 10, tail, BOUNDS);
        assert!(c.by_ref().all(|r| r.is_ok()));
        assert_eq!(c.last_seq(), SEQ_LIMIT - 1);
    }

    #[test]
    fn sequence_numbers_must_increase() {
        let (media, tail) = chain(&[10], 3, |n| if n == 3 { 2 } else { n });
        let r: Vec<Result<LogItem>> = LogCursor::new(&media, 5, "log", 10, tail, BOUNDS).collect();
        assert_eq!(r.len(), 3);
        assert!(r[0].is_ok() && r[1].is_ok());
        assert!(matches!(&r[2], Err(Error::Corrupt { what, .. }) if what.contains("sequence")));
    }

    #[test]
    fn bad_ends_and_links_are_errors() {
        let (media, tail) = chain(&[10, 7], 2, |n| n);
        for (head, tail) in [
            (2, tail),                             // head below the allocatable area
            (10, tail + 8),                        // tail not on a line
            (10, 7 * BLOCK),                       // tail at a page's start
            (10, 7 * BLOCK + TRAILER_OFFSET + 64), // tail in the trailer
            (10, 99 * BLOCK + 64),                 // tail past the image
        ] {
            let r = LogCursor::new(&media, 5, "log", head, tail, BOUNDS).next();
            assert!(
                matches!(r, Some(Err(Error::Corrupt { .. }))),
                "{head} {tail}: {r:?}"
            );
        }
        // A link outside the allocatable area.
        let t = PageTrailer::new(63 + 1, 128);
        media
            .write(10 * BLOCK + TRAILER_OFFSET, bytemuck::bytes_of(&t))
            .unwrap();
        let last = LogCursor::new(&media, 5, "log", 10, tail, BOUNDS).last();
        assert!(matches!(last, Some(Err(Error::Corrupt { .. }))), "{last:?}");
    }

    /// Found by the image_walk fuzz target (fuzz/regressions/image_walk/): a head word of 0
    /// with a nonzero tail ended the walk as an empty, complete chain, so an unchecked tail in
    /// a page's trailer area reached the log's state (and an append underflowed).
    #[test]
    fn a_zero_head_with_a_tail_is_an_error() {
        let media = Media::traced(64 * BLOCK);
        for tail in [10 * BLOCK + 64, 10 * BLOCK + TRAILER_OFFSET + 8] {
            let mut c = LogCursor::new(&media, 5, "log", 0, tail, BOUNDS);
            assert!(
                matches!(c.next(), Some(Err(Error::Corrupt { .. }))),
                "tail {tail}"
            );
            assert!(!c.complete());
        }
    }

    #[test]
    fn an_entry_never_reads_past_the_committed_end() {
        let mut bytes = Vec::new();
        entry(1).encode(1, &mut bytes);
        let len = bytes.len();
        assert!(entry_at(&bytes, 0, len, String::new).is_ok());
        assert!(entry_at(&bytes, 0, len - LINE_BYTES, String::new).is_err());
        assert!(entry_at(&bytes, len, len, String::new).is_err());
        assert!(entry_at(&bytes, usize::MAX - 3, len, String::new).is_err());
    }
}
