//! A hasher for `u64` keys that are already well spread (inode numbers, file page numbers):
//! one multiply instead of SipHash. Not for keys an attacker chooses to collide (the engine's
//! keys come from its own allocators and from page offsets, both bounded).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// Hashes a `u64` with one multiply (Fibonacci hashing); other inputs byte by byte.
#[derive(Default, Clone, Copy)]
pub struct U64Hasher(u64);

impl std::hash::Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by names (a directory's index): foldhash, seeded per process, about a tenth of
/// SipHash's instructions on short names, and still keyed, so that names chosen to collide
/// need the process's seed.
pub type NameMap<V> = HashMap<Name, V, foldhash::fast::RandomState>;

/// A directory entry's name as a key: up to 16 bytes inline (most names), longer ones on the
/// heap. Hashes and compares as its bytes, so lookups take `&[u8]`.
pub type Name = smallvec::SmallVec<[u8; 16]>;

/// A map keyed by inode or page numbers.
pub type U64Map<V> = HashMap<u64, V, BuildHasherDefault<U64Hasher>>;
