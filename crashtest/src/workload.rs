//! Workloads: one operation per line, `#` comments.
//!
//! ```text
//! mkdir P | create P | write P OFF LEN SEED | writefile P LEN SEED | truncate P LEN
//! punch P OFF LEN | zero P OFF LEN | zero-keep P OFF LEN | mknod P fifo|socket|chr|blk [MAJOR:MINOR]
//! falloc P OFF LEN | link P Q | symlink TARGET P | unlink P | rmdir P | rename P Q | exchange P Q
//! fsync P | remount | unmount
//! map P OFF LEN [atomic] | mwrite P OFF LEN SEED | persist P OFF LEN | msync P
//! open P H | close H
//! write@H OFF LEN SEED | append@H LEN SEED | truncate@H LEN | punch@H OFF LEN
//! falloc@H OFF LEN | fsync@H
//! ```
//! An operation that fails (a missing path, a non-empty directory, ...) is part of the
//! workload: the crash-free run records its error, and recovery must agree with that run.
//! `unmount` is a clean unmount followed by a mount (the crash points of both are explored).
//!
//! Handles: `open P H` opens P (read + write, no create) and keeps the open file as handle H
//! (a name of the workload's choosing; an H already open is closed first), so that several
//! handles on one file can interleave: `VERB@H ...` is the file operation `VERB` through H
//! instead of through a fresh open of a path (`append@H` writes at the end of file as of the
//! call). A handle keeps its inode when the path is renamed or unlinked (an unlinked file lives
//! until its last handle closes: `close H`). `remount`/`unmount` close every handle and
//! mapping. Mappings are per path: `map P` opens P for its mapping, so a mapping and a handle
//! on one file are `map P ...` plus `open P H`.

use std::fmt;

use novafs::{Error, Fs};

/// A user's own step: any sequence of novafs calls, run as one operation of a workload.
pub struct Custom {
    /// Its name in reports.
    pub name: String,
    /// The calls.
    #[allow(clippy::type_complexity)]
    pub run: Box<dyn Fn(&Fs) -> Result<(), Error> + Send + Sync>,
}

impl std::fmt::Debug for Custom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Custom({})", self.name)
    }
}

impl PartialEq for Custom {
    fn eq(&self, o: &Custom) -> bool {
        self.name == o.name
    }
}

impl Eq for Custom {}

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A user-supplied step (library API only; written as a comment in workload files).
    Custom(std::sync::Arc<Custom>),
    /// `mkdir P`
    Mkdir(String),
    /// `create P` (create or open; no truncate)
    Create(String),
    /// `mknod P KIND [MAJOR:MINOR]`: a FIFO, socket or device node (`Fs::mknod`).
    Mknod(String, novafs::FileType, u64),
    /// `write P OFF LEN SEED`
    Write {
        /// Path.
        path: String,
        /// Offset.
        off: u64,
        /// Length.
        len: u64,
        /// Data seed.
        seed: u64,
    },
    /// `writefile P LEN SEED`: `Fs::write`, the atomic replace of a whole file (created if
    /// missing)
    WriteFile {
        /// Path.
        path: String,
        /// New length.
        len: u64,
        /// Data seed.
        seed: u64,
    },
    /// `truncate P LEN`
    Truncate(String, u64),
    /// `punch P OFF LEN`
    Punch(String, u64, u64),
    /// `zero P OFF LEN` (`keep` false) or `zero-keep P OFF LEN`: `File::zero_range`.
    Zero {
        /// The file.
        path: String,
        /// Offset.
        off: u64,
        /// Length.
        len: u64,
        /// `keep_size`.
        keep: bool,
    },
    /// `falloc P OFF LEN`
    Falloc(String, u64, u64),
    /// `falloc-keep P OFF LEN`: `fallocate(FALLOC_FL_KEEP_SIZE)`, blocks past the end kept
    FallocKeep(String, u64, u64),
    /// `setxattr P NAME LEN SEED`: set an extended attribute to `LEN` bytes of data (for
    /// `system.posix_acl_access`, a fixed ACL with a named user and a mask, whatever LEN)
    SetXattr(String, String, u64, u64),
    /// `removexattr P NAME`
    RemoveXattr(String, String),
    /// `chmod P MODE` (octal): `Fs::set_permissions` (an access ACL follows in the same commit)
    Chmod(String, u32),
    /// `link P Q` (hard link)
    Link(String, String),
    /// `symlink TARGET P`
    Symlink(String, String),
    /// `unlink P`
    Unlink(String),
    /// `rmdir P`
    Rmdir(String),
    /// `rename P Q`
    Rename(String, String),
    /// `RENAME_EXCHANGE`: swap two names atomically.
    Exchange(String, String),
    /// `fsync P`
    Fsync(String),
    /// `map P OFF LEN [atomic]`: map a range (MAP_SYNC mode, or failure-atomic); later
    /// `mwrite`s of P store through it.
    Map(String, u64, u64, bool),
    /// `mwrite P OFF LEN SEED`: store through P's mapping (durable only once persisted).
    MWrite {
        /// Path.
        path: String,
        /// File offset.
        off: u64,
        /// Length.
        len: u64,
        /// Data seed.
        seed: u64,
    },
    /// `persist P OFF LEN`: flush + fence the mapped range.
    Persist(String, u64, u64),
    /// `msync P`: migrate P's cached pages into the file.
    Msync(String),
    /// `open P H`: open P and hold it as handle H.
    Open(String, String),
    /// `close H`: close handle H.
    Close(String),
    /// `VERB@H ...`: a file operation through handle H.
    Via(String, HandleOp),
    /// `grow BYTES`: `Fs::grow`, the image grows to BYTES (a no-op at its size; shrinking
    /// fails).
    Grow(u64),
    /// `remount`: clean unmount, then mount.
    Remount,
    /// `unmount`: the same as remount (the workload goes on after it).
    Unmount,
}

/// A file operation through an open handle (`VERB@H ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandleOp {
    /// `write@H OFF LEN SEED`
    Write {
        /// Offset.
        off: u64,
        /// Length.
        len: u64,
        /// Data seed.
        seed: u64,
    },
    /// `append@H LEN SEED`: write at the end of file.
    Append {
        /// Length.
        len: u64,
        /// Data seed.
        seed: u64,
    },
    /// `truncate@H LEN`
    Truncate(u64),
    /// `punch@H OFF LEN`
    Punch(u64, u64),
    /// `falloc@H OFF LEN`
    Falloc(u64, u64),
    /// `fsync@H`
    Fsync,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Custom(c) => write!(f, "# custom step: {}", c.name),
            Op::Mkdir(p) => write!(f, "mkdir {p}"),
            Op::Create(p) => write!(f, "create {p}"),
            Op::Write {
                path,
                off,
                len,
                seed,
            } => write!(f, "write {path} {off} {len} {seed}"),
            Op::WriteFile { path, len, seed } => write!(f, "writefile {path} {len} {seed}"),
            Op::Truncate(p, l) => write!(f, "truncate {p} {l}"),
            Op::Punch(p, o, l) => write!(f, "punch {p} {o} {l}"),
            Op::Zero {
                path,
                off,
                len,
                keep,
            } => write!(
                f,
                "{} {path} {off} {len}",
                if *keep { "zero-keep" } else { "zero" }
            ),
            Op::Falloc(p, o, l) => write!(f, "falloc {p} {o} {l}"),
            Op::FallocKeep(p, o, l) => write!(f, "falloc-keep {p} {o} {l}"),
            Op::SetXattr(p, n, l, seed) => write!(f, "setxattr {p} {n} {l} {seed}"),
            Op::RemoveXattr(p, n) => write!(f, "removexattr {p} {n}"),
            Op::Chmod(p, m) => write!(f, "chmod {p} {m:o}"),
            Op::Link(p, q) => write!(f, "link {p} {q}"),
            Op::Symlink(t, p) => write!(f, "symlink {t} {p}"),
            Op::Mknod(p, k, rdev) => {
                let kind = match k {
                    novafs::FileType::Fifo => "fifo",
                    novafs::FileType::Socket => "socket",
                    novafs::FileType::CharDevice => "chr",
                    _ => "blk",
                };
                write!(f, "mknod {p} {kind}")?;
                if *rdev != 0 {
                    write!(f, " {}:{}", rdev >> 8, rdev & 0xff)?;
                }
                Ok(())
            }
            Op::Unlink(p) => write!(f, "unlink {p}"),
            Op::Rmdir(p) => write!(f, "rmdir {p}"),
            Op::Rename(p, q) => write!(f, "rename {p} {q}"),
            Op::Exchange(p, q) => write!(f, "exchange {p} {q}"),
            Op::Fsync(p) => write!(f, "fsync {p}"),
            Op::Map(p, o, l, false) => write!(f, "map {p} {o} {l}"),
            Op::Map(p, o, l, true) => write!(f, "map {p} {o} {l} atomic"),
            Op::MWrite {
                path,
                off,
                len,
                seed,
            } => write!(f, "mwrite {path} {off} {len} {seed}"),
            Op::Persist(p, o, l) => write!(f, "persist {p} {o} {l}"),
            Op::Msync(p) => write!(f, "msync {p}"),
            Op::Open(p, h) => write!(f, "open {p} {h}"),
            Op::Close(h) => write!(f, "close {h}"),
            Op::Via(h, op) => match op {
                HandleOp::Write { off, len, seed } => write!(f, "write@{h} {off} {len} {seed}"),
                HandleOp::Append { len, seed } => write!(f, "append@{h} {len} {seed}"),
                HandleOp::Truncate(l) => write!(f, "truncate@{h} {l}"),
                HandleOp::Punch(o, l) => write!(f, "punch@{h} {o} {l}"),
                HandleOp::Falloc(o, l) => write!(f, "falloc@{h} {o} {l}"),
                HandleOp::Fsync => write!(f, "fsync@{h}"),
            },
            Op::Grow(n) => write!(f, "grow {n}"),
            Op::Remount => write!(f, "remount"),
            Op::Unmount => write!(f, "unmount"),
        }
    }
}

/// A named workload: `setup` prepares a tree (not crash-checked), `ops` are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Name (for reports).
    pub name: String,
    /// Preparation.
    pub setup: Vec<Op>,
    /// The operations whose every crash point is explored.
    pub ops: Vec<Op>,
}

impl Workload {
    /// The workload as text: setup operations after an `@setup` line, checked operations after
    /// an `@ops` line (both markers only when there is a setup).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if !self.setup.is_empty() {
            s.push_str("@setup\n");
            for op in &self.setup {
                s.push_str(&format!("{op}\n"));
            }
            s.push_str("@ops\n");
        }
        for op in &self.ops {
            s.push_str(&format!("{op}\n"));
        }
        s
    }
}

fn num(tok: Option<&str>, line: usize, what: &str) -> Result<u64, String> {
    let t = tok.ok_or_else(|| format!("line {line}: missing {what}"))?;
    t.parse::<u64>()
        .map_err(|_| format!("line {line}: {what} '{t}' is not a number"))
}

fn path(tok: Option<&str>, line: usize) -> Result<String, String> {
    tok.map(str::to_string)
        .ok_or_else(|| format!("line {line}: missing path"))
}

/// Parse a workload file. Lines after `@setup` (until `@ops`) form the setup.
pub fn parse(name: &str, text: &str) -> Result<Workload, String> {
    let mut setup = Vec::new();
    let mut ops = Vec::new();
    let mut in_setup = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if content == "@setup" {
            in_setup = true;
            continue;
        }
        if content == "@ops" {
            in_setup = false;
            continue;
        }
        let mut t = content.split_whitespace();
        let verb = t.next().unwrap_or("");
        let via = match verb.split_once('@') {
            Some((v, h)) if valid_handle(h) => Some((v, h.to_string())),
            Some((_, h)) => return Err(format!("line {line}: bad handle name '{h}'")),
            None => None,
        };
        let op = if let Some((v, h)) = via {
            let hop = match v {
                "write" => HandleOp::Write {
                    off: num(t.next(), line, "offset")?,
                    len: num(t.next(), line, "length")?,
                    seed: num(t.next(), line, "seed")?,
                },
                "append" => HandleOp::Append {
                    len: num(t.next(), line, "length")?,
                    seed: num(t.next(), line, "seed")?,
                },
                "truncate" => HandleOp::Truncate(num(t.next(), line, "length")?),
                "punch" => HandleOp::Punch(
                    num(t.next(), line, "offset")?,
                    num(t.next(), line, "length")?,
                ),
                "falloc" => HandleOp::Falloc(
                    num(t.next(), line, "offset")?,
                    num(t.next(), line, "length")?,
                ),
                "fsync" => HandleOp::Fsync,
                other => {
                    return Err(format!(
                        "line {line}: '{other}' has no handle form (write, append, truncate, \
                         punch, falloc, fsync)"
                    ))
                }
            };
            Op::Via(h, hop)
        } else {
            match verb {
                "open" => {
                    let p = path(t.next(), line)?;
                    let h = t
                        .next()
                        .ok_or_else(|| format!("line {line}: missing handle name"))?;
                    if !valid_handle(h) {
                        return Err(format!("line {line}: bad handle name '{h}'"));
                    }
                    Op::Open(p, h.to_string())
                }
                "close" => {
                    let h = t
                        .next()
                        .ok_or_else(|| format!("line {line}: missing handle name"))?;
                    Op::Close(h.to_string())
                }
                "mkdir" => Op::Mkdir(path(t.next(), line)?),
                "create" => Op::Create(path(t.next(), line)?),
                "write" => Op::Write {
                    path: path(t.next(), line)?,
                    off: num(t.next(), line, "offset")?,
                    len: num(t.next(), line, "length")?,
                    seed: num(t.next(), line, "seed")?,
                },
                "writefile" => Op::WriteFile {
                    path: path(t.next(), line)?,
                    len: num(t.next(), line, "length")?,
                    seed: num(t.next(), line, "seed")?,
                },
                "truncate" => Op::Truncate(path(t.next(), line)?, num(t.next(), line, "length")?),
                "punch" => Op::Punch(
                    path(t.next(), line)?,
                    num(t.next(), line, "offset")?,
                    num(t.next(), line, "length")?,
                ),
                w @ ("zero" | "zero-keep") => Op::Zero {
                    path: path(t.next(), line)?,
                    off: num(t.next(), line, "offset")?,
                    len: num(t.next(), line, "length")?,
                    keep: w == "zero-keep",
                },
                "falloc" => Op::Falloc(
                    path(t.next(), line)?,
                    num(t.next(), line, "offset")?,
                    num(t.next(), line, "length")?,
                ),
                "falloc-keep" => Op::FallocKeep(
                    path(t.next(), line)?,
                    num(t.next(), line, "offset")?,
                    num(t.next(), line, "length")?,
                ),
                "setxattr" => Op::SetXattr(
                    path(t.next(), line)?,
                    t.next()
                        .ok_or_else(|| format!("line {line}: missing xattr name"))?
                        .to_string(),
                    num(t.next(), line, "length")?,
                    num(t.next(), line, "seed")?,
                ),
                "chmod" => {
                    let p = path(t.next(), line)?;
                    let m = t
                        .next()
                        .and_then(|m| u32::from_str_radix(m, 8).ok())
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| format!("line {line}: chmod needs an octal mode"))?;
                    Op::Chmod(p, m)
                }
                "removexattr" => Op::RemoveXattr(
                    path(t.next(), line)?,
                    t.next()
                        .ok_or_else(|| format!("line {line}: missing xattr name"))?
                        .to_string(),
                ),
                "link" => Op::Link(path(t.next(), line)?, path(t.next(), line)?),
                "symlink" => Op::Symlink(path(t.next(), line)?, path(t.next(), line)?),
                "mknod" => {
                    let p = path(t.next(), line)?;
                    let kind = match t.next() {
                        Some("fifo") => novafs::FileType::Fifo,
                        Some("socket") => novafs::FileType::Socket,
                        Some("chr") => novafs::FileType::CharDevice,
                        Some("blk") => novafs::FileType::BlockDevice,
                        k => {
                            return Err(format!(
                                "line {line}: mknod kind {k:?}: fifo, socket, chr or blk"
                            ))
                        }
                    };
                    // Small device numbers (major and minor below 256) in makedev's encoding.
                    let rdev = match t.next() {
                        None => 0,
                        Some(d) => {
                            let (ma, mi) = d
                                .split_once(':')
                                .and_then(|(a, b)| {
                                    Some((a.parse::<u8>().ok()?, b.parse::<u8>().ok()?))
                                })
                                .ok_or_else(|| {
                                    format!("line {line}: device {d:?}: MAJOR:MINOR below 256")
                                })?;
                            u64::from(ma) << 8 | u64::from(mi)
                        }
                    };
                    Op::Mknod(p, kind, rdev)
                }
                "unlink" => Op::Unlink(path(t.next(), line)?),
                "rmdir" => Op::Rmdir(path(t.next(), line)?),
                "rename" => Op::Rename(path(t.next(), line)?, path(t.next(), line)?),
                "exchange" => Op::Exchange(path(t.next(), line)?, path(t.next(), line)?),
                "fsync" => Op::Fsync(path(t.next(), line)?),
                "grow" => Op::Grow(num(t.next(), line, "size")?),
                "remount" => Op::Remount,
                "unmount" => Op::Unmount,
                "map" => Op::Map(
                    path(t.next(), line)?,
                    num(t.next(), line, "offset")?,
                    num(t.next(), line, "length")?,
                    match t.next() {
                        None => false,
                        Some("atomic") => true,
                        Some(x) => {
                            return Err(format!("line {line}: map mode '{x}' (only 'atomic')"))
                        }
                    },
                ),
                "mwrite" => Op::MWrite {
                    path: path(t.next(), line)?,
                    off: num(t.next(), line, "offset")?,
                    len: num(t.next(), line, "length")?,
                    seed: num(t.next(), line, "seed")?,
                },
                "persist" => Op::Persist(
                    path(t.next(), line)?,
                    num(t.next(), line, "offset")?,
                    num(t.next(), line, "length")?,
                ),
                "msync" => Op::Msync(path(t.next(), line)?),
                other => return Err(format!("line {line}: unknown operation '{other}'")),
            }
        };
        if let Some(extra) = t.next() {
            return Err(format!("line {line}: unexpected '{extra}'"));
        }
        if let Op::Write { len, .. }
        | Op::WriteFile { len, .. }
        | Op::MWrite { len, .. }
        | Op::Via(_, HandleOp::Write { len, .. } | HandleOp::Append { len, .. }) = &op
        {
            if *len > 64 << 20 {
                return Err(format!("line {line}: writes are limited to 64 MiB"));
            }
        }
        if in_setup {
            setup.push(op);
        } else {
            ops.push(op);
        }
    }
    if ops.is_empty() {
        return Err("the workload has no operations".into());
    }
    Ok(Workload {
        name: name.to_string(),
        setup,
        ops,
    })
}

/// A handle name: letters, digits, `_` and `-`.
fn valid_handle(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Deterministic data for `write` (never all zero).
pub fn data(seed: u64, len: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x as u8) | 1
        })
        .collect()
}

/// What a workload holds open between its operations: mappings by path, files by handle.
#[derive(Default)]
pub struct Held {
    /// Mappings, by path.
    pub maps: std::collections::HashMap<String, novafs::Mapping>,
    /// Open files, by handle name.
    pub files: std::collections::HashMap<String, novafs::File>,
}

impl Held {
    /// Nothing held.
    pub fn new() -> Held {
        Held::default()
    }

    /// Close every mapping and handle.
    pub fn clear(&mut self) {
        self.maps.clear();
        self.files.clear();
    }
}

/// The former name of [`Held`] (it held only mappings).
pub type Maps = Held;

/// Run one operation (except remount/unmount, which the runner handles).
pub fn apply(fs: &Fs, op: &Op) -> Result<(), Error> {
    apply_with(fs, &mut Held::new(), op)
}

/// Run one operation with what the workload holds open.
pub fn apply_with(fs: &Fs, held: &mut Held, op: &Op) -> Result<(), Error> {
    let invalid = |what: &str| Error::from(novafs::EngineError::InvalidArgument(what.into()));
    let no_map = || invalid("no mapping of that path (map it first)");
    let no_handle = || invalid("no open handle of that name (open it first)");
    let maps = &mut held.maps;
    match op {
        Op::Open(p, h) => {
            let f = fs.open_options().read(true).write(true).open(p)?;
            held.files.insert(h.clone(), f);
            Ok(())
        }
        Op::Close(h) => held.files.remove(h).map(drop).ok_or_else(no_handle),
        Op::Via(h, hop) => {
            let f = held.files.get(h).ok_or_else(no_handle)?;
            match hop {
                HandleOp::Write { off, len, seed } => {
                    f.write_at(&data(*seed, *len), *off).map(|_| ())
                }
                HandleOp::Append { len, seed } => f.append(&data(*seed, *len)).map(|_| ()),
                HandleOp::Truncate(l) => f.set_len(*l),
                HandleOp::Punch(o, l) => f.punch_hole(*o, *l),
                HandleOp::Falloc(o, l) => f.allocate(*o, *l),
                HandleOp::Fsync => f.sync_all(),
            }
        }
        Op::Custom(c) => (c.run)(fs),
        Op::Map(p, o, l, atomic) => {
            let f = fs.open_options().read(true).write(true).open(p)?;
            let mode = if *atomic {
                novafs::MapMode::Atomic
            } else {
                novafs::MapMode::Sync
            };
            let m = f.map(*o, *l, mode)?;
            maps.insert(p.clone(), m);
            Ok(())
        }
        Op::MWrite {
            path,
            off,
            len,
            seed,
        } => {
            let m = maps.get(path).ok_or_else(no_map)?;
            let at = off.checked_sub(m.offset()).ok_or_else(no_map)?;
            m.write_at(&data(*seed, *len), at)
        }
        Op::Persist(p, o, l) => {
            let m = maps.get(p).ok_or_else(no_map)?;
            let at = o.checked_sub(m.offset()).ok_or_else(no_map)?;
            m.persist(at, *l)
        }
        Op::Msync(p) => match maps.get(p) {
            Some(m) => m.sync(),
            None => fs.open_options().read(true).write(true).open(p)?.sync_all(),
        },
        Op::Mkdir(p) => fs.create_dir(p),
        Op::Create(p) => fs
            .open_options()
            .write(true)
            .create(true)
            .open(p)
            .map(|_| ()),
        Op::Write {
            path,
            off,
            len,
            seed,
        } => {
            let f = fs.open_options().write(true).open(path)?;
            f.write_at(&data(*seed, *len), *off).map(|_| ())
        }
        Op::WriteFile { path, len, seed } => fs.write(path, &data(*seed, *len)),
        Op::Truncate(p, l) => fs.open_options().write(true).open(p)?.set_len(*l),
        Op::Punch(p, o, l) => fs.open_options().write(true).open(p)?.punch_hole(*o, *l),
        Op::Zero {
            path,
            off,
            len,
            keep,
        } => fs
            .open_options()
            .write(true)
            .open(path)?
            .zero_range(*off, *len, *keep),
        Op::Falloc(p, o, l) => fs.open_options().write(true).open(p)?.allocate(*o, *l),
        Op::FallocKeep(p, o, l) => fs
            .open_options()
            .write(true)
            .open(p)?
            .allocate_keep_size(*o, *l),
        Op::SetXattr(p, n, l, seed) => {
            fs.set_xattr(p, n, &xattr_value(n, *seed, *l), novafs::XattrFlags::Any)
        }
        Op::RemoveXattr(p, n) => fs.remove_xattr(p, n),
        Op::Chmod(p, m) => fs.set_permissions(p, *m),
        Op::Link(p, q) => fs.hard_link(p, q),
        Op::Symlink(t, p) => fs.symlink(t, p),
        Op::Mknod(p, k, rdev) => fs.mknod(p, *k, 0o644, *rdev),
        Op::Unlink(p) => fs.remove_file(p),
        Op::Rmdir(p) => fs.remove_dir(p),
        Op::Rename(p, q) => fs.rename(p, q),
        Op::Exchange(p, q) => fs.rename_with(
            p,
            q,
            novafs::RenameFlags {
                exchange: true,
                ..Default::default()
            },
        ),
        Op::Fsync(p) => fs.open_options().read(true).open(p)?.sync_all(),
        Op::Grow(n) => fs.grow(*n).map(|_| ()),
        Op::Remount | Op::Unmount => {
            held.clear();
            Ok(())
        }
    }
}

/// The value `setxattr P NAME LEN SEED` sets: `LEN` bytes of data, or for the access ACL a
/// fixed one (user::rw- user:1000:r-- group::r-- mask::r-x other::---; it sets mode 0650).
pub fn xattr_value(name: &str, seed: u64, len: u64) -> Vec<u8> {
    if name == "system.posix_acl_access" {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, 0u32),
            (2, 4, 1000),
            (4, 4, 0),
            (0x10, 5, 0),
            (0x20, 0, 0),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        return v;
    }
    data(seed, len)
}

/// The prepared tree of the built-in workloads.
pub fn prepared_tree() -> Vec<Op> {
    let w = |p: &str, off, len, seed| Op::Write {
        path: p.into(),
        off,
        len,
        seed,
    };
    vec![
        Op::Mkdir("/A".into()),
        Op::Mkdir("/A/C".into()),
        Op::Create("/foo".into()),
        w("/foo", 0, 8192, 1),
        Op::Create("/A/bar".into()),
        w("/A/bar", 0, 100, 2),
        Op::Link("/foo".into(), "/A/foolink".into()),
        Op::Symlink("/foo".into(), "/sym".into()),
        Op::SetXattr("/foo".into(), "user.pre".into(), 100, 30),
        Op::SetXattr("/A/bar".into(), "trusted.big".into(), 9000, 31),
    ]
}

/// Every single operation of the ACE-style seq-1 set, for the prepared tree.
pub fn seq1_ops() -> Vec<Op> {
    let w = |p: &str, off, len, seed| Op::Write {
        path: p.into(),
        off,
        len,
        seed,
    };
    let wf = |p: &str, len, seed| Op::WriteFile {
        path: p.into(),
        len,
        seed,
    };
    let s = |x: &str| x.to_string();
    let zero = |p: &str, off, len, keep| Op::Zero {
        path: p.into(),
        off,
        len,
        keep,
    };
    vec![
        Op::Mkdir(s("/B")),
        Op::Mkdir(s("/A/D")),
        Op::Create(s("/new")),
        Op::Create(s("/A/C/new")),
        w("/foo", 0, 4096, 3),     // aligned overwrite
        w("/foo", 100, 40, 4),     // inside one line
        w("/foo", 60, 10, 5),      // across a line boundary
        w("/foo", 4090, 20, 6),    // across a page boundary
        w("/foo", 8192, 5000, 7),  // append
        w("/A/bar", 200, 1, 8),    // extend a small file by a sparse write
        w("/foo", 20000, 4096, 9), // beyond the end (hole)
        wf("/foo", 5000, 10),      // replace a file by a shorter one (partial last page)
        wf("/A/bar", 12288, 11),   // replace a file by a longer one
        wf("/new2", 6000, 12),     // a new file, created with its contents
        Op::Truncate(s("/foo"), 0),
        Op::Truncate(s("/foo"), 5000),
        Op::Truncate(s("/foo"), 20000),
        Op::Punch(s("/foo"), 100, 5000),
        zero("/foo", 100, 5000, false), // across a page boundary, inside the file
        zero("/foo", 9000, 8000, false), // past the end: the file grows
        zero("/foo", 4000, 90000, true), // keep_size: stops at the end
        Op::Falloc(s("/foo"), 8192, 8192),
        Op::Falloc(s("/A/bar"), 0, 4096),
        Op::Link(s("/foo"), s("/A/l2")),
        Op::Link(s("/A/bar"), s("/bar2")),
        Op::Symlink(s("/A"), s("/s2")),
        Op::Mknod(s("/fifo"), novafs::FileType::Fifo, 0),
        Op::Mknod(s("/A/sock"), novafs::FileType::Socket, 0),
        Op::Mknod(s("/null"), novafs::FileType::CharDevice, 1 << 8 | 3),
        Op::Mknod(s("/A/C/sda"), novafs::FileType::BlockDevice, 8 << 8),
        Op::Unlink(s("/foo")),   // one of two links
        Op::Unlink(s("/A/bar")), // the last link
        Op::Unlink(s("/sym")),
        Op::Rmdir(s("/A/C")),
        Op::Rmdir(s("/A")),                       // not empty: fails
        Op::Rename(s("/foo"), s("/A/C/foo2")),    // across directories
        Op::Rename(s("/foo"), s("/foo3")),        // same directory
        Op::Rename(s("/A/bar"), s("/foo")),       // over a file with two links
        Op::Rename(s("/sym"), s("/A/bar")),       // over a file with one link
        Op::Rename(s("/A/foolink"), s("/A/bar")), // same directory, over a file with one link
        Op::Rename(s("/A"), s("/B2")),            // a directory
        Op::Rename(s("/A/C"), s("/C2")),          // a directory, across directories
        Op::Rename(s("/A"), s("/A/C/x")),         // into itself: fails
        Op::Rename(s("/foo"), s("/A/foolink")),   // two names of one inode: no-op
        Op::Exchange(s("/foo"), s("/A/bar")),     // swap two files across directories
        Op::Exchange(s("/A/C"), s("/sym")),       // swap a directory and a symlink
        Op::Exchange(s("/A/bar"), s("/A/C")),     // swap a file and a directory in one directory
        Op::Fsync(s("/foo")),
        Op::Grow(6 << 20), // the harness's image is 4 MiB
        Op::Remount,
        Op::FallocKeep(s("/foo"), 8192, 16384), // past the end: the size stays
        Op::FallocKeep(s("/A/bar"), 0, 4096),   // inside and past the end
        Op::SetXattr(s("/foo"), s("user.a"), 10, 20), // a new small one
        Op::SetXattr(s("/A"), s("security.s"), 20000, 21), // in pieces, on a directory
        Op::SetXattr(s("/foo"), s("user.pre"), 5000, 22), // overwrite: small by pieces
        Op::SetXattr(s("/A/bar"), s("trusted.big"), 3, 23), // overwrite: pieces by small
        Op::SetXattr(s("/A/bar"), s("system.posix_acl_access"), 0, 0), // ACL + mode
        Op::RemoveXattr(s("/foo"), s("user.pre")),
        Op::RemoveXattr(s("/foo"), s("user.none")), // fails: ENODATA
        Op::Chmod(s("/A/bar"), 0o600),
    ]
}

/// The xattr workloads: a mode change that rewrites an access ACL in its commit, and a file
/// whose log is compacted for its length in pages (values of 20,000 bytes, 5 pages each).
pub fn xattrs() -> Vec<Workload> {
    let s = |x: &str| x.to_string();
    let acl = s("system.posix_acl_access");
    let big = |seed| Op::SetXattr(s("/x"), s("user.big"), 20000, seed);
    let mut acl_setup = prepared_tree();
    acl_setup.push(Op::SetXattr(s("/A/bar"), acl.clone(), 0, 0));
    // A data page written once pins the head page: only a compaction frees the dead values.
    let mut gc_setup = vec![
        Op::Create(s("/x")),
        Op::Write {
            path: s("/x"),
            off: 0,
            len: 10,
            seed: 1,
        },
    ];
    gc_setup.extend((0..10).map(big));
    vec![
        Workload {
            name: s("xattr-acl-chmod"),
            setup: acl_setup,
            ops: vec![
                Op::Chmod(s("/A/bar"), 0o604),
                Op::RemoveXattr(s("/A/bar"), acl.clone()),
                Op::Chmod(s("/A/bar"), 0o644),
            ],
        },
        Workload {
            name: s("xattr-gc-compact"),
            setup: gc_setup,
            ops: (100..104).map(big).collect(),
        },
    ]
}

/// The mapped-write workloads: every step of the write-cache paths (map, store, persist,
/// sync), each followed by a crash at every point.
pub fn mapped() -> Vec<Workload> {
    let s = |x: &str| x.to_string();
    let mw = |off, len, seed| Op::MWrite {
        path: s("/foo"),
        off,
        len,
        seed,
    };
    let seqs: Vec<(&str, Vec<Op>)> = vec![
        (
            "store-persist",
            vec![
                Op::Map(s("/foo"), 0, 8192, false),
                mw(100, 40, 11),
                Op::Persist(s("/foo"), 100, 40),
            ],
        ),
        (
            "store-unpersisted",
            vec![Op::Map(s("/foo"), 0, 8192, false), mw(60, 16, 12)],
        ),
        (
            "store-two-pages-persist",
            vec![
                Op::Map(s("/foo"), 0, 8192, false),
                mw(4000, 200, 13),
                Op::Persist(s("/foo"), 4000, 200),
            ],
        ),
        (
            "store-persist-msync",
            vec![
                Op::Map(s("/foo"), 0, 8192, false),
                mw(0, 4096, 14),
                Op::Persist(s("/foo"), 0, 4096),
                Op::Msync(s("/foo")),
            ],
        ),
        (
            "store-msync-unpersisted",
            vec![
                Op::Map(s("/foo"), 0, 8192, false),
                mw(8, 8, 15),
                Op::Msync(s("/foo")),
            ],
        ),
        (
            "store-again-same-page",
            vec![
                Op::Map(s("/foo"), 0, 8192, false),
                mw(0, 64, 16),
                Op::Persist(s("/foo"), 0, 64),
                mw(64, 64, 17),
                Op::Persist(s("/foo"), 64, 64),
            ],
        ),
        (
            "store-then-write-at",
            vec![
                Op::Map(s("/foo"), 0, 8192, false),
                mw(0, 64, 18),
                Op::Persist(s("/foo"), 0, 64),
                Op::Write {
                    path: s("/foo"),
                    off: 10,
                    len: 10,
                    seed: 19,
                },
            ],
        ),
        (
            "store-then-truncate",
            vec![
                Op::Map(s("/foo"), 0, 8192, false),
                mw(5000, 64, 20),
                Op::Persist(s("/foo"), 5000, 64),
                Op::Truncate(s("/foo"), 4096),
            ],
        ),
        (
            "store-then-unlink",
            vec![
                Op::Map(s("/foo"), 0, 8192, false),
                mw(0, 64, 21),
                Op::Persist(s("/foo"), 0, 64),
                Op::Unlink(s("/A/foolink")),
                Op::Unlink(s("/foo")),
            ],
        ),
        (
            "store-then-remount",
            vec![
                Op::Map(s("/foo"), 0, 8192, false),
                mw(300, 64, 22),
                Op::Persist(s("/foo"), 300, 64),
                Op::Remount,
            ],
        ),
        (
            "atomic-store-persist",
            vec![
                Op::Map(s("/foo"), 0, 8192, true),
                mw(100, 40, 23),
                Op::Persist(s("/foo"), 100, 40),
            ],
        ),
        (
            "atomic-two-pages-sync",
            vec![
                Op::Map(s("/foo"), 0, 8192, true),
                mw(4000, 200, 24),
                Op::Persist(s("/foo"), 4000, 200),
                Op::Msync(s("/foo")),
            ],
        ),
        (
            "atomic-sync-then-more",
            vec![
                Op::Map(s("/foo"), 0, 8192, true),
                mw(0, 64, 25),
                Op::Msync(s("/foo")),
                mw(64, 64, 26),
                Op::Persist(s("/foo"), 0, 128),
            ],
        ),
        (
            "atomic-and-sync-files",
            vec![
                Op::Map(s("/foo"), 0, 8192, true),
                mw(0, 64, 27),
                Op::Map(s("/A/bar"), 0, 100, false),
                Op::MWrite {
                    path: s("/A/bar"),
                    off: 10,
                    len: 20,
                    seed: 28,
                },
                Op::Persist(s("/A/bar"), 10, 20),
                Op::Msync(s("/A/bar")),
            ],
        ),
        (
            "atomic-then-write-at",
            vec![
                Op::Map(s("/foo"), 0, 8192, true),
                mw(0, 64, 29),
                Op::Write {
                    path: s("/foo"),
                    off: 10,
                    len: 10,
                    seed: 30,
                },
            ],
        ),
        (
            "atomic-then-remount",
            vec![
                Op::Map(s("/foo"), 0, 8192, true),
                mw(0, 64, 31),
                Op::Remount,
            ],
        ),
    ];
    seqs.into_iter()
        .map(|(name, ops)| Workload {
            name: format!("mapped-{name}"),
            setup: prepared_tree(),
            ops,
        })
        .collect()
}

/// Workloads that cross both log GC paths under the harness's GC settings
/// ([`crate::harness_gc`]: compaction from 200 entries): the setup brings a log close to the
/// point where GC runs, and the checked operations cross it.
pub fn gc() -> Vec<Workload> {
    let s = |x: &str| x.to_string();
    let w = |p: &str, off, len, seed| Op::Write {
        path: p.into(),
        off,
        len,
        seed,
    };
    let pairs = |dir: &str, from: usize, n: usize| -> Vec<Op> {
        (from..from + n)
            .flat_map(|i| {
                let p = format!("{dir}/t{i}");
                [Op::Create(p.clone()), Op::Unlink(p)]
            })
            .collect()
    };
    // Fast GC of a file: overwrites kill the head page once the log spills into a second.
    let mut fast_file = vec![Op::Create(s("/g"))];
    fast_file.extend((0..58).map(|i| w("/g", 0, 100, i)));
    // Fast GC of a directory: additions and removals of the same names, straddling pages.
    let mut fast_dir = vec![Op::Mkdir(s("/d"))];
    // A name added at the end of a page and removed in the next keeps both pages until the
    // tail reaches a third: 63 pairs fill two pages, the checked pairs start the third.
    fast_dir.extend(pairs("/d", 0, 63));
    // Compaction of a directory: a name kept from the start pins the head page, so only a
    // compaction frees the dead pairs behind it.
    let mut compact_dir = vec![Op::Mkdir(s("/d")), Op::Create(s("/d/keep"))];
    compact_dir.extend(pairs("/d", 0, 98));
    // Compaction of a file: a page written once pins the head page.
    let mut compact_file = vec![Op::Create(s("/g")), w("/g", 40960, 10, 1)];
    compact_file.extend((0..196).map(|i| w("/g", 0, 100, i)));
    vec![
        Workload {
            name: s("gc-fast-file"),
            setup: fast_file,
            ops: (0..8).map(|i| w("/g", 0, 100, 100 + i)).collect(),
        },
        Workload {
            name: s("gc-fast-dir"),
            setup: fast_dir,
            ops: pairs("/d", 100, 4),
        },
        Workload {
            name: s("gc-compact-dir"),
            setup: compact_dir,
            ops: pairs("/d", 100, 4),
        },
        Workload {
            name: s("gc-compact-file"),
            setup: compact_file,
            ops: (0..6).map(|i| w("/g", 0, 100, 100 + i)).collect(),
        },
    ]
}

/// The "two handles on one file" workloads: several open handles (and a mapping) on one inode,
/// interleaving writes, appends, truncation, punching, allocation, sync, unlink and rename.
pub fn handles() -> Vec<Workload> {
    let s = |x: &str| x.to_string();
    let open = |p: &str, h: &str| Op::Open(s(p), s(h));
    let via = |h: &str, op: HandleOp| Op::Via(s(h), op);
    let wr = |off, len, seed| HandleOp::Write { off, len, seed };
    let app = |len, seed| HandleOp::Append { len, seed };
    let seqs: Vec<(&str, Vec<Op>)> = vec![
        (
            "write-both",
            vec![
                open("/foo", "h1"),
                open("/foo", "h2"),
                via("h1", wr(0, 4096, 40)),
                via("h2", wr(100, 40, 41)),
            ],
        ),
        (
            "truncate-other-name-then-append",
            vec![
                open("/foo", "h1"),
                open("/A/foolink", "h2"),
                via("h1", wr(4090, 20, 42)),
                via("h2", HandleOp::Truncate(5000)),
                via("h1", app(3000, 43)),
            ],
        ),
        (
            "append-truncate-append",
            vec![
                open("/foo", "h1"),
                open("/foo", "h2"),
                via("h1", app(5000, 44)),
                via("h2", HandleOp::Truncate(100)),
                via("h1", app(100, 45)),
                via("h2", HandleOp::Fsync),
            ],
        ),
        (
            "punch-falloc-write",
            vec![
                open("/foo", "h1"),
                open("/foo", "h2"),
                via("h1", HandleOp::Punch(100, 5000)),
                via("h2", HandleOp::Falloc(0, 16384)),
                via("h1", wr(6000, 100, 46)),
            ],
        ),
        (
            "unlink-while-open",
            vec![
                open("/A/bar", "h1"),
                open("/A/bar", "h2"),
                Op::Unlink(s("/A/bar")),
                via("h1", wr(0, 50, 47)),
                via("h2", app(4096, 48)),
                Op::Close(s("h1")),
                Op::Close(s("h2")),
            ],
        ),
        (
            "unlink-both-names-while-open",
            vec![
                open("/foo", "h"),
                Op::Unlink(s("/foo")),
                Op::Unlink(s("/A/foolink")),
                via("h", HandleOp::Truncate(0)),
                via("h", app(100, 49)),
                Op::Close(s("h")),
            ],
        ),
        (
            "rename-while-open",
            vec![
                open("/foo", "h"),
                Op::Rename(s("/foo"), s("/A/C/moved")),
                via("h", wr(0, 100, 50)),
                Op::Rename(s("/A/bar"), s("/A/C/moved")),
                via("h", app(100, 51)),
            ],
        ),
        (
            "rename-over-open-file",
            vec![
                open("/A/bar", "h"),
                Op::Rename(s("/sym"), s("/A/bar")),
                via("h", wr(0, 10, 52)),
                Op::Close(s("h")),
            ],
        ),
        (
            "map-and-write-at-other-handle",
            vec![
                Op::Map(s("/foo"), 0, 8192, false),
                open("/foo", "h"),
                Op::MWrite {
                    path: s("/foo"),
                    off: 100,
                    len: 40,
                    seed: 53,
                },
                Op::Persist(s("/foo"), 100, 40),
                via("h", wr(120, 10, 54)),
                Op::MWrite {
                    path: s("/foo"),
                    off: 4200,
                    len: 16,
                    seed: 55,
                },
                via("h", HandleOp::Truncate(4096)),
                via("h", app(64, 56)),
            ],
        ),
        (
            "atomic-map-and-handle",
            vec![
                Op::Map(s("/foo"), 0, 8192, true),
                open("/foo", "h"),
                Op::MWrite {
                    path: s("/foo"),
                    off: 0,
                    len: 64,
                    seed: 57,
                },
                via("h", wr(5000, 10, 58)),
                via("h", wr(10, 10, 59)),
                Op::MWrite {
                    path: s("/foo"),
                    off: 64,
                    len: 64,
                    seed: 60,
                },
                via("h", HandleOp::Fsync),
            ],
        ),
    ];
    seqs.into_iter()
        .map(|(name, ops)| Workload {
            name: format!("handles-{name}"),
            setup: prepared_tree(),
            ops,
        })
        .collect()
}

/// The seq-1 workloads: every single operation, then the mapped-write paths, the
/// several-handles workloads and the GC paths.
pub fn seq1() -> Vec<Workload> {
    let mut v: Vec<Workload> = seq1_ops()
        .into_iter()
        .enumerate()
        .map(|(i, op)| Workload {
            name: format!("seq1-{i:02}"),
            setup: prepared_tree(),
            ops: vec![op],
        })
        .collect();
    v.extend(mapped());
    v.extend(handles());
    v.extend(gc());
    v.extend(xattrs());
    v.push(grow_fill());
    v
}

/// Growth under load: grow the 4 MiB image to 8 MiB, write a file, remount (the saved
/// allocator state covers the new range), overwrite, then a no-op grow and a refused shrink.
/// (Small files: a file larger than the old image costs the harness minutes; tests/grow.rs
/// fills the new space.)
pub fn grow_fill() -> Workload {
    Workload {
        name: "grow-fill".into(),
        setup: prepared_tree(),
        ops: vec![
            Op::Grow(8 << 20),
            Op::WriteFile {
                path: "/big".into(),
                len: 40_000,
                seed: 7,
            },
            Op::Remount,
            Op::Write {
                path: "/big".into(),
                off: 4096,
                len: 8192,
                seed: 8,
            },
            Op::Grow(8 << 20),
            Op::Grow(4 << 20),
        ],
    }
}

/// All ordered pairs of seq-1 operations.
pub fn seq2() -> Vec<Workload> {
    let ops = seq1_ops();
    let mut out = Vec::new();
    for (i, a) in ops.iter().enumerate() {
        for (j, b) in ops.iter().enumerate() {
            out.push(Workload {
                name: format!("seq2-{i:02}-{j:02}"),
                setup: prepared_tree(),
                ops: vec![a.clone(), b.clone()],
            });
        }
    }
    // Each mapped-write path and each several-handles workload followed by every single
    // operation (handles still open).
    for m in mapped().into_iter().chain(handles()) {
        for (j, b) in ops.iter().enumerate() {
            let mut w = m.clone();
            w.name = format!("{}-then-{j:02}", m.name);
            w.ops.push(b.clone());
            out.push(w);
        }
    }
    out
}

/// `n` seeded random workloads of `len` operations over a small name space.
pub fn random(seed: u64, n: usize, len: usize) -> Vec<Workload> {
    let mut x = seed | 1;
    let mut rnd = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let names = ["a", "b", "c"];
    let mut out = Vec::new();
    for w in 0..n {
        let mut ops = Vec::new();
        for _ in 0..len {
            let p = |rnd: &mut dyn FnMut(u64) -> u64| {
                let depth = 1 + rnd(2);
                (0..depth)
                    .map(|_| format!("/{}", names[rnd(3) as usize]))
                    .collect::<String>()
            };
            let op = match rnd(12) {
                0 => Op::Mkdir(p(&mut rnd)),
                1 | 2 => Op::Create(p(&mut rnd)),
                3 | 4 => Op::Write {
                    path: p(&mut rnd),
                    off: rnd(12000),
                    len: 1 + rnd(6000),
                    seed: rnd(1000),
                },
                5 => Op::Truncate(p(&mut rnd), rnd(12000)),
                6 => Op::Unlink(p(&mut rnd)),
                7 => Op::Rmdir(p(&mut rnd)),
                8 | 9 => Op::Rename(p(&mut rnd), p(&mut rnd)),
                10 => Op::Link(p(&mut rnd), p(&mut rnd)),
                _ => Op::Punch(p(&mut rnd), rnd(12000), rnd(8000)),
            };
            ops.push(op);
        }
        out.push(Workload {
            name: format!("random-{seed}-{w}"),
            setup: Vec::new(),
            ops,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        for w in seq1().into_iter().chain(random(5, 3, 10)) {
            let back = parse(&w.name, &w.to_text()).unwrap();
            assert_eq!(back, w);
        }
        assert!(parse("x", "frobnicate /a").unwrap_err().contains("unknown"));
        assert!(parse("x", "write /a 1 x 3")
            .unwrap_err()
            .contains("not a number"));
        assert!(parse("x", "# nothing\n").is_err());
        assert!(parse("x", "write@ 1 2 3").unwrap_err().contains("handle"));
        assert!(parse("x", "link@h /a")
            .unwrap_err()
            .contains("no handle form"));
        assert!(parse("x", "open /a").unwrap_err().contains("handle"));
        let w = parse("x", "open /a h1\nappend@h1 10 2\nfsync@h1\nclose h1\n").unwrap();
        assert_eq!(
            w.ops[1],
            Op::Via("h1".into(), HandleOp::Append { len: 10, seed: 2 })
        );
    }
}
