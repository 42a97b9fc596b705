//! On-media structures. Every struct is `#[repr(C)]`, `Pod`, has its size and field offsets
//! asserted at compile time, and carries a checksum that an all-zero record never satisfies.
//!
//! Region map (4 KiB blocks):
//!
//! | block | content |
//! |---|---|
//! | 0 | superblock (primary) |
//! | 1 | mount state (clean flag, location of the saved allocator state) |
//! | 2 | journal (16 slots of 256 bytes) |
//! | 3 .. 3+M | inode-table map: `u64` block numbers of inode-table chunks |
//! | .. | data, log pages, inode-table chunks, saved state: all from the allocator |
//! | last | superblock replica |
#![forbid(unsafe_code)]

pub mod entry;
pub mod inode;
pub mod itable_map;
pub mod journal;
pub mod logpage;
pub mod saved;
pub mod state;
pub mod superblock;

/// Block size in bytes.
pub const BLOCK: u64 = 4096;
/// Block of the primary superblock.
pub const SUPER_BLOCK: u64 = 0;
/// Block of the mount-state record.
pub const STATE_BLOCK: u64 = 1;
/// Block of the journal.
pub const JOURNAL_BLOCK: u64 = 2;
/// First block of the inode-table map.
pub const ITABLE_MAP_START: u64 = 3;
/// Blocks per inode-table chunk.
pub const CHUNK_BLOCKS: u64 = 32;
/// Inode slot size in bytes.
pub const INODE_SIZE: u64 = 128;
/// Inodes per chunk.
pub const INODES_PER_CHUNK: u64 = CHUNK_BLOCKS * BLOCK / INODE_SIZE;
/// The root directory's inode number.
pub const ROOT_INO: u64 = 1;
/// Longest name, in bytes.
pub const NAME_MAX: usize = 255;
/// Smallest image we format.
pub const MIN_IMAGE_BYTES: u64 = 1 << 20;

/// Salt so that the checksum of an all-zero record is never zero.
pub(crate) const CSUM_SALT: u32 = 0x4e4f_5641; // "NOVA"

/// The checksum of a record whose checksum field has been zeroed.
pub fn checksum(bytes: &[u8]) -> u32 {
    let mut h = crc_hasher();
    h.update(bytes);
    h.finalize() ^ CSUM_SALT
}

/// A fresh CRC-32 hasher: a copy of one made once (`crc32fast::Hasher::new` and
/// `crc32fast::hash` detect the CPU's features on every call: a fifth of the cost of a
/// one-line record's checksum).
pub fn crc_hasher() -> crc32fast::Hasher {
    static PROTO: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    PROTO.get_or_init(crc32fast::Hasher::new).clone()
}

/// Time now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// File type as stored on media.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A regular file.
    File = 1,
    /// A directory.
    Dir = 2,
    /// A symbolic link (target stored as file data).
    Symlink = 3,
    /// A named pipe (format 2).
    Fifo = 4,
    /// A Unix domain socket (format 2).
    Socket = 5,
    /// A character device (format 2; its number is the slot's `rdev`).
    CharDev = 6,
    /// A block device (format 2; its number is the slot's `rdev`).
    BlockDev = 7,
}

impl Kind {
    /// Decode a stored kind byte.
    pub fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::File),
            2 => Some(Kind::Dir),
            3 => Some(Kind::Symlink),
            4 => Some(Kind::Fifo),
            5 => Some(Kind::Socket),
            6 => Some(Kind::CharDev),
            7 => Some(Kind::BlockDev),
            _ => None,
        }
    }

    /// A FIFO, socket or device node: an inode with attributes and no data (the kernel, not
    /// the file system, serves its reads and writes).
    pub fn is_special(self) -> bool {
        matches!(
            self,
            Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev
        )
    }

    /// The kind's name as the tools print it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDev => "chardev",
            Kind::BlockDev => "blockdev",
        }
    }

    /// A device node (it carries a device number).
    pub fn is_device(self) -> bool {
        matches!(self, Kind::CharDev | Kind::BlockDev)
    }
}

/// Largest file, in pages (4 PiB).
pub const MAX_FILE_PAGES: u64 = 1 << 40;

/// The blocks a log page or a data extent may use: `[lo, hi)` (the allocator's range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// First allocatable block.
    pub lo: u64,
    /// One past the last.
    pub hi: u64,
}

impl Bounds {
    /// The bounds of an image.
    pub fn of(sb: &superblock::Superblock) -> Bounds {
        Bounds {
            lo: sb.first_free_block,
            hi: sb.replica_block,
        }
    }

    /// Whether `[start, start+n)` lies inside.
    pub fn contains(&self, start: u64, n: u64) -> bool {
        start >= self.lo && start.checked_add(n).is_some_and(|e| e <= self.hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_records_never_validate() {
        // Every length a checksummed region can have (the superblock's 252 bytes, the mount
        // state's 52, a journal slot's 4 + 16 n, an inode slot's, a trailer's, an entry's
        // lines, the saved state up to a page): all of 0..=4096.
        for n in 0..=4096usize {
            assert_ne!(checksum(&vec![0; n]), 0, "zero record of {n} bytes");
        }
    }
}
