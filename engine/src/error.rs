//! Typed errors, with one exhaustive mapping to errno and `std::io::ErrorKind`.
#![forbid(unsafe_code)]

use std::io;

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path component or inode does not exist.
    #[error("not found")]
    NotFound,
    /// The target name already exists.
    #[error("already exists")]
    AlreadyExists,
    /// A directory was expected.
    #[error("not a directory")]
    NotADirectory,
    /// A non-directory was expected.
    #[error("is a directory")]
    IsADirectory,
    /// `remove_dir` or rename-over on a directory that has entries.
    #[error("directory not empty")]
    DirectoryNotEmpty,
    /// A name longer than 255 bytes.
    #[error("name too long ({0} bytes, the limit is 255)")]
    NameTooLong(usize),
    /// A malformed path or name.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// An argument out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No space left (the operation did nothing).
    #[error("no space left on the image")]
    NoSpace,
    /// No free inode left.
    #[error("no free inodes left on the image")]
    NoInodes,
    /// Another mount holds the image's lock: another process, or another `Fs` of this one
    /// that was not unmounted. `pid` is the holder's process id as the kernel lists it in
    /// `/proc/locks` (`None` when it cannot be read there).
    #[error("image in use: {}", match pid { Some(p) => format!("process {p} has it open"), None => "another process has it open".into() })]
    ImageInUse {
        /// The process holding the image's lock.
        pid: Option<u32>,
    },
    /// The file system was unmounted (or crashed, for tests): a handle or clone that outlived
    /// the unmount fails every call.
    #[error("the file system was unmounted")]
    Unmounted,
    /// A read reached the end of the file before filling the buffer (`read_exact_at`).
    #[error("unexpected end of file")]
    UnexpectedEof,
    /// The image was made by a format version this build does not read.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version found on the image.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// Not a novafs image at all (an empty file, or no novafs superblock magic).
    #[error("not a novafs image")]
    NotNovafs,
    /// Damage detected on the media.
    #[error("corrupt {what} at {location}")]
    Corrupt {
        /// What is damaged.
        what: String,
        /// Where: inode, block, offset.
        location: String,
    },
    /// Too many symbolic links, or a rename into its own subtree.
    #[error("too many levels of symbolic links")]
    Loop,
    /// Moving a directory into its own subtree.
    #[error("cannot move a directory into itself")]
    RenameIntoSelf,
    /// Too many hard links.
    #[error("too many links")]
    TooManyLinks,
    /// The handle was not opened for this access.
    #[error("bad file handle: {0}")]
    BadHandle(&'static str),
    /// `require_dax` was set and MAP_SYNC was refused.
    #[error("MAP_SYNC (DAX) is not available for this image and require_dax was set")]
    DaxUnavailable,
    /// Not supported by novafs.
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    /// `lseek(SEEK_DATA/SEEK_HOLE)` at or past the end, or no data after the offset (ENXIO).
    #[error("offset at or past the end of the file")]
    PastEnd,
    /// File too large.
    #[error("file too large")]
    FileTooLarge,
    /// Operation not permitted (e.g. hard link to a directory).
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    /// The file system was opened read-only.
    #[error("read-only file system")]
    ReadOnly,
    /// The extended attribute does not exist (ENODATA).
    #[error("no such attribute")]
    NoData,
    /// A result does not fit, or an extended-attribute name is empty or longer than 255 bytes
    /// (ERANGE, as Linux answers).
    #[error("out of range: {0}")]
    OutOfRange(&'static str),
    /// An extended-attribute value larger than 64 KiB (E2BIG).
    #[error("too big: {0}")]
    TooBig(&'static str),
    /// Refused by the file system's rules, e.g. a default ACL on a non-directory (EACCES).
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    /// An I/O error from the host.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// The errno this error maps to.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::AlreadyExists => libc::EEXIST,
            Error::NotADirectory => libc::ENOTDIR,
            Error::IsADirectory => libc::EISDIR,
            Error::DirectoryNotEmpty => libc::ENOTEMPTY,
            Error::NameTooLong(_) => libc::ENAMETOOLONG,
            Error::InvalidPath(_) | Error::InvalidArgument(_) => libc::EINVAL,
            Error::NoSpace | Error::NoInodes => libc::ENOSPC,
            Error::ImageInUse { .. } => libc::EBUSY,
            Error::Unmounted => libc::ENOTCONN,
            Error::UnexpectedEof => libc::EIO,
            Error::UnsupportedVersion { .. } | Error::NotNovafs => libc::EINVAL,
            Error::Corrupt { .. } => libc::EUCLEAN,
            Error::Loop => libc::ELOOP,
            Error::RenameIntoSelf => libc::EINVAL,
            Error::TooManyLinks => libc::EMLINK,
            Error::BadHandle(_) => libc::EBADF,
            Error::DaxUnavailable => libc::EOPNOTSUPP,
            Error::NotSupported(_) => libc::EOPNOTSUPP,
            Error::FileTooLarge => libc::EFBIG,
            Error::PastEnd => libc::ENXIO,
            Error::NotPermitted(_) => libc::EPERM,
            Error::ReadOnly => libc::EROFS,
            Error::NoData => libc::ENODATA,
            Error::OutOfRange(_) => libc::ERANGE,
            Error::TooBig(_) => libc::E2BIG,
            Error::PermissionDenied(_) => libc::EACCES,
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// The `std::io::ErrorKind` this error maps to (the errno's, except `UnexpectedEof`,
    /// which has no errno of its own).
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Error::Io(e) => e.kind(),
            Error::UnexpectedEof => io::ErrorKind::UnexpectedEof,
            other => io::Error::from_raw_os_error(other.errno()).kind(),
        }
    }

    /// Shorthand for a corruption error.
    pub fn corrupt(what: impl Into<String>, location: impl Into<String>) -> Error {
        Error::Corrupt {
            what: what.into(),
            location: location.into(),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            other => io::Error::new(other.io_kind(), other),
        }
    }
}
