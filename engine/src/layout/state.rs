//! The mount-state block: whether the last session unmounted cleanly, and where it saved the
//! allocator state.
//!
//! ```text
//! 0  clean u64        (CLEAN_MAGIC after a clean unmount; 0 while mounted, or ONE_FENCE_MAGIC
//!                      while a session that makes one-fence commits is mounted; the commit word)
//! 8  saved_block u64  16 saved_blocks u64  24 saved_len u64
//! 32 saved_csum u32   36 reserved u32
//! 40 mount_count u64
//! 48 reserved [u8; 12]
//! 60 csum u32 (over 8..60)
//! ```

use bytemuck::{Pod, Zeroable};
use std::mem::offset_of;

use super::checksum;

/// Value of `clean` after a clean unmount.
pub const CLEAN_MAGIC: u64 = 0x434c_4541_4e21_0001; // "CLEAN!"

/// Value of `clean` while a session that makes one-fence commits (DESIGN.md §5.1) is mounted:
/// after a crash, the last commit of a log may be torn, and recovery cuts it off.
pub const ONE_FENCE_MAGIC: u64 = 0x4f4e_4546_454e_0001; // "ONEFEN"

/// The mount-state record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct MountState {
    /// Commit word.
    pub clean: u64,
    /// First block of the saved allocator state.
    pub saved_block: u64,
    /// Blocks it spans.
    pub saved_blocks: u64,
    /// Its length in bytes.
    pub saved_len: u64,
    /// Its checksum.
    pub saved_csum: u32,
    /// Zero.
    pub reserved0: u32,
    /// Mounts so far.
    pub mount_count: u64,
    /// Zero.
    pub reserved1: [u8; 12],
    /// Checksum over bytes 8..60.
    pub csum: u32,
}

const _: () = {
    assert!(size_of::<MountState>() == 64);
    assert!(offset_of!(MountState, clean) == 0);
    assert!(offset_of!(MountState, saved_csum) == 32);
    assert!(offset_of!(MountState, mount_count) == 40);
    assert!(offset_of!(MountState, csum) == 60);
};

/// Why a mount-state record that claims a clean unmount cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateDamage {
    /// The commit word is neither 0 nor [`CLEAN_MAGIC`].
    CleanWord(u64),
    /// The header checksum is wrong.
    Checksum,
    /// Reserved bytes are not zero.
    Reserved,
}

impl MountState {
    /// Checksum over 8..60.
    pub fn compute_csum(&self) -> u32 {
        checksum(&bytemuck::bytes_of(self)[8..60])
    }

    /// Decode an untrusted record: `Ok(true)` if the last session unmounted cleanly and the
    /// header (checksum, reserved bytes) is intact, so its saved-state location may be
    /// parsed (`layout::saved`); `Ok(false)` if it did not (mounted or crashed: the
    /// allocators are rebuilt from the logs). The one decoder of mount and fsck.
    pub fn decode(&self) -> Result<bool, StateDamage> {
        match self.clean {
            0 | ONE_FENCE_MAGIC => Ok(false),
            CLEAN_MAGIC if self.csum != self.compute_csum() => Err(StateDamage::Checksum),
            CLEAN_MAGIC if self.reserved0 != 0 || self.reserved1 != [0; 12] => {
                Err(StateDamage::Reserved)
            }
            CLEAN_MAGIC => Ok(true),
            w => Err(StateDamage::CleanWord(w)),
        }
    }

    /// The last session made one-fence commits and did not unmount cleanly: a log's last
    /// commit may be torn (recovery cuts it back, fsck expects it).
    pub fn torn_commits(&self) -> bool {
        self.clean == ONE_FENCE_MAGIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_clean_unclean_and_damaged_records() {
        let mut ms = MountState::zeroed();
        assert_eq!(ms.decode(), Ok(false));
        assert!(!ms.torn_commits());
        ms.clean = ONE_FENCE_MAGIC;
        assert_eq!(ms.decode(), Ok(false));
        assert!(ms.torn_commits());
        ms.clean = CLEAN_MAGIC;
        ms.saved_block = 9;
        ms.csum = ms.compute_csum();
        assert_eq!(ms.decode(), Ok(true));
        let mut bad = ms;
        bad.saved_len = 1;
        assert_eq!(bad.decode(), Err(StateDamage::Checksum));
        let mut res = ms;
        res.reserved1[3] = 1;
        res.csum = res.compute_csum();
        assert_eq!(res.decode(), Err(StateDamage::Reserved));
        let mut word = ms;
        word.clean = 5;
        assert_eq!(word.decode(), Err(StateDamage::CleanWord(5)));
    }
}
