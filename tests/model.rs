//! Model-based test: random sequences of every operation, run against novafs and against a
//! small in-memory model. After every step the whole tree (names, kinds, contents, link
//! counts, symlink targets) and the error of the step must match; `Remount` and `Crash` are
//! operations too, and free space must be identical across them (nothing leaked).

use std::collections::BTreeMap;

use novafs::{EngineError as Error, FileType, FormatOptions, Fs, MapMode, MountOptions};
use proptest::prelude::*;

const NAMES: &[&str] = &["a", "b", "c"];
const SYMLINK_TARGET: &str = "/zz/nowhere";
const XNAMES: &[&str] = &["user.a", "trusted.b", "security.c"];

#[derive(Clone, Debug)]
enum Op {
    Create(String),
    Mkdir(String),
    Write(String, u64, usize, u8),
    /// `Fs::write`: replace the whole contents (create the file if missing).
    WriteFile(String, usize, u8),
    Truncate(String, u64),
    Punch(String, u64, u64),
    /// `zero_range(off, len, keep_size)`.
    Zero(String, u64, u64, bool),
    Allocate(String, u64, u64),
    /// `allocate_keep_size`: blocks past the end, the size unchanged.
    AllocateKeep(String, u64, u64),
    /// `set_xattr(path, XNAMES[i], value of len bytes from seed, flags 0 any / 1 create /
    /// 2 replace)`.
    SetXattr(String, usize, usize, u8, u8),
    /// `remove_xattr(path, XNAMES[i])`.
    RemoveXattr(String, usize),
    Unlink(String),
    Rmdir(String),
    Rename(String, String),
    /// `RENAME_EXCHANGE`: swap two names.
    Exchange(String, String),
    Link(String, String),
    Symlink(String),
    /// Map `[off, off+len)`, store through the mapping, persist (`true` = failure-atomic).
    MapWrite(String, u64, usize, u8, bool),
    /// msync: migrate the file's cached pages.
    Msync(String),
    Remount,
    Crash,
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(NAMES), 1..=3)
        .prop_map(|v| format!("/{}", v.join("/")))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let p = path_strategy;
    prop_oneof![
        3 => p().prop_map(Op::Create),
        3 => p().prop_map(Op::Mkdir),
        6 => (p(), 0u64..20_000, 0usize..9_000, any::<u8>()).prop_map(|(a, o, l, s)| Op::Write(a, o, l, s)),
        // Small writes in the first pages, most inside one page that is already mapped: the
        // redo writes of DESIGN.md §5.1.2 (up to 512 B, carried in the log entry).
        3 => (p(), 0u64..12_288, 1usize..=512, any::<u8>()).prop_map(|(a, o, l, s)| Op::Write(a, o, l, s)),
        2 => (p(), 0usize..20_000, any::<u8>()).prop_map(|(a, l, s)| Op::WriteFile(a, l, s)),
        2 => (p(), 0u64..20_000).prop_map(|(a, l)| Op::Truncate(a, l)),
        1 => (p(), 0u64..20_000, 0u64..10_000).prop_map(|(a, o, l)| Op::Punch(a, o, l)),
        1 => (p(), 0u64..20_000, 1u64..10_000).prop_map(|(a, o, l)| Op::Allocate(a, o, l)),
        1 => (p(), 0u64..20_000, 0u64..10_000, any::<bool>())
            .prop_map(|(a, o, l, k)| Op::Zero(a, o, l, k)),
        1 => (p(), 0u64..30_000, 1u64..20_000).prop_map(|(a, o, l)| Op::AllocateKeep(a, o, l)),
        3 => (p(), 0usize..3, prop_oneof![0usize..100, 0usize..12_000], any::<u8>(), 0u8..3)
            .prop_map(|(a, n, l, s, f)| Op::SetXattr(a, n, l, s, f)),
        1 => (p(), 0usize..3).prop_map(|(a, n)| Op::RemoveXattr(a, n)),
        2 => p().prop_map(Op::Unlink),
        2 => p().prop_map(Op::Rmdir),
        3 => (p(), p()).prop_map(|(a, b)| Op::Rename(a, b)),
        2 => (p(), p()).prop_map(|(a, b)| Op::Exchange(a, b)),
        2 => (p(), p()).prop_map(|(a, b)| Op::Link(a, b)),
        1 => p().prop_map(Op::Symlink),
        3 => (p(), 0u64..16_000, 1usize..6_000, any::<u8>(), any::<bool>())
            .prop_map(|(a, o, l, s, at)| Op::MapWrite(a, o, l, s, at)),
        1 => p().prop_map(Op::Msync),
        1 => Just(Op::Remount),
        1 => Just(Op::Crash),
    ]
}

// ----- the model -----

/// Extended attributes by name.
type Xattrs = BTreeMap<String, Vec<u8>>;

#[derive(Clone, Debug)]
enum Node {
    File(usize),
    /// Entries, and the directory's extended attributes.
    Dir(BTreeMap<String, Node>, Xattrs),
    Symlink(usize),
}

#[derive(Debug, Default)]
struct Model {
    root: BTreeMap<String, Node>,
    /// What a reader sees now.
    files: Vec<Vec<u8>>,
    /// What survives a crash (differs only by unsynced failure-atomic mapped stores).
    committed: Vec<Vec<u8>>,
    /// Pages in the write cache, and whether it is failure-atomic.
    cached: Vec<(std::collections::BTreeSet<u64>, bool)>,
    /// Extended attributes of each file (durable on return, like every metadata change).
    xattrs: Vec<Xattrs>,
}

/// Errors compared by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum E {
    NotFound,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    Inval,
    Perm,
    NoData,
}

fn kind_of(e: &Error) -> E {
    match e {
        Error::NotFound => E::NotFound,
        Error::AlreadyExists => E::Exists,
        Error::NotADirectory => E::NotDir,
        Error::IsADirectory => E::IsDir,
        Error::DirectoryNotEmpty => E::NotEmpty,
        Error::RenameIntoSelf | Error::InvalidArgument(_) | Error::InvalidPath(_) => E::Inval,
        Error::NotPermitted(_) => E::Perm,
        Error::NoData => E::NoData,
        other => panic!("unexpected error from novafs: {other:?}"),
    }
}

fn split(path: &str) -> (Vec<String>, String) {
    let mut v: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let last = v.pop().expect("non-empty path");
    (v, last)
}

impl Model {
    fn dir_mut(&mut self, comps: &[String]) -> Result<&mut BTreeMap<String, Node>, E> {
        let mut cur = &mut self.root;
        for c in comps {
            cur = match cur.get_mut(c) {
                Some(Node::Dir(d, _)) => d,
                Some(Node::File(_)) => return Err(E::NotDir),
                // Symlinks point nowhere: following one finds nothing.
                Some(Node::Symlink(_)) => return Err(E::NotFound),
                None => return Err(E::NotFound),
            };
        }
        Ok(cur)
    }

    /// Walk the directories of a path as the facade's parent resolution does: a file as the
    /// last of them is not an error yet.
    fn phase1(&self, dirs: &[String]) -> Result<(), E> {
        let mut cur = &self.root;
        for (i, c) in dirs.iter().enumerate() {
            match cur.get(c) {
                Some(Node::Dir(d, _)) => cur = d,
                Some(Node::File(_)) if i + 1 == dirs.len() => return Ok(()),
                Some(Node::File(_)) => return Err(E::NotDir),
                Some(Node::Symlink(_)) | None => return Err(E::NotFound),
            }
        }
        Ok(())
    }

    fn get(&mut self, path: &str) -> Result<Node, E> {
        let (dirs, last) = split(path);
        self.dir_mut(&dirs)?.get(&last).cloned().ok_or(E::NotFound)
    }

    /// The file id a path names, following a final symlink (which always dangles).
    fn file_for_write(&mut self, path: &str) -> Result<usize, E> {
        match self.get(path)? {
            Node::File(id) => Ok(id),
            Node::Dir(_, _) => Err(E::IsDir),
            Node::Symlink(_) => Err(E::NotFound),
        }
    }

    /// The extended attributes of what `path` names (a file's or a directory's; a final
    /// symlink is followed and dangles).
    fn xattrs_mut(&mut self, path: &str) -> Result<&mut Xattrs, E> {
        match self.get(path)? {
            Node::File(id) => Ok(&mut self.xattrs[id]),
            Node::Symlink(_) => Err(E::NotFound),
            Node::Dir(_, _) => {
                let (dirs, last) = split(path);
                match self.dir_mut(&dirs)?.get_mut(&last) {
                    Some(Node::Dir(_, x)) => Ok(x),
                    _ => Err(E::NotFound),
                }
            }
        }
    }

    fn new_file(&mut self) -> usize {
        self.files.push(Vec::new());
        self.committed.push(Vec::new());
        self.cached.push(Default::default());
        self.xattrs.push(BTreeMap::new());
        self.files.len() - 1
    }

    /// The write cache's pages become part of the file (and of what survives a crash).
    fn migrate(&mut self, id: usize) {
        self.committed[id] = self.files[id].clone();
        self.cached[id].0.clear();
    }

    /// A durable change: to what is seen and to what survives.
    fn durable(&mut self, id: usize, f: impl Fn(&mut Vec<u8>)) {
        f(&mut self.files[id]);
        f(&mut self.committed[id]);
    }

    fn apply(&mut self, op: &Op) -> Result<(), E> {
        match op {
            Op::Create(p) => {
                let (dirs, last) = split(p);
                let id = self.files.len();
                let d = self.dir_mut(&dirs)?;
                match d.get(&last) {
                    Some(Node::File(_)) => Ok(()), // create opens the existing file (no truncate here)
                    Some(Node::Dir(_, _)) => Err(E::IsDir),
                    Some(Node::Symlink(_)) => Err(E::NotFound),
                    None => {
                        d.insert(last, Node::File(id));
                        self.new_file();
                        Ok(())
                    }
                }
            }
            Op::Mkdir(p) => {
                let (dirs, last) = split(p);
                let d = self.dir_mut(&dirs)?;
                if d.contains_key(&last) {
                    return Err(E::Exists);
                }
                d.insert(last, Node::Dir(BTreeMap::new(), BTreeMap::new()));
                Ok(())
            }
            Op::Write(p, off, len, seed) => {
                let id = self.file_for_write(p)?;
                if *len > 0 {
                    let pages = *off / 4096..=(*off + *len as u64 - 1) / 4096;
                    if self.cached[id].0.range(pages).next().is_some() {
                        self.migrate(id);
                    }
                }
                let (off, len, seed) = (*off as usize, *len, *seed);
                self.durable(id, |f| {
                    let end = off + len;
                    if len > 0 && f.len() < end {
                        f.resize(end, 0);
                    }
                    for i in 0..len {
                        f[off + i] = data_byte(seed, i);
                    }
                });
                Ok(())
            }
            Op::WriteFile(p, len, seed) => {
                let data: Vec<u8> = (0..*len).map(|i| data_byte(*seed, i)).collect();
                let id = match self.get(p) {
                    Err(E::NotFound) => {
                        let (dirs, last) = split(p);
                        let id = self.files.len();
                        self.dir_mut(&dirs)?.insert(last, Node::File(id));
                        self.new_file();
                        id
                    }
                    _ => self.file_for_write(p)?,
                };
                // Cached pages are migrated first (or in the same commit): none stay cached.
                if !self.cached[id].0.is_empty() {
                    self.migrate(id);
                }
                self.durable(id, |f| f.clone_from(&data));
                Ok(())
            }
            Op::Truncate(p, l) => {
                let id = self.file_for_write(p)?;
                if !self.cached[id].0.is_empty() {
                    self.migrate(id);
                }
                self.durable(id, |f| f.resize(*l as usize, 0));
                Ok(())
            }
            Op::Punch(p, off, len) => {
                let id = self.file_for_write(p)?;
                let end = ((off + len) as usize).min(self.files[id].len());
                if *len == 0 || *off as usize >= end {
                    return Ok(());
                }
                if !self.cached[id].0.is_empty() {
                    self.migrate(id);
                }
                self.durable(id, |f| f[*off as usize..end].fill(0));
                Ok(())
            }
            Op::Zero(p, off, len, keep) => {
                let id = self.file_for_write(p)?;
                let size = self.files[id].len();
                let end = if *keep {
                    ((off + len) as usize).min(size)
                } else {
                    (off + len) as usize
                };
                if *len == 0 || *off as usize >= end {
                    return Ok(());
                }
                if !self.cached[id].0.is_empty() {
                    self.migrate(id);
                }
                self.durable(id, |f| {
                    if f.len() < end {
                        f.resize(end, 0);
                    }
                    f[*off as usize..end].fill(0);
                });
                Ok(())
            }
            Op::Allocate(p, off, len) => {
                let id = self.file_for_write(p)?;
                if !self.cached[id].0.is_empty() {
                    self.migrate(id);
                }
                let end = (off + len) as usize;
                self.durable(id, |f| {
                    if f.len() < end {
                        f.resize(end, 0);
                    }
                });
                Ok(())
            }
            Op::AllocateKeep(p, _, _) => {
                let id = self.file_for_write(p)?;
                if !self.cached[id].0.is_empty() {
                    self.migrate(id);
                }
                Ok(())
            }
            Op::SetXattr(p, n, len, seed, flags) => {
                let x = self.xattrs_mut(p)?;
                let name = XNAMES[*n].to_string();
                let exists = x.contains_key(&name);
                match flags {
                    1 if exists => return Err(E::Exists),
                    2 if !exists => return Err(E::NoData),
                    _ => {}
                }
                x.insert(name, (0..*len).map(|i| data_byte(*seed, i)).collect());
                Ok(())
            }
            Op::RemoveXattr(p, n) => self
                .xattrs_mut(p)?
                .remove(XNAMES[*n])
                .map(|_| ())
                .ok_or(E::NoData),
            Op::MapWrite(p, off, len, seed, atomic) => {
                let id = self.file_for_write(p)?;
                let (off, len) = (*off as usize, *len);
                if off + len > self.files[id].len() {
                    return Err(E::Inval);
                }
                if !self.cached[id].0.is_empty() && self.cached[id].1 != *atomic {
                    self.migrate(id);
                }
                self.cached[id].1 = *atomic;
                self.cached[id]
                    .0
                    .extend(off as u64 / 4096..=(off + len - 1) as u64 / 4096);
                let seed = *seed;
                let put = |f: &mut Vec<u8>| {
                    for i in 0..len {
                        f[off + i] = data_byte(seed, i);
                    }
                };
                if *atomic {
                    put(&mut self.files[id]);
                } else {
                    self.durable(id, put);
                }
                Ok(())
            }
            Op::Msync(p) => {
                let id = self.file_for_write(p)?;
                self.migrate(id);
                Ok(())
            }
            Op::Unlink(p) => {
                let (dirs, last) = split(p);
                let d = self.dir_mut(&dirs)?;
                match d.get(&last) {
                    None => Err(E::NotFound),
                    Some(Node::Dir(_, _)) => Err(E::IsDir),
                    Some(_) => {
                        d.remove(&last);
                        Ok(())
                    }
                }
            }
            Op::Rmdir(p) => {
                let (dirs, last) = split(p);
                let d = self.dir_mut(&dirs)?;
                match d.get(&last) {
                    None => Err(E::NotFound),
                    Some(Node::Dir(c, _)) if !c.is_empty() => Err(E::NotEmpty),
                    Some(Node::Dir(_, _)) => {
                        d.remove(&last);
                        Ok(())
                    }
                    Some(_) => Err(E::NotDir),
                }
            }
            Op::Symlink(p) => {
                let (dirs, last) = split(p);
                let id = self.files.len();
                let d = self.dir_mut(&dirs)?;
                if d.contains_key(&last) {
                    return Err(E::Exists);
                }
                d.insert(last, Node::Symlink(id));
                self.new_file();
                Ok(())
            }
            Op::Link(a, b) => {
                let (adirs, alast) = split(a);
                let src = self
                    .dir_mut(&adirs)?
                    .get(&alast)
                    .cloned()
                    .ok_or(E::NotFound)?;
                let (bdirs, blast) = split(b);
                let d = self.dir_mut(&bdirs)?;
                if d.contains_key(&blast) {
                    return Err(E::Exists);
                }
                if matches!(src, Node::Dir(_, _)) {
                    return Err(E::Perm);
                }
                d.insert(blast, src);
                Ok(())
            }
            Op::Rename(a, b) => self.rename(a, b),
            Op::Exchange(a, b) => self.exchange(a, b),
            Op::Remount => {
                for id in 0..self.files.len() {
                    self.migrate(id);
                }
                Ok(())
            }
            Op::Crash => {
                for id in 0..self.files.len() {
                    self.files[id] = self.committed[id].clone();
                    self.cached[id].0.clear();
                }
                Ok(())
            }
        }
    }

    fn rename(&mut self, a: &str, b: &str) -> Result<(), E> {
        let (adirs, alast) = split(a);
        let (bdirs, blast) = split(b);
        // The facade resolves both parents first (the last may turn out to be a file: that
        // is found when the engine looks the name up in it).
        self.phase1(&adirs)?;
        self.phase1(&bdirs)?;
        let src = self
            .dir_mut(&adirs)?
            .get(&alast)
            .cloned()
            .ok_or(E::NotFound)?;
        let dst = self.dir_mut(&bdirs)?.get(&blast).cloned();
        if let Some(d) = &dst {
            let same = match (&src, d) {
                (Node::File(x), Node::File(y)) | (Node::Symlink(x), Node::Symlink(y)) => x == y,
                _ => false,
            } || (adirs == bdirs && alast == blast);
            if same {
                return Ok(());
            }
            match (&src, d) {
                (Node::Dir(_, _), Node::File(_) | Node::Symlink(_)) => return Err(E::NotDir),
                (Node::File(_) | Node::Symlink(_), Node::Dir(_, _)) => return Err(E::IsDir),
                _ => {}
            }
        }
        if matches!(src, Node::Dir(_, _)) && adirs != bdirs {
            // Destination parent inside the moved directory?
            let mut moved = adirs.clone();
            moved.push(alast.clone());
            if bdirs.len() >= moved.len() && bdirs[..moved.len()] == moved[..] {
                return Err(E::Inval);
            }
        }
        if let Some(Node::Dir(c, _)) = &dst {
            if !c.is_empty() {
                return Err(E::NotEmpty);
            }
        }
        let node = self.dir_mut(&adirs)?.remove(&alast).expect("checked");
        self.dir_mut(&bdirs)?.insert(blast, node);
        Ok(())
    }

    fn exchange(&mut self, a: &str, b: &str) -> Result<(), E> {
        let (adirs, alast) = split(a);
        let (bdirs, blast) = split(b);
        self.phase1(&adirs)?;
        self.phase1(&bdirs)?;
        let src = self
            .dir_mut(&adirs)?
            .get(&alast)
            .cloned()
            .ok_or(E::NotFound)?;
        let dst = self
            .dir_mut(&bdirs)?
            .get(&blast)
            .cloned()
            .ok_or(E::NotFound)?;
        let same = match (&src, &dst) {
            (Node::File(x), Node::File(y)) | (Node::Symlink(x), Node::Symlink(y)) => x == y,
            _ => false,
        } || (adirs == bdirs && alast == blast);
        if same {
            return Ok(());
        }
        // Neither directory may land inside itself.
        let inside = |dirs: &[String], moved_dirs: &[String], moved: &String| {
            let mut m = moved_dirs.to_vec();
            m.push(moved.clone());
            dirs.len() >= m.len() && dirs[..m.len()] == m[..]
        };
        if adirs != bdirs
            && ((matches!(src, Node::Dir(_, _)) && inside(&bdirs, &adirs, &alast))
                || (matches!(dst, Node::Dir(_, _)) && inside(&adirs, &bdirs, &blast)))
        {
            return Err(E::Inval);
        }
        let s = self.dir_mut(&adirs)?.remove(&alast).expect("checked");
        let d = self.dir_mut(&bdirs)?.remove(&blast).expect("checked");
        self.dir_mut(&adirs)?.insert(alast, d);
        self.dir_mut(&bdirs)?.insert(blast, s);
        Ok(())
    }

    fn dump(&self) -> BTreeMap<String, String> {
        let mut refs: BTreeMap<usize, u32> = BTreeMap::new();
        fn count(d: &BTreeMap<String, Node>, refs: &mut BTreeMap<usize, u32>) {
            for n in d.values() {
                match n {
                    Node::File(id) => *refs.entry(*id).or_default() += 1,
                    Node::Dir(c, _) => count(c, refs),
                    Node::Symlink(_) => {}
                }
            }
        }
        count(&self.root, &mut refs);
        let mut out = BTreeMap::new();
        fn walk(
            m: &Model,
            d: &BTreeMap<String, Node>,
            prefix: &str,
            refs: &BTreeMap<usize, u32>,
            out: &mut BTreeMap<String, String>,
        ) {
            for (name, n) in d {
                let p = format!("{prefix}/{name}");
                match n {
                    Node::File(id) => {
                        out.insert(
                            p,
                            describe_file(&m.files[*id], refs[id], m.xattrs[*id].iter()),
                        );
                    }
                    Node::Dir(c, x) => {
                        let subdirs = c.values().filter(|n| matches!(n, Node::Dir(_, _))).count();
                        out.insert(p.clone(), describe_dir(2 + subdirs as u32, x.iter()));
                        walk(m, c, &p, refs, out);
                    }
                    Node::Symlink(_) => {
                        out.insert(p, format!("symlink -> {SYMLINK_TARGET}"));
                    }
                }
            }
        }
        walk(self, &self.root, "", &refs, &mut out);
        out
    }
}

fn data_byte(seed: u8, i: usize) -> u8 {
    seed.wrapping_add((i as u8).wrapping_mul(31)) | 1
}

/// ` name=len:crc` for each attribute, in name order.
fn xattr_suffix<'a>(xattrs: impl Iterator<Item = (&'a String, &'a Vec<u8>)>) -> String {
    xattrs
        .map(|(n, v)| format!(" {n}={}:{:08x}", v.len(), crc32fast::hash(v)))
        .collect()
}

fn describe_dir<'a>(nlink: u32, xattrs: impl Iterator<Item = (&'a String, &'a Vec<u8>)>) -> String {
    format!("dir nlink={nlink}{}", xattr_suffix(xattrs))
}

fn describe_file<'a>(
    data: &[u8],
    nlink: u32,
    xattrs: impl Iterator<Item = (&'a String, &'a Vec<u8>)>,
) -> String {
    let h = crc32fast::hash(data);
    format!(
        "file len={} crc={h:08x} nlink={nlink}{}",
        data.len(),
        xattr_suffix(xattrs)
    )
}

// ----- the system under test -----

/// [`fs_apply_ctx`] with the typed cause as the error (what the model predicts).
fn fs_apply(fs: &Fs, op: &Op) -> Result<(), Error> {
    fs_apply_ctx(fs, op).map_err(novafs::Error::into_engine_error)
}

fn fs_apply_ctx(fs: &Fs, op: &Op) -> novafs::Result<()> {
    match op {
        Op::Create(p) => fs
            .open_options()
            .write(true)
            .create(true)
            .open(p)
            .map(|_| ()),
        Op::Mkdir(p) => fs.create_dir(p),
        Op::Write(p, off, len, seed) => {
            let f = fs.open_options().write(true).open(p)?;
            let data: Vec<u8> = (0..*len).map(|i| data_byte(*seed, i)).collect();
            f.write_at(&data, *off).map(|_| ())
        }
        Op::WriteFile(p, len, seed) => {
            let data: Vec<u8> = (0..*len).map(|i| data_byte(*seed, i)).collect();
            fs.write(p, &data)
        }
        Op::Truncate(p, l) => fs.open_options().write(true).open(p)?.set_len(*l),
        Op::Punch(p, off, len) => fs
            .open_options()
            .write(true)
            .open(p)?
            .punch_hole(*off, *len),
        Op::Zero(p, off, len, keep) => fs
            .open_options()
            .write(true)
            .open(p)?
            .zero_range(*off, *len, *keep),
        Op::Allocate(p, off, len) => fs.open_options().write(true).open(p)?.allocate(*off, *len),
        Op::AllocateKeep(p, off, len) => fs
            .open_options()
            .write(true)
            .open(p)?
            .allocate_keep_size(*off, *len),
        Op::SetXattr(p, n, len, seed, flags) => {
            let v: Vec<u8> = (0..*len).map(|i| data_byte(*seed, i)).collect();
            let f = match flags {
                1 => novafs::XattrFlags::Create,
                2 => novafs::XattrFlags::Replace,
                _ => novafs::XattrFlags::Any,
            };
            fs.set_xattr(p, XNAMES[*n], &v, f)
        }
        Op::RemoveXattr(p, n) => fs.remove_xattr(p, XNAMES[*n]),
        Op::Unlink(p) => fs.remove_file(p),
        Op::Rmdir(p) => fs.remove_dir(p),
        Op::Rename(a, b) => fs.rename(a, b),
        Op::Exchange(a, b) => fs.rename_with(
            a,
            b,
            novafs::RenameFlags {
                exchange: true,
                ..Default::default()
            },
        ),
        Op::Link(a, b) => fs.hard_link(a, b),
        Op::Symlink(p) => fs.symlink(SYMLINK_TARGET, p),
        Op::MapWrite(p, off, len, seed, atomic) => {
            let f = fs.open_options().read(true).write(true).open(p)?;
            let mode = if *atomic {
                MapMode::Atomic
            } else {
                MapMode::Sync
            };
            let m = f.map(*off, *len as u64, mode)?;
            let data: Vec<u8> = (0..*len).map(|i| data_byte(*seed, i)).collect();
            m.write_at(&data, 0)?;
            m.persist(0, *len as u64)
        }
        Op::Msync(p) => fs.open_options().read(true).write(true).open(p)?.sync_all(),
        Op::Remount | Op::Crash => Ok(()),
    }
}

/// The extended attributes of `p` on the mount.
fn fs_xattrs(fs: &Fs, p: &str) -> Xattrs {
    fs.list_xattr(p)
        .unwrap()
        .into_iter()
        .map(|n| {
            let v = fs.get_xattr(p, &n).unwrap();
            (String::from_utf8(n).unwrap(), v)
        })
        .collect()
}

fn fs_dump(fs: &Fs) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(fs: &Fs, dir: &str, out: &mut BTreeMap<String, String>) {
        for e in fs.read_dir(if dir.is_empty() { "/" } else { dir }).unwrap() {
            let e = e.unwrap();
            let p = format!("{dir}/{}", e.name_lossy());
            let m = fs.symlink_metadata(&p).unwrap();
            assert_eq!(
                m.file_type(),
                e.file_type().unwrap(),
                "{p}: kind in entry vs inode"
            );
            match e.file_type().unwrap() {
                FileType::File => {
                    let data = fs.read(&p).unwrap();
                    assert_eq!(data.len() as u64, m.len());
                    let x = fs_xattrs(fs, &p);
                    out.insert(p, describe_file(&data, m.nlink(), x.iter()));
                }
                FileType::Dir => {
                    let x = fs_xattrs(fs, &p);
                    out.insert(p.clone(), describe_dir(m.nlink(), x.iter()));
                    walk(fs, &p, out);
                }
                FileType::Symlink => {
                    let t = fs.read_link(&p).unwrap();
                    out.insert(p, format!("symlink -> {}", String::from_utf8_lossy(&t)));
                }
                // The model makes no special files (tests/special.rs and the crash harness
                // cover them): one showing up is a bug.
                other => panic!("{p}: a {other:?} the model never made"),
            }
        }
    }
    walk(fs, "", &mut out);
    out
}

/// Mount options with log GC far more eager than the default (compaction from 8 entries), so
/// that short sequences cross it and every later step checks that it changed nothing.
/// `one_fence`: single-inode appends commit with one fence (the default, DESIGN.md §5.1.1),
/// so every recovery after a crash checks the last commits of every log.
fn opts(one_fence: bool) -> MountOptions {
    MountOptions {
        gc: novafs::GcConfig {
            fast: true,
            inline_min_entries: 8,
            background_min_entries: 0,
        },
        one_fence: Some(one_fence),
        ..MountOptions::default()
    }
}

fn run(ops: &[Op]) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("model.img");
    // A third of the sequences each: two-fence sessions, one-fence sessions (the default),
    // one-fence sessions with msync mode's checksummed data runs.
    let one_fence = !ops.len().is_multiple_of(3);
    let data_crcs = ops.len() % 3 == 2;
    let opts = || opts(one_fence);
    let open = || {
        let fs = Fs::open(&img, &opts()).unwrap();
        fs.engine().set_data_crcs(data_crcs);
        fs
    };
    let mut fs = Fs::format(&img, 8 << 20, &FormatOptions::default()).unwrap();
    fs.engine().set_one_fence(one_fence).unwrap();
    fs.engine().set_data_crcs(data_crcs);
    fs.engine().set_gc_config(&opts().gc);
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let caches = model.cached.iter().any(|c| !c.0.is_empty());
        let atomic_caches = model.cached.iter().any(|c| !c.0.is_empty() && c.1);
        let want = model.apply(op);
        let got = fs_apply(&fs, op).map_err(|e| kind_of(&e));
        assert_eq!(got, want, "step {step}: {op:?}");
        match op {
            Op::Remount | Op::Crash => {
                // With write caches present, a crash changes the space in use (atomic caches
                // are discarded, the others migrated); without, nothing may change.
                if matches!(op, Op::Remount) {
                    // Migrate MAP_SYNC caches now, so that unmount changes no space (it also
                    // commits failure-atomic caches, which Fs::sync leaves to their owners).
                    fs.sync().unwrap();
                }
                let free = fs.statfs().unwrap();
                if matches!(op, Op::Remount) {
                    fs.unmount().unwrap();
                } else {
                    fs.crash();
                }
                fs = open();
                assert_eq!(fs.mount_report().clean, matches!(op, Op::Remount));
                let after = fs.statfs().unwrap();
                if (matches!(op, Op::Remount) && !atomic_caches) || !caches {
                    assert_eq!(
                        free.blocks_free, after.blocks_free,
                        "step {step}: blocks leaked or lost across {op:?}"
                    );
                }
                assert_eq!(
                    free.inodes_free, after.inodes_free,
                    "step {step}: inodes leaked across {op:?}"
                );
                // And what recovery rebuilt is exactly what a clean remount saves.
                fs.unmount().unwrap();
                fs = open();
                assert_eq!(
                    after,
                    fs.statfs().unwrap(),
                    "step {step}: space changed across a clean remount"
                );
            }
            _ => {}
        }
        assert_eq!(
            fs_dump(&fs),
            model.dump(),
            "step {step}: tree differs after {op:?}"
        );
        assert_eq!(
            fs.engine().refused_frees(),
            0,
            "step {step}: a block freed twice"
        );
    }
    fs.crash();
    model.apply(&Op::Crash).unwrap();
    let fs = open();
    assert_eq!(fs_dump(&fs), model.dump(), "after the final crash");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn model_matches(ops in prop::collection::vec(op_strategy(), 1..60)) {
        run(&ops);
    }
}

#[test]
fn rename_dir_into_own_subtree_is_refused() {
    run(&[
        Op::Mkdir("/a".into()),
        Op::Mkdir("/a/b".into()),
        Op::Rename("/a".into(), "/a/b/c".into()),
        Op::Rename("/a".into(), "/a/c".into()),
        Op::Remount,
    ]);
}

#[test]
fn hard_links_survive_crash() {
    run(&[
        Op::Create("/a".into()),
        Op::Write("/a".into(), 100, 5000, 3),
        Op::Link("/a".into(), "/b".into()),
        Op::Crash,
        Op::Unlink("/a".into()),
        Op::Crash,
        Op::Write("/b".into(), 0, 10, 9),
        Op::Remount,
    ]);
}

/// Found by the model: renaming over a symlink that had a second hard link freed it.
#[test]
fn rename_over_multiply_linked_symlink() {
    run(&[
        Op::Create("/a".into()),
        Op::Symlink("/c".into()),
        Op::Link("/c".into(), "/b".into()),
        Op::Rename("/a".into(), "/b".into()),
        Op::Crash,
    ]);
}

/// Found by the model: a failure-atomic mapped store, then a crash.
#[test]
fn atomic_mapped_store_then_crash() {
    run(&[
        Op::Create("/c".into()),
        Op::Write("/c".into(), 7833, 138, 0),
        Op::Rename("/c".into(), "/b".into()),
        Op::MapWrite("/b".into(), 0, 1, 0, true),
        Op::Crash,
    ]);
}

#[test]
fn xattrs_and_keep_size_allocation_survive_remount_and_crash() {
    run(&[
        Op::Create("/a".into()),
        Op::Write("/a".into(), 0, 5000, 3),
        Op::SetXattr("/a".into(), 0, 10, 1, 1),
        Op::SetXattr("/a".into(), 1, 9000, 2, 0),
        Op::SetXattr("/a".into(), 0, 5, 3, 1), // exists: EEXIST
        Op::SetXattr("/a".into(), 2, 5, 3, 2), // missing: ENODATA
        Op::Link("/a".into(), "/b".into()),
        Op::AllocateKeep("/a".into(), 4096, 20000),
        Op::Remount,
        Op::SetXattr("/b".into(), 1, 3, 4, 2),
        Op::RemoveXattr("/a".into(), 0),
        Op::RemoveXattr("/a".into(), 0), // gone: ENODATA
        Op::Truncate("/a".into(), 16000),
        Op::Crash,
        Op::SetXattr("/a".into(), 2, 11000, 5, 0),
    ]);
    // The model's dump shows xattrs (so the comparison above covered them).
    let mut m = Model::default();
    m.apply(&Op::Create("/a".into())).unwrap();
    m.apply(&Op::SetXattr("/a".into(), 0, 3, 1, 0)).unwrap();
    assert!(m.dump()["/a"].contains("user.a=3:"), "{:?}", m.dump());
}

#[test]
fn directory_xattrs_follow_renames_and_survive_remount_and_crash() {
    run(&[
        Op::Mkdir("/d".into()),
        Op::SetXattr("/d".into(), 0, 10, 1, 1),
        Op::SetXattr("/d".into(), 1, 9000, 2, 0),
        Op::SetXattr("/d".into(), 0, 5, 3, 1), // exists: EEXIST
        Op::Create("/d/f".into()),
        Op::Rename("/d".into(), "/e".into()),
        Op::Remount,
        Op::RemoveXattr("/e".into(), 0),
        Op::RemoveXattr("/e".into(), 0), // gone: ENODATA
        Op::Crash,
        Op::SetXattr("/e".into(), 2, 20, 4, 2), // missing: ENODATA
    ]);
    let mut m = Model::default();
    m.apply(&Op::Mkdir("/d".into())).unwrap();
    m.apply(&Op::SetXattr("/d".into(), 0, 3, 1, 0)).unwrap();
    assert!(m.dump()["/d"].contains("user.a=3:"), "{:?}", m.dump());
}
