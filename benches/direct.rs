//! Direct access (DESIGN §5.4.1) against the raw limits, in one run:
//! (1) a 64 B store + persist into a prepared page through a mapping's addresses vs a raw 64 B
//!     store + clwb + fence on a plain shared mapping of a /dev/shm file (novafs's `Media`);
//! (2) the first store to a clean page (`prepare_write` of one page: 4 KiB copy into the write
//!     cache + durable attach + remap, then a 64 B store) vs a raw 4 KiB NT copy + fence; the
//!     same with 64 pages per `prepare_write`, and through a transparent mapping (the store
//!     faults to the userfaultfd handler, which prepares the page);
//! (3) sequential load of a mapped 256 MiB file (volatile copy out, 1 MiB at a time) vs memcpy
//!     out of a raw region (GB/s);
//! (4) random aligned 8-byte loads through the mapping vs raw loads of the region.
//!
//! Batches of the two columns alternate (same machine state for both); the table shows
//! medians over the batches and the ratios. `cargo bench --bench direct [-- --quick]`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use novafs::{FormatOptions, Fs, MapMode, MediaMode, MountOptions, WritebackConfig};
use novafs_engine::media::{MapOptions, Media};

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
    Fs::format(&img, BIG * 2 + (64 << 20), &FormatOptions::default())
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
    let (first, nt4k) = (median(first_v), median(nt_v));
    // The same, 64 pages per prepare_write (one attachment commit, one remap per run): per page.
    let mut first64_v = Vec::new();
    let mut k = 0u64;
    for b in 0..batches {
        let base_pg = 8192 + batches * clean_pages + b * 256;
        let t = Instant::now();
        for r in 0..4u64 {
            let off = (base_pg + r * 64) * PAGE;
            m.prepare_write(off, 64 * PAGE).unwrap();
            for p in 0..64 {
                s.write((off + p * PAGE) as usize, black_box(&line))
                    .unwrap();
            }
            k += 1;
        }
        first64_v.push(t.elapsed().as_nanos() as f64 / 256.0);
    }
    black_box(k);
    let first64 = median(first64_v);
    // The same first store through a transparent mapping: no prepare_write, the store faults
    // (userfaultfd write-protect) and the handler thread prepares the page.
    let tbase = 40_000u64;
    let tm = f
        .map_transparent(tbase * PAGE, batches * clean_pages * PAGE, MapMode::Sync)
        .ok();
    let mut tfirst_v = Vec::new();
    if let Some(tm) = &tm {
        let ts = tm.as_slice();
        for b in 0..batches {
            let t = Instant::now();
            for p in 0..clean_pages {
                let off = ((b * clean_pages + p) * PAGE) as usize;
                ts.write(off, black_box(&line)).unwrap();
            }
            tfirst_v.push(t.elapsed().as_nanos() as f64 / clean_pages as f64);
        }
    }
    let tfirst = if tfirst_v.is_empty() {
        f64::NAN
    } else {
        median(tfirst_v)
    };
    drop(tm);

    // (1) 64 B store + persist into prepared pages (a random line of 64 MiB).
    let hot = 16_384u64;
    m.prepare_write(0, hot * PAGE).unwrap();
    let (mut st_v, mut raw_v) = (Vec::new(), Vec::new());
    let (mut bi, mut ri) = (0u64, 0u64);
    for _ in 0..batches {
        st_v.push(timed(
            20_000,
            |i| {
                let off = (rnd(i) % hot) * PAGE + (i % 64) * 64;
                s.write(off as usize, black_box(&line)).unwrap();
                m.persist(off, 64).unwrap();
            },
            &mut bi,
        ));
        raw_v.push(timed(
            20_000,
            |i| {
                let off = (rnd(i) % hot) * PAGE + (i % 64) * 64;
                raw.write(off, black_box(&line)).unwrap();
                raw.flush(off, 64).unwrap();
                raw.fence();
            },
            &mut ri,
        ));
    }
    let (store64, raw64) = (median(st_v), median(raw_v));

    // (3) sequential load of the whole file vs memcpy out of the raw region: GB/s.
    let mut buf = vec![0u8; CHUNK];
    let seq_batches = if quick { 3 } else { 9 };
    let (mut seq_v, mut mcp_v) = (Vec::new(), Vec::new());
    for _ in 0..seq_batches {
        let t = Instant::now();
        for c in 0..(BIG as usize / CHUNK) {
            s.read(c * CHUNK, &mut buf).unwrap();
            black_box(&buf);
        }
        seq_v.push(BIG as f64 / t.elapsed().as_nanos() as f64);
        let t = Instant::now();
        for c in 0..(BIG as usize / CHUNK) {
            raw.read((c * CHUNK) as u64, &mut buf).unwrap();
            black_box(&buf);
        }
        mcp_v.push(BIG as f64 / t.elapsed().as_nanos() as f64);
    }
    let (seq, mcp) = (median(seq_v), median(mcp_v));

    // (4) random aligned 8-byte loads over 256 MiB.
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
    let (load8, rload8) = (median(ld_v), median(rld_v));

    println!(
        "direct access benchmark (medians of {batches} interleaved batches; /dev/shm, emulated \
         pmem, flush {:?})\n",
        raw.flush_kind()
    );
    println!("| operation | novafs | raw | ratio | target |");
    println!("|---|---:|---:|---:|---|");
    println!(
        "| 64 B store + persist, prepared page (ns) | {store64:.1} | {raw64:.1} (store + clwb + sfence) | {:.2} | <= 1.05 |",
        store64 / raw64
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
        "| first store to a clean page, transparent (uffd-WP fault + handler prepare) (ns) | {tfirst:.0} | {nt4k:.0} (4 KiB NT copy + sfence) | {:.2} | - (extra over explicit: {:.0} ns) |",
        tfirst / nt4k,
        tfirst - first
    );
    println!(
        "| sequential load of a mapped 256 MiB file (GB/s) | {seq:.2} | {mcp:.2} (memcpy out of the region) | {:.2} | >= 0.9 |",
        seq / mcp
    );
    println!(
        "| random 8 B load, 256 MiB (ns) | {load8:.2} | {rload8:.2} (Media::load_u64) | {:.2} | <= 1.1 |",
        load8 / rload8
    );
    drop(m);
    drop(f);
    fs.unmount().unwrap();
}
