//! Log garbage collection's settings and counters (the collector itself is `gc.rs`).
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// A log is compacted inline once it holds this many times the entries its state needs: a
/// compaction costs O(needed), so it runs at most once per `(INLINE_RATIO - 1) * needed` new
/// entries.
pub const INLINE_RATIO: u64 = 8;
/// The background pass compacts logs that hold this many times what they need.
pub const BACKGROUND_RATIO: u64 = 4;

/// GC settings.
#[derive(Clone, Debug)]
pub struct GcConfig {
    /// Drop dead pages at the head of a log after every commit.
    pub fast: bool,
    /// Compact a log inline once it holds at least this many entries and at most an eighth
    /// of them are needed (0 = never inline).
    pub inline_min_entries: u64,
    /// Hand a log to the background pass once it holds at least this many entries and at
    /// most a quarter of them are needed (0 = never in the background).
    pub background_min_entries: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            fast: true,
            inline_min_entries: 1024,
            background_min_entries: 128,
        }
    }
}

/// GC counters (since mount).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Fast GC runs (head moves).
    pub fast_runs: u64,
    /// Log pages freed by fast GC.
    pub fast_pages_freed: u64,
    /// Compactions.
    pub thorough_runs: u64,
    /// Log pages freed by compactions (old chains).
    pub thorough_pages_freed: u64,
    /// Log pages written by compactions (new chains).
    pub thorough_pages_written: u64,
    /// Longest compaction, in nanoseconds (the time the inode's lock was held for it).
    pub max_pause_ns: u64,
    /// All compactions, in nanoseconds.
    pub total_pause_ns: u64,
}

/// GC state of an engine.
pub(crate) struct Gc {
    pub(crate) fast: AtomicBool,
    pub(crate) inline_min: AtomicU64,
    pub(crate) background_min: AtomicU64,
    /// Inodes the background pass should look at.
    pub(crate) candidates: Mutex<HashSet<u64>>,
    pub(crate) fast_runs: AtomicU64,
    pub(crate) fast_pages: AtomicU64,
    pub(crate) runs: AtomicU64,
    pub(crate) pages_freed: AtomicU64,
    pub(crate) pages_written: AtomicU64,
    pub(crate) max_pause: AtomicU64,
    pub(crate) total_pause: AtomicU64,
}

impl Default for Gc {
    fn default() -> Self {
        Gc::new(&GcConfig::default())
    }
}

impl Gc {
    pub(crate) fn new(cfg: &GcConfig) -> Gc {
        Gc {
            fast: AtomicBool::new(cfg.fast),
            inline_min: AtomicU64::new(cfg.inline_min_entries),
            background_min: AtomicU64::new(cfg.background_min_entries),
            candidates: Mutex::default(),
            fast_runs: AtomicU64::new(0),
            fast_pages: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            pages_freed: AtomicU64::new(0),
            pages_written: AtomicU64::new(0),
            max_pause: AtomicU64::new(0),
            total_pause: AtomicU64::new(0),
        }
    }

    pub(crate) fn set(&self, cfg: &GcConfig) {
        self.fast.store(cfg.fast, Ordering::Relaxed);
        self.inline_min
            .store(cfg.inline_min_entries, Ordering::Relaxed);
        self.background_min
            .store(cfg.background_min_entries, Ordering::Relaxed);
    }
}
