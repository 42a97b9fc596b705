//! Log entries: one or more 64-byte lines, never crossing a log page.
//!
//! Every entry starts with a 16-byte header:
//! ```text
//! 0 kind u8   1 lines u8   2 flags u16   4 csum u32 (over all lines, csum zeroed)   8 seq u64
//! ```
//! Flags (format 5; 0 before): [`flags::MORE`] (the append that wrote this entry goes on with
//! the next one), [`flags::DATA_CRC`] (a `Write` of a one-fence commit: `data_crc` holds the
//! crc32 of its pages' data), [`flags::SLOT_CRC`] (format 6: a `DirAdd` of a one-fence create:
//! `slot_crc` holds the new inode's slot checksum). Bodies (offsets within the first line):
//! ```text
//! Write    16 pgoff u64  24 block u64 (0 = hole)  32 num_pages u32  36 data_crc u32 (DATA_CRC)
//!          40 size u64 (file size after)  48 mtime_ns u64  56 _ u64
//! SetAttr  16 mask u32  20 mode u32  24 uid u32  28 gid u32
//!          32 size u64  40 atime_ns u64  48 mtime_ns u64  56 ctime_ns u64
//! Link     16 nlink u32  20 _ u32  24 ctime_ns u64  32 parent u64  40 _ [u8;24]
//! DirAdd/  16 ino u64  24 mtime_ns u64  32 name_len u16  34 kind u8  35 _ u8  36 slot_crc u32
//!          (DirAdd with SLOT_CRC, else 0)
//! DirRemove 40 name[0..24]; further lines hold name[24..] (64 bytes each)
//! XattrSet/ 16 value_len u32  20 name_len u16  22 inline_len u16  24 ctime_ns u64  32 _ u64
//! XattrRemove 40 name, then (XattrSet) the last inline_len bytes of the value, contiguous,
//!          continuing into further lines (format 3)
//! XattrChunk 16 offset u32  20 len u16  22 _ u16  24 data[0..40]; further lines hold the rest
//!          (format 3: a piece of the value of the XattrSet that follows it in the same append)
//! ```

use bytemuck::{Pod, Zeroable};
use std::mem::offset_of;

use super::{checksum, Kind, NAME_MAX};
use crate::error::{Error, Result};

/// Bytes per entry line.
pub const LINE_BYTES: usize = 64;
/// Name bytes held in the first line of a directory entry.
pub const NAME_INLINE: usize = 24;
/// The largest entry, in lines (a whole log page's entry area: an entry never crosses a page).
pub const MAX_LINES: usize = (super::logpage::ENTRY_BYTES as usize) / LINE_BYTES;
/// The largest directory entry, in lines.
pub const DIR_MAX_LINES: usize = 1 + (NAME_MAX - NAME_INLINE).div_ceil(LINE_BYTES);
/// Longest extended-attribute name (with its namespace prefix), as on Linux.
pub const XATTR_NAME_MAX: usize = 255;
/// Largest extended-attribute value, as on Linux (`XATTR_SIZE_MAX`).
pub const XATTR_VALUE_MAX: usize = 65536;
/// Name and inline value bytes an `XattrSet` entry holds at most (first line 24, then 62 lines).
pub const XATTR_INLINE_MAX: usize = NAME_INLINE + (MAX_LINES - 1) * LINE_BYTES;
/// Value bytes an `XattrChunk` entry holds at most (first line 40, then 62 lines).
pub const XATTR_CHUNK_MAX: usize = 40 + (MAX_LINES - 1) * LINE_BYTES;

/// Whether `name` is an extended-attribute name this file system stores: `user.`,
/// `trusted.` or `security.` followed by at least one byte, or one of the two POSIX ACL
/// names; 1..=255 bytes, no NUL.
pub fn xattr_name_valid(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > XATTR_NAME_MAX || name.contains(&0) {
        return false;
    }
    if name == b"system.posix_acl_access" || name == b"system.posix_acl_default" {
        return true;
    }
    [&b"user."[..], b"trusted.", b"security."]
        .iter()
        .any(|p| name.len() > p.len() && name.starts_with(p))
}

/// The entries that set extended attribute `name` to `value` in one append: one `XattrSet`
/// holding the value inline when name and value fit in a log page's entry area, else
/// `XattrChunk`s of the whole value followed by an `XattrSet` holding none of it.
pub fn xattr_set_entries(name: &[u8], value: &[u8], ctime_ns: u64) -> Vec<Entry> {
    let mut out = Vec::new();
    let inline = if name.len() + value.len() <= XATTR_INLINE_MAX {
        value.to_vec()
    } else {
        for (i, c) in value.chunks(XATTR_CHUNK_MAX).enumerate() {
            out.push(Entry::XattrChunk {
                offset: (i * XATTR_CHUNK_MAX) as u32,
                data: c.to_vec(),
            });
        }
        Vec::new()
    };
    out.push(Entry::XattrSet {
        name: name.to_vec(),
        value_len: value.len() as u32,
        inline,
        ctime_ns,
    });
    out
}

/// Entry kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    /// File data extent (or hole).
    Write = 1,
    /// Attribute change (mode, owner, size, times).
    SetAttr = 2,
    /// Link-count (and parent) change.
    Link = 3,
    /// A name added to a directory.
    DirAdd = 4,
    /// A name removed from a directory.
    DirRemove = 5,
    /// A page attached to the inode's write cache (in the cache log only).
    CacheAttach = 6,
    /// An extended attribute set (format 3).
    XattrSet = 7,
    /// A piece of the value of the `XattrSet` that follows (format 3).
    XattrChunk = 8,
    /// An extended attribute removed (format 3).
    XattrRemove = 9,
    /// A small write carried in the log and then stored in place into the page's block
    /// (format 5, DESIGN.md §5.1.2).
    WriteRedo = 10,
}

/// Entry header flags (format 5).
pub mod flags {
    /// The append that wrote this entry goes on with the next entry: an entry without it
    /// ends a commit (recovery cuts a torn one-fence commit back to such a boundary).
    pub const MORE: u16 = 1;
    /// A `Write` of a one-fence commit whose `data_crc` field holds the crc32 of its pages'
    /// data (a hole never has it).
    pub const DATA_CRC: u16 = 2;
    /// A `DirAdd` of a one-fence create (format 6) whose `slot_crc` field holds the checksum
    /// the new inode's slot was written with: recovery cuts the commit when the slot does not
    /// hold it (DESIGN.md §5.3).
    pub const SLOT_CRC: u16 = 4;
    /// Every flag a decoder accepts.
    pub const ALL: u16 = MORE | DATA_CRC | SLOT_CRC;
}

/// The flags and data checksum of an encoded entry (see [`flags`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryMarks {
    /// [`flags::MORE`].
    pub more: bool,
    /// The data checksum ([`flags::DATA_CRC`]; only on a `Write` of a data run).
    pub data_crc: Option<u32>,
    /// The new inode's slot checksum ([`flags::SLOT_CRC`]; only on a `DirAdd`).
    pub slot_crc: Option<u32>,
}

impl EntryMarks {
    /// Read the marks of an entry that [`Entry::decode`] accepted.
    pub fn of(buf: &[u8]) -> EntryMarks {
        let f = u16::from_le_bytes([buf[2], buf[3]]);
        EntryMarks {
            more: f & flags::MORE != 0,
            data_crc: (f & flags::DATA_CRC != 0)
                .then(|| u32::from_le_bytes([buf[36], buf[37], buf[38], buf[39]])),
            slot_crc: (f & flags::SLOT_CRC != 0)
                .then(|| u32::from_le_bytes([buf[36], buf[37], buf[38], buf[39]])),
        }
    }
}

/// Common header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct EntryHeader {
    /// [`EntryKind`].
    pub kind: u8,
    /// Length in 64-byte lines.
    pub lines: u8,
    /// [`flags`] (0 before format 5).
    pub flags: u16,
    /// Checksum over the whole entry with this field zeroed.
    pub csum: u32,
    /// Per-inode sequence number.
    pub seq: u64,
}

/// A write (data extent) entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct WriteEntry {
    /// Header.
    pub hdr: EntryHeader,
    /// First file page.
    pub pgoff: u64,
    /// First block of a contiguous run, or 0 for a hole.
    pub block: u64,
    /// Pages covered.
    pub num_pages: u32,
    /// crc32 of the run's data when the header has [`flags::DATA_CRC`]; zero otherwise.
    pub reserved0: u32,
    /// File size after this entry.
    pub size: u64,
    /// Modification time.
    pub mtime_ns: u64,
    /// Zero.
    pub reserved1: u64,
}

/// Which attributes a [`SetAttrEntry`] sets.
pub mod attr_mask {
    /// `mode`.
    pub const MODE: u32 = 1;
    /// `uid`.
    pub const UID: u32 = 2;
    /// `gid`.
    pub const GID: u32 = 4;
    /// `size` (truncate or extend).
    pub const SIZE: u32 = 8;
    /// `atime_ns`.
    pub const ATIME: u32 = 16;
    /// `mtime_ns`.
    pub const MTIME: u32 = 32;
    /// `ctime_ns`.
    pub const CTIME: u32 = 64;
    /// All bits.
    pub const ALL: u32 = 127;
}

/// An attribute-change entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct SetAttrEntry {
    /// Header.
    pub hdr: EntryHeader,
    /// [`attr_mask`] bits.
    pub mask: u32,
    /// Mode.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size.
    pub size: u64,
    /// Access time.
    pub atime_ns: u64,
    /// Modification time.
    pub mtime_ns: u64,
    /// Change time.
    pub ctime_ns: u64,
}

/// A link-count entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct LinkEntry {
    /// Header.
    pub hdr: EntryHeader,
    /// New link count.
    pub nlink: u32,
    /// Zero.
    pub reserved0: u32,
    /// Change time.
    pub ctime_ns: u64,
    /// New parent directory (directories), or 0 = unchanged.
    pub parent: u64,
    /// Zero.
    pub reserved1: [u8; 24],
}

/// A write-cache attachment (cache log).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct CacheEntry {
    /// Header.
    pub hdr: EntryHeader,
    /// File page.
    pub pgoff: u64,
    /// The cache block holding its new contents.
    pub block: u64,
    /// 1 = failure-atomic mapping (recovery discards), 0 = MAP_SYNC (recovery migrates).
    pub atomic: u8,
    /// Zero.
    pub reserved: [u8; 31],
}

/// First line of a directory entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct DirEntryHead {
    /// Header.
    pub hdr: EntryHeader,
    /// Child inode.
    pub ino: u64,
    /// Directory modification time.
    pub mtime_ns: u64,
    /// Name length.
    pub name_len: u16,
    /// Child kind.
    pub kind: u8,
    /// Zero.
    pub reserved0: u8,
    /// The new inode's slot checksum when the header has [`flags::SLOT_CRC`] (a `DirAdd`
    /// only); zero otherwise.
    pub reserved1: u32,
    /// First name bytes.
    pub name: [u8; NAME_INLINE],
}

/// First line of an `XattrSet` / `XattrRemove` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct XattrHead {
    /// Header.
    pub hdr: EntryHeader,
    /// Length of the whole value (0 for a removal).
    pub value_len: u32,
    /// Name length (1..=255).
    pub name_len: u16,
    /// Value bytes held here, after the name (the value's last bytes; the rest is in the
    /// chunks before it).
    pub inline_len: u16,
    /// Change time of the inode.
    pub ctime_ns: u64,
    /// Zero.
    pub reserved: u64,
    /// First bytes of name + inline value.
    pub bytes: [u8; NAME_INLINE],
}

/// Largest write carried in a `WriteRedo` entry (62 lines after its first: the entry fits a
/// page's entry area). The engine uses it for writes of at most [`REDO_WRITE_MAX`].
pub const REDO_MAX: usize = (MAX_LINES - 1) * LINE_BYTES;

/// Writes up to this many bytes inside one mapped page are redo writes (§5.1.2): the log
/// entry and the in-place store cost about what they carry, against a 4 KiB copy.
pub const REDO_WRITE_MAX: usize = 512;

/// A `WriteRedo` entry that borrows its bytes: what the one-entry commit of a redo write
/// encodes and applies without building an [`Entry`] (no allocation), and what the
/// `Entry::WriteRedo` arms of encoding, checking and applying go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedoRef<'a> {
    /// File page.
    pub pgoff: u64,
    /// The block it maps to.
    pub block: u64,
    /// Byte offset in the page.
    pub at: u16,
    /// The bytes (1..=[`REDO_MAX`]).
    pub data: &'a [u8],
    /// File size after.
    pub size: u64,
    /// Modification time.
    pub mtime_ns: u64,
}

impl RedoRef<'_> {
    /// Lines the entry occupies.
    pub fn lines(&self) -> usize {
        1 + self.data.len().div_ceil(LINE_BYTES)
    }

    /// Encoded length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.lines() * LINE_BYTES
    }

    /// Encode with sequence number `seq` and no flags (the last entry of its commit) into
    /// `out`, exactly [`Self::len_bytes`] long: the same bytes as `Entry::WriteRedo`'s
    /// [`Entry::encode_marked`] with default marks, without a vector.
    pub fn encode_into(&self, seq: u64, out: &mut [u8]) {
        self.encode_body(seq, out);
        seal(out);
    }

    /// The entry's lines into `out` ([`Self::len_bytes`] long), flags zero, checksum not
    /// computed.
    fn encode_body(&self, seq: u64, out: &mut [u8]) {
        let e = RedoEntry {
            hdr: header(EntryKind::WriteRedo, self.lines(), seq),
            pgoff: self.pgoff,
            block: self.block,
            at: self.at,
            len: self.data.len() as u16,
            reserved0: 0,
            size: self.size,
            mtime_ns: self.mtime_ns,
            reserved1: 0,
        };
        let (head, rest) = out.split_at_mut(LINE_BYTES);
        head.copy_from_slice(bytemuck::bytes_of(&e));
        let (data, pad) = rest.split_at_mut(self.data.len());
        data.copy_from_slice(self.data);
        pad.fill(0);
    }
}

/// First line of a `WriteRedo` entry; the data follows from the second line on, zero-padded
/// to a whole line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct RedoEntry {
    /// Header.
    pub hdr: EntryHeader,
    /// File page.
    pub pgoff: u64,
    /// The block the page maps to (the bytes are stored there in place).
    pub block: u64,
    /// Byte offset in the page.
    pub at: u16,
    /// Bytes (1..=[`REDO_MAX`], `at + len <= 4096`).
    pub len: u16,
    /// Zero.
    pub reserved0: u32,
    /// File size after.
    pub size: u64,
    /// Modification time.
    pub mtime_ns: u64,
    /// Zero.
    pub reserved1: u64,
}

const _: () = {
    assert!(size_of::<RedoEntry>() == 64);
    assert!(offset_of!(RedoEntry, pgoff) == 16);
    assert!(offset_of!(RedoEntry, block) == 24);
    assert!(offset_of!(RedoEntry, at) == 32);
    assert!(offset_of!(RedoEntry, len) == 34);
    assert!(offset_of!(RedoEntry, size) == 40);
    assert!(offset_of!(RedoEntry, mtime_ns) == 48);
};

/// First line of an `XattrChunk` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct XattrChunkHead {
    /// Header.
    pub hdr: EntryHeader,
    /// Offset of this piece in the value.
    pub offset: u32,
    /// Bytes in this piece (1..=XATTR_CHUNK_MAX).
    pub len: u16,
    /// Zero.
    pub reserved: u16,
    /// First bytes of the piece.
    pub data: [u8; 40],
}

const _: () = {
    assert!(size_of::<XattrHead>() == 64);
    assert!(size_of::<XattrChunkHead>() == 64);
    assert!(offset_of!(XattrHead, bytes) == 40);
    assert!(offset_of!(XattrHead, ctime_ns) == 24);
    assert!(offset_of!(XattrChunkHead, data) == 24);
    assert!(XATTR_INLINE_MAX >= XATTR_NAME_MAX);
    assert!(size_of::<EntryHeader>() == 16);
    assert!(size_of::<WriteEntry>() == 64);
    assert!(size_of::<SetAttrEntry>() == 64);
    assert!(size_of::<LinkEntry>() == 64);
    assert!(size_of::<DirEntryHead>() == 64);
    assert!(size_of::<CacheEntry>() == 64);
    assert!(offset_of!(CacheEntry, atomic) == 32);
    assert!(offset_of!(EntryHeader, csum) == 4);
    assert!(offset_of!(EntryHeader, seq) == 8);
    assert!(offset_of!(WriteEntry, pgoff) == 16);
    assert!(offset_of!(WriteEntry, size) == 40);
    assert!(offset_of!(SetAttrEntry, size) == 32);
    assert!(offset_of!(LinkEntry, parent) == 32);
    assert!(offset_of!(DirEntryHead, name_len) == 32);
    assert!(offset_of!(DirEntryHead, name) == 40);
};

/// A decoded, validated entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Data extent.
    Write {
        /// First file page.
        pgoff: u64,
        /// First block, 0 = hole.
        block: u64,
        /// Pages.
        num_pages: u32,
        /// Size after.
        size: u64,
        /// mtime.
        mtime_ns: u64,
    },
    /// Attribute change.
    SetAttr(SetAttrEntry),
    /// Link count.
    Link {
        /// New count.
        nlink: u32,
        /// ctime.
        ctime_ns: u64,
        /// New parent (0 = unchanged).
        parent: u64,
    },
    /// Name added.
    DirAdd {
        /// Child.
        ino: u64,
        /// Child kind.
        kind: Kind,
        /// Name (inline up to 16 bytes: no allocation for most names).
        name: crate::hash::Name,
        /// Dir mtime.
        mtime_ns: u64,
    },
    /// Page attached to the write cache.
    CacheAttach {
        /// File page.
        pgoff: u64,
        /// Cache block.
        block: u64,
        /// Failure-atomic mode.
        atomic: bool,
    },
    /// Name removed.
    DirRemove {
        /// Child that had the name.
        ino: u64,
        /// Name (inline up to 16 bytes).
        name: crate::hash::Name,
        /// Dir mtime.
        mtime_ns: u64,
    },
    /// Extended attribute set (its value: the preceding chunks, then `inline`).
    XattrSet {
        /// Name (with its namespace prefix).
        name: Vec<u8>,
        /// Length of the whole value.
        value_len: u32,
        /// The value's last bytes.
        inline: Vec<u8>,
        /// ctime.
        ctime_ns: u64,
    },
    /// A piece of the value of the `XattrSet` that follows in the same append.
    XattrChunk {
        /// Offset in the value.
        offset: u32,
        /// Bytes.
        data: Vec<u8>,
    },
    /// Extended attribute removed.
    XattrRemove {
        /// Name.
        name: Vec<u8>,
        /// ctime.
        ctime_ns: u64,
    },
    /// A small write into a mapped page, stored in place after the commit (format 5).
    WriteRedo {
        /// File page.
        pgoff: u64,
        /// The block it maps to.
        block: u64,
        /// Byte offset in the page.
        at: u16,
        /// The bytes.
        data: Vec<u8>,
        /// File size after.
        size: u64,
        /// Modification time.
        mtime_ns: u64,
    },
}

fn seal(buf: &mut [u8]) {
    buf[4..8].copy_from_slice(&[0; 4]);
    let c = checksum(buf);
    buf[4..8].copy_from_slice(&c.to_le_bytes());
}

fn header(kind: EntryKind, lines: usize, seq: u64) -> EntryHeader {
    EntryHeader {
        kind: kind as u8,
        lines: lines as u8,
        flags: 0,
        csum: 0,
        seq,
    }
}

impl Entry {
    /// Lines this entry occupies.
    pub fn lines(&self) -> usize {
        match self {
            Entry::DirAdd { name, .. } | Entry::DirRemove { name, .. } => {
                1 + name.len().saturating_sub(NAME_INLINE).div_ceil(LINE_BYTES)
            }
            Entry::XattrSet { name, inline, .. } => {
                1 + (name.len() + inline.len())
                    .saturating_sub(NAME_INLINE)
                    .div_ceil(LINE_BYTES)
            }
            Entry::XattrRemove { name, .. } => {
                1 + name.len().saturating_sub(NAME_INLINE).div_ceil(LINE_BYTES)
            }
            Entry::XattrChunk { data, .. } => {
                1 + data.len().saturating_sub(40).div_ceil(LINE_BYTES)
            }
            Entry::WriteRedo { data, .. } => 1 + data.len().div_ceil(LINE_BYTES),
            _ => 1,
        }
    }

    /// Encoded length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.lines() * LINE_BYTES
    }

    /// Encode with sequence number `seq`, appending to `out`.
    pub fn encode(&self, seq: u64, out: &mut Vec<u8>) {
        self.encode_marked(seq, EntryMarks::default(), out)
    }

    /// Encode with sequence number `seq` and `marks` (a data checksum only on a `Write` of a
    /// data run; elsewhere it is ignored), appending to `out`.
    pub fn encode_marked(&self, seq: u64, marks: EntryMarks, out: &mut Vec<u8>) {
        let start = out.len();
        let lines = self.lines();
        match self {
            Entry::Write {
                pgoff,
                block,
                num_pages,
                size,
                mtime_ns,
            } => {
                let e = WriteEntry {
                    hdr: header(EntryKind::Write, 1, seq),
                    pgoff: *pgoff,
                    block: *block,
                    num_pages: *num_pages,
                    reserved0: 0,
                    size: *size,
                    mtime_ns: *mtime_ns,
                    reserved1: 0,
                };
                out.extend_from_slice(bytemuck::bytes_of(&e));
            }
            Entry::SetAttr(a) => {
                let mut e = *a;
                e.hdr = header(EntryKind::SetAttr, 1, seq);
                out.extend_from_slice(bytemuck::bytes_of(&e));
            }
            Entry::Link {
                nlink,
                ctime_ns,
                parent,
            } => {
                let e = LinkEntry {
                    hdr: header(EntryKind::Link, 1, seq),
                    nlink: *nlink,
                    reserved0: 0,
                    ctime_ns: *ctime_ns,
                    parent: *parent,
                    reserved1: [0; 24],
                };
                out.extend_from_slice(bytemuck::bytes_of(&e));
            }
            Entry::CacheAttach {
                pgoff,
                block,
                atomic,
            } => {
                let e = CacheEntry {
                    hdr: header(EntryKind::CacheAttach, 1, seq),
                    pgoff: *pgoff,
                    block: *block,
                    atomic: *atomic as u8,
                    reserved: [0; 31],
                };
                out.extend_from_slice(bytemuck::bytes_of(&e));
            }
            Entry::DirAdd {
                ino,
                name,
                mtime_ns,
                ..
            }
            | Entry::DirRemove {
                ino,
                name,
                mtime_ns,
            } => {
                let (k, child) = match self {
                    Entry::DirAdd { kind, .. } => (EntryKind::DirAdd, *kind as u8),
                    _ => (EntryKind::DirRemove, 0),
                };
                let mut head = DirEntryHead {
                    hdr: header(k, lines, seq),
                    ino: *ino,
                    mtime_ns: *mtime_ns,
                    name_len: name.len() as u16,
                    kind: child,
                    reserved0: 0,
                    reserved1: 0,
                    name: [0; NAME_INLINE],
                };
                let n0 = name.len().min(NAME_INLINE);
                head.name[..n0].copy_from_slice(&name[..n0]);
                out.extend_from_slice(bytemuck::bytes_of(&head));
                out.extend_from_slice(&name[n0..]);
                out.resize(start + lines * LINE_BYTES, 0);
            }
            Entry::XattrSet {
                name,
                value_len,
                inline,
                ctime_ns,
            } => {
                let head = XattrHead {
                    hdr: header(EntryKind::XattrSet, lines, seq),
                    value_len: *value_len,
                    name_len: name.len() as u16,
                    inline_len: inline.len() as u16,
                    ctime_ns: *ctime_ns,
                    reserved: 0,
                    bytes: [0; NAME_INLINE],
                };
                out.extend_from_slice(&bytemuck::bytes_of(&head)[..40]);
                out.extend_from_slice(name);
                out.extend_from_slice(inline);
                out.resize(start + lines * LINE_BYTES, 0);
            }
            Entry::XattrRemove { name, ctime_ns } => {
                let head = XattrHead {
                    hdr: header(EntryKind::XattrRemove, lines, seq),
                    value_len: 0,
                    name_len: name.len() as u16,
                    inline_len: 0,
                    ctime_ns: *ctime_ns,
                    reserved: 0,
                    bytes: [0; NAME_INLINE],
                };
                out.extend_from_slice(&bytemuck::bytes_of(&head)[..40]);
                out.extend_from_slice(name);
                out.resize(start + lines * LINE_BYTES, 0);
            }
            Entry::XattrChunk { offset, data } => {
                let head = XattrChunkHead {
                    hdr: header(EntryKind::XattrChunk, lines, seq),
                    offset: *offset,
                    len: data.len() as u16,
                    reserved: 0,
                    data: [0; 40],
                };
                out.extend_from_slice(&bytemuck::bytes_of(&head)[..24]);
                out.extend_from_slice(data);
                out.resize(start + lines * LINE_BYTES, 0);
            }
            Entry::WriteRedo { .. } => {
                if let Some(r) = self.as_redo() {
                    out.resize(start + r.len_bytes(), 0);
                    r.encode_body(seq, &mut out[start..]);
                }
            }
        }
        let mut f = if marks.more { flags::MORE } else { 0 };
        if let (Some(crc), Entry::Write { block, .. }) = (marks.data_crc, self) {
            if *block != 0 {
                f |= flags::DATA_CRC;
                out[start + 36..start + 40].copy_from_slice(&crc.to_le_bytes());
            }
        }
        if let (Some(crc), Entry::DirAdd { .. }) = (marks.slot_crc, self) {
            f |= flags::SLOT_CRC;
            out[start + 36..start + 40].copy_from_slice(&crc.to_le_bytes());
        }
        out[start + 2..start + 4].copy_from_slice(&f.to_le_bytes());
        seal(&mut out[start..]);
    }

    /// The borrowed view of a `WriteRedo` entry (`None` for other kinds).
    pub fn as_redo(&self) -> Option<RedoRef<'_>> {
        match self {
            Entry::WriteRedo {
                pgoff,
                block,
                at,
                data,
                size,
                mtime_ns,
            } => Some(RedoRef {
                pgoff: *pgoff,
                block: *block,
                at: *at,
                data,
                size: *size,
                mtime_ns: *mtime_ns,
            }),
            _ => None,
        }
    }

    /// Parse the header of an entry's first line: returns its length in lines.
    pub fn peek_lines(first_line: &[u8], where_: impl Fn() -> String) -> Result<usize> {
        let kind = first_line[0];
        let lines = first_line[1] as usize;
        if !(1..=10).contains(&kind) || lines == 0 || lines > MAX_LINES {
            return Err(Error::corrupt("log entry header", where_()));
        }
        Ok(lines)
    }

    /// Decode and validate a whole entry (all its lines). Returns the entry and its seq.
    pub fn decode(buf: &[u8], where_: impl Fn() -> String) -> Result<(Entry, u64)> {
        let bad = |what: &str| Error::corrupt(format!("log entry: {what}"), where_());
        if buf.len() < LINE_BYTES || !buf.len().is_multiple_of(LINE_BYTES) {
            return Err(bad("length"));
        }
        let hdr: EntryHeader = bytemuck::pod_read_unaligned(&buf[..16]);
        if hdr.lines as usize * LINE_BYTES != buf.len() {
            return Err(bad("line count"));
        }
        // The checksum over the entry with its checksum field zeroed: a one-line entry (most)
        // copied and checked in one piece (two 4-byte updates cost as much as the line).
        let csum = if let Ok(mut line) = <[u8; LINE_BYTES]>::try_from(buf) {
            line[4..8].fill(0);
            super::checksum(&line)
        } else {
            let mut h = super::crc_hasher();
            h.update(&buf[..4]);
            h.update(&[0; 4]);
            h.update(&buf[8..]);
            h.finalize() ^ super::CSUM_SALT
        };
        if csum != hdr.csum {
            return Err(bad("checksum"));
        }
        if hdr.flags & !flags::ALL != 0
            || (hdr.flags & flags::DATA_CRC != 0 && hdr.kind != EntryKind::Write as u8)
            || (hdr.flags & flags::SLOT_CRC != 0 && hdr.kind != EntryKind::DirAdd as u8)
        {
            return Err(bad("flags"));
        }
        let first = &buf[..LINE_BYTES];
        let entry = match hdr.kind {
            1 => {
                let e: WriteEntry = bytemuck::pod_read_unaligned(first);
                if hdr.lines != 1 || e.num_pages == 0 {
                    return Err(bad("write extent"));
                }
                let crc_ok = hdr.flags & flags::DATA_CRC == 0 || e.block != 0;
                if (e.reserved0 != 0 && hdr.flags & flags::DATA_CRC == 0) || e.reserved1 != 0 {
                    return Err(bad("reserved bytes"));
                }
                if !crc_ok {
                    return Err(bad("data checksum on a hole"));
                }
                Entry::Write {
                    pgoff: e.pgoff,
                    block: e.block,
                    num_pages: e.num_pages,
                    size: e.size,
                    mtime_ns: e.mtime_ns,
                }
            }
            2 => {
                let mut e: SetAttrEntry = bytemuck::pod_read_unaligned(first);
                if hdr.lines != 1 || e.mask & !attr_mask::ALL != 0 {
                    return Err(bad("attribute mask"));
                }
                e.hdr = EntryHeader::zeroed();
                Entry::SetAttr(e)
            }
            3 => {
                let e: LinkEntry = bytemuck::pod_read_unaligned(first);
                if hdr.lines != 1 {
                    return Err(bad("link entry length"));
                }
                if e.reserved0 != 0 || e.reserved1 != [0; 24] {
                    return Err(bad("reserved bytes"));
                }
                Entry::Link {
                    nlink: e.nlink,
                    ctime_ns: e.ctime_ns,
                    parent: e.parent,
                }
            }
            4 | 5 => {
                let h: DirEntryHead = bytemuck::pod_read_unaligned(first);
                let n = h.name_len as usize;
                if n == 0 || n > NAME_MAX {
                    return Err(bad("name length"));
                }
                let expect = 1 + n.saturating_sub(NAME_INLINE).div_ceil(LINE_BYTES);
                if expect != hdr.lines as usize {
                    return Err(bad("name length against line count"));
                }
                let n0 = n.min(NAME_INLINE);
                // Reserved bytes and the padding after the name are zero (a remove entry
                // stores no child kind).
                let padding = h.name[n0..].iter().chain(&buf[LINE_BYTES + (n - n0)..]);
                if h.reserved0 != 0
                    || (h.reserved1 != 0 && hdr.flags & flags::SLOT_CRC == 0)
                    || (hdr.kind == 5 && h.kind != 0)
                    || padding.into_iter().any(|&b| b != 0)
                {
                    return Err(bad("reserved bytes"));
                }
                let mut name = crate::hash::Name::from_slice(&h.name[..n0]);
                name.extend_from_slice(&buf[LINE_BYTES..LINE_BYTES + (n - n0)]);
                if name.iter().any(|&b| b == 0 || b == b'/') {
                    return Err(bad("name bytes"));
                }
                // Never stored: lookups answer them from the directory itself.
                if name[..] == b"."[..] || name[..] == b".."[..] {
                    return Err(bad("name '.' or '..'"));
                }
                if hdr.kind == 4 {
                    let kind = Kind::from_u8(h.kind).ok_or_else(|| bad("child kind"))?;
                    Entry::DirAdd {
                        ino: h.ino,
                        kind,
                        name,
                        mtime_ns: h.mtime_ns,
                    }
                } else {
                    Entry::DirRemove {
                        ino: h.ino,
                        name,
                        mtime_ns: h.mtime_ns,
                    }
                }
            }
            6 => {
                let e: CacheEntry = bytemuck::pod_read_unaligned(first);
                if hdr.lines != 1 || e.atomic > 1 || e.reserved.iter().any(|&b| b != 0) {
                    return Err(bad("cache entry"));
                }
                Entry::CacheAttach {
                    pgoff: e.pgoff,
                    block: e.block,
                    atomic: e.atomic == 1,
                }
            }
            7 | 9 => {
                let h: XattrHead = bytemuck::pod_read_unaligned(first);
                let n = h.name_len as usize;
                let k = h.inline_len as usize;
                if n == 0 || n > XATTR_NAME_MAX {
                    return Err(bad("xattr name length"));
                }
                if h.reserved != 0
                    || (hdr.kind == 9 && (h.value_len != 0 || k != 0))
                    || h.value_len as usize > XATTR_VALUE_MAX
                    || k > h.value_len as usize
                {
                    return Err(bad("xattr value length"));
                }
                let expect = 1 + (n + k).saturating_sub(NAME_INLINE).div_ceil(LINE_BYTES);
                if expect != hdr.lines as usize {
                    return Err(bad("xattr length against line count"));
                }
                let name = buf[40..40 + n].to_vec();
                if !xattr_name_valid(&name) {
                    return Err(bad("xattr name"));
                }
                if hdr.kind == 7 {
                    Entry::XattrSet {
                        name,
                        value_len: h.value_len,
                        inline: buf[40 + n..40 + n + k].to_vec(),
                        ctime_ns: h.ctime_ns,
                    }
                } else {
                    Entry::XattrRemove {
                        name,
                        ctime_ns: h.ctime_ns,
                    }
                }
            }
            8 => {
                let h: XattrChunkHead = bytemuck::pod_read_unaligned(first);
                let n = h.len as usize;
                if n == 0
                    || n > XATTR_CHUNK_MAX
                    || h.reserved != 0
                    || h.offset as usize + n > XATTR_VALUE_MAX
                {
                    return Err(bad("xattr chunk length"));
                }
                if 1 + n.saturating_sub(40).div_ceil(LINE_BYTES) != hdr.lines as usize {
                    return Err(bad("xattr chunk length against line count"));
                }
                Entry::XattrChunk {
                    offset: h.offset,
                    data: buf[24..24 + n].to_vec(),
                }
            }
            10 => {
                let e: RedoEntry = bytemuck::pod_read_unaligned(first);
                let n = e.len as usize;
                if n == 0 || n > REDO_MAX || e.at as usize + n > super::BLOCK as usize {
                    return Err(bad("redo write length"));
                }
                if 1 + n.div_ceil(LINE_BYTES) != hdr.lines as usize {
                    return Err(bad("redo write length against line count"));
                }
                if e.block == 0 || e.reserved0 != 0 || e.reserved1 != 0 {
                    return Err(bad("reserved bytes"));
                }
                if buf[LINE_BYTES + n..].iter().any(|&b| b != 0) {
                    return Err(bad("redo write padding"));
                }
                Entry::WriteRedo {
                    pgoff: e.pgoff,
                    block: e.block,
                    at: e.at,
                    data: buf[LINE_BYTES..LINE_BYTES + n].to_vec(),
                    size: e.size,
                    mtime_ns: e.mtime_ns,
                }
            }
            _ => return Err(bad("kind")),
        };
        Ok((entry, hdr.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Entry> {
        let mut a = SetAttrEntry::zeroed();
        a.mask = attr_mask::MODE | attr_mask::SIZE;
        a.mode = 0o644;
        a.size = 12345;
        vec![
            Entry::Write {
                pgoff: 3,
                block: 99,
                num_pages: 2,
                size: 8000,
                mtime_ns: 5,
            },
            Entry::SetAttr(a),
            Entry::Link {
                nlink: 2,
                ctime_ns: 7,
                parent: 1,
            },
            Entry::DirAdd {
                ino: 9,
                kind: Kind::Dir,
                name: b"x"[..].into(),
                mtime_ns: 1,
            },
            Entry::DirAdd {
                ino: 9,
                kind: Kind::File,
                name: smallvec::smallvec![b'n'; 255],
                mtime_ns: 1,
            },
            Entry::DirRemove {
                ino: 9,
                name: smallvec::smallvec![b'q'; 24],
                mtime_ns: 2,
            },
            Entry::DirRemove {
                ino: 9,
                name: smallvec::smallvec![b'q'; 25],
                mtime_ns: 2,
            },
            Entry::CacheAttach {
                pgoff: 5,
                block: 77,
                atomic: true,
            },
            Entry::XattrSet {
                name: b"user.a".to_vec(),
                value_len: 3,
                inline: b"xyz".to_vec(),
                ctime_ns: 4,
            },
            Entry::XattrSet {
                name: [&b"user."[..], &[b'k'; 250]].concat(),
                value_len: 5000,
                inline: vec![7; 100],
                ctime_ns: 4,
            },
            Entry::XattrSet {
                name: b"trusted.empty".to_vec(),
                value_len: 0,
                inline: vec![],
                ctime_ns: 4,
            },
            Entry::XattrRemove {
                name: b"system.posix_acl_access".to_vec(),
                ctime_ns: 9,
            },
            Entry::XattrChunk {
                offset: 0,
                data: vec![1; XATTR_CHUNK_MAX],
            },
            Entry::XattrChunk {
                offset: 8016,
                data: vec![2; 3],
            },
            Entry::WriteRedo {
                pgoff: 3,
                block: 77,
                at: 4000,
                data: vec![9; 96],
                size: 5 * 4096,
                mtime_ns: 11,
            },
            Entry::WriteRedo {
                pgoff: 0,
                block: 5,
                at: 0,
                data: vec![1; REDO_MAX],
                size: 1,
                mtime_ns: 0,
            },
        ]
    }

    /// Reserved bytes and name padding must be zero even under a valid checksum (a crafted
    /// or garbage entry is refused, not decoded with bytes ignored).
    #[test]
    fn nonzero_reserved_bytes_are_refused_under_a_valid_checksum() {
        let write = Entry::Write {
            pgoff: 1,
            block: 2,
            num_pages: 1,
            size: 3,
            mtime_ns: 4,
        };
        let link = Entry::Link {
            nlink: 1,
            ctime_ns: 2,
            parent: 3,
        };
        let add = Entry::DirAdd {
            ino: 5,
            kind: Kind::File,
            name: b"short"[..].into(),
            mtime_ns: 1,
        };
        let long = Entry::DirRemove {
            ino: 5,
            name: smallvec::smallvec![b'x'; 30],
            mtime_ns: 1,
        };
        // (entry, byte offsets that are reserved or padding)
        let cases: [(Entry, &[usize]); 4] = [
            (write, &[36, 56, 63]),
            (link, &[20, 40, 63]),
            (add, &[35, 36, 39, 40 + 5, 63]),
            (long.clone(), &[34, 64 + 6, 127]),
        ];
        for (e, offsets) in cases {
            let mut buf = Vec::new();
            e.encode(9, &mut buf);
            assert_eq!(Entry::decode(&buf, String::new).unwrap(), (e.clone(), 9));
            for &off in offsets {
                let mut b = buf.clone();
                b[off] = 0x5a;
                seal(&mut b);
                assert!(
                    Entry::decode(&b, String::new).is_err(),
                    "{e:?}: byte {off} ignored"
                );
            }
        }
    }

    /// Crafted xattr entries with valid checksums (random lengths, names, offsets) decode to
    /// an error or to an entry that re-encodes to the same bytes; none panics, and replaying
    /// a decoded one into an inode state neither (the check refuses what does not apply).
    #[test]
    fn crafted_xattr_entries_never_panic() {
        use crate::inode::{Bounds, InodeState, PageLive};
        use crate::layout::inode::{InodeSlot, NewInode};
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let slot = InodeSlot::fresh(NewInode {
            kind: Kind::File,
            generation: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            parent: 1,
            ctime_ns: 0,
            rdev: 0,
        });
        let mut st = InodeState::new(9, &slot, Kind::File);
        st.log.live.resize(1, PageLive::default());
        let bounds = Bounds { lo: 10, hi: 1000 };
        let mut decoded = 0;
        for i in 0..30_000 {
            let lines = 1 + (rnd() % MAX_LINES as u64) as usize;
            let mut buf: Vec<u8> = (0..lines * LINE_BYTES).map(|_| rnd() as u8).collect();
            buf[0] = 7 + (i % 3) as u8;
            buf[1] = lines as u8;
            buf[2] = 0;
            buf[3] = 0;
            // Plausible lengths half of the time, so that the deeper checks are reached.
            if i % 2 == 0 {
                let n = (rnd() % 300) as u16;
                buf[16..20].copy_from_slice(&((rnd() % 70_000) as u32).to_le_bytes());
                buf[20..22].copy_from_slice(&n.to_le_bytes());
                buf[22..24].copy_from_slice(&((rnd() % 4100) as u16).to_le_bytes());
                buf[32..40].copy_from_slice(&[0; 8]);
                buf[40..45].copy_from_slice(b"user.");
            }
            seal(&mut buf);
            if let Ok((e, seq)) = Entry::decode(&buf, || "t".into()) {
                decoded += 1;
                let mut back = Vec::new();
                e.encode(seq, &mut back);
                assert_eq!(back.len(), buf.len());
                let mut freed = Vec::new();
                let _ = st.apply(&e, 9, bounds, &mut freed, 0);
            }
        }
        assert!(
            decoded > 0,
            "no crafted entry decoded: the test reached no deep check"
        );
    }

    #[test]
    fn xattr_entries_fit_a_page_and_hold_the_value() {
        for len in [
            0usize,
            1,
            3000,
            3992 - 6,
            3992 - 5,
            4008,
            20000,
            XATTR_VALUE_MAX,
        ] {
            let value: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let es = xattr_set_entries(b"user.x", &value, 1);
            let mut got = Vec::new();
            for e in &es {
                assert!(e.lines() <= MAX_LINES, "{len}: {} lines", e.lines());
                let mut buf = Vec::new();
                e.encode(1, &mut buf);
                let (back, _) = Entry::decode(&buf, || "t".into()).unwrap();
                assert_eq!(&back, e);
                match back {
                    Entry::XattrChunk { offset, data } => {
                        assert_eq!(offset as usize, got.len());
                        got.extend(data);
                    }
                    Entry::XattrSet {
                        value_len, inline, ..
                    } => {
                        got.extend(inline);
                        assert_eq!(value_len as usize, len);
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(got, value);
        }
        assert!(xattr_name_valid(b"user.a"));
        assert!(!xattr_name_valid(b"user."));
        assert!(!xattr_name_valid(b"os2.a"));
        assert!(!xattr_name_valid(b"system.foo"));
        assert!(!xattr_name_valid(&[b'u'; 256]));
    }

    #[test]
    fn round_trip_and_bit_flips() {
        for e in samples() {
            let mut buf = Vec::new();
            e.encode(77, &mut buf);
            assert_eq!(buf.len(), e.len_bytes());
            let (back, seq) = Entry::decode(&buf, || "t".into()).unwrap();
            assert_eq!(back, e);
            assert_eq!(seq, 77);
            for i in 0..buf.len() {
                let mut b = buf.clone();
                b[i] ^= 1;
                assert!(
                    Entry::decode(&b, || "t".into()).is_err(),
                    "flip at {i} of {e:?}"
                );
            }
        }
        assert!(Entry::decode(&[0; 64], || "t".into()).is_err());
    }
}
