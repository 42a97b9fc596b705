//! Deliberate protocol bugs, compiled only with the `inject-bugs` feature, so that the crash
//! harness can prove it catches each one. Without the feature `active` is a constant `false`
//! and every hook compiles away.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU8, Ordering};

/// The bugs that can be injected (one at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Bug {
    /// Log entries are stored but never flushed.
    NoLogFlush = 1,
    /// No fence between the entries and the tail store.
    NoFenceBeforeTail = 2,
    /// The tail is stored (and made durable) before its entries are flushed.
    TailBeforeEntry = 3,
    /// Old blocks of an overwrite are freed (and may be reused) before the commit.
    FreeBeforeCommit = 4,
    /// Multi-inode operations (rename) store their tails one by one, without the journal.
    SkipJournal = 5,
    /// A new inode's slot is written but not flushed before the parent's commit.
    NoInodeSlotFlush = 6,
    /// Recovery does not undo an active journal slot (it trusts the tails it finds).
    RecoveryTrustsTails = 7,
    /// A write-cache attachment is not fenced before write access is granted.
    CacheAttachNotPersisted = 8,
    /// Migration empties (frees) the cache before the commit that hands its pages to the file.
    MigrationFreesBeforeCommit = 9,
    /// Log compaction stores the new head and tail without the journal.
    CompactWithoutJournal = 10,
    /// Fast GC drops a page whose added names are removed in a later page it keeps.
    GcIgnoresReach = 11,
    /// Growth writes the new primary superblock before the new replica.
    GrowPrimaryFirst = 12,
    /// Recovery does not store redo writes again (it trusts their in-place stores).
    RedoNotReapplied = 13,
}

impl Bug {
    /// Every bug.
    pub const ALL: [Bug; 13] = [
        Bug::NoLogFlush,
        Bug::NoFenceBeforeTail,
        Bug::TailBeforeEntry,
        Bug::FreeBeforeCommit,
        Bug::SkipJournal,
        Bug::NoInodeSlotFlush,
        Bug::RecoveryTrustsTails,
        Bug::CacheAttachNotPersisted,
        Bug::MigrationFreesBeforeCommit,
        Bug::CompactWithoutJournal,
        Bug::GcIgnoresReach,
        Bug::GrowPrimaryFirst,
        Bug::RedoNotReapplied,
    ];

    /// Its name, as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::NoLogFlush => "no-log-flush",
            Bug::NoFenceBeforeTail => "no-fence-before-tail",
            Bug::TailBeforeEntry => "tail-before-entry",
            Bug::FreeBeforeCommit => "free-before-commit",
            Bug::SkipJournal => "skip-journal",
            Bug::NoInodeSlotFlush => "no-inode-slot-flush",
            Bug::RecoveryTrustsTails => "recovery-trusts-tails",
            Bug::CacheAttachNotPersisted => "cache-attach-not-persisted",
            Bug::MigrationFreesBeforeCommit => "migration-frees-before-commit",
            Bug::CompactWithoutJournal => "compact-without-journal",
            Bug::GcIgnoresReach => "gc-ignores-reach",
            Bug::GrowPrimaryFirst => "grow-primary-first",
            Bug::RedoNotReapplied => "redo-not-reapplied",
        }
    }
}

static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// Activate `bug` (or none). Has no effect without the `inject-bugs` feature.
pub fn set(bug: Option<Bug>) {
    ACTIVE.store(bug.map_or(0, |b| b as u8), Ordering::SeqCst);
}

/// Whether no bug is active (always, without the feature).
#[inline(always)]
pub fn none_active() -> bool {
    !cfg!(feature = "inject-bugs") || ACTIVE.load(Ordering::Relaxed) == 0
}

/// Whether `bug` is active.
#[inline(always)]
pub fn active(bug: Bug) -> bool {
    cfg!(feature = "inject-bugs") && ACTIVE.load(Ordering::Relaxed) == bug as u8
}
