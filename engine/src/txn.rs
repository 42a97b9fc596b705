//! One transaction type for every change of the image (DESIGN.md §5).
//!
//! A [`Txn`] has three steps:
//!
//! 1. **Prepare.** Allocate everything (data blocks, log pages, inode numbers), write the new
//!    data with non-temporal stores, stage every log append past its committed tail
//!    ([`crate::log::stage`]), and check that every entry applies to the DRAM state it is
//!    meant for ([`InodeState::check_all`]). Nothing is visible after a crash. An error, or
//!    dropping the `Txn`, gives back everything it allocated.
//! 2. **Commit** ([`Txn::commit`]). One part: fence, one 8-byte store of the log's commit
//!    word, flush, fence. Several parts (a rename, a compaction's head and tail): the undo
//!    journal (`journal.rs`) around the stores, unless the parts are independent one-fence
//!    appends ([`Txn::independent`]: their tails and one fence). After it returns, the whole
//!    change survives a crash.
//! 3. **Apply** ([`Committed::apply`]). Infallible, DRAM only: each part's log position and
//!    entries are applied to the locked inode state it was prepared against.
//!
//! The kinds of part ([`Part`]) are the commit words the engine has: a file log's tail
//! (`append`), a write-cache log's tail (`append_cache`), a cache reset (tail 0), a log's
//! head alone (fast GC: `drop_prefix`) and a log's head and tail together (compaction:
//! `replace_log`).
#![forbid(unsafe_code)]

use crate::alloc::{BlockAlloc, Extent, InodeAlloc};
use crate::bugs::{self, Bug};
use crate::error::{Error, Result};
use crate::inode::{Bounds, InodeState, LogState};
use crate::journal::Journal;
use crate::layout::entry::{Entry, RedoRef, LINE_BYTES, REDO_WRITE_MAX};
use crate::layout::inode::InodeSlot;
use crate::layout::BLOCK;
use crate::log::{self, LogWords, StageOptions, Staged};
use crate::media::{Media, MediaMode};

/// What a transaction changes of the image, beside the data it writes.
pub(crate) struct Store<'e> {
    /// The media.
    pub media: &'e Media,
    /// The block allocator (none for an in-place repair, which allocates nothing).
    pub blocks: Option<&'e BlockAlloc>,
    /// The inode-number allocator (none for fsck's repairs, which take no inode numbers).
    pub inos: Option<&'e InodeAlloc>,
    /// The undo journal (none for fsck's repairs, which commit one inode at a time).
    pub journal: Option<&'e Journal>,
    /// The blocks an extent may use.
    pub bounds: Bounds,
}

/// Content of one file page of a copy-on-write write.
pub(crate) enum Page<'a> {
    /// A whole page from the caller.
    Borrowed(&'a [u8]),
    /// A merged page.
    Owned(Vec<u8>),
    /// `data` at byte `at` of the page, the rest from block `base` (zeros if `None`): the
    /// lines `data` touches are merged in a small buffer, every other line is copied block to
    /// block (a sub-page write never stages the whole page in DRAM). All non-temporal.
    Patch {
        base: Option<u64>,
        at: usize,
        data: &'a [u8],
    },
    /// A zero-filled page.
    Zero,
    /// Unmap (a hole).
    Hole,
}

/// The last step of a redo write (DESIGN.md §5.1.2), after its entry's commit: store the
/// bytes in place at `off` (DESIGN.md §5.1.2). The entry is the durable record, so nothing
/// here is fenced. The bytes are a cached store, not flushed: their lines are recorded in
/// `unflushed` (the inode's list) and flushed before GC drops entries, before the inode frees
/// blocks, at a clean unmount, or when the list is full. An append's next write finds the line
/// in the cache and waits for no write-back (100 B appends took 40% longer with a flush or a
/// non-temporal store here), and a random overwrite does not wait for its line to reach the
/// media at the next fence (a non-temporal store did, DESIGN.md §5.1.2);
/// - in msync mode the range is flushed at once (recorded for the next fence's msync).
pub(crate) fn redo_in_place(
    media: &Media,
    off: u64,
    data: &[u8],
    unflushed: &mut Vec<(u64, u64)>,
) -> Result<()> {
    if media.mode() == MediaMode::Msync {
        // A flush only records the range for the next fence's msync; deferring it would
        // leave pages dirty in the page cache until GC.
        return media.write_flush(off, data);
    }
    media.write(off, data)?;
    let (lo, hi) = (off & !63, (off + data.len() as u64).next_multiple_of(64));
    match unflushed.last_mut() {
        Some((a, b)) if lo <= *b && *a <= hi => {
            *a = (*a).min(lo);
            *b = (*b).max(hi);
        }
        _ => unflushed.push((lo, hi)),
    }
    if unflushed.len() >= UNFLUSHED_MAX {
        flush_unflushed(media, unflushed)?;
    }
    Ok(())
}

/// How many unflushed ranges of redo writes an inode keeps before it flushes them all (no
/// fence: the next commit's fence makes them durable; until then their entries are).
pub(crate) const UNFLUSHED_MAX: usize = 64;

/// Flush the lines of an inode's redo writes stored in place and not flushed yet
/// ([`InodeState::unflushed`]), without a fence: what drops log entries (GC) or declares the
/// image clean (unmount) fences after this and before the entries stop being the record.
pub(crate) fn flush_unflushed(media: &Media, unflushed: &mut Vec<(u64, u64)>) -> Result<()> {
    for &(a, b) in unflushed.iter() {
        media.flush(a, b - a)?;
    }
    unflushed.clear();
    Ok(())
}

/// The one-entry commit of a redo write (DESIGN.md §5.1.3): when the session makes one-fence
/// commits and the entry fits the zeroed tail page of inode `st`'s log (slot at `slot_off`),
/// it is encoded straight into that page and committed by the one-fence tail store, and `st`
/// is advanced and given the write's attributes: the same media stores as a [`Txn`] with
/// this one append, without its parts, entry vector and allocations. Returns `Ok(false)`
/// (nothing done) when the append does not fit; the caller then commits through a `Txn`.
/// The caller holds the inode's lock, checked the write against `st` (the page maps to
/// `r.block`), and stores the bytes in place next ([`redo_in_place`]).
pub(crate) fn commit_redo_one(
    media: &Media,
    mark: &'static str,
    slot_off: u64,
    st: &mut InodeState,
    r: &RedoRef<'_>,
) -> Result<bool> {
    const MAX: usize = (1 + REDO_WRITE_MAX / LINE_BYTES) * LINE_BYTES;
    let len = r.len_bytes();
    if len > MAX || !log::fits_one(&st.log, len, media.one_fence()) {
        return Ok(false);
    }
    debug_assert!(st.check_redo(r, 0).is_ok());
    // A buffer no larger than needed: zeroing the largest (9 lines) cost more than encoding
    // a 64 B write's two lines.
    let at = if len <= 3 * LINE_BYTES {
        append_redo::<{ 3 * LINE_BYTES }>(media, mark, slot_off, st, r)?
    } else {
        append_redo::<MAX>(media, mark, slot_off, st, r)?
    };
    st.apply_redo(r, at);
    Ok(true)
}

/// [`commit_redo_one`]'s encoding into a stack buffer of `N` bytes (at least the entry's
/// length) and its commit; returns the entry's logical log page.
fn append_redo<const N: usize>(
    media: &Media,
    mark: &'static str,
    slot_off: u64,
    st: &mut InodeState,
    r: &RedoRef<'_>,
) -> Result<u64> {
    let mut buf = [0u8; N];
    let bytes = &mut buf[..r.len_bytes()];
    r.encode_into(st.log.next_seq, bytes);
    media.mark(mark);
    log::append_one(media, LogWords::file(slot_off), &mut st.log, bytes)
}

/// Every block of `extents`, in order.
fn blocks_of(extents: &[Extent]) -> impl Iterator<Item = u64> + '_ {
    extents.iter().flat_map(|e| e.start..e.start + e.len)
}

/// One commit word of a transaction and what its commit makes true.
enum Part {
    /// Entries appended to an inode's log (its tail word).
    Append {
        ino: u64,
        staged: Staged,
        entries: Vec<Entry>,
    },
    /// Entries appended to an inode's write-cache log (its cache tail word).
    AppendCache {
        ino: u64,
        staged: Staged,
        entries: Vec<Entry>,
    },
    /// The log of a new inode, staged before anything names it: its head and tail go into the
    /// new slot (written at prepare), and the commit of the part that names the inode (the
    /// parent's `DirAdd`) makes it reachable. No commit word of its own.
    NewLog {
        ino: u64,
        staged: Staged,
        entries: Vec<Entry>,
    },
    /// The write cache emptied: its tail word set to 0.
    ResetCache { ino: u64, tail_word: u64 },
    /// Fast GC: the log's head moved past `pages` dead pages (its head word).
    DropPrefix {
        ino: u64,
        head_word: u64,
        new_head: u64,
        pages: usize,
    },
    /// A part of a committed transaction already applied (or one with nothing to apply).
    Applied,
    /// In place: one 8-byte word ([`Txn::store_word`]).
    Word { addr: u64, value: u64 },
    /// In place: a whole record rewritten ([`Txn::rewrite`]).
    Record { off: u64, bytes: Vec<u8> },
    /// Compaction: a fresh chain replaces the log (head and tail words together). `fresh` is
    /// the state the chain rebuilds, checked against the live one at prepare.
    ReplaceLog {
        ino: u64,
        staged: Staged,
        old: (u64, u64),
        fresh: Box<InodeState>,
    },
}

impl Part {
    fn ino(&self) -> u64 {
        match self {
            Part::Append { ino, .. }
            | Part::NewLog { ino, .. }
            | Part::AppendCache { ino, .. }
            | Part::ResetCache { ino, .. }
            | Part::DropPrefix { ino, .. }
            | Part::ReplaceLog { ino, .. } => *ino,
            Part::Applied | Part::Word { .. } | Part::Record { .. } => u64::MAX,
        }
    }

    /// The undo records of this part: (word address, value before).
    fn undo(&self, out: &mut Vec<(u64, u64)>) {
        match self {
            Part::Append { staged, .. } | Part::AppendCache { staged, .. } => {
                out.push((staged.tail_addr(), staged.old_tail))
            }
            Part::NewLog { .. } | Part::Applied => {}
            Part::ResetCache { .. }
            | Part::DropPrefix { .. }
            | Part::Word { .. }
            | Part::Record { .. } => {
                unreachable!("single-part or in-place transactions")
            }
            Part::ReplaceLog { staged, old, .. } => {
                out.push((staged.words.head, old.0));
                out.push((staged.words.tail, old.1));
            }
        }
    }

    /// Whether the part has a commit word (a new inode's log has none).
    fn has_word(&self) -> bool {
        !matches!(self, Part::NewLog { .. } | Part::Applied)
    }

    /// Whether the part is an in-place repair (no log, nothing to apply).
    fn in_place(&self) -> bool {
        matches!(self, Part::Word { .. } | Part::Record { .. })
    }

    /// Store (and flush) this part's commit words; the caller fences.
    fn store(&self, media: &Media) -> Result<()> {
        match self {
            Part::NewLog { .. } | Part::Applied => Ok(()),
            Part::Word { addr, value } => {
                media.store_u64(*addr, *value)?;
                media.flush(*addr, 8)
            }
            Part::Record { off, bytes } => media.write_flush(*off, bytes),
            Part::Append { staged, .. } | Part::AppendCache { staged, .. } => {
                staged.store_tail(media)
            }
            Part::ResetCache { tail_word, .. } => {
                media.store_u64(*tail_word, 0)?;
                media.flush(*tail_word, 8)
            }
            Part::DropPrefix {
                head_word,
                new_head,
                ..
            } => {
                media.store_u64(*head_word, *new_head)?;
                media.flush(*head_word, 8)
            }
            Part::ReplaceLog { staged, .. } => {
                media.store_u64(staged.words.head, staged.new_head.unwrap_or(0))?;
                media.flush(staged.words.head, 8)?;
                staged.store_tail(media)
            }
        }
    }

    /// Give back what this part allocated (it will not be committed).
    fn abort(self, blocks: &BlockAlloc, media: &Media) {
        match self {
            Part::Append { staged, .. }
            | Part::NewLog { staged, .. }
            | Part::AppendCache { staged, .. }
            | Part::ReplaceLog { staged, .. } => staged.abort(blocks, media),
            Part::ResetCache { .. }
            | Part::DropPrefix { .. }
            | Part::Applied
            | Part::Word { .. }
            | Part::Record { .. } => {}
        }
    }
}

/// A change of the image being prepared. Dropped before [`Txn::commit`], it frees every block
/// and inode number it allocated and leaves the image as it was.
#[must_use = "a transaction does nothing until committed; dropping it undoes its preparation"]
pub struct Txn<'e> {
    store: Store<'e>,
    mark: &'static str,
    /// The change frees space: it may use the allocator's reserve.
    frees_space: bool,
    /// Data blocks written for the change.
    data: crate::alloc::Extents,
    /// Inode numbers taken for the change.
    inos: smallvec::SmallVec<[u64; 2]>,
    /// One-fence sessions: (first block, crc32) of every data run `write_pages` wrote, for
    /// its `Write` entry (DESIGN.md §5.1).
    data_crcs: Vec<(u64, u32)>,
    /// One-fence sessions: (inode, slot checksum) of the new inode's slot written with an
    /// empty log ([`Txn::init_slot`]), for the `DirAdd` that names it (DESIGN.md §5.3).
    new_slot: Option<(u64, u32)>,
    /// Something written at prepare that no checksum covers (a new inode's slot, copied
    /// blocks) must be durable before the commit word: the commit keeps its first fence.
    ordered: bool,
    /// The parts are independent appends ([`Txn::independent`]): no journal.
    independent: bool,
    parts: Parts,
}

/// The parts of a transaction: most changes have one, kept inline (no allocation).
#[derive(Default)]
enum Parts {
    #[default]
    Empty,
    One(Part),
    Many(Vec<Part>),
}

impl Parts {
    fn push(&mut self, p: Part) {
        match self {
            Parts::Empty => *self = Parts::One(p),
            Parts::One(_) => {
                if let Parts::One(a) = std::mem::take(self) {
                    *self = Parts::Many(vec![a, p]);
                }
            }
            Parts::Many(v) => v.push(p),
        }
    }

    fn as_slice(&self) -> &[Part] {
        match self {
            Parts::Empty => &[],
            Parts::One(p) => std::slice::from_ref(p),
            Parts::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Part] {
        match self {
            Parts::Empty => &mut [],
            Parts::One(p) => std::slice::from_mut(p),
            Parts::Many(v) => v,
        }
    }

    /// Every part, by value (the list left empty).
    fn drain(&mut self) -> impl Iterator<Item = Part> {
        let (one, many) = match std::mem::take(self) {
            Parts::Empty => (None, Vec::new()),
            Parts::One(p) => (Some(p), Vec::new()),
            Parts::Many(v) => (None, v),
        };
        one.into_iter().chain(many)
    }
}

impl<'e> Txn<'e> {
    /// A repair of fsck's: single-inode appends on `media`, allocating from `blocks` (the
    /// blocks fsck found free), entries checked against `bounds`.
    pub fn repair(media: &'e Media, blocks: &'e BlockAlloc, bounds: Bounds) -> Txn<'e> {
        Txn::new(
            Store {
                media,
                blocks: Some(blocks),
                inos: None,
                journal: None,
                bounds,
            },
            "fsck-repair",
        )
        .frees_space(true)
    }

    /// A change made in place, with no allocation and no log: fsck's repairs of damaged
    /// records ([`Txn::store_word`], [`Txn::rewrite`]), recovery's journal undo, the
    /// superblock rewrites of a growth. Labelled `mark` in the crash harness's trace.
    pub fn in_place(media: &'e Media, mark: &'static str) -> Txn<'e> {
        Txn::new(
            Store {
                media,
                blocks: None,
                inos: None,
                journal: None,
                bounds: Bounds { lo: 0, hi: 0 },
            },
            mark,
        )
    }

    /// The allocator, or an error for an in-place transaction.
    fn blocks(&self) -> Result<&'e BlockAlloc> {
        self.store.blocks.ok_or_else(|| {
            Error::InvalidArgument("an in-place transaction allocates nothing".into())
        })
    }

    /// Give back what a staged append allocated.
    fn abort_staged(&self, staged: Staged) {
        if let Some(blocks) = self.store.blocks {
            staged.abort(blocks, self.store.media);
        }
    }

    /// In place: store `value` at the 8-byte word `addr` at the commit (a bit of a damaged
    /// record restored, a log's tail cut back, an undo record applied, a journal slot
    /// cleared). Several words in one transaction are stored and flushed in order and share
    /// the commit's fence; each is a repair that stands alone (no journal).
    pub fn store_word(&mut self, addr: u64, value: u64) {
        self.parts.push(Part::Word { addr, value });
    }

    /// In place: rewrite the whole checksummed record at `off` with `bytes` at the commit (a
    /// superblock copy, an inode slot, a log page's trailer). Not atomic beyond 8 bytes: a
    /// torn rewrite leaves a record whose checksum fails, which the next check finds as it
    /// found the damage this repairs.
    pub fn rewrite(&mut self, off: u64, bytes: &[u8]) {
        self.parts.push(Part::Record {
            off,
            bytes: bytes.to_vec(),
        });
    }

    /// Write the slot of new inode `ino` (at prepare: written and flushed). The commit's
    /// first fence makes it durable before the entry that names the inode; in a one-fence
    /// session a slot with an empty log needs no such fence when the `DirAdd` naming it is
    /// a one-fence append of this transaction: that entry carries the slot's checksum and
    /// recovery cuts the commit if the slot does not hold it (DESIGN.md §5.3).
    pub fn init_slot(&mut self, ino: u64, slot_off: u64, slot: &InodeSlot) -> Result<()> {
        let media = self.store.media;
        if media.one_fence() && slot.log_head == 0 && slot.log_tail == 0 && self.new_slot.is_none()
        {
            self.new_slot = Some((ino, slot.csum));
        } else {
            self.ordered = true;
        }
        if bugs::active(Bug::NoInodeSlotFlush) {
            media.write(slot_off, bytemuck::bytes_of(slot))
        } else {
            media.write_flush(slot_off, bytemuck::bytes_of(slot))
        }
    }

    /// New data blocks, one per entry of `srcs`, each a copy of that block (zeros for `None`):
    /// region to region, non-temporal, durable at the commit's fence, owned by the transaction
    /// until it commits (the write cache's attach). Returns the new blocks, in order.
    pub fn copy_blocks(&mut self, srcs: &[Option<u64>]) -> Result<Vec<u64>> {
        self.ordered = true;
        let blocks = self.alloc_blocks(srcs.len() as u64)?;
        let media = self.store.media;
        for (src, &b) in srcs.iter().zip(&blocks) {
            match src {
                Some(old) => media.copy_nt(old * BLOCK, b * BLOCK, BLOCK)?,
                None => media.zero_nt(b * BLOCK, BLOCK)?,
            }
        }
        Ok(blocks)
    }

    /// A private copy of block `src` in a new data block (non-temporal, durable at the
    /// commit's fence; owned by the transaction until it commits), with the bytes from
    /// `zero_from` on zeroed. Returns the new block.
    pub fn copy_block(&mut self, src: u64, zero_from: Option<usize>) -> Result<u64> {
        self.ordered = true;
        let nb = self.alloc_blocks(1)?[0];
        let media = self.store.media;
        match zero_from.filter(|&z| z < BLOCK as usize) {
            None => media.copy_nt(src * BLOCK, nb * BLOCK, BLOCK)?,
            Some(z) => {
                // Whole lines copied, the line holding `z` merged, whole lines zeroed.
                const LINE: u64 = 64;
                let z = z as u64;
                let lo = z / LINE * LINE;
                if lo > 0 {
                    media.copy_nt(src * BLOCK, nb * BLOCK, lo)?;
                }
                let mut line = [0u8; LINE as usize];
                media.read(src * BLOCK + lo, &mut line[..(z - lo) as usize])?;
                media.write_nt(nb * BLOCK + lo, &line)?;
                if lo + LINE < BLOCK {
                    media.zero_nt(nb * BLOCK + lo + LINE, BLOCK - lo - LINE)?;
                }
            }
        }
        Ok(nb)
    }

    /// A transaction labelled `mark` in the crash harness's trace.
    pub(crate) fn new(store: Store<'e>, mark: &'static str) -> Txn<'e> {
        Txn {
            store,
            mark,
            frees_space: false,
            data: crate::alloc::Extents::new(),
            inos: smallvec::SmallVec::new(),
            data_crcs: Vec::new(),
            new_slot: None,
            ordered: false,
            independent: false,
            parts: Parts::Empty,
        }
    }

    /// The change frees space (a removal, a shrink, a migration, a compaction): its
    /// allocations may dip into the reserve, so that a full image can still be emptied.
    pub fn frees_space(mut self, yes: bool) -> Txn<'e> {
        self.frees_space = yes;
        self
    }

    /// The appends of this transaction are independent (DESIGN.md §5.2.1): the caller
    /// vouches that a crash may keep any subset of them, as long as none allocates (each
    /// log's append stays whole or absent, as a single-inode commit). When every part is a
    /// one-fence append (inside its log's zeroed tail page: no new page), they commit without
    /// the journal: every tail stored and flushed, one fence. Otherwise the journal makes
    /// them one atomic change as for any transaction of several parts (an append that links
    /// a page would leave a crash with blocks in use that neither the old nor the new state
    /// has).
    pub(crate) fn independent(mut self) -> Txn<'e> {
        self.independent = true;
        self
    }

    /// Take an inode number for a new inode (given back if the transaction is dropped).
    pub(crate) fn alloc_ino(&mut self, ino: u64) {
        self.inos.push(ino);
    }

    /// Allocate `n` data blocks, owned by the transaction until it commits.
    pub fn alloc_blocks(&mut self, n: u64) -> Result<Vec<u64>> {
        let first = self.alloc_extents(n)?;
        Ok(blocks_of(&self.data[first..]).collect())
    }

    /// Allocate `n` data blocks as extents appended to `self.data`; returns the index of the
    /// first new extent.
    fn alloc_extents(&mut self, n: u64) -> Result<usize> {
        let blocks = self.blocks()?;
        let first = self.data.len();
        blocks.alloc_into(n, self.frees_space, &mut self.data)?;
        Ok(first)
    }

    /// Write `pages` copy-on-write into new blocks (non-temporal stores, durable at the
    /// commit's fence) and append their `Write` entries (one per run of contiguous pages and
    /// blocks, all carrying `size`) to `entries`. `map` is the file's current map. Returns the
    /// old blocks reused in place (only under the injected bug `FreeBeforeCommit`).
    pub(crate) fn write_pages(
        &mut self,
        map: &crate::inode::FileMap,
        pages: &[(u64, Page<'_>)],
        size: u64,
        now: u64,
        entries: &mut Vec<Entry>,
    ) -> Result<Vec<u64>> {
        let need = pages
            .iter()
            .filter(|(_, p)| !matches!(p, Page::Hole))
            .count() as u64;
        // Injected bug: overwrite in place, i.e. the old blocks are "freed" and reused before
        // the commit.
        let mut in_place: Vec<u64> = Vec::new();
        if bugs::active(Bug::FreeBeforeCommit) {
            for (pg, p) in pages {
                if let (Some(&b), false) = (map.get(pg), matches!(p, Page::Hole)) {
                    in_place.push(b);
                }
            }
        }
        let first = self.alloc_extents(need - in_place.len() as u64)?;
        let mut reuse = in_place.clone().into_iter();
        let mut blocks = blocks_of(&self.data[first..]);
        let mut run: Option<(u64, u64, u32)> = None; // (pgoff, block, n)
        let media = self.store.media;
        // Each data run's checksum, for a one-fence commit's `Write` entries (DESIGN.md
        // §5.1.1): computed from the bytes each page is written from, as they are written (in
        // cache; a read-back of what non-temporal stores just wrote misses for every line).
        let crcs = media.data_crcs();
        let mut run_crc = crate::layout::crc_hasher();
        let mut outside: Vec<u8> = Vec::new(); // a patch's lines from its old block
                                               // Run `r` (pgoff, block, pages) ends: its `Write` entry, and its checksum (from `crc`,
                                               // reset for the next run) where the session checksums data. A hole has none.
        let data_crcs = &mut self.data_crcs;
        let mut end_run =
            |entries: &mut Vec<Entry>, r: (u64, u64, u32), crc: &mut crc32fast::Hasher| {
                entries.push(Entry::Write {
                    pgoff: r.0,
                    block: r.1,
                    num_pages: r.2,
                    size,
                    mtime_ns: now,
                });
                if crcs {
                    let done = std::mem::take(crc).finalize();
                    if r.1 != 0 && !data_crcs.iter().any(|&(b, _)| b == r.1) {
                        data_crcs.push((r.1, done));
                    }
                }
            };
        for (pg, content) in pages {
            let b = match content {
                Page::Hole => 0,
                _ if !in_place.is_empty() && map.contains_key(pg) => {
                    reuse.next().ok_or(Error::NoSpace)?
                }
                _ => blocks.next().ok_or(Error::NoSpace)?,
            };
            run = match run {
                Some((p0, b0, n))
                    if p0 + n as u64 == *pg
                        && ((b0 == 0 && b == 0) || (b0 != 0 && b0 + n as u64 == b))
                        && n < u32::MAX =>
                {
                    Some((p0, b0, n + 1))
                }
                Some(r) => {
                    end_run(entries, r, &mut run_crc);
                    Some((*pg, b, 1))
                }
                None => Some((*pg, b, 1)),
            };
            match content {
                Page::Borrowed(d) => {
                    media.write_nt(b * BLOCK, d)?;
                    if crcs {
                        run_crc.update(d);
                    }
                }
                Page::Owned(d) => {
                    media.write_nt(b * BLOCK, d)?;
                    if crcs {
                        run_crc.update(d);
                    }
                }
                Page::Patch { base, at, data } => {
                    const LINE: usize = 64;
                    let dst = b * BLOCK;
                    let lo = at / LINE * LINE;
                    let hi = (at + data.len()).div_ceil(LINE) * LINE;
                    if hi > BLOCK as usize || data.is_empty() {
                        return Err(Error::InvalidArgument("patch outside its page".into()));
                    }
                    // The lines outside the patch: from the old block, or zeros.
                    for (from, to) in [(0, lo), (hi, BLOCK as usize)] {
                        if from < to {
                            let (off, len) = (from as u64, (to - from) as u64);
                            match base {
                                // In place (only the injected FreeBeforeCommit bug): there.
                                Some(src) if *src == b => {}
                                Some(src) => media.copy_nt(src * BLOCK + off, dst + off, len)?,
                                None => media.zero_nt(dst + off, len)?,
                            }
                        }
                    }
                    let mut mid = vec![0u8; hi - lo];
                    if let Some(src) = base {
                        media.read(src * BLOCK + lo as u64, &mut mid)?;
                    }
                    mid[at - lo..at - lo + data.len()].copy_from_slice(data);
                    media.write_nt(dst + lo as u64, &mid)?;
                    if crcs {
                        // The page as written: old (or zero) lines, the merged ones, the rest.
                        outside.resize(BLOCK as usize, 0);
                        match base {
                            Some(src) => media.read(src * BLOCK, &mut outside)?,
                            None => outside.fill(0),
                        }
                        run_crc.update(&outside[..lo]);
                        run_crc.update(&mid);
                        run_crc.update(&outside[hi..]);
                    }
                }
                Page::Zero => {
                    media.zero_nt(b * BLOCK, BLOCK)?;
                    if crcs {
                        run_crc.update(&[0u8; BLOCK as usize]);
                    }
                }
                Page::Hole => {}
            }
        }
        if let Some(r) = run {
            end_run(entries, r, &mut run_crc);
        }
        Ok(in_place)
    }

    /// Stage `entries` on the log of inode `ino` (slot at `slot_off`), whose locked state is
    /// `st`, after checking they apply to it. An empty list adds nothing.
    pub fn append(
        &mut self,
        ino: u64,
        slot_off: u64,
        st: &InodeState,
        entries: Vec<Entry>,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        st.check_all(&entries, ino, self.store.bounds)?;
        let staged = self.stage_with(LogWords::file(slot_off), &st.log, &entries, false, true)?;
        self.parts.push(Part::Append {
            ino,
            staged,
            entries,
        });
        Ok(())
    }

    /// Stage `entries` as the whole log of new inode `ino` (state `st`, not reachable yet);
    /// returns its (head, tail) for the slot the caller writes before the commit.
    pub fn new_log(
        &mut self,
        ino: u64,
        slot_off: u64,
        st: &InodeState,
        entries: Vec<Entry>,
    ) -> Result<(u64, u64)> {
        st.check_all(&entries, ino, self.store.bounds)?;
        let staged = self.stage_detached(LogWords::file(slot_off), &st.log, &entries)?;
        let words = (staged.new_head.unwrap_or(0), staged.new_tail);
        self.parts.push(Part::NewLog {
            ino,
            staged,
            entries,
        });
        Ok(words)
    }

    /// Stage `entries` (`CacheAttach`) on the write-cache log of inode `ino`.
    pub fn append_cache(
        &mut self,
        ino: u64,
        slot_off: u64,
        st: &InodeState,
        entries: Vec<Entry>,
    ) -> Result<()> {
        st.check_cache(&entries, self.store.bounds)?;
        let staged = self.stage(LogWords::cache(slot_off), &st.cache().log, &entries)?;
        self.parts.push(Part::AppendCache {
            ino,
            staged,
            entries,
        });
        Ok(())
    }

    /// Empty the write cache of inode `ino` (its pages already belong to the file, or are
    /// discarded): the cache tail word becomes 0; apply frees the cache log's pages.
    pub fn reset_cache(&mut self, ino: u64, slot_off: u64) {
        self.parts.push(Part::ResetCache {
            ino,
            tail_word: LogWords::cache(slot_off).tail,
        });
    }

    /// Fast GC: move the head of inode `ino`'s log past its first `pages` pages (which hold
    /// no live key; [`LogState::dead_prefix`]).
    pub fn drop_prefix(&mut self, ino: u64, slot_off: u64, log: &LogState, pages: usize) {
        if pages == 0 || pages >= log.pages.len() {
            return;
        }
        self.parts.push(Part::DropPrefix {
            ino,
            head_word: LogWords::file(slot_off).head,
            new_head: log.pages[pages],
            pages,
        });
    }

    /// Compaction: stage `entries` as a fresh chain for inode `ino`'s log, replay it into a
    /// fresh state from the inode's slot, and refuse (`Ok(false)`, nothing staged) unless that
    /// state is `st`'s: a compaction that would change the file is never committed.
    pub fn replace_log(
        &mut self,
        ino: u64,
        slot_off: u64,
        st: &InodeState,
        entries: &[Entry],
    ) -> Result<bool> {
        let fresh_log = LogState {
            next_seq: st.log.next_seq,
            ..LogState::default()
        };
        let staged = self.stage_detached(LogWords::file(slot_off), &fresh_log, entries)?;
        let slot: crate::layout::inode::InodeSlot = match self.store.media.read_pod(slot_off) {
            Ok(s) => s,
            Err(e) => {
                self.abort_staged(staged);
                return Err(e);
            }
        };
        let mut fresh = InodeState::new(ino, &slot, st.attr.kind);
        fresh.log = staged.detached_log();
        let mut scratch = Vec::new();
        let replay_ok = entries.iter().enumerate().all(|(i, e)| {
            fresh
                .apply(
                    e,
                    ino,
                    self.store.bounds,
                    &mut scratch,
                    staged.entry_page(i),
                )
                .is_ok()
        });
        let same = replay_ok
            && fresh.attr == st.attr
            && fresh.map == st.map
            && fresh.parent == st.parent
            && fresh.xattrs() == st.xattrs()
            && fresh.dir.len() == st.dir.len()
            && fresh.dir.iter().all(|(n, e)| {
                st.dir
                    .get(n)
                    .is_some_and(|o| (o.ino, o.kind) == (e.ino, e.kind))
            });
        if !same {
            debug_assert!(
                false,
                "compaction of inode {ino} does not rebuild its state"
            );
            self.abort_staged(staged);
            return Ok(false);
        }
        self.parts.push(Part::ReplaceLog {
            ino,
            staged,
            old: (st.log.head_block, st.log.tail_off),
            fresh: Box::new(fresh),
        });
        Ok(true)
    }

    /// Stage on one log (a new chain's head word is stored now: the log's tail commit makes
    /// it read).
    fn stage(&mut self, words: LogWords, log: &LogState, entries: &[Entry]) -> Result<Staged> {
        self.stage_with(words, log, entries, false, false)
    }

    /// Stage a chain whose head word the commit stores (a new inode's log, in its slot; a
    /// compaction's chain, switched with the tail).
    fn stage_detached(
        &mut self,
        words: LogWords,
        log: &LogState,
        entries: &[Entry],
    ) -> Result<Staged> {
        self.stage_with(words, log, entries, true, false)
    }

    /// `own_log`: an inode's own log, whose appends may commit with one fence.
    fn stage_with(
        &mut self,
        words: LogWords,
        log: &LogState,
        entries: &[Entry],
        detached: bool,
        own_log: bool,
    ) -> Result<Staged> {
        let opts = StageOptions {
            use_reserve: self.frees_space,
            detached,
            one_fence: own_log && self.store.media.one_fence(),
        };
        let checks = log::Checks {
            data: &self.data_crcs,
            slots: self.new_slot.as_slice(),
        };
        log::stage(
            self.store.media,
            self.blocks()?,
            words,
            log,
            entries,
            opts,
            checks,
        )
    }

    /// The commit point: after it returns `Ok`, the whole change survives a crash, and the
    /// returned [`Committed`] must be applied to the DRAM state. On `Err` before any commit
    /// word was stored, everything prepared is given back; after (a media error in the middle
    /// of a journaled commit), what was allocated is left to recovery.
    pub fn commit(mut self) -> Result<Committed> {
        let media = self.store.media;
        let parts = std::mem::take(&mut self.parts);
        if !parts.as_slice().is_empty() {
            media.mark(self.mark);
        }
        // The parts with a commit word: no allocation for up to four (every change but a
        // large repair), in an array of references (no drop glue holding `parts` borrowed).
        let single: &Part;
        let mut inline: [&Part; 4];
        let mut spill: Vec<&Part> = Vec::new();
        let words: &[&Part] = match parts.as_slice() {
            [one] if one.has_word() => {
                single = one;
                std::slice::from_ref(&single)
            }
            all => {
                let n = all.iter().filter(|p| p.has_word()).count();
                match all.first() {
                    Some(first) if n <= 4 => {
                        inline = [first; 4];
                        for (slot, p) in inline.iter_mut().zip(all.iter().filter(|p| p.has_word()))
                        {
                            *slot = p;
                        }
                        &inline[..n]
                    }
                    _ => {
                        spill.extend(all.iter().filter(|p| p.has_word()));
                        &spill
                    }
                }
            }
        };
        let in_place = words.iter().filter(|p| p.in_place()).count();
        // A new slot no one-fence entry checks must be durable before any commit word.
        let ordered = self.ordered
            || (self.new_slot.is_some()
                && !words
                    .iter()
                    .any(|p| matches!(p, Part::Append { staged, .. } if staged.slots_checked > 0)));
        if in_place > 0 && in_place < words.len() {
            self.parts = parts;
            return Err(Error::InvalidArgument(
                "in-place repairs and log commits in one transaction".into(),
            ));
        }
        let res = match words {
            [] => Ok(()),
            // In place: whatever was prepared is ordered before the stores; one fence after.
            repairs if in_place > 0 => (|| {
                media.fence();
                for p in repairs.iter() {
                    p.store(media)?;
                }
                media.fence();
                Ok(())
            })(),
            [one @ (Part::Append { staged, .. } | Part::AppendCache { staged, .. })] => {
                if matches!(one, Part::AppendCache { .. })
                    && bugs::active(Bug::CacheAttachNotPersisted)
                {
                    staged.store_tail(media) // no fence: write access granted too early
                } else {
                    let one_fence =
                        matches!(one, Part::Append { .. }) && staged.one_fence && !ordered;
                    staged.commit_tail(media, one_fence)
                }
            }
            // The change a reset follows (a migration) ended with its fence.
            [one @ Part::ResetCache { .. }] => one.store(media).map(|()| media.fence()),
            // Dropping log pages may drop redo writes (§5.1.2) whose in-place stores are
            // flushed but not yet fenced: fence them before the head moves past their entries.
            [one @ Part::DropPrefix { .. }] => {
                media.fence();
                one.store(media).map(|()| media.fence())
            }
            [Part::ReplaceLog { staged, .. }] if bugs::active(Bug::CompactWithoutJournal) => {
                // Injected bug: head and tail switched by two separate stores.
                media.fence();
                (|| {
                    media.store_u64(staged.words.head, staged.new_head.unwrap_or(0))?;
                    media.flush(staged.words.head, 8)?;
                    media.fence();
                    staged.store_tail(media)?;
                    media.fence();
                    Ok(())
                })()
            }
            // Independent one-fence appends (DESIGN.md §5.2.1): every tail stored and flushed,
            // one fence; any subset may survive a crash, a torn append is cut by recovery.
            many if self.independent
                && !ordered
                && many
                    .iter()
                    .all(|p| matches!(p, Part::Append { staged, .. } if staged.one_fence)) =>
            {
                (|| {
                    for p in many.iter() {
                        if let Part::Append { staged, .. } = p {
                            staged.store_tail_unfenced(media)?;
                        }
                    }
                    media.fence();
                    Ok(())
                })()
            }
            many if bugs::active(Bug::SkipJournal)
                && many.iter().all(|p| !matches!(p, Part::ReplaceLog { .. })) =>
            {
                // Injected bug: several tails stored one by one, no journal.
                (|| {
                    for p in many.iter() {
                        media.fence();
                        p.store(media)?;
                        media.fence();
                    }
                    Ok(())
                })()
            }
            many => {
                let mut undo = Vec::with_capacity(many.len() + 1);
                for p in many.iter() {
                    p.undo(&mut undo);
                }
                let Some(journal) = self.store.journal else {
                    self.parts = parts;
                    return Err(Error::InvalidArgument(
                        "a transaction of several commit words without a journal".into(),
                    ));
                };
                match journal.begin(media, &undo) {
                    // Nothing was stored: the preparation is given back below.
                    Err(e) => {
                        self.parts = parts;
                        return Err(e);
                    }
                    // From here on a failure may leave a commit word stored: leak, not free.
                    Ok(slot) => (|| {
                        for p in many.iter() {
                            p.store(media)?;
                        }
                        media.fence();
                        journal.end(media, slot)
                    })(),
                }
            }
        };
        if let Err(e) = res {
            // The state of the commit words is unknown: keep every block allocated (recovery
            // rebuilds the allocator from what the image reaches).
            self.data.clear();
            self.inos.clear();
            drop(parts); // dropping a part frees nothing; only `Part::abort` does
            return Err(e);
        }
        self.data.clear();
        self.inos.clear();
        Ok(Committed { parts })
    }

    /// Commit an in-place transaction (it has nothing to apply).
    pub fn commit_in_place(self) -> Result<()> {
        let done = self.commit()?;
        debug_assert!(done.is_applied(), "commit_in_place of a log transaction");
        Ok(())
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if matches!(self.parts, Parts::Empty) && self.data.is_empty() && self.inos.is_empty() {
            return; // committed (or never prepared anything)
        }
        if let Some(blocks) = self.store.blocks {
            for p in self.parts.drain() {
                p.abort(blocks, self.store.media);
            }
            blocks.free_extents(&self.data);
        }
        if let Some(inos) = self.store.inos {
            for &ino in &self.inos {
                inos.free(ino);
            }
        }
    }
}

/// A committed transaction whose parts must each be applied to the inode state they were
/// prepared against (the caller still holds those inodes' write locks).
#[must_use = "the DRAM state is behind the image until every part is applied"]
pub struct Committed {
    /// Parts not applied yet (applied ones are replaced by `Part::Applied`; in-place parts
    /// have nothing to apply and stay as they are).
    parts: Parts,
}

/// Blocks a change replaced, inline up to four (a page write frees one: no allocation).
pub type Freed = smallvec::SmallVec<[u64; 4]>;

/// What applying one inode's parts changed.
#[derive(Default)]
pub struct Applied {
    /// Blocks the entries replaced (the caller frees them; inline up to four).
    pub freed: Freed,
    /// Log pages the commit released and `apply` freed (GC statistics).
    pub log_pages_freed: u64,
    /// The inode's log was appended to (GC may look at it).
    pub appended: bool,
    /// The entries appended to the inode's log.
    pub entries: Vec<Entry>,
    /// Log pages the appends linked.
    pub log_pages_added: Vec<u64>,
}

impl Committed {
    /// Apply every part of inode `ino` to its locked state `st`, in commit order. Infallible:
    /// prepare checked every entry against this state.
    pub fn apply(&mut self, blocks: &BlockAlloc, ino: u64, st: &mut InodeState) -> Applied {
        let mut out = Applied::default();
        for slot in self.parts.as_mut_slice() {
            if matches!(slot, Part::Applied) || slot.ino() != ino {
                continue;
            }
            match slot {
                Part::Applied | Part::Word { .. } | Part::Record { .. } => continue,
                Part::Append {
                    staged, entries, ..
                } => {
                    if !staged.new_pages.is_empty() {
                        out.log_pages_added.extend_from_slice(&staged.new_pages);
                        blocks.mark_log(&staged.new_pages);
                    }
                    st.apply_staged(staged, entries, &mut out.freed);
                    out.appended = true;
                    if out.entries.is_empty() {
                        out.entries = std::mem::take(entries); // no copy
                    } else {
                        out.entries.append(entries);
                    }
                }
                Part::NewLog {
                    staged, entries, ..
                } => {
                    blocks.mark_log(&staged.new_pages);
                    st.apply_staged(staged, entries, &mut out.freed);
                }
                Part::AppendCache {
                    staged, entries, ..
                } => {
                    blocks.mark_log(&staged.new_pages);
                    staged.apply(&mut st.cache_mut().log);
                    for e in entries.iter() {
                        st.apply_cache_checked(e);
                    }
                }
                Part::ResetCache { .. } => {
                    for &p in &st.cache().log.pages {
                        blocks.free_log(p);
                    }
                    out.log_pages_freed += st.cache().log.pages.len() as u64;
                    st.drop_cache();
                }
                Part::DropPrefix { pages, .. } => {
                    for p in st.log.drop_prefix(*pages) {
                        blocks.free_log(p);
                    }
                    out.log_pages_freed += *pages as u64;
                }
                Part::ReplaceLog { fresh, .. } => {
                    let old_pages = std::mem::take(&mut st.log.pages);
                    for &p in &old_pages {
                        blocks.free_log(p);
                    }
                    out.log_pages_freed += old_pages.len() as u64;
                    blocks.mark_log(&fresh.log.pages);
                    st.log = std::mem::take(&mut fresh.log);
                    st.map = std::mem::take(&mut fresh.map);
                    st.owners = std::mem::take(&mut fresh.owners);
                    st.dir = std::mem::take(&mut fresh.dir);
                    st.set_xattrs(fresh.take_xattrs());
                }
            }
            // Applied: what the part held is dropped here (nothing of it is freed on media).
            *slot = Part::Applied;
        }
        out
    }

    /// Whether every part was applied (an in-place part has nothing to apply).
    pub fn is_applied(&self) -> bool {
        self.parts
            .as_slice()
            .iter()
            .all(|p| matches!(p, Part::Applied) || p.in_place())
    }
}

impl Drop for Committed {
    fn drop(&mut self) {
        debug_assert!(
            std::thread::panicking() || self.is_applied(),
            "a committed transaction was not applied to the DRAM state"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::inode::{InodeSlot, NewInode};
    use crate::layout::Kind;

    const BLOCKS: u64 = 64;

    struct Fixture {
        media: Media,
        blocks: BlockAlloc,
        inos: InodeAlloc,
        journal: Journal,
    }

    impl Fixture {
        fn new() -> Fixture {
            let blocks = BlockAlloc::new(8, BLOCKS, 1);
            blocks.free(8, BLOCKS - 8);
            Fixture {
                media: Media::traced(BLOCKS * BLOCK),
                blocks,
                inos: InodeAlloc::new([5u64, 6, 7]),
                journal: Journal::new(2),
            }
        }

        fn txn(&self) -> Txn<'_> {
            Txn::new(
                Store {
                    media: &self.media,
                    blocks: Some(&self.blocks),
                    inos: Some(&self.inos),
                    journal: Some(&self.journal),
                    bounds: Bounds { lo: 8, hi: BLOCKS },
                },
                "test",
            )
        }
    }

    fn state(kind: Kind) -> InodeState {
        let slot = InodeSlot::fresh(NewInode {
            kind,
            generation: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            parent: crate::ROOT_INO,
            ctime_ns: 0,
            rdev: 0,
        });
        InodeState::new(9, &slot, kind)
    }

    fn add(ino: u64, name: &[u8]) -> Entry {
        Entry::DirAdd {
            ino,
            kind: Kind::File,
            name: name.into(),
            mtime_ns: 1,
        }
    }

    /// A transaction dropped before its commit gives back its log pages, data blocks and inode
    /// numbers, and stores no commit word.
    #[test]
    fn dropped_transaction_frees_everything() {
        let f = Fixture::new();
        let free = f.blocks.free_blocks();
        let dir = state(Kind::Dir);
        let mut txn = f.txn();
        txn.alloc_blocks(3).unwrap();
        let ino = f.inos.alloc().unwrap();
        txn.alloc_ino(ino);
        assert_eq!(f.inos.free_count(), 2);
        txn.append(9, 3 * BLOCK, &dir, vec![add(5, b"a")]).unwrap();
        assert!(f.blocks.free_blocks() < free - 3);
        drop(txn);
        assert_eq!(f.blocks.free_blocks(), free);
        assert_eq!(f.inos.free_count(), 3);
        assert_eq!(f.media.load_u64(LogWords::file(3 * BLOCK).tail).unwrap(), 0);
    }

    /// Prepare refuses entries that would not apply (checked in order: a rename within one
    /// directory removes and adds in one append), allocating nothing.
    #[test]
    fn prepare_checks_entries_in_order() {
        let f = Fixture::new();
        let free = f.blocks.free_blocks();
        let dir = state(Kind::Dir);
        let remove = |ino: u64, name: &[u8]| Entry::DirRemove {
            ino,
            name: name.into(),
            mtime_ns: 1,
        };
        let mut txn = f.txn();
        assert!(txn
            .append(9, 3 * BLOCK, &dir, vec![remove(5, b"a")])
            .is_err());
        assert!(txn
            .append(9, 3 * BLOCK, &dir, vec![add(5, b"a"), add(6, b"a")])
            .is_err());
        assert_eq!(f.blocks.free_blocks(), free);
        // Added, removed and added again within one append: applies.
        txn.append(
            9,
            3 * BLOCK,
            &dir,
            vec![add(5, b"a"), remove(5, b"a"), add(6, b"a")],
        )
        .unwrap();
        let file = state(Kind::File);
        assert!(txn
            .append(10, 4 * BLOCK, &file, vec![add(5, b"b")])
            .is_err());
    }

    /// An independent transaction (DESIGN.md §5.2.1) of one-fence appends shares one fence and
    /// writes no journal; when one of them is not one-fence, it is journaled as any other.
    #[test]
    fn independent_appends_share_one_fence_without_the_journal() {
        let f = Fixture::new();
        f.media.set_one_fence(true);
        let (mut a, mut b, mut c) = (state(Kind::Dir), state(Kind::Dir), state(Kind::Dir));
        let (sa, sb, sc) = (3 * BLOCK, 3 * BLOCK + 128, 3 * BLOCK + 256);
        for (ino, off, st, name) in [(9, sa, &mut a, b"x"), (10, sb, &mut b, b"y")] {
            let mut txn = f.txn();
            txn.append(ino, off, st, vec![add(5, name)]).unwrap();
            txn.commit().unwrap().apply(&f.blocks, ino, st);
        }
        let journal_stores = |media: &Media| {
            media
                .with_trace(|t| {
                    t.events
                        .iter()
                        .filter(|e| {
                            matches!(e, crate::media::TraceEvent::Store { off, .. }
                                if (2 * BLOCK..3 * BLOCK).contains(off))
                        })
                        .count()
                })
                .unwrap()
        };
        f.media.with_trace(|t| t.enabled = true);
        let mut txn = f.txn().independent();
        txn.append(9, sa, &a, vec![add(6, b"x2")]).unwrap();
        txn.append(10, sb, &b, vec![add(7, b"y2")]).unwrap();
        let mut done = txn.commit().unwrap();
        assert_eq!(
            shape(&f.media).matches('X').count(),
            1,
            "{}",
            shape(&f.media)
        );
        assert_eq!(journal_stores(&f.media), 0);
        done.apply(&f.blocks, 9, &mut a);
        done.apply(&f.blocks, 10, &mut b);
        assert!(done.is_applied());
        for (st, tail_at) in [(&a, sa), (&b, sb)] {
            let tail = f.media.load_u64(LogWords::file(tail_at).tail).unwrap();
            assert_eq!(tail, st.log.tail_off);
        }
        // `c`'s log is empty: its append links a page (not one-fence), so the journal makes
        // the two appends one atomic change.
        f.media.with_trace(|t| t.events.clear());
        let mut txn = f.txn().independent();
        txn.append(11, sc, &c, vec![add(8, b"z")]).unwrap();
        txn.append(9, sa, &a, vec![add(12, b"x3")]).unwrap();
        let mut done = txn.commit().unwrap();
        assert!(journal_stores(&f.media) > 0);
        done.apply(&f.blocks, 11, &mut c);
        done.apply(&f.blocks, 9, &mut a);
        assert_eq!(
            f.media.load_u64(LogWords::file(sc).tail).unwrap(),
            c.log.tail_off
        );
    }

    /// A committed transaction of two logs goes through the journal; applying it brings the
    /// DRAM state to the image's, and the journal slot is retired.
    #[test]
    fn commit_then_apply() {
        let f = Fixture::new();
        let mut a = state(Kind::Dir);
        let mut b = state(Kind::Dir);
        let mut txn = f.txn();
        txn.append(9, 3 * BLOCK, &a, vec![add(5, b"x")]).unwrap();
        txn.append(10, 3 * BLOCK + 128, &b, vec![add(6, b"y")])
            .unwrap();
        let mut done = txn.commit().unwrap();
        assert!(!done.is_applied());
        let applied = done.apply(&f.blocks, 9, &mut a);
        assert!(applied.appended);
        assert_eq!(applied.log_pages_added.len(), 1);
        let _ = done.apply(&f.blocks, 10, &mut b);
        assert!(done.is_applied());
        assert_eq!(a.dir.get(&b"x"[..]).map(|e| e.ino), Some(5));
        assert_eq!(b.dir.get(&b"y"[..]).map(|e| e.ino), Some(6));
        let tail = f.media.load_u64(LogWords::file(3 * BLOCK).tail).unwrap();
        assert_eq!(tail, a.log.tail_off);
        assert_ne!(tail, 0);
        let js: crate::layout::journal::JournalSlot = f.media.read_pod(2 * BLOCK).unwrap();
        assert_eq!(js.commit, 0, "journal slot retired");
    }

    /// fsck's repair transactions have no journal: several commit words are refused before
    /// anything is stored, and everything is given back.
    #[test]
    fn repair_transaction_refuses_several_words() {
        let f = Fixture::new();
        let free = f.blocks.free_blocks();
        let (a, b) = (state(Kind::Dir), state(Kind::Dir));
        let mut txn = Txn::repair(&f.media, &f.blocks, Bounds { lo: 8, hi: BLOCKS });
        txn.append(9, 3 * BLOCK, &a, vec![add(5, b"x")]).unwrap();
        txn.append(10, 3 * BLOCK + 128, &b, vec![add(6, b"y")])
            .unwrap();
        assert!(txn.commit().is_err());
        assert_eq!(f.blocks.free_blocks(), free);
        assert_eq!(f.media.load_u64(LogWords::file(3 * BLOCK).tail).unwrap(), 0);
    }

    /// The kinds of event a traced region recorded since tracing was enabled: 'S' store,
    /// 'F' flush, 'X' fence (marks and growth left out).
    fn shape(media: &Media) -> String {
        use crate::media::TraceEvent;
        media
            .with_trace(|t| {
                t.events
                    .iter()
                    .filter_map(|e| match e {
                        TraceEvent::Store { .. } => Some('S'),
                        TraceEvent::Flush { .. } => Some('F'),
                        TraceEvent::Fence { .. } => Some('X'),
                        _ => None,
                    })
                    .collect()
            })
            .expect("traced")
    }

    /// An in-place transaction stores nothing before its commit; the commit is one fence
    /// (ordering anything prepared), every word and record stored and flushed, one fence.
    #[test]
    fn in_place_commit_is_stores_between_two_fences() {
        let f = Fixture::new();
        f.media.with_trace(|t| t.enabled = true);
        let mut txn = Txn::in_place(&f.media, "test");
        txn.store_word(9 * BLOCK, 7);
        txn.store_word(9 * BLOCK + 64, 8);
        txn.rewrite(10 * BLOCK, &[5u8; 100]);
        assert_eq!(shape(&f.media), "", "nothing stored at prepare");
        txn.commit_in_place().unwrap();
        assert_eq!(shape(&f.media), "XSFSFSFFX");
        assert_eq!(f.media.load_u64(9 * BLOCK).unwrap(), 7);
        assert_eq!(f.media.load_u64(9 * BLOCK + 64).unwrap(), 8);
        let mut back = [0u8; 100];
        f.media.read(10 * BLOCK, &mut back).unwrap();
        assert_eq!(back, [5u8; 100]);
        // Nothing prepared: the commit stores nothing, not even a fence.
        Txn::in_place(&f.media, "test").commit_in_place().unwrap();
        assert_eq!(shape(&f.media), "XSFSFSFFX");
    }

    /// An in-place transaction allocates nothing, and in-place repairs cannot ride along
    /// with a log commit (they have no undo record for the journal): refused, and the
    /// prepared append is given back.
    #[test]
    fn in_place_repairs_stay_apart_from_log_commits() {
        let f = Fixture::new();
        let free = f.blocks.free_blocks();
        let mut txn = Txn::in_place(&f.media, "test");
        assert!(matches!(
            txn.alloc_blocks(1),
            Err(Error::InvalidArgument(_))
        ));
        let dir = state(Kind::Dir);
        let mut txn = f.txn();
        txn.append(9, 3 * BLOCK, &dir, vec![add(5, b"a")]).unwrap();
        txn.store_word(9 * BLOCK, 1);
        assert!(matches!(txn.commit(), Err(Error::InvalidArgument(_))));
        assert_eq!(f.blocks.free_blocks(), free);
        assert_eq!(f.media.load_u64(9 * BLOCK).unwrap(), 0);
        assert_eq!(f.media.load_u64(LogWords::file(3 * BLOCK).tail).unwrap(), 0);
    }

    /// A private copy of a block (fsck's repair of a block owned twice) is the source up to
    /// `zero_from` and zeros after; dropped uncommitted, its block comes back.
    #[test]
    fn copy_block_copies_zeroes_and_is_given_back() {
        let f = Fixture::new();
        let free = f.blocks.free_blocks();
        f.media
            .write(20 * BLOCK, &[0xabu8; BLOCK as usize])
            .unwrap();
        let mut txn = Txn::repair(&f.media, &f.blocks, Bounds { lo: 8, hi: BLOCKS });
        let nb = txn.copy_block(20, Some(100)).unwrap();
        assert_ne!(nb, 20);
        let mut page = vec![0u8; BLOCK as usize];
        f.media.read(nb * BLOCK, &mut page).unwrap();
        assert!(page[..100].iter().all(|&b| b == 0xab));
        assert!(page[100..].iter().all(|&b| b == 0));
        let whole = txn.copy_block(20, None).unwrap();
        f.media.read(whole * BLOCK, &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 0xab));
        assert_eq!(f.blocks.free_blocks(), free - 2);
        drop(txn);
        assert_eq!(f.blocks.free_blocks(), free);
    }
}
