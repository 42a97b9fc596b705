//! The differential concurrency tester of the FUSE mount (a `harness = false` test: `main`
//! drives it, and the same binary, started as `fuse_diff worker ...`, is one worker process).
//!
//! Several processes run seeded random sequences (write, append and truncate by name and
//! through held descriptors, rename with NOREPLACE and EXCHANGE, link, unlink, mkdir, rmdir,
//! open-hold-close, a working directory in a directory that gets removed, listings of it) on
//! a small shared set of names: once on the mount, once on tmpfs. What must hold on both:
//!
//! - no operation ever fails with EIO;
//! - data only appears in a file through a descriptor or name of that file: every file starts
//!   with a header naming its identity (written once, at `O_EXCL` creation), and every record
//!   a worker writes carries the identity it read through the same descriptor, so a write that
//!   lands in another file (a node id that names a different inode) shows as a record whose
//!   identity is not the file's;
//! - one worker alone is deterministic: its per-operation results are identical on the mount
//!   and on tmpfs;
//! - fsck finds nothing after unmount;
//! - with the server killed -9 mid-run, every write a worker acknowledged (after its fsync
//!   returned) is there after the next mount.

mod fuse_common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fuse_common::{fuse_available, Mounted};
use rustix::fs::{renameat_with, RenameFlags, CWD};

/// Files workers name (relative to the shared root; two live in a directory that comes and
/// goes).
const FILES: &[&str] = &["f0", "f1", "f2", "f3", "d0/f0", "d0/f1"];
/// Directories workers create, remove and enter.
const DIRS: &[&str] = &["d0", "d1"];
/// Every file's first slot: magic + identity.
const HDR: &[u8; 8] = b"NVDFHDR\0";
/// A written record: magic + the identity the writer read + writer + sequence.
const REC: &[u8; 8] = b"NVDFREC\0";
/// Header and record size; all sizes and offsets are multiples of it.
const SLOT: usize = 32;
/// Slots a file may span (offsets of writes and truncates stay below).
const SLOTS: u64 = 200;

/// splitmix64: a small, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
}

fn errname(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "ENOENT".into(),
        Some(libc::EEXIST) => "EEXIST".into(),
        Some(libc::ENOTDIR) => "ENOTDIR".into(),
        Some(libc::EISDIR) => "EISDIR".into(),
        Some(libc::ENOTEMPTY) => "ENOTEMPTY".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::EIO) => "EIO".into(),
        Some(libc::ESTALE) => "ESTALE".into(),
        Some(libc::EBADF) => "EBADF".into(),
        Some(libc::ENOTCONN) => "ENOTCONN".into(),
        Some(libc::EMLINK) => "EMLINK".into(),
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::ENOSPC) => "ENOSPC".into(),
        Some(n) => format!("errno{n}"),
        None => format!("error {e}"),
    }
}

type Res<T> = Result<T, String>;

fn ok<T>(r: std::io::Result<T>) -> Res<T> {
    r.map_err(|e| errname(&e))
}

fn header(id: u64) -> [u8; SLOT] {
    let mut h = [0u8; SLOT];
    h[..8].copy_from_slice(HDR);
    h[8..16].copy_from_slice(&id.to_le_bytes());
    h
}

fn record(file_id: u64, writer: u64, seq: u64) -> [u8; SLOT] {
    let mut r = [0u8; SLOT];
    r[..8].copy_from_slice(REC);
    r[8..16].copy_from_slice(&file_id.to_le_bytes());
    r[16..24].copy_from_slice(&writer.to_le_bytes());
    r[24..32].copy_from_slice(&seq.to_le_bytes());
    r
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn stat_line(m: &std::fs::Metadata) -> String {
    format!(
        "ok kind={:o} size={} nlink={}",
        m.mode() & libc::S_IFMT,
        m.len(),
        m.nlink()
    )
}

/// One worker process: its sequence, its descriptors, its working directory.
struct Worker {
    root: PathBuf,
    id: u64,
    rng: Rng,
    seq: u64,
    held: Vec<File>,
    /// Acknowledged writes (kill mode): appended to this file after each fsync.
    ack: Option<File>,
}

impl Worker {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A new identity for a file this worker creates.
    fn new_identity(&mut self) -> u64 {
        self.seq += 1;
        self.id << 32 | self.seq
    }

    /// The identity in the header of the file behind `f`, read through `f`.
    fn identity(f: &File) -> Res<u64> {
        let mut h = [0u8; SLOT];
        let n = ok(f.read_at(&mut h, 0))?;
        if n != SLOT || &h[..8] != HDR {
            return Err(format!("no header (read {n} bytes)"));
        }
        Ok(u64_at(&h, 8))
    }

    /// Write one record through `f` at `off` (None: at the end, `f` being O_APPEND), tagged
    /// with the identity read through the same descriptor.
    fn write_record(&mut self, mut f: &File, off: Option<u64>) -> Res<String> {
        let id = Self::identity(f)?;
        self.seq += 1;
        let r = record(id, self.id, self.seq);
        ok(match off {
            Some(off) => f.write_all_at(&r, off),
            None => f.write_all(&r),
        })
        .map(|_| "ok".into())
    }

    fn open(&self, rel: &str, o: &mut OpenOptions) -> Res<File> {
        ok(o.open(self.path(rel)))
    }

    fn rw() -> OpenOptions {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        o
    }

    fn slot_offset(&mut self) -> u64 {
        (1 + self.rng.below(SLOTS - 1)) * SLOT as u64
    }

    /// `what` on a random one of `names`: describe it in `out`, return its result.
    fn on_path(
        &mut self,
        out: &mut String,
        what: &str,
        names: &[&str],
        f: fn(&Path) -> std::io::Result<()>,
    ) -> Res<String> {
        let n = self.rng.pick(names);
        let _ = write!(out, "{what} {n}");
        ok(f(&self.path(n))).map(|_| "ok".into())
    }

    /// Run one random operation; returns its description and result.
    fn step(&mut self) -> String {
        let choice = self.rng.below(100);
        let mut out = String::new();
        let r: Res<String> = match choice {
            0..=9 => {
                let f = self.rng.pick(FILES);
                let _ = write!(out, "create {f}");
                let id = self.new_identity();
                self.open(f, OpenOptions::new().write(true).create_new(true))
                    .and_then(|file| ok(file.write_all_at(&header(id), 0)).map(|_| "ok".into()))
            }
            10..=24 => {
                let f = self.rng.pick(FILES);
                let off = self.slot_offset();
                let _ = write!(out, "write {f} @{off}");
                self.open(f, &mut Self::rw())
                    .and_then(|file| self.write_record(&file, Some(off)))
            }
            25..=31 => {
                let f = self.rng.pick(FILES);
                let _ = write!(out, "append {f}");
                self.open(f, OpenOptions::new().read(true).append(true))
                    .and_then(|file| self.write_record(&file, None))
            }
            32..=37 => {
                let f = self.rng.pick(FILES);
                let len = self.slot_offset();
                let _ = write!(out, "truncate {f} {len}");
                self.open(f, OpenOptions::new().write(true))
                    .and_then(|file| ok(file.set_len(len)).map(|_| "ok".into()))
            }
            38..=43 => {
                let f = self.rng.pick(FILES);
                let _ = write!(out, "hold {f}");
                self.open(f, &mut Self::rw()).map(|file| {
                    self.held.push(file);
                    "ok".into()
                })
            }
            44..=53 if !self.held.is_empty() => {
                let i = self.rng.below(self.held.len() as u64) as usize;
                match self.rng.below(4) {
                    0 => {
                        let off = self.slot_offset();
                        let _ = write!(out, "write held#{i} @{off}");
                        let file = self.held[i].try_clone().expect("dup");
                        self.write_record(&file, Some(off))
                    }
                    1 => {
                        let len = self.slot_offset();
                        let _ = write!(out, "ftruncate held#{i} {len}");
                        ok(self.held[i].set_len(len)).map(|_| "ok".into())
                    }
                    2 => {
                        let _ = write!(out, "fstat held#{i}");
                        ok(self.held[i].metadata()).map(|m| stat_line(&m))
                    }
                    _ => {
                        let _ = write!(out, "close held#{i}");
                        drop(self.held.swap_remove(i));
                        Ok("ok".into())
                    }
                }
            }
            54..=63 => {
                let a = self.rng.pick(FILES);
                let b = self.rng.pick(FILES);
                let (flags, name) = match self.rng.below(3) {
                    0 => (RenameFlags::empty(), "rename"),
                    1 => (RenameFlags::NOREPLACE, "rename-noreplace"),
                    _ => (RenameFlags::EXCHANGE, "rename-exchange"),
                };
                let _ = write!(out, "{name} {a} {b}");
                renameat_with(CWD, self.path(a), CWD, self.path(b), flags)
                    .map(|_| "ok".into())
                    .map_err(|e| errname(&e.into()))
            }
            64..=68 => {
                let a = self.rng.pick(FILES);
                let b = self.rng.pick(FILES);
                let _ = write!(out, "link {a} {b}");
                ok(std::fs::hard_link(self.path(a), self.path(b))).map(|_| "ok".into())
            }
            69..=76 => self.on_path(&mut out, "unlink", FILES, |p| std::fs::remove_file(p)),
            77..=81 => self.on_path(&mut out, "mkdir", DIRS, |p| std::fs::create_dir(p)),
            82..=86 => self.on_path(&mut out, "rmdir", DIRS, |p| std::fs::remove_dir(p)),
            87..=90 => self.on_path(&mut out, "chdir", DIRS, |p| std::env::set_current_dir(p)),
            91..=95 => {
                // The working directory may have been removed since it was entered.
                let _ = write!(out, "list .");
                ok(std::fs::read_dir(".")).and_then(|rd| {
                    let mut names = rd
                        .map(|e| ok(e).map(|e| e.file_name().to_string_lossy().into_owned()))
                        .collect::<Res<Vec<_>>>()?;
                    names.sort();
                    Ok(format!("ok {names:?}"))
                })
            }
            96..=97 => {
                // A file through the working directory (which may be gone).
                let name = format!("w{}", self.id);
                let _ = write!(out, "create ./{name}");
                let id = self.new_identity();
                ok(OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&name))
                .and_then(|file| {
                    // A header if it is new; keep the one that is there.
                    let m = ok(file.metadata())?;
                    if m.len() == 0 {
                        ok(file.write_all_at(&header(id), 0))?;
                    }
                    Ok("ok".into())
                })
            }
            _ => {
                let f = self.rng.pick(FILES);
                let _ = write!(out, "stat {f}");
                ok(std::fs::symlink_metadata(self.path(f))).map(|m| stat_line(&m))
            }
        };
        let _ = match r {
            Ok(s) => write!(out, " -> {s}"),
            Err(e) => write!(out, " -> {e}"),
        };
        out
    }

    /// Kill mode: create an own file, write it, fsync, then log it as acknowledged.
    fn durable_step(&mut self, n: u64) -> Res<()> {
        let rel = format!("k{}-{}", self.id, n);
        let file = self.open(&rel, Self::rw().create_new(true))?;
        let id = self.id << 32 | n;
        let mut body = header(id).to_vec();
        for s in 0..(1 + n % 7) {
            body.extend_from_slice(&record(id, self.id, s));
        }
        // A size that is not a multiple of the page now and then.
        body.extend(std::iter::repeat_n(0xab, (n % 5) as usize * 911));
        ok(file.write_all_at(&body, 0))?;
        ok(file.sync_all())?;
        let ack = self.ack.as_mut().expect("kill mode");
        ok(writeln!(ack, "{rel} {}", body.len()))?;
        ok(ack.sync_data())
    }
}

/// `fuse_diff worker ROOT ID SEED OPS [ACKFILE]`: run one worker, print one line per op.
fn worker(args: &[String]) {
    let root = PathBuf::from(&args[0]);
    let id: u64 = args[1].parse().unwrap();
    let seed: u64 = args[2].parse().unwrap();
    let ops: u64 = args[3].parse().unwrap();
    std::env::set_current_dir(&root).unwrap();
    let mut w = Worker {
        root,
        id,
        rng: Rng(seed),
        seq: 0,
        held: Vec::new(),
        ack: args.get(4).map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap()
        }),
    };
    let mut out = String::new();
    if w.ack.is_some() {
        // Runs until the server dies under it.
        for n in 0..ops {
            if let Err(e) = w.durable_step(n) {
                println!("stopped at {n}: {e}");
                return;
            }
        }
        println!("done");
        return;
    }
    for i in 0..ops {
        let line = w.step();
        let _ = writeln!(out, "{i}: {line}");
    }
    w.held.clear();
    print!("{out}");
}

/// Start `n` workers on `root` (seeds from `seed`); their outputs, in worker order.
fn run_workers(root: &Path, n: u64, seed: u64, ops: u64) -> Vec<String> {
    let me = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..n)
        .map(|i| {
            Command::new(&me)
                .arg("worker")
                .arg(root)
                .arg((i + 1).to_string())
                .arg((seed.wrapping_mul(1000) + i).to_string())
                .arg(ops.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "worker failed: {o:?}");
            String::from_utf8(o.stdout).unwrap()
        })
        .collect()
}

/// Every file under `root`, with its content (relative name -> bytes).
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// The invariants every run must keep: no EIO in any result, and every record in a file
/// carries that file's identity.
fn check(what: &str, outputs: &[String], root: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    for (w, o) in outputs.iter().enumerate() {
        for l in o.lines().filter(|l| l.ends_with("-> EIO")) {
            bad.push(format!("{what}: worker {}: {l}", w + 1));
        }
    }
    for (name, data) in tree(root) {
        if data.len() < SLOT || &data[..8] != HDR {
            // Files only come into being with a header, and truncates keep it.
            bad.push(format!("{what}: {name}: no header ({} bytes)", data.len()));
            continue;
        }
        let id = u64_at(&data, 8);
        for (i, slot) in data.chunks(SLOT).enumerate().skip(1) {
            if slot.iter().all(|&b| b == 0) {
                continue;
            }
            if slot.len() < SLOT || &slot[..8] != REC {
                bad.push(format!("{what}: {name}: slot {i} is no record"));
            } else if u64_at(slot, 8) != id {
                bad.push(format!(
                    "{what}: {name} (identity {id:#x}): slot {i} was written for identity {:#x} \
                     by worker {}",
                    u64_at(slot, 8),
                    u64_at(slot, 16)
                ));
            }
        }
    }
    bad
}

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
}

fn tmpfs_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("novafs-diff-{tag}-"))
        .tempdir_in("/dev/shm")
        .unwrap()
}

/// One worker alone: identical results, operation by operation, on the mount and on tmpfs.
fn deterministic(m: &Mounted, seeds: std::ops::Range<u64>) -> Vec<String> {
    let mut bad = Vec::new();
    let t = tmpfs_dir("det");
    for seed in seeds {
        let (a, b) = (
            m.p(&format!("det{seed}")),
            t.path().join(format!("det{seed}")),
        );
        fresh(&a);
        fresh(&b);
        let on_mount = run_workers(&a, 1, seed, 400);
        let on_tmpfs = run_workers(&b, 1, seed, 400);
        for (x, y) in on_mount[0].lines().zip(on_tmpfs[0].lines()) {
            if x != y {
                bad.push(format!("seed {seed}: mount `{x}` vs tmpfs `{y}`"));
                break;
            }
        }
        bad.extend(check(&format!("det seed {seed} (mount)"), &on_mount, &a));
        bad.extend(check(&format!("det seed {seed} (tmpfs)"), &on_tmpfs, &b));
        if tree(&a) != tree(&b) {
            bad.push(format!("seed {seed}: trees differ"));
        }
    }
    bad
}

/// Several workers at once on one shared name set: the invariants on the mount and on tmpfs.
fn concurrent(m: &Mounted, seeds: std::ops::Range<u64>, workers: u64) -> Vec<String> {
    let mut bad = Vec::new();
    let t = tmpfs_dir("conc");
    for seed in seeds {
        let (a, b) = (
            m.p(&format!("conc{seed}")),
            t.path().join(format!("conc{seed}")),
        );
        fresh(&a);
        fresh(&b);
        let on_mount = run_workers(&a, workers, seed, 500);
        bad.extend(check(
            &format!("concurrent seed {seed} (mount)"),
            &on_mount,
            &a,
        ));
        let on_tmpfs = run_workers(&b, workers, seed, 500);
        bad.extend(check(
            &format!("concurrent seed {seed} (tmpfs)"),
            &on_tmpfs,
            &b,
        ));
    }
    bad
}

/// Start this binary again with `args` (a worker or tear process), its output discarded.
fn spawn_self(args: &[std::ffi::OsString]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// After `delay_ms`, kill the server -9, reap `children` (they fail once the mount is gone),
/// then mount again (recovery runs).
fn kill_server_and_remount(m: &mut Mounted, delay_ms: u64, children: Vec<Child>) {
    std::thread::sleep(Duration::from_millis(delay_ms));
    m.signal("KILL");
    for mut c in children {
        let _ = c.wait();
    }
    m.reap_killed();
    m.mount("");
}

/// Workers write, fsync and acknowledge; the server is killed -9; after the next mount
/// (recovery) every acknowledged file is there, whole.
fn killed(m: &mut Mounted, rounds: u64) -> Vec<String> {
    let mut bad = Vec::new();
    let acks = tmpfs_dir("acks");
    for round in 0..rounds {
        let root = m.p(&format!("kill{round}"));
        fresh(&root);
        let ackfile = acks.path().join(format!("round{round}"));
        let children: Vec<_> = (0..3u64)
            .map(|i| {
                spawn_self(&[
                    "worker".into(),
                    root.clone().into(),
                    (i + 1).to_string().into(),
                    round.to_string().into(),
                    "1000000".into(),
                    ackfile.with_extension(i.to_string()).into(),
                ])
            })
            .collect();
        kill_server_and_remount(m, 150 + 97 * round, children);
        for i in 0..3u64 {
            let acked =
                std::fs::read_to_string(ackfile.with_extension(i.to_string())).unwrap_or_default();
            if acked.lines().count() == 0 {
                bad.push(format!(
                    "kill round {round}: worker {i} acknowledged nothing"
                ));
            }
            for l in acked.lines() {
                let (rel, len) = l.split_once(' ').unwrap();
                let len: usize = len.parse().unwrap();
                match std::fs::read(root.join(rel)) {
                    Ok(d) if d.len() == len && &d[..8] == HDR => {}
                    Ok(d) => bad.push(format!(
                        "kill round {round}: {rel}: {} bytes, acknowledged {len}",
                        d.len()
                    )),
                    Err(e) => bad.push(format!("kill round {round}: {rel}: {e}")),
                }
            }
        }
    }
    bad
}

/// `fuse_diff tear FILE OFF LEN`: overwrite `LEN` bytes at `OFF` of `FILE` again and again,
/// each time with one byte value (1, 2, 3, ...), until killed or the mount dies.
fn tear(args: &[String]) {
    let path = PathBuf::from(&args[0]);
    let off: u64 = args[1].parse().unwrap();
    let len: usize = args[2].parse().unwrap();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    // An unaligned buffer too: the kernel forms requests from the buffer's pages.
    let mut buf = vec![0u8; len + 1];
    for v in 1u64.. {
        buf.fill(v as u8 | 1);
        if f.write_at(&buf[1..], off).map(|n| n != len).unwrap_or(true) {
            return;
        }
    }
}

/// One `write(2)` through the mount is one engine commit: writers overwrite an unaligned range
/// that spans pages (and one of nearly 1 MiB) with one byte value at a time while the server
/// is killed -9; after recovery each range holds a single value.
fn torn_writes(m: &mut Mounted, rounds: u64) -> Vec<String> {
    let mut bad = Vec::new();
    // (offset, length): across one page boundary; across many, from mid-page to mid-page.
    let ranges = [(4096 - 100, 300), (1000, 1_000_000)];
    for round in 0..rounds {
        let names: Vec<PathBuf> = (0..ranges.len())
            .map(|i| m.p(&format!("tear{round}-{i}")))
            .collect();
        for n in &names {
            std::fs::write(n, vec![0u8; 2 << 20]).unwrap();
        }
        let children: Vec<_> = names
            .iter()
            .zip(ranges)
            .map(|(n, (off, len))| {
                spawn_self(&[
                    "tear".into(),
                    n.clone().into(),
                    off.to_string().into(),
                    len.to_string().into(),
                ])
            })
            .collect();
        kill_server_and_remount(m, 200 + 37 * round, children);
        for (n, (off, len)) in names.iter().zip(ranges) {
            let d = std::fs::read(n).unwrap();
            let r = &d[off..off + len];
            let mut values: Vec<u8> = r.to_vec();
            values.sort_unstable();
            values.dedup();
            if values.len() != 1 {
                let first_change = r.iter().position(|&b| b != r[0]).unwrap();
                bad.push(format!(
                    "round {round}: {}: a torn write: {} values in the range, {:#x} then {:#x} \
                     from byte {first_change}",
                    n.display(),
                    values.len(),
                    r[0],
                    r[first_change]
                ));
            }
        }
    }
    bad
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("worker") => return worker(&args[2..]),
        Some("tear") => return tear(&args[2..]),
        _ => {}
    }
    if !fuse_available() {
        println!("fuse_diff: 0 passed, 0 failed, 1 skipped");
        return;
    }
    // FUSE_DIFF_SEEDS=N widens the run (CI: the default).
    let seeds: u64 = std::env::var("FUSE_DIFF_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut m = Mounted::new("256MiB", "");
    let mut failures = Vec::new();
    let mut report = |name: &str, bad: Vec<String>| {
        if bad.is_empty() {
            println!("fuse_diff {name} ... ok");
        } else {
            println!("fuse_diff {name} ... FAILED");
            for b in bad.iter().take(20) {
                println!("  {b}");
            }
            failures.push(name.to_string());
        }
    };
    report("deterministic", deterministic(&m, 0..seeds));
    report("concurrent", concurrent(&m, 0..seeds, 4));
    report("killed", killed(&mut m, 3));
    report("torn-writes", torn_writes(&mut m, 8));
    m.unmount();
    let fsck = std::panic::catch_unwind(|| m.fsck_clean());
    report(
        "fsck",
        match fsck {
            Ok(_) => vec![],
            Err(_) => vec!["fsck found errors".into()],
        },
    );
    let failed = failures.len();
    println!("{} passed, {failed} failed", 5 - failed);
    if failed > 0 {
        eprintln!("fuse_diff: failed: {failures:?}");
        std::process::exit(1);
    }
}
