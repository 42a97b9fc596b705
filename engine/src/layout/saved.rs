//! The saved allocator state a clean unmount leaves (in free blocks it itself lists as free;
//! located by the mount-state block): `n u64, n x (start u64, len u64)` free block extents
//! (sorted, disjoint, inside the allocatable area), then `m u64, m x (start u64, len u64)` free
//! inode ranges (above the root, inside the inode table). Untrusted: [`decode`] is the one
//! parser mount and fsck share; every count and sum is checked.

use super::state::MountState;
use super::superblock::Superblock;
use super::{checksum, BLOCK, ROOT_INO};

/// The decoded lists: free block extents and free inode ranges, each `(start, len)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    /// Free block extents, sorted and disjoint.
    pub free_blocks: Vec<(u64, u64)>,
    /// Free inode-number ranges.
    pub free_inos: Vec<(u64, u64)>,
}

/// Where the state lies: `(region offset, length in bytes)`, or why that is out of range.
pub fn location(ms: &MountState, sb: &Superblock) -> Result<(u64, usize), String> {
    let end = ms.saved_block.saturating_add(ms.saved_blocks);
    if ms.saved_block < sb.first_free_block
        || end > sb.replica_block
        || ms.saved_len > ms.saved_blocks.saturating_mul(BLOCK)
        || ms.saved_len < 16
    {
        return Err(format!(
            "location blocks {}+{} ({} bytes) is out of range",
            ms.saved_block, ms.saved_blocks, ms.saved_len
        ));
    }
    Ok((ms.saved_block * BLOCK, ms.saved_len as usize))
}

/// Decode the state read from [`location`] (`max_ino`: inode numbers the table holds), or say
/// what is wrong with it.
pub fn decode(ms: &MountState, buf: &[u8], sb: &Superblock, max_ino: u64) -> Result<Saved, String> {
    if checksum(buf) != ms.saved_csum {
        return Err("checksum".into());
    }
    let mut pos = 0usize;
    let mut rd = || -> Option<u64> {
        let b = buf.get(pos..pos + 8)?;
        pos += 8;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    let mut saved = Saved::default();
    let n = rd().ok_or("truncated")?;
    let mut prev_end = sb.first_free_block;
    for i in 0..n {
        let (Some(s), Some(l)) = (rd(), rd()) else {
            return Err("truncated extent list".into());
        };
        if s < prev_end || l == 0 || s.checked_add(l).is_none_or(|e| e > sb.replica_block) {
            return Err(format!(
                "free extent {i} ({s}+{l}) is unsorted, overlapping or out of range"
            ));
        }
        prev_end = s + l;
        saved.free_blocks.push((s, l));
    }
    let m = rd().ok_or("truncated")?;
    for i in 0..m {
        let (Some(s), Some(l)) = (rd(), rd()) else {
            return Err("truncated inode list".into());
        };
        if s <= ROOT_INO || s.checked_add(l).is_none_or(|e| e > max_ino) {
            return Err(format!("free inode range {i} ({s}+{l}) is out of range"));
        }
        saved.free_inos.push((s, l));
    }
    if pos != buf.len() {
        return Err("trailing bytes".into());
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn state_for(buf: &[u8]) -> MountState {
        let mut ms: MountState = bytemuck::Zeroable::zeroed();
        ms.saved_csum = checksum(buf);
        ms
    }

    #[test]
    fn decodes_valid_lists_and_refuses_crafted_ones() {
        let sb = Superblock::new(1024, [0; 16], 0);
        let lo = sb.first_free_block;
        let good = encode(&[2, lo + 40, 10, lo + 60, 5, 1, 2, 100]);
        let d = decode(&state_for(&good), &good, &sb, 1024).unwrap();
        assert_eq!(d.free_blocks, vec![(lo + 40, 10), (lo + 60, 5)]);
        assert_eq!(d.free_inos, vec![(2, 100)]);
        let bad: [&[u64]; 7] = [
            &[1, lo, u64::MAX, 0],            // extent end overflows
            &[2, lo + 40, 10, lo + 45, 5, 0], // overlapping extents
            &[1, 0, 1, 0],                    // inside the metadata area
            &[0, 1, 2, u64::MAX],             // inode range overflows
            &[0, 1, 2, 2000],                 // beyond the inode table
            &[u64::MAX],                      // a count larger than the buffer
            &[0, 0, 7],                       // trailing bytes
        ];
        for words in bad {
            let buf = encode(words);
            assert!(
                decode(&state_for(&buf), &buf, &sb, 1024).is_err(),
                "{words:?}"
            );
        }
        let mut flipped = good.clone();
        flipped[8] ^= 1;
        assert_eq!(
            decode(&state_for(&good), &flipped, &sb, 1024),
            Err("checksum".into())
        );
    }
}
