//! Open files and the `OpenOptions` builder.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use novafs_engine::inode::Inode;
use novafs_engine::mapping::MapInner;
use novafs_engine::media::map::VolatileSlice;
use novafs_engine::{Engine, Error as EngineError, Kind, MapMode, SetAttr};

use crate::{path, Error, Metadata, Result};

/// Options for opening a file, like `std::fs::OpenOptions`.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    engine: Arc<Engine>,
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: u32,
}

impl OpenOptions {
    pub(crate) fn new(engine: Arc<Engine>) -> OpenOptions {
        OpenOptions {
            engine,
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            mode: 0o644,
        }
    }
    /// Allow reads.
    pub fn read(&mut self, v: bool) -> &mut Self {
        self.read = v;
        self
    }
    /// Allow writes.
    pub fn write(&mut self, v: bool) -> &mut Self {
        self.write = v;
        self
    }
    /// Every write (`write_at` too, and `std::io::Write`) goes to the end of the file, each
    /// one atomically (implies write).
    pub fn append(&mut self, v: bool) -> &mut Self {
        self.append = v;
        self
    }
    /// Truncate to zero length on open (needs write; not with append).
    pub fn truncate(&mut self, v: bool) -> &mut Self {
        self.truncate = v;
        self
    }
    /// Create the file if it does not exist (needs write or append).
    pub fn create(&mut self, v: bool) -> &mut Self {
        self.create = v;
        self
    }
    /// Create the file, failing if it exists (needs write or append; `create` and
    /// `truncate` are then ignored).
    pub fn create_new(&mut self, v: bool) -> &mut Self {
        self.create_new = v;
        self
    }
    /// Permission bits for a created file (default 0644).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    /// The combinations `std::fs::OpenOptions` refuses on Unix (`EINVAL`, `InvalidInput`):
    /// no access at all; `truncate`, `create` or `create_new` without `write` or `append`;
    /// `append` with `truncate` (unless `create_new`).
    fn validate(&self) -> novafs_engine::Result<()> {
        use novafs_engine::Error;
        let writable = self.write || self.append;
        if !self.read && !writable {
            return Err(Error::InvalidArgument(
                "open with neither read nor write nor append".into(),
            ));
        }
        if (self.create || self.create_new || self.truncate) && !writable {
            return Err(Error::InvalidArgument(
                "create, create_new and truncate need write or append access".into(),
            ));
        }
        if self.append && self.truncate && !self.create_new {
            return Err(Error::InvalidArgument(
                "append and truncate together".into(),
            ));
        }
        Ok(())
    }

    /// Open `p` with these options. Creating a file (`create`, `create_new`) and truncating
    /// one are each atomic and durable on return.
    pub fn open(&self, p: impl AsRef<Path>) -> Result<File> {
        let p = p.as_ref();
        self.open_engine(p)
            .map_err(|e| Error::at(e, "open file", p))
    }

    fn open_engine(&self, p: &Path) -> novafs_engine::Result<File> {
        /// Creates tried again after the name vanished between a create and an open.
        const CREATE_RETRIES: u32 = 100;
        use novafs_engine::Error;
        use std::os::unix::ffi::OsStrExt;
        let bytes = p.as_os_str().as_bytes();
        let writable = self.write || self.append;
        self.validate()?;
        let e = &self.engine;
        // A new file's handle and attributes come with its create (no second lookup).
        let (inode, attr) = if self.create || self.create_new {
            let (parent, name) = path::resolve_parent(e, bytes)?;
            // The create checks the name under the directory's lock (no lookup first: one
            // directory round trip less per new file). Linux's O_CREAT creates or opens
            // atomically; here a name that another thread removes between the create's
            // `AlreadyExists` and the open is created again (a bounded number of times: a
            // dangling symlink's target is `NotFound` every time).
            let mut tries = 0;
            loop {
                match e.create_open(parent, name, self.mode, 0, 0) {
                    Ok((inode, attr)) => break (inode, Some(attr)),
                    Err(Error::AlreadyExists) if !self.create_new => {
                        match path::resolve(e, bytes, true).and_then(|ino| e.open_inode(ino)) {
                            Ok(inode) => break (inode, None),
                            Err(Error::NotFound) if tries < CREATE_RETRIES => tries += 1,
                            Err(err) => return Err(err),
                        }
                    }
                    // A read-only mount opens an existing file as it would without `create`
                    // (`create_new`: exists, as Linux answers `O_EXCL` before `EROFS`).
                    Err(Error::ReadOnly) if e.lookup_ent(parent, name).is_ok() => {
                        if self.create_new {
                            return Err(Error::AlreadyExists);
                        }
                        break (e.open_inode(path::resolve(e, bytes, true)?)?, None);
                    }
                    Err(err) => return Err(err),
                }
            }
        } else {
            (e.open_inode(path::resolve(e, bytes, true)?)?, None)
        };
        let file = File {
            engine: e.clone(),
            path: Arc::from(p),
            inode,
            read: self.read,
            write: writable,
            append: self.append,
            pos: AtomicU64::new(0),
        };
        // After the handle exists: an error from here on releases it (File's drop).
        let attr = match attr {
            Some(a) => a,
            None => e.attr_of(&file.inode)?,
        };
        if attr.kind == Kind::Dir && writable {
            return Err(Error::IsADirectory);
        }
        // A file this open just created is empty already: no log entry for it.
        if self.truncate && !self.create_new && attr.size != 0 {
            file.set_len_engine(0)?;
        }
        Ok(file)
    }
}

/// An open file. Closing (dropping) it releases the inode if it was unlinked meanwhile.
///
/// Positional calls (`read_at`, `write_at`, like `std::os::unix::fs::FileExt`) ignore the
/// cursor; `std::io::{Read, Write, Seek}` (on `File` and on `&File`, as std has them) use the
/// handle's own cursor, starting at 0. Every `write`/`write_at` is one atomic commit, durable
/// on return (`flush` has nothing to do); in append mode each goes to the end of the file
/// atomically, even with other handles appending, and moves the cursor past it.
///
/// A failed call's error names the operation and the path the handle was opened with
/// ([`Error::operation`], [`Error::path`]; "failed to write `/wal`: no space left"), as the
/// `fs-err` crate does: the file may have been renamed or unlinked since.
#[derive(Debug)]
pub struct File {
    engine: Arc<Engine>,
    /// The path this handle was opened with (error messages name it).
    path: Arc<Path>,
    inode: Arc<Inode>,
    read: bool,
    write: bool,
    append: bool,
    /// The cursor of `Read`/`Write`/`Seek`. Through `&File` from several threads the
    /// interleaving of cursor moves is unspecified, as with a shared std file offset.
    pos: AtomicU64,
}

impl File {
    /// Inode number.
    pub fn ino(&self) -> u64 {
        self.inode.ino
    }

    /// The path this handle was opened with (it may have been renamed or unlinked since).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `r`, its error naming `op` and this handle's path.
    fn at<T>(&self, r: novafs_engine::Result<T>, op: &'static str) -> Result<T> {
        r.map_err(|e| Error::at(e, op, &self.path))
    }

    fn need_write(&self) -> novafs_engine::Result<()> {
        if self.write {
            Ok(())
        } else {
            Err(EngineError::BadHandle("not opened for writing"))
        }
    }

    /// Read up to `buf.len()` bytes at `offset`; returns how many (0 at end of file). One
    /// consistent snapshot: a concurrent write is wholly in it or not.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.at(self.read_engine(buf, offset), "read")
    }

    fn read_engine(&self, buf: &mut [u8], offset: u64) -> novafs_engine::Result<usize> {
        if !self.read {
            return Err(EngineError::BadHandle("not opened for reading"));
        }
        self.engine.read_open(&self.inode, offset, buf)
    }

    /// Fill `buf` from `offset`, or fail with `UnexpectedEof` (`io::ErrorKind::UnexpectedEof`)
    /// if the file ends first.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let r = self.read_engine(buf, offset).and_then(|n| {
            if n < buf.len() {
                Err(EngineError::UnexpectedEof)
            } else {
                Ok(())
            }
        });
        self.at(r, "read")
    }

    /// Write all of `buf` at `offset` (at the end of file in append mode): atomic and durable
    /// on return. Returns the bytes written.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize> {
        let off = if self.append { None } else { Some(offset) };
        let r = self
            .need_write()
            .and_then(|()| self.engine.write_inode(&self.inode, off, buf));
        self.at(r, "write").map(|_| buf.len())
    }

    /// Append `buf` at the end of the file, atomically and durably on return (concurrent
    /// appends never interleave); returns the offset it landed at.
    pub fn append(&self, buf: &[u8]) -> Result<u64> {
        let r = self
            .need_write()
            .and_then(|()| self.engine.write_inode(&self.inode, None, buf));
        self.at(r, "append to")
    }

    /// Truncate or extend (holes read as zeros). Atomic and durable on return.
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.at(self.set_len_engine(len), "set the length of")
    }

    fn set_len_engine(&self, len: u64) -> novafs_engine::Result<()> {
        self.need_write()?;
        self.engine
            .setattr(
                self.inode.ino,
                &SetAttr {
                    size: Some(len),
                    ..SetAttr::default()
                },
            )
            .map(|_| ())
    }

    /// Deallocate a range (it reads as zeros; the length is unchanged). Atomic and durable
    /// on return.
    pub fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        let r = self
            .need_write()
            .and_then(|()| self.engine.punch_hole(self.inode.ino, offset, len));
        self.at(r, "punch a hole in")
    }

    /// Zero a range and back it with zero-filled blocks (`fallocate(FALLOC_FL_ZERO_RANGE)`),
    /// atomic and durable on return. The file grows to cover the range, unless `keep_size`
    /// (then the range stops at the end of the file).
    pub fn zero_range(&self, offset: u64, len: u64, keep_size: bool) -> Result<()> {
        let r = self.need_write().and_then(|()| {
            self.engine
                .zero_range(self.inode.ino, offset, len, keep_size)
        });
        self.at(r, "zero a range of")
    }

    /// Allocate zeroed blocks for a range, extending the file if needed (fallocate). Atomic
    /// and durable on return.
    pub fn allocate(&self, offset: u64, len: u64) -> Result<()> {
        let r = self
            .need_write()
            .and_then(|()| self.engine.allocate(self.inode.ino, offset, len));
        self.at(r, "allocate in")
    }

    /// Allocate zeroed blocks for a range without changing the length
    /// (`fallocate(FALLOC_FL_KEEP_SIZE)`): blocks past the end are kept (counted in
    /// `blocks`, read as zeros once the file grows over them; a later size change drops the
    /// ones beyond the new length). Atomic and durable on return.
    pub fn allocate_keep_size(&self, offset: u64, len: u64) -> Result<()> {
        let r = self
            .need_write()
            .and_then(|()| self.engine.allocate_with(self.inode.ino, offset, len, true));
        self.at(r, "allocate in")
    }

    /// Everything written through `write_at` is already durable; this also migrates the pages
    /// stored through mappings into the file (one atomic commit), and msyncs in Msync mode.
    pub fn sync_all(&self) -> Result<()> {
        // Like fsync(2) on any descriptor: pages dirtied through mappings are written back too.
        let r = match self.engine.cache_sync(&self.inode) {
            Ok(()) | Err(EngineError::ReadOnly) => self.engine.sync_media(),
            Err(e) => Err(e),
        };
        self.at(r, "sync")
    }

    /// Same as [`File::sync_all`].
    pub fn sync_data(&self) -> Result<()> {
        self.sync_all()
    }

    /// Map `[offset, offset + len)` for direct access (DESIGN §5.4.1): a range of this
    /// process's address space whose pages are the file's blocks (see [`Mapping`]). The range
    /// must be non-empty and lie within the file (extend it with [`File::set_len`] first); a
    /// directory is `IsADirectory`; after unmount, `Unmounted`. A handle not opened for
    /// writing gives a read-only mapping (`prepare_write` and `write_at` fail with
    /// `BadHandle`).
    pub fn map(&self, offset: u64, len: u64, mode: MapMode) -> Result<Mapping> {
        let inner = self.at(self.engine.map_range(&self.inode, offset, len, mode), "map")?;
        let inode = match self.engine.open_inode(self.inode.ino) {
            Ok(i) => i,
            Err(e) => {
                self.engine.map_close(&inner);
                return self.at(Err(e), "map");
            }
        };
        Ok(Mapping {
            engine: self.engine.clone(),
            path: self.path.clone(),
            inode,
            inner: Some(inner),
            writable: self.write,
        })
    }

    /// [`File::map`] with transparent write access (DESIGN §5.4.1): a store to a page not
    /// yet writable faults (userfaultfd write-protect) to the engine's handler thread, which
    /// attaches the page to the write cache, maps it writable and lets the store proceed — no
    /// `prepare_write` needed (it still works, and saves the fault). Needs a handle opened for
    /// writing (`BadHandle`); `NotSupported` where the kernel or `vm.unprivileged_userfaultfd`
    /// refuses userfaultfd write-protect, and on the traced backend. A store that cannot get
    /// write access (the file shrank under it, unmount, no space) gets SIGSEGV.
    pub fn map_transparent(&self, offset: u64, len: u64, mode: MapMode) -> Result<Mapping> {
        let r = self.need_write().and_then(|()| {
            self.engine
                .map_range_transparent(&self.inode, offset, len, mode)
        });
        let inner = self.at(r, "map")?;
        let inode = match self.engine.open_inode(self.inode.ino) {
            Ok(i) => i,
            Err(e) => {
                self.engine.map_close(&inner);
                return self.at(Err(e), "map");
            }
        };
        Ok(Mapping {
            engine: self.engine.clone(),
            path: self.path.clone(),
            inode,
            inner: Some(inner),
            writable: true,
        })
    }

    /// Metadata (a read).
    pub fn metadata(&self) -> Result<Metadata> {
        let attr = self.at(self.engine.attr_of(&self.inode), "read the metadata of")?;
        Ok(Metadata { attr })
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = self.engine.release_inode(&self.inode);
    }
}

impl io::Read for &File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.pos.load(Ordering::Acquire);
        let n = self.read_at(buf, pos)?;
        self.pos.store(pos + n as u64, Ordering::Release);
        Ok(n)
    }
}

impl io::Write for &File {
    /// Writes all of `buf` at the cursor (at the end of file in append mode) in one atomic,
    /// durable commit.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let at = if self.append {
            None
        } else {
            Some(self.pos.load(Ordering::Acquire))
        };
        let r = self
            .need_write()
            .and_then(|()| self.engine.write_inode(&self.inode, at, buf));
        let off = self.at(r, "write")?;
        self.pos.store(off + buf.len() as u64, Ordering::Release);
        Ok(buf.len())
    }

    /// Nothing to do: every write is durable on return.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Seek for &File {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let (base, delta) = match to {
            io::SeekFrom::Start(n) => (n, 0),
            io::SeekFrom::End(d) => (self.metadata()?.len(), d),
            io::SeekFrom::Current(d) => (self.pos.load(Ordering::Acquire), d),
        };
        let pos = base.checked_add_signed(delta).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        self.pos.store(pos, Ordering::Release);
        Ok(pos)
    }
}

impl io::Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl io::Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl io::Seek for File {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        (&*self).seek(to)
    }
}

/// A mapped range of a file: real memory (DESIGN §5.4.1), with MAP_SYNC semantics (or
/// failure-atomic ones, see [`MapMode`]).
///
/// Loads are plain loads of the image's pages through [`Mapping::as_slice`] (a
/// [`VolatileSlice`]: bounds-checked volatile copies and 8-byte atomics, never `&[u8]` into
/// shared memory) or [`Mapping::as_ptr`]. Pages are read-only until [`Mapping::prepare_write`]:
/// it copies each clean page into a new persistent page attached to the inode's write cache,
/// makes that attachment durable, and only then maps the virtual page writable. Stores through
/// the addresses are durable once [`Mapping::persist`] returns (flush + fence of the program's
/// own addresses, no lock, no system call; msync in msync mode), with no fsync.
///
/// A store to a page that was not prepared is a store to read-only memory: the process gets
/// SIGSEGV, as with any `PROT_READ` mapping; the image is never touched by it. A migration
/// ([`Mapping::sync`], [`File::sync_all`], `Fs::sync`, background writeback) keeps the page
/// mapped on the same block; in [`MapMode::Sync`] it stays writable, in [`MapMode::Atomic`] it
/// becomes read-only (prepare it again before the next store: a fresh attachment). An
/// operation that replaces the page's block (another handle's `write_at`, `set_len`,
/// `punch_hole`, `allocate` over it) leaves it read-only on the new block. After unmount or
/// crash every page reads as zeros and stores fault.
///
/// Raw use of [`Mapping::as_ptr`] (dereferencing is the caller's `unsafe`): stay within
/// `[as_ptr(), as_ptr() + len())`; store only into prepared pages; no references into the
/// memory, only raw accesses (other mappings, threads and the engine share it), and aligned
/// 8-byte atomics (`AtomicU64::from_ptr`) wherever an access can race with another (the
/// engine's `read_at` of the page, another thread or mapping): the slice's own copies are made
/// of those, so a race between them is defined; synchronise with other writers; stop before
/// the `Mapping` drops.
///
/// If the image file is truncated or shrunk while mounted, a load or store to a page past its
/// new end cannot return an error: the process exits with status
/// [`IMAGE_FAULT_EXIT`](novafs_engine::media::IMAGE_FAULT_EXIT) (86) and a message naming the
/// cause, instead of dying of a bare SIGBUS (DESIGN.md §2).
#[derive(Debug)]
pub struct Mapping {
    engine: Arc<Engine>,
    /// The path of the handle that made the mapping (error messages name it).
    path: Arc<Path>,
    inode: Arc<Inode>,
    /// `Some` until drop (taken there so the addresses are unmapped before the inode goes).
    inner: Option<Arc<MapInner>>,
    writable: bool,
}

impl Mapping {
    fn inner(&self) -> &MapInner {
        self.inner
            .as_deref()
            .unwrap_or_else(|| unreachable!("taken only in drop"))
    }

    /// `r`, its error naming `op` and the path of the handle that made the mapping.
    fn at<T>(&self, r: novafs_engine::Result<T>, op: &'static str) -> Result<T> {
        r.map_err(|e| Error::at(e, op, &self.path))
    }

    /// File offset of the mapping's first byte.
    pub fn offset(&self) -> u64 {
        self.inner().range().0
    }

    /// Length of the mapping.
    pub fn len(&self) -> u64 {
        self.inner().range().1
    }

    /// Whether the mapping is empty (never: `map` refuses empty ranges).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The persistence mode.
    pub fn mode(&self) -> MapMode {
        self.inner().mode()
    }

    /// The mapped bytes as a volatile slice (offset 0 is the mapping's first byte).
    pub fn as_slice(&self) -> VolatileSlice<'_> {
        self.inner().slice()
    }

    /// The address of the mapping's first byte (see the type's docs for the rules of raw use).
    pub fn as_ptr(&self) -> *mut u8 {
        self.as_slice().as_ptr()
    }

    fn range(&self, at: u64, n: u64) -> novafs_engine::Result<u64> {
        match at.checked_add(n) {
            Some(end) if end <= self.len() => Ok(self.offset() + at),
            _ => Err(EngineError::InvalidArgument(format!(
                "access [{at}, {}) outside the mapping of {} bytes",
                at.saturating_add(n),
                self.len()
            ))),
        }
    }

    /// Make `[at, at + len)` writable (mapping offsets): each clean page is attached to the
    /// write cache, durably, then mapped read-write. Returns the prepared range's slice.
    /// Needs a handle opened for writing.
    pub fn prepare_write(&self, at: u64, len: u64) -> Result<VolatileSlice<'_>> {
        let r = (|| {
            if !self.writable {
                return Err(EngineError::BadHandle("mapping of a read-only handle"));
            }
            let off = self.range(at, len)?;
            self.engine
                .map_prepare(&self.inode, self.inner(), off, len)?;
            self.as_slice().subslice(at as usize, len as usize)
        })();
        self.at(r, "prepare a mapped range of")
    }

    /// Load `buf.len()` bytes at mapping offset `at` (a copy out of the mapped pages).
    pub fn read_at(&self, buf: &mut [u8], at: u64) -> Result<usize> {
        let r = (|| {
            self.range(at, buf.len() as u64)?;
            self.engine.check_mounted()?;
            self.as_slice().read(at as usize, buf)
        })();
        self.at(r, "read a mapping of").map(|_| buf.len())
    }

    /// Store `data` at mapping offset `at`: `prepare_write` of the range, then a store through
    /// the mapped addresses (durable after [`Mapping::persist`]).
    pub fn write_at(&self, data: &[u8], at: u64) -> Result<()> {
        let r = (|| {
            if !self.writable {
                return Err(EngineError::BadHandle("mapping of a read-only handle"));
            }
            let off = self.range(at, data.len() as u64)?;
            self.engine.map_store(&self.inode, self.inner(), off, data)
        })();
        self.at(r, "store to a mapping of")
    }

    /// Make the stores in `[at, at + len)` durable: flush of the program's addresses + one
    /// fence (msync in msync mode).
    #[inline]
    pub fn persist(&self, at: u64, len: u64) -> Result<()> {
        match self.inner.as_deref() {
            Some(m) => self.at(
                self.engine.map_persist_at(&self.inode, m, at, len),
                "persist a mapping of",
            ),
            None => unreachable!("taken only in drop"),
        }
    }

    /// Change the mapping's length (say, after the file grew), like `mremap(MREMAP_MAYMOVE)`:
    /// the range `[offset, offset + len)` is mapped anew (same mode), so the addresses may
    /// move (`&mut self`: no slice of the old range can be alive). Write access must be
    /// prepared again. Errors as [`File::map`]; on error the old mapping stays.
    pub fn remap(&mut self, len: u64) -> Result<()> {
        let (offset, mode) = (self.offset(), self.mode());
        let new = self.at(
            self.engine.map_range(&self.inode, offset, len, mode),
            "remap",
        )?;
        if let Some(old) = self.inner.replace(new) {
            self.engine.map_close(&old);
        }
        Ok(())
    }

    /// msync: migrate every cached page of the file into its file map, atomically. The pages
    /// stay mapped (writable in `Sync` mode; read-only in `Atomic` mode, prepare them again).
    pub fn sync(&self) -> Result<()> {
        self.at(self.engine.cache_sync(&self.inode), "sync a mapping of")
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(m) = self.inner.take() {
            self.engine.map_close(&m);
        }
        let _ = self.engine.release_inode(&self.inode);
    }
}
