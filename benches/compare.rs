//! novafs against the kernel file systems and against its own persistence layer.
//!
//! Runs the same operations, in one process, on
//! (a) novafs, emulated pmem on `/dev/shm` (the image is mapped with `MAP_POPULATE`, so that
//!     first-touch page faults of the host do not land in the timed loops; the other columns
//!     work on memory that is already faulted in too);
//! (b) `std::fs` on tmpfs (`/dev/shm`);
//! (c) `std::fs` on a disk file system, made durable like novafs: `fdatasync` after each write,
//!     `fsync` of the parent directory after each namespace change;
//! (d) the raw limit of novafs's persistence layer (`Media`): a 4 KiB non-temporal copy +
//!     fence, a 64 B store + flush + fence, a 4 KiB copy out.
//!
//! Each operation runs as 31 batches (11 with `--quick`) of N operations per column, N
//! calibrated per column so that a batch takes about 10 ms. The batches of the columns are
//! interleaved (round-robin), so that drift of the machine hits all columns alike. The table
//! shows the per-operation median over the batches, then the target checks.
//!
//! `cargo bench --bench compare [-- --quick]`; other arguments (e.g. `--bench`) are ignored.
//! `NOVAFS_BENCH_DIR=/mnt/hugeshm` puts the novafs image and the raw region (columns a and d)
//! in another directory, e.g. a tmpfs mounted `huge=always` (2 MiB pages, as DAX pmem is
//! mapped); the tmpfs column stays in `/dev/shm`.

use std::fs;
use std::hint::black_box;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use novafs::{FormatOptions, Fs, MediaMode, MountOptions, ROOT_INO};
use novafs_engine::media::{MapOptions, Media};
use tempfile::TempDir;

const PAGE: u64 = 4096;
/// Pages of the data file (64 MiB).
const FILE_PAGES: u64 = 16 * 1024;
/// Odd stride: visits every page (entry) in a scattered order.
const STRIDE: u64 = 7919;
/// Entries of the big directory.
const BIG_DIR: usize = 100_000;
/// Entries of the small directory.
const SMALL_DIR: usize = 10;
/// Size of the novafs image.
const IMAGE_BYTES: u64 = 1 << 30;

fn page_of(i: u64) -> u64 {
    i.wrapping_mul(STRIDE) % FILE_PAGES
}

/// Offset of the `i`-th 64-byte write: a scattered page, a rotating line in it.
fn line_of(i: u64) -> u64 {
    page_of(i) * PAGE + (i % 64) * 64
}

/// Index of the `i`-th lookup in a directory of `n` entries.
fn entry_of(i: u64, n: usize) -> usize {
    (i.wrapping_mul(STRIDE) % n as u64) as usize
}

struct Config {
    batches: usize,
    target: Duration,
    max_ops: u64,
}

/// Columns of the table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Col {
    Novafs,
    Tmpfs,
    Disk,
    Raw,
}

/// Runs one batch of `n` operations and returns the time of the timed part.
type Batch<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// A batch runner: `prepare(lo, hi)` and `cleanup(lo, hi)` are untimed and get the range of op
/// indices of the batch (increasing over the whole run); `op(i)` is timed.
fn case<'a>(
    mut prepare: impl FnMut(u64, u64) + 'a,
    mut op: impl FnMut(u64) + 'a,
    mut cleanup: impl FnMut(u64, u64) + 'a,
) -> Batch<'a> {
    let mut next = 0u64;
    Box::new(move |n| {
        let (lo, hi) = (next, next + n);
        next = hi;
        prepare(lo, hi);
        let t = Instant::now();
        for i in lo..hi {
            op(i);
        }
        let d = t.elapsed();
        cleanup(lo, hi);
        d
    })
}

/// A batch runner without untimed parts.
fn timed<'a>(op: impl FnMut(u64) + 'a) -> Batch<'a> {
    case(|_, _| {}, op, |_, _| {})
}

/// Calibrate each case, then run the batches round-robin; returns the per-op medians (ns).
fn measure(cfg: &Config, cases: Vec<(Col, Batch<'_>)>) -> Vec<(Col, f64)> {
    let mut runs: Vec<(Col, Batch<'_>, u64, Vec<f64>)> = cases
        .into_iter()
        .map(|(col, mut b)| {
            // Calibration doubles as warm-up: double N until a batch takes ~the target.
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
            if std::env::var_os("NOVAFS_BENCH_DEBUG").is_some() {
                eprintln!("calibrated n = {n}");
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
        .map(|(col, _, n, mut v)| {
            if std::env::var_os("NOVAFS_BENCH_DEBUG").is_some() {
                eprintln!(
                    "n = {n}: {:?}",
                    v.iter().map(|x| *x as u64).collect::<Vec<_>>()
                );
            }
            v.sort_by(f64::total_cmp);
            (col, v[v.len() / 2])
        })
        .collect()
}

/// One row of the table; `None` = not applicable / not measured.
#[derive(Default, Clone, Copy)]
struct Row {
    novafs: Option<f64>,
    tmpfs: Option<f64>,
    disk: Option<f64>,
    raw: Option<f64>,
}

impl Row {
    fn set(&mut self, col: Col, v: f64) {
        let slot = match col {
            Col::Novafs => &mut self.novafs,
            Col::Tmpfs => &mut self.tmpfs,
            Col::Disk => &mut self.disk,
            Col::Raw => &mut self.raw,
        };
        *slot = Some(v);
    }
}

const W4K: usize = 0;
const R4K: usize = 1;
const W64: usize = 2;
const CREATE: usize = 3;
const UNLINK: usize = 4;
const RENAME: usize = 5;
const STAT: usize = 6;
const LOOKUP_BIG: usize = 7;
const LOOKUP_BIG_ONE: usize = 8;
const LOOKUP_SMALL: usize = 9;
const APPEND: usize = 10;
const R4K_SPREAD: usize = 11;
const W4K_FLOOR: usize = 12;

const OPS: [&str; 13] = [
    "4 KiB write_at",
    "4 KiB read_at",
    "64 B write_at",
    "create",
    "unlink",
    "rename",
    "stat",
    "lookup, 100,000-entry dir (all names, cycled)",
    "lookup, 100,000-entry dir (10 names, cycled)",
    "lookup, 10-entry dir (all names, cycled)",
    "100 B append (a WAL record)",
    "4 KiB read_at; raw: at the file's block offsets",
    "4 KiB write_at; raw: its commit's persistence alone",
];

/// The raw region's log area (after the 64 MiB of data pages): entry lines written in turn,
/// then the tail word's page.
const LOG_LINES: u64 = 16 * 1024;

/// Where the novafs image and the raw region live (`NOVAFS_BENCH_DIR`, default `/dev/shm`).
fn pmem_dir() -> PathBuf {
    std::env::var_os("NOVAFS_BENCH_DIR").map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from)
}

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

/// A directory for the disk column that is not on a RAM file system: the target dir, else
/// /var/tmp, else /tmp.
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

/// A reusable name buffer: `prefix` followed by `entry-NNNNNNNN`. The lookup benchmarks build
/// each name in place, so that reading the name to look up costs no cache miss of its own.
struct EntryName {
    buf: Vec<u8>,
}

impl EntryName {
    fn new(prefix: &[u8]) -> EntryName {
        let mut buf = prefix.to_vec();
        buf.extend_from_slice(b"entry-00000000");
        EntryName { buf }
    }

    fn set(&mut self, mut k: usize) -> &[u8] {
        let n = self.buf.len();
        for d in self.buf[n - 8..].iter_mut().rev() {
            *d = b'0' + (k % 10) as u8;
            k /= 10;
        }
        &self.buf
    }

    fn path(&mut self, k: usize) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(self.set(k)))
    }
}

/// The novafs column: an image, a 64 MiB file and the directories.
struct Nova {
    fs: Fs,
    file: novafs::File,
    /// An append-only file (the WAL row).
    wal: novafs::File,
    names: Vec<PathBuf>,
    /// (directory inode, entries) of the big and the small directory.
    dirs: [(u64, usize); 2],
    _dir: TempDir,
}

impl Nova {
    fn new(cfg: &Config) -> Nova {
        let dir = tempdir_in(&pmem_dir());
        let image = dir.path().join("image");
        let fs = Fs::format(&image, IMAGE_BYTES, &FormatOptions::default()).expect("format");
        fs.unmount().expect("unmount");
        let fs = Fs::open(
            &image,
            &MountOptions {
                populate: true,
                ..MountOptions::default()
            },
        )
        .expect("mount");
        println!(
            "novafs column: {} ({}), {} MiB image, media mode {}, mapped with MAP_POPULATE",
            image.display(),
            fs_type(&image),
            IMAGE_BYTES >> 20,
            fs.media_mode()
        );
        assert_eq!(
            fs.media_mode(),
            MediaMode::Emulated,
            "novafs must run on emulated pmem"
        );
        let file = fs
            .open_options()
            .read(true)
            .write(true)
            .create(true)
            .open("/data")
            .expect("create");
        let mib = vec![0xa5u8; 1 << 20];
        for i in 0..FILE_PAGES * PAGE / mib.len() as u64 {
            file.write_at(&mib, i * mib.len() as u64).expect("fill");
        }
        let wal = fs
            .open_options()
            .append(true)
            .create(true)
            .open("/wal")
            .expect("create wal");
        fs.create_dir("/d").expect("mkdir");
        drop(fs.create("/d/a").expect("create"));
        drop(fs.create("/d/stat_me").expect("create"));
        let names = (0..cfg.max_ops)
            .map(|i| PathBuf::from(format!("/d/f{i:07}")))
            .collect();
        let e = fs.engine();
        let dirs = [BIG_DIR, SMALL_DIR].map(|n| {
            let ino = e
                .mkdir(ROOT_INO, format!("dir{n}").as_bytes(), 0o755, 0, 0)
                .expect("mkdir")
                .ino;
            let mut name = EntryName::new(b"");
            for k in 0..n {
                e.create(ino, name.set(k), 0o644, 0, 0)
                    .expect("create entry");
            }
            (ino, n)
        });
        Nova {
            fs,
            file,
            wal,
            names,
            dirs,
            _dir: dir,
        }
    }

    /// The block of each page of the file, now (copy-on-write has spread them over the
    /// image).
    fn blocks(&self) -> Vec<u64> {
        let l = self
            .fs
            .engine()
            .inode_layout(self.file.ino())
            .expect("layout");
        (0..FILE_PAGES).map(|p| l.map[&p]).collect()
    }

    fn name(&self, i: u64) -> &Path {
        &self.names[(i % self.names.len() as u64) as usize]
    }

    fn case(&self, op: usize) -> Option<Batch<'_>> {
        let (fs, f) = (&self.fs, &self.file);
        let page = vec![0x5au8; PAGE as usize];
        let mut buf = vec![0u8; PAGE as usize];
        let line = [0x3cu8; 64];
        let mut at_a = true;
        Some(match op {
            W4K => timed(move |i| {
                f.write_at(black_box(&page), page_of(i) * PAGE)
                    .expect("write_at");
            }),
            R4K | R4K_SPREAD => timed(move |i| {
                f.read_at(black_box(&mut buf), page_of(i) * PAGE)
                    .expect("read_at");
            }),
            W64 => timed(move |i| {
                f.write_at(black_box(&line), line_of(i)).expect("write_at");
            }),
            APPEND => {
                let rec = [0x77u8; 100];
                timed(move |_| {
                    self.wal.append(black_box(&rec)).expect("append");
                })
            }
            CREATE => case(
                |_, _| {},
                |i| drop(fs.create(black_box(self.name(i))).expect("create")),
                |lo, hi| (lo..hi).for_each(|i| fs.remove_file(self.name(i)).expect("remove")),
            ),
            UNLINK => case(
                |lo, hi| (lo..hi).for_each(|i| drop(fs.create(self.name(i)).expect("create"))),
                |i| fs.remove_file(black_box(self.name(i))).expect("unlink"),
                |_, _| {},
            ),
            RENAME => timed(move |_| {
                let (from, to) = if at_a {
                    ("/d/a", "/d/b")
                } else {
                    ("/d/b", "/d/a")
                };
                fs.rename(black_box(from), to).expect("rename");
                at_a = !at_a;
            }),
            STAT => timed(|_| {
                fs.metadata(black_box("/d/stat_me")).expect("stat");
            }),
            LOOKUP_BIG | LOOKUP_BIG_ONE | LOOKUP_SMALL => {
                let (ino, n) = self.dirs[usize::from(op == LOOKUP_SMALL)];
                let one = op == LOOKUP_BIG_ONE;
                let e = fs.engine();
                let mut name = EntryName::new(b"");
                timed(move |i| {
                    // "one": the same working set as the 10-entry directory (ten names spread
                    // over the big one), so only the directory size differs.
                    let k = if one {
                        entry_of(i, 10) * (n / 10)
                    } else {
                        entry_of(i, n)
                    };
                    e.lookup(ino, black_box(name.set(k))).expect("lookup");
                })
            }
            _ => return None,
        })
    }
}

/// A `std::fs` column in a directory: tmpfs, or disk with `durable` syncs.
struct Std {
    file: fs::File,
    /// An `O_APPEND` file (the WAL row).
    wal: fs::File,
    dir_handle: fs::File,
    durable: bool,
    names: Vec<PathBuf>,
    a: PathBuf,
    b: PathBuf,
    stat_me: PathBuf,
    /// (path, entries) of the big and the small directory (if built).
    dirs: Option<[(PathBuf, usize); 2]>,
    _dir: TempDir,
}

impl Std {
    fn new(cfg: &Config, dir: TempDir, durable: bool, lookups: bool) -> Std {
        let p = dir.path().to_path_buf();
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(p.join("data"))
            .expect("create");
        let mib = vec![0xa5u8; 1 << 20];
        for i in 0..FILE_PAGES * PAGE / mib.len() as u64 {
            file.write_all_at(&mib, i * mib.len() as u64).expect("fill");
        }
        file.sync_all().expect("fsync");
        let wal = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p.join("wal"))
            .expect("create wal");
        let d = p.join("d");
        fs::create_dir(&d).expect("mkdir");
        let (a, b, stat_me) = (d.join("a"), d.join("b"), d.join("stat_me"));
        drop(fs::File::create(&a).expect("create"));
        drop(fs::File::create(&stat_me).expect("create"));
        let dirs = lookups.then(|| {
            [BIG_DIR, SMALL_DIR].map(|n| {
                let sub = p.join(format!("dir{n}"));
                fs::create_dir(&sub).expect("mkdir");
                let mut name = EntryName::new(sub.join("").as_os_str().as_bytes());
                for k in 0..n {
                    drop(fs::File::create(name.path(k)).expect("create entry"));
                }
                (sub, n)
            })
        });
        if durable {
            fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .expect("fsync");
        }
        Std {
            file,
            wal,
            dir_handle: fs::File::open(&d).expect("open dir"),
            durable,
            names: (0..cfg.max_ops)
                .map(|i| d.join(format!("f{i:07}")))
                .collect(),
            a,
            b,
            stat_me,
            dirs,
            _dir: dir,
        }
    }

    fn name(&self, i: u64) -> &Path {
        &self.names[(i % self.names.len() as u64) as usize]
    }

    fn sync_dir(&self) {
        if self.durable {
            self.dir_handle.sync_all().expect("fsync dir");
        }
    }

    fn sync_data(&self) {
        if self.durable {
            self.file.sync_data().expect("fdatasync");
        }
    }

    fn case(&self, op: usize) -> Option<Batch<'_>> {
        let f = &self.file;
        let page = vec![0x5au8; PAGE as usize];
        let mut buf = vec![0u8; PAGE as usize];
        let line = [0x3cu8; 64];
        let mut at_a = true;
        Some(match op {
            W4K => timed(move |i| {
                f.write_all_at(black_box(&page), page_of(i) * PAGE)
                    .expect("pwrite");
                self.sync_data();
            }),
            R4K => timed(move |i| {
                f.read_exact_at(black_box(&mut buf), page_of(i) * PAGE)
                    .expect("pread");
            }),
            W64 => timed(move |i| {
                f.write_all_at(black_box(&line), line_of(i))
                    .expect("pwrite");
                self.sync_data();
            }),
            APPEND => {
                let rec = [0x77u8; 100];
                timed(move |_| {
                    use std::io::Write;
                    (&self.wal).write_all(black_box(&rec)).expect("append");
                    if self.durable {
                        self.wal.sync_data().expect("fdatasync");
                    }
                })
            }
            CREATE => case(
                |_, _| {},
                |i| {
                    drop(fs::File::create(black_box(self.name(i))).expect("create"));
                    self.sync_dir();
                },
                |lo, hi| (lo..hi).for_each(|i| fs::remove_file(self.name(i)).expect("remove")),
            ),
            UNLINK => case(
                |lo, hi| {
                    (lo..hi).for_each(|i| drop(fs::File::create(self.name(i)).expect("create")))
                },
                |i| {
                    fs::remove_file(black_box(self.name(i))).expect("unlink");
                    self.sync_dir();
                },
                |_, _| {},
            ),
            RENAME => timed(move |_| {
                let (from, to) = if at_a {
                    (&self.a, &self.b)
                } else {
                    (&self.b, &self.a)
                };
                fs::rename(black_box(from), to).expect("rename");
                self.sync_dir();
                at_a = !at_a;
            }),
            STAT => timed(|_| {
                fs::metadata(black_box(&self.stat_me)).expect("stat");
            }),
            LOOKUP_BIG | LOOKUP_BIG_ONE | LOOKUP_SMALL => {
                let (sub, n) = &self.dirs.as_ref()?[usize::from(op == LOOKUP_SMALL)];
                let (n, one) = (*n, op == LOOKUP_BIG_ONE);
                let mut name = EntryName::new(sub.join("").as_os_str().as_bytes());
                timed(move |i| {
                    // "one": the same working set as the 10-entry directory (ten names spread
                    // over the big one), so only the directory size differs.
                    let k = if one {
                        entry_of(i, 10) * (n / 10)
                    } else {
                        entry_of(i, n)
                    };
                    fs::metadata(black_box(name.path(k))).expect("stat");
                })
            }
            _ => return None,
        })
    }
}

/// The raw limit through novafs's own persistence layer.
struct Raw {
    media: Media,
    _dir: TempDir,
}

/// A raw region of `bytes` in a new directory of `pmem_dir()`, zeroed and fenced, on
/// emulated pmem; `populate`: mapped with `MAP_POPULATE`.
fn zeroed_region(name: &str, bytes: u64, populate: bool) -> (Media, TempDir) {
    let dir = tempdir_in(&pmem_dir());
    let opts = MapOptions {
        populate,
        ..MapOptions::default()
    };
    let media = Media::create(&dir.path().join(name), bytes, true, &opts).expect("map");
    assert_eq!(
        media.mode(),
        MediaMode::Emulated,
        "the raw regions must be emulated pmem"
    );
    media.zero_nt(0, bytes).expect("fill");
    media.fence();
    (media, dir)
}

impl Raw {
    fn new() -> Raw {
        let (media, dir) = zeroed_region("raw", FILE_PAGES * PAGE + LOG_LINES * 64 + PAGE, false);
        let path = dir.path().join("raw");
        println!(
            "raw column: {} ({}), media mode {}, flush {:?}; 4 KiB write_nt + fence, \
             64 B write + flush + fence, 4 KiB read",
            path.display(),
            fs_type(&path),
            media.mode(),
            media.flush_kind()
        );
        Raw { media, _dir: dir }
    }

    fn case(&self, op: usize) -> Option<Batch<'_>> {
        let m = &self.media;
        let page = vec![0x5au8; PAGE as usize];
        let mut buf = vec![0u8; PAGE as usize];
        let line = [0x3cu8; 64];
        Some(match op {
            W4K => timed(move |i| {
                m.write_nt(page_of(i) * PAGE, black_box(&page))
                    .expect("write_nt");
                m.fence();
            }),
            R4K => timed(move |i| {
                m.read(page_of(i) * PAGE, black_box(&mut buf))
                    .expect("read");
            }),
            W64 => timed(move |i| {
                let off = line_of(i);
                m.write(off, black_box(&line)).expect("write");
                m.flush(off, 64).expect("flush");
                m.fence();
            }),
            // What any copy-on-write 4 KiB write with a logged commit must persist (DESIGN.md
            // §5.1): the page (non-temporal), one 64 B log entry (non-temporal), a fence (both
            // durable before the commit word), the 8 B tail word stored and flushed, a fence.
            W4K_FLOOR => {
                let log = FILE_PAGES * PAGE;
                let tail = log + LOG_LINES * 64;
                timed(move |i| {
                    m.write_nt(page_of(i) * PAGE, black_box(&page))
                        .expect("write_nt");
                    m.write_nt(log + (i % LOG_LINES) * 64, black_box(&line))
                        .expect("write_nt");
                    m.fence();
                    m.store_u64(tail, i).expect("store");
                    m.flush(tail, 8).expect("flush");
                    m.fence();
                })
            }
            _ => return None,
        })
    }
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

/// The raw limit for reads at the addresses novafs's file has: a region as large as the
/// image, read at the file's block offsets (a file's blocks are spread over the image by
/// copy-on-write; the raw column's 64 MiB region is contiguous, and reading the same number
/// of pages spread over 1 GiB costs more by itself: TLB and DRAM locality).
struct Spread {
    media: Media,
    _dir: TempDir,
}

impl Spread {
    /// Made at setup, with the other regions (a gigabyte of fresh memory made just before a
    /// row disturbs that row's timings on a VM).
    fn new() -> Spread {
        let (media, dir) = zeroed_region("spread", IMAGE_BYTES, true);
        Spread { media, _dir: dir }
    }

    /// Reads at `blocks`, the block of each file page.
    fn case(&self, blocks: Vec<u64>) -> Batch<'_> {
        let mut buf = vec![0u8; PAGE as usize];
        timed(move |i| {
            let b = blocks[page_of(i) as usize];
            self.media
                .read(b * PAGE, black_box(&mut buf))
                .expect("read");
        })
    }
}

fn main() {
    // cargo bench passes `--bench`; ignore everything but `--quick`.
    let quick = std::env::args().skip(1).any(|a| a == "--quick");
    let cfg = if quick {
        Config {
            batches: 11,
            target: Duration::from_millis(5),
            max_ops: 10_000,
        }
    } else {
        Config {
            batches: 31,
            target: Duration::from_millis(10),
            max_ops: 100_000,
        }
    };
    let start = Instant::now();
    let load = || {
        fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    println!(
        "{} CPUs, load average {} (other work on the machine skews the ratios)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );

    let nova = Nova::new(&cfg);
    let raw = Raw::new();
    let spread = Spread::new();
    let shm = tempdir_in(Path::new("/dev/shm"));
    println!(
        "tmpfs column: {} ({})",
        shm.path().display(),
        fs_type(shm.path())
    );
    let tmpfs = Std::new(&cfg, shm, false, true);
    let disk = disk_parent().map(|parent| {
        let dir = tempdir_in(&parent);
        println!(
            "disk column: {} ({}), fdatasync after each write, fsync of the directory after \
             each namespace change{}",
            dir.path().display(),
            fs_type(dir.path()),
            if quick {
                "; lookups skipped with --quick"
            } else {
                ""
            }
        );
        Std::new(&cfg, dir, true, !quick)
    });
    if disk.is_none() {
        println!("disk column: no directory outside a RAM file system found, skipped");
    }
    println!("setup {:.1} s", start.elapsed().as_secs_f64());

    let mut rows = [Row::default(); OPS.len()];
    for (op, row) in rows.iter_mut().enumerate() {
        let mut cases: Vec<(Col, Batch<'_>)> = Vec::new();
        cases.extend(nova.case(op).map(|b| (Col::Novafs, b)));
        if op == R4K_SPREAD {
            // The file's blocks as the writes above left them.
            cases.push((Col::Raw, spread.case(nova.blocks())));
        } else if op == W4K_FLOOR {
            // novafs's 4 KiB write again, against the floor of its commit protocol.
            cases.extend(nova.case(W4K).map(|b| (Col::Novafs, b)));
            cases.extend(raw.case(op).map(|b| (Col::Raw, b)));
        } else {
            cases.extend(tmpfs.case(op).map(|b| (Col::Tmpfs, b)));
            if let Some(d) = &disk {
                cases.extend(d.case(op).map(|b| (Col::Disk, b)));
            }
            cases.extend(raw.case(op).map(|b| (Col::Raw, b)));
        }
        let gc0 = nova.fs.engine().gc_stats();
        for (col, v) in measure(&cfg, cases) {
            row.set(col, v);
        }
        if std::env::var_os("NOVAFS_BENCH_DEBUG").is_some() {
            let gc = nova.fs.engine().gc_stats();
            eprintln!(
                "{}: gc fast {} thorough {} (before: fast {} thorough {})",
                OPS[op], gc.fast_runs, gc.thorough_runs, gc0.fast_runs, gc0.thorough_runs
            );
        }
    }

    println!();
    println!(
        "per-operation median of {} batches, ns{}",
        cfg.batches,
        if quick { " (--quick)" } else { "" }
    );
    println!();
    println!(
        "| op | novafs ns | tmpfs ns | disk+fdatasync ns | raw ns | novafs/raw | novafs/tmpfs |"
    );
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
    let at_most = |a: Option<f64>, b: Option<f64>, k: f64| Some(a? <= k * b?);
    let below = |a: Option<f64>, b: Option<f64>, k: f64| Some(a? < k * b?);
    check(
        at_most(rows[W4K].novafs, rows[W4K].raw, 3.0),
        "(1) novafs 4 KiB write_at <= 3x raw 4 KiB nt copy + fence",
    );
    check(
        below(rows[W4K].novafs, rows[W4K].tmpfs, 1.0),
        "(2) novafs 4 KiB write_at < tmpfs pwrite",
    );
    println!(
        "     (1b, informational) novafs 4 KiB write_at / its commit's persistence alone \
         (page + entry non-temporal, fence, tail store + flush, fence): {}; that floor / raw \
         4 KiB nt copy + fence: {}",
        ratio(rows[W4K_FLOOR].novafs, rows[W4K_FLOOR].raw),
        ratio(rows[W4K_FLOOR].raw, rows[W4K].raw),
    );
    for (row, op) in [(CREATE, "create"), (UNLINK, "unlink"), (RENAME, "rename")] {
        check(
            below(rows[row].novafs, rows[row].tmpfs, 0.5),
            &format!("(3) novafs {op} < 0.5x tmpfs"),
        );
    }
    check(
        below(rows[R4K].novafs, rows[R4K].tmpfs, 1.0),
        "(4) novafs 4 KiB read_at < tmpfs pread",
    );
    check(
        at_most(rows[R4K_SPREAD].novafs, rows[R4K_SPREAD].raw, 1.2),
        "(4b) novafs 4 KiB read_at <= 1.2x raw 4 KiB read at the file's block offsets",
    );
    check(
        at_most(rows[W64].novafs, rows[W64].raw, 3.0),
        "(6) novafs 64 B write_at <= 3x raw 64 B store + flush + fence",
    );
    check(
        at_most(rows[APPEND].novafs, rows[APPEND].tmpfs, 1.0),
        "(7) novafs durable 100 B append >= 1.0x tmpfs's (non-durable) append throughput",
    );
    check(
        at_most(rows[LOOKUP_BIG_ONE].novafs, rows[LOOKUP_SMALL].novafs, 2.0),
        "(5) novafs lookup in a 100,000-entry dir <= 2x lookup in a 10-entry dir (the same \
         10 names cycled in both: only the directory size differs)",
    );
    println!(
        "     (5b, informational) cycling all 100,000 names: {:.1}x the 10-entry dir (cache \
         misses on a 100,000-name working set, not the index: tmpfs shows the same effect)",
        rows[LOOKUP_BIG]
            .novafs
            .zip(rows[LOOKUP_SMALL].novafs)
            .map_or(f64::NAN, |(a, b)| a / b)
    );
    println!();
    println!(
        "total time {:.1} s, load average at the end {}",
        start.elapsed().as_secs_f64(),
        load()
    );
}
