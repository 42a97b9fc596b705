//! Synchronisation primitives swapped for loom's under `--cfg loom`, so that the loom tests
//! (`engine/tests/loom_*.rs`) can model-check every interleaving of the code that uses them:
//! the allocators (`Mutex`, `AtomicU64`), the per-inode `RwLock<InodeState>` that publishes a
//! committed log tail to readers, and the traced media backend's lock (every store, flush and
//! fence to a traced region is then a loom scheduling point, so loom interleaves other threads
//! between the individual persistence steps of a commit). Other engine locks stay parking_lot:
//! they are never held across one of these points while another thread could wait for them.
#![forbid(unsafe_code)]

#[cfg(not(loom))]
pub use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(not(loom))]
pub use std::sync::atomic::AtomicU64;

#[cfg(loom)]
pub use loom::sync::atomic::AtomicU64;
#[cfg(loom)]
pub use loom::sync::{MutexGuard, RwLockReadGuard, RwLockWriteGuard};

/// loom's mutex with parking_lot's interface.
#[cfg(loom)]
#[derive(Debug)]
pub struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    /// A new mutex.
    pub fn new(v: T) -> Mutex<T> {
        Mutex(loom::sync::Mutex::new(v))
    }

    /// Lock it (loom mutexes are never poisoned in a passing model).
    pub fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().expect("poisoned")
    }

    /// The value.
    pub fn into_inner(self) -> T {
        self.0.into_inner().expect("poisoned")
    }
}

#[cfg(loom)]
impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

/// loom's reader-writer lock with parking_lot's interface.
#[cfg(loom)]
#[derive(Debug)]
pub struct RwLock<T>(loom::sync::RwLock<T>);

#[cfg(loom)]
impl<T> RwLock<T> {
    /// A new lock.
    pub fn new(v: T) -> RwLock<T> {
        RwLock(loom::sync::RwLock::new(v))
    }

    /// Shared access.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0.read().expect("poisoned")
    }

    /// Exclusive access.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.0.write().expect("poisoned")
    }

    /// The value, through exclusive ownership of the lock.
    pub fn get_mut(&mut self) -> &mut T {
        self.0.get_mut().expect("poisoned")
    }
}

/// A value alone on its cache lines (128 bytes: two lines, as adjacent-line prefetchers pair
/// them), so that threads working on neighbouring values do not bounce a shared line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// This thread's home index: threads are numbered in the order they first ask (0, 1, 2, ...),
/// so that up to as many threads as there are shards of a per-thread structure (the block
/// allocator's shards, the operation gate) each get their own shard. Under loom every model
/// thread runs on one OS thread and shares one index.
pub fn home() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static HOME: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    HOME.with(|h| *h)
}

/// Allocator shards, operation-gate locks and default recovery threads: one per core. Asked
/// once per process (`available_parallelism` reads the cgroup's CPU quota from /sys: several
/// system calls that were 8% of a mount of a small image).
pub fn cores() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}
