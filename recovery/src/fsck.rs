//! fsck: check, and with [`FsckOptions::repair`] fix, a novafs image.
//!
//! [`check`] opens the image with the exclusive lock (so it never runs on a mounted image) and
//! runs a full check of everything the image holds:
//!
//! - both superblocks (checksum, geometry, that they agree) and the image length;
//! - the mount-state block (clean word, header checksum) and, after a clean unmount, the saved
//!   allocator state (range, checksum, well-formed extents and inode ranges);
//! - the journal: an active slot is an interrupted multi-inode operation: not an error but
//!   "needs recovery" ([`FsckReport::recovery`], as e2fsck treats a journal needing replay);
//!   the rest of the check sees the image as recovery leaves it (the undo applied in an
//!   overlay, or on the media with `repair`); a damaged slot is reported;
//! - the inode-table map and its chunks;
//! - every reachable inode: its slot (kind, checksum, reserved bytes) and its log (head, tail
//!   inside a page's entry area, page trailers, no cycles, entry checksums, strictly increasing
//!   sequence numbers, every entry decodable (names `.`, `..`, empty or holding `/` or NUL are
//!   refused by the decoder) and replayable with the engine's own `InodeState::apply`), and a
//!   file's write-cache log;
//! - the directory tree from the root: names to free, invalid or out-of-table inodes, kinds
//!   that differ from the inode's, directories reachable twice (cycles or hard
//!   links to directories), a directory's stored parent against the directory naming it;
//! - link counts of non-directories against the names found;
//! - block ownership: no block in two places (two files, a file and a log, a log and an
//!   inode-table chunk, ...); after a clean unmount also none both in use and in the saved free
//!   list, and none leaked (neither in use nor free); the same for inode numbers;
//! - file sizes against extents (non-zero data in a page beyond the size: pages allocated past
//!   the end with fallocate KEEP_SIZE hold only zeros; a size past the largest file) and bytes
//!   past the end of file in its last page (they must be zero);
//! - extended attributes: every entry well formed (name 1..=255 bytes in a stored namespace,
//!   value at most 64 KiB, its pieces in order and followed by their set entry), ACL values
//!   well formed;
//! - valid inode slots that no directory names: after a clean unmount, or when fsck itself
//!   removed or lost their names, these are lost files (orphans); after a crash they are
//!   normally inodes deleted while open or created but never linked, which recovery frees, and
//!   they are only counted in the notes.
//!
//! # Fast path and `force`
//!
//! The full check always runs: it reads only metadata plus the last page of each file, and
//! takes well under a second for 100,000 files, so a cleanly unmounted image gets the same check
//! as any other. [`FsckOptions::force`] (`-f`) is accepted for compatibility with other fsck
//! tools and changes nothing.
//!
//! # Repairs
//!
//! With `repair`, every fix is an engine transaction (`novafs_engine::txn::Txn`: in-place
//! words and records through `Txn::in_place`, log appends, copies and new slots through
//! `Txn::repair`; DESIGN.md §5.0), in an order that leaves an image recovery can mount if fsck
//! itself is interrupted, and never makes things worse:
//!
//! - before the first change to a cleanly unmounted image, its clean flag is cleared (a store
//!   of 0 to the mount-state commit word), so that the next mount rebuilds the allocators from
//!   the logs instead of trusting a saved state that the repairs make stale;
//! - superblocks: the bad copy is rewritten from the good one;
//! - a damaged record (inode slot, log entry, page trailer) with a single flipped bit is
//!   restored exactly (one atomic 8-byte store); an inode slot whose checksum alone is wrong but
//!   whose fields are sane and agree with its directory entry gets its checksum recomputed;
//! - a damaged log (bad entry, bad tail, broken or cyclic chain, a page shared with another
//!   owner): when the tail page is known and the entries prove it, the broken link is rewritten;
//!   otherwise the log is cut back to the last valid entry (the tail word, which is the commit
//!   word, is stored, flushed and fenced);
//! - an active journal slot is undone as recovery does (not counted as a fix: exit 0 when
//!   nothing else was wrong); a damaged one is cleared;
//! - names to free, invalid or out-of-table inodes, of the wrong kind, and extra names of a
//!   directory reachable twice are removed (DirRemove entries appended with the engine's
//!   `Txn::repair`, the engine's commit path, allocating from blocks fsck found free);
//! - link counts and directory parents are corrected with Link entries, sizes with SetAttr
//!   entries, a block owned twice is given to its second owner as a private copy (or that
//!   mapping is dropped when there is no space), non-zero bytes past the end of file are zeroed
//!   in a private copy;
//! - lost files and directories are linked into `/lost+found` (created if missing) as
//!   `#<ino>`; a lost root (free or invalid slot) is rebuilt as an empty directory first, and
//!   every valid slot no directory names is then lost (relinked), even after a crash;
//! - an invalid symlink (length outside 1..=4096, target not stored or holding NUL) loses its
//!   name and is not relinked;
//! - stale saved state, leaked blocks and inode numbers: the clean flag is cleared.
//!
//! After the repairs the image is checked again (up to [`FsckOptions::max_passes`] rounds);
//! whatever that final check still finds is reported as left.
//!
//! # Exit codes (as e2fsck)
//!
//! [`FsckReport::exit_code`]: 0 clean, 1 errors corrected, 4 errors left uncorrected; and
//! [`EXIT_OPERATIONAL`] (8) when [`check`] returns an error (the image cannot be opened, is in
//! use, is not novafs, ...).

mod repair;
mod scan;
mod walk;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use novafs_engine::media::MapOptions;
use novafs_engine::{Media, Result};

/// Exit code: no errors.
pub const EXIT_CLEAN: i32 = 0;
/// Exit code: errors were found and all corrected.
pub const EXIT_CORRECTED: i32 = 1;
/// Exit code: errors were left uncorrected.
pub const EXIT_UNCORRECTED: i32 = 4;
/// Exit code: operational error (cannot open the image, image in use, not novafs, ...).
pub const EXIT_OPERATIONAL: i32 = 8;

/// A progress callback: called with the phase, the work done and the work expected.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Progress of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// What is being checked (`"inodes"`, `"blocks"`, `"repair"`).
    pub phase: &'static str,
    /// Units done.
    pub done: u64,
    /// Units expected (an estimate for inodes: the slots in use).
    pub total: u64,
}

/// How to check.
#[derive(Clone)]
pub struct FsckOptions {
    /// Fix what can be fixed (`-y`); otherwise nothing is written (`-n`).
    pub repair: bool,
    /// Full check even of a cleanly unmounted image (`-f`). The full check always runs (see
    /// the module documentation); kept for compatibility.
    pub force: bool,
    /// Called as the check advances (for a progress bar).
    pub progress: Option<ProgressFn>,
    /// Check-and-repair rounds at most (repairs can uncover more problems; default 6).
    pub max_passes: u32,
    /// Threads that load inodes ahead, level by level of the tree (0, the default: one per
    /// core; 1: none). The findings and repairs are the same with any number.
    pub threads: usize,
}

impl Default for FsckOptions {
    fn default() -> Self {
        FsckOptions {
            repair: false,
            force: false,
            progress: None,
            max_passes: 6,
            threads: 0,
        }
    }
}

impl std::fmt::Debug for FsckOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsckOptions")
            .field("repair", &self.repair)
            .field("force", &self.force)
            .field("progress", &self.progress.is_some())
            .field("max_passes", &self.max_passes)
            .field("threads", &self.threads)
            .finish()
    }
}

/// What kind of problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProblemKind {
    /// The primary superblock is damaged (the replica is good).
    SuperblockPrimary,
    /// The superblock replica is damaged or differs from the primary.
    SuperblockReplica,
    /// Both superblocks are damaged.
    Superblock,
    /// The image file is shorter than its superblock says.
    ImageTruncated,
    /// The mount-state block is damaged.
    MountState,
    /// The saved allocator state of a clean image is damaged or disagrees with the image.
    SavedState,
    /// A damaged journal slot.
    JournalCorrupt,
    /// A damaged inode-table map entry.
    ItableMap,
    /// A damaged inode slot.
    InodeSlot,
    /// A log head outside the allocatable area.
    LogHead,
    /// A log tail that is not an entry boundary inside a page's entry area.
    LogTail,
    /// A damaged log-page trailer (broken chain).
    LogTrailer,
    /// A log chain that loops.
    LogCycle,
    /// A damaged log entry (header, checksum, length, sequence number).
    LogEntry,
    /// A valid entry that cannot be replayed (e.g. a removal of a name the directory lacks).
    LogReplay,
    /// A block in two places.
    BlockShared,
    /// A block in use but listed free in the saved state.
    BlockFreeInUse,
    /// A block neither in use nor free (clean image).
    BlockLeaked,
    /// A directory entry to a free, invalid or out-of-table inode.
    DanglingEntry,
    /// A directory entry whose kind differs from the inode's, or a bad name.
    DirEntry,
    /// A directory reachable twice (a cycle, or a hard link to a directory).
    DirReachableTwice,
    /// A directory's stored parent differs from the directory naming it.
    DirParent,
    /// A link count that differs from the names found.
    LinkCount,
    /// A file size that does not match its extents.
    FileSize,
    /// Non-zero bytes past the end of file in its last page.
    EofBytes,
    /// A valid inode that no directory names (a lost file).
    Orphan,
    /// An extended attribute that is not well formed (an ACL that does not parse, value
    /// pieces without their set entry).
    Xattr,
    /// An inode number in use but listed free, or neither (clean image).
    InodeNumber,
}

impl ProblemKind {
    /// The kind's name as printed and in JSON (`snake_case`).
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::SuperblockPrimary => "superblock_primary",
            ProblemKind::SuperblockReplica => "superblock_replica",
            ProblemKind::Superblock => "superblock",
            ProblemKind::ImageTruncated => "image_truncated",
            ProblemKind::MountState => "mount_state",
            ProblemKind::SavedState => "saved_state",
            ProblemKind::JournalCorrupt => "journal_corrupt",
            ProblemKind::ItableMap => "itable_map",
            ProblemKind::InodeSlot => "inode_slot",
            ProblemKind::LogHead => "log_head",
            ProblemKind::LogTail => "log_tail",
            ProblemKind::LogTrailer => "log_trailer",
            ProblemKind::LogCycle => "log_cycle",
            ProblemKind::LogEntry => "log_entry",
            ProblemKind::LogReplay => "log_replay",
            ProblemKind::BlockShared => "block_shared",
            ProblemKind::BlockFreeInUse => "block_free_in_use",
            ProblemKind::BlockLeaked => "block_leaked",
            ProblemKind::DanglingEntry => "dangling_entry",
            ProblemKind::DirEntry => "dir_entry",
            ProblemKind::DirReachableTwice => "dir_reachable_twice",
            ProblemKind::DirParent => "dir_parent",
            ProblemKind::LinkCount => "link_count",
            ProblemKind::FileSize => "file_size",
            ProblemKind::EofBytes => "eof_bytes",
            ProblemKind::Orphan => "orphan",
            ProblemKind::Xattr => "xattr",
            ProblemKind::InodeNumber => "inode_number",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// The inode concerned, if any.
    pub inode: Option<u64>,
    /// The block concerned, if any.
    pub block: Option<u64>,
    /// The region byte offset concerned, if any.
    pub offset: Option<u64>,
    /// A description.
    pub message: String,
    /// The repair (done with `repair`, proposed without), or `None` when it cannot be fixed.
    pub repair: Option<String>,
    /// Whether it was fixed.
    pub fixed: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        let mut at = Vec::new();
        if let Some(i) = self.inode {
            at.push(format!("inode {i}"));
        }
        if let Some(b) = self.block {
            at.push(format!("block {b}"));
        }
        if let Some(o) = self.offset {
            at.push(format!("offset {o}"));
        }
        if !at.is_empty() {
            write!(f, " ({})", at.join(", "))?;
        }
        Ok(())
    }
}

/// The outcome of a check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// Problems found (in every round).
    pub errors_found: u64,
    /// Problems fixed.
    pub errors_fixed: u64,
    /// Problems the final check still finds.
    pub errors_left: u64,
    /// Inodes checked (slots read and logs replayed, first round).
    pub inodes_checked: u64,
    /// Blocks checked: every block of the image is accounted as metadata, in use or free.
    pub blocks_checked: u64,
    /// Blocks found in use (metadata, inode tables, logs, data).
    pub blocks_used: u64,
    /// Log entries checked (first round).
    pub entries_checked: u64,
    /// Image size in bytes.
    pub image_bytes: u64,
    /// The last session unmounted cleanly (before any repair).
    pub was_clean: bool,
    /// Check-and-repair rounds run.
    pub passes: u32,
    /// Whether anything was written to the image.
    pub modified: bool,
    /// The problems.
    pub problems: Vec<Problem>,
    /// Observations that are not errors (unclean unmount, slots recovery will free, ...).
    pub notes: Vec<String>,
    /// The image needs recovery (an interrupted multi-inode operation in the journal), which
    /// is not an error, as e2fsck treats a journal needing replay: what recovery will do
    /// (without `repair`: the check sees the image as recovery will leave it, nothing is
    /// written) or what was done (with `repair`, which applies the undo as mount would).
    pub recovery: Vec<String>,
    /// Inodes of the first round loaded ahead on worker threads and used as loaded
    /// ([`FsckOptions::threads`]; the others were loaded by the check's own thread).
    pub inodes_loaded_ahead: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl FsckReport {
    /// The e2fsck-style exit code: 0 clean, 1 all errors corrected, 4 errors left.
    pub fn exit_code(&self) -> i32 {
        if self.errors_left > 0 {
            EXIT_UNCORRECTED
        } else if self.errors_found > 0 {
            EXIT_CORRECTED
        } else {
            EXIT_CLEAN
        }
    }

    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.errors_found == 0
    }
}

/// The exit code for the result of [`check`]: the report's, or [`EXIT_OPERATIONAL`].
pub fn exit_code(result: &Result<FsckReport>) -> i32 {
    match result {
        Ok(r) => r.exit_code(),
        Err(_) => EXIT_OPERATIONAL,
    }
}

/// Check (and with `opts.repair`, fix) the image at `path`. The image is opened with the
/// exclusive lock: a mounted image gives [`novafs_engine::Error::ImageInUse`].
pub fn check(path: &Path, opts: &FsckOptions) -> Result<FsckReport> {
    let media = Media::open(path, &MapOptions::default())?;
    check_media(Arc::new(media), opts)
}

/// [`check`] on an already opened region (any backend, the traced one included).
pub fn check_media(media: Arc<Media>, opts: &FsckOptions) -> Result<FsckReport> {
    let start = Instant::now();
    let mut report = FsckReport {
        image_bytes: media.len(),
        ..FsckReport::default()
    };
    let mut problems: Vec<Problem> = Vec::new();
    let mut keys: HashSet<Key> = HashSet::new();
    let passes = if opts.repair {
        opts.max_passes.max(1)
    } else {
        1
    };
    let mut last_found: Vec<Problem> = Vec::new();
    let mut verified = false;
    for pass in 0..passes {
        let ctx =
            scan::Ctx::new(&media, opts.repair, opts.progress.clone()).with_threads(opts.threads);
        let mut result = scan::scan(&ctx)?;
        report.passes = pass + 1;
        if pass == 0 {
            report.inodes_checked = result.inodes_checked;
            report.blocks_checked = result.blocks_checked;
            report.blocks_used = result.blocks_used;
            report.entries_checked = result.entries_checked;
            report.inodes_loaded_ahead = result.loaded_ahead;
            report.was_clean = result.was_clean;
            report.notes = result.notes.clone();
            report.recovery = result.recovery.clone();
        }
        merge(&mut problems, &mut keys, &result.problems);
        last_found = std::mem::take(&mut result.problems);
        report.modified |= ctx.modified();
        if last_found.is_empty() || !opts.repair || result.fatal {
            verified = true;
            break;
        }
        repair::apply_deferred(&ctx, &mut result)?;
        report.modified |= ctx.modified();
        if !ctx.modified() {
            // Nothing could be changed: what this round found is what is left.
            verified = true;
            break;
        }
    }
    if !verified {
        // Final check, read-only, after the last round of repairs.
        let ctx = scan::Ctx::new(&media, false, None).with_threads(opts.threads);
        let verify = scan::scan(&ctx)?;
        merge(&mut problems, &mut keys, &verify.problems);
        last_found = verify.problems;
        report.passes += 1;
    }
    let left: HashSet<Key> = last_found.iter().map(key).collect();
    // A problem is fixed when repairs ran and the final check no longer finds it.
    for p in &mut problems {
        p.fixed = opts.repair && !left.contains(&key(p));
    }
    report.errors_found = problems.len() as u64;
    report.errors_fixed = problems.iter().filter(|p| p.fixed).count() as u64;
    report.errors_left = report.errors_found - report.errors_fixed;
    report.problems = problems;
    report.elapsed = start.elapsed();
    Ok(report)
}

type Key = (ProblemKind, Option<u64>, Option<u64>, Option<u64>);

fn key(p: &Problem) -> Key {
    (p.kind, p.inode, p.block, p.offset)
}

fn merge(all: &mut Vec<Problem>, keys: &mut HashSet<Key>, found: &[Problem]) {
    for p in found {
        if keys.insert(key(p)) {
            all.push(p.clone());
        }
    }
}
