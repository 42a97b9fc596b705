//! The inode-table map: word `i` (8 bytes, little-endian, at `itable_map_start * BLOCK + 8 i`)
//! names the first block of inode-table chunk `i`; the first 0 word ends the map.
//!
//! Since format 3 each word is sealed: its top 16 bits are a check of `(i, block)`, so a stray,
//! shifted or crafted word is refused instead of trusted. The check lives in the word because
//! the word is its own commit (a new chunk is published by one 8-byte store + flush + fence):
//! a checksum over a whole map block could not be updated atomically with it. Words written by
//! format 1 and 2 have no check (top bits 0); they are accepted while the superblock says an
//! older version, and the first read-write mount seals them before it writes version 3 (a
//! crash in between leaves an older-version map with some words sealed, which decodes the same).
#![forbid(unsafe_code)]

use super::checksum;

/// Bits of a word that hold the block number (blocks below 2^48: regions below 2^60 bytes).
pub const BLOCK_BITS: u32 = 48;
const BLOCK_MASK: u64 = (1 << BLOCK_BITS) - 1;
/// The first format version whose map words are sealed.
pub const SEALED_VERSION: u32 = 3;

/// One decoded map word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapWord {
    /// The end of the map (a zero word).
    End,
    /// Chunk `i` starts at this block (not yet checked against the image's geometry:
    /// `Superblock::chunk_in_range`).
    Chunk(u64),
}

fn check(index: u64, block: u64) -> u64 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&index.to_le_bytes());
    b[8..].copy_from_slice(&block.to_le_bytes());
    u64::from(checksum(&b) & 0xffff)
}

/// The sealed word for chunk `index` at `block` (`block` below 2^48, nonzero).
pub fn encode(index: u64, block: u64) -> u64 {
    debug_assert!(block != 0 && block <= BLOCK_MASK);
    (check(index, block) << BLOCK_BITS) | (block & BLOCK_MASK)
}

/// Decode word `index` of the map of an image of format `version`.
pub fn decode(version: u32, index: u64, word: u64) -> Result<MapWord, String> {
    if word == 0 {
        return Ok(MapWord::End);
    }
    let block = word & BLOCK_MASK;
    let tag = word >> BLOCK_BITS;
    if block != 0 && tag == check(index, block) {
        return Ok(MapWord::Chunk(block));
    }
    if version < SEALED_VERSION && tag == 0 {
        return Ok(MapWord::Chunk(block));
    }
    Err(format!(
        "inode-table map entry {index} ({word:#x}) fails its check"
    ))
}

/// Whether word `index` must be rewritten sealed (an older format's unsealed word).
pub fn needs_seal(index: u64, word: u64) -> bool {
    let block = word & BLOCK_MASK;
    word != 0 && word >> BLOCK_BITS == 0 && encode(index, block) != word
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_words_round_trip_and_bind_their_index() {
        for (i, b) in [(0u64, 36u64), (1, 1060), (7, (1 << 48) - 1)] {
            let w = encode(i, b);
            assert_ne!(w, 0);
            assert_eq!(decode(SEALED_VERSION, i, w), Ok(MapWord::Chunk(b)));
            // The same word at another index, or with another block, fails.
            assert!(decode(SEALED_VERSION, i + 1, w).is_err());
            assert!(decode(SEALED_VERSION, i, w ^ 1).is_err());
            assert!(!needs_seal(i, w));
        }
        assert_eq!(decode(SEALED_VERSION, 3, 0), Ok(MapWord::End));
        assert!(decode(SEALED_VERSION, 0, u64::MAX).is_err());
    }

    #[test]
    fn unsealed_words_only_below_format_3() {
        assert_eq!(decode(2, 0, 36), Ok(MapWord::Chunk(36)));
        assert!(needs_seal(0, 36));
        assert!(decode(3, 0, 36).is_err());
        // A version-2 map half sealed by an interrupted upgrade decodes the same.
        assert_eq!(decode(2, 1, encode(1, 1060)), Ok(MapWord::Chunk(1060)));
        // An older image's word with high bits set is damage, not a chunk.
        assert!(decode(2, 0, (5 << 48) | 36).is_err());
    }
}
