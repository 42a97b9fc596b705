//! The write cache's settings and the writeback thread's control block (the cache itself is
//! `cache.rs`).
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How a mapping's dirty pages survive a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MapMode {
    /// MAP_SYNC semantics: persisted stores survive a crash (recovery migrates them).
    #[default]
    Sync,
    /// Failure-atomic: after a crash the file is exactly as of the last `sync` (recovery
    /// discards pages not yet synced); `sync` commits all dirty pages at once.
    Atomic,
}

/// Background writeback settings.
#[derive(Clone, Debug)]
pub struct WritebackConfig {
    /// How often the writeback thread looks (0 = no thread).
    pub interval: Duration,
    /// Migrate an inode's cache once its oldest page is this old.
    pub max_age: Duration,
    /// Migrate an inode's cache once it holds this many pages.
    pub max_dirty_pages: usize,
}

impl Default for WritebackConfig {
    fn default() -> Self {
        WritebackConfig {
            interval: Duration::from_millis(500),
            max_age: Duration::from_secs(5),
            max_dirty_pages: 4096,
        }
    }
}

/// The writeback thread's control block.
#[derive(Default)]
pub(crate) struct Writeback {
    pub(crate) ctl: Arc<Ctl>,
    pub(crate) thread: Mutex<Option<(std::thread::ThreadId, std::thread::JoinHandle<()>)>>,
    /// Inodes whose cache is not empty (loom's mutex under `--cfg loom`: attachment and the
    /// writeback pass race on it).
    pub(crate) dirty: crate::sync::Mutex<HashSet<u64>>,
}

/// Shared with the thread, which waits on it without holding the engine.
#[derive(Default)]
pub(crate) struct Ctl {
    pub(crate) stop: Mutex<bool>,
    pub(crate) cv: Condvar,
}
