//! redb on novafs (`RedbBackend`) against redb's own file backend, in one process:
//! (a) novafs: a redb database in a file of a novafs image on `/dev/shm` (emulated pmem);
//! (b) redb's `FileBackend` on a tmpfs file (`/dev/shm`): its `sync_data` (fdatasync) is
//!     nearly free there, so this column is redb's speed without real durability;
//! (c) redb's `FileBackend` on a disk file (the target dir, else /var/tmp, else /tmp, when not
//!     on a RAM file system): durable through fdatasync.
//!
//! Every commit uses redb's default `Durability::Immediate` (durable when `commit` returns).
//! Cases: a small transaction (one 100 B insert per commit), a batch (1,000 inserts of 100 B
//! in one commit), a point read (a read transaction and one `get`). Each case runs as 31
//! batches (11 with `--quick`) of N operations per column, N calibrated so that a batch takes
//! about 20 ms; the columns' batches are interleaved (round-robin). The table shows the
//! per-operation median.
//!
//! `cargo bench --features redb --bench redb [-- --quick]`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use novafs::{FormatOptions, Fs, MediaMode, RedbBackend};
use redb::backends::FileBackend;
use redb::{Database, ReadableDatabase, TableDefinition};
use tempfile::TempDir;

const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");
const VALUE: [u8; 100] = [0x5a; 100];
const BATCH: u64 = 1000;

struct Config {
    batches: usize,
    target: Duration,
    max_ops: u64,
}

type Batch<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// Calibrate each case, then run the batches round-robin; returns the per-op medians (ns).
fn measure(cfg: &Config, cases: Vec<(usize, Batch<'_>)>) -> Vec<(usize, f64)> {
    let mut runs: Vec<(usize, Batch<'_>, u64, Vec<f64>)> = cases
        .into_iter()
        .map(|(col, mut b)| {
            let mut n = 1u64;
            loop {
                let d = b(n);
                if d >= cfg.target / 2 || n >= cfg.max_ops {
                    if d < cfg.target && n < cfg.max_ops {
                        let scale = cfg.target.as_secs_f64() / d.as_secs_f64().max(1e-9);
                        n = ((n as f64 * scale) as u64).clamp(1, cfg.max_ops);
                    }
                    break;
                }
                n = (n * 2).min(cfg.max_ops);
            }
            (col, b, n, Vec::with_capacity(cfg.batches))
        })
        .collect();
    for _ in 0..cfg.batches {
        for (_, b, n, v) in runs.iter_mut() {
            v.push(b(*n).as_nanos() as f64 / *n as f64);
        }
    }
    runs.into_iter()
        .map(|(col, _, _, mut v)| {
            v.sort_by(f64::total_cmp);
            (col, v[v.len() / 2])
        })
        .collect()
}

/// The file-system type of `p` (from `/proc/self/mountinfo`, longest matching mount point).
fn fs_type(p: &Path) -> String {
    let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|&x| x == "-") else {
            continue;
        };
        let (Some(mnt), Some(ty)) = (f.get(4), f.get(sep + 1)) else {
            continue;
        };
        let mnt = mnt.replace("\\040", " ");
        if p.starts_with(&mnt) && best.as_ref().is_none_or(|(l, _)| mnt.len() >= *l) {
            best = Some((mnt.len(), (*ty).to_string()));
        }
    }
    best.map_or_else(|| "unknown".into(), |(_, t)| t)
}

/// A directory for the disk column that is not on a RAM file system.
fn disk_parent() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    [target, PathBuf::from("/var/tmp"), PathBuf::from("/tmp")]
        .into_iter()
        .find(|p| {
            p.is_dir()
                && !matches!(
                    fs_type(p).as_str(),
                    "tmpfs" | "ramfs" | "hugetlbfs" | "devtmpfs" | "unknown"
                )
        })
}

fn tempdir_in(parent: &Path) -> TempDir {
    tempfile::Builder::new()
        .prefix("novafs-redb-bench-")
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("tempdir in {}: {e}", parent.display()))
}

/// One column: a database and the next key to insert.
struct Column {
    db: Database,
    next: std::cell::Cell<u64>,
}

impl Column {
    fn new(db: Database) -> Column {
        Column {
            db,
            next: std::cell::Cell::new(0),
        }
    }

    fn insert(&self, n: u64) {
        let w = self.db.begin_write().unwrap();
        {
            let mut t = w.open_table(T).unwrap();
            for _ in 0..n {
                let k = self.next.get();
                self.next.set(k + 1);
                t.insert(k, VALUE.as_slice()).unwrap();
            }
        }
        w.commit().unwrap();
    }

    fn case(&self, op: usize) -> Batch<'_> {
        Box::new(move |n| {
            let t = Instant::now();
            for i in 0..n {
                match op {
                    SMALL => self.insert(1),
                    BATCHED => self.insert(BATCH),
                    READ => {
                        let r = self.db.begin_read().unwrap();
                        let t = r.open_table(T).unwrap();
                        let k = i.wrapping_mul(7919) % self.next.get().max(1);
                        std::hint::black_box(t.get(k).unwrap());
                    }
                    _ => unreachable!("no such case"),
                }
            }
            t.elapsed()
        })
    }
}

const SMALL: usize = 0;
const BATCHED: usize = 1;
const READ: usize = 2;
const OPS: [&str; 3] = [
    "commit of one 100 B insert",
    "commit of 1,000 inserts of 100 B",
    "read transaction + get",
];

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(ns) if ns >= 100.0 => format!("{ns:.0}"),
        Some(ns) => format!("{ns:.1}"),
        None => "-".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:.2}", b / a),
        _ => "-".into(),
    }
}

fn main() {
    let quick = std::env::args().skip(1).any(|a| a == "--quick");
    let cfg = Config {
        batches: if quick { 11 } else { 31 },
        target: Duration::from_millis(if quick { 10 } else { 20 }),
        max_ops: 20_000,
    };
    println!(
        "{} CPUs, load average {} (other work on the machine skews the ratios)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    let shm = tempdir_in(Path::new("/dev/shm"));
    let fs = Fs::format(
        shm.path().join("redb.img"),
        4 << 30,
        &FormatOptions::default(),
    )
    .unwrap();
    assert_eq!(fs.media_mode(), MediaMode::Emulated);
    let builder = Database::builder();
    let nova = Column::new(
        builder
            .create_with_backend(RedbBackend::open(&fs, "/bench.redb").unwrap())
            .unwrap(),
    );
    let file_db = |path: PathBuf| {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        Column::new(
            builder
                .create_with_backend(FileBackend::new(f).unwrap())
                .unwrap(),
        )
    };
    let tmpfs = file_db(shm.path().join("bench.redb"));
    println!(
        "novafs: image {} ({}, media mode {:?}); tmpfs: {} ({})",
        shm.path().join("redb.img").display(),
        fs_type(shm.path()),
        fs.media_mode(),
        shm.path().join("bench.redb").display(),
        fs_type(shm.path())
    );
    let disk_dir = disk_parent().map(|p| tempdir_in(&p));
    let disk = disk_dir.as_ref().map(|d| {
        println!(
            "disk: {} ({})",
            d.path().join("bench.redb").display(),
            fs_type(d.path())
        );
        file_db(d.path().join("bench.redb"))
    });
    if disk.is_none() {
        println!("disk: no directory outside a RAM file system found, skipped");
    }

    let mut rows = [[None; 3]; OPS.len()];
    for (op, row) in rows.iter_mut().enumerate() {
        let mut cases = vec![(0, nova.case(op)), (1, tmpfs.case(op))];
        if let Some(d) = &disk {
            cases.push((2, d.case(op)));
        }
        for (col, v) in measure(&cfg, cases) {
            row[col] = Some(v);
        }
    }
    println!();
    println!(
        "per-operation median of {} batches, ns (ratio = the other column's time / novafs's: \
         above 1, novafs is faster)",
        cfg.batches
    );
    println!();
    println!("| operation | redb on novafs | redb file on tmpfs | redb file on disk | tmpfs / novafs | disk / novafs |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (op, r) in rows.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            OPS[op],
            fmt(r[0]),
            fmt(r[1]),
            fmt(r[2]),
            ratio(r[0], r[1]),
            ratio(r[0], r[2])
        );
    }
    drop(nova);
    fs.unmount().unwrap();
}
