//! Typed errors, with one exhaustive mapping to errno and `std::io::ErrorKind`.

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
    /// Another process (or handle) holds the image.
    #[error("image in use: another process has it open")]
    ImageInUse,
    /// The image was made by a format version this build does not read.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version found on the image.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// Not a novafs image at all.
    #[error("not a novafs image (bad magic)")]
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
            Error::ImageInUse => libc::EBUSY,
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
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
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
            other => {
                let errno = other.errno();
                let kind = io::Error::from_raw_os_error(errno).kind();
                io::Error::new(kind, other)
            }
        }
    }
}
