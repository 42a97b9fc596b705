//! Walking one log chain: the same validation as the engine's `inode::load` (head, tail in a
//! page's entry area, trailers, no cycle, entry checksums, strictly increasing sequence numbers,
//! every entry replayable), but instead of stopping at the first error it finds how much of the
//! log is good and what would fix the rest:
//!
//! - a single flipped bit in an entry or a trailer is found by trying every bit of the record
//!   against its checksum, and restored with one 8-byte store;
//! - a chain broken just before the tail page (a bad trailer, a link that loops or points into
//!   someone else's block) is relinked to the tail page when that page's entries continue the
//!   sequence exactly;
//! - otherwise the log is cut back to the end of the last valid entry (the new tail).
//!
//! When the tail itself is bad, the end of the log is found by following valid trailers and
//! accepting entries only while their sequence numbers continue exactly (seq + 1, as the engine
//! writes them), so stale bytes of a reused block are not taken for entries.

use std::collections::HashSet;

use novafs_engine::cursor::{entry_at, page_link, SEQ_LIMIT};
use novafs_engine::inode::{Bounds, LogState};
use novafs_engine::layout::entry::{Entry, LINE_BYTES, MAX_LINES};
use novafs_engine::layout::inode::InodeSlot;
use novafs_engine::layout::logpage::{PageTrailer, ENTRY_BYTES, TRAILER_OFFSET};
use novafs_engine::layout::BLOCK;
use novafs_engine::{Error, Result};

use super::scan::Ctx;
use super::ProblemKind;

/// How a problem of a log is fixed.
#[derive(Clone, Debug)]
pub(super) enum Fix {
    /// Restore one 8-byte word (a single flipped bit): no change of meaning.
    Word {
        /// Region offset (8-aligned).
        off: u64,
        /// The corrected word.
        value: u64,
    },
    /// Rewrite the trailer of `page` (relink the chain).
    Trailer {
        /// The page.
        page: u64,
        /// Its new trailer.
        trailer: PageTrailer,
    },
    /// The log is cut back to [`WalkOut::cut`].
    Cut,
}

/// One problem of a log.
#[derive(Clone, Debug)]
pub(super) struct Issue {
    pub kind: ProblemKind,
    pub block: Option<u64>,
    pub offset: Option<u64>,
    pub message: String,
    pub fix: Fix,
}

/// The result of a walk.
#[derive(Debug, Default)]
pub(super) struct WalkOut {
    /// The good part of the log, as the engine will see it once the fixes are applied.
    pub log: LogState,
    /// Problems found, in log order.
    pub issues: Vec<Issue>,
    /// The new tail when the log must be cut (0 = empty log).
    pub cut: Option<u64>,
    /// Entries that still decode past a cut (to find children a directory lost).
    pub salvaged: Vec<Entry>,
}

/// The log to walk.
pub(super) struct LogRef<'a> {
    pub ino: u64,
    pub which: &'static str,
    pub head: u64,
    pub tail: u64,
    pub bounds: Bounds,
    /// The owner of a block already claimed by something else, if any.
    pub taken: &'a dyn Fn(u64) -> Option<String>,
    /// Collect decodable entries past a cut.
    pub salvage: bool,
}

/// A replay function: applies one entry to the inode's state.
pub(super) type Apply<'a> = dyn FnMut(&Entry) -> std::result::Result<(), String> + 'a;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Committed entries: every one must be valid.
    Strict,
    /// Looking for the end of the log: stop quietly at the first entry that does not continue
    /// the sequence exactly.
    Continuity,
}

struct Walker<'w, 'a> {
    ctx: &'w Ctx<'a>,
    r: &'w LogRef<'w>,
    apply: &'w mut Apply<'w>,
    out: WalkOut,
    last_seq: u64,
    good_end: u64,
    entries: u64,
    pages: novafs_engine::log::LogPages,
    /// The pages of `pages`, as a set once there are more than [`LINEAR_PAGES`] (a short
    /// chain is searched in `pages`: most logs are one page, and a set allocates).
    visited: HashSet<u64>,
    cut_needed: bool,
    /// An open run of `XattrChunk` entries (value pieces whose `XattrSet` has not come yet):
    /// the walk's position before its first piece (`good_end`, `entries`, `last_seq`). One
    /// append holds the pieces and their set, so pieces left at the end of a log are damage;
    /// the log is cut back to before them.
    pieces_from: Option<(u64, u64, u64)>,
}

/// Walk the log `r`, replaying every good entry with `apply`.
pub(super) fn walk<'w>(
    ctx: &'w Ctx<'_>,
    r: &'w LogRef<'w>,
    apply: &'w mut Apply<'w>,
) -> Result<WalkOut> {
    let mut w = Walker {
        ctx,
        r,
        apply,
        out: WalkOut::default(),
        last_seq: 0,
        good_end: 0,
        entries: 0,
        pages: Default::default(),
        visited: HashSet::new(),
        cut_needed: false,
        pieces_from: None,
    };
    w.run()?;
    Ok(w.finish())
}

fn what(e: Error) -> String {
    match e {
        Error::Corrupt { what, .. } => match what.strip_prefix("log entry: ") {
            Some(w) => format!("bad {w}"),
            None => what,
        },
        other => other.to_string(),
    }
}

/// Chains of at most this many pages are searched linearly for cycles.
const LINEAR_PAGES: usize = 16;

impl Walker<'_, '_> {
    /// Whether the walk has been to `page`.
    fn visited(&self, page: u64) -> bool {
        if self.pages.len() > LINEAR_PAGES {
            self.visited.contains(&page)
        } else {
            self.pages.contains(&page)
        }
    }

    fn issue(
        &mut self,
        kind: ProblemKind,
        block: Option<u64>,
        offset: Option<u64>,
        message: String,
        fix: Fix,
    ) {
        if matches!(fix, Fix::Cut) {
            self.cut_needed = true;
        }
        self.out.issues.push(Issue {
            kind,
            block,
            offset,
            message,
            fix,
        });
    }

    fn run(&mut self) -> Result<()> {
        let r = self.r;
        let which = r.which;
        if r.tail == 0 {
            return Ok(());
        }
        if !r.bounds.contains(r.head, 1) {
            self.issue(
                ProblemKind::LogHead,
                None,
                None,
                format!("{which} head {} lies outside the allocatable area", r.head),
                Fix::Cut,
            );
            return Ok(());
        }
        let tail_ok = r.tail.is_multiple_of(LINE_BYTES as u64)
            && r.bounds.contains(r.tail / BLOCK, 1)
            && (1..=ENTRY_BYTES).contains(&(r.tail % BLOCK));
        if !tail_ok {
            self.issue(
                ProblemKind::LogTail,
                Some(r.tail / BLOCK),
                Some(r.tail),
                format!(
                    "{which} tail {} is not an entry boundary inside a log page's entry area",
                    r.tail
                ),
                Fix::Cut,
            );
        }
        let tail_page = tail_ok.then_some(r.tail / BLOCK);
        let mode = if tail_ok {
            Mode::Strict
        } else {
            Mode::Continuity
        };
        let mut buf = [0u8; BLOCK as usize];
        let mut page = r.head;
        let mut prev: Option<u64> = None;
        loop {
            if let Some(owner) = (r.taken)(page) {
                let msg = match prev {
                    None => format!("{which} head page {page} is also {owner}"),
                    Some(p) => {
                        format!("{which} page {p} links to page {page}, which is also {owner}")
                    }
                };
                let at = prev.unwrap_or(page);
                if let Some(p) = prev {
                    if self.try_relink(p)? {
                        let t = self.relink_trailer(p);
                        self.issue(
                            ProblemKind::BlockShared,
                            Some(page),
                            Some(p * BLOCK + TRAILER_OFFSET),
                            format!("{msg}; relinked to the tail page"),
                            t,
                        );
                        page = r.tail / BLOCK;
                        prev = Some(p);
                        continue;
                    }
                }
                self.issue(
                    ProblemKind::BlockShared,
                    Some(page),
                    Some(at * BLOCK + if prev.is_some() { TRAILER_OFFSET } else { 0 }),
                    msg,
                    Fix::Cut,
                );
                break;
            }
            self.pages.push(page);
            if self.pages.len() > LINEAR_PAGES {
                if self.visited.is_empty() {
                    self.visited.extend(self.pages.iter().copied());
                } else {
                    self.visited.insert(page);
                }
            }
            if Some(page) == tail_page {
                // Only the committed entries of the tail page are read.
                let end = r.tail % BLOCK;
                self.ctx.read(page * BLOCK, &mut buf[..end as usize])?;
                self.parse(&mut buf, page, end, Mode::Strict, true)?;
                break;
            }
            let t_off = TRAILER_OFFSET as usize;
            self.ctx
                .read(page * BLOCK + TRAILER_OFFSET, &mut buf[t_off..])?;
            let trailer = self.trailer(&mut buf, page);
            let used = trailer.as_ref().map_or(ENTRY_BYTES, |t| t.used as u64);
            self.ctx.read(page * BLOCK, &mut buf[..used as usize])?;
            match trailer {
                Ok(t) => {
                    if !self.parse(&mut buf, page, t.used as u64, mode, true)? {
                        break;
                    }
                    let next = t.next;
                    if self.visited(next) {
                        let msg =
                            format!("{which} page {page} links back to page {next} (a cycle)");
                        if self.relink_or_cut(page, ProblemKind::LogCycle, msg)? {
                            prev = Some(page);
                            page = r.tail / BLOCK;
                            continue;
                        }
                        break;
                    }
                    prev = Some(page);
                    page = next;
                }
                Err(reason) => {
                    // Without a known tail, the first page without a valid trailer holds the end
                    // of the log; with one, this is a broken chain.
                    self.parse(&mut buf, page, ENTRY_BYTES, Mode::Continuity, false)?;
                    if !tail_ok {
                        break;
                    }
                    let msg =
                        format!("{which} page {page}: bad trailer ({reason}): the chain is broken");
                    if self.relink_or_cut(page, ProblemKind::LogTrailer, msg)? {
                        prev = Some(page);
                        page = r.tail / BLOCK;
                        continue;
                    }
                    break;
                }
            }
        }
        Ok(())
    }

    /// The trailer of `page` (whose bytes are in `buf`), correcting a single flipped bit.
    fn trailer(&mut self, buf: &mut [u8], page: u64) -> std::result::Result<PageTrailer, String> {
        let r = self.r;
        let off = TRAILER_OFFSET as usize;
        let check = |b: &[u8]| -> std::result::Result<PageTrailer, String> {
            let t: PageTrailer = bytemuck::pod_read_unaligned(&b[off..off + 64]);
            page_link(&t, r.ino, page, r.bounds).map_err(what)?;
            Ok(t)
        };
        let first = match check(buf) {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        // A zeroed trailer is the normal end of a chain whose tail is unknown: no bit search.
        if buf[off..off + 64].iter().all(|&b| b == 0) {
            return Err("missing".into());
        }
        for bit in 0..64 * 8 {
            let i = off + bit / 8;
            buf[i] ^= 1 << (bit % 8);
            if let Ok(t) = check(buf) {
                let word = i & !7;
                let value = u64::from_le_bytes(buf[word..word + 8].try_into().expect("8 bytes"));
                self.issue(
                    ProblemKind::LogTrailer,
                    Some(page),
                    Some(page * BLOCK + word as u64),
                    format!(
                        "{} page {page}: bad trailer ({first}); a single flipped bit (byte {})",
                        r.which,
                        bit / 8
                    ),
                    Fix::Word {
                        off: page * BLOCK + word as u64,
                        value,
                    },
                );
                return Ok(t);
            }
            buf[i] ^= 1 << (bit % 8);
        }
        Err(first)
    }

    /// Decode the entry at `pos` of `buf` (committed end `end`).
    fn decode_at(
        buf: &[u8],
        pos: usize,
        end: usize,
        last_seq: u64,
        mode: Mode,
    ) -> std::result::Result<(Entry, u64, usize), String> {
        let (e, seq, len) = entry_at(buf, pos, end, String::new).map_err(what)?;
        match mode {
            // As the engine's cursor: at or past SEQ_LIMIT is damage (and `last + 1` below
            // never overflows).
            _ if seq >= SEQ_LIMIT => {
                Err(format!("log entry sequence number {seq} at or past 2^63"))
            }
            Mode::Strict if seq <= last_seq => Err(format!(
                "log entry sequence number {seq} does not increase (previous {last_seq})"
            )),
            Mode::Continuity if seq != last_seq + 1 => Err(format!(
                "sequence number {seq} does not continue {last_seq}"
            )),
            _ => Ok((e, seq, len)),
        }
    }

    /// Parse the entries of `page` in `[0, end)`. Returns whether all of them were good.
    /// `fix`: try to correct a single flipped bit of a bad entry (strict mode).
    fn parse(
        &mut self,
        buf: &mut [u8],
        page: u64,
        end: u64,
        mode: Mode,
        fix: bool,
    ) -> Result<bool> {
        let end = end as usize;
        let mut pos = 0usize;
        let which = self.r.which;
        while pos < end {
            let at = page * BLOCK + pos as u64;
            let decoded = match Self::decode_at(buf, pos, end, self.last_seq, mode) {
                Ok(d) => d,
                Err(reason) if mode == Mode::Strict => {
                    if fix {
                        if let Some(bit) = fix_entry(buf, pos, end, self.last_seq) {
                            let i = pos + bit / 8;
                            buf[i] ^= 1 << (bit % 8);
                            let word = i & !7;
                            let value = u64::from_le_bytes(
                                buf[word..word + 8].try_into().expect("8 bytes"),
                            );
                            self.issue(
                                ProblemKind::LogEntry,
                                Some(page),
                                Some(at),
                                format!(
                                    "{which} entry at page {page} offset {pos}: {reason}; a single flipped bit (byte {})",
                                    bit / 8
                                ),
                                Fix::Word {
                                    off: page * BLOCK + word as u64,
                                    value,
                                },
                            );
                            match Self::decode_at(buf, pos, end, self.last_seq, mode) {
                                Ok(d) => d,
                                Err(r) => return Err(Error::corrupt(r, "fsck bit correction")),
                            }
                        } else {
                            self.bad_entry(buf, page, pos, end, reason);
                            return Ok(false);
                        }
                    } else {
                        self.bad_entry(buf, page, pos, end, reason);
                        return Ok(false);
                    }
                }
                Err(_) => return Ok(false),
            };
            let (e, seq, len) = decoded;
            if let Err(msg) = (self.apply)(&e) {
                if mode == Mode::Strict {
                    self.issue(
                        ProblemKind::LogReplay,
                        Some(page),
                        Some(at),
                        format!("{which} entry at page {page} offset {pos} (seq {seq}): {msg}"),
                        Fix::Cut,
                    );
                    self.salvage(buf, page, pos + len, end);
                }
                return Ok(false);
            }
            match &e {
                Entry::XattrChunk { .. } => {
                    if self.pieces_from.is_none() {
                        self.pieces_from = Some((self.good_end, self.entries, self.last_seq));
                    }
                }
                _ => self.pieces_from = None,
            }
            self.last_seq = seq;
            self.entries += 1;
            pos += len;
            self.good_end = page * BLOCK + pos as u64;
        }
        Ok(true)
    }

    fn bad_entry(&mut self, buf: &[u8], page: u64, pos: usize, end: usize, reason: String) {
        self.issue(
            ProblemKind::LogEntry,
            Some(page),
            Some(page * BLOCK + pos as u64),
            format!(
                "{} entry at page {page} offset {pos}: {reason}",
                self.r.which
            ),
            Fix::Cut,
        );
        // Past the bad entry as its header line claims (one line if that is bad too).
        let skip = Entry::peek_lines(&buf[pos..pos + LINE_BYTES], String::new).unwrap_or(1);
        self.salvage(buf, page, pos + skip * LINE_BYTES, end);
    }

    /// Collect the entries that still decode past a cut: the rest of this page, then the pages
    /// reached through valid trailers (up to the tail page).
    fn salvage(&mut self, buf: &[u8], page: u64, from: usize, end: usize) {
        if !self.r.salvage {
            return;
        }
        let collect = |buf: &[u8], mut pos: usize, end: usize, out: &mut Vec<Entry>| {
            while pos + LINE_BYTES <= end {
                // A bad spot is skipped a line at a time (salvage looks for any entry that
                // still decodes).
                pos += match entry_at(buf, pos, end, String::new) {
                    Ok((e, _, len)) => {
                        out.push(e);
                        len
                    }
                    Err(_) => LINE_BYTES,
                };
            }
        };
        let mut out = Vec::new();
        collect(buf, from, end, &mut out);
        let r = self.r;
        let tail_page = r.tail / BLOCK;
        let mut seen: HashSet<u64> = self.pages.iter().copied().collect();
        let mut cur = page;
        let mut page_buf = vec![0u8; BLOCK as usize];
        while cur != tail_page {
            if self.ctx.read(cur * BLOCK, &mut page_buf).is_err() {
                break;
            }
            let off = TRAILER_OFFSET as usize;
            let t: PageTrailer = bytemuck::pod_read_unaligned(&page_buf[off..off + 64]);
            if t.validate(r.ino, cur, r.bounds.hi).is_err()
                || !r.bounds.contains(t.next, 1)
                || !seen.insert(t.next)
                || (r.taken)(t.next).is_some()
            {
                break;
            }
            cur = t.next;
            if self.ctx.read(cur * BLOCK, &mut page_buf).is_err() {
                break;
            }
            let end = if cur == tail_page {
                (r.tail % BLOCK).min(ENTRY_BYTES)
            } else {
                let t: PageTrailer = bytemuck::pod_read_unaligned(&page_buf[off..off + 64]);
                if t.validate(r.ino, cur, r.bounds.hi).is_ok() {
                    t.used as u64
                } else {
                    ENTRY_BYTES
                }
            };
            collect(&page_buf, 0, end as usize, &mut out);
        }
        self.out.salvaged.extend(out);
    }

    /// Whether the chain can be relinked from `page` (whose entries are all good up to
    /// `good_end`) straight to the tail page: the tail page is unvisited and unowned and its
    /// entries up to the tail are all valid and continue the sequence exactly.
    /// Report a broken link at `page`: relinked to the tail page when the entries prove it
    /// (returns true: the walk continues there), else the log is cut here (returns false).
    fn relink_or_cut(&mut self, page: u64, kind: ProblemKind, msg: String) -> Result<bool> {
        let at = Some(page * BLOCK + TRAILER_OFFSET);
        if self.try_relink(page)? {
            let fix = self.relink_trailer(page);
            let msg = format!("{msg}; relinked to the tail page");
            self.issue(kind, Some(page), at, msg, fix);
            return Ok(true);
        }
        self.issue(kind, Some(page), at, msg, Fix::Cut);
        Ok(false)
    }

    fn try_relink(&mut self, page: u64) -> Result<bool> {
        let r = self.r;
        let tail_ok = r.tail.is_multiple_of(LINE_BYTES as u64)
            && r.bounds.contains(r.tail / BLOCK, 1)
            && (1..=ENTRY_BYTES).contains(&(r.tail % BLOCK));
        let t = r.tail / BLOCK;
        if !tail_ok || t == page || self.visited(t) || (r.taken)(t).is_some() {
            return Ok(false);
        }
        if self.good_end / BLOCK != page || self.good_end == 0 {
            return Ok(false);
        }
        let mut buf = vec![0u8; BLOCK as usize];
        self.ctx.read(t * BLOCK, &mut buf)?;
        let end = (r.tail % BLOCK) as usize;
        let mut pos = 0;
        let mut last = self.last_seq;
        let mut first = true;
        while pos < end {
            let mode = if first {
                Mode::Continuity
            } else {
                Mode::Strict
            };
            match Self::decode_at(&buf, pos, end, last, mode) {
                Ok((_, seq, len)) => {
                    last = seq;
                    pos += len;
                    first = false;
                }
                Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }

    fn relink_trailer(&self, page: u64) -> Fix {
        let used = (self.good_end - page * BLOCK) as u32;
        Fix::Trailer {
            page,
            trailer: PageTrailer::new(self.r.tail / BLOCK, used),
        }
    }

    fn finish(mut self) -> WalkOut {
        let r = self.r;
        if let Some((end, entries, seq)) = self.pieces_from.take() {
            self.issue(
                ProblemKind::Xattr,
                (end != 0).then_some(end / BLOCK),
                Some(end),
                format!(
                    "{} ends with {} xattr value piece entr{} without their set entry",
                    r.which,
                    self.entries - entries,
                    if self.entries - entries == 1 {
                        "y"
                    } else {
                        "ies"
                    }
                ),
                Fix::Cut,
            );
            self.good_end = end;
            self.entries = entries;
            self.last_seq = seq;
        }
        let cut = if self.cut_needed {
            Some(self.good_end)
        } else {
            None
        };
        let tail = cut.unwrap_or(r.tail);
        if tail == 0 {
            self.pages.clear();
        } else {
            let tp = tail / BLOCK;
            if let Some(i) = self.pages.iter().position(|&p| p == tp) {
                self.pages.truncate(i + 1);
            }
        }
        self.out.log = LogState {
            head_block: if tail == 0 { 0 } else { r.head },
            tail_off: tail,
            pages: self.pages,
            next_seq: self.last_seq + 1,
            entries: self.entries,
            ..LogState::default()
        };
        self.out.cut = cut;
        self.out
    }
}

/// The bit (index from `pos`) whose flip makes the entry at `pos` valid, if exactly such a
/// single-bit error explains the damage.
fn fix_entry(buf: &[u8], pos: usize, end: usize, last_seq: u64) -> Option<usize> {
    let max = (end - pos).min(MAX_LINES * LINE_BYTES);
    if max < LINE_BYTES {
        return None;
    }
    let mut tmp = buf[pos..pos + max].to_vec();
    if tmp.iter().all(|&b| b == 0) {
        return None;
    }
    for bit in 0..max * 8 {
        tmp[bit / 8] ^= 1 << (bit % 8);
        if let Ok((_, seq, _)) = entry_at(&tmp, 0, max, String::new) {
            if seq > last_seq {
                return Some(bit);
            }
        }
        tmp[bit / 8] ^= 1 << (bit % 8);
    }
    None
}

/// An inode slot with a single flipped bit corrected, and the slot-relative offset of the
/// 8-byte word that changed.
pub(super) fn fix_slot(slot: &InodeSlot, ino: u64) -> Option<(InodeSlot, u64)> {
    let mut bytes = bytemuck::bytes_of(slot).to_vec();
    for bit in 16 * 8..128 * 8 {
        bytes[bit / 8] ^= 1 << (bit % 8);
        let s: InodeSlot = bytemuck::pod_read_unaligned(&bytes);
        if s.validate(ino).is_ok() {
            return Some((s, (bit / 8) as u64 & !7));
        }
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
    None
}
