//! # novafs
//!
//! A NOVA-style, log-structured file system that lives in a byte-addressable persistent
//! region: a file on a DAX file system, a devdax device, or any file (a `/dev/shm` file is the
//! everyday stand-in for persistent memory).
//!
//! Every metadata operation, every `write_at` / `std::io::Write::write` and [`Fs::write`] is
//! atomic and durable when it returns: no fsync is needed, and after a crash such a call is
//! wholly there or wholly absent. Each call's documentation says what it commits. The
//! exceptions: [`Fs::create_dir_all`] (one commit per directory), [`Fs::create`] of an existing
//! file (create-or-open, then truncate), and stores through a [`Mapping`], which are durable
//! once persisted (see there).
//!
//! ```
//! use novafs::{Fs, FormatOptions, MountOptions};
//! # let dir = tempfile::tempdir().unwrap();
//! # let image = dir.path().join("doc.img");
//! let fs = Fs::format(&image, 16 << 20, &FormatOptions::default())?;
//! fs.create_dir("/logs")?;
//! let f = fs.create("/logs/today")?;
//! f.write_at(b"hello, pmem", 0)?; // atomic and durable on return
//! drop(f);
//! fs.rename("/logs/today", "/logs/yesterday")?;
//! fs.unmount()?;
//!
//! let fs = Fs::open(&image, &MountOptions::default())?;
//! let f = fs.open_options().read(true).open("/logs/yesterday")?;
//! let mut buf = [0u8; 5];
//! f.read_at(&mut buf, 0)?;
//! assert_eq!(&buf, b"hello");
//! # Ok::<(), novafs::Error>(())
//! ```

mod dir;
mod error;
mod file;
mod path;
#[cfg(feature = "redb")]
mod redb_backend;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use dir::{DirEntry, ReadDir};
pub use error::{EngineError, Error, Result};
pub use file::{File, Mapping, OpenOptions};
pub use novafs_engine::media::map::VolatileSlice;
pub use novafs_engine::{
    Attr, DirEntry as RawDirEntry, Engine, FormatOptions, GcConfig, GcStats, Kind, LogStats,
    MapMode, MediaMode, MountOptions, MountReport, RenameFlags, SetAttr, StatFs, WritebackConfig,
    XattrFlags, BLOCK, NAME_MAX, ROOT_INO,
};
#[cfg(feature = "redb")]
pub use redb_backend::RedbBackend;

/// A mounted novafs image.
///
/// `Fs` is `Send + Sync` and cheap to clone; operations on different files and directories
/// run in parallel.
#[derive(Clone, Debug)]
pub struct Fs {
    engine: Arc<Engine>,
    report: MountReport,
}

/// File type of a [`Metadata`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe (FIFO).
    Fifo,
    /// Unix domain socket.
    Socket,
    /// Character device node.
    CharDevice,
    /// Block device node.
    BlockDevice,
}

impl From<Kind> for FileType {
    fn from(k: Kind) -> FileType {
        match k {
            Kind::File => FileType::File,
            Kind::Dir => FileType::Dir,
            Kind::Symlink => FileType::Symlink,
            Kind::Fifo => FileType::Fifo,
            Kind::Socket => FileType::Socket,
            Kind::CharDev => FileType::CharDevice,
            Kind::BlockDev => FileType::BlockDevice,
        }
    }
}

impl From<FileType> for Kind {
    fn from(t: FileType) -> Kind {
        match t {
            FileType::File => Kind::File,
            FileType::Dir => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharDevice => Kind::CharDev,
            FileType::BlockDevice => Kind::BlockDev,
        }
    }
}

/// Metadata of a file, directory or symlink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    attr: Attr,
}

fn to_time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

impl Metadata {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.attr.size
    }
    /// Whether the length is zero.
    pub fn is_empty(&self) -> bool {
        self.attr.size == 0
    }
    /// File type.
    pub fn file_type(&self) -> FileType {
        self.attr.kind.into()
    }
    /// Is a regular file.
    pub fn is_file(&self) -> bool {
        self.attr.kind == Kind::File
    }
    /// Is a directory.
    pub fn is_dir(&self) -> bool {
        self.attr.kind == Kind::Dir
    }
    /// Is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.attr.kind == Kind::Symlink
    }
    /// Device number of a device node (Linux `dev_t` encoding; 0 for every other kind).
    pub fn rdev(&self) -> u64 {
        self.attr.rdev
    }
    /// Inode number.
    pub fn ino(&self) -> u64 {
        self.attr.ino
    }
    /// Hard links.
    pub fn nlink(&self) -> u32 {
        self.attr.nlink
    }
    /// Permission bits.
    pub fn mode(&self) -> u32 {
        self.attr.mode
    }
    /// Owner.
    pub fn uid(&self) -> u32 {
        self.attr.uid
    }
    /// Group.
    pub fn gid(&self) -> u32 {
        self.attr.gid
    }
    /// Data blocks allocated.
    pub fn blocks(&self) -> u64 {
        self.attr.blocks
    }
    /// Last access (set by `set_times`; reads do not update it).
    pub fn accessed(&self) -> SystemTime {
        to_time(self.attr.atime_ns)
    }
    /// Last modification.
    pub fn modified(&self) -> SystemTime {
        to_time(self.attr.mtime_ns)
    }
    /// Last status change.
    pub fn changed(&self) -> SystemTime {
        to_time(self.attr.ctime_ns)
    }
    /// Creation.
    pub fn created(&self) -> SystemTime {
        to_time(self.attr.crtime_ns)
    }
    /// The raw attributes.
    pub fn attr(&self) -> &Attr {
        &self.attr
    }
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

impl Fs {
    /// Format `image` as a novafs image of `size_bytes` and mount it. The file is created if
    /// missing; an existing non-empty file is refused with `AlreadyExists` unless
    /// [`FormatOptions::overwrite`] is set. Durable on return (a crash during format leaves a
    /// file that is not a novafs image: the superblock is written last).
    pub fn format(image: impl AsRef<Path>, size_bytes: u64, opts: &FormatOptions) -> Result<Fs> {
        let image = image.as_ref();
        let engine = Engine::format(image, size_bytes, opts)
            .map_err(|e| Error::at(e, "format image", image))?;
        engine.start_writeback(WritebackConfig::default());
        Ok(Fs {
            engine,
            report: MountReport {
                clean: true,
                ..MountReport::default()
            },
        })
    }

    /// Mount `image`; runs recovery if the last session did not unmount cleanly. Takes the
    /// image's exclusive lock: while another mount holds it, `ImageInUse { pid }` names the
    /// holder. An empty or foreign file is `NotNovafs`.
    pub fn open(image: impl AsRef<Path>, opts: &MountOptions) -> Result<Fs> {
        let image = image.as_ref();
        let (engine, report) =
            novafs_recovery::open(image, opts).map_err(|e| Error::at(e, "mount image", image))?;
        engine.start_writeback(opts.writeback.clone());
        Ok(Fs { engine, report })
    }

    /// Mount `image`, or format it (`size_bytes`, default [`FormatOptions`] with
    /// `opts.force_emulated`) if the file is missing or empty: the common start of an
    /// embedded engine. A foreign non-empty file is `NotNovafs`, never overwritten; an
    /// existing image keeps its size.
    pub fn open_or_format(
        image: impl AsRef<Path>,
        size_bytes: u64,
        opts: &MountOptions,
    ) -> Result<Fs> {
        let image = image.as_ref();
        let format = FormatOptions {
            force_emulated: opts.force_emulated,
            ..FormatOptions::default()
        };
        let missing_or_empty = || match std::fs::metadata(image) {
            Ok(m) => Ok(m.len() == 0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(Error::at(e, "mount image", image)),
        };
        if missing_or_empty()? {
            match Fs::format(image, size_bytes, &format) {
                // Formatted by another process meanwhile: mount that image.
                Err(e) if matches!(e.engine_error(), EngineError::AlreadyExists) => {}
                r => return r,
            }
        }
        Fs::open(image, opts)
    }

    /// Wrap an engine (e.g. one on the traced backend).
    pub fn from_engine(engine: Arc<Engine>, report: MountReport) -> Fs {
        Fs { engine, report }
    }

    /// The inode-level API underneath.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// What mount found (clean or recovered).
    pub fn mount_report(&self) -> &MountReport {
        &self.report
    }

    /// How persistence is achieved (`dax`, `emulated`, `msync`, `traced`).
    pub fn media_mode(&self) -> MediaMode {
        self.engine.media_mode()
    }

    /// Clean unmount: saves the allocator state so the next mount is fast, and releases the
    /// image's lock at once, so the image can be mounted again (in this process or another)
    /// while handles or clones of this `Fs` still exist: those fail every call afterwards
    /// with `Unmounted`. Durable on return.
    pub fn unmount(self) -> Result<()> {
        Ok(self.engine.unmount()?)
    }

    /// Stop without a clean unmount, as if the process had been killed: the next mount runs
    /// recovery. For tests; the lock is released and open handles fail with `Unmounted`.
    pub fn crash(self) {
        self.engine.crash();
    }

    /// Resolve a path to its inode (following symlinks; a read).
    pub fn resolve(&self, p: impl AsRef<Path>) -> Result<u64> {
        let p = p.as_ref();
        path::resolve(&self.engine, bytes(p), true).map_err(|e| Error::at(e, "resolve", p))
    }

    /// Create (or truncate) a file for writing, like `std::fs::File::create`. The create
    /// and the truncate are each atomic and durable on return (two commits when an existing
    /// file is truncated; use [`Fs::write`] to replace contents in one).
    pub fn create(&self, p: impl AsRef<Path>) -> Result<File> {
        let p = p.as_ref();
        self.open_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(p)
            .map_err(|e| Error::at(e, "create file", p))
    }

    /// Open an existing file for reading and writing (changes nothing on the image).
    pub fn open_file(&self, p: impl AsRef<Path>) -> Result<File> {
        self.open_options().read(true).write(true).open(p)
    }

    /// An `OpenOptions` builder bound to this file system.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions::new(self.engine.clone())
    }

    /// Read a whole file: one consistent snapshot (the inode's shared lock is held for the
    /// copy, so a concurrent write is wholly in it or wholly not).
    pub fn read(&self, p: impl AsRef<Path>) -> Result<Vec<u8>> {
        let p = p.as_ref();
        let read = || -> Result<Vec<u8>> {
            let f = self.open_options().read(true).open(p)?;
            let len = f.metadata()?.len();
            let len = usize::try_from(len).map_err(|_| EngineError::FileTooLarge)?;
            let mut buf = vec![0u8; len];
            let n = f.read_at(&mut buf, 0)?;
            buf.truncate(n);
            Ok(buf)
        };
        read().map_err(|e| Error::at(e, "read file", p))
    }

    /// Replace a file's contents with `data` (the file is created, mode 0644, if missing;
    /// symlinks are followed), like `std::fs::write`.
    ///
    /// **Atomic and durable on return**: one commit. The new contents are written
    /// copy-on-write and the new length and pages are committed by one log append; a new
    /// file is created with its contents in the same commit. After a crash the file holds
    /// its old contents (or does not exist, if it did not) or all of `data`: never a mix,
    /// never empty in between.
    pub fn write(&self, p: impl AsRef<Path>, data: &[u8]) -> Result<()> {
        let p = p.as_ref();
        self.write_engine(bytes(p), data)
            .map_err(|e| Error::at(e, "write file", p))
    }

    fn write_engine(&self, p: &[u8], data: &[u8]) -> novafs_engine::Result<()> {
        use novafs_engine::Error;
        // A name created by someone else between the lookup and the create: look again (a
        // few times; a name that keeps appearing and vanishing ends in NotFound).
        for _ in 0..3 {
            match path::resolve(&self.engine, p, true) {
                Ok(ino) => return self.engine.replace_inode(&*self.engine.inode(ino)?, data),
                Err(Error::NotFound) => {
                    let (parent, name) = path::resolve_parent(&self.engine, p)?;
                    match self.engine.create_with(parent, name, 0o644, (0, 0), data) {
                        Err(Error::AlreadyExists) => match self.engine.lookup_ent(parent, name) {
                            // A dangling symlink: its target's directory has no such name.
                            Ok(e) if e.kind == Kind::Symlink => return Err(Error::NotFound),
                            _ => continue,
                        },
                        r => return r.map(|_| ()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::NotFound)
    }

    /// Create a directory (mode 0755). Atomic and durable on return.
    pub fn create_dir(&self, p: impl AsRef<Path>) -> Result<()> {
        self.create_dir_mode(p, 0o755).map(|_| ())
    }

    /// Create a directory with the given mode. Atomic and durable on return.
    pub fn create_dir_mode(&self, p: impl AsRef<Path>, mode: u32) -> Result<Metadata> {
        let p = p.as_ref();
        let mkdir = || {
            let (parent, name) = path::resolve_parent(&self.engine, bytes(p))?;
            self.engine.mkdir(parent, name, mode, 0, 0)
        };
        let attr = mkdir().map_err(|e| Error::at(e, "create directory", p))?;
        Ok(Metadata { attr })
    }

    /// Create a directory and all missing parents. Each directory's creation is atomic and
    /// durable on return; the whole is not (a crash may leave a prefix of the parents).
    pub fn create_dir_all(&self, p: impl AsRef<Path>) -> Result<()> {
        let p = p.as_ref();
        self.create_dir_all_engine(bytes(p))
            .map_err(|e| Error::at(e, "create directory", p))
    }

    fn create_dir_all_engine(&self, p: &[u8]) -> novafs_engine::Result<()> {
        use novafs_engine::Error;
        let mut cur = ROOT_INO;
        for comp in p.split(|&b| b == b'/') {
            if comp.is_empty() || comp == b"." {
                continue;
            }
            cur = match self.engine.lookup_ent(cur, comp) {
                Ok(e) if e.kind == Kind::Dir => e.ino,
                Ok(_) => return Err(Error::NotADirectory),
                Err(Error::NotFound) => match self.engine.mkdir(cur, comp, 0o755, 0, 0) {
                    Ok(a) => a.ino,
                    Err(Error::AlreadyExists) => self.engine.lookup_ent(cur, comp)?.ino,
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            };
        }
        Ok(())
    }

    /// The entries of a directory (without `.` and `..`, in no particular order), like
    /// `std::fs::read_dir`: a snapshot taken by this call.
    pub fn read_dir(&self, p: impl AsRef<Path>) -> Result<ReadDir> {
        let p = p.as_ref();
        let list = || {
            let ino = path::resolve(&self.engine, bytes(p), true)?;
            self.engine.readdir(ino)
        };
        let entries = list().map_err(|e| Error::at(e, "read directory", p))?;
        Ok(ReadDir::new(self.engine.clone(), p.to_path_buf(), entries))
    }

    /// Remove a file or symlink. Atomic and durable on return (the name and, with another
    /// link left, the link count change in one journaled commit); the space of a last link
    /// is free at once, or at the last close of an open file.
    pub fn remove_file(&self, p: impl AsRef<Path>) -> Result<()> {
        let p = p.as_ref();
        let unlink = || {
            let (parent, name) = path::resolve_parent(&self.engine, bytes(p))?;
            self.engine.unlink(parent, name)
        };
        unlink().map_err(|e| Error::at(e, "remove file", p))
    }

    /// Remove an empty directory. Atomic and durable on return.
    pub fn remove_dir(&self, p: impl AsRef<Path>) -> Result<()> {
        let p = p.as_ref();
        let rmdir = || {
            let (parent, name) = path::resolve_parent(&self.engine, bytes(p))?;
            self.engine.rmdir(parent, name)
        };
        rmdir().map_err(|e| Error::at(e, "remove directory", p))
    }

    /// Rename, replacing an existing target by POSIX rules. Atomic and durable on return:
    /// after a crash either the old names or the new ones (across directories too: one
    /// journaled commit), never both or neither.
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<()> {
        self.rename_with(from, to, RenameFlags::default())
    }

    /// Rename with flags (`noreplace`, `exchange`). Atomic and durable on return, like
    /// [`Fs::rename`].
    pub fn rename_with(
        &self,
        from: impl AsRef<Path>,
        to: impl AsRef<Path>,
        flags: RenameFlags,
    ) -> Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        let rename = || {
            let ((sp, sn), (dp, dn)) = path::resolve_parents(&self.engine, bytes(from), bytes(to))?;
            self.engine.rename(sp, sn, dp, dn, flags)
        };
        rename().map_err(|e| Error::at2(e, "rename", from, to))
    }

    /// Make `link` a new name for the file at `original`. Atomic and durable on return (the
    /// name and the link count in one journaled commit).
    pub fn hard_link(&self, original: impl AsRef<Path>, link: impl AsRef<Path>) -> Result<()> {
        let (original, link) = (original.as_ref(), link.as_ref());
        let hard_link = || {
            let ino = path::resolve(&self.engine, bytes(original), false)?;
            let (dp, dn) = path::resolve_parent(&self.engine, bytes(link))?;
            self.engine.link(ino, dp, dn).map(|_| ())
        };
        hard_link().map_err(|e| Error::at2(e, "hard link", original, link))
    }

    /// Create a symbolic link at `link` pointing to `target`. Atomic and durable on return:
    /// the link appears with its target.
    pub fn symlink(&self, target: impl AsRef<Path>, link: impl AsRef<Path>) -> Result<()> {
        let (target, link) = (target.as_ref(), link.as_ref());
        let symlink = || {
            let (dp, dn) = path::resolve_parent(&self.engine, bytes(link))?;
            self.engine.symlink(dp, dn, bytes(target), 0, 0).map(|_| ())
        };
        symlink().map_err(|e| Error::at2(e, "create symlink", link, target))
    }

    /// Create a FIFO, socket or device node (`mknod(2)`): `kind` is one of
    /// [`FileType::Fifo`], [`FileType::Socket`], [`FileType::CharDevice`],
    /// [`FileType::BlockDevice`]; `rdev` is a device node's number (`libc::makedev`), 0
    /// otherwise. Atomic and durable on return. Such an inode has metadata and no data: reading
    /// and writing it is the kernel's business (through a FUSE mount), not the library's.
    pub fn mknod(&self, p: impl AsRef<Path>, kind: FileType, mode: u32, rdev: u64) -> Result<()> {
        let p = p.as_ref();
        let mknod = || {
            let (dp, dn) = path::resolve_parent(&self.engine, bytes(p))?;
            self.engine
                .mknod(dp, dn, kind.into(), mode, 0, 0, rdev)
                .map(|_| ())
        };
        mknod().map_err(|e| Error::at(e, "create node", p))
    }

    /// The target of a symbolic link (a read: changes nothing).
    pub fn read_link(&self, p: impl AsRef<Path>) -> Result<Vec<u8>> {
        let p = p.as_ref();
        let readlink = || {
            let ino = path::resolve(&self.engine, bytes(p), false)?;
            self.engine.readlink(ino)
        };
        readlink().map_err(|e| Error::at(e, "read link", p))
    }

    /// Metadata, following symlinks (a read: changes nothing).
    pub fn metadata(&self, p: impl AsRef<Path>) -> Result<Metadata> {
        self.stat(p.as_ref(), true)
    }

    fn stat(&self, p: &Path, follow: bool) -> Result<Metadata> {
        let stat = || {
            let ino = path::resolve(&self.engine, bytes(p), follow)?;
            self.engine.getattr(ino)
        };
        let attr = stat().map_err(|e| Error::at(e, "read metadata of", p))?;
        Ok(Metadata { attr })
    }

    /// `setattr` on the inode `p` names (following symlinks), with context.
    fn set_attr(&self, p: &Path, op: &'static str, set: &SetAttr) -> Result<()> {
        let setattr = || {
            let ino = path::resolve(&self.engine, bytes(p), true)?;
            self.engine.setattr(ino, set).map(|_| ())
        };
        setattr().map_err(|e| Error::at(e, op, p))
    }

    /// Metadata of the path itself (a symlink is not followed; a read).
    pub fn symlink_metadata(&self, p: impl AsRef<Path>) -> Result<Metadata> {
        self.stat(p.as_ref(), false)
    }

    /// Whether the path exists (false also after unmount).
    pub fn exists(&self, p: impl AsRef<Path>) -> bool {
        self.resolve(p).is_ok()
    }

    /// Set permission bits. Atomic and durable on return.
    pub fn set_permissions(&self, p: impl AsRef<Path>, mode: u32) -> Result<()> {
        let set = SetAttr {
            mode: Some(mode),
            ..SetAttr::default()
        };
        self.set_attr(p.as_ref(), "set permissions of", &set)
    }

    /// Set owner and group (both in one commit). Atomic and durable on return.
    pub fn set_owner(&self, p: impl AsRef<Path>, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let set = SetAttr {
            uid,
            gid,
            ..SetAttr::default()
        };
        self.set_attr(p.as_ref(), "set owner of", &set)
    }

    /// Set access and modification times (both in one commit). Atomic and durable on
    /// return.
    pub fn set_times(
        &self,
        p: impl AsRef<Path>,
        accessed: Option<SystemTime>,
        modified: Option<SystemTime>,
    ) -> Result<()> {
        let p = p.as_ref();
        let ns = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .map_err(|_| {
                    let e = EngineError::InvalidArgument("time before 1970".into());
                    Error::at(e, "set times of", p)
                })
        };
        let set = SetAttr {
            atime_ns: accessed.map(ns).transpose()?,
            mtime_ns: modified.map(ns).transpose()?,
            ..SetAttr::default()
        };
        self.set_attr(p, "set times of", &set)
    }

    /// Set extended attribute `name` (`user.`, `trusted.`, `security.` or
    /// `system.posix_acl_access`/`_default` in Linux's ACL encoding) of the file at `p`
    /// (symlinks followed) to `value` (at most 64 KiB): one atomic, durable commit. `flags`:
    /// [`XattrFlags::Create`] fails with `AlreadyExists` if it exists, [`XattrFlags::Replace`]
    /// with `NoData` if not. Setting the access ACL sets the permission bits it implies in the
    /// same commit. Errors as `setxattr(2)` on ext4 (`errno()`: ERANGE for a name of 0 or more
    /// than 255 bytes, E2BIG for a larger value, EOPNOTSUPP for another namespace, ENOSPC).
    pub fn set_xattr(
        &self,
        p: impl AsRef<Path>,
        name: impl AsRef<[u8]>,
        value: &[u8],
        flags: XattrFlags,
    ) -> Result<()> {
        let p = p.as_ref();
        let set = || {
            let ino = path::resolve(&self.engine, bytes(p), true)?;
            self.engine.set_xattr(ino, name.as_ref(), value, flags)
        };
        set().map_err(|e| Error::at(e, "set extended attribute of", p))
    }

    /// The value of extended attribute `name` of the file at `p` (`NoData`, ENODATA, if it
    /// has none). A read.
    pub fn get_xattr(&self, p: impl AsRef<Path>, name: impl AsRef<[u8]>) -> Result<Vec<u8>> {
        let p = p.as_ref();
        let get = || {
            let ino = path::resolve(&self.engine, bytes(p), true)?;
            self.engine.get_xattr(ino, name.as_ref())
        };
        get().map_err(|e| Error::at(e, "get extended attribute of", p))
    }

    /// The names of the extended attributes of the file at `p`, in byte order. A read.
    pub fn list_xattr(&self, p: impl AsRef<Path>) -> Result<Vec<Vec<u8>>> {
        let p = p.as_ref();
        let list = || {
            let ino = path::resolve(&self.engine, bytes(p), true)?;
            self.engine.list_xattr(ino)
        };
        list().map_err(|e| Error::at(e, "list extended attributes of", p))
    }

    /// Remove extended attribute `name` of the file at `p` (`NoData` if it has none): one
    /// atomic, durable commit.
    pub fn remove_xattr(&self, p: impl AsRef<Path>, name: impl AsRef<[u8]>) -> Result<()> {
        let p = p.as_ref();
        let remove = || {
            let ino = path::resolve(&self.engine, bytes(p), true)?;
            self.engine.remove_xattr(ino, name.as_ref())
        };
        remove().map_err(|e| Error::at(e, "remove extended attribute of", p))
    }

    /// Blocks and inodes, total and free (a read).
    pub fn statfs(&self) -> Result<StatFs> {
        self.engine.check_mounted()?;
        Ok(self.engine.statfs())
    }

    /// Grow the image to `new_size` bytes (a multiple of 4096) while it is mounted: the new
    /// space is free for files and inodes when this returns. Atomic and durable on return:
    /// after a crash the image has its old size or the new one, never something between.
    /// Growing to the current size does nothing; shrinking is refused (`InvalidInput`), as is a
    /// device image. One mount can grow the image up to [`MountOptions::grow_limit`] (by
    /// default 16 times its size at mount, at least 1 GiB more); beyond, unmount and grow it
    /// offline (`Fs::open` with a larger `grow_limit`, or `novafs resize`). Returns the bytes
    /// added.
    pub fn grow(&self, new_size: u64) -> Result<u64> {
        Ok(self.engine.grow(new_size)? * novafs_engine::layout::BLOCK)
    }

    /// Flush everything: operations are already durable; this also migrates the pages stored
    /// through mappings into their files (like msync of every mapping), and `msync`s in Msync
    /// mode.
    pub fn sync(&self) -> Result<()> {
        self.engine.check_mounted()?;
        Ok(self.engine.sync()?)
    }
}
