//! Criterion benchmarks of single novafs operations on an emulated-pmem image in `/dev/shm`.
//!
//! Run with `cargo bench --bench ops` (under a minute of measurement plus setup on a two-core
//! machine). The data and namespace benchmarks each format their own image so that the logs one
//! grows (novafs does not compact logs) do not weigh on the other.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput};
use novafs::{FormatOptions, Fs, MediaMode, MountOptions, ROOT_INO};
use tempfile::TempDir;

const PAGE: u64 = 4096;
/// Pages of the file the overwrite / read benchmarks use (64 MiB).
const FILE_PAGES: u64 = 16 * 1024;
/// Odd stride: visits every page of the 64 MiB file in a scattered order.
const STRIDE: u64 = 7919;
/// Operations per untimed clean-up round in the benchmarks that consume space or names.
const CHUNK: u64 = 4096;

/// A formatted image in a fresh tempdir under `/dev/shm`.
struct Image {
    fs: Fs,
    _dir: TempDir,
}

/// Formats the image, then remounts it with `MAP_POPULATE` so that the host's first-touch page
/// faults (which novafs's ever-growing logs would otherwise keep hitting) stay out of the
/// timed loops.
fn image(size: u64) -> Image {
    let dir = tempfile::Builder::new()
        .prefix("novafs-bench-")
        .tempdir_in("/dev/shm")
        .expect("tempdir in /dev/shm");
    let path = dir.path().join("image");
    Fs::format(&path, size, &FormatOptions::default())
        .expect("format")
        .unmount()
        .expect("unmount");
    let opts = MountOptions {
        populate: true,
        ..MountOptions::default()
    };
    let fs = Fs::open(&path, &opts).expect("mount");
    assert_eq!(
        fs.media_mode(),
        MediaMode::Emulated,
        "the benchmark image must be emulated pmem"
    );
    Image { fs, _dir: dir }
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    g
}

/// Page index of the `i`-th access: a fixed scattered permutation of the file's pages.
fn page_of(i: u64) -> u64 {
    i.wrapping_mul(STRIDE) % FILE_PAGES
}

/// A 64 MiB file, fully written.
fn big_file(fs: &Fs, p: &Path) -> novafs::File {
    let f = fs
        .open_options()
        .read(true)
        .write(true)
        .create(true)
        .open(p)
        .expect("create the data file");
    let chunk = vec![0xa5u8; 1 << 20];
    for i in 0..(FILE_PAGES * PAGE) / chunk.len() as u64 {
        f.write_at(&chunk, i * chunk.len() as u64).expect("fill");
    }
    f
}

/// Run `op(i)` for `iters` iterations, timing only the ops; every `CHUNK` ops call `cleanup`
/// (untimed) with the range of indices just done.
fn chunked(
    iters: u64,
    mut prepare: impl FnMut(u64, u64),
    mut op: impl FnMut(u64),
    mut cleanup: impl FnMut(u64, u64),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(CHUNK);
        prepare(done, done + n);
        let t = Instant::now();
        for i in done..done + n {
            op(i);
        }
        total += t.elapsed();
        cleanup(done, done + n);
        done += n;
    }
    total
}

fn bench_data(c: &mut Criterion) {
    let img = image(1 << 30);
    let fs = &img.fs;
    println!(
        "novafs media mode: {} (image on /dev/shm, mapped with MAP_POPULATE)",
        fs.media_mode()
    );
    let f = big_file(fs, Path::new("/data"));
    let page = vec![0x5au8; PAGE as usize];
    let small = [0x3cu8; 64];
    let mut g = group(c, "data");
    g.throughput(Throughput::Bytes(PAGE));
    let mut i = 0u64;
    g.bench_function("overwrite_4k", |b| {
        b.iter(|| {
            i += 1;
            f.write_at(black_box(&page), page_of(i) * PAGE)
                .expect("write_at")
        })
    });
    let mut buf = vec![0u8; PAGE as usize];
    g.bench_function("read_4k", |b| {
        b.iter(|| {
            i += 1;
            f.read_at(black_box(&mut buf), page_of(i) * PAGE)
                .expect("read_at")
        })
    });
    g.throughput(Throughput::Bytes(64));
    g.bench_function("write_64b", |b| {
        b.iter(|| {
            i += 1;
            let off = page_of(i) * PAGE + (i % 64) * 64;
            f.write_at(black_box(&small), off).expect("write_at")
        })
    });
    g.finish();
    drop(f);

    // Appends grow the file: truncate it (untimed) every CHUNK appends.
    let a = fs.create("/append").expect("create");
    let mut g = group(c, "data");
    g.throughput(Throughput::Bytes(PAGE));
    g.bench_function("append_4k", |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                |_, _| {},
                |_| {
                    a.append(black_box(&page)).expect("append");
                },
                |_, _| a.set_len(0).expect("truncate"),
            )
        })
    });
    g.finish();
}

fn bench_namespace(c: &mut Criterion) {
    // create: a fresh name each time; the files are removed (untimed) every CHUNK creates.
    let img = image(2 << 30);
    let fs = &img.fs;
    fs.create_dir("/d").expect("mkdir");
    let names: Vec<String> = (0..CHUNK).map(|i| format!("/d/file{i:06}")).collect();
    let mut g = group(c, "namespace");
    g.bench_function("create", |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                |_, _| {},
                |i| {
                    drop(
                        fs.create(black_box(&names[(i % CHUNK) as usize]))
                            .expect("create"),
                    )
                },
                |lo, hi| {
                    for i in lo..hi {
                        fs.remove_file(&names[(i % CHUNK) as usize])
                            .expect("remove");
                    }
                },
            )
        })
    });
    g.bench_function("unlink", |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                |lo, hi| {
                    for i in lo..hi {
                        drop(fs.create(&names[(i % CHUNK) as usize]).expect("create"));
                    }
                },
                |i| {
                    fs.remove_file(black_box(&names[(i % CHUNK) as usize]))
                        .expect("unlink")
                },
                |_, _| {},
            )
        })
    });
    drop(fs.create("/d/a").expect("create"));
    let mut flip = false;
    g.bench_function("rename", |b| {
        b.iter(|| {
            flip = !flip;
            if flip {
                fs.rename(black_box("/d/a"), "/d/b")
            } else {
                fs.rename(black_box("/d/b"), "/d/a")
            }
            .expect("rename")
        })
    });
    drop(fs.create("/d/stat_me").expect("create"));
    g.bench_function("stat", |b| {
        b.iter(|| fs.metadata(black_box("/d/stat_me")).expect("stat"))
    });
    g.finish();
    drop(img);

    // lookup: inode-level, in a 100,000-entry and in a 10-entry directory, cycling over all
    // the names of the directory (and, in the big one, also one name repeated). Names are built
    // in a stack buffer so that reading them costs the harness no cache misses.
    let img = image(1 << 30);
    let fs = &img.fs;
    let e = fs.engine();
    let mut g = group(c, "lookup");
    for entries in [100_000usize, 10] {
        let dir = e
            .mkdir(ROOT_INO, format!("dir{entries}").as_bytes(), 0o755, 0, 0)
            .expect("mkdir")
            .ino;
        let mut name = *b"entry-00000000";
        for k in 0..entries {
            e.create(dir, entry_name(&mut name, k), 0o644, 0, 0)
                .expect("create entry");
        }
        let mut k = 0usize;
        g.bench_function(format!("lookup_{entries}_entries_cycled"), |b| {
            b.iter(|| {
                k = (k + 7919) % entries;
                e.lookup(dir, black_box(entry_name(&mut name, k)))
                    .expect("lookup")
            })
        });
        if entries > 10 {
            g.bench_function(format!("lookup_{entries}_entries_one_name"), |b| {
                b.iter(|| {
                    e.lookup(dir, black_box(entry_name(&mut name, entries / 2)))
                        .expect("lookup")
                })
            });
        }
    }
    g.finish();
}

/// Write the digits of `k` into the last 8 bytes of `name`.
fn entry_name(name: &mut [u8; 14], mut k: usize) -> &[u8] {
    for d in name[6..].iter_mut().rev() {
        *d = b'0' + (k % 10) as u8;
        k /= 10;
    }
    &name[..]
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_data(&mut c);
    bench_namespace(&mut c);
    c.final_summary();
}
