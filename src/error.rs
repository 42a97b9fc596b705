//! The facade's error: the engine's typed error ([`EngineError`]) plus, for calls that take a
//! path, the operation and the path(s) (as the `fs-err` crate does for `std::fs`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use novafs_engine::Error as EngineError;

/// Result alias of the facade.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of a facade call: what went wrong ([`Error::engine_error`], a typed
/// [`EngineError`] to match on) and, for calls that take a path, which operation on which path
/// ("failed to open file `/a/b`: not found").
///
/// [`Error::kind`] and [`Error::errno`] are the engine error's; the context changes only the
/// message. Converted into `std::io::Error`, it keeps its `kind()` and carries its errno as
/// `raw_os_error()` (see the `From` impl for the two exceptions); `std::io::Error` cannot
/// hold both an errno and a message, so that conversion drops the message: keep the
/// `novafs::Error` (it implements `std::error::Error`) where the message matters.
pub struct Error {
    cause: EngineError,
    context: Option<Box<Context>>,
}

#[derive(Debug)]
struct Context {
    /// What was being done, as in "failed to {op} `{path}`".
    op: &'static str,
    path: PathBuf,
    /// The second path of two-path calls (rename's destination, a link's target).
    to: Option<PathBuf>,
}

impl Error {
    /// `cause` while doing `op` on `path`.
    pub(crate) fn at(cause: impl Into<Error>, op: &'static str, path: &Path) -> Error {
        Error {
            cause: cause.into().cause,
            context: Some(Box::new(Context {
                op,
                path: path.to_path_buf(),
                to: None,
            })),
        }
    }

    /// `cause` while doing `op` from `path` to `to`.
    pub(crate) fn at2(cause: impl Into<Error>, op: &'static str, path: &Path, to: &Path) -> Error {
        Error {
            cause: cause.into().cause,
            context: Some(Box::new(Context {
                op,
                path: path.to_path_buf(),
                to: Some(to.to_path_buf()),
            })),
        }
    }

    /// The typed cause: match on it (`matches!(e.engine_error(), EngineError::NotFound)`).
    pub fn engine_error(&self) -> &EngineError {
        &self.cause
    }

    /// The typed cause, by value (the context is dropped).
    pub fn into_engine_error(self) -> EngineError {
        self.cause
    }

    /// The `std::io::ErrorKind` (the errno's, except `UnexpectedEof`; an I/O error's own).
    pub fn kind(&self) -> io::ErrorKind {
        self.cause.io_kind()
    }

    /// The errno this error maps to (`EngineError::errno`).
    pub fn errno(&self) -> i32 {
        self.cause.errno()
    }

    /// The errno, as `std::io::Error::raw_os_error` names it: always `Some(self.errno())`.
    pub fn raw_os_error(&self) -> Option<i32> {
        Some(self.errno())
    }

    /// The operation that failed ("open file", "rename", ...), for calls that take a path.
    pub fn operation(&self) -> Option<&'static str> {
        self.context.as_ref().map(|c| c.op)
    }

    /// The path the failed call was given (a rename's source, a link's original).
    pub fn path(&self) -> Option<&Path> {
        self.context.as_ref().map(|c| c.path.as_path())
    }

    /// The second path of a two-path call (a rename's destination, a new link's name).
    pub fn second_path(&self) -> Option<&Path> {
        self.context.as_ref().and_then(|c| c.to.as_deref())
    }

    /// A corruption error (no context).
    pub fn corrupt(what: impl Into<String>, location: impl Into<String>) -> Error {
        EngineError::corrupt(what, location).into()
    }
}

impl From<EngineError> for Error {
    fn from(cause: EngineError) -> Error {
        Error {
            cause,
            context: None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        EngineError::Io(e).into()
    }
}

impl From<Error> for EngineError {
    /// The typed cause; the context is dropped.
    fn from(e: Error) -> EngineError {
        e.cause
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.context {
            None => self.cause.fmt(f),
            Some(c) => {
                write!(f, "failed to {} `{}`", c.op, c.path.display())?;
                if let Some(to) = &c.to {
                    write!(f, " to `{}`", to.display())?;
                }
                write!(f, ": {}", self.cause)
            }
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The cause first, as `EngineError`'s Debug, so that `{:?}` reads like a variant.
        let mut d = f.debug_struct("Error");
        d.field("cause", &self.cause);
        if let Some(c) = &self.context {
            d.field("op", &c.op).field("path", &c.path);
            if let Some(to) = &c.to {
                d.field("to", to);
            }
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    /// The cause's own source (an I/O error's), not the cause itself: the message already
    /// includes the cause's, and an error reporter would print it twice.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.cause)
    }
}

impl From<Error> for io::Error {
    /// `io::Error::from_raw_os_error(errno)`: the same `kind()`, and `raw_os_error()` is the
    /// errno. Two exceptions keep their own shape: `UnexpectedEof` (no errno has that kind; like
    /// std's `read_exact`, an `UnexpectedEof` error with the message) and a host I/O error
    /// (returned as it came, with its own `raw_os_error()`; one without an OS code carries the
    /// message instead).
    fn from(e: Error) -> io::Error {
        match e.cause {
            EngineError::UnexpectedEof => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            EngineError::Io(io) if e.context.is_none() || io.raw_os_error().is_some() => io,
            EngineError::Io(io) => {
                let kind = io.kind();
                io::Error::new(
                    kind,
                    Error {
                        cause: EngineError::Io(io),
                        context: e.context,
                    },
                )
            }
            other => io::Error::from_raw_os_error(other.errno()),
        }
    }
}
