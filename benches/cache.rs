//! The per-inode write cache: costs against the raw persistence primitives, sync costs, and
//! 64-byte random writes (ops/s and media bytes per user byte) through a mapping, through
//! `write_at`, and through tmpfs `pwrite`.
//!
//! `cargo bench --bench cache` (`-- --quick` for fewer rounds). Medians of batches; the raw
//! limits use novafs's own persistence layer on a /dev/shm file.

use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use novafs::{Engine, FormatOptions, Fs, MapMode, MountOptions, WritebackConfig};
use novafs_engine::media::{MapOptions, Media, TraceEvent};

const PAGE: u64 = 4096;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median ns per op over `batches` batches of `n` ops.
fn per_op(batches: usize, n: u64, mut f: impl FnMut(u64)) -> f64 {
    let mut i = 0u64;
    let mut v = Vec::new();
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..n {
            f(i);
            i += 1;
        }
        v.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    median(v)
}

fn rnd(i: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234_5678;
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 32)
}

fn no_writeback() -> MountOptions {
    MountOptions {
        populate: true,
        writeback: WritebackConfig {
            interval: Duration::ZERO,
            ..WritebackConfig::default()
        },
        ..MountOptions::default()
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let batches = if quick { 7 } else { 31 };
    let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm");

    // --- raw limits through the persistence layer ---
    let raw_path = dir.path().join("raw.img");
    let raw = Media::create(
        &raw_path,
        256 << 20,
        true,
        &MapOptions {
            populate: true,
            ..MapOptions::default()
        },
    )
    .expect("raw media");
    let page = vec![0x5au8; PAGE as usize];
    let raw_4k = per_op(batches, 2000, |i| {
        let off = (rnd(i) % 60_000) * PAGE;
        raw.write_nt(off, black_box(&page)).unwrap();
        raw.fence();
    });
    let line = [0xa5u8; 64];

    // --- novafs: first store to a clean page; a 64 B store + persist to a cached page ---
    let img = dir.path().join("cache.img");
    let fs = Fs::format(&img, 1 << 30, &FormatOptions::default()).expect("format");
    fs.unmount().expect("unmount");
    let fs = Fs::open(&img, &no_writeback()).expect("open");
    let pages = 16_384u64; // 64 MiB
    let f = fs
        .open_options()
        .read(true)
        .write(true)
        .create(true)
        .open("/m")
        .expect("create");
    f.write_at(&vec![1u8; (pages * PAGE) as usize], 0)
        .expect("fill");
    let m = f.map(0, pages * PAGE, MapMode::Sync).expect("map");
    // First touch of clean pages: COW into the cache + durable attach, then the store.
    let mut firsts = Vec::new();
    let per_batch = pages / batches as u64;
    for b in 0..batches as u64 {
        let t = Instant::now();
        for p in b * per_batch..(b + 1) * per_batch {
            m.write_at(black_box(&line), p * PAGE).unwrap();
        }
        firsts.push(t.elapsed().as_nanos() as f64 / per_batch as f64);
    }
    let first_touch = median(firsts);
    // Raw and novafs batches alternate (medians of each), so that both see the same machine;
    // the same access pattern: a random line in 64 MiB.
    let touched = per_batch * batches as u64;
    let (mut raw_v, mut nova_v) = (Vec::new(), Vec::new());
    for b in 0..batches as u64 {
        let ops = 20_000u64;
        let t = Instant::now();
        for i in b * ops..(b + 1) * ops {
            let off = (rnd(i) % touched) * PAGE + (i % 63) * 64;
            raw.write(off, black_box(&line)).unwrap();
            raw.flush(off, 64).unwrap();
            raw.fence();
        }
        raw_v.push(t.elapsed().as_nanos() as f64 / ops as f64);
        let t = Instant::now();
        for i in b * ops..(b + 1) * ops {
            let off = (rnd(i) % touched) * PAGE + (i % 63) * 64;
            m.write_at(black_box(&line), off).unwrap();
            m.persist(off, 64).unwrap();
        }
        nova_v.push(t.elapsed().as_nanos() as f64 / ops as f64);
    }
    drop(raw);
    let (raw_64, cached_64) = (median(raw_v), median(nova_v));
    m.sync().expect("sync");

    // --- sync of 1, 16, 256 dirty pages ---
    let mut sync_rows = Vec::new();
    for dirty in [1u64, 16, 256] {
        let mut v = Vec::new();
        for r in 0..batches as u64 {
            for p in 0..dirty {
                let page_no = (r * 997 + p * 13) % pages;
                m.write_at(&line, page_no * PAGE).unwrap();
            }
            m.persist(0, pages * PAGE).unwrap();
            let t = Instant::now();
            m.sync().unwrap();
            v.push(t.elapsed().as_nanos() as f64);
        }
        sync_rows.push((dirty, median(v)));
    }
    drop(m);

    // --- 64 B random writes into a 64 MiB file: ops/s ---
    let n_small: u64 = if quick { 20_000 } else { 100_000 };
    let small = [0x77u8; 64];
    let m = f.map(0, pages * PAGE, MapMode::Sync).expect("map");
    let t = Instant::now();
    for i in 0..n_small {
        let off = (rnd(i) % (pages * 64)) * 64;
        m.write_at(&small, off).unwrap();
        m.persist(off, 64).unwrap();
    }
    let map_ops = n_small as f64 / t.elapsed().as_secs_f64();
    m.sync().unwrap();
    drop(m);
    let t = Instant::now();
    for i in 0..n_small {
        let off = (rnd(i + 7) % (pages * 64)) * 64;
        f.write_at(&small, off).unwrap();
    }
    let write_ops = n_small as f64 / t.elapsed().as_secs_f64();
    drop(f);
    fs.unmount().expect("unmount");
    let tmp = dir.path().join("tmpfs-file");
    let tf = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .unwrap();
    tf.set_len(pages * PAGE).unwrap();
    tf.write_all_at(&vec![1u8; (pages * PAGE) as usize], 0)
        .unwrap();
    let t = Instant::now();
    for i in 0..n_small {
        let off = (rnd(i + 9) % (pages * 64)) * 64;
        tf.write_all_at(&small, off).unwrap();
    }
    let tmpfs_ops = n_small as f64 / t.elapsed().as_secs_f64();

    // --- media bytes per user byte, counted exactly on the traced backend ---
    let (map_amp, write_amp) = amplification(if quick { 5_000 } else { 20_000 });

    println!("write cache benchmark (medians; /dev/shm, emulated pmem)\n");
    println!("| operation | novafs ns | raw limit ns | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| first store to a clean page (4 KiB COW + durable attach + 64 B store) | {first_touch:.0} | {raw_4k:.0} (4 KiB nt copy + fence) | {:.2} |",
        first_touch / raw_4k
    );
    println!(
        "| 64 B store + persist to a cached page | {cached_64:.0} | {raw_64:.0} (64 B store + clwb + fence) | {:.2} |",
        cached_64 / raw_64
    );
    for (d, ns) in &sync_rows {
        println!("| sync of {d} dirty page(s) | {ns:.0} | - | - |");
    }
    println!("\n64 B random writes into a 64 MiB file ({n_small} writes):\n");
    println!("| path | ops/s | media bytes per user byte |");
    println!("|---|---:|---:|");
    println!("| mapping (store + persist; pages COWed into the cache once) | {map_ops:.0} | {map_amp:.2} |");
    println!("| write_at (copy-on-write of the 4 KiB page + log entry) | {write_ops:.0} | {write_amp:.2} |");
    println!("| tmpfs pwrite (not durable) | {tmpfs_ops:.0} | - |");
    println!(
        "\ncheck: 64 B store + persist within 1.5x of the raw line flush: {}",
        if cached_64 <= 1.5 * raw_64 {
            "PASS"
        } else {
            "FAIL"
        }
    );
}

/// Bytes stored to the media per user byte for `n` random 64 B writes, via a mapping and via
/// write_at, on the traced backend (format and setup excluded).
fn amplification(n: u64) -> (f64, f64) {
    let pages = 16_384u64;
    let run = |mapped: bool| -> f64 {
        let media = Arc::new(Media::traced(96 << 20));
        let engine = Engine::format_media(media.clone(), &FormatOptions::default()).unwrap();
        let fs = Fs::from_engine(engine, Default::default());
        let f = fs
            .open_options()
            .read(true)
            .write(true)
            .create(true)
            .open("/m")
            .unwrap();
        f.set_len(pages * PAGE).unwrap();
        let m = f.map(0, pages * PAGE, MapMode::Sync).unwrap();
        media.with_trace(|t| t.enabled = true);
        let small = [0x33u8; 64];
        for i in 0..n {
            let off = (rnd(i) % (pages * 64)) * 64;
            if mapped {
                m.write_at(&small, off).unwrap();
                m.persist(off, 64).unwrap();
            } else {
                f.write_at(&small, off).unwrap();
            }
        }
        if mapped {
            m.sync().unwrap();
        }
        let bytes: u64 = media
            .with_trace(|t| {
                t.events
                    .iter()
                    .map(|e| match e {
                        TraceEvent::Store { data, .. } => data.len() as u64,
                        _ => 0,
                    })
                    .sum()
            })
            .unwrap_or(0);
        bytes as f64 / (n * 64) as f64
    };
    (run(true), run(false))
}
