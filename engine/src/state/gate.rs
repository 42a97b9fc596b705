//! The operation gate: every mutating operation holds it shared; unmount and crash hold it
//! exclusively, to wait for the operations in flight and keep new ones out.
//!
//! One reader-writer lock per home index ([`crate::sync::home`]), each on its own cache lines:
//! a shared hold touches only the calling thread's lock, so threads on different CPUs do not
//! bounce one lock word per operation (two atomic read-modify-writes on a line every core
//! writes). The exclusive side takes every lock, in index order.
#![forbid(unsafe_code)]

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::sync::Padded;

/// See the module documentation.
#[derive(Debug)]
pub struct Gate {
    locks: Box<[Padded<RwLock<()>>]>,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new(crate::sync::cores())
    }
}

impl Gate {
    /// A gate of `n` locks (at least one).
    pub fn new(n: usize) -> Gate {
        Gate {
            locks: (0..n.max(1)).map(|_| Padded(RwLock::new(()))).collect(),
        }
    }

    /// Hold it shared (recursively: a thread that holds it may take it again, whatever
    /// waits for the exclusive side).
    pub fn read(&self) -> RwLockReadGuard<'_, ()> {
        self.locks[crate::sync::home() % self.locks.len()].read_recursive()
    }

    /// Hold it exclusively: returns once no operation holds it.
    pub fn write(&self) -> Vec<RwLockWriteGuard<'_, ()>> {
        self.locks.iter().map(|l| l.write()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_waits_for_every_shared_holder() {
        let gate = Gate::new(2);
        let held = std::sync::atomic::AtomicBool::new(true);
        std::thread::scope(|s| {
            let r = gate.read();
            let waiter = s.spawn(|| {
                let _w = gate.write();
                assert!(!held.load(std::sync::atomic::Ordering::SeqCst));
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            held.store(false, std::sync::atomic::Ordering::SeqCst);
            drop(r);
            waiter.join().expect("writer");
        });
        // Shared holds from two threads (two home indexes) do not exclude each other.
        let r = gate.read();
        std::thread::scope(|s| {
            s.spawn(|| drop(gate.read())).join().expect("reader");
        });
        drop(r);
    }
}
