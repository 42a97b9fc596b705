//! One round of checking: reads the whole image, records every problem with its fix, applies
//! the fixes that are single stores while it goes (with `repair`; without, they go to an
//! overlay so that the rest of the check sees the image as it would be after them), and leaves
//! the fixes that append log entries to [`super::repair`].

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};

use novafs_engine::inode::{slot_offset, Bounds, DirEnt, InodeState, NO_OWNER};
use novafs_engine::layout::entry::Entry;
use novafs_engine::layout::inode::{
    InodeSlot, NewInode, CACHE_HEAD_OFFSET, CACHE_TAIL_OFFSET, HEAD_OFFSET, TAIL_OFFSET,
};
use novafs_engine::layout::itable_map::{self, MapWord};
use novafs_engine::layout::journal::{
    JournalEntry, JournalSlot, SlotDamage, SlotState, SLOTS, SLOT_BYTES,
};
use novafs_engine::layout::saved;
use novafs_engine::layout::state::{MountState, StateDamage};
use novafs_engine::layout::superblock::{Superblock, MAGIC};
use novafs_engine::layout::{
    now_ns, Kind, BLOCK, CHUNK_BLOCKS, INODES_PER_CHUNK, INODE_SIZE, ROOT_INO,
};
use novafs_engine::txn::Txn;
use novafs_engine::xattr;
use novafs_engine::{Error, Media, Result, MAX_FILE_PAGES};

use super::walk::{self, Apply, Fix, LogRef};
use super::{Problem, ProblemKind, Progress, ProgressFn};

/// Access to the image for one round: reads see the overlay of planned word stores (without
/// `repair`), stores go to the media (with `repair`).
pub(super) struct Ctx<'a> {
    pub media: &'a Media,
    pub repair: bool,
    overlay: RefCell<BTreeMap<u64, u64>>,
    modified: Cell<bool>,
    /// The clean word to clear before the first change that alters block or inode usage.
    dirty_target: Cell<Option<u64>>,
    progress: Option<ProgressFn>,
    /// Changes made or planned so far (stores, overlay words): a speculative load made
    /// before a change is not used after it (`Scanner::speculate`).
    changes: Cell<u64>,
    /// Threads for the speculative parallel loads (1: none).
    threads: usize,
}

impl<'a> Ctx<'a> {
    pub fn new(media: &'a Media, repair: bool, progress: Option<ProgressFn>) -> Ctx<'a> {
        Ctx {
            media,
            repair,
            overlay: RefCell::new(BTreeMap::new()),
            modified: Cell::new(false),
            dirty_target: Cell::new(None),
            progress,
            changes: Cell::new(0),
            threads: 1,
        }
    }

    /// Load inodes on `threads` threads (0: one per core) where the check allows
    /// (`Scanner::speculate`).
    pub fn with_threads(mut self, threads: usize) -> Ctx<'a> {
        self.threads = if threads == 0 {
            novafs_engine::sync::cores()
        } else {
            threads
        };
        self
    }

    /// Changes made or planned so far.
    fn changes(&self) -> u64 {
        self.changes.get()
    }

    fn changed(&self) {
        self.changes.set(self.changes.get() + 1);
    }

    /// Whether anything was written.
    pub fn modified(&self) -> bool {
        self.modified.get()
    }

    pub fn progress(&self, phase: &'static str, done: u64, total: u64) {
        if let Some(p) = &self.progress {
            p(&Progress { phase, done, total });
        }
    }

    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.media.read(off, buf)?;
        let ov = self.overlay.borrow();
        if !ov.is_empty() {
            let end = off + buf.len() as u64;
            for (&w, &v) in ov.range(off.saturating_sub(7)..end) {
                let bytes = v.to_le_bytes();
                for (i, &b) in bytes.iter().enumerate() {
                    let a = w + i as u64;
                    if a >= off && a < end {
                        buf[(a - off) as usize] = b;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn read_pod<T: bytemuck::Pod>(&self, off: u64) -> Result<T> {
        let mut v = T::zeroed();
        self.read(off, bytemuck::bytes_of_mut(&mut v))?;
        Ok(v)
    }

    pub fn load_u64(&self, off: u64) -> Result<u64> {
        if let Some(&v) = self.overlay.borrow().get(&off) {
            return Ok(v);
        }
        self.media.load_u64(off)
    }

    /// Clear the clean flag before the first change (repair mode).
    pub fn before_change(&self) -> Result<()> {
        if let Some(off) = self.dirty_target.take() {
            self.changed();
            if self.repair {
                self.commit_words(&[(off, 0)])?;
            } else {
                self.overlay.borrow_mut().insert(off, 0);
            }
        }
        Ok(())
    }

    /// An 8-byte store, flushed and fenced. `usage`: the change alters which blocks or inodes
    /// are in use (a saved allocator state becomes stale).
    pub fn store_word(&self, off: u64, v: u64, usage: bool) -> Result<()> {
        self.changed();
        if usage {
            self.before_change()?;
        }
        if self.repair {
            self.commit_words(&[(off, v)])?;
        } else {
            self.overlay.borrow_mut().insert(off, v);
        }
        Ok(())
    }

    /// Repair mode: store `(address, value)` words in one in-place transaction (the engine's
    /// commit path: stores flushed in order, one fence).
    pub fn commit_words(&self, words: &[(u64, u64)]) -> Result<()> {
        self.changed();
        let mut txn = Txn::in_place(self.media, "fsck-repair");
        for &(off, v) in words {
            txn.store_word(off, v);
        }
        txn.commit_in_place()?;
        self.modified.set(true);
        Ok(())
    }

    /// Write `bytes` (8-aligned), flushed and fenced.
    pub fn write_bytes(&self, off: u64, bytes: &[u8], usage: bool) -> Result<()> {
        self.changed();
        if usage {
            self.before_change()?;
        }
        if self.repair {
            let mut txn = Txn::in_place(self.media, "fsck-repair");
            txn.rewrite(off, bytes);
            txn.commit_in_place()?;
            self.modified.set(true);
        } else {
            let mut ov = self.overlay.borrow_mut();
            for (i, c) in bytes.chunks(8).enumerate() {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                ov.insert(off + 8 * i as u64, u64::from_le_bytes(w));
            }
        }
        Ok(())
    }

    pub fn mark_modified(&self) {
        self.changed();
        self.modified.set(true);
    }
}

/// A fix that appends log entries (applied by [`super::repair`] after the round).
#[derive(Clone, Debug)]
pub(super) enum Deferred {
    /// Remove a name (DirRemove).
    RemoveName { dir: u64, name: Vec<u8>, child: u64 },
    /// Set a link count (Link).
    SetNlink { ino: u64, nlink: u32 },
    /// Set a directory's parent (Link).
    SetParent { ino: u64, parent: u64 },
    /// Set a file size (SetAttr).
    SetSize { ino: u64, size: u64 },
    /// Remove an extended attribute (XattrRemove).
    RemoveXattr { ino: u64, name: Vec<u8> },
    /// Give page `pgoff` a private copy of `block` (zeroed from `zero_from`), or drop it.
    Remap {
        ino: u64,
        pgoff: u64,
        block: u64,
        zero_from: Option<usize>,
    },
    /// Link a lost inode into /lost+found.
    Relink { ino: u64, kind: Kind },
}

/// A loaded inode.
pub(super) struct Info {
    pub slot_off: u64,
    pub kind: Kind,
    /// Boxed: the state is large (672 bytes) and the table of every inode grows and moves.
    pub st: Box<InodeState>,
    /// A file's tail check, when a worker made it with the load ([`eof_of`]): `None` when not
    /// made (the serial check of `sizes` reads the page then).
    pub eof: Option<Eof>,
}

/// Values by inode number: a dense table (inode numbers run from 1 to the end of the inode
/// table), walked in number order without hashing or sorting.
pub(super) struct Table<T> {
    slots: Vec<Option<T>>,
    len: usize,
}

/// The loaded inodes.
pub(super) type Infos = Table<Info>;

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Table<T> {
    /// Room for inode numbers below `end`.
    pub fn reserve(&mut self, end: u64) {
        let end = usize::try_from(end).unwrap_or(usize::MAX);
        if end > self.slots.len() {
            self.slots.resize_with(end, || None);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, ino: &u64) -> Option<&T> {
        self.slots.get(usize::try_from(*ino).ok()?)?.as_ref()
    }

    pub fn get_mut(&mut self, ino: &u64) -> Option<&mut T> {
        self.slots.get_mut(usize::try_from(*ino).ok()?)?.as_mut()
    }

    pub fn contains_key(&self, ino: &u64) -> bool {
        self.get(ino).is_some()
    }

    pub fn insert(&mut self, ino: u64, v: T) -> Option<T> {
        self.reserve(ino.saturating_add(1));
        let old = self.slots[ino as usize].replace(v);
        self.len += old.is_none() as usize;
        old
    }

    pub fn remove(&mut self, ino: &u64) -> Option<T> {
        let old = self.slots.get_mut(usize::try_from(*ino).ok()?)?.take();
        self.len -= old.is_some() as usize;
        old
    }

    /// The inode numbers, ascending.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, i)| i.is_some())
            .map(|(n, _)| n as u64)
    }
}

impl<T> std::ops::Index<&u64> for Table<T> {
    type Output = T;

    fn index(&self, ino: &u64) -> &T {
        self.get(ino).expect("an inode in the table")
    }
}

/// What a round learnt, for the repairs.
pub(super) struct Model {
    pub sb: Superblock,
    pub bounds: Bounds,
    pub chunks: Vec<u64>,
    pub infos: Infos,
    /// Per block: 0 = free, else an owner code.
    pub owner: Vec<u64>,
    /// Free slots (kind 0, unreached), ascending, a few.
    pub free_slots: Vec<u64>,
}

/// The result of one round.
#[derive(Default)]
pub(super) struct ScanResult {
    pub problems: Vec<Problem>,
    pub deferred: Vec<(usize, Deferred)>,
    pub fatal: bool,
    pub inodes_checked: u64,
    pub blocks_checked: u64,
    pub blocks_used: u64,
    pub entries_checked: u64,
    /// Inodes whose load made ahead in parallel was used.
    pub loaded_ahead: u64,
    pub was_clean: bool,
    pub notes: Vec<String>,
    /// What recovery does (did, with `repair`) before the image is consistent.
    pub recovery: Vec<String>,
    pub model: Option<Model>,
}

// Block owner codes: tag in the low 3 bits, id (inode or chunk index) above.
const O_META: u64 = 1;
const O_CHUNK: u64 = 2;
pub(super) const O_LOG: u64 = 3;
pub(super) const O_DATA: u64 = 4;
const O_CLOG: u64 = 5;
const O_CDATA: u64 = 6;

pub(super) fn own(tag: u64, id: u64) -> u64 {
    tag | (id << 3)
}

/// Describe an owner code.
pub(super) fn describe(o: u64) -> String {
    let id = o >> 3;
    match o & 7 {
        O_META => "fixed metadata".into(),
        O_CHUNK => format!("part of inode-table chunk {id}"),
        O_LOG => format!("a log page of inode {id}"),
        O_DATA => format!("a data block of inode {id}"),
        O_CLOG => format!("a write-cache log page of inode {id}"),
        O_CDATA => format!("a write-cache block of inode {id}"),
        _ => "free".into(),
    }
}

struct Bits(Vec<u64>);

impl Bits {
    fn new(n: u64) -> Bits {
        Bits(vec![0; n.div_ceil(64) as usize])
    }
    fn set(&mut self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, 1u64 << (i % 64));
        let was = self.0[w] & b != 0;
        self.0[w] |= b;
        was
    }
    fn get(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// The saved allocator state of a clean image.
struct Saved {
    free_blocks: Bits,
    free_inos: Bits,
    start: u64,
    blocks: u64,
}

#[derive(Clone, Debug)]
enum Bad {
    OutOfTable,
    Free,
    Invalid(String),
}

/// The names of a directory: (directory holding the name, name).
type Names = Vec<(u64, Vec<u8>)>;

struct Scanner<'c, 'a> {
    ctx: &'c Ctx<'a>,
    out: ScanResult,
    sb: Superblock,
    bounds: Bounds,
    chunks: Vec<u64>,
    max_ino: u64,
    owner: Vec<u64>,
    infos: Infos,
    bad: HashMap<u64, Bad>,
    reached: Bits,
    name_count: Vec<u32>,
    holders: HashMap<u64, Names>,
    lost_hint: HashSet<u64>,
    relinked: HashSet<u64>,
    saved: Option<Saved>,
    slot_kinds: Vec<u8>,
    /// The last session made one-fence commits: a log's last commit may be torn.
    torn: bool,
    /// Data pages the torn-commit checks may still read (`inode::torn_cut`).
    torn_budget: std::sync::atomic::AtomicU64,
    slots_in_use: u64,
    /// The root was lost and rebuilt empty this round.
    root_rebuilt: bool,
    /// Loads made ahead in parallel (`speculate`), used by `load` while no change was made
    /// since (`spec_changes`).
    spec: Table<Spec>,
    /// The inode numbers `spec` holds (to empty it without walking the whole table).
    spec_inos: Vec<u64>,
    spec_changes: u64,
}

/// Walk one log chain of inode `ino` (`which`: its log or its cache log; head and tail words
/// as read), replaying each good entry with `apply`. `owner` says which blocks belong to
/// something already (a log page of another inode, an inode-table chunk).
#[allow(clippy::too_many_arguments)]
fn walk_chain(
    ctx: &Ctx<'_>,
    owner: &[u64],
    ino: u64,
    which: &'static str,
    head: u64,
    tail: u64,
    bounds: Bounds,
    salvage: bool,
    apply: &mut Apply<'_>,
) -> Result<walk::WalkOut> {
    let taken = |b: u64| -> Option<String> {
        let o = owner[b as usize];
        (o != 0).then(|| describe(o))
    };
    let r = LogRef {
        ino,
        which,
        head,
        tail,
        bounds,
        taken: &taken,
        salvage,
    };
    walk::walk(ctx, &r, apply)
}

/// Walk inode `ino`'s log and replay it into `st`: the one walk of both the serial load and
/// the speculative one.
#[allow(clippy::too_many_arguments)]
fn walk_log(
    ctx: &Ctx<'_>,
    owner: &[u64],
    ino: u64,
    kind: Kind,
    head: u64,
    tail: u64,
    bounds: Bounds,
    st: &mut InodeState,
) -> Result<walk::WalkOut> {
    let mut scratch = Vec::new();
    let mut apply = |e: &Entry| {
        let res = st
            .apply(e, ino, bounds, &mut scratch, NO_OWNER)
            .map_err(|e| match e {
                Error::Corrupt { what, .. } => what,
                e => e.to_string(),
            });
        scratch.clear();
        res
    };
    let salvage = kind == Kind::Dir;
    walk_chain(
        ctx, owner, ino, "log", head, tail, bounds, salvage, &mut apply,
    )
}

/// The access and default ACLs of `st` that do not parse.
fn bad_acls(st: &InodeState) -> Vec<Vec<u8>> {
    st.xattrs()
        .iter()
        .filter(|(n, x)| {
            (&n[..] == xattr::ACL_ACCESS || &n[..] == xattr::ACL_DEFAULT)
                && xattr::parse_acl(&x.value).is_err()
        })
        .map(|(n, _)| n.to_vec())
        .collect()
}

/// The first non-zero byte of the bytes from `off` to the end of its page (`page`: a buffer
/// of one block), relative to `off`.
fn eof_nonzero(ctx: &Ctx<'_>, off: u64, page: &mut [u8]) -> Result<Option<usize>> {
    let n = (BLOCK - off % BLOCK) as usize;
    // The common case, all zero, checked in place (no copy); planned stores (the overlay)
    // and a non-zero byte take the read below, which finds where.
    if ctx.overlay.borrow().is_empty() && ctx.media.all_zero(off, n)? {
        return Ok(None);
    }
    let tail = &mut page[..n];
    ctx.read(off, tail)?;
    // OR-folded 16 bytes a word, 512 bytes a step (a byte fold 64 bytes a step spent more on
    // its test and branch than on the bytes).
    let nonzero = tail.chunks(512).any(|c| {
        let (words, rest) = c.as_chunks::<16>();
        words.iter().fold(0u128, |a, w| a | u128::from_ne_bytes(*w)) != 0
            || rest.iter().any(|&b| b != 0)
    });
    Ok(nonzero.then(|| tail.iter().position(|&x| x != 0)).flatten())
}

/// The bytes past the end of file in its last page, read: from region offset `from` to the
/// end of its page, the first non-zero one (relative to `from`), if any.
#[derive(Clone, Copy, Debug)]
pub(super) struct Eof {
    pub from: u64,
    pub first: Option<usize>,
}

/// For a file whose last page is partly past the end of file, that page's bytes past the end
/// ([`Eof`]); `None` for anything else, or when the page cannot be read (the serial check
/// then reads it and reports).
fn eof_of(ctx: &Ctx<'_>, kind: Kind, st: &InodeState, page: &mut [u8]) -> Option<Eof> {
    let size = st.attr.size;
    let in_page = size % BLOCK;
    if kind == Kind::Dir || in_page == 0 {
        return None;
    }
    let &b = st.map.get(&(size / BLOCK))?;
    let from = b * BLOCK + in_page;
    let first = eof_nonzero(ctx, from, page).ok()?;
    Some(Eof { from, first })
}

/// A load made ahead on a worker thread: inode `ino` whose slot, log and attributes show
/// nothing to report (`Scanner::speculate`).
struct Spec {
    off: u64,
    kind: Kind,
    st: Box<InodeState>,
    /// [`eof_of`], read with the load while the state is at hand.
    eof: Option<Eof>,
}

/// The speculative load of `ino`: the serial load's steps for an inode with nothing wrong
/// (a valid slot, a log that walks without an issue, no pending xattr pieces, ACLs that
/// parse, no write cache), read-only; `None` as soon as anything differs, and the serial load
/// then does it all again, reporting and repairing as it does.
fn speculate_one(
    ctx: &Ctx<'_>,
    owner: &[u64],
    chunks: &[u64],
    bounds: Bounds,
    torn: Option<&std::sync::atomic::AtomicU64>,
    ino: u64,
    page: &mut [u8],
) -> Option<Spec> {
    let off = (ino != 0).then(|| slot_offset(chunks, ino)).flatten()?;
    let slot: InodeSlot = ctx.read_pod(off).ok()?;
    if slot.kind == 0 || slot.validate(ino).is_err() {
        return None;
    }
    let kind = Kind::from_u8(slot.kind)?;
    let mut st = Box::new(InodeState::new(ino, &slot, kind));
    let head = ctx.load_u64(off + HEAD_OFFSET).ok()?;
    let tail = ctx.load_u64(off + TAIL_OFFSET).ok()?;
    if let Some(budget) = torn {
        // A torn last commit is cut off by the serial load (a planned store): not here.
        let check = novafs_engine::inode::TornCheck { budget, chunks };
        let cut = novafs_engine::inode::torn_cut(ctx.media, ino, head, tail, bounds, &check);
        if !matches!(cut, Ok(None)) {
            return None;
        }
    }
    let main = walk_log(ctx, owner, ino, kind, head, tail, bounds, &mut st).ok()?;
    if !main.issues.is_empty() || main.cut.is_some() || !main.salvaged.is_empty() {
        return None;
    }
    if !st.xattr_pending().is_empty() || !bad_acls(&st).is_empty() {
        return None;
    }
    if ctx.load_u64(off + CACHE_TAIL_OFFSET).ok()? != 0 {
        return None;
    }
    st.log = main.log;
    let eof = eof_of(ctx, kind, &st, page);
    Some(Spec { off, kind, st, eof })
}

const PRIMARY: &str = "primary superblock (block 0)";

/// Run one round.
pub(super) fn scan(ctx: &Ctx<'_>) -> Result<ScanResult> {
    let mut out = ScanResult::default();
    let Some(sb) = superblocks(ctx, &mut out)? else {
        out.fatal = true;
        return Ok(out);
    };
    let mut s = Scanner {
        ctx,
        out,
        sb,
        bounds: Bounds::of(&sb),
        chunks: Vec::new(),
        max_ino: 0,
        owner: vec![0; sb.blocks_total as usize],
        infos: Infos::default(),
        bad: HashMap::new(),
        reached: Bits::new(0),
        name_count: Vec::new(),
        holders: HashMap::new(),
        lost_hint: HashSet::new(),
        relinked: HashSet::new(),
        saved: None,
        slot_kinds: Vec::new(),
        torn: false,
        torn_budget: std::sync::atomic::AtomicU64::new(sb.blocks_total),
        slots_in_use: 0,
        root_rebuilt: false,
        spec: Table::default(),
        spec_inos: Vec::new(),
        spec_changes: 0,
    };
    s.out.blocks_checked = sb.blocks_total;
    if !s.itable_map()? {
        s.out.fatal = true;
        return Ok(s.out);
    }
    s.mount_state()?;
    s.journal()?;
    s.slot_scan()?;
    // Every inode loaded is numbered below the table's end: one table, never grown.
    s.infos.reserve(s.max_ino);
    if !s.tree()? {
        s.out.fatal = true;
        return Ok(s.finish());
    }
    s.orphans()?;
    s.dirs_and_links();
    s.data_blocks()?;
    s.sizes()?;
    s.saved_state()?;
    Ok(s.finish())
}

fn push(
    out: &mut ScanResult,
    kind: ProblemKind,
    inode: Option<u64>,
    block: Option<u64>,
    offset: Option<u64>,
    message: String,
    repair: Option<&str>,
) -> usize {
    out.problems.push(Problem {
        kind,
        inode,
        block,
        offset,
        message,
        repair: repair.map(str::to_string),
        fixed: false,
    });
    out.problems.len() - 1
}

/// Whether a bad primary superblock is what a crash inside a grow's commit leaves: the image
/// was not cleanly unmounted, and the valid `replica` (at the file's last block) describes the
/// whole file, as the grow's replica written before the primary does.
fn interrupted_grow(ctx: &Ctx<'_>, replica: &Superblock, len: u64) -> bool {
    replica.blocks_total.checked_mul(BLOCK) == Some(len)
        && replica
            .state_block
            .checked_mul(BLOCK)
            .and_then(|off| ctx.read_pod::<MountState>(off).ok())
            .is_some_and(|ms| matches!(ms.decode(), Ok(false)))
}

/// Both superblocks: returns the good one (repairing the other), or `None` when neither is.
fn superblocks(ctx: &Ctx<'_>, out: &mut ScanResult) -> Result<Option<Superblock>> {
    let len = ctx.media.len();
    if len < 2 * BLOCK {
        if len >= 256 {
            let p: Superblock = ctx.read_pod(0)?;
            if p.magic == MAGIC {
                push(
                    out,
                    ProblemKind::ImageTruncated,
                    None,
                    None,
                    Some(len),
                    format!("image file holds only {len} bytes"),
                    None,
                );
                return Ok(None);
            }
        }
        return Err(Error::NotNovafs);
    }
    let primary: Superblock = ctx.read_pod(0)?;
    let err = match primary.validate(PRIMARY, len) {
        Ok(()) => {
            let rb = primary.replica_block;
            let replica: Superblock = ctx.read_pod(rb * BLOCK)?;
            if replica != primary {
                let why = match replica.validate("superblock replica", len) {
                    Err(e) => e.to_string(),
                    Ok(()) => "it differs from the primary".to_string(),
                };
                push(
                    out,
                    ProblemKind::SuperblockReplica,
                    None,
                    Some(rb),
                    Some(rb * BLOCK),
                    format!("superblock replica (block {rb}) is bad: {why}"),
                    Some("rewrite the replica from the primary"),
                );
                ctx.write_bytes(rb * BLOCK, bytemuck::bytes_of(&primary), false)?;
            }
            return Ok(Some(primary));
        }
        Err(e @ Error::UnsupportedVersion { .. }) => return Err(e),
        Err(e) => e,
    };
    // A superblock whose checksum holds but whose image is shorter: a truncated file.
    if primary.magic == MAGIC
        && primary.blocks_total <= u64::MAX / BLOCK
        && primary.validate(PRIMARY, u64::MAX).is_ok()
        && primary.blocks_total * BLOCK > len
    {
        push(out, ProblemKind::ImageTruncated, None, None, Some(len), format!("the image file holds {len} bytes but its superblock says {} blocks ({} bytes): truncated image file; restore its end from a copy", primary.blocks_total, primary.blocks_total * BLOCK), None);
        return Ok(None);
    }
    let rb = len / BLOCK - 1;
    let replica: Superblock = ctx.read_pod(rb * BLOCK)?;
    match replica.validate("superblock replica", len) {
        Ok(()) if replica.replica_block == rb && interrupted_grow(ctx, &replica, len) => {
            // A crash while a grow rewrote the primary (DESIGN.md §5.12, step 3): the state
            // mount handles (it reads the replica and rewrites the primary), not damage.
            out.notes.push(format!(
                "a grow was interrupted while it rewrote the primary superblock; mount uses \
                 the replica (block {rb}, {} blocks) and rewrites the primary",
                replica.blocks_total
            ));
            ctx.write_bytes(0, bytemuck::bytes_of(&replica), false)?;
            Ok(Some(replica))
        }
        Ok(()) if replica.replica_block == rb => {
            push(
                out,
                ProblemKind::SuperblockPrimary,
                None,
                Some(0),
                Some(0),
                format!("primary superblock is bad ({err}); the replica (block {rb}) is good"),
                Some("rewrite the primary from the replica"),
            );
            ctx.write_bytes(0, bytemuck::bytes_of(&replica), false)?;
            Ok(Some(replica))
        }
        other => {
            if primary.magic != MAGIC && replica.magic != MAGIC {
                return Err(Error::NotNovafs);
            }
            let rerr = match other {
                Err(e) => e.to_string(),
                Ok(()) => "it is not at the last block".into(),
            };
            push(
                out,
                ProblemKind::Superblock,
                None,
                Some(0),
                Some(0),
                format!("both superblocks are bad: primary: {err}; replica (block {rb}): {rerr}"),
                None,
            );
            Ok(None)
        }
    }
}

impl Scanner<'_, '_> {
    fn problem(
        &mut self,
        kind: ProblemKind,
        inode: Option<u64>,
        block: Option<u64>,
        offset: Option<u64>,
        message: String,
        repair: Option<&str>,
    ) -> usize {
        push(&mut self.out, kind, inode, block, offset, message, repair)
    }

    fn defer(&mut self, idx: usize, d: Deferred) {
        self.out.deferred.push((idx, d));
    }

    fn finish(mut self) -> ScanResult {
        self.out.inodes_checked = (self.infos.len() + self.bad.len()) as u64;
        self.out.blocks_used = self.owner.iter().filter(|&&o| o != 0).count() as u64;
        let mut free_slots = Vec::new();
        for ino in ROOT_INO + 1..self.max_ino {
            if self.slot_kinds.get(ino as usize) == Some(&0)
                && !self.reached.get(ino)
                && !self.infos.contains_key(&ino)
                && !self.bad.contains_key(&ino)
            {
                free_slots.push(ino);
                if free_slots.len() >= 16 {
                    break;
                }
            }
        }
        self.out.model = Some(Model {
            sb: self.sb,
            bounds: self.bounds,
            chunks: self.chunks.clone(),
            infos: std::mem::take(&mut self.infos),
            owner: std::mem::take(&mut self.owner),
            free_slots,
        });
        self.out
    }

    /// The inode-table map and its chunks. Returns false when it is too damaged to go on.
    fn itable_map(&mut self) -> Result<bool> {
        let sb = self.sb;
        for b in 0..sb.first_free_block {
            self.owner[b as usize] = own(O_META, 0);
        }
        self.owner[sb.replica_block as usize] = own(O_META, 0);
        let map_off = sb.itable_map_start * BLOCK;
        let mut map = vec![0u8; (sb.itable_map_blocks * BLOCK) as usize];
        self.ctx.read(map_off, &mut map)?;
        let n = sb.max_chunks() as usize;
        let entry = |i: usize| u64::from_le_bytes(map[i * 8..i * 8 + 8].try_into().expect("8"));
        let mut i = 0;
        while i < n {
            let off = map_off + i as u64 * 8;
            let b = match itable_map::decode(sb.version, i as u64, entry(i)) {
                Ok(MapWord::End) => break,
                Ok(MapWord::Chunk(b)) => b,
                Err(what) => {
                    self.problem(
                        ProblemKind::ItableMap,
                        None,
                        Some(off / BLOCK),
                        Some(off),
                        what,
                        None,
                    );
                    return Ok(false);
                }
            };
            if !sb.chunk_in_range(b) {
                self.problem(ProblemKind::ItableMap, None, Some(sb.itable_map_start + off / BLOCK - sb.itable_map_start), Some(off), format!("inode-table map entry {i} points to block {b}, outside the allocatable area"), None);
                return Ok(false);
            }
            for c in b..b + CHUNK_BLOCKS {
                if self.owner[c as usize] != 0 {
                    let o = describe(self.owner[c as usize]);
                    self.problem(
                        ProblemKind::ItableMap,
                        None,
                        Some(c),
                        Some(off),
                        format!(
                            "inode-table chunk {i} (blocks {b}..{}) overlaps {o} at block {c}",
                            b + CHUNK_BLOCKS
                        ),
                        None,
                    );
                    return Ok(false);
                }
                self.owner[c as usize] = own(O_CHUNK, i as u64);
            }
            self.chunks.push(b);
            i += 1;
        }
        if self.chunks.is_empty() {
            self.problem(
                ProblemKind::ItableMap,
                None,
                Some(sb.itable_map_start),
                Some(map_off),
                "the inode-table map is empty".into(),
                None,
            );
            return Ok(false);
        }
        for j in i..n {
            let v = entry(j);
            if v != 0 {
                let off = map_off + j as u64 * 8;
                self.problem(ProblemKind::ItableMap, None, Some(off / BLOCK), Some(off), format!("inode-table map entry {j} holds {v} after the end of the map (entry {i} is 0)"), Some("clear the entry"));
                self.ctx.store_word(off, 0, true)?;
            }
        }
        self.max_ino = self.chunks.len() as u64 * INODES_PER_CHUNK;
        self.reached = Bits::new(self.max_ino);
        self.name_count = vec![0; self.max_ino as usize];
        Ok(true)
    }

    fn mount_state(&mut self) -> Result<()> {
        let sb = self.sb;
        let off = sb.state_block * BLOCK;
        let ms: MountState = self.ctx.read_pod(off)?;
        // A one-fence session's word stays: recovery must still cut its torn commits.
        self.torn = ms.torn_commits();
        if ms.clean != 0 && !self.torn {
            self.ctx.dirty_target.set(Some(off));
        }
        const CLEAR: &str =
            "clear the clean flag (the next mount rebuilds the allocators from the logs)";
        let damage = match ms.decode() {
            Ok(true) => None,
            Ok(false) => {
                self.out.notes.push("the image was not cleanly unmounted: mount will undo any interrupted operation and rebuild the allocators; the saved-state and leak checks do not apply".into());
                return Ok(());
            }
            Err(d) => Some(d),
        };
        if let Some(d) = damage {
            let (at, msg) = match d {
                StateDamage::CleanWord(w) => (
                    off,
                    format!("mount-state clean word holds {w:#x}, neither 0 nor the clean magic"),
                ),
                StateDamage::Checksum => (off + 60, "mount-state header checksum".to_string()),
                StateDamage::Reserved => (
                    off + 36,
                    "mount-state reserved bytes are not zero".to_string(),
                ),
            };
            if !matches!(d, StateDamage::CleanWord(_)) {
                self.out.was_clean = true;
            }
            self.problem(
                ProblemKind::MountState,
                None,
                Some(sb.state_block),
                Some(at),
                msg,
                Some(CLEAR),
            );
            self.ctx.before_change()?;
            return Ok(());
        }
        self.out.was_clean = true;
        match self.parse_saved(&ms)? {
            Ok(saved) => self.saved = Some(saved),
            Err(msg) => {
                self.problem(
                    ProblemKind::SavedState,
                    None,
                    Some(ms.saved_block),
                    Some(ms.saved_block.saturating_mul(BLOCK)),
                    format!("saved allocator state: {msg}"),
                    Some(CLEAR),
                );
                self.ctx.before_change()?;
            }
        }
        Ok(())
    }

    fn parse_saved(&self, ms: &MountState) -> Result<std::result::Result<Saved, String>> {
        let sb = self.sb;
        let (off, len) = match saved::location(ms, &sb) {
            Ok(l) => l,
            Err(msg) => return Ok(Err(msg)),
        };
        let mut buf = vec![0u8; len];
        self.ctx.read(off, &mut buf)?;
        let state = match saved::decode(ms, &buf, &sb, self.max_ino) {
            Ok(s) => s,
            Err(msg) => return Ok(Err(msg)),
        };
        let mut out = Saved {
            free_blocks: Bits::new(sb.blocks_total),
            free_inos: Bits::new(self.max_ino),
            start: ms.saved_block,
            blocks: ms.saved_blocks,
        };
        for &(s, l) in &state.free_blocks {
            for b in s..s + l {
                out.free_blocks.set(b);
            }
        }
        for &(s, l) in &state.free_inos {
            for ino in s..s + l {
                out.free_inos.set(ino);
            }
        }
        Ok(Ok(out))
    }

    fn journal(&mut self) -> Result<()> {
        let base = self.sb.journal_block * BLOCK;
        let chunks = self.chunks.clone();
        for slot in 0..SLOTS {
            let off = base + slot as u64 * SLOT_BYTES;
            let js: JournalSlot = self.ctx.read_pod(off)?;
            let block = Some(self.sb.journal_block);
            let (msg, fix) = match js.decode(&chunks) {
                Ok(SlotState::Idle) => continue,
                Ok(SlotState::Active(records)) => {
                    self.journal_undo(slot, off, records)?;
                    continue;
                }
                Err(SlotDamage::Damaged) => (
                    format!("journal slot {slot} is damaged (commit word {:#x}, {} records)", js.commit, js.n),
                    "clear the slot without undoing it (its undo records cannot be trusted); the rest of the check repairs what the interrupted operation left",
                ),
                Err(SlotDamage::BadAddress(addr)) => (
                    format!("journal slot {slot}: undo address {addr} is not an inode's log tail or head word"),
                    "clear the slot without undoing it",
                ),
            };
            self.problem(
                ProblemKind::JournalCorrupt,
                None,
                block,
                Some(off),
                msg,
                Some(fix),
            );
            self.ctx.store_word(off, 0, true)?;
        }
        Ok(())
    }

    /// An active journal slot: not an error, the image needs recovery (as e2fsck treats a
    /// journal needing replay). The rest of the check sees the image as recovery leaves it:
    /// undone in the overlay (-n) or on the media (-y).
    fn journal_undo(&mut self, slot: usize, off: u64, records: &[JournalEntry]) -> Result<()> {
        let done = if self.ctx.repair {
            "undone"
        } else {
            "recovery will undo it"
        };
        self.out.recovery.push(format!(
            "journal slot {slot} is active: a multi-inode operation was interrupted; {done} ({} log words restored)",
            records.len()
        ));
        self.ctx.before_change()?;
        // As recovery's undo: every record (one fence), then the slot cleared.
        if self.ctx.repair {
            let words: Vec<(u64, u64)> = records.iter().map(|e| (e.addr, e.old)).collect();
            self.ctx.commit_words(&words)?;
        } else {
            for e in records {
                self.ctx.store_word(e.addr, e.old, true)?;
            }
        }
        self.ctx.store_word(off, 0, true)
    }

    /// Read every slot's kind byte (for orphans and the progress estimate).
    fn slot_scan(&mut self) -> Result<()> {
        let mut kinds = vec![0u8; self.max_ino as usize];
        let mut buf = vec![0u8; (CHUNK_BLOCKS * BLOCK) as usize];
        for (ci, &c) in self.chunks.iter().enumerate() {
            self.ctx.read(c * BLOCK, &mut buf)?;
            for i in 0..INODES_PER_CHUNK as usize {
                kinds[ci * INODES_PER_CHUNK as usize + i] = buf[i * INODE_SIZE as usize + 16];
            }
        }
        kinds[0] = 0;
        self.slots_in_use = kinds.iter().filter(|&&k| k != 0).count() as u64;
        self.slot_kinds = kinds;
        Ok(())
    }

    /// Load inode `ino` (if not yet): its slot and logs; claims its log pages.
    fn load(&mut self, ino: u64, expect: Option<Kind>) -> Result<Option<Bad>> {
        if self.infos.contains_key(&ino) {
            return Ok(None);
        }
        if let Some(b) = self.bad.get(&ino) {
            return Ok(Some(b.clone()));
        }
        let r = match self.spec.remove(&ino) {
            // Made before any change, and no log page of it was claimed since (by an inode
            // loaded before it in this level): what the serial load would find.
            Some(sp)
                if self.ctx.changes() == self.spec_changes
                    && sp.st.log.pages.iter().all(|&p| self.owner[p as usize] == 0) =>
            {
                let blk = Some(sp.off / BLOCK);
                self.out.loaded_ahead += 1;
                self.finish_load(ino, sp.off, blk, sp.kind, sp.st, sp.eof)?
            }
            _ => self.load_inner(ino, expect)?,
        };
        if let Some(b) = &r {
            self.bad.insert(ino, b.clone());
        }
        let n = (self.infos.len() + self.bad.len()) as u64;
        if n.is_multiple_of(4096) {
            self.ctx.progress("inodes", n, self.slots_in_use.max(n));
        }
        Ok(r)
    }

    fn load_inner(&mut self, ino: u64, expect: Option<Kind>) -> Result<Option<Bad>> {
        let Some(off) = (ino != 0).then(|| slot_offset(&self.chunks, ino)).flatten() else {
            return Ok(Some(Bad::OutOfTable));
        };
        let mut slot: InodeSlot = self.ctx.read_pod(off)?;
        if slot.kind == 0 {
            return Ok(Some(Bad::Free));
        }
        let blk = Some(off / BLOCK);
        let mut reseal = None;
        if let Err(e) = slot.validate(ino) {
            let reason = match e {
                Error::Corrupt { what, .. } => what,
                e => e.to_string(),
            };
            if let Some((fixed, word)) = walk::fix_slot(&slot, ino) {
                self.problem(
                    ProblemKind::InodeSlot,
                    Some(ino),
                    blk,
                    Some(off + word),
                    format!("inode {ino} slot: {reason}; a single flipped bit"),
                    Some("restore the bit"),
                );
                let value = u64::from_le_bytes(
                    bytemuck::bytes_of(&fixed)[word as usize..word as usize + 8]
                        .try_into()
                        .expect("8"),
                );
                self.ctx.store_word(off + word, value, false)?;
                slot = fixed;
            } else if expect.is_some() && Kind::from_u8(slot.kind) == expect && self.sane(&slot) {
                reseal = Some((reason, false));
            } else if ino == ROOT_INO {
                // The root's fixed fields are known: rebuild them, keep the rest.
                slot.kind = Kind::Dir as u8;
                slot.reserved0 = [0; 7];
                slot.flags = 0;
                slot.parent = ROOT_INO;
                slot.reserved = [0; 36];
                slot.rdev = 0;
                slot.cache_head = 0;
                slot.cache_tail = 0;
                if slot.mode > 0o7777 {
                    slot.mode = 0o755;
                }
                reseal = Some((reason, true));
            } else {
                return Ok(Some(Bad::Invalid(reason)));
            }
        }
        let kind = Kind::from_u8(slot.kind).expect("validated kind");
        let mut st = InodeState::new(ino, &slot, kind);
        let head = self.ctx.load_u64(off + HEAD_OFFSET)?;
        let mut tail = self.ctx.load_u64(off + TAIL_OFFSET)?;
        let bounds = self.bounds;
        if self.torn {
            // A torn last commit of a one-fence session is not damage: recovery cuts it off
            // (and so does repair, the same way); the check goes on with the shorter log.
            let check = novafs_engine::inode::TornCheck {
                budget: &self.torn_budget,
                chunks: &self.chunks,
            };
            if let Ok(Some(cut)) =
                novafs_engine::inode::torn_cut(self.ctx.media, ino, head, tail, bounds, &check)
            {
                self.out.notes.push(format!(
                    "inode {ino}: the last commit of its log is torn (a one-fence session \
                     crashed in it); recovery cuts the log back to offset {cut}"
                ));
                self.ctx.store_word(off + TAIL_OFFSET, cut, true)?;
                tail = cut;
            }
        }
        let main = walk_log(
            self.ctx,
            &self.owner,
            ino,
            kind,
            head,
            tail,
            bounds,
            &mut st,
        )?;
        if let Some((reason, rebuild)) = reseal.take() {
            if !main.issues.is_empty() && !rebuild {
                return Ok(Some(Bad::Invalid(reason)));
            }
            let fixed = slot.seal();
            if rebuild {
                self.problem(ProblemKind::InodeSlot, Some(ino), blk, Some(off + 16), format!("the root directory's slot is damaged ({reason})"), Some("rebuild its fixed fields (kind, parent, flags, reserved bytes) and its checksum"));
                self.ctx
                    .write_bytes(off + 16, &bytemuck::bytes_of(&fixed)[16..], false)?;
            } else {
                let value =
                    u64::from_le_bytes(bytemuck::bytes_of(&fixed)[120..128].try_into().expect("8"));
                self.problem(ProblemKind::InodeSlot, Some(ino), blk, Some(off + 124), format!("inode {ino} slot: {reason}; its fields are sane and agree with its directory entry"), Some("recompute the slot checksum"));
                self.ctx.store_word(off + 120, value, false)?;
            }
        }
        self.log_issues(
            ino,
            off + TAIL_OFFSET,
            &main,
            "cut the log back to the last valid entry",
        )?;
        // Names past a cut: the children still named at the end of the salvaged entries are
        // lost (a name added and removed again was a deleted file).
        let mut names: HashMap<&[u8], u64> = HashMap::new();
        for ent in &main.salvaged {
            match ent {
                Entry::DirAdd {
                    ino: child, name, ..
                } => {
                    names.insert(name, *child);
                }
                Entry::DirRemove { name, .. } => {
                    names.remove(name.as_slice());
                }
                _ => {}
            }
        }
        self.lost_hint.extend(names.into_values());
        // Extended attributes: each entry was decoded (name, sizes) and replayed (pieces in
        // order before their set entry); what replay cannot see is checked here.
        // Pieces at the end of the log were reported by the walk, which cut them off; the
        // state replayed them, so drop them here too.
        if !st.xattr_pending().is_empty() && main.cut.is_none() {
            self.problem(
                ProblemKind::Xattr,
                Some(ino),
                blk,
                None,
                format!(
                    "inode {ino}: {} bytes of xattr value pieces at the end of the log without their set entry",
                    st.xattr_pending().len()
                ),
                None,
            );
        }
        st.clear_xattr_pending();
        for name in bad_acls(&st) {
            let i = self.problem(
                ProblemKind::Xattr,
                Some(ino),
                blk,
                None,
                format!(
                    "inode {ino}: extended attribute {} is not a well-formed POSIX ACL",
                    String::from_utf8_lossy(&name)
                ),
                Some("remove the attribute (XattrRemove entry)"),
            );
            self.defer(i, Deferred::RemoveXattr { ino, name });
        }
        st.log = main.log;
        self.finish_load(ino, off, blk, kind, Box::new(st), None)
    }

    /// The end of a load, once the log was walked: owners of its log pages, the symlink
    /// check, the write-cache log, and the inode joins `infos`.
    fn finish_load(
        &mut self,
        ino: u64,
        off: u64,
        blk: Option<u64>,
        kind: Kind,
        mut st: Box<InodeState>,
        eof: Option<Eof>,
    ) -> Result<Option<Bad>> {
        let bounds = self.bounds;
        for &p in &st.log.pages {
            self.owner[p as usize] = own(O_LOG, ino);
        }
        self.out.entries_checked += st.log.entries;
        if kind == Kind::Symlink {
            if let Some(why) = self.symlink_problem(&st)? {
                // Its name is removed and it is not relinked: a symlink without its target
                // (an empty log, or one cut back by the repair above) is never kept.
                return Ok(Some(Bad::Invalid(why)));
            }
        }
        // The write-cache log.
        let ctail = self.ctx.load_u64(off + CACHE_TAIL_OFFSET)?;
        if ctail != 0 && kind != Kind::File {
            self.problem(
                ProblemKind::InodeSlot,
                Some(ino),
                blk,
                Some(off + CACHE_TAIL_OFFSET),
                format!("inode {ino}: a write cache on a non-file"),
                Some("empty the write cache"),
            );
            self.ctx.store_word(off + CACHE_TAIL_OFFSET, 0, true)?;
        } else if ctail != 0 {
            let chead = self.ctx.load_u64(off + CACHE_HEAD_OFFSET)?;
            let mut apply = |e: &Entry| st.apply_cache(e, bounds).map_err(|e| e.to_string());
            let cache = walk_chain(
                self.ctx,
                &self.owner,
                ino,
                "cache log",
                chead,
                ctail,
                bounds,
                false,
                &mut apply,
            )?;
            self.log_issues(
                ino,
                off + CACHE_TAIL_OFFSET,
                &cache,
                "cut the write-cache log back to the last valid entry",
            )?;
            st.cache_mut().log = cache.log;
            // As recovery: a failure-atomic cache is discarded (its blocks are free), a
            // MAP_SYNC one is migrated (its log pages and blocks are in use).
            if !st.cache().atomic {
                for &p in &st.cache().log.pages {
                    self.owner[p as usize] = own(O_CLOG, ino);
                }
            }
        }
        self.infos.insert(
            ino,
            Info {
                slot_off: off,
                kind,
                st,
                eof,
            },
        );
        Ok(None)
    }

    /// What is wrong with a symlink's replayed state, if anything: its length must be
    /// 1..=4096 bytes and its target bytes present (the first page mapped, no NUL byte).
    fn symlink_problem(&self, st: &InodeState) -> Result<Option<String>> {
        let len = st.attr.size;
        if len == 0 || len > BLOCK {
            return Ok(Some(format!(
                "a symlink of {len} bytes (1..=4096 expected)"
            )));
        }
        let Some(&block) = st.map.get(&0) else {
            return Ok(Some("a symlink whose target is not stored".into()));
        };
        if !self.bounds.contains(block, 1) {
            return Ok(Some(
                "a symlink whose target block is outside the image".into(),
            ));
        }
        let mut target = vec![0u8; len as usize];
        self.ctx.read(block * BLOCK, &mut target)?;
        Ok(target
            .contains(&0)
            .then(|| "a symlink whose target holds a NUL byte".into()))
    }

    /// Record a walk's problems and apply their single-store fixes.
    fn log_issues(
        &mut self,
        ino: u64,
        tail_word: u64,
        w: &walk::WalkOut,
        cut_msg: &str,
    ) -> Result<()> {
        let cut_repair = match w.cut {
            Some(0) => format!("{cut_msg} (the log becomes empty)"),
            Some(t) => format!("{cut_msg} (new tail {t})"),
            None => String::new(),
        };
        for is in &w.issues {
            let repair = match &is.fix {
                Fix::Cut if is.kind == ProblemKind::LogTail => match w.cut {
                    Some(0) => "no valid entry: empty the log (tail 0)".to_string(),
                    Some(t) => format!("set the tail to the end of the last valid entry ({t})"),
                    None => String::new(),
                },
                Fix::Word { .. } => "restore the bit".to_string(),
                Fix::Trailer { .. } => {
                    "rewrite the page trailer to link to the tail page".to_string()
                }
                Fix::Cut => cut_repair.clone(),
            };
            self.problem(
                is.kind,
                Some(ino),
                is.block,
                is.offset,
                format!("inode {ino}: {}", is.message),
                Some(&repair),
            );
            match &is.fix {
                Fix::Word { off, value } => self.ctx.store_word(*off, *value, false)?,
                Fix::Trailer { page, trailer } => self.ctx.write_bytes(
                    page * BLOCK + novafs_engine::layout::logpage::TRAILER_OFFSET,
                    bytemuck::bytes_of(trailer),
                    true,
                )?,
                Fix::Cut => {}
            }
        }
        if let Some(t) = w.cut {
            self.ctx.store_word(tail_word, t, true)?;
        }
        Ok(())
    }

    fn sane(&self, s: &InodeSlot) -> bool {
        s.reserved.iter().all(|&b| b == 0)
            && s.reserved0.iter().all(|&b| b == 0)
            && s.mode <= 0o7777
            && s.flags == 0
            && s.parent != 0
            && s.parent < self.max_ino
    }

    /// Walk the tree from the root. Returns false when the root is unusable.
    fn tree(&mut self) -> Result<bool> {
        match self.load(ROOT_INO, Some(Kind::Dir))? {
            None if self.infos[&ROOT_INO].kind == Kind::Dir => {}
            other => {
                let why = match other {
                    Some(Bad::Free) => "free".to_string(),
                    Some(Bad::Invalid(m)) => format!("invalid ({m})"),
                    Some(Bad::OutOfTable) => "outside the table".into(),
                    None => "not a directory".into(),
                };
                let Some(off) = slot_offset(&self.chunks, ROOT_INO) else {
                    return Ok(false);
                };
                self.problem(
                    ProblemKind::InodeSlot,
                    Some(ROOT_INO),
                    Some(off / BLOCK),
                    Some(off),
                    format!("the root directory inode is {why}"),
                    Some("rebuild an empty root directory; every valid inode no directory names then goes to /lost+found"),
                );
                self.rebuild_root(off)?;
            }
        }
        self.reached.set(ROOT_INO);
        if self.infos[&ROOT_INO].st.parent != ROOT_INO {
            let p = self.infos[&ROOT_INO].st.parent;
            let i = self.problem(
                ProblemKind::DirParent,
                Some(ROOT_INO),
                None,
                None,
                format!("the root directory's parent is {p}, not itself"),
                Some("set it (Link entry)"),
            );
            self.defer(
                i,
                Deferred::SetParent {
                    ino: ROOT_INO,
                    parent: ROOT_INO,
                },
            );
        }
        let mut queue = VecDeque::from([ROOT_INO]);
        self.bfs(&mut queue)?;
        Ok(true)
    }

    /// Replace a lost root by an empty directory (a fresh slot, empty logs; what its old log
    /// held is leaked, and the clean flag cleared). Every valid slot no directory names is
    /// then a lost file, not a slot recovery would free: its names were in the old root.
    fn rebuild_root(&mut self, off: u64) -> Result<()> {
        let old: InodeSlot = self.ctx.read_pod(off)?;
        let root = InodeSlot::fresh(NewInode {
            kind: Kind::Dir,
            generation: old.generation.wrapping_add(1),
            mode: 0o755,
            uid: 0,
            gid: 0,
            parent: ROOT_INO,
            ctime_ns: now_ns(),
            rdev: 0,
        });
        self.ctx.write_bytes(off, bytemuck::bytes_of(&root), true)?;
        self.bad.remove(&ROOT_INO);
        self.infos.remove(&ROOT_INO);
        self.root_rebuilt = true;
        match self.load(ROOT_INO, Some(Kind::Dir))? {
            None => Ok(()),
            Some(_) => Err(Error::corrupt("rebuilt root directory", "inode 1")),
        }
    }

    fn bfs(&mut self, queue: &mut VecDeque<u64>) -> Result<()> {
        // Level by level (the same order as one queue): the children of a level are loaded
        // ahead in parallel, then visited in order.
        while !queue.is_empty() {
            let level: Vec<u64> = queue.drain(..).collect();
            self.speculate(&level);
            for d in level {
                self.visit_dir(d, queue)?;
            }
        }
        self.clear_spec();
        Ok(())
    }

    /// Drop the loads made ahead (those of a level not used by its visit are stale).
    fn clear_spec(&mut self) {
        for ino in std::mem::take(&mut self.spec_inos) {
            self.spec.remove(&ino);
        }
    }

    /// Load the children of directories `dirs` not loaded yet on the context's threads,
    /// read-only, into `spec` (`speculate_one`). On an image whose last commits may be torn,
    /// the workers run the torn-commit check too, from the same read budget; an inode they
    /// find torn, or damaged after the check, is checked again by the serial load (its data
    /// pages counted twice against the budget, which only a crafted image exhausts).
    fn speculate(&mut self, dirs: &[u64]) {
        // Loads of an earlier level that were not used are stale.
        self.clear_spec();
        let threads = self.ctx.threads;
        if threads < 2 {
            return;
        }
        let mut todo: Vec<u64> = Vec::new();
        for d in dirs {
            let named = self.infos[d].st.dir.values().map(|e| e.ino);
            todo.extend(named.filter(|&ino| {
                ino != ROOT_INO && !self.infos.contains_key(&ino) && !self.bad.contains_key(&ino)
            }));
        }
        // In number order, each once (a file with several names is named more than once).
        todo.sort_unstable();
        todo.dedup();
        // A few inodes are not worth the threads.
        if todo.len() < 64 {
            return;
        }
        self.spec_changes = self.ctx.changes();
        let cursor = AtomicUsize::new(0);
        let grain = (todo.len() / (threads * 8)).clamp(1, 64);
        let (ctx, owner, chunks, bounds) =
            (self.ctx, &self.owner[..], &self.chunks[..], self.bounds);
        let torn = self.torn.then_some(&self.torn_budget);
        let overlay = ctx.overlay.borrow().clone();
        let work = || {
            let reader = Ctx::new(ctx.media, false, None);
            reader.overlay.replace(overlay.clone());
            // The worker's buffer for file tails (one per worker, not one per inode).
            let mut page = vec![0u8; BLOCK as usize];
            let mut done = Vec::new();
            loop {
                let start = cursor.fetch_add(grain, Ordering::Relaxed);
                if start >= todo.len() {
                    break;
                }
                for &ino in &todo[start..(start + grain).min(todo.len())] {
                    if let Some(sp) =
                        speculate_one(&reader, owner, chunks, bounds, torn, ino, &mut page)
                    {
                        done.push((ino, sp));
                    }
                }
            }
            done
        };
        let results: Vec<Vec<(u64, Spec)>> = std::thread::scope(|s| {
            let hs: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
            let mut results = vec![work()];
            // A worker that panicked loaded nothing usable: the serial loads do its share.
            results.extend(hs.into_iter().filter_map(|h| h.join().ok()));
            results
        });
        self.spec.reserve(self.max_ino);
        for r in results {
            for (ino, sp) in r {
                self.spec.insert(ino, sp);
                self.spec_inos.push(ino);
            }
        }
    }

    /// Visit the entries of directory `d` in name order.
    fn visit_dir(&mut self, d: u64, queue: &mut VecDeque<u64>) -> Result<()> {
        let mut ents: Vec<(Vec<u8>, DirEnt)> = self.infos[&d]
            .st
            .dir
            .iter()
            .map(|(n, e)| (n.to_vec(), *e))
            .collect();
        ents.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ent) in ents {
            self.visit(d, name, ent, queue)?;
        }
        Ok(())
    }

    fn remove_name(&mut self, kind: ProblemKind, dir: u64, name: Vec<u8>, child: u64, why: String) {
        let shown = String::from_utf8_lossy(&name).into_owned();
        let i = self.problem(
            kind,
            Some(dir),
            None,
            None,
            format!("directory {dir}: name {shown:?} -> inode {child}: {why}"),
            Some("remove the name (DirRemove entry)"),
        );
        self.defer(i, Deferred::RemoveName { dir, name, child });
    }

    fn visit(
        &mut self,
        d: u64,
        name: Vec<u8>,
        ent: DirEnt,
        queue: &mut VecDeque<u64>,
    ) -> Result<()> {
        let child = ent.ino;
        // Names '.', '..', empty or with '/' or NUL never get here: the entry decoder refuses
        // them (the log is cut back there).
        if child == ROOT_INO {
            self.remove_name(
                ProblemKind::DirReachableTwice,
                d,
                name,
                child,
                "names the root directory (a cycle)".into(),
            );
            return Ok(());
        }
        match self.load(child, Some(ent.kind))? {
            None => {}
            Some(Bad::OutOfTable) => {
                self.remove_name(
                    ProblemKind::DanglingEntry,
                    d,
                    name,
                    child,
                    "the inode number is outside the inode table".into(),
                );
                return Ok(());
            }
            Some(Bad::Free) => {
                self.remove_name(
                    ProblemKind::DanglingEntry,
                    d,
                    name,
                    child,
                    "the inode is free".into(),
                );
                return Ok(());
            }
            Some(Bad::Invalid(m)) => {
                self.remove_name(
                    ProblemKind::DanglingEntry,
                    d,
                    name,
                    child,
                    format!("the inode is invalid ({m})"),
                );
                return Ok(());
            }
        }
        let kind = self.infos[&child].kind;
        if kind != ent.kind {
            self.lost_hint.insert(child);
            self.remove_name(
                ProblemKind::DirEntry,
                d,
                name,
                child,
                format!("the entry says {:?} but the inode is {kind:?}", ent.kind),
            );
            return Ok(());
        }
        if kind == Kind::Dir {
            self.holders.entry(child).or_default().push((d, name));
            if !self.reached.set(child) {
                queue.push_back(child);
            }
        } else {
            self.name_count[child as usize] += 1;
            self.reached.set(child);
        }
        Ok(())
    }

    /// Valid inodes no directory names: lost files (relinked) or slots recovery frees.
    fn orphans(&mut self) -> Result<()> {
        let mut lost = Vec::new();
        let mut stale = 0u64;
        for ino in ROOT_INO + 1..self.max_ino {
            if self.reached.get(ino) {
                if let Some(s) = &self.saved {
                    if s.free_inos.get(ino) {
                        let i = self.problem(
                            ProblemKind::InodeNumber,
                            Some(ino),
                            None,
                            None,
                            format!(
                                "inode {ino} is in use but the saved state lists its number free"
                            ),
                            Some("clear the clean flag"),
                        );
                        let _ = i;
                        self.ctx.before_change()?;
                    }
                }
                continue;
            }
            let in_use_slot = self.slot_kinds[ino as usize] != 0 || self.infos.contains_key(&ino);
            let saved_in_use = self.saved.as_ref().map(|s| !s.free_inos.get(ino));
            if !in_use_slot {
                if saved_in_use == Some(true) {
                    self.problem(ProblemKind::InodeNumber, Some(ino), None, None, format!("inode number {ino} is neither in use nor free in the saved state (leaked)"), Some("clear the clean flag"));
                    self.ctx.before_change()?;
                }
                continue;
            }
            let is_lost =
                saved_in_use == Some(true) || self.lost_hint.contains(&ino) || self.root_rebuilt;
            if !is_lost {
                stale += 1;
                continue;
            }
            match self.load(ino, None)? {
                None => lost.push(ino),
                Some(b) => {
                    if saved_in_use == Some(true) {
                        let why = match b {
                            Bad::Invalid(m) => m,
                            _ => "free".into(),
                        };
                        self.problem(ProblemKind::InodeNumber, Some(ino), None, None, format!("inode {ino} is in use per the saved state but no directory names it and its slot is invalid ({why})"), Some("clear the clean flag (recovery frees it)"));
                        self.ctx.before_change()?;
                    }
                }
            }
        }
        if stale > 0 {
            self.out.notes.push(format!("{stale} inode slots are not named by any directory (deleted while open or created but not linked before a crash); mount frees them"));
        }
        if lost.is_empty() {
            return Ok(());
        }
        let mut named = HashSet::new();
        for &l in &lost {
            if self.infos[&l].kind == Kind::Dir {
                named.extend(self.infos[&l].st.dir.values().map(|e| e.ino));
            }
        }
        let mut roots: Vec<u64> = lost
            .iter()
            .copied()
            .filter(|i| !named.contains(i))
            .collect();
        loop {
            for &root in &roots {
                if self.reached.set(root) {
                    continue;
                }
                let info = &self.infos[&root];
                let kind = info.kind;
                let what = match kind {
                    Kind::Dir => format!("directory with {} entries", info.st.dir.len()),
                    _ => format!("{kind:?}, {} bytes", info.st.attr.size).to_lowercase(),
                };
                let i = self.problem(ProblemKind::Orphan, Some(root), None, Some(info.slot_off), format!("inode {root} ({what}) is valid and in use but no directory names it (a lost file)"), Some("link it into /lost+found"));
                self.defer(i, Deferred::Relink { ino: root, kind });
                self.relinked.insert(root);
                if kind == Kind::Dir {
                    let mut q = VecDeque::from([root]);
                    self.bfs(&mut q)?;
                }
            }
            // Lost directories that only name each other (a cycle): take the lowest.
            match lost.iter().find(|&&i| !self.reached.get(i)) {
                Some(&i) => roots = vec![i],
                None => break,
            }
        }
        Ok(())
    }

    /// Directories reachable twice; directory parents; link counts.
    fn dirs_and_links(&mut self) {
        let mut holders: Vec<(u64, Names)> =
            std::mem::take(&mut self.holders).into_iter().collect();
        holders.sort_by_key(|h| h.0);
        for (dir, hs) in holders {
            let parent = self.infos[&dir].st.parent;
            let keep = hs.iter().position(|h| h.0 == parent).unwrap_or(0);
            for (i, (h, name)) in hs.iter().enumerate() {
                if i != keep {
                    let kept = hs[keep].0;
                    self.remove_name(ProblemKind::DirReachableTwice, *h, name.clone(), dir, format!("directory {dir} is also named in directory {kept} (a cycle or a hard link to a directory)"));
                }
            }
            let kept = hs[keep].0;
            if parent != kept && !self.relinked.contains(&dir) {
                let i = self.problem(
                    ProblemKind::DirParent,
                    Some(dir),
                    None,
                    None,
                    format!(
                        "directory {dir}: stored parent {parent}, but directory {kept} names it"
                    ),
                    Some("set the parent (Link entry)"),
                );
                self.defer(
                    i,
                    Deferred::SetParent {
                        ino: dir,
                        parent: kept,
                    },
                );
            }
        }
        for ino in self.infos.keys().collect::<Vec<u64>>() {
            let info = &self.infos[&ino];
            if info.kind == Kind::Dir || !self.reached.get(ino) {
                continue;
            }
            let names = self.name_count[ino as usize] + self.relinked.contains(&ino) as u32;
            let stored = info.st.attr.nlink;
            if stored != names {
                let i = self.problem(
                    ProblemKind::LinkCount,
                    Some(ino),
                    None,
                    None,
                    format!(
                        "inode {ino}: link count {stored}, but {names} name{} found",
                        if names == 1 { "" } else { "s" }
                    ),
                    Some("set the link count (Link entry)"),
                );
                self.defer(i, Deferred::SetNlink { ino, nlink: names });
            }
        }
    }

    /// The inodes loaded and reached from the root, ascending.
    fn reached_inos(&self) -> Vec<u64> {
        self.infos.keys().filter(|&i| self.reached.get(i)).collect()
    }

    /// Data and write-cache blocks: each in one place only.
    fn data_blocks(&mut self) -> Result<()> {
        // Walked in place, in inode order (the table is put back below).
        let infos = std::mem::take(&mut self.infos);
        for ino in infos.keys() {
            if !self.reached.get(ino) {
                continue;
            }
            let st = &infos[&ino].st;
            let data = own(O_DATA, ino);
            for (pg, b) in st.map.iter() {
                let o = self.owner[b as usize];
                if o != 0 {
                    let i = self.problem(
                        ProblemKind::BlockShared,
                        Some(ino),
                        Some(b),
                        Some(b * BLOCK),
                        format!(
                            "inode {ino} page {pg} maps block {b}, which is also {}",
                            describe(o)
                        ),
                        Some("give this page a private copy (or drop it when there is no space)"),
                    );
                    self.defer(
                        i,
                        Deferred::Remap {
                            ino,
                            pgoff: pg,
                            block: b,
                            zero_from: None,
                        },
                    );
                } else {
                    self.owner[b as usize] = data;
                }
            }
            // As recovery: a failure-atomic cache owns nothing; entries past the end of file
            // are dropped (their blocks free); entries the map holds were migrated.
            if st.cache().atomic || st.cache().map.is_empty() {
                continue;
            }
            let pages = st.attr.size.div_ceil(BLOCK);
            let mut cache: Vec<(u64, u64)> =
                st.cache().map.iter().filter(|&(p, _)| p < pages).collect();
            cache.sort_unstable();
            for (pg, b) in cache {
                let o = self.owner[b as usize];
                let map_same = o == data && st.map.get(&pg) == Some(&b);
                if o != 0 && !map_same {
                    self.problem(
                        ProblemKind::BlockShared,
                        Some(ino),
                        Some(b),
                        Some(b * BLOCK),
                        format!(
                            "inode {ino} write-cache page {pg} is block {b}, which is also {}",
                            describe(o)
                        ),
                        None,
                    );
                } else if o == 0 {
                    self.owner[b as usize] = own(O_CDATA, ino);
                }
            }
        }
        self.infos = infos;
        Ok(())
    }

    /// File sizes against extents, and zero bytes past the end of file.
    fn sizes(&mut self) -> Result<()> {
        let mut page = vec![0u8; BLOCK as usize];
        let max = MAX_FILE_PAGES * BLOCK;
        for ino in self.reached_inos() {
            let info = &self.infos[&ino];
            if info.kind == Kind::Dir {
                continue;
            }
            let size = info.st.attr.size;
            let first_beyond = size.div_ceil(BLOCK);
            let beyond: Vec<(u64, u64)> = info.st.map.range(first_beyond..).collect();
            // Pages beyond the size are blocks allocated past the end (fallocate KEEP_SIZE):
            // they must hold only zeros. The size the data supports: up to the last non-zero
            // byte of the last page.
            let mut new_size = size.min(max);
            for &(p, b) in beyond.iter().rev() {
                self.ctx.read(b * BLOCK, &mut page)?;
                if let Some(i) = page.iter().rposition(|&x| x != 0) {
                    new_size = new_size.max(p * BLOCK + i as u64 + 1);
                    break;
                }
            }
            if size > max || new_size != size {
                if size > max {
                    let last = info.st.map.keys().next_back();
                    new_size = last.map_or(0, |p| (p + 1) * BLOCK).min(max);
                }
                let msg = if size > max {
                    format!("inode {ino}: size {size} is beyond the largest file ({max})")
                } else {
                    format!("inode {ino}: size {size}, but data lies beyond it in the {} pages allocated past the end (first: page {}, block {})", beyond.len(), beyond[0].0, beyond[0].1)
                };
                let repair = if new_size == size {
                    "drop the pages beyond the size (they hold only zeros)".to_string()
                } else {
                    format!("set the size to {new_size} (SetAttr entry; the end of the data)")
                };
                let blk = beyond.first().map(|b| b.1);
                let i = self.problem(
                    ProblemKind::FileSize,
                    Some(ino),
                    blk,
                    blk.map(|b| b * BLOCK),
                    msg,
                    Some(&repair),
                );
                self.defer(
                    i,
                    Deferred::SetSize {
                        ino,
                        size: new_size,
                    },
                );
                continue;
            }
            let in_page = (size % BLOCK) as usize;
            if in_page != 0 {
                if let Some(&b) = info.st.map.get(&(size / BLOCK)) {
                    // Read ahead with the load, unless the state changed since (then read here).
                    let from = b * BLOCK + in_page as u64;
                    let first = match info.eof {
                        Some(e) if e.from == from => e.first,
                        _ => eof_nonzero(self.ctx, from, &mut page)?,
                    };
                    if let Some(i) = first {
                        let i = self.problem(ProblemKind::EofBytes, Some(ino), Some(b), Some(b * BLOCK + (in_page + i) as u64), format!("inode {ino}: non-zero bytes past the end of file (size {size}) in its last page (block {b})"), Some("zero them in a private copy of the page"));
                        self.defer(
                            i,
                            Deferred::Remap {
                                ino,
                                pgoff: size / BLOCK,
                                block: b,
                                zero_from: Some(in_page),
                            },
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// A clean image: blocks and inode numbers against the saved state.
    fn saved_state(&mut self) -> Result<()> {
        let Some(saved) = self.saved.take() else {
            return Ok(());
        };
        let sb = self.sb;
        const CLEAR: &str =
            "clear the clean flag (the next mount rebuilds the allocators from the logs)";
        // The saved state itself lies in blocks it lists free, and in no used block.
        for b in saved.start..saved.start + saved.blocks {
            if self.owner[b as usize] != 0 || !saved.free_blocks.get(b) {
                self.problem(
                    ProblemKind::SavedState,
                    None,
                    Some(b),
                    Some(b * BLOCK),
                    format!(
                        "the saved allocator state lies in block {b}, which is {}",
                        if self.owner[b as usize] != 0 {
                            describe(self.owner[b as usize])
                        } else {
                            "not listed free".into()
                        }
                    ),
                    Some(CLEAR),
                );
                self.ctx.before_change()?;
                break;
            }
        }
        let mut runs: [(ProblemKind, Vec<(u64, u64)>); 2] = [
            (ProblemKind::BlockFreeInUse, Vec::new()),
            (ProblemKind::BlockLeaked, Vec::new()),
        ];
        for b in sb.first_free_block..sb.replica_block {
            let used = self.owner[b as usize] != 0;
            let free = saved.free_blocks.get(b);
            let which = match (used, free) {
                (true, true) => 0,
                (false, false) => 1,
                _ => continue,
            };
            let v = &mut runs[which].1;
            match v.last_mut() {
                Some((s, l)) if *s + *l == b => *l += 1,
                _ => v.push((b, 1)),
            }
        }
        const SHOWN: usize = 16;
        for (kind, v) in runs {
            let total: u64 = v.iter().map(|r| r.1).sum();
            for (i, &(s, l)) in v.iter().enumerate() {
                if i == SHOWN {
                    let rest: u64 = v[SHOWN..].iter().map(|r| r.1).sum();
                    self.problem(
                        kind,
                        None,
                        Some(s),
                        Some(s * BLOCK),
                        format!(
                            "... and {} more runs ({rest} blocks; {total} in all)",
                            v.len() - SHOWN
                        ),
                        Some(CLEAR),
                    );
                    break;
                }
                let msg = match kind {
                    ProblemKind::BlockFreeInUse => format!("blocks {s}..{} ({l}) are in use ({}...) but the saved state lists them free", s + l - 1, describe(self.owner[s as usize])),
                    _ if l == 1 => format!("block {s} is neither in use nor free in the saved state (leaked)"),
                    _ => format!("blocks {s}..{} ({l}) are neither in use nor free in the saved state (leaked)", s + l - 1),
                };
                self.problem(kind, None, Some(s), Some(s * BLOCK), msg, Some(CLEAR));
            }
            if !v.is_empty() {
                self.ctx.before_change()?;
            }
        }
        Ok(())
    }
}
