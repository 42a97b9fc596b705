//! Helpers shared by the tests that craft damaged images (`fsck.rs`, `untrusted.rs`, ...) or
//! read the traced backend's events (`create_commit.rs`, `rename_commit.rs`): a small
//! image with known layout, fsck runners and assertions, raw reads and writes, and entry
//! rewriting that keeps checksums valid.
#![allow(dead_code, reason = "each test binary uses a subset of the helpers")]

// `mod cause;` is declared by every test that includes this module.
use crate::cause::cause;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use novafs::{EngineError as Error, FormatOptions, Fs, MountOptions};
use novafs_crashtest::workload;
use novafs_engine::layout::entry::Entry;
use novafs_engine::layout::{checksum, BLOCK};
use novafs_recovery::fsck::{self, FsckOptions, FsckReport, ProblemKind};
use tempfile::TempDir;

/// The trace events of `op` on `fs`, whose engine runs on the traced `media` (recording on
/// for `op` alone).
pub fn events_of(
    media: &novafs_engine::media::Media,
    fs: &Fs,
    op: impl FnOnce(&Fs),
) -> Vec<novafs_engine::media::TraceEvent> {
    media.with_trace(|t| {
        t.events.clear();
        t.enabled = true;
    });
    op(fs);
    media
        .with_trace(|t| {
            t.enabled = false;
            t.take()
        })
        .expect("a traced media")
}

pub fn scratch() -> TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("novafs-fsck-");
    if Path::new("/dev/shm").is_dir() {
        b.tempdir_in("/dev/shm").unwrap()
    } else {
        b.tempdir().unwrap()
    }
}

/// Where an inode lives, taken from the mounted engine.
#[derive(Clone, Debug)]
pub struct L {
    pub ino: u64,
    pub slot_off: u64,
    pub tail: u64,
    pub pages: Vec<u64>,
    pub next_seq: u64,
    pub map: BTreeMap<u64, u64>,
}

pub fn layout(fs: &Fs, p: &str) -> L {
    let ino = fs.symlink_metadata(p).unwrap().ino(); // "/sym": the symlink itself
    let l = fs.engine().inode_layout(ino).unwrap();
    L {
        ino,
        slot_off: l.slot_off,
        tail: l.log_tail,
        pages: l.log_pages,
        next_seq: l.next_seq,
        map: l.map,
    }
}

pub const PATHS: [&str; 8] = ["/", "/a", "/a/b", "/f1", "/a/f2", "/a/b/f3", "/big", "/sym"];

pub fn data(seed: u64, len: u64) -> Vec<u8> {
    workload::data(seed, len)
}

/// A small image: a few directories, files, a hard link, a symlink and a directory whose log
/// spans three pages. Returns the layouts of [`PATHS`] (by path).
pub fn build(dir: &TempDir, crash: bool) -> (PathBuf, BTreeMap<&'static str, L>) {
    let path = dir.path().join("fs.img");
    let fs = Fs::format(&path, 16 << 20, &FormatOptions::default()).unwrap();
    fs.create_dir("/a").unwrap();
    fs.create_dir("/a/b").unwrap();
    fs.write("/f1", &data(1, 10000)).unwrap();
    fs.write("/a/f2", &data(2, 100)).unwrap();
    fs.write("/a/b/f3", &data(3, 5000)).unwrap();
    fs.hard_link("/f1", "/a/link").unwrap();
    fs.symlink("/f1", "/sym").unwrap();
    fs.create_dir("/big").unwrap();
    for i in 0..150 {
        fs.write(format!("/big/file-{i:03}"), &data(100 + i, 10))
            .unwrap();
    }
    let l = PATHS.iter().map(|&p| (p, layout(&fs, p))).collect();
    if crash {
        fs.crash();
    } else {
        fs.unmount().unwrap();
    }
    (path, l)
}

pub fn run(path: &Path, repair: bool) -> FsckReport {
    let r = fsck::check(
        path,
        &FsckOptions {
            repair,
            ..FsckOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("fsck {}: {e}", if repair { "-y" } else { "-n" }));
    if std::env::var_os("FSCK_SHOW").is_some() {
        eprintln!("fsck {}: {}", if repair { "-y" } else { "-n" }, show(&r));
    }
    r
}

pub fn show(r: &FsckReport) -> String {
    let mut s = format!(
        "exit {} found {} fixed {} left {}\n",
        r.exit_code(),
        r.errors_found,
        r.errors_fixed,
        r.errors_left
    );
    for p in &r.problems {
        s += &format!(
            "  [{}] {p} -> {}\n",
            if p.fixed { "fixed" } else { "left" },
            p.repair.as_deref().unwrap_or("(cannot fix)")
        );
    }
    for n in &r.recovery {
        s += &format!("  needs recovery: {n}\n");
    }
    for n in &r.notes {
        s += &format!("  note: {n}\n");
    }
    s
}

pub fn assert_clean(path: &Path) {
    let r = run(path, false);
    assert_eq!(r.exit_code(), 0, "expected a clean image:\n{}", show(&r));
    assert!(r.inodes_checked > 0 && r.blocks_checked > 0);
}

/// fsck -n finds `kind` (exit 4) naming `inode`/`block` when given; returns the report.
pub fn assert_found(
    path: &Path,
    kind: ProblemKind,
    inode: Option<u64>,
    block: Option<u64>,
) -> FsckReport {
    let before = std::fs::read(path).unwrap();
    let r = run(path, false);
    assert_eq!(r.exit_code(), 4, "{}", show(&r));
    assert!(r.errors_found > 0 && r.errors_left == r.errors_found);
    let hit = r.problems.iter().any(|p| {
        p.kind == kind
            && inode.is_none_or(|i| p.inode == Some(i))
            && block.is_none_or(|b| p.block == Some(b))
            && (p.inode.is_some() || p.block.is_some() || p.offset.is_some())
    });
    assert!(
        hit,
        "expected {kind} (inode {inode:?}, block {block:?}):\n{}",
        show(&r)
    );
    // -n wrote nothing: the image is unchanged and a second run says the same.
    let again = run(path, false);
    assert_eq!(again.problems, r.problems);
    assert!(
        std::fs::read(path).unwrap() == before,
        "fsck -n wrote to the image"
    );
    r
}

/// fsck -y fixes everything (exit 1), then fsck -n is clean and the image mounts.
pub fn assert_fixed(path: &Path) -> Fs {
    let r = run(path, true);
    assert_eq!(r.exit_code(), 1, "{}", show(&r));
    assert_eq!(r.errors_left, 0);
    assert_eq!(r.errors_fixed, r.errors_found);
    assert_clean(path);
    Fs::open(path, &MountOptions::default()).unwrap_or_else(|e| panic!("mount after fsck -y: {e}"))
}

/// A copy of the image (to mount the damaged image without touching the original).
pub fn copy(path: &Path, name: &str) -> PathBuf {
    let c = path.with_file_name(name);
    std::fs::copy(path, &c).unwrap();
    c
}

pub fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0; len];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

pub fn write_at(path: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

pub fn flip(path: &Path, off: u64, bit: u8) {
    let mut b = read_at(path, off, 1);
    b[0] ^= 1 << bit;
    write_at(path, off, &b);
}

pub fn u64_at(path: &Path, off: u64) -> u64 {
    u64::from_le_bytes(read_at(path, off, 8).try_into().unwrap())
}

/// Append `e` to the log of `l` as the engine would (room in the tail page assumed).
pub fn append_raw(path: &Path, l: &L, e: &Entry) {
    let mut buf = Vec::new();
    e.encode(l.next_seq, &mut buf);
    assert!(
        l.tail % BLOCK + buf.len() as u64 <= 4032,
        "no room in the tail page"
    );
    write_at(path, l.tail, &buf);
    write_at(
        path,
        l.slot_off + 8,
        &(l.tail + buf.len() as u64).to_le_bytes(),
    );
}

/// Clear the clean flag of a copy, so that mounting it runs the full rebuild.
pub fn unclean_copy(path: &Path, name: &str) -> PathBuf {
    let c = copy(path, name);
    write_at(&c, BLOCK, &0u64.to_le_bytes());
    c
}

pub fn is_corrupt<T: std::fmt::Debug>(r: novafs::Result<T>) -> bool {
    matches!(cause(r), Err(Error::Corrupt { .. }))
}
// ---------------------------------------------------------------------------------------------
// Helpers for crafting corruption.

/// Region offsets of the committed entries of `l`'s log, with the decoded entries.
pub fn entries(path: &Path, l: &L) -> Vec<(u64, Entry)> {
    let mut out = Vec::new();
    for (i, &p) in l.pages.iter().enumerate() {
        let end = if i + 1 == l.pages.len() {
            l.tail % BLOCK
        } else {
            u32::from_le_bytes(read_at(path, p * BLOCK + 4040, 4).try_into().unwrap()) as u64
        };
        let buf = read_at(path, p * BLOCK, end as usize);
        let mut pos = 0usize;
        while pos < buf.len() {
            let lines = buf[pos + 1] as usize;
            let (e, _) = Entry::decode(&buf[pos..pos + 64 * lines], String::new).unwrap();
            out.push((p * BLOCK + pos as u64, e));
            pos += 64 * lines;
        }
    }
    out
}

pub fn dir_entry_offset(path: &Path, l: &L, name: &[u8]) -> u64 {
    entries(path, l)
        .into_iter()
        .find(|(_, e)| matches!(e, Entry::DirAdd { name: n, .. } if n[..] == *name))
        .map(|(o, _)| o)
        .expect("entry")
}

/// Rewrite the 64-byte entry line at `off` with `f` applied, resealing its checksum.
pub fn reseal_entry(path: &Path, off: u64, f: impl FnOnce(&mut [u8])) {
    let mut b = read_at(path, off, 64);
    f(&mut b);
    b[4..8].copy_from_slice(&[0; 4]);
    let c = checksum(&b);
    b[4..8].copy_from_slice(&c.to_le_bytes());
    write_at(path, off, &b);
}

pub fn used_of(path: &Path, page: u64) -> u32 {
    u32::from_le_bytes(read_at(path, page * BLOCK + 4040, 4).try_into().unwrap())
}

pub fn nlink(fs: &Fs, p: &str) -> u32 {
    fs.symlink_metadata(p).unwrap().nlink()
}

// ---------------------------------------------------------------------------------------------
