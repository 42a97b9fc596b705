//! Direct access (DESIGN §5.4.1) against the raw limits, in one run:
//! (1) a 64 B store + persist into a prepared page through a mapping's addresses vs a raw 64 B
//!     store + clwb + fence on a plain shared mapping of a /dev/shm file (novafs's `Media`);
//! (2) the first store to a clean page (`prepare_write` of one page: 4 KiB copy into the write
//!     cache + durable attach + remap, then a 64 B store) vs a raw 4 KiB NT copy + fence; the
//!     same with 64 and 512 pages per `prepare_write` (per page), and through a transparent
//!     mapping (the store faults to the userfaultfd handler, which prepares the page); and what
//!     bounds the one-page case: the system call that moves one virtual page onto the cache
//!     block (`mmap(MAP_FIXED | MAP_POPULATE)` of one writable page of a /dev/shm file into a
//!     reservation, through the media layer's `Reservation::map_file`), and an `mprotect`;
//! (3) sequential load of a mapped 256 MiB file (word-atomic copy out, 1 MiB at a time) vs
//!     memcpy out of a 256 MiB DRAM buffer (GB/s), and the media layer's own word-atomic
//!     `Media::read` of the raw region against the same memcpy;
//! (4) random aligned 8-byte loads through the mapping vs raw loads of the region.
//!
//! Batches of the two columns alternate (same machine state for both); the table shows
//! medians over the batches and the ratios. `cargo bench --bench direct [-- --quick]`;
//! `NOVAFS_BENCH_ONLY=store64` (or `first`, `seq`, `load`, comma-separated) runs only those
//! sections.

use std::hint::black_box;
use std::time::{Duration, Instant};

use novafs::{FormatOptions, Fs, MapMode, MediaMode, MountOptions, WritebackConfig};
use novafs_engine::media::map::Reservation;
use novafs_engine::media::{FlushKind, MapOptions, Media};

const PAGE: u64 = 4096;
const BIG: u64 = 256 << 20;
const CHUNK: usize = 1 << 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rnd(i: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234_5678;
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 32)
}

fn timed(n: u64, mut f: impl FnMut(u64), base: &mut u64) -> f64 {
    let t = Instant::now();
    for i in *base..*base + n {
        f(i);
    }
    *base += n;
    t.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let only = std::env::var("NOVAFS_BENCH_ONLY").ok();
    let run = |what: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|w| w == what))
    };
    let batches: u64 = if quick { 9 } else { 31 };
    let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm");
    let raw = Media::create(
        &dir.path().join("raw.img"),
        BIG,
        true,
        &MapOptions {
            populate: true,
            ..MapOptions::default()
        },
    )
    .expect("raw media");
    assert_eq!(raw.mode(), MediaMode::Emulated);
    raw.zero_nt(0, BIG).unwrap();
    raw.fence();

    let img = dir.path().join("direct.img");
    Fs::format(&img, BIG * 3, &FormatOptions::default())
        .expect("format")
        .unmount()
        .unwrap();
    let fs = Fs::open(
        &img,
        &MountOptions {
            populate: true,
            writeback: WritebackConfig {
                interval: Duration::ZERO,
                ..WritebackConfig::default()
            },
            ..MountOptions::default()
        },
    )
    .expect("open");
    let f = fs
        .open_options()
        .read(true)
        .write(true)
        .create(true)
        .open("/big")
        .unwrap();
    let fill = vec![1u8; 64 << 20];
    for i in 0..BIG / fill.len() as u64 {
        f.write_at(&fill, i * fill.len() as u64).unwrap();
    }
    let m = f.map(0, BIG, MapMode::Sync).expect("map");
    let s = m.as_slice();
    let line = [0xa5u8; 64];
    let page = vec![0x5au8; PAGE as usize];

    // (2) first store to a clean page: fresh pages each batch.
    let clean_pages = 512u64;
    let (mut first, mut nt4k, mut first64, mut first512, mut tfirst) =
        (f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    let (mut mmap1, mut mprot) = (f64::NAN, f64::NAN);
    if run("first") {
        let (mut first_v, mut nt_v) = (Vec::new(), Vec::new());
        let (mut bi, mut ri) = (0u64, 0u64);
        for b in 0..batches {
            let base_pg = 8192 + b * clean_pages; // pages 8192.. are untouched so far
            let mut k = 0u64;
            first_v.push(timed(
                clean_pages,
                |_| {
                    let off = (base_pg + k) * PAGE;
                    m.prepare_write(off, PAGE).unwrap();
                    s.write(off as usize, black_box(&line)).unwrap();
                    k += 1;
                },
                &mut bi,
            ));
            nt_v.push(timed(
                clean_pages,
                |i| {
                    raw.write_nt((rnd(i) % (BIG / PAGE)) * PAGE, black_box(&page))
                        .unwrap();
                    raw.fence();
                },
                &mut ri,
            ));
        }
        (first, nt4k) = (median(first_v), median(nt_v));
        // The same, 64 and 512 pages per prepare_write (one attachment commit, one remap of
        // the contiguous run of cache blocks): per page.
        let per_page = |base_pg: u64, per: u64, total: u64, nb: u64| {
            let mut v = Vec::new();
            for b in 0..nb {
                let t = Instant::now();
                for r in 0..total / per {
                    let off = (base_pg + b * total + r * per) * PAGE;
                    m.prepare_write(off, per * PAGE).unwrap();
                    for p in 0..per {
                        s.write((off + p * PAGE) as usize, black_box(&line))
                            .unwrap();
                    }
                }
                v.push(t.elapsed().as_nanos() as f64 / total as f64);
            }
            median(v)
        };
        first64 = per_page(8192 + batches * clean_pages, 64, 256, batches);
        let nb512 = batches.min(15);
        first512 = per_page(8192 + batches * (clean_pages + 256), 512, 512, nb512);
        // What bounds one page: one mmap(MAP_FIXED | MAP_POPULATE) of a writable shared page of
        // a /dev/shm file into a reservation (the remap prepare_write makes), and one mprotect
        // pair, through the media layer's safe API.
        let shm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("syscall.img"))
            .unwrap();
        shm.set_len(1024 * PAGE).unwrap();
        let resv = Reservation::new(1024).unwrap();
        {
            use std::os::fd::AsFd;
            resv.map_file(0, 1024, shm.as_fd(), 0, false, false)
                .unwrap();
            let (mut mm_v, mut mp_v) = (Vec::new(), Vec::new());
            for _ in 0..batches {
                let t = Instant::now();
                for p in 0..512usize {
                    // Like a first store: a page in the middle of a read-only run becomes a
                    // writable page on another block (a VMA split + populate).
                    resv.map_file(
                        2 * p + 1,
                        1,
                        shm.as_fd(),
                        ((2 * p) as u64) * PAGE,
                        true,
                        false,
                    )
                    .unwrap();
                }
                mm_v.push(t.elapsed().as_nanos() as f64 / 512.0);
                let t = Instant::now();
                for p in 0..512usize {
                    resv.protect_read(2 * p + 1, 1).unwrap();
                    resv.protect_write(2 * p + 1, 1).unwrap();
                }
                mp_v.push(t.elapsed().as_nanos() as f64 / 1024.0);
                resv.map_file(0, 1024, shm.as_fd(), 0, false, false)
                    .unwrap();
            }
            (mmap1, mprot) = (median(mm_v), median(mp_v));
        }
        drop(resv);
        // The same first store through a transparent mapping: no prepare_write, the store
        // faults (userfaultfd write-protect) and the handler thread prepares the page.
        let tbase = 48_000u64;
        let tb = batches.min(15);
        let tm = f
            .map_transparent(tbase * PAGE, tb * clean_pages * PAGE, MapMode::Sync)
            .ok();
        let mut tfirst_v = Vec::new();
        if let Some(tm) = &tm {
            let ts = tm.as_slice();
            for b in 0..tb {
                let t = Instant::now();
                for p in 0..clean_pages {
                    let off = ((b * clean_pages + p) * PAGE) as usize;
                    ts.write(off, black_box(&line)).unwrap();
                }
                tfirst_v.push(t.elapsed().as_nanos() as f64 / clean_pages as f64);
            }
        }
        if !tfirst_v.is_empty() {
            tfirst = median(tfirst_v);
        }
        drop(tm);
    }

    // (1) 64 B store + persist into prepared pages: a random line of 64 MiB (TLB and cache
    // misses: the result depends on where the host placed each column's memory), and of a
    // 256 KiB hot set (64 pages: the code paths, flush and fence, with few misses).
    let hot = 16_384u64;
    let (mut store64, mut raw64, mut store64s, mut raw64s) =
        (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    let (mut store64e, mut raw64e) = (f64::NAN, f64::NAN);
    if run("store64") {
        m.prepare_write(0, hot * PAGE).unwrap();
        // The same 64 B store + persist against the raw path on the very same cache lines:
        // the mapping's own addresses (the cache blocks of pages 0..64), stored, flushed with
        // the CPU's flush instruction and fenced without the engine, so both columns touch
        // the same physical memory.
        let kind = FlushKind::detect();
        let (mut st_v, mut raw_v) = (Vec::new(), Vec::new());
        let (mut bi, mut ri) = (0u64, 0u64);
        for _ in 0..batches {
            st_v.push(timed(
                20_000,
                |i| {
                    let off = (rnd(i) % 64) * PAGE + (i % 64) * 64;
                    s.write(off as usize, black_box(&line)).unwrap();
                    m.persist(off, 64).unwrap();
                },
                &mut bi,
            ));
            raw_v.push(timed(
                20_000,
                |i| {
                    let off = ((rnd(i) % 64) * PAGE + (i % 64) * 64) as usize;
                    s.write(off, black_box(&line)).unwrap();
                    s.flush(off, 64, kind).unwrap();
                    raw.fence();
                },
                &mut ri,
            ));
        }
        (store64e, raw64e) = (median(st_v), median(raw_v));
        for (set, out) in [(hot, 0), (64u64, 1)] {
            let (mut st_v, mut raw_v) = (Vec::new(), Vec::new());
            let (mut bi, mut ri) = (0u64, 0u64);
            for _ in 0..batches {
                st_v.push(timed(
                    20_000,
                    |i| {
                        let off = (rnd(i) % set) * PAGE + (i % 64) * 64;
                        s.write(off as usize, black_box(&line)).unwrap();
                        m.persist(off, 64).unwrap();
                    },
                    &mut bi,
                ));
                raw_v.push(timed(
                    20_000,
                    |i| {
                        let off = (rnd(i) % set) * PAGE + (i % 64) * 64;
                        raw.write(off, black_box(&line)).unwrap();
                        raw.flush(off, 64).unwrap();
                        raw.fence();
                    },
                    &mut ri,
                ));
            }
            if out == 0 {
                (store64, raw64) = (median(st_v), median(raw_v));
            } else {
                (store64s, raw64s) = (median(st_v), median(raw_v));
            }
        }
    }

    // (3) sequential load of the whole file vs memcpy out of a DRAM buffer of the same size
    // (the memory tmpfs pages are), and the media layer's word-atomic copy of the raw region:
    // GB/s.
    let mut buf = vec![0u8; CHUNK];
    let seq_batches = if quick { 3 } else { 9 };
    let (mut seq, mut mcp, mut mread) = (f64::NAN, f64::NAN, f64::NAN);
    if run("seq") {
        let dram = vec![3u8; BIG as usize];
        let (mut seq_v, mut mcp_v, mut mr_v) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..seq_batches {
            let t = Instant::now();
            for c in 0..(BIG as usize / CHUNK) {
                s.read(c * CHUNK, &mut buf).unwrap();
                black_box(&buf);
            }
            seq_v.push(BIG as f64 / t.elapsed().as_nanos() as f64);
            let t = Instant::now();
            for c in 0..(BIG as usize / CHUNK) {
                buf.copy_from_slice(black_box(&dram[c * CHUNK..(c + 1) * CHUNK]));
                black_box(&buf);
            }
            mcp_v.push(BIG as f64 / t.elapsed().as_nanos() as f64);
            let t = Instant::now();
            for c in 0..(BIG as usize / CHUNK) {
                raw.read((c * CHUNK) as u64, &mut buf).unwrap();
                black_box(&buf);
            }
            mr_v.push(BIG as f64 / t.elapsed().as_nanos() as f64);
        }
        (seq, mcp, mread) = (median(seq_v), median(mcp_v), median(mr_v));
    }

    // (4) random aligned 8-byte loads over 256 MiB.
    let (mut load8, mut rload8) = (f64::NAN, f64::NAN);
    if run("load") {
        let (mut ld_v, mut rld_v) = (Vec::new(), Vec::new());
        let (mut bi, mut ri) = (0u64, 0u64);
        let words = BIG / 8;
        for _ in 0..batches {
            let mut acc = 0u64;
            ld_v.push(timed(
                200_000,
                |i| acc ^= s.load_u64(((rnd(i) % words) * 8) as usize).unwrap(),
                &mut bi,
            ));
            rld_v.push(timed(
                200_000,
                |i| acc ^= raw.load_u64((rnd(i) % words) * 8).unwrap(),
                &mut ri,
            ));
            black_box(acc);
        }
        (load8, rload8) = (median(ld_v), median(rld_v));
    }

    println!(
        "direct access benchmark (medians of {batches} interleaved batches; /dev/shm, emulated \
         pmem, flush {:?})\n",
        raw.flush_kind()
    );
    println!("| operation | novafs | raw | ratio | target |");
    println!("|---|---:|---:|---:|---|");
    println!(
        "| 64 B store + persist, prepared page, 64 MiB hot set (ns) | {store64:.1} | {raw64:.1} (store + clwb + sfence) | {:.2} | <= 1.05 |",
        store64 / raw64
    );
    println!(
        "| 64 B store + persist, prepared page, 256 KiB hot set (ns) | {store64s:.1} | {raw64s:.1} (store + clwb + sfence) | {:.2} | <= 1.05 |",
        store64s / raw64s
    );
    println!(
        "| 64 B store + persist, the same 256 KiB of cache blocks both ways (ns) | {store64e:.1} | {raw64e:.1} (store + clwb + sfence through the same addresses) | {:.2} | <= 1.05 |",
        store64e / raw64e
    );
    println!(
        "| first store to a clean page: prepare_write(4 KiB) + 64 B store (ns) | {first:.0} | {nt4k:.0} (4 KiB NT copy + sfence) | {:.2} | <= 3 |",
        first / nt4k
    );
    println!(
        "| first stores to clean pages, prepare_write of 64 pages at once (ns per page) | {first64:.0} | {nt4k:.0} (4 KiB NT copy + sfence) | {:.2} | - |",
        first64 / nt4k
    );
    println!(
        "| first stores to clean pages, prepare_write of 512 pages at once (ns per page) | {first512:.0} | {nt4k:.0} (4 KiB NT copy + sfence) | {:.2} | - |",
        first512 / nt4k
    );
    println!(
        "| bound of one page: mmap(MAP_FIXED, MAP_POPULATE) of 1 writable page (ns) | {mmap1:.0} | {nt4k:.0} (4 KiB NT copy + sfence) | {:.2} | - |",
        mmap1 / nt4k
    );
    println!(
        "| one mprotect of 1 page (ns) | {mprot:.0} | {nt4k:.0} (4 KiB NT copy + sfence) | {:.2} | - |",
        mprot / nt4k
    );
    println!(
        "| first store to a clean page, transparent (uffd-WP fault + handler prepare) (ns) | {tfirst:.0} | {nt4k:.0} (4 KiB NT copy + sfence) | {:.2} | - (extra over explicit: {:.0} ns) |",
        tfirst / nt4k,
        tfirst - first
    );
    println!(
        "| sequential load of a mapped 256 MiB file (GB/s) | {seq:.2} | {mcp:.2} (memcpy out of 256 MiB of DRAM) | {:.2} | >= 0.9 |",
        seq / mcp
    );
    println!(
        "| Media::read of the raw region, 1 MiB copies (GB/s) | {mread:.2} | {mcp:.2} (memcpy out of 256 MiB of DRAM) | {:.2} | - |",
        mread / mcp
    );
    println!(
        "| random 8 B load, 256 MiB (ns) | {load8:.2} | {rload8:.2} (Media::load_u64) | {:.2} | <= 1.1 |",
        load8 / rload8
    );
    drop(m);
    drop(f);
    fs.unmount().unwrap();
}
