//! [redb](https://docs.rs/redb)'s `StorageBackend` on a novafs file (cargo feature `redb`).
//!
//! ```no_run
//! use novafs::{Fs, MountOptions, RedbBackend};
//! use redb::{Database, TableDefinition};
//!
//! const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");
//! let fs = Fs::open_or_format("/dev/shm/db.img", 1 << 30, &MountOptions::default())?;
//! let db = Database::builder().create_with_backend(RedbBackend::open(&fs, "/db.redb")?)?;
//! let tx = db.begin_write()?;
//! tx.open_table(T)?.insert(1, b"record".as_slice())?;
//! tx.commit()?; // durable on return
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Why it is crash-safe: redb orders its commit by calling `sync_data` between writing pages
//! and writing the header that points at them. On novafs every `write` (one `File::write_at`)
//! is already atomic and durable when it returns, in program order, so every sync point redb
//! asks for holds at the moment the call before it returns: `sync_data` has nothing left to do
//! (it only checks that the file system is still mounted, so a database whose image was
//! unmounted or crashed fails its commit instead of acknowledging it). A write that a crash
//! interrupts is wholly there or wholly absent (never torn), which is stronger than what redb
//! assumes of a disk file.
//!
//! Locking: the image itself is locked by its mount (one process at a time), so the backend
//! implements none of redb's byte-range locks; redb then runs in its default
//! `ConcurrencyMode::ExclusiveWriter`. Do not open two `Database`s on one novafs file at the
//! same time (redb cannot see the other).

use std::io;
use std::path::Path;

use crate::{File, Fs, Result};

/// A novafs [`File`] as a redb storage backend: `Database::builder().create_with_backend(..)`.
#[derive(Debug)]
pub struct RedbBackend {
    file: File,
}

impl RedbBackend {
    /// Use an open file. It must have been opened for reading and writing (else redb's first
    /// access fails with `BadHandle`'s `io::Error`).
    pub fn new(file: File) -> RedbBackend {
        RedbBackend { file }
    }

    /// Open (creating it if missing, mode 0644) the file at `path` for reading and writing.
    /// The create is atomic and durable on return.
    pub fn open(fs: &Fs, path: impl AsRef<Path>) -> Result<RedbBackend> {
        let file = fs
            .open_options()
            .read(true)
            .write(true)
            .create(true)
            .open(path)?;
        Ok(RedbBackend { file })
    }

    /// The file underneath.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl redb::StorageBackend for RedbBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Fails with `UnexpectedEof` when the range runs past the end, as redb requires.
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        Ok(self.file.read_exact_at(out, offset)?)
    }

    /// One atomic, durable commit; new bytes read as zeros (a hole).
    fn set_len(&self, len: u64) -> io::Result<()> {
        Ok(self.file.set_len(len)?)
    }

    /// Everything written is durable already (see the module documentation); fails once the
    /// file system is unmounted.
    fn sync_data(&self) -> io::Result<()> {
        self.file.metadata()?;
        Ok(())
    }

    /// One atomic, durable commit (`File::write_at`).
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_at(data, offset)?;
        Ok(())
    }
}
