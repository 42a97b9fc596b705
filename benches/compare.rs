//! novafs against the kernel file systems and against its own persistence layer.
//!
//! Runs the same operations on
//! (a) novafs, emulated pmem on `/dev/shm`;
//! (b) `std::fs` on tmpfs (`/dev/shm`);
//! (c) `std::fs` on a disk file system, made durable like novafs (`fdatasync` after each write,
//!     `fsync` of the parent directory after each namespace change);
//! (d) the raw limit of novafs's persistence layer (`Media`): a 4 KiB non-temporal copy +
//!     fence, a 64 B store + flush + fence, a 4 KiB copy out.
//!
//! Each operation runs as 31 batches (11 with `--quick`) of N operations, N calibrated so a
//! batch takes about 10 ms; the table shows the per-operation median over the batches, then the
//! target checks. `cargo bench --bench compare [-- --quick]`; other arguments are ignored.

use std::fs;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use novafs::engine::media::{MapOptions, Media};
use novafs::{FormatOptions, Fs, MediaMode, ROOT_INO};
use tempfile::TempDir;

const PAGE: u64 = 4096;
/// Pages of the data file (64 MiB).
const FILE_PAGES: u64 = 16 * 1024;
/// Odd stride: visits every page of the data file in a scattered order.
const STRIDE: u64 = 7919;
/// Entries of the big directory.
const BIG_DIR: usize = 100_000;
/// Entries of the small directory.
const SMALL_DIR: usize = 10;

fn page_of(i: u64) -> u64 {
    i.wrapping_mul(STRIDE) % FILE_PAGES
}

/// Offset of the `i`-th 64-byte write: a scattered page, a rotating line in it.
fn line_of(i: u64) -> u64 {
    page_of(i) * PAGE + (i % 64) * 64
}

struct Config {
    batches: usize,
    target: Duration,
    max_ops: u64,
}

/// Runs batches of operations. `prepare(lo, hi)` and `cleanup(lo, hi)` are untimed and get the
/// range of global op indices of the batch; `op(i)` is timed.
struct Runner<'a> {
    cfg: &'a Config,
    next: u64,
}

impl Runner<'_> {
    fn run(
        &mut self,
        mut prepare: impl FnMut(u64, u64),
        mut op: impl FnMut(u64),
        mut cleanup: impl FnMut(u64, u64),
    ) -> f64 {
        let mut batch = |n: u64, next: &mut u64| -> Duration {
            let lo = *next;
            let hi = lo + n;
            *next = hi;
            prepare(lo, hi);
            let t = Instant::now();
            for i in lo..hi {
                op(i);
            }
            let d = t.elapsed();
            cleanup(lo, hi);
            d
        };
        // Calibrate (doubles as warm-up): double N until a batch takes ~the target.
        let mut n = 1u64;
        loop {
            let d = batch(n, &mut self.next);
            if d >= self.cfg.target / 2 || n >= self.cfg.max_ops {
                if d < self.cfg.target && n < self.cfg.max_ops {
                    let scale = self.cfg.target.as_secs_f64() / d.as_secs_f64().max(1e-9);
                    n = ((n as f64 * scale) as u64).clamp(1, self.cfg.max_ops);
                }
                break;
            }
            n = (n * 2).min(self.cfg.max_ops);
        }
        let mut per_op: Vec<f64> = (0..self.cfg.batches)
            .map(|_| batch(n, &mut self.next).as_nanos() as f64 / n as f64)
            .collect();
        per_op.sort_by(f64::total_cmp);
        per_op[per_op.len() / 2]
    }
}

/// One row of the table; `None` = not applicable.
#[derive(Default, Clone, Copy)]
struct Row {
    novafs: Option<f64>,
    tmpfs: Option<f64>,
    disk: Option<f64>,
    raw: Option<f64>,
}

const OPS: [&str; 9] = [
    "4 KiB write_at",
    "4 KiB read_at",
    "64 B write_at",
    "create",
    "unlink",
    "rename",
    "stat",
    "lookup (100,000 entries)",
    "lookup (10 entries)",
];

fn tempdir_in(parent: &Path) -> TempDir {
    tempfile::Builder::new()
        .prefix("novafs-compare-")
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("tempdir in {}: {e}", parent.display()))
}

/// The file-system type of `p` (from `/proc/self/mountinfo`, longest matching mount point).
fn fs_type(p: &Path) -> String {
    let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|&x| x == "-") else { continue };
        let (Some(mnt), Some(ty)) = (f.get(4), f.get(sep + 1)) else { continue };
        let mnt = mnt.replace("\\040", " ");
        if p.starts_with(&mnt) && best.as_ref().is_none_or(|(l, _)| mnt.len() >= *l) {
            best = Some((mnt.len(), (*ty).to_string()));
        }
    }
    best.map_or_else(|| "unknown".into(), |(_, t)| t)
}

/// A directory for the disk column: not tmpfs (the target dir, else /var/tmp, else /tmp).
fn disk_parent() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    [target, PathBuf::from("/var/tmp"), PathBuf::from("/tmp")]
        .into_iter()
        .find(|p| {
            p.is_dir() && !matches!(fs_type(p).as_str(), "tmpfs" | "ramfs" | "hugetlbfs" | "unknown")
        })
}

fn names(prefix: &Path, n: u64) -> Vec<PathBuf> {
    (0..n).map(|i| prefix.join(format!("f{i:07}"))).collect()
}

/// Rows for novafs.
fn bench_novafs(cfg: &Config, rows: &mut [Row; 9]) {
    let dir = tempdir_in(Path::new("/dev/shm"));
    let fs = Fs::format(dir.path().join("image"), 2 << 30, &FormatOptions::default())
        .expect("format");
    println!("novafs media mode: {}", fs.media_mode());
    assert_eq!(fs.media_mode(), MediaMode::Emulated, "novafs must run on emulated pmem");
    let mut r = Runner { cfg, next: 0 };
    let f = fs
        .open_options()
        .read(true)
        .write(true)
        .create(true)
        .open("/data")
        .expect("create");
    let mib = vec![0xa5u8; 1 << 20];
    for i in 0..FILE_PAGES * PAGE / mib.len() as u64 {
        f.write_at(&mib, i * mib.len() as u64).expect("fill");
    }
    let page = vec![0x5au8; PAGE as usize];
    let mut buf = vec![0u8; PAGE as usize];
    let line = [0x3cu8; 64];
    rows[0].novafs = Some(r.run(
        |_, _| {},
        |i| {
            f.write_at(black_box(&page), page_of(i) * PAGE).expect("write_at");
        },
        |_, _| {},
    ));
    rows[1].novafs = Some(r.run(
        |_, _| {},
        |i| {
            f.read_at(black_box(&mut buf), page_of(i) * PAGE).expect("read_at");
        },
        |_, _| {},
    ));
    rows[2].novafs = Some(r.run(
        |_, _| {},
        |i| {
            f.write_at(black_box(&line), line_of(i)).expect("write_at");
        },
        |_, _| {},
    ));
    drop(f);
    fs.create_dir("/d").expect("mkdir");
    let n = names(Path::new("/d"), cfg.max_ops);
    let name = |i: u64| &n[(i % cfg.max_ops) as usize];
    rows[3].novafs = Some(r.run(
        |_, _| {},
        |i| drop(fs.create(black_box(name(i))).expect("create")),
        |lo, hi| (lo..hi).for_each(|i| fs.remove_file(name(i)).expect("remove")),
    ));
    rows[4].novafs = Some(r.run(
        |lo, hi| (lo..hi).for_each(|i| drop(fs.create(name(i)).expect("create"))),
        |i| fs.remove_file(black_box(name(i))).expect("unlink"),
        |_, _| {},
    ));
    drop(fs.create("/d/a").expect("create"));
    let mut at_a = true;
    rows[5].novafs = Some(r.run(
        |_, _| {},
        |_| {
            let (from, to) = if at_a { ("/d/a", "/d/b") } else { ("/d/b", "/d/a") };
            fs.rename(black_box(from), to).expect("rename");
            at_a = !at_a;
        },
        |_, _| {},
    ));
    drop(fs.create("/d/stat_me").expect("create"));
    rows[6].novafs = Some(r.run(
        |_, _| {},
        |_| {
            fs.metadata(black_box("/d/stat_me")).expect("stat");
        },
        |_, _| {},
    ));
    let e = fs.engine();
    for (row, entries) in [(7, BIG_DIR), (8, SMALL_DIR)] {
        let d = e
            .mkdir(ROOT_INO, format!("dir{entries}").as_bytes(), 0o755, 0, 0)
            .expect("mkdir")
            .ino;
        let ns: Vec<Vec<u8>> = (0..entries).map(|i| format!("entry-{i:08}").into_bytes()).collect();
        for x in &ns {
            e.create(d, x, 0o644, 0, 0).expect("create entry");
        }
        rows[row].novafs = Some(r.run(
            |_, _| {},
            |i| {
                e.lookup(d, black_box(&ns[(i.wrapping_mul(STRIDE) % entries as u64) as usize]))
                    .expect("lookup");
            },
            |_, _| {},
        ));
    }
    drop(fs);
}

/// Rows for `std::fs` in `dir`; `durable`: fdatasync after writes, fsync the directory after
/// namespace changes.
fn bench_std(cfg: &Config, dir: &Path, durable: bool, lookups: bool) -> [Option<f64>; 9] {
    let mut out = [None; 9];
    let mut r = Runner { cfg, next: 0 };
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("data"))
        .expect("create");
    let mib = vec![0xa5u8; 1 << 20];
    for i in 0..FILE_PAGES * PAGE / mib.len() as u64 {
        f.write_all_at(&mib, i * mib.len() as u64).expect("fill");
    }
    f.sync_all().expect("fsync");
    let page = vec![0x5au8; PAGE as usize];
    let mut buf = vec![0u8; PAGE as usize];
    let line = [0x3cu8; 64];
    out[0] = Some(r.run(
        |_, _| {},
        |i| {
            f.write_all_at(black_box(&page), page_of(i) * PAGE).expect("pwrite");
            if durable {
                f.sync_data().expect("fdatasync");
            }
        },
        |_, _| {},
    ));
    out[1] = Some(r.run(
        |_, _| {},
        |i| {
            f.read_exact_at(black_box(&mut buf), page_of(i) * PAGE).expect("pread");
        },
        |_, _| {},
    ));
    out[2] = Some(r.run(
        |_, _| {},
        |i| {
            f.write_all_at(black_box(&line), line_of(i)).expect("pwrite");
            if durable {
                f.sync_data().expect("fdatasync");
            }
        },
        |_, _| {},
    ));
    drop(f);
    let d = dir.join("d");
    fs::create_dir(&d).expect("mkdir");
    let dfile = fs::File::open(&d).expect("open dir");
    let sync_dir = || {
        if durable {
            dfile.sync_all().expect("fsync dir");
        }
    };
    let n = names(&d, cfg.max_ops);
    let name = |i: u64| &n[(i % cfg.max_ops) as usize];
    out[3] = Some(r.run(
        |_, _| {},
        |i| {
            drop(fs::File::create(black_box(name(i))).expect("create"));
            sync_dir();
        },
        |lo, hi| (lo..hi).for_each(|i| fs::remove_file(name(i)).expect("remove")),
    ));
    out[4] = Some(r.run(
        |lo, hi| (lo..hi).for_each(|i| drop(fs::File::create(name(i)).expect("create"))),
        |i| {
            fs::remove_file(black_box(name(i))).expect("unlink");
            sync_dir();
        },
        |_, _| {},
    ));
    let (a, b) = (d.join("a"), d.join("b"));
    drop(fs::File::create(&a).expect("create"));
    let mut at_a = true;
    out[5] = Some(r.run(
        |_, _| {},
        |_| {
            let (from, to) = if at_a { (&a, &b) } else { (&b, &a) };
            fs::rename(black_box(from), to).expect("rename");
            sync_dir();
            at_a = !at_a;
        },
        |_, _| {},
    ));
    let stat_me = d.join("stat_me");
    drop(fs::File::create(&stat_me).expect("create"));
    out[6] = Some(r.run(
        |_, _| {},
        |_| {
            fs::metadata(black_box(&stat_me)).expect("stat");
        },
        |_, _| {},
    ));
    if lookups {
        for (row, entries) in [(7, BIG_DIR), (8, SMALL_DIR)] {
            let sub = dir.join(format!("dir{entries}"));
            fs::create_dir(&sub).expect("mkdir");
            let ns: Vec<PathBuf> = (0..entries).map(|i| sub.join(format!("entry-{i:08}"))).collect();
            for x in &ns {
                drop(fs::File::create(x).expect("create entry"));
            }
            out[row] = Some(r.run(
                |_, _| {},
                |i| {
                    fs::metadata(black_box(&ns[(i.wrapping_mul(STRIDE) % entries as u64) as usize]))
                        .expect("stat");
                },
                |_, _| {},
            ));
        }
    }
    out
}

/// The raw limit through novafs's own persistence layer.
fn bench_raw(cfg: &Config, rows: &mut [Row; 9]) {
    let dir = tempdir_in(Path::new("/dev/shm"));
    let m = Media::create(&dir.path().join("raw"), FILE_PAGES * PAGE, &MapOptions::default())
        .expect("map");
    println!("raw media mode: {}, flush: {:?}", m.mode(), m.flush_kind());
    assert_eq!(m.mode(), MediaMode::Emulated, "the raw region must be emulated pmem");
    m.zero_nt(0, FILE_PAGES * PAGE).expect("fill");
    m.fence();
    let mut r = Runner { cfg, next: 0 };
    let page = vec![0x5au8; PAGE as usize];
    let mut buf = vec![0u8; PAGE as usize];
    let line = [0x3cu8; 64];
    rows[0].raw = Some(r.run(
        |_, _| {},
        |i| {
            m.write_nt(page_of(i) * PAGE, black_box(&page)).expect("write_nt");
            m.fence();
        },
        |_, _| {},
    ));
    rows[1].raw = Some(r.run(
        |_, _| {},
        |i| m.read(page_of(i) * PAGE, black_box(&mut buf)).expect("read"),
        |_, _| {},
    ));
    rows[2].raw = Some(r.run(
        |_, _| {},
        |i| {
            let off = line_of(i);
            m.write(off, black_box(&line)).expect("write");
            m.flush(off, 64).expect("flush");
            m.fence();
        },
        |_, _| {},
    ));
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(ns) if ns >= 100.0 => format!("{ns:.0}"),
        Some(ns) => format!("{ns:.1}"),
        None => "-".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn check(ok: Option<bool>, what: &str) {
    let verdict = match ok {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "SKIP",
    };
    println!("{verdict}: {what}");
}

fn main() {
    let quick = std::env::args().skip(1).any(|a| a == "--quick");
    let cfg = if quick {
        Config {
            batches: 11,
            target: Duration::from_millis(5),
            max_ops: 2_000,
        }
    } else {
        Config {
            batches: 31,
            target: Duration::from_millis(10),
            max_ops: 20_000,
        }
    };
    let start = Instant::now();
    let mut rows = [Row::default(); 9];

    bench_novafs(&cfg, &mut rows);
    bench_raw(&cfg, &mut rows);

    let shm = tempdir_in(Path::new("/dev/shm"));
    println!("tmpfs column: {} ({})", shm.path().display(), fs_type(shm.path()));
    let t = bench_std(&cfg, shm.path(), false, true);
    drop(shm);
    for (row, v) in rows.iter_mut().zip(t) {
        row.tmpfs = v;
    }

    match disk_parent() {
        Some(parent) => {
            let disk = tempdir_in(&parent);
            println!(
                "disk column: {} ({}), fdatasync after each write, fsync of the directory after \
                 each namespace change",
                disk.path().display(),
                fs_type(disk.path())
            );
            let t = bench_std(&cfg, disk.path(), true, !quick);
            for (row, v) in rows.iter_mut().zip(t) {
                row.disk = v;
            }
        }
        None => println!("disk column: no non-tmpfs directory found, skipped"),
    }

    println!();
    println!(
        "per-operation median of {} batches (ns){}",
        cfg.batches,
        if quick { ", --quick" } else { "" }
    );
    println!();
    println!("| op | novafs ns | tmpfs ns | disk+fdatasync ns | raw ns | novafs/raw | novafs/tmpfs |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (op, r) in OPS.iter().zip(&rows) {
        println!(
            "| {op} | {} | {} | {} | {} | {} | {} |",
            fmt(r.novafs),
            fmt(r.tmpfs),
            fmt(r.disk),
            fmt(r.raw),
            ratio(r.novafs, r.raw),
            ratio(r.novafs, r.tmpfs),
        );
    }
    println!();
    let lt = |a: Option<f64>, b: Option<f64>, k: f64| Some(a? < k * b?);
    let le = |a: Option<f64>, b: Option<f64>, k: f64| Some(a? <= k * b?);
    check(
        le(rows[0].novafs, rows[0].raw, 3.0),
        "(1) novafs 4 KiB write_at <= 3x raw 4 KiB nt copy + fence",
    );
    check(
        lt(rows[0].novafs, rows[0].tmpfs, 1.0),
        "(2) novafs 4 KiB write_at < tmpfs pwrite",
    );
    for (row, op) in [(3, "create"), (4, "unlink"), (5, "rename")] {
        check(
            lt(rows[row].novafs, rows[row].tmpfs, 0.5),
            &format!("(3) novafs {op} < 0.5x tmpfs"),
        );
    }
    check(
        lt(rows[1].novafs, rows[1].tmpfs, 1.0),
        "(4) novafs 4 KiB read_at < tmpfs pread",
    );
    check(
        le(rows[7].novafs, rows[8].novafs, 2.0),
        "(5) novafs lookup in a 100,000-entry directory <= 2x lookup in a 10-entry directory",
    );
    println!();
    println!("total time {:.1} s", start.elapsed().as_secs_f64());
}
