//! Synchronisation primitives of the allocators, swapped for loom's under `--cfg loom` so that
//! `engine/tests/loom_alloc.rs` can model-check every interleaving of concurrent allocations.

#[cfg(not(loom))]
pub use parking_lot::Mutex;
#[cfg(not(loom))]
pub use std::sync::atomic::AtomicU64;

#[cfg(loom)]
pub use loom::sync::atomic::AtomicU64;

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
}
