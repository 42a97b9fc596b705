//! Directory listing: [`ReadDir`] and [`DirEntry`], shaped like `std::fs`'s.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::Arc;

use novafs_engine::{DirEntry as RawDirEntry, Engine};

use crate::{Error, FileType, Metadata, Result};

/// The entries of a directory, from [`crate::Fs::read_dir`] (without `.` and `..`, in no
/// particular order). A snapshot taken by the call: entries added or removed later are not
/// seen. Each item is a `Result` as in `std::fs::ReadDir`; `len()` is known up front.
#[derive(Debug)]
pub struct ReadDir {
    engine: Arc<Engine>,
    dir: PathBuf,
    entries: std::vec::IntoIter<RawDirEntry>,
}

impl ReadDir {
    pub(crate) fn new(engine: Arc<Engine>, dir: PathBuf, entries: Vec<RawDirEntry>) -> ReadDir {
        ReadDir {
            engine,
            dir,
            entries: entries.into_iter(),
        }
    }
}

impl Iterator for ReadDir {
    type Item = Result<DirEntry>;

    fn next(&mut self) -> Option<Result<DirEntry>> {
        let raw = self.entries.next()?;
        Some(Ok(DirEntry {
            engine: self.engine.clone(),
            path: self.dir.join(std::ffi::OsStr::from_bytes(&raw.name)),
            raw,
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for ReadDir {}

/// One entry of a [`ReadDir`].
#[derive(Clone, Debug)]
pub struct DirEntry {
    engine: Arc<Engine>,
    path: PathBuf,
    raw: RawDirEntry,
}

impl DirEntry {
    /// The entry's name (bytes; any byte but `/` and NUL).
    pub fn file_name(&self) -> OsString {
        OsString::from_vec(self.raw.name.clone())
    }

    /// The directory's path as given to `read_dir`, joined with the name.
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The type, as recorded in the directory (no further lookup; symlinks are not followed).
    pub fn file_type(&self) -> Result<FileType> {
        Ok(self.raw.kind.into())
    }

    /// Metadata of the entry itself (a symlink is not followed, as `std::fs::DirEntry`).
    pub fn metadata(&self) -> Result<Metadata> {
        let attr = self
            .engine
            .getattr(self.raw.ino)
            .map_err(|e| Error::at(e, "read metadata of", &self.path))?;
        Ok(Metadata { attr })
    }

    /// Inode number (`std::os::unix::fs::DirEntryExt::ino`).
    pub fn ino(&self) -> u64 {
        self.raw.ino
    }

    /// The name, lossily as UTF-8.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.raw.name).into_owned()
    }
}
