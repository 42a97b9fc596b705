//! novafs-fuse: serve a mounted novafs image to the kernel through FUSE.
//!
//! [`NovaFuse`] implements [`fuser::Filesystem`] over the engine's inode-level API (the engine's
//! inode numbers are the FUSE node ids: the root is 1 in both). Every request is answered on the
//! event-loop thread that read it; [`MountConfig::threads`] event loops (each with its own
//! cloned `/dev/fuse` descriptor) run requests in parallel, and the engine's per-inode locks do
//! the rest. [`mount`] mounts, serves until the file system is unmounted (`fusermount3 -u`,
//! `umount`, or SIGINT/SIGTERM/SIGHUP, which unmount it), then unmounts the engine cleanly.
//!
//! Permission checks are the kernel's (`default_permissions` is always set): the attributes
//! novafs stores (mode, uid, gid) and the POSIX ACLs (`FUSE_POSIX_ACL`: the kernel reads the
//! `system.posix_acl_*` attributes and enforces them) are what it checks against. Extended
//! attributes (`user.`, `trusted.`, `security.`, the ACLs) are the engine's: each set or removal
//! is one atomic commit. Not supported, with a clear errno: other xattr namespaces
//! (`EOPNOTSUPP`), `RENAME_WHITEOUT` (`EINVAL`, as Linux answers for a file system without it;
//! `RENAME_EXCHANGE` and `RENAME_NOREPLACE` are the engine's atomic exchange and no-replace),
//! `fallocate` modes other than plain allocation, `KEEP_SIZE` (blocks past the end are kept),
//! `PUNCH_HOLE | KEEP_SIZE` and `ZERO_RANGE` (with or without `KEEP_SIZE`) (`EOPNOTSUPP`).
//! `SEEK_DATA`/`SEEK_HOLE` come from the file map, `copy_file_range` is done inside the server,
//! and `fsync`/`flush` are answered once with `ENOSYS` (every operation is durable on return,
//! so the kernel stops asking). POSIX locks are the kernel's local ones.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};
use novafs::{Attr, Engine, Fs, Kind, MountOptions, SetAttr, XattrFlags, ROOT_INO};
use novafs_engine::inode::Inode;
use novafs_engine::{AclSgid, Error};
use parking_lot::Mutex;

/// How long the kernel may cache attributes and names. This process is the only writer of
/// the image (it holds the image's exclusive lock) and every change goes through the kernel,
/// which invalidates what a change makes stale; the timeout only bounds how long a cached
/// answer lives.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

// The engine's root inode is FUSE's root node id.
const _: () = assert!(ROOT_INO == INodeNo::ROOT.0);

/// Largest single read or write request (the kernel splits larger ones).
pub const MAX_WRITE: u32 = 1 << 20;

/// Mount options (`-o` options of `novafs mount` / `mount.novafs`).
#[derive(Clone, Debug)]
pub struct MountConfig {
    /// Mount read-only (the engine refuses every change; the kernel mount is `ro`).
    pub read_only: bool,
    /// Let every user access the mount (`allow_other`; kernel permission checks still apply).
    pub allow_other: bool,
    /// Let root access the mount besides its owner (`allow_root`).
    pub allow_root: bool,
    /// Unmount when this process dies (needs `allow_other` or `allow_root`).
    pub auto_unmount: bool,
    /// Request-handling threads (event loops), at least 1.
    pub threads: usize,
    /// The source shown in the mount table (default: the image path).
    pub fsname: Option<String>,
    /// Kernel mount flags passed through: dev, nodev, suid, nosuid, exec, noexec, atime,
    /// noatime, sync, async, dirsync.
    pub kernel_flags: Vec<String>,
    /// Treat the image as emulated pmem even off tmpfs.
    pub force_emulated: bool,
    /// Attribute and entry cache timeout.
    pub ttl: Duration,
    /// POSIX ACLs enforced by the kernel (`FUSE_POSIX_ACL`; default on, `-o noacl` off: then
    /// `system.posix_acl_*` are refused by the kernel and only the mode is checked).
    pub acl: bool,
}

impl Default for MountConfig {
    fn default() -> MountConfig {
        MountConfig {
            read_only: false,
            allow_other: false,
            allow_root: false,
            auto_unmount: false,
            threads: default_threads(),
            fsname: None,
            kernel_flags: Vec::new(),
            force_emulated: false,
            ttl: DEFAULT_TTL,
            acl: true,
        }
    }
}

/// One event loop per core, at least 2 (a request blocked on an inode lock must not stall
/// unrelated requests), at most 8.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// Options recognised by [`MountConfig::apply_option`] and silently accepted (fstab and
/// mount(8) conventions that mean nothing here).
const IGNORED_OPTIONS: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "nofail",
    "_netdev",
    "default_permissions",
];

impl MountConfig {
    /// Apply one `-o` option (`ro`, `rw`, `allow_other`, `allow_root`, `auto_unmount`,
    /// `threads=N`, `fsname=NAME`, `force_emulated`, `attr_timeout=SECONDS`, `acl`/`noacl`,
    /// kernel flags, ignored fstab words). Unknown options are an error.
    pub fn apply_option(&mut self, opt: &str) -> Result<(), String> {
        let opt = opt.trim();
        match opt {
            "" => {}
            "ro" => self.read_only = true,
            "rw" => self.read_only = false,
            "allow_other" => self.allow_other = true,
            "allow_root" => self.allow_root = true,
            "auto_unmount" => self.auto_unmount = true,
            "force_emulated" => self.force_emulated = true,
            "acl" => self.acl = true,
            "noacl" => self.acl = false,
            "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime" | "noatime"
            | "sync" | "async" | "dirsync" => {
                self.kernel_flags.push(opt.to_string());
            }
            o if IGNORED_OPTIONS.contains(&o)
                || o.starts_with("x-")
                || o.starts_with("comment=") => {}
            o => {
                let (key, value) = o
                    .split_once('=')
                    .ok_or_else(|| format!("unknown mount option '{o}'"))?;
                match key {
                    "threads" => {
                        let n: usize = value
                            .parse()
                            .map_err(|_| format!("threads={value}: not a number"))?;
                        if !(1..=64).contains(&n) {
                            return Err(format!("threads={n}: must be 1..64"));
                        }
                        self.threads = n;
                    }
                    "fsname" => self.fsname = Some(value.to_string()),
                    "attr_timeout" => {
                        let s: f64 = value
                            .parse()
                            .ok()
                            .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
                            .ok_or_else(|| {
                                format!("attr_timeout={value}: must be 0..3600 seconds")
                            })?;
                        self.ttl = Duration::from_secs_f64(s);
                    }
                    _ => return Err(format!("unknown mount option '{o}'")),
                }
            }
        }
        Ok(())
    }

    /// Apply a comma-separated option list.
    pub fn apply_options(&mut self, list: &str) -> Result<(), String> {
        list.split(',').try_for_each(|o| self.apply_option(o))
    }

    fn fuser_config(&self, image: &Path) -> fuser::Config {
        let mut opts = vec![
            MountOption::FSName(
                self.fsname
                    .clone()
                    .unwrap_or_else(|| image.display().to_string()),
            ),
            MountOption::Subtype("novafs".into()),
            MountOption::DefaultPermissions,
            if self.read_only {
                MountOption::RO
            } else {
                MountOption::RW
            },
        ];
        for f in &self.kernel_flags {
            opts.push(match f.as_str() {
                "dev" => MountOption::Dev,
                "nodev" => MountOption::NoDev,
                "suid" => MountOption::Suid,
                "nosuid" => MountOption::NoSuid,
                "exec" => MountOption::Exec,
                "noexec" => MountOption::NoExec,
                "atime" => MountOption::Atime,
                "noatime" => MountOption::NoAtime,
                "sync" => MountOption::Sync,
                "async" => MountOption::Async,
                _ => MountOption::DirSync,
            });
        }
        if self.auto_unmount {
            opts.push(MountOption::AutoUnmount);
        }
        let mut c = fuser::Config::default();
        c.mount_options = opts;
        c.acl = if self.allow_other {
            SessionACL::All
        } else if self.allow_root {
            SessionACL::RootAndOwner
        } else {
            SessionACL::Owner
        };
        c.n_threads = Some(self.threads.max(1));
        c.clone_fd = self.threads > 1;
        c
    }
}

/// Open handles of one kind: `fh` -> value.
struct Handles<T> {
    next: AtomicU64,
    map: Mutex<HashMap<u64, T>>,
}

impl<T: Clone> Handles<T> {
    fn new() -> Handles<T> {
        Handles {
            next: AtomicU64::new(1),
            map: Mutex::new(HashMap::new()),
        }
    }
    fn insert(&self, v: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.lock().insert(fh, v);
        fh
    }
    fn get(&self, fh: FileHandle) -> Option<T> {
        self.map.lock().get(&fh.0).cloned()
    }
    fn remove(&self, fh: FileHandle) -> Option<T> {
        self.map.lock().remove(&fh.0)
    }
    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// The kernel's references to nodes: node id (= inode number) -> (lookup count, a pin).
///
/// Every reply that gives the kernel a node (lookup, create, mkdir, mknod, symlink, link,
/// readdirplus) counts one lookup; `forget` takes them back. While the count is positive the
/// node holds an open-handle pin on its inode, so an inode the kernel still knows (a working
/// directory that was removed, a cached inode of an unlinked file) stays allocated as an
/// orphan and its number is never handed to a new inode: the node id always names the inode
/// it named when the kernel learnt it. The orphan's space comes back at the last forget, at
/// unmount (the engine frees unlinked inodes), or by recovery after a crash (unreachable
/// inodes are free).
struct Nodes {
    map: Mutex<HashMap<u64, (u64, Arc<Inode>)>>,
}

/// A snapshot of a directory's entries, taken at `opendir` and at every read from offset 0
/// (`rewinddir`): offsets are indexes into it, so a listing never skips or repeats an entry
/// while names are added or removed.
type DirSnapshot = Arc<Mutex<Vec<(u64, FileType, Vec<u8>)>>>;

/// The FUSE file system over one mounted image.
pub struct NovaFuse {
    fs: Fs,
    engine: Arc<Engine>,
    files: Handles<Arc<Inode>>,
    dirs: Handles<DirSnapshot>,
    nodes: Nodes,
    ttl: Duration,
    read_only: bool,
    /// `FUSE_POSIX_ACL` requested.
    acl: bool,
}

impl std::fmt::Debug for NovaFuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NovaFuse")
            .field("engine", &self.engine)
            .field("open_files", &self.files.len())
            .field("open_dirs", &self.dirs.len())
            .field("nodes", &self.nodes.map.lock().len())
            .finish()
    }
}

/// Whether the process behind `req` is in group `gid` or has `CAP_FSETID`: what Linux's
/// `in_group_or_capable` asks before setting an access ACL keeps the set-group-ID bit. The
/// supplementary groups and effective capabilities come from `/proc/<pid>/status`; when that
/// cannot be read (the process is gone, or not in our pid namespace), the request's ids decide.
fn in_group_or_capable(req: &Request, gid: u32) -> bool {
    const CAP_FSETID: u32 = 4;
    if req.gid() == gid {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", req.pid())) else {
        return req.uid() == 0;
    };
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let member = field("Groups:")
        .unwrap_or("")
        .split_whitespace()
        .any(|g| g.parse::<u32>() == Ok(gid));
    let capable = field("CapEff:")
        .and_then(|c| u64::from_str_radix(c, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_FSETID) != 0);
    member || capable
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn ns(t: TimeOrNow) -> u64 {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    // Times before 1970 are stored as 0 (the engine keeps unsigned nanoseconds).
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The FUSE attributes of an engine inode.
pub fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks * (novafs::BLOCK / 512),
        atime: time(a.atime_ns),
        mtime: time(a.mtime_ns),
        ctime: time(a.ctime_ns),
        crtime: time(a.crtime_ns),
        kind: file_type(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        // The kernel's 32-bit encoding, which the engine's rdev is for every device it can
        // name (the engine refuses larger numbers).
        rdev: u32::try_from(a.rdev).unwrap_or(0),
        blksize: novafs::BLOCK as u32,
        flags: 0,
    }
}

impl NovaFuse {
    /// Serve `fs` (which must stay mounted while the session runs; `read_only` as it was
    /// mounted).
    pub fn new(fs: Fs, ttl: Duration, read_only: bool) -> NovaFuse {
        NovaFuse {
            engine: fs.engine().clone(),
            fs,
            files: Handles::new(),
            dirs: Handles::new(),
            nodes: Nodes {
                map: Mutex::new(HashMap::new()),
            },
            ttl,
            read_only,
            acl: true,
        }
    }

    /// Ask the kernel to enforce POSIX ACLs (`FUSE_POSIX_ACL`; the default) or not.
    pub fn with_acl(mut self, acl: bool) -> NovaFuse {
        self.acl = acl;
        self
    }

    /// The mounted image.
    pub fn fs(&self) -> &Fs {
        &self.fs
    }

    /// Answer an operation that gives the kernel the node `name` in `parent` (the operation
    /// just made or found it): count the kernel's reference first.
    fn entry(&self, reply: ReplyEntry, parent: u64, name: &OsStr, r: novafs_engine::Result<Attr>) {
        match r.and_then(|a| self.remember_named(parent, name.as_bytes(), a)) {
            Ok(a) => reply.entry(&self.ttl, &file_attr(&a), Generation(a.generation)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Count one kernel reference to `ino`, pinning the inode on the first.
    fn remember(&self, ino: u64) -> novafs_engine::Result<()> {
        if let Some(n) = self.nodes.map.lock().get_mut(&ino) {
            n.0 += 1;
            return Ok(());
        }
        let pin = self.engine.open_inode(ino)?;
        let mut map = self.nodes.map.lock();
        if let Some(n) = map.get_mut(&ino) {
            // Pinned by another request meanwhile: one pin is enough.
            n.0 += 1;
            drop(map);
            return self.engine.release_inode(&pin);
        }
        map.insert(ino, (1, pin));
        Ok(())
    }

    /// Take back `n` kernel references to `ino`; the last one drops the pin (which frees an
    /// unlinked inode that has no open handle either).
    fn forget_node(&self, ino: u64, n: u64) {
        let mut map = self.nodes.map.lock();
        let Some(node) = map.get_mut(&ino) else {
            return; // the root (never counted), or a node the kernel over-forgets
        };
        node.0 = node.0.saturating_sub(n);
        if node.0 == 0 {
            let (_, pin) = map.remove(&ino).expect("present");
            drop(map);
            if let Err(e) = self.engine.release_inode(&pin) {
                use std::io::Write;
                let _ = writeln!(io::stderr(), "novafs: releasing inode {ino}: {e}");
            }
        }
    }

    /// Count a kernel reference to the inode `a` that `name` in `parent` named a moment ago,
    /// and return its current attributes. Between the name's lookup and the pin the inode may
    /// have been unlinked and its number reused by a new inode; the name is looked up again
    /// after pinning, and the pin is kept only if the name still names the pinned inode (then
    /// the reply describes exactly the inode the node id keeps naming).
    fn remember_named(&self, parent: u64, name: &[u8], mut a: Attr) -> novafs_engine::Result<Attr> {
        loop {
            match self.remember(a.ino) {
                Ok(()) => match self.engine.lookup(parent, name) {
                    Ok(b) if b.ino == a.ino => return Ok(b),
                    r => {
                        self.forget_node(a.ino, 1);
                        a = r?;
                    }
                },
                // Freed since: look the name up again.
                Err(Error::NotFound) => a = self.engine.lookup(parent, name)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Look `name` up in `parent` and count the kernel's reference to what it names.
    fn lookup_node(&self, parent: u64, name: &[u8]) -> novafs_engine::Result<Attr> {
        let a = self.engine.lookup(parent, name)?;
        self.remember_named(parent, name, a)
    }

    /// Owner of a new inode in `parent`: the caller, with the directory's group if it is
    /// set-group-ID (and then a new directory inherits the bit).
    /// Create a regular file, FIFO, socket or device node for mknod/create: the caller's
    /// owner, the umask, set-group-ID inheritance.
    fn create_file(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> novafs_engine::Result<novafs::Attr> {
        let kind = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => Kind::File,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            // S_IFDIR and S_IFLNK have their own requests; anything else is no file type.
            _ => return Err(Error::InvalidArgument("mknod of this file type".into())),
        };
        let umask = self.umask_under(parent, umask);
        let (mode, uid, gid) = self.new_owner(req, parent, mode & 0o7777 & !umask, false);
        if kind == Kind::File {
            return self.engine.create(parent, name.as_bytes(), mode, uid, gid);
        }
        let rdev = if kind.is_device() { u64::from(rdev) } else { 0 };
        self.engine
            .mknod(parent, name.as_bytes(), kind, mode, uid, gid, rdev)
    }

    /// The umask a new inode in `parent` gets: none under a default ACL (the ACL masks the
    /// mode instead, POSIX `posix_acl_create`), else the caller's.
    fn umask_under(&self, parent: u64, umask: u32) -> u32 {
        match self
            .engine
            .get_xattr(parent, novafs_engine::xattr::ACL_DEFAULT)
        {
            Ok(_) => 0,
            Err(_) => umask,
        }
    }

    fn new_owner(&self, req: &Request, parent: u64, mode: u32, dir: bool) -> (u32, u32, u32) {
        match self.engine.getattr(parent) {
            Ok(p) if p.mode & libc::S_ISGID != 0 => {
                let mode = if dir { mode | libc::S_ISGID } else { mode };
                (mode, req.uid(), p.gid)
            }
            _ => (mode, req.uid(), req.gid()),
        }
    }

    fn open_handle(&self, ino: u64) -> novafs_engine::Result<u64> {
        let inode = self.engine.open_inode(ino)?;
        Ok(self.files.insert(inode))
    }

    fn snapshot(&self, ino: u64) -> novafs_engine::Result<Vec<(u64, FileType, Vec<u8>)>> {
        let entries = self.engine.readdir(ino)?;
        let parent = self.engine.parent_of(ino)?;
        let mut v = Vec::with_capacity(entries.len() + 2);
        v.push((ino, FileType::Directory, b".".to_vec()));
        v.push((parent, FileType::Directory, b"..".to_vec()));
        v.extend(
            entries
                .into_iter()
                .map(|e| (e.ino, file_type(e.kind), e.name)),
        );
        Ok(v)
    }

    /// The snapshot for a directory read at `offset` (refreshed at offset 0).
    fn dir_entries(
        &self,
        ino: u64,
        fh: FileHandle,
        offset: u64,
    ) -> novafs_engine::Result<Vec<(u64, FileType, Vec<u8>)>> {
        let snap = self
            .dirs
            .get(fh)
            .ok_or(Error::BadHandle("unknown directory handle"))?;
        let mut s = snap.lock();
        if offset == 0 {
            *s = self.snapshot(ino)?;
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(s.len());
        Ok(s[start..].to_vec())
    }
}

/// How the kernel treats a regular file's handle. A handle that can write does direct I/O:
/// the kernel sends each `write(2)` as it came (split only past `max_write` or the request's
/// page limit), not page by page from its page cache, so one `write(2)` is one engine commit,
/// atomic and durable on return; the kernel drops cached pages of the range it writes, so
/// read-only handles, which keep the page cache, stay coherent. Shared mappings of such a
/// handle still work (`FUSE_DIRECT_IO_ALLOW_MMAP`); the kernel may then run writes in
/// parallel (`FOPEN_PARALLEL_DIRECT_WRITES`: the engine's inode lock orders them).
///
/// Read-only handles keep the page cache across opens (`FOPEN_KEEP_CACHE`): this process is the
/// image's only writer and every change reaches it through the kernel, which drops what the
/// change makes stale (direct writes, truncate, fallocate punch/zero, copy_file_range).
fn open_flags(mode: OpenAccMode) -> FopenFlags {
    if mode == OpenAccMode::O_RDONLY {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
    }
}

impl Filesystem for NovaFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Optional capabilities: take what the kernel offers.
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
        ] {
            let _ = config.add_capabilities(cap);
        }
        if self.acl {
            // POSIX ACLs enforced by the kernel (it also sets default_permissions), and the
            // umask left to this server, which skips it under a default ACL (POSIX).
            for cap in [InitFlags::FUSE_POSIX_ACL, InitFlags::FUSE_DONT_MASK] {
                let _ = config.add_capabilities(cap);
            }
        }
        let _ = config.set_max_write(MAX_WRITE);
        Ok(())
    }

    fn destroy(&mut self) {
        // The kernel asks for DESTROY only on some mounts; `mount` unmounts the engine in
        // any case after the session ends. Doing it here too is harmless (idempotent).
        if let Err(e) = self.engine.unmount() {
            use std::io::Write;
            let _ = writeln!(io::stderr(), "novafs: unmounting the image: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_node(parent.0, name.as_bytes()) {
            Ok(a) => reply.entry(&self.ttl, &file_attr(&a), Generation(a.generation)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    // (`batch_forget`'s default calls this per node; fuser does not export its item type.)
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.forget_node(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        // Through an open handle, an unlinked file is still there.
        let r = match fh.and_then(|fh| self.files.get(fh)) {
            Some(i) => self.engine.attr_of(&i),
            None => self.engine.getattr(ino.0),
        };
        match r {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let req = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime_ns: atime.map(ns),
            mtime_ns: mtime.map(ns),
        };
        let nothing = req.mode.is_none()
            && req.uid.is_none()
            && req.gid.is_none()
            && req.size.is_none()
            && req.atime_ns.is_none()
            && req.mtime_ns.is_none();
        // The engine sets ctime to now on every change; a request with nothing to change
        // (e.g. ctime only) is answered with the current attributes.
        let r = if nothing {
            self.engine.getattr(ino.0)
        } else {
            self.engine.setattr(ino.0, &req)
        };
        match r {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.engine.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            parent.0,
            name,
            self.create_file(req, parent.0, name, mode, umask, rdev),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let umask = self.umask_under(parent.0, umask);
        let (mode, uid, gid) = self.new_owner(req, parent.0, mode & 0o7777 & !umask, true);
        self.entry(
            reply,
            parent.0,
            name,
            self.engine.mkdir(parent.0, name.as_bytes(), mode, uid, gid),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.engine.unlink(parent.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.engine.rmdir(parent.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (_, uid, gid) = self.new_owner(req, parent.0, 0o777, false);
        self.entry(
            reply,
            parent.0,
            link_name,
            self.engine.symlink(
                parent.0,
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
                uid,
                gid,
            ),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let unsupported = fuser::RenameFlags::RENAME_WHITEOUT;
        if flags.intersects(unsupported) || !fuser::RenameFlags::all().contains(flags) {
            // What Linux answers for a file system that cannot do this.
            reply.error(Errno::EINVAL);
            return;
        }
        let f = novafs::RenameFlags {
            noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE),
        };
        match self.engine.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            f,
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            newparent.0,
            newname,
            self.engine.link(ino.0, newparent.0, newname.as_bytes()),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.read_only && flags.acc_mode() != OpenAccMode::O_RDONLY {
            reply.error(Errno::EROFS);
            return;
        }
        match self.engine.getattr(ino.0) {
            Ok(a) if a.kind == Kind::Dir => reply.error(Errno::EISDIR),
            Ok(_) => match self.open_handle(ino.0) {
                Ok(fh) => reply.opened(FileHandle(fh), open_flags(flags.acc_mode())),
                Err(e) => reply.error(errno(&e)),
            },
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(inode) = self.files.get(fh) else {
            reply.error(Errno::EBADF);
            return;
        };
        // The kernel bounds `size` by the negotiated max_pages (at most 1 MiB by default).
        // A short answer would read as zeros, so the whole request is served.
        let mut buf = vec![0u8; size as usize];
        match self.engine.read_open(&inode, offset, &mut buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(inode) = self.files.get(fh) else {
            reply.error(Errno::EBADF);
            return;
        };
        // The kernel resolves O_APPEND (the offset is its size of the file, kept exact:
        // every write goes through it) and keeps its page cache in step with the offset.
        match self.engine.write_inode(&inode, Some(offset), data) {
            Ok(_) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Every write was durable when it returned: nothing to flush. ENOSYS tells the kernel
        // so once (it then answers close without asking; its POSIX locks are local anyway).
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.files.remove(fh) {
            Some(inode) => match self.engine.release_inode(&inode) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            },
            None => reply.error(Errno::EBADF),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Every operation is durable when it returns (in msync mode too: each persist point
        // msyncs). ENOSYS tells the kernel so once: later fsyncs succeed without a request
        // (the kernel still writes back a shared mapping's dirty pages first).
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.snapshot(ino.0) {
            Ok(s) => {
                let fh = self.dirs.insert(Arc::new(Mutex::new(s)));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.dir_entries(ino.0, fh, offset) {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.iter().enumerate() {
                    let next = offset + i as u64 + 1;
                    if reply.add(INodeNo(*ino), next, *kind, OsStr::from_bytes(name)) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ino_dir = ino.0;
        match self.dir_entries(ino.0, fh, offset) {
            Ok(entries) => {
                for (i, (ino, _, name)) in entries.iter().enumerate() {
                    let next = offset + i as u64 + 1;
                    let dots = name == b"." || name == b"..";
                    // The kernel takes no reference for `.` and `..`; every other entry is a
                    // lookup, of what the name names now (a name removed since the snapshot
                    // is skipped).
                    let a = if dots {
                        self.engine.getattr(*ino)
                    } else {
                        self.lookup_node(ino_dir, name)
                    };
                    let Ok(a) = a else {
                        continue;
                    };
                    if reply.add(
                        INodeNo(a.ino),
                        next,
                        OsStr::from_bytes(name),
                        &self.ttl,
                        &file_attr(&a),
                        Generation(a.generation),
                    ) {
                        // Full: this entry was not sent, so the kernel has no reference.
                        if !dots {
                            self.forget_node(a.ino, 1);
                        }
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.remove(fh);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // As fsync: directory operations are durable on return.
        reply.error(Errno::ENOSYS);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.engine.statfs();
        reply.statfs(
            s.blocks_total,
            s.blocks_free,
            s.blocks_avail,
            s.inodes_total,
            s.inodes_free,
            s.block_size as u32,
            s.name_max as u32,
            s.block_size as u32,
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        // XATTR_CREATE / XATTR_REPLACE; other bits are not flags of the attribute. The
        // kernel's "kill SGID" hint for an access ACL comes only with FUSE_SETXATTR_EXT, which
        // fuser cannot parse: the server works it out as the kernel would.
        let name = name.as_bytes();
        let sgid = if name == novafs_engine::xattr::ACL_ACCESS {
            match self.engine.getattr(ino.0) {
                Ok(a) if a.mode & libc::S_ISGID != 0 && !in_group_or_capable(req, a.gid) => {
                    AclSgid::Clear
                }
                _ => AclSgid::Keep,
            }
        } else {
            AclSgid::Keep
        };
        let r = XattrFlags::from_bits(flags & 3)
            .and_then(|f| self.engine.set_xattr_sgid(ino.0, name, value, f, sgid));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.engine.get_xattr(ino.0, name.as_bytes()) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.engine.list_xattr(ino.0) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32)
                } else if buf.len() > size as usize {
                    reply.error(Errno::ERANGE)
                } else {
                    reply.data(&buf)
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.engine.remove_xattr(ino.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let created = match self.create_file(req, parent.0, name, mode, umask, 0) {
            // Created by someone else since the kernel's lookup: open it, unless O_EXCL.
            Err(Error::AlreadyExists) if flags & libc::O_EXCL == 0 => {
                match self.engine.lookup(parent.0, name.as_bytes()) {
                    Ok(a) if a.kind == Kind::Dir => Err(Error::IsADirectory),
                    Ok(a) if flags & libc::O_TRUNC != 0 => self.engine.setattr(
                        a.ino,
                        &SetAttr {
                            size: Some(0),
                            ..SetAttr::default()
                        },
                    ),
                    r => r,
                }
            }
            r => r,
        };
        let r = created
            .and_then(|a| self.remember_named(parent.0, name.as_bytes(), a))
            .and_then(|a| match self.open_handle(a.ino) {
                Ok(fh) => Ok((a, fh)),
                Err(e) => {
                    self.forget_node(a.ino, 1);
                    Err(e)
                }
            });
        match r {
            Ok((a, fh)) => reply.created(
                &self.ttl,
                &file_attr(&a),
                Generation(a.generation),
                FileHandle(fh),
                open_flags(OpenFlags(flags).acc_mode()),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = match mode {
            0 => self.engine.allocate(ino.0, offset, length),
            // Blocks past the end are kept: zero-filled, counted in st_blocks, read as zeros
            // once the size grows over them.
            libc::FALLOC_FL_KEEP_SIZE => self.engine.allocate_with(ino.0, offset, length, true),
            m if m == libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE => {
                self.engine.punch_hole(ino.0, offset, length)
            }
            libc::FALLOC_FL_ZERO_RANGE => self.engine.zero_range(ino.0, offset, length, false),
            m if m == libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE => {
                self.engine.zero_range(ino.0, offset, length, true)
            }
            _ => Err(Error::NotSupported("this fallocate mode")),
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // The kernel asks only for SEEK_DATA and SEEK_HOLE (it does SET/CUR/END itself).
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        let ino = self.files.get(fh).map_or(ino.0, |i| i.ino);
        match self.engine.seek(ino, offset, data) {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let (Some(src), Some(dst)) = (self.files.get(fh_in), self.files.get(fh_out)) else {
            return reply.error(Errno::EBADF);
        };
        // The reply counts bytes in 32 bits: copy at most that much per call (callers loop).
        let len = len.min(u64::from(u32::MAX) & !(novafs::BLOCK - 1));
        match self
            .engine
            .copy_range(&src, offset_in, &dst, offset_out, len)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// What [`mount`] reports once the kernel mount is up.
#[derive(Clone, Debug)]
pub struct Ready {
    /// The mount point (canonical).
    pub mountpoint: PathBuf,
    /// Whether the image was cleanly unmounted last time (false: recovery ran).
    pub clean: bool,
    /// The media mode name.
    pub media_mode: &'static str,
}

/// Mount `image` on `mountpoint` and serve it until it is unmounted; then unmount the engine
/// cleanly (allocator state saved, the next mount is fast). `on_ready` runs once the kernel
/// mount is up. SIGINT, SIGTERM and SIGHUP unmount the file system (lazily if it is busy), so
/// they end the session cleanly too.
pub fn mount(
    image: &Path,
    mountpoint: &Path,
    config: &MountConfig,
    on_ready: impl FnOnce(&Ready),
) -> Result<(), MountError> {
    let fs = Fs::open(
        image,
        &MountOptions {
            read_only: config.read_only,
            force_emulated: config.force_emulated,
            ..MountOptions::default()
        },
    )
    .map_err(|e| MountError::Open(e.into_engine_error()))?;
    let engine = fs.engine().clone();
    let ready = Ready {
        mountpoint: mountpoint
            .canonicalize()
            .unwrap_or_else(|_| mountpoint.to_path_buf()),
        clean: fs.mount_report().clean,
        media_mode: fs.media_mode().name(),
    };
    let session = match fuser::Session::new(
        NovaFuse::new(fs, config.ttl, config.read_only).with_acl(config.acl),
        mountpoint,
        &config.fuser_config(image),
    ) {
        Ok(s) => s,
        Err(e) => {
            let _ = engine.unmount();
            return Err(MountError::Fuse(e));
        }
    };
    let mut session = session;
    let unmounter = session.unmount_callable();
    let signals = match spawn_signal_thread(unmounter, ready.mountpoint.clone()) {
        Ok(s) => s,
        Err(e) => {
            drop(session);
            let _ = engine.unmount();
            return Err(MountError::Fuse(e));
        }
    };
    on_ready(&ready);
    // The kernel ends the session with ENODEV, or with ECONNABORTED when it aborted the
    // connection (an unmount racing the event loops' reads, an abort through
    // /sys/fs/fuse/connections): either way nothing more will be asked, and the engine unmounts
    // cleanly. Everything acknowledged was durable when it was.
    let served = match session.run() {
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
        r => r,
    };
    signals.close();
    let unmounted = engine.unmount();
    served.map_err(MountError::Fuse)?;
    unmounted.map_err(MountError::Unmount)
}

/// Why [`mount`] failed.
#[derive(Debug)]
pub enum MountError {
    /// The image could not be mounted (engine error).
    Open(Error),
    /// The kernel mount or the FUSE session failed.
    Fuse(io::Error),
    /// The clean unmount of the engine failed.
    Unmount(Error),
}

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountError::Open(e) => write!(f, "cannot open the image: {e}"),
            MountError::Fuse(e) => write!(f, "FUSE: {e}"),
            MountError::Unmount(e) => write!(f, "unmounting the image: {e}"),
        }
    }
}

impl std::error::Error for MountError {}

/// The signal thread: on SIGINT/SIGTERM/SIGHUP, unmount (the session then ends).
fn spawn_signal_thread(
    mut unmounter: fuser::SessionUnmounter,
    mountpoint: PathBuf,
) -> io::Result<signal_hook::iterator::Handle> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("novafs-signals".into())
        .spawn(move || {
            // Ends when the session is over (`Handle::close`). A repeated signal is harmless.
            for _ in signals.forever() {
                if unmounter.unmount().is_err() {
                    // Busy: detach it now; the session ends when the last user lets go.
                    lazy_unmount(&mountpoint);
                }
            }
        })?;
    Ok(handle)
}

/// `fusermount3 -u -z MOUNTPOINT` (falls back to `umount -l`).
pub fn lazy_unmount(mountpoint: &Path) {
    let ok = Command::new("fusermount3")
        .args(["-u", "-z", "-q", "--"])
        .arg(mountpoint)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = Command::new("umount").arg("-l").arg(mountpoint).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        let mut c = MountConfig::default();
        c.apply_options("ro,allow_other,threads=3,fsname=pm0,noatime,defaults,x-systemd.foo")
            .unwrap();
        assert!(c.read_only && c.allow_other);
        assert_eq!(c.threads, 3);
        assert_eq!(c.fsname.as_deref(), Some("pm0"));
        assert_eq!(c.kernel_flags, vec!["noatime".to_string()]);
        assert!(c.apply_option("bogus").is_err());
        assert!(c.apply_option("threads=0").is_err());
        assert!(c.apply_option("threads=x").is_err());
        assert!(c.apply_option("attr_timeout=-1").is_err());
        c.apply_option("attr_timeout=0.5").unwrap();
        assert_eq!(c.ttl, Duration::from_millis(500));
        c.apply_option("rw").unwrap();
        assert!(!c.read_only);
        let fc = c.fuser_config(Path::new("/dev/shm/x.img"));
        assert!(fc.mount_options.contains(&MountOption::DefaultPermissions));
        assert!(fc.mount_options.contains(&MountOption::RW));
        assert_eq!(fc.acl, SessionACL::All);
        assert_eq!(fc.n_threads, Some(3));
    }

    #[test]
    fn attributes_convert() {
        let a = Attr {
            ino: 7,
            generation: 3,
            kind: Kind::File,
            size: 5000,
            blocks: 2,
            nlink: 1,
            mode: 0o4755,
            uid: 10,
            gid: 20,
            atime_ns: 1_500_000_000,
            mtime_ns: 2_000_000_001,
            ctime_ns: 3,
            crtime_ns: 4,
            rdev: 0,
        };
        let f = file_attr(&a);
        assert_eq!(f.ino, INodeNo(7));
        assert_eq!(f.blocks, 16);
        assert_eq!(f.perm, 0o4755);
        assert_eq!(f.kind, FileType::RegularFile);
        assert_eq!(f.mtime, UNIX_EPOCH + Duration::new(2, 1));
        assert_eq!(ns(TimeOrNow::SpecificTime(f.mtime)), 2_000_000_001);
        assert_eq!(
            ns(TimeOrNow::SpecificTime(UNIX_EPOCH - Duration::from_secs(5))),
            0
        );
        let dev = file_attr(&Attr {
            kind: Kind::CharDev,
            rdev: 0x0103, // 1:3, /dev/null
            ..a
        });
        assert_eq!((dev.kind, dev.rdev), (FileType::CharDevice, 0x0103));
    }
}
